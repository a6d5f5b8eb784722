"""``bmesos run``: run a command N times on the cluster with the built-in one-shot framework.

Before it subscribes it asks the master (QUERY agents) whether any agent could ever hold one task; if
none could it exits 2 at once naming the largest agent (Nomad's placement failure). While tasks wait
for offers it says what for, every ``WAIT_REPORT_INTERVAL`` seconds: the need and the largest free agent.

Exit status: 0 when every task FINISHED, 1 when any did not, 2 on ``--timeout`` or when no agent can
ever fit a task, 130 on Ctrl-C.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import click

from broker_mesos.agent.sandbox import STDERR, sandbox_dir
from broker_mesos.bus.tls import TlsOptions
from broker_mesos.cli.common import (
    broker_options,
    log_level_option,
    master_principal_option,
    one_line_errors,
    printable,
    setup_logging,
)
from broker_mesos.cli.query import Client
from broker_mesos.core.errors import BrokerMesosError, BrokerUnreachable
from broker_mesos.core.protocol import TaskInfo, TaskState, TaskStatus
from broker_mesos.core.resources import Resources
from broker_mesos.framework.driver import SchedulerDriver
from broker_mesos.framework.oneshot import OneShotScheduler, RunPlan, command_for, describe

EXIT_TIMEOUT = 2
EXIT_UNPLACEABLE = 2
PLACEMENT_QUERY_TIMEOUT = 5.0  # a master that does not answer this soon: no check, the run goes on
WAIT_REPORT_INTERVAL = 3.0  # seconds between "waiting for offers" checks while tasks wait
EXIT_INTERRUPTED = 130
STOP_WAIT = 10.0
# a run's framework id is new every time, so no later process can fail over to it: its failover timeout
# only has to outlast a broker restart or a connection blip, and its tasks are killed this soon after
# the command dies without tearing down (SIGKILL, a lost machine)
RUN_FAILOVER_TIMEOUT = 60.0


class QuietUntilConnected(logging.Filter):
    """Drops the transport's retry warnings until the first connection is up: an unreachable broker
    must give one error line, not one line per attempt."""

    def __init__(self) -> None:
        super().__init__()
        self.connected = False

    def filter(self, record: logging.LogRecord) -> bool:
        return self.connected or record.levelno >= logging.ERROR

    def install(self) -> QuietUntilConnected:
        logging.getLogger("broker_mesos.bus.connection").addFilter(self)
        return self


def raise_interrupt_on_sigterm() -> None:
    """SIGTERM ends the command like Ctrl-C does (clean up, then exit)."""

    def handler(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


class LineReporter:
    """Plain output: one line per task's final state (for logs, pipes and tests)."""

    def __init__(self) -> None:
        self.done = threading.Event()

    def launched(self, plan: RunPlan, tasks: Sequence[TaskInfo]) -> None:
        pass

    def updated(self, plan: RunPlan, status: TaskStatus, final: bool) -> None:
        if final:
            click.echo(printable(describe(status)))

    def problem(self, message: str) -> None:
        click.echo(f"warning: {printable(message)}", err=True)

    def waiting(self, message: str) -> None:
        """What the run waits for (printed when it changes)."""
        if message != getattr(self, "_waiting", None):
            self._waiting = message
            click.echo(printable(message), err=True)

    def finished(self, plan: RunPlan) -> None:
        self.done.set()

    def close(self) -> None:
        pass


