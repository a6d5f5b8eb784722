"""Options, error handling and terminal safety shared by every ``bmesos`` command.

Anything that came off the wire goes through ``printable`` (or ``json_line``) before it reaches a
terminal, and logs go through ``TerminalSafeFormatter``: a message field must not be able to retitle,
clear or scramble the operator's terminal, nor reverse the text around it.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import unicodedata
from collections.abc import Callable
from typing import Any, TypeVar

import click

from broker_mesos.core.errors import BrokerMesosError

DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
BROKER_ENV = "BMESOS_BROKER"

F = TypeVar("F", bound=Callable[..., Any])


def broker_options(fn: F) -> F:
    """``--broker`` (or $BMESOS_BROKER) and ``--connect-timeout``, for every command that talks to RabbitMQ."""
    fn = click.option("--connect-timeout", type=click.FloatRange(min=0.1), default=15.0, show_default=True,
                      help="Seconds to keep trying the first connection before giving up.")(fn)
    fn = click.option("--broker", envvar=BROKER_ENV, default=DEFAULT_BROKER, show_default=True,
                      metavar="URL", help=f"AMQP URL of the RabbitMQ broker (or ${BROKER_ENV}).")(fn)
    return fn


# Control characters (C0 with ESC, BEL, CR, backspace, ...; DEL; C1), format characters (bidi overrides and
# isolates, zero-width joiners, soft hyphen, BOM), lone surrogates, and the line/paragraph separators.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NAMED_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape_char(char: str) -> str:
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object, *, keep: str = "") -> str:
    """``text`` (``str()`` of it) safe to print on one terminal line: every control character, DEL, C1
    control, Unicode format (bidi, zero-width) character, surrogate and line/paragraph separator becomes a
    visible escape such as ``\\x1b``, ``\\n`` or ``\\u202e``; characters in ``keep`` (e.g. ``"\\n\\t"``) stay.

    Backslashes are left as they are (so ordinary text prints unchanged), which makes the function
    idempotent: ``printable(printable(x)) == printable(x)``.
    """
    s = text if isinstance(text, str) else str(text)
    if s.isprintable():  # the common case: nothing of Unicode's "Other" or "Separator" but plain spaces
        return s
    return "".join(_escape_char(c) if c not in keep and unicodedata.category(c) in _ESCAPED_CATEGORIES else c
                   for c in s)


def json_line(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` for one terminal line: ``ensure_ascii`` escapes every control and non-ASCII
    character but DEL, which is escaped here (it can only occur inside a JSON string)."""
    return json.dumps(value, ensure_ascii=True, **kwargs).replace("\x7f", "\\u007f")


class TerminalSafeFormatter(logging.Formatter):
    """Log records carry wire text: the message is escaped with ``printable`` (one record, one line), and
    control characters anywhere else (a traceback's exception text) too, except the traceback's own
    newlines and tabs."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record), keep="\n\t")


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TerminalSafeFormatter(LOG_FORMAT))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
    logging.getLogger("pika").setLevel(logging.CRITICAL)


def log_level_option(fn: F) -> F:
    return click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
                        show_default=True, help="Log verbosity (logs go to stderr).")(fn)


def one_line_errors(fn: F) -> F:
    """Turn our errors into one clear line on stderr and exit status 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BrokerMesosError as exc:
            raise click.ClickException(printable(exc)) from None
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
