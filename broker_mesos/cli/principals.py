"""``bmesos principals``: provision a cluster's principals (RabbitMQ users) on its broker.

It talks to RabbitMQ's HTTP management API (stdlib ``urllib``; the ``rabbitmq:3-management`` image
serves it on port 15672) rather than running ``rabbitmqctl``: the API works remotely — from an init
container, a CI job, an operator's machine — with an administrator's user name and password, where
``rabbitmqctl`` needs the node's Erlang cookie (root on the broker) and must run on or next to it.
``bus.provision`` does the work; this module parses options and prints.

Credentials reach processes from a file or the environment, never a command line: with
``--output-dir DIR`` each principal's URL goes to ``DIR/<user>.url`` (mode 0600) and only the path is
printed; a process then reads it with ``--broker-file DIR/agent.a1.url`` (or ``$BMESOS_BROKER_FILE``).
Prefer ``$BMESOS_ADMIN_URL`` to ``--admin-url`` for the same reason (a command line is visible to
every user of the machine).

Rotating a credential: ``bmesos principals rotate agent a1 --output-dir DIR`` sets a new password
and writes the new URL; restart the process with it. Connections already open stay open (the broker
checks passwords at login) unless ``--close-connections``, which is what to do when a credential leaked.
"""

from __future__ import annotations

import functools
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from broker_mesos.bus import provision
from broker_mesos.bus.tls import TlsOptions
from broker_mesos.cli.common import TLS_CA_ENV, has_password, json_line, one_line_errors, printable
from broker_mesos.core import security
from broker_mesos.core.errors import BrokerMesosError

F = TypeVar("F", bound=Callable[..., Any])
ADMIN_URL_ENV = "BMESOS_ADMIN_URL"
AMQP_URL_BASE_ENV = "BMESOS_AMQP_URL_BASE"
KINDS = click.Choice(["agent", "framework", "operator", "monitor"])


class _Refused(click.ClickException):
    exit_code = 2  # as one_line_errors


def _errors(fn: F) -> F:
    """Our errors, and a bad name or role (``ValueError``), as one line on stderr, exit status 2."""
    inner = one_line_errors(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return inner(*args, **kwargs)
        except ValueError as exc:
            raise _Refused(printable(exc)) from None

    return wrapper  # type: ignore[return-value]


def _output_dir(fn: F) -> F:
    return click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Write each URL to DIR/<user>.url (mode 0600) and print its path instead of "
                             "the password.")(fn)


def _amqp_base(url_base: str, host: str | None, port: int | None) -> str:
    if host is None and port is None:
        return url_base
    parts = urllib.parse.urlsplit(url_base)
    host = host if host is not None else (parts.hostname or "127.0.0.1")
    port = port if port is not None else (parts.port or (5671 if parts.scheme == "amqps" else 5672))
    shown = f"[{host}]" if ":" in host else host
    return urllib.parse.urlunsplit((parts.scheme or "amqp", f"{shown}:{port}", "", parts.query, ""))


def _provisioner(ctx: click.Context) -> provision.Provisioner:
    return ctx.find_object(provision.Provisioner)  # type: ignore[return-value]


def _show(issued: provision.Issued, output_dir: Path | None) -> None:
    """``<user> <url>``, or ``<user> <file>`` with --output-dir; notes on stderr."""
    user = printable(issued.user)
    if issued.url is None:
        where = f"not in {output_dir}" if output_dir is not None else "not shown"
        click.echo(f"{user} (exists; password kept, {where}: `bmesos principals rotate` for a new one)")
    elif output_dir is not None:
        path = provision.write_url_file(output_dir, issued.user, issued.url)
        click.echo(f"{user} {printable(path)}")
    else:
        click.echo(f"{user} {printable(issued.url)}")
    if issued.roles:  # the broker keeps them as tags; the master learns them from an operator's SET_ACL
        roles = ",".join(issued.roles)
        click.echo(f"{user}: roles {roles} recorded (user tags {','.join(provision.role_tags(issued.roles))}); "
                   f"the master enforces them once an operator runs: bmesos admin acl set {user} --roles '*',{roles}",
                   err=True)
    for warning in issued.warnings:
        click.echo(f"warning: {printable(warning)}", err=True)