class BarReporter(LineReporter):
    """A rich progress bar on a terminal; tasks that did not finish are printed above it."""

    def __init__(self, total: int) -> None:
        super().__init__()
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn())
        self.bar = self.progress.add_task("waiting for offers", total=total)
        self.progress.start()

    def _describe(self, plan: RunPlan) -> None:
        launched = plan.count - len(plan.pending)
        self.progress.update(self.bar, completed=len(plan.finals),
                             description=f"launched {launched}, running {plan.running}, "
                                         f"finished {plan.finished}, failed {plan.failed + plan.killed_or_lost}")

    def launched(self, plan: RunPlan, tasks: Sequence[TaskInfo]) -> None:
        self._describe(plan)

    def waiting(self, message: str) -> None:
        self.progress.update(self.bar, description=printable(message))

    def updated(self, plan: RunPlan, status: TaskStatus, final: bool) -> None:
        if final and status.state != TaskState.FINISHED:
            # plain text: no rich markup, emoji codes or highlighting taken from what the wire said
            self.progress.console.print(printable(describe(status)), style="red", markup=False, emoji=False,
                                        highlight=False)
        self._describe(plan)

    def close(self) -> None:
        self.progress.stop()


def failure_report(plan: RunPlan, framework_id: str) -> list[str]:
    """For each task that did not finish: what happened and where its stderr is (wire text escaped)."""
    lines = []
    for status in plan.unsuccessful():
        detail = f": {status.message}" if status.message else ""
        lines.append(printable(f"failed: {describe(status)}{detail}"))
        if status.source == "SOURCE_AGENT":
            path = sandbox_dir(Path("<work-dir>"), framework_id, status.task_id) / STDERR
            where = (f"  stderr: {path} on agent {status.agent_id} "
                     f"(<work-dir> = that agent's --work-dir, default ./.bmesos/agent-{status.agent_id})")
            lines.append(printable(where))
    return lines


@click.command(context_settings={"default_map": {"log_level": "warning"}, "allow_interspersed_args": False})
@click.option("--name", default="run", show_default=True, help="Framework name; task ids are <name>-<i>.")
@click.option("--cpus", type=click.FloatRange(min=0.001), default=0.1, show_default=True, help="CPUs per task.")
@click.option("--mem", type=click.FloatRange(min=0.0), default=32.0, show_default=True, help="Memory (MB) per task.")
@click.option("--count", type=click.IntRange(1, 100_000), default=1, show_default=True, help="How many tasks.")
@click.option("--role", default="*", show_default=True, help="The framework's role.")
@click.option("--timeout", type=click.FloatRange(min=0.0), default=None,
              help="Give up (tear down, exit 2) if not all tasks are done after this many seconds.")
@broker_options
@master_principal_option
@log_level_option
@click.argument("command", nargs=-1, required=True)
@one_line_errors
def run(name: str, cpus: float, mem: float, count: int, role: str, timeout: float | None, broker: str,
        connect_timeout: float, tls: TlsOptions | None, master_principal: str, log_level: str,
        command: tuple[str, ...]) -> None:
    """Run COMMAND as COUNT tasks on the cluster and wait until all of them end.

    COMMAND runs as an argument list without a shell; a single argument with spaces or shell syntax
    runs through /bin/sh:

    \b
      bmesos run --count 20 -- true
      bmesos run -- 'echo $HOSTNAME | tr a-z A-Z'

    Prints each task's final state, then 'N finished, M failed, K killed/lost'. Exits 0 only if every
    task finished, 1 otherwise, 2 on --timeout.
    """
    setup_logging(log_level)
    quiet = QuietUntilConnected().install()
    plan = RunPlan(name, count, Resources.of(cpus=cpus, mem=mem), command_for(command))
    placement = Placement(Client(broker, connect_timeout, PLACEMENT_QUERY_TIMEOUT, tls, name=f"run-{name}"),
                          plan.resources)
    unplaceable = placement.never_fits()
    if unplaceable:
        click.echo(f"Error: {printable(unplaceable)}", err=True)
        sys.exit(EXIT_UNPLACEABLE)
    reporter = BarReporter(count) if sys.stdout.isatty() else LineReporter()
    driver = SchedulerDriver(OneShotScheduler(plan, reporter), broker, name, role=role,
                             connect_timeout=connect_timeout, failover_timeout=RUN_FAILOVER_TIMEOUT,
                             master_principal=master_principal,
                             tls=tls)
    driver.bus.on_ready(lambda: setattr(quiet, "connected", True))
    raise_interrupt_on_sigterm()
    outcome = "done"
    deadline = time.monotonic() + timeout if timeout is not None else None
    try:
        driver.start()
        placement.follow(plan, reporter)
        while not reporter.done.wait(0.1):
            if not driver.alive:
                outcome = "died"
                break
            if deadline is not None and time.monotonic() > deadline:
                outcome = "timeout"
                break
    except KeyboardInterrupt:
        outcome = "interrupted"
    finally:
        placement.stop()
        reporter.close()
    if outcome == "died":
        driver.join()  # raises what ended the driver (BrokerUnreachable): one line via one_line_errors
        raise click.ClickException("the framework driver stopped unexpectedly")
    if outcome != "done":
        driver.teardown()
    _stop(driver)
    _report(plan, driver.framework_id, outcome, timeout)


