"""What a built-in framework's pure planner asks its shell to do: the effects of its decisions.

A planner (``framework/services/planner.py``, ``framework/jobs/planner.py``) never performs I/O and
never reads a clock: it takes offers, status updates, operators' commands and ``now``, changes its
state, and returns a list of these effects. The shell (``framework/ha.py``) persists the planner's
state *before* performing them, so a task is in the durable record before its ACCEPT can reach the
master: a scheduler killed at any point never launches a task it does not know of (write-ahead).
"""

from __future__ import annotations

from dataclasses import dataclass

from broker_mesos.core.protocol import TaskInfo


@dataclass(frozen=True, slots=True)
class Launch:
    """Accept ``offer_id`` with ``tasks`` (all on the offer's agent)."""

    offer_id: str
    tasks: tuple[TaskInfo, ...]


@dataclass(frozen=True, slots=True)
class Decline:
    offer_ids: tuple[str, ...]
    refuse_seconds: float


@dataclass(frozen=True, slots=True)
class KillTask:
    task_id: str


@dataclass(frozen=True, slots=True)
class Revive:
    """Ask for offers again (after a ``Suppress``, or to drop earlier declines' filters)."""


@dataclass(frozen=True, slots=True)
class Suppress:
    """Nothing to place: stop sending offers until ``Revive``."""


@dataclass(frozen=True, slots=True)
class Reconcile:
    """Ask the master for the latest state of ``task_ids`` (every live task of the framework when empty)."""

    task_ids: tuple[str, ...] = ()


Effect = Launch | Decline | KillTask | Revive | Suppress | Reconcile


class CommandError(Exception):
    """An operator's command the planner refuses; the message is sent back to whoever asked."""