@click.group()
@click.option("--admin-url", envvar=ADMIN_URL_ENV, default=provision.DEFAULT_ADMIN_URL, show_default=True,
              metavar="URL", help=f"RabbitMQ management API, http(s)://user:password@host:port, as an "
                                  f"administrator (prefer ${ADMIN_URL_ENV}: a command line is public).")
@click.option("--vhost", default=provision.DEFAULT_VHOST, show_default=True, help="The cluster's vhost.")
@click.option("--amqp-url-base", envvar=AMQP_URL_BASE_ENV, default=provision.DEFAULT_AMQP_URL_BASE,
              show_default=True, metavar="URL",
              help=f"Where processes reach the broker, amqp[s]://host:port: the base of every URL printed, "
                   f"and where the topology is declared (or ${AMQP_URL_BASE_ENV}).")
@click.option("--amqp-host", default=None, help="Override the host of --amqp-url-base.")
@click.option("--amqp-port", type=click.IntRange(1, 65535), default=None, help="Override its port.")
@click.option("--master-principal", default=security.DEFAULT_MASTER_PRINCIPAL, show_default=True,
              help="The master's user name (what the master, agents and frameworks are configured with).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=provision.API_TIMEOUT, show_default=True,
              help="Seconds to wait for each answer of the API or the broker.")
@click.option("--tls-ca", envvar=TLS_CA_ENV, type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help=f"CA certificate(s), PEM, for an https:// admin URL and an amqps:// URL base (or "
                   f"${TLS_CA_ENV}; default: the system's CAs).")
@click.pass_context
def principals(ctx: click.Context, admin_url: str, vhost: str, amqp_url_base: str, amqp_host: str | None,
               amqp_port: int | None, master_principal: str, timeout: float, tls_ca: str | None) -> None:
    """Provision the cluster's principals: RabbitMQ users with least-privilege permissions.

    Talks to the broker's HTTP management API as an administrator. Each principal gets a generated
    password and an AMQP URL that its processes take as --broker (or $BMESOS_BROKER); with
    --output-dir the URLs go to files (mode 0600) instead of the terminal, for --broker-file (or
    $BMESOS_BROKER_FILE).

    \b
      export BMESOS_ADMIN_URL=http://admin:secret@rabbitmq:15672
      bmesos principals init --output-dir /run/bmesos        # vhost, master, operator.admin, topology
      bmesos principals add agent a1 --output-dir /run/bmesos
      bmesos principals add framework alice --roles prod,batch --output-dir /run/bmesos
      bmesos principals add monitor grafana
      bmesos principals list
      bmesos principals rotate framework alice --output-dir /run/bmesos --close-connections
      bmesos principals remove agent a1
    """
    if ctx.get_parameter_source("admin_url") is ParameterSource.COMMANDLINE and has_password(admin_url):
        click.echo(f"warning: the admin password given with --admin-url is visible to every local user in `ps`: "
                   f"use ${ADMIN_URL_ENV}", err=True)
    try:
        api = provision.ManagementApi(admin_url, timeout, cafile=tls_ca)
        base = _amqp_base(amqp_url_base, amqp_host, amqp_port)
        tls = TlsOptions(ca=tls_ca) if tls_ca is not None else None
        ctx.obj = provision.Provisioner(api, vhost, base, master_principal, tls)
    except (ValueError, BrokerMesosError, OSError) as exc:  # OSError: an unreadable CA file
        raise _Refused(printable(exc)) from None


@principals.command()
@click.option("--operator", default=provision.DEFAULT_OPERATOR, show_default=True,
              help="Name of the first operator principal (operator.<NAME>).")