class Placement:
    """Asks the master where a task of ``need`` could go: never (no agent is big enough), or what
    the run waits for while the cluster is busy. A master that does not answer is not an error here."""

    def __init__(self, client: Client, need: Resources) -> None:
        self.client = client
        self.need = need
        self.key = "cpus" if need.scalar("cpus") else next(iter(sorted(need.scalars)), "cpus")
        self._stopped = threading.Event()

    def never_fits(self) -> str | None:
        """Why no agent could ever run one task (naming the largest), or None (fits, no agent yet, or no
        answer)."""
        try:
            if self.client.query("agents", fits=self.need, limit=0).total:
                return None
            largest = self.client.query("agents", sort=f"total:{self.key}", limit=1).agents
        except BrokerUnreachable:
            raise  # one line, as the driver would say it
        except BrokerMesosError as exc:
            logging.getLogger(__name__).warning("placement not checked: %s", exc)
            return None
        if not largest:
            return None  # no agent registered yet: wait for one
        agent = largest[0]
        return (f"no agent can ever run a task of {self.need}: the largest agent (by {self.key}) is "
                f"{agent.agent_id} ({agent.hostname or 'host unknown'}) with {agent.total}")

    def follow(self, plan: RunPlan, reporter: LineReporter) -> None:
        """Every WAIT_REPORT_INTERVAL while tasks wait for offers: tell ``reporter`` what for."""

        def loop() -> None:
            while not self._stopped.wait(WAIT_REPORT_INTERVAL) and not reporter.done.is_set():
                waiting = len(plan.pending)
                if not waiting:
                    continue
                try:
                    free = self.client.query("agents", sort=f"free:{self.key}", limit=1).agents
                except BrokerMesosError:
                    continue
                largest = f"{free[0].agent_id} {free[0].free}" if free else "no agent registered"
                if not self._stopped.is_set():
                    reporter.waiting(f"waiting for offers: {waiting} task(s) need {self.need} each, "
                                     f"largest free: {largest}")

        threading.Thread(target=loop, name="placement", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()


def _stop(driver: SchedulerDriver) -> None:
    driver.stop()
    try:
        driver.join(STOP_WAIT)
    except Exception as exc:  # the run's outcome is known already; a failed shutdown only gets a line
        click.echo(f"warning: while stopping: {printable(exc)}", err=True)


def _report(plan: RunPlan, framework_id: str, outcome: str, timeout: Any) -> None:
    for line in failure_report(plan, framework_id):
        click.echo(line, err=True)
    click.echo(plan.summary())
    if outcome == "timeout":
        click.echo(f"timed out after {timeout:g}s with {plan.count - len(plan.finals)} task(s) not done "
                   f"(framework {framework_id} torn down)", err=True)
        sys.exit(EXIT_TIMEOUT)
    if outcome == "interrupted":
        click.echo(f"interrupted: framework {framework_id} torn down", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(plan.exit_code)
