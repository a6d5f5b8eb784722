"""Health checks of command tasks, decided without I/O (Mesos' HealthChecker semantics).

The agent (``agent/health.py``) runs the checks and feeds each result to the task's ``HealthState``;
the verdict says whether the task's health changed (publish a TASK_RUNNING update with ``healthy``)
and whether it must be killed. Time is passed in (``now``, seconds on any one clock).

Rules, per task, from the moment it is RUNNING (``started_at``):

- a success makes the task healthy; it was unknown or unhealthy before: publish ``healthy=True``;
- a failure before the first success, within ``grace_period_seconds`` of ``started_at``, is ignored
  (not counted, nothing published): the task is still starting;
- any other failure counts; the task turns unhealthy: publish ``healthy=False`` if it was healthy or
  unknown;
- ``consecutive_failures`` counted failures in a row: kill (once; a success resets the count);
- after the kill verdict nothing more is decided: later results are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker_mesos.core.protocol import HealthCheck, HealthCheckType
from broker_mesos.core.resources import Resources

REASON_TASK_HEALTH_CHECK_STATUS_UPDATED = "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED"
MAX_DETAIL = 300  # characters of a check's failure detail kept in a status message


@dataclass(frozen=True, slots=True)
class HealthVerdict:
    """What one check result means for its task."""

    publish: bool  # the task's health changed: publish a TASK_RUNNING update carrying ``healthy``
    healthy: bool | None  # the task's health after this result (None: nothing counted yet)
    kill: bool  # the consecutive failures were reached: kill the task (given at most once)
    consecutive_failures: int  # counted failures in a row after this result
    counted: bool  # False: a failure ignored in the grace period, or a result after the kill verdict


class HealthState:
    """One task's health: feed it every check result in order (``observe``)."""

    __slots__ = ("check", "consecutive_failures", "healthy", "killed", "started_at", "succeeded")

    def __init__(self, check: HealthCheck, started_at: float) -> None:
        self.check = check
        self.started_at = started_at
        self.healthy: bool | None = None
        self.succeeded = False  # a check ever succeeded: the grace period no longer applies
        self.consecutive_failures = 0
        self.killed = False

    def in_grace(self, now: float) -> bool:
        """Failures are ignored now: no check has succeeded yet and the grace period is not over."""
        return not self.succeeded and now - self.started_at < self.check.grace_period_seconds

    def observe(self, ok: bool, now: float) -> HealthVerdict:
        """The verdict for a check that succeeded (``ok``) or failed, finished at ``now``."""
        if self.killed:
            return HealthVerdict(False, self.healthy, False, self.consecutive_failures, False)
        if ok:
            changed = self.healthy is not True
            self.healthy = True
            self.succeeded = True
            self.consecutive_failures = 0
            return HealthVerdict(changed, True, False, 0, True)
        if self.in_grace(now):
            return HealthVerdict(False, self.healthy, False, 0, False)
        changed = self.healthy is not False
        self.healthy = False
        self.consecutive_failures += 1
        self.killed = self.consecutive_failures >= self.check.consecutive_failures
        return HealthVerdict(changed, False, self.killed, self.consecutive_failures, True)


def first_check_at(check: HealthCheck, started_at: float) -> float:
    """When the first check of a task RUNNING since ``started_at`` is due."""
    return started_at + check.delay_seconds


def check_port(check: HealthCheck, resources: Resources) -> int:
    """The port a TCP or HTTP check connects to: ``port`` if set, else the ``port_index``-th port of
    the task's ``ports`` resource (its ranges in ascending order). Raises ``LookupError`` saying why
    there is none (the check then fails with that message)."""
    if check.port > 0:
        return check.port
    index = check.port_index
    ranges = resources.ranges.get("ports", ())
    for lo, hi in ranges:
        if index <= hi - lo:
            return lo + index
        index -= hi - lo + 1
    total = sum(hi - lo + 1 for lo, hi in ranges)
    raise LookupError(f"no port to check: port is 0 and the task has {total} port(s), so no port_index "
                      f"{check.port_index}")


def describe(check: HealthCheck) -> str:
    """A short name of the check for logs and messages."""
    if check.type is HealthCheckType.COMMAND:
        command = check.command
        text = "" if command is None else (command.value if command.shell else " ".join(command.arguments))
        return f"command {brief(text, 80)!r}"
    where = f"port {check.port}" if check.port > 0 else f"port_index {check.port_index}"
    return f"{check.type.value} {where}" + (f" {check.path}" if check.type is HealthCheckType.HTTP else "")


def brief(text: str, limit: int = MAX_DETAIL) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[:limit - 1] + "…"


def update_message(healthy: bool, detail: str) -> str:
    """The ``message`` of a TASK_RUNNING update that reports a change of health."""
    return f"health check passed: {brief(detail)}" if healthy else f"health check failed: {brief(detail)}"


def kill_message(failures: int, last_failure: str) -> str:
    """The ``message`` of the TASK_KILLED update of a task its health checks killed."""
    return f"killed after {failures} consecutive failed health checks: {brief(last_failure)}"
