"""What became of one fire (or manual start) of a job: a run, its attempts, and its durable form.

A run moves PENDING -> STAGING -> RUNNING -> SUCCEEDED | FAILED | KILLED, and back to PENDING for a
retry attempt; a fire that never got a task is recorded MISSED (past its starting deadline) or SKIPPED
(the concurrency policy forbade it). The planner owns the transitions; this module only holds records.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any

from broker_mesos.framework.jobs.cron import Schedule


class RunState(enum.StrEnum):
    PENDING = "PENDING"  # waiting for an offer (first attempt, or a retry once next_attempt_at passed)
    STAGING = "STAGING"  # its task was launched, not yet reported running
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    KILLED = "KILLED"
    MISSED = "MISSED"
    SKIPPED = "SKIPPED"

    @property
    def active(self) -> bool:
        return self in (RunState.PENDING, RunState.STAGING, RunState.RUNNING)


class Trigger(enum.StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"


def stamp(t: float) -> str:
    """``YYYYmmddTHHMMSSZ`` of ``t`` in UTC: the scheduled part of run ids (unique per job and instant)."""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y%m%dT%H%M%SZ")


@dataclass(slots=True, eq=False)
class Run:
    """One run of a job (compared by identity: the planner's lists hold each once). ``task_id`` is the
    current attempt's task ("" while none was launched); ``task_ids`` the last tasks launched for it."""

    run_id: str
    scheduled_for: float
    trigger: Trigger
    state: RunState = RunState.PENDING
    attempt: int = 1
    task_id: str = ""
    task_ids: list[str] = field(default_factory=list)
    agent_id: str = ""
    launched_at: float | None = None  # of the current attempt: when its reconcile check is due
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    message: str = ""
    next_attempt_at: float | None = None  # a retry attempt waits until then

    def finish(self, state: RunState, now: float, message: str = "") -> None:
        self.state, self.ended_at, self.next_attempt_at = state, now, None
        if message:
            self.message = message

    def view(self, schedule: Schedule) -> dict[str, Any]:
        """What ``history`` shows: plain values, times as ISO 8601 in the job's zone."""
        def iso(t: float | None) -> str | None:
            return None if t is None else schedule.iso(t)
        return {"run_id": self.run_id, "trigger": self.trigger.value, "state": self.state.value,
                "scheduled_for": iso(self.scheduled_for), "started_at": iso(self.started_at),
                "ended_at": iso(self.ended_at), "exit_code": self.exit_code, "agent_id": self.agent_id,
                "task_id": self.task_id, "attempt": self.attempt, "message": self.message,
                "next_attempt_at": iso(self.next_attempt_at)}

    def to_wire(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "scheduled_for": self.scheduled_for, "trigger": self.trigger.value,
                "state": self.state.value, "attempt": self.attempt, "task_id": self.task_id,
                "task_ids": list(self.task_ids), "agent_id": self.agent_id, "launched_at": self.launched_at,
                "started_at": self.started_at, "ended_at": self.ended_at, "exit_code": self.exit_code,
                "message": self.message, "next_attempt_at": self.next_attempt_at}

    @classmethod
    def from_wire(cls, data: Any) -> Run:
        """Strict inverse of ``to_wire``: ``ValueError`` naming the field on anything else."""
        if not isinstance(data, dict) or set(data) != _RUN_KEYS:
            raise ValueError(f"a run must be a map with keys {sorted(_RUN_KEYS)}")
        run = cls(run_id=_typed(data, "run_id", str), scheduled_for=float(_typed(data, "scheduled_for", float)),
                  trigger=Trigger(data["trigger"]), state=RunState(data["state"]),
                  attempt=_typed(data, "attempt", int), task_id=_typed(data, "task_id", str),
                  task_ids=list(_typed(data, "task_ids", list)), agent_id=_typed(data, "agent_id", str),
                  launched_at=_optional_time(data, "launched_at"), started_at=_optional_time(data, "started_at"),
                  ended_at=_optional_time(data, "ended_at"), exit_code=_typed(data, "exit_code", int, True),
                  message=_typed(data, "message", str), next_attempt_at=_optional_time(data, "next_attempt_at"))
        if run.attempt < 1 or not all(isinstance(t, str) for t in run.task_ids):
            raise ValueError(f"run {run.run_id}: bad attempt or task ids")
        return run


_RUN_KEYS = frozenset(Run.__dataclass_fields__)


def _typed(data: dict[str, Any], key: str, kind: type, optional: bool = False) -> Any:
    value = data[key]
    if optional and value is None:
        return None
    accepted: tuple[type, ...] = (int, float) if kind is float else (kind,)
    if isinstance(value, bool) or not isinstance(value, accepted):
        raise ValueError(f"{key}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _optional_time(data: dict[str, Any], key: str) -> float | None:
    value = _typed(data, key, float, True)
    return None if value is None else float(value)
