"""Options, error handling and terminal safety shared by every ``bmesos`` command.

Anything that came off the wire goes through ``printable`` (or ``json_line``) before it reaches a
terminal, and logs go through ``TerminalSafeFormatter``: a message field must not be able to retitle,
clear or scramble the operator's terminal, nor reverse the text around it.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import stat
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
from click.core import ParameterSource

from broker_mesos.bus.tls import TlsError, TlsOptions, check_urls, connection_parameters
from broker_mesos.core.errors import BrokerMesosError
from broker_mesos.core.security import DEFAULT_MASTER_PRINCIPAL

DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
BROKER_ENV = "BMESOS_BROKER"
BROKER_FILE_ENV = "BMESOS_BROKER_FILE"
TLS_CA_ENV = "BMESOS_TLS_CA"
TLS_CERT_ENV = "BMESOS_TLS_CERT"
TLS_KEY_ENV = "BMESOS_TLS_KEY"

log = logging.getLogger("broker_mesos.cli")

F = TypeVar("F", bound=Callable[..., Any])


class BrokerSettingsError(ValueError):
    """The broker options contradict each other or a file named in them is unusable."""


def read_broker_file(path: str | Path) -> tuple[str, list[str]]:
    """The broker URL(s) in ``path`` (its first line that is neither blank nor a ``#`` comment) and the
    warnings to log: the file should be readable by its owner only (mode 0600)."""
    try:
        mode = Path(path).stat().st_mode
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror.lower() if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise BrokerSettingsError(f"cannot read the broker file {path}: {reason}") from None
    warnings = []
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.append(f"the broker file {path} is accessible to other users (mode {stat.S_IMODE(mode):04o}); "
                        f"it holds the broker password: chmod 600 {path}")
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line, warnings
    raise BrokerSettingsError(f"the broker file {path} holds no URL (only blank and # comment lines)")


def has_password(url: str) -> bool:
    """Whether any of the comma-separated URLs in ``url`` carries a secret password (RabbitMQ's
    well-known ``guest`` / ``guest`` of a development broker is none)."""
    try:
        parts = [urlsplit(part.strip()) for part in url.split(",")]
        return any(p.password and (p.username, p.password) != ("guest", "guest") for p in parts)
    except ValueError:  # not a URL at all: pika says so when it connects
        return False


def resolve_broker(url: str | None, url_on_command_line: bool, broker_file: str | None,
                   file_on_command_line: bool) -> tuple[str, list[str]]:
    """The broker URL(s) to use and the warnings to log, from ``--broker`` / $BMESOS_BROKER (``url``,
    ``None`` if neither was given) and ``--broker-file`` / $BMESOS_BROKER_FILE. The command line wins
    over the environment; both at the same level is an error."""
    warnings: list[str] = []
    if broker_file is not None and not (url_on_command_line and not file_on_command_line):
        if url is not None and url_on_command_line == file_on_command_line:
            where = "--broker and --broker-file" if url_on_command_line else f"${BROKER_ENV} and ${BROKER_FILE_ENV}"
            raise BrokerSettingsError(f"{where} are both given: use one")
        return read_broker_file(broker_file)
    if url is None:
        return DEFAULT_BROKER, warnings
    if url_on_command_line and has_password(url):
        warnings.append(f"the broker password given with --broker is visible to every local user in `ps`: "
                        f"put the URL in a file only you can read (--broker-file FILE, mode 0600) or in "
                        f"${BROKER_ENV} instead")
    return url, warnings


def tls_settings(url: str, ca: str | None, cert: str | None, key: str | None,
                 verify_hostname: bool = True) -> tuple[TlsOptions | None, list[str]]:
    """The ``TlsOptions`` for ``url`` (``None`` when no TLS option is given: an ``amqps://`` URL then
    trusts the system's CAs) and the warnings to log; ``TlsError`` if they cannot work (no ``amqps://``
    URL, a file that does not load)."""
    warnings: list[str] = []
    urls = [u.strip() for u in url.split(",") if u.strip()] or [url]
    tls = None
    if ca is not None or cert is not None or key is not None or not verify_hostname:
        tls = TlsOptions(ca, cert, key, verify_hostname)
    check_urls(urls, tls)
    if urls and tls is not None:
        connection_parameters(urls[0], tls)  # loads the CA, certificate and key: a bad file fails now
    if not verify_hostname:
        warnings.append("--tls-no-verify-hostname: the broker's certificate is checked against the CA but not "
                        "against the broker's host name; any certificate that CA signed is accepted")
    return tls, warnings


def broker_options(fn: F) -> F:
    """The broker options of every command that talks to RabbitMQ: ``--broker`` (or $BMESOS_BROKER),
    ``--broker-file`` (or $BMESOS_BROKER_FILE), ``--tls-ca``/``--tls-cert``/``--tls-key`` (or
    $BMESOS_TLS_*), ``--tls-no-verify-hostname`` and ``--connect-timeout``.

    The command receives ``broker`` (the URL(s) to use, whichever option gave them), ``connect_timeout``
    and, if it has such a parameter, ``tls`` (``TlsOptions`` or ``None``) to hand to ``Bus`` or
    ``SchedulerDriver``. Contradictory or unusable options are a usage error (exit status 2); warnings
    (a password on the command line, a broker file others can read) are logged at start."""
    takes_tls = "tls" in inspect.signature(fn).parameters

    @functools.wraps(fn)
    def wrapper(*args: Any, broker_file: str | None, tls_ca: str | None, tls_cert: str | None,
                tls_key: str | None, tls_no_verify_hostname: bool, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        url_source = ctx.get_parameter_source("broker")
        given = url_source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
        try:
            url, warnings = resolve_broker(kwargs["broker"] if given else None,
                                           url_source is ParameterSource.COMMANDLINE, broker_file,
                                           ctx.get_parameter_source("broker_file") is ParameterSource.COMMANDLINE)
            tls, tls_warnings = tls_settings(url, tls_ca, tls_cert, tls_key, not tls_no_verify_hostname)
        except (BrokerSettingsError, TlsError) as exc:
            raise click.UsageError(printable(exc), ctx) from None
        if tls is not None and not takes_tls:
            raise click.UsageError("this command does not support the --tls-* options", ctx)
        warnings += tls_warnings
        if warnings and not logging.getLogger().handlers:
            setup_logging(kwargs.get("log_level") or "info")
        for warning in warnings:
            log.warning("%s", warning)
        kwargs["broker"] = url
        if takes_tls:
            kwargs["tls"] = tls
        return fn(*args, **kwargs)

    opt = click.option
    wrapped: Any = opt("--connect-timeout", type=click.FloatRange(min=0.1), default=15.0, show_default=True,
                       help="Seconds to keep trying the first connection before giving up.")(wrapper)
    wrapped = opt("--tls-no-verify-hostname", is_flag=True,
                  help="Accept any certificate the CA signed, whatever host it names (logged at start; "
                       "the CA is still checked).")(wrapped)
    wrapped = opt("--tls-key", envvar=TLS_KEY_ENV, type=click.Path(exists=True, dir_okay=False), metavar="FILE",
                  help=f"This client's TLS private key, PEM, unencrypted, mode 0600 (or ${TLS_KEY_ENV}).")(wrapped)
    wrapped = opt("--tls-cert", envvar=TLS_CERT_ENV, type=click.Path(exists=True, dir_okay=False), metavar="FILE",
                  help=f"This client's TLS certificate, PEM, for brokers that ask for one (or ${TLS_CERT_ENV})."
                  )(wrapped)
    wrapped = opt("--tls-ca", envvar=TLS_CA_ENV, type=click.Path(exists=True, dir_okay=False), metavar="FILE",
                  help=f"CA certificate(s), PEM, the broker's certificate must be signed by, for amqps:// "
                       f"(or ${TLS_CA_ENV}; default: the system's CAs).")(wrapped)
    wrapped = opt("--broker-file", envvar=BROKER_FILE_ENV, type=click.Path(dir_okay=False), metavar="FILE",
                  help=f"Read the broker URL(s) from FILE, its first line that is not a # comment; keep it mode "
                       f"0600 (or ${BROKER_FILE_ENV}). The way to give a password.")(wrapped)
    wrapped = opt("--broker", envvar=BROKER_ENV, default=DEFAULT_BROKER, show_default=True, metavar="URL",
                  help=f"AMQP URL of the RabbitMQ broker, several comma-separated for a cluster, amqps:// for "
                       f"TLS (or ${BROKER_ENV}). A password here shows in `ps`: use --broker-file or "
                       f"${BROKER_ENV}.")(wrapped)
    return wrapped  # type: ignore[no-any-return]


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


def master_principal_option(fn: F) -> F:
    """``--master-principal`` (or $BMESOS_MASTER_PRINCIPAL): the one broker user whose task messages,
    offers and events count, for a cluster whose masters are not the user ``master``."""
    return click.option("--master-principal", envvar="BMESOS_MASTER_PRINCIPAL", default=DEFAULT_MASTER_PRINCIPAL,
                        show_default=True, metavar="USER",
                        help="The masters' broker user (only its messages are obeyed).")(fn)


def log_level_option(fn: F) -> F:
    return click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
                        show_default=True, help="Log verbosity (logs go to stderr).")(fn)


class _OneLineError(click.ClickException):
    exit_code = 2


def one_line_errors(fn: F) -> F:
    """Turn our errors into one clear line on stderr and exit status 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BrokerMesosError as exc:
            raise _OneLineError(printable(exc)) from None
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
