"""``bmesos master``: run the master process."""

from __future__ import annotations

import click

from broker_mesos.bus.tls import TlsOptions
from broker_mesos.cli.common import (
    broker_options,
    log_level_option,
    master_principal_option,
    one_line_errors,
    setup_logging,
)
from broker_mesos.core.codec import ID_PATTERN
from broker_mesos.core.errors import PolicyError, ResourceError
from broker_mesos.core.master import MasterConfig
from broker_mesos.core.master_model import DEFAULT_MAX_AGENT_RESOURCES_TEXT
from broker_mesos.core.resources import Resources


def _resources(_ctx: click.Context, _param: click.Parameter, value: str) -> Resources:
    try:
        return Resources.parse(value)
    except ResourceError as exc:
        raise click.BadParameter(str(exc)) from None


def _master_id(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not ID_PATTERN.fullmatch(value):
        raise click.BadParameter("must be 1-128 of A-Z a-z 0-9 _ -")
    return value


@click.command()
@broker_options
@click.option("--allocation-interval", type=click.FloatRange(min=0.001), default=1.0, show_default=True,
              help="Seconds between allocation rounds; a round batches every change since the last one.")
@click.option("--batch-threshold", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Run a round early once this many changes (releases, registrations, calls) have piled up.")
@click.option("--offer-timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds an offer stays valid; unanswered offers are rescinded and their resources re-offered.")
@click.option("--max-missed-heartbeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Remove an agent (its tasks go TASK_LOST) after this many heartbeats are missed in a row.")
@click.option("--agent-ping-timeout", type=click.FloatRange(min=0.01), default=None,
              help="Seconds after which a heartbeat counts as missed (default: the interval the agent reports).")
@click.option("--agent-reregister-timeout", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="After taking over, how long a master waits for the agents it restored to re-register "
                   "before the heartbeat rule can remove them.")
@click.option("--max-agent-resources", callback=_resources, default=DEFAULT_MAX_AGENT_RESOURCES_TEXT, show_default=True,
              metavar="RESOURCES",
              help="The most one agent may report (scalars); a REGISTER or HEARTBEAT beyond it is refused.")
@click.option("--master-id", callback=_master_id, default=None, help="This master's id (default: random).")
@master_principal_option
@click.option("--insecure", is_flag=True, envvar="BMESOS_INSECURE",
              help="Development mode: believe every sender (no principal checks). Logged at start; never on a "
                   "shared cluster. Also $BMESOS_INSECURE=1.")
@click.option("--allocator", default="drf", show_default=True,
              help="Allocation policy to start with (drf, priority, fair, binpack or an installed plugin); "
                   "change it at runtime with `bmesos admin allocator set`.")
@click.option("--allocator-param", "allocator_params", multiple=True, metavar="KEY=VALUE",
              help="Parameter of the starting policy (repeatable), e.g. --allocator-param resource=cpus.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=0, show_default=True, metavar="PORT",
              help="Serve Prometheus metrics on http://HOST:PORT/metrics (0: no metrics endpoint).")
@click.option("--metrics-host", default="0.0.0.0", show_default=True, metavar="HOST",
              help="The address the metrics endpoint listens on.")
@log_level_option
@one_line_errors
def master(broker: str, connect_timeout: float, tls: TlsOptions | None, allocation_interval: float,
           batch_threshold: int,
           offer_timeout: float, max_missed_heartbeats: int, agent_ping_timeout: float | None,
           agent_reregister_timeout: float, max_agent_resources: Resources,
           master_id: str | None, master_principal: str, insecure: bool, allocator: str,
           allocator_params: tuple[str, ...], metrics_port: int, metrics_host: str, log_level: str) -> None:
    """Run the master: keeps cluster state, makes offers in allocation rounds, routes tasks to agents.

    The master consumes the queues master.agents, master.calls and master.status, offers agents' free
    resources to frameworks by dominant resource fairness, and publishes offers to offers.<framework>.
    Start it several times for hot standbys: one is active (it holds the lease master.lease), the others
    wait and take over from the registry within about a second when it dies. --broker may list several
    comma-separated URLs (the nodes of a cluster). With --metrics-port it serves Prometheus metrics
    (monitoring/README.md); only the active master exports the cluster's state.
    """
    from broker_mesos.cli.admin import parse_params
    from broker_mesos.master.allocators import load_policies
    from broker_mesos.master.process import MasterProcess, new_master_id

    setup_logging(log_level)
    params = parse_params(allocator_params)
    try:
        load_policies().create(allocator, params)  # refuse a bad policy before connecting to anything
    except PolicyError as exc:
        raise click.BadParameter(str(exc), param_hint="'--allocator'") from None
    config = MasterConfig(master_id or new_master_id(), allocation_interval, batch_threshold, offer_timeout,
                          max_missed_heartbeats=max_missed_heartbeats, agent_ping_timeout=agent_ping_timeout,
                          agent_reregister_timeout=agent_reregister_timeout,
                          max_agent_resources=max_agent_resources,
                          allocator=allocator, allocator_params=tuple(sorted(params.items())))
    process = MasterProcess(broker, config, connect_timeout=connect_timeout, insecure=insecure,
                            master_principal=master_principal, tls=tls)
    if metrics_port:
        try:
            process.metrics.serve(metrics_host, metrics_port)
        except OSError as exc:
            raise click.ClickException(f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc}") from None
    process.install_signal_handlers()
    process.run()
