"""What ``bmesos service`` and ``bmesos job`` share: the scheduler daemon command, the options of the
client commands, reading a spec file and printing the schedulers' answers.

Exit status of the client commands (docs/cli.md): 0 done; 1 the scheduler did not answer within
``--timeout`` or refused (its reason on stderr); 2 a usage error (a bad spec file included).
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml

from broker_mesos.bus.connection import url_user
from broker_mesos.bus.tls import TlsOptions
from broker_mesos.cli.cluster import EXIT_INTERRUPTED, Failed, print_json, table
from broker_mesos.cli.common import (
    broker_options,
    log_level_option,
    master_principal_option,
    printable,
    setup_logging,
)
from broker_mesos.cli.control import DEFAULT_TIMEOUT, ControlClient
from broker_mesos.core import security
from broker_mesos.core.errors import BrokerMesosError, ConfigError
from broker_mesos.framework.ha import DEFAULT_BUILTIN_FAILOVER, BuiltinScheduler, Kind
from broker_mesos.framework.planning import CommandError

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)
MAX_SPEC_BYTES = 1024 * 1024  # a spec file larger than this is refused before it is parsed


def load_spec(path: str, parse: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """The mapping in YAML file ``path``, checked with ``parse`` (the scheduler parses it again);
    a usage error saying what is wrong otherwise."""
    file = Path(path)
    try:
        if file.stat().st_size > MAX_SPEC_BYTES:
            raise click.UsageError(f"{path}: larger than {MAX_SPEC_BYTES} bytes")
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise click.UsageError(f"{path}: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise click.UsageError(f"{path}: not YAML: {printable(first)}") from None
    if not isinstance(data, dict):
        raise click.UsageError(f"{path}: the spec must be a mapping (key: value lines)")
    try:
        parse(data)
    except CommandError as exc:
        raise click.UsageError(f"{path}: {printable(exc)}") from None
    return data


def default_framework_id(broker: str, fallback: str) -> str:
    """Connected as ``framework.<name>``, the framework id ``<name>`` (one it owns); else ``fallback``."""
    who = security.parse(url_user(broker))
    return who.name if who is not None and who.kind is security.Kind.FRAMEWORK else fallback


def client_options(default_id: str) -> Callable[[F], F]:
    """--framework-id, --timeout, -o, the broker options and --log-level; errors as one line, exit 1."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, log_level: str, **kwargs: Any) -> Any:
            setup_logging(log_level)
            try:
                return fn(*args, **kwargs)
            except BrokerMesosError as exc:
                raise Failed(printable(exc)) from None
            except KeyboardInterrupt:
                sys.exit(EXIT_INTERRUPTED)

        out: Any = click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
                                default="error", show_default=True, help="Log verbosity (to stderr).")(wrapper)
        out = broker_options(out)
        out = click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
                           show_default=True, help="Output format; json is one document.")(out)
        out = click.option("--timeout", type=click.FloatRange(min=0.1), default=DEFAULT_TIMEOUT, show_default=True,
                           help="Seconds to wait for the scheduler's answer.")(out)
        return click.option("--framework-id", default=default_id, show_default=True, metavar="ID",
                            help="The built-in framework to ask (as its scheduler was started).")(out)  # type: ignore[no-any-return]

    return decorate


def client(broker: str, framework_id: str, connect_timeout: float, timeout: float, tls: TlsOptions | None,
           what: str) -> ControlClient:
    return ControlClient(broker, framework_id, connect_timeout=connect_timeout, timeout=timeout, tls=tls, what=what)


def show(value: Any, output: str, columns: Sequence[tuple[str, str]] | None = None) -> None:
    """``value`` as JSON, or as a table (a list of mappings, ``columns``: (key, header)) or key: value lines."""
    if output == "json":
        print_json(value)
    elif isinstance(value, list) and columns is not None:
        table([header for _, header in columns], [[cell(item.get(key)) for key, _ in columns] for item in value])
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(item, (list, dict)):
                click.echo(f"{printable(key)}: {printable(cell(item))}")
    else:
        click.echo(printable(cell(value)))


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return ", ".join(cell(v) for v in value) if isinstance(value, list) else \
            ", ".join(f"{k}={cell(v)}" for k, v in value.items())
    return str(value)


def scheduler_command(kind: Kind, default_id: str, what: str) -> click.Command:
    """``bmesos service scheduler`` / ``bmesos job scheduler``: run one scheduler of the framework."""

    @click.command("scheduler")
    @broker_options
    @click.option("--framework-id", default=None, metavar="ID",
                  help=f"The framework id (default: the principal's name when connected as framework.<name>, "
                       f"else {default_id}); every scheduler of one framework uses the same.")
    @click.option("--role", default="*", show_default=True, help="The role the framework subscribes with.")
    @click.option("--user", default="", help="The OS user of tasks that name none (default: the agent's).")
    @click.option("--failover-timeout", type=click.FloatRange(min=0), default=DEFAULT_BUILTIN_FAILOVER,
                  show_default=True, help="Seconds the tasks outlive the last scheduler (a week by default).")
    @click.option("--scheduler-id", default=None, help="This scheduler's name in logs (default: random).")
    @master_principal_option
    @log_level_option
    def command(broker: str, connect_timeout: float, tls: TlsOptions | None, framework_id: str | None, role: str,
                user: str, failover_timeout: float, scheduler_id: str | None, master_principal: str,
                log_level: str) -> None:
        setup_logging(log_level)
        fid = framework_id or default_framework_id(broker, default_id)
        try:
            scheduler = BuiltinScheduler(kind, broker, framework_id=fid, name=fid, role=role, user=user,
                                         failover_timeout=failover_timeout, tls=tls, scheduler_id=scheduler_id,
                                         connect_timeout=connect_timeout, master_principal=master_principal)
        except (ConfigError, ValueError) as exc:
            raise click.UsageError(printable(exc)) from None
        signal.signal(signal.SIGTERM, lambda *_: scheduler.stop())
        try:
            scheduler.run()
        except KeyboardInterrupt:
            scheduler.stop()
        except BrokerMesosError as exc:
            raise Failed(printable(exc)) from None
        except Exception as exc:  # StateUnreadable and the like: logged already, one line here
            raise Failed(f"{what} stopped: {printable(exc)}") from None

    command.help = f"Run a {what} (any number may run: one is active, the others stand by)."
    return command