@click.option("--rotate", is_flag=True, help="New passwords for the master and the operator, if they exist.")
@_output_dir
@click.pass_context
@_errors
def init(ctx: click.Context, operator: str, rotate: bool, output_dir: Path | None) -> None:
    """Create the vhost, its limits, the master and an operator, and declare the topology.

    Prints one line per principal: its user and its AMQP URL (or, with --output-dir, the file holding
    it). Idempotent: run again, existing users keep their passwords (unless --rotate); the master's
    URL from --output-dir is reused to declare the topology again, and every principal of the vhost is
    granted again what this version says (run it after an upgrade).
    """
    p = _provisioner(ctx)
    users = (p.master_user, security.principal("operator", operator).user)
    known = {u: url for u in users if (url := provision.read_url_file(output_dir, u)) is not None}
    issued, notes = p.init(operator, rotate=rotate, known=known)
    for note in notes:
        click.echo(printable(note), err=True)
    for one in issued:
        _show(one, output_dir)


@principals.command()
@click.argument("kind", type=KINDS)
@click.argument("name")
@click.option("--roles", default="", metavar="R1,R2",
              help="A framework's roles, recorded as user tags bmesos-role:<role>; the master enforces them "
                   "after `bmesos admin acl set` (printed).")
@click.option("--rotate", is_flag=True, help="If the user exists, give it a new password (and these roles).")
@_output_dir
@click.pass_context
@_errors
def add(ctx: click.Context, kind: str, name: str, roles: str, rotate: bool, output_dir: Path | None) -> None:
    """Add principal KIND.NAME (agent, framework, operator or monitor) and print its URL.

    \b
      bmesos principals add agent a1          # also declares and binds its queue tasks.a1
      bmesos principals add framework alice --roles prod
    """
    issued = _provisioner(ctx).add(kind, name, roles.split(","), rotate=rotate)
    _show(issued, output_dir)


@principals.command()
@click.argument("kind", type=KINDS)
@click.argument("name")
@click.pass_context
@_errors
def remove(ctx: click.Context, kind: str, name: str) -> None:
    """Delete principal KIND.NAME and close its connections (its queues stay)."""
    p = _provisioner(ctx)
    user = p.principal(kind, name).user
    p.remove(kind, name)
    click.echo(f"removed {printable(user)}")


@principals.command()
@click.argument("kind", type=click.Choice(["master", "agent", "framework", "operator", "monitor"]))
@click.argument("name", required=False)
@click.option("--close-connections", is_flag=True,
              help="Also close the principal's open connections (a leaked credential).")
@_output_dir
@click.pass_context
@_errors
def rotate(ctx: click.Context, kind: str, name: str | None, close_connections: bool, output_dir: Path | None) -> None:
    """Give principal KIND.NAME a new password and print its new URL.

    Restart its processes with the new URL. Open connections stay (the broker checks passwords at
    login) unless --close-connections.
    """
    issued = _provisioner(ctx).rotate(kind, name, close_connections=close_connections)
    _show(issued, output_dir)


@principals.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per user, with every regex.")
@click.pass_context
@_errors
def list_(ctx: click.Context, as_json: bool) -> None:
    """Every user with access to the cluster's vhost: kind, name, roles, limits, permissions.

    perms=as-provisioned means exactly what this version grants (core/security.py); anything else
    (DIFFERENT, or a user that is no principal of the cluster) deserves a look.
    """
    infos = _provisioner(ctx).list()
    for info in infos:
        kind = info.principal.kind.value if info.principal is not None else "-"
        name = info.principal.name if info.principal is not None else "-"
        if as_json:
            click.echo(json_line({"user": info.user, "kind": kind, "name": name, "roles": list(info.roles),
                                  "limits": info.limits, "permissions": info.permissions,
                                  "topic_permissions": {k: list(v) for k, v in info.topic.items()},
                                  "as_provisioned": info.as_provisioned}, sort_keys=True))
            continue
        limits = ",".join(f"{k}={v}" for k, v in sorted(info.limits.items())) or "-"
        if info.principal is None:
            perms = "NOT-A-PRINCIPAL " + " ".join(f"{k}={v}" for k, v in info.permissions.items())
        else:
            perms = "as-provisioned" if info.as_provisioned else "DIFFERENT (see --json)"
        click.echo(printable(f"{info.user} kind={kind} name={name} roles={','.join(info.roles) or '-'} "
                             f"limits={limits} perms={perms}"))
    if not infos:
        click.echo("no users reach this vhost", err=True)


if __name__ == "__main__":
    principals(sys.argv[1:])
