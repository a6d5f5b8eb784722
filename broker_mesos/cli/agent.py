"""``bmesos agent``: run an agent on this machine (or container)."""

from __future__ import annotations

import re
from pathlib import Path

import click

from broker_mesos.agent.checkpoint import lock_work_dir
from broker_mesos.agent.detect import check_agent_id, default_agent_id, detect_resources, parse_resources
from broker_mesos.agent.executor import EXECUTORS, TaskUsers
from broker_mesos.agent.isolation import ISOLATIONS
from broker_mesos.agent.isolation.limits import DEFAULT_PIDS_LIMIT, MIN_MEMORY_MB
from broker_mesos.agent.metrics import AgentMetrics
from broker_mesos.agent.process import Agent, AgentConfig
from broker_mesos.bus.connection import Bus
from broker_mesos.bus.tls import TlsOptions
from broker_mesos.cli.common import (
    broker_options,
    log_level_option,
    master_principal_option,
    one_line_errors,
    setup_logging,
)
from broker_mesos.core.errors import ResourceError
from broker_mesos.core.resources import Resources, parse_attributes


def _agent_id(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str:
    if value is None:
        return default_agent_id()
    try:
        return check_agent_id(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _resources(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Resources | None:
    if value is None:
        return None
    try:
        return parse_resources(value)
    except ResourceError as exc:
        raise click.BadParameter(str(exc)) from None


def _hostname(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}", value):
        raise click.BadParameter("a hostname is 1-253 of A-Z a-z 0-9 . - (starting with a letter or digit)")
    return value


def _attributes(_ctx: click.Context, _param: click.Parameter, value: str) -> dict[str, str]:
    try:
        return parse_attributes(value)
    except ResourceError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@broker_options
@click.option("--id", "agent_id", callback=_agent_id, metavar="ID",
              help="Agent id (A-Z a-z 0-9 _ -). Default: the hostname with other characters made '-', so each "
                   "docker-compose replica gets its own.")
@click.option("--resources", callback=_resources, metavar="TEXT",
              help="What this agent offers, e.g. 'cpus:4;mem:4096;disk:10000;ports:[31000-32000]'. Replaces "
                   "detection entirely. Default: the logical cpus and total memory (MB), or the agent's container "
                   "limits (cgroup CPU quota, memory limit, cpuset) when smaller, the work dir's filesystem size "
                   "(MB) and ports 31000-32000.")
@click.option("--hostname", default=None, metavar="NAME", callback=_hostname,
              help="The hostname this agent reports (offers carry it; constraints such as 'hostname: UNIQUE' "
                   "use it). Default: the machine's.")
@click.option("--attributes", callback=_attributes, default="", metavar="TEXT",
              help="Attributes passed to frameworks with every offer, e.g. 'rack:a;zone:1'.")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where task sandboxes go (<work-dir>/frameworks/<fw>/tasks/<task>/). "
                   "Default: ./.bmesos/agent-<id>.")
@click.option("--executor", type=click.Choice(EXECUTORS), default="command", show_default=True,
              help="'command' runs each task's command in its sandbox. 'noop' runs nothing: every task goes "
                   "STARTING, RUNNING, FINISHED at once, with no process and no sandbox (for benchmarks and "
                   "for simulating many agents).")
@click.option("--heartbeat-interval", type=click.FloatRange(0.05, 3600.0), default=5.0, show_default=True,
              help="Seconds between HEARTBEAT messages.")
@click.option("--kill-grace", type=click.FloatRange(min=0.0), default=3.0, show_default=True,
              help="Seconds between SIGTERM and SIGKILL when a task is killed.")
@click.option("--checkpoint/--no-checkpoint", default=None,
              help="Keep tasks and unconfirmed status updates in <work-dir>/meta so that a restarted agent (same "
                   "--id and --work-dir) re-attaches to its running tasks and loses no update. "
                   "Default: on, except with --executor noop.")
@click.option("--kill-on-stop", is_flag=True,
              help="On SIGTERM / Ctrl-C kill the running tasks (they report TASK_KILLED) instead of leaving them "
                   "running for the next agent process. Implied by --no-checkpoint.")
@click.option("--task-user", metavar="USER",
              help="The OS user of tasks that name none (TaskInfo.user). Default: nobody when the agent runs as "
                   "root, else the agent's own user (an agent that is not root runs every task as itself).")
@click.option("--allow-root-tasks", is_flag=True,
              help="Let tasks run as root (uid 0, or gid 0 among their groups); refused otherwise. Logged at start.")
@click.option("--isolation", type=click.Choice(ISOLATIONS),
              help="'cgroups': each task runs in its own cgroups below the agent's own "
                   "(<agent's cgroup>/bmesos/agent.<id>.<8 hex of the work dir>/framework.<fw>/task.<task>, "
                   "cgroups v1 or v2): its memory "
                   f"limited to its mem (at least {MIN_MEMORY_MB:g} MB; swap adds nothing; the OOM killer ends it "
                   "TASK_FAILED, reason REASON_CONTAINER_LIMITATION_MEMORY), a CPU weight proportional to its "
                   "cpus, a cap on its processes; killing it kills every process in them. Needs an agent running "
                   "as root. 'none': tasks share the machine freely. Default: cgroups when the agent can create "
                   "its subtree, else none with a warning saying why.")
@click.option("--cgroups-cpu-limit", is_flag=True,
              help="Also cap each task's CPU time at its cpus (CFS quota: cpus x the 100 ms period). Without it a "
                   "task's cpus only weight it against the others, and it may use CPU nobody else wants.")
@click.option("--cgroups-pids-limit", type=click.IntRange(min=0), default=DEFAULT_PIDS_LIMIT, show_default=True,
              metavar="N",
              help="At most N processes and threads per task (pids.max; contains fork bombs). 0: no limit.")
@click.option("--disk-check-interval", type=click.FloatRange(min=0.0), default=5.0, show_default=True,
              metavar="SECONDS",
              help="Measure each running task's sandbox this often; a task whose sandbox holds more than its disk "
                   "resource (MB) is killed and ends TASK_FAILED, reason REASON_CONTAINER_LIMITATION_DISK (tasks "
                   "without disk are not limited). 0: no disk limit.")
@click.option("--sandbox-gc-delay", type=click.FloatRange(min=0.0), default=86400.0, show_default=True,
              metavar="SECONDS",
              help="Remove a finished task's sandbox (and its checkpoint) this long after it ended. Needs "
                   "checkpointing.")
@click.option("--sandbox-gc-min-free", type=click.FloatRange(0.0, 100.0), default=10.0, show_default=True,
              metavar="PERCENT",
              help="While the work dir's filesystem has less than this percent free, remove finished tasks' "
                   "sandboxes sooner, oldest first. 0: only by --sandbox-gc-delay.")
@click.option("--executor-idle-timeout", type=click.FloatRange(min=0.0), default=10.0, show_default=True,
              metavar="SECONDS",
              help="Shut down a framework executor (a task's ExecutorInfo) that has had no task for this long.")
@click.option("--executor-shutdown-grace", type=click.FloatRange(min=0.0), default=5.0, show_default=True,
              metavar="SECONDS",
              help="Seconds between telling an executor to shut down (idle, framework torn down) and SIGKILL of "
                   "its processes; its tasks not ended by then end TASK_KILLED.")
@click.option("--executor-register-timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              metavar="SECONDS",
              help="An executor that has not subscribed on the agent's executor socket this long after it was "
                   "started is killed; its tasks end TASK_FAILED, reason REASON_EXECUTOR_REGISTRATION_TIMEOUT.")
@click.option("--executor-reregister-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              metavar="SECONDS",
              help="After an agent restart, an executor left running that has not subscribed again this long "
                   "after the agent started is killed; its tasks end TASK_FAILED, reason "
                   "REASON_EXECUTOR_REREGISTRATION_TIMEOUT.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=0, show_default=True, metavar="PORT",
              help="Serve Prometheus metrics on http://HOST:PORT/metrics (0: no metrics endpoint).")
@click.option("--metrics-host", default="0.0.0.0", show_default=True, metavar="HOST",
              help="The address the metrics endpoint listens on.")
@master_principal_option
@log_level_option
@one_line_errors
def agent(broker: str, connect_timeout: float, tls: TlsOptions | None, agent_id: str, resources: Resources | None,
          hostname: str | None, attributes: dict[str, str], work_dir: Path | None, executor: str,
          heartbeat_interval: float, kill_grace: float, checkpoint: bool | None, kill_on_stop: bool,
          task_user: str | None, allow_root_tasks: bool, isolation: str | None, cgroups_cpu_limit: bool,
          cgroups_pids_limit: int, disk_check_interval: float, sandbox_gc_delay: float, sandbox_gc_min_free: float,
          executor_idle_timeout: float, executor_shutdown_grace: float, executor_register_timeout: float,
          executor_reregister_timeout: float, metrics_port: int, metrics_host: str, master_principal: str,
          log_level: str) -> None:
    """Run an agent: offer this machine's resources and run the tasks the master sends.

    Stops on SIGTERM or Ctrl-C. Its tasks keep running (they run in their own sessions, checkpointed)
    and an agent restarted with the same --id and --work-dir takes them back, as after a crash; with
    --kill-on-stop (or --no-checkpoint) it kills them first and they report TASK_KILLED.

    Tasks never run with the agent's powers: each runs as its TaskInfo.user, else --task-user (an agent
    running as root switches to that user; never root without --allow-root-tasks), with a clean
    environment (none of the agent's variables) in a sandbox only its user can read, and in cgroups of
    its own that hold it to the resources it was given (--isolation).

    A task naming an ExecutorInfo runs inside that framework executor, which the agent starts (like a
    task: as the task's user, in a sandbox and cgroup of its own sized to the executor's and its tasks'
    resources) the first time a task names it, and which talks to the agent over the Unix socket
    <work-dir>/run/executor.sock. Executors survive an agent restart like tasks do.
    """
    setup_logging(log_level)
    work_dir = (work_dir or Path(".bmesos") / f"agent-{agent_id}").absolute()
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(f"cannot create work dir {work_dir}: {exc}") from None
    if executor == "command":
        try:
            TaskUsers(task_user, allow_root_tasks)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--task-user'") from None
    checkpoint = executor != "noop" if checkpoint is None else checkpoint
    if checkpoint and lock_work_dir(work_dir) is None:
        raise click.ClickException(f"work dir {work_dir} is in use by another agent")
    config = AgentConfig(agent_id=agent_id, resources=resources or detect_resources(work_dir), work_dir=work_dir,
                         attributes=attributes, executor=executor, heartbeat_interval=heartbeat_interval,
                         kill_grace=kill_grace, checkpoint=checkpoint,
                         kill_on_stop=kill_on_stop, task_user=task_user, allow_root_tasks=allow_root_tasks,
                         isolation=isolation, cgroups_cpu_limit=cgroups_cpu_limit,
                         cgroups_pids_limit=cgroups_pids_limit, master_principal=master_principal,
                         disk_check_interval=disk_check_interval, sandbox_gc_delay=sandbox_gc_delay,
                         sandbox_gc_min_free=sandbox_gc_min_free, executor_idle_timeout=executor_idle_timeout,
                         executor_shutdown_grace=executor_shutdown_grace,
                         executor_register_timeout=executor_register_timeout,
                         executor_reregister_timeout=executor_reregister_timeout,
                         **({"hostname": hostname} if hostname else {}))
    bus = Bus(broker, f"agent {agent_id}", connect_timeout=connect_timeout, tls=tls)
    process = Agent(bus, config)
    if metrics_port:
        try:
            AgentMetrics(process).serve(metrics_host, metrics_port)
        except OSError as exc:
            raise click.ClickException(f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc}") from None
    process.run()
