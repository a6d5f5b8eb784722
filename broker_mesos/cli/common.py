"""Options and error handling shared by every ``bmesos`` command."""

from __future__ import annotations

import functools
import logging
import sys
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


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
