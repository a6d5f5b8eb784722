"""``bmesos service``: long-running services on the built-in service scheduler (like Marathon).

``deploy SPEC.yaml | list | status NAME | scale NAME N | restart NAME | stop NAME``, answered by the
active ``bmesos service scheduler``; the spec format is in docs/services-and-jobs.md.
"""

from __future__ import annotations

from typing import Any

import click

from broker_mesos.bus.tls import TlsOptions
from broker_mesos.cli.builtins import cell, client, client_options, load_spec, scheduler_command, show, table
from broker_mesos.cli.common import printable
from broker_mesos.framework.services.scheduler import FRAMEWORK_ID, KIND
from broker_mesos.framework.services.spec import parse_service

WHAT = "service scheduler"
LIST_COLUMNS = (("name", "NAME"), ("version", "VERSION"), ("wanted", "WANTED"), ("running", "RUNNING"),
                ("healthy", "HEALTHY"), ("status", "STATUS"), ("deployment", "DEPLOYMENT"))
INSTANCE_COLUMNS = (("slot", "SLOT"), ("version", "VERSION"), ("state", "STATE"), ("healthy", "HEALTHY"),
                    ("hostname", "HOST"), ("agent", "AGENT"), ("task_id", "TASK"))


@click.group()
def service() -> None:
    """Long-running services: deployed, kept running, health-checked, updated in rolling steps.

    Every subcommand takes the broker options (--broker URL or $BMESOS_BROKER, --broker-file FILE, TLS);
    the client commands also take --timeout, -o table|json and --framework-id.
    """


service.add_command(scheduler_command(KIND, FRAMEWORK_ID, WHAT))


@service.command()
@click.argument("spec_file", metavar="SPEC.yaml")
@client_options(FRAMEWORK_ID)
def deploy(spec_file: str, framework_id: str, timeout: float, output: str, broker: str, connect_timeout: float,
           tls: TlsOptions | None) -> None:
    """Create a service, or update it (a rolling update when the spec changed)."""
    spec = load_spec(spec_file, parse_service)
    show(client(broker, framework_id, connect_timeout, timeout, tls, WHAT).call("deploy", spec=spec), output)


@service.command("list")
@client_options(FRAMEWORK_ID)
def list_(framework_id: str, timeout: float, output: str, broker: str, connect_timeout: float,
          tls: TlsOptions | None) -> None:
    """Every service: instances wanted, running and healthy, and any deployment in progress."""
    show(client(broker, framework_id, connect_timeout, timeout, tls, WHAT).call("list")["items"], output, LIST_COLUMNS)


@service.command()
@click.argument("name")
@client_options(FRAMEWORK_ID)
def status(name: str, framework_id: str, timeout: float, output: str, broker: str, connect_timeout: float,
           tls: TlsOptions | None) -> None:
    """One service in detail: its instances, why any is pending, backoff and deployment."""
    answer: dict[str, Any] = client(broker, framework_id, connect_timeout, timeout, tls, WHAT).call("status", name=name)
    show(answer, output)
    if output == "table":
        for key in ("deployment", "backoff"):
            if isinstance(answer.get(key), dict):
                click.echo(f"{key}: {printable(cell(answer[key]))}")
        instances = answer.get("instances") or []
        if instances:
            click.echo("")
            table([h for _, h in INSTANCE_COLUMNS], [[cell(i.get(k)) for k, _ in INSTANCE_COLUMNS] for i in instances])
        for pending in answer.get("pending") or []:
            slot, reason = cell(pending.get("slot")), cell(pending.get("reason"))
            click.echo(f"pending instance {printable(slot)}: {printable(reason)}")


@service.command()
@click.argument("name")
@click.argument("instances", type=click.IntRange(0, 1000))
@client_options(FRAMEWORK_ID)
def scale(name: str, instances: int, framework_id: str, timeout: float, output: str, broker: str,
          connect_timeout: float, tls: TlsOptions | None) -> None:
    """Run INSTANCES instances of service NAME."""
    show(client(broker, framework_id, connect_timeout, timeout, tls, WHAT).call("scale", name=name,
                                                                              instances=instances), output)


@service.command()
@click.argument("name")
@client_options(FRAMEWORK_ID)
def restart(name: str, framework_id: str, timeout: float, output: str, broker: str, connect_timeout: float,
            tls: TlsOptions | None) -> None:
    """Replace every instance, in rolling steps (the upgrade settings of its spec)."""
    show(client(broker, framework_id, connect_timeout, timeout, tls, WHAT).call("restart", name=name), output)


@service.command()
@click.argument("name")
@client_options(FRAMEWORK_ID)
def stop(name: str, framework_id: str, timeout: float, output: str, broker: str, connect_timeout: float,
         tls: TlsOptions | None) -> None:
    """Kill every instance and forget the service."""
    show(client(broker, framework_id, connect_timeout, timeout, tls, WHAT).call("stop", name=name), output)
