"""Delay scheduling: a framework waits a little for offers on the agents that hold its tasks' data.

Zaharia et al., "Delay scheduling" (EuroSys 2010), as Hadoop used it on Mesos (Hindman et al., NSDI
2011, section 6.3). Each task states where it would like to run (agent ids and/or attribute values);
for each offer, ``DelayScheduler.decide`` picks the waiting tasks that are local to it. When a job has
waiting tasks but none is local to an offer, the job *skips* the offer (the framework DECLINEs it with a
short ``refuse_seconds``, so the master offers the agent to others meanwhile). Once a job has been
skipping for ``max_wait`` seconds, its tasks take any offer, until one of them launches locally again,
which starts the wait over. ``max_wait=0`` is plain greedy placement (local first, else anywhere).

As in the paper the wait is counted per job (``LocalityTask.job``), from the first offer the job had
to skip; give every task its own job to make the wait per task.

Pure logic: no driver, no clock (``now`` is passed in), so the same code runs in a real framework
(see ``broker_mesos.framework.examples.locality``) and in the simulator (``broker_mesos.sim``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from broker_mesos.core.protocol import Offer
from broker_mesos.core.resources import Resources

DEFAULT_JOB = "default"
DEFAULT_REFUSE_SECONDS = 1.0
IDLE_REFUSE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Preference:
    """Where a task would like to run: on one of ``agents``, or on an agent whose attributes match.

    ``attributes`` holds (name, accepted values) pairs; an agent matches when, for every name, its
    attribute has one of the accepted values. An empty preference is local everywhere.
    """

    agents: frozenset[str] = frozenset()
    attributes: tuple[tuple[str, frozenset[str]], ...] = ()

    @classmethod
    def of(cls, agents: Iterable[str] = (),
           attributes: Mapping[str, str | Iterable[str]] | None = None) -> Preference:
        """``Preference.of(agents=["a1"], attributes={"rack": "r1"})``; a value may be a list of choices."""
        pairs = []
        for name, values in sorted((attributes or {}).items()):
            accepted = frozenset([values] if isinstance(values, str) else values)
            if not accepted:
                raise ValueError(f"attribute {name!r} accepts no value")
            pairs.append((name, accepted))
        return cls(frozenset(agents), tuple(pairs))

    def __bool__(self) -> bool:
        return bool(self.agents or self.attributes)

    def matches(self, agent_id: str, attributes: Mapping[str, str]) -> bool:
        """True when an agent with this id and these attributes is local for the task."""
        if not self or agent_id in self.agents:
            return True
        return bool(self.attributes) and all(attributes.get(name) in accepted for name, accepted in self.attributes)


@dataclass(slots=True)
class LocalityTask:
    """A task waiting for a place. ``data`` is the framework's own (e.g. the command to run)."""

    task_id: str
    resources: Resources
    preference: Preference = field(default_factory=Preference)
    job: str = DEFAULT_JOB
    data: Any = None


@dataclass(frozen=True, slots=True)
class Placement:
    """``task`` goes to the offer's agent; ``waited`` = seconds from ``add`` to this decision."""

    task: LocalityTask
    agent_id: str
    local: bool
    waited: float


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one offer: launch ``placements`` (ACCEPT) or, when there are none, DECLINE.

    ``refuse_seconds`` goes with that ACCEPT or DECLINE: short while jobs wait for local offers (the
    agent comes back soon), long when nothing waits at all.
    """

    offer: Offer
    placements: tuple[Placement, ...]
    refuse_seconds: float

    @property
    def accepted(self) -> bool:
        return bool(self.placements)


class DelayScheduler:
    """Waiting tasks, in the order they were added, and each job's wait for a local offer."""

    def __init__(self, max_wait: float, *, refuse_seconds: float = DEFAULT_REFUSE_SECONDS,
                 idle_refuse_seconds: float = IDLE_REFUSE_SECONDS) -> None:
        if max_wait < 0 or refuse_seconds < 0 or idle_refuse_seconds < 0:
            raise ValueError("max_wait and refuse times must not be negative")
        self.max_wait = max_wait
        self.refuse_seconds = refuse_seconds
        self.idle_refuse_seconds = idle_refuse_seconds
        self._pending: dict[str, tuple[LocalityTask, float]] = {}
        self._skipping_since: dict[str, float] = {}  # job -> when it first had to skip an offer
        self._waiting_per_job: dict[str, int] = {}

    # -- the waiting tasks ------------------------------------------------------------------
    def add(self, task: LocalityTask, now: float) -> None:
        """Queue ``task`` (again, e.g. after a refused ACCEPT: it goes to the back of the queue)."""
        if task.task_id in self._pending:
            raise ValueError(f"task {task.task_id} is already waiting")
        self._pending[task.task_id] = (task, now)
        self._waiting_per_job[task.job] = self._waiting_per_job.get(task.job, 0) + 1

    def remove(self, task_id: str) -> LocalityTask | None:
        """Stop waiting for ``task_id`` (e.g. the framework gave up on it); returns it if it waited."""
        entry = self._pending.pop(task_id, None)
        if entry is None:
            return None
        self._left(entry[0].job)
        return entry[0]

    @property
    def pending(self) -> list[LocalityTask]:
        return [task for task, _ in self._pending.values()]

    def __len__(self) -> int:
        return len(self._pending)

    def skipping_since(self, job: str = DEFAULT_JOB) -> float | None:
        """When ``job`` started skipping non-local offers (None: it is not waiting)."""
        return self._skipping_since.get(job)

    def relaxed(self, job: str, now: float) -> bool:
        """True when ``job`` has waited ``max_wait`` and may take any offer."""
        since = self._skipping_since.get(job)
        return self.max_wait <= 0 or (since is not None and now - since >= self.max_wait)

    # -- offers -----------------------------------------------------------------------------
    def decide_all(self, offers: Iterable[Offer], now: float) -> list[Decision]:
        return [self.decide(offer, now) for offer in offers]

    def decide(self, offer: Offer, now: float) -> Decision:
        """Choose tasks for ``offer``: local ones first (oldest first), then, for jobs whose wait is
        over, any that still fit. The chosen tasks stop waiting; the caller launches them."""
        free = offer.resources
        placements: list[Placement] = []
        local_jobs: set[str] = set()
        for task, added in self._pending.values():
            if task.resources <= free and task.preference.matches(offer.agent_id, offer.attributes):
                free = free - task.resources
                placements.append(Placement(task, offer.agent_id, True, now - added))
                local_jobs.add(task.job)
        for job in local_jobs:
            self._skipping_since.pop(job, None)
        skipped: set[str] = set()
        chosen = {p.task.task_id for p in placements}
        for task, added in self._pending.values():
            if task.task_id in chosen or task.job in local_jobs or not task.resources <= free:
                continue
            since = self._skipping_since.setdefault(task.job, now)
            if self.max_wait <= 0 or now - since >= self.max_wait:
                free = free - task.resources
                placements.append(Placement(task, offer.agent_id, False, now - added))
            else:
                skipped.add(task.job)
        for placement in placements:
            del self._pending[placement.task.task_id]
            self._left(placement.task.job)
        return Decision(offer, tuple(placements), self._refuse(skipped, now))

    def _refuse(self, skipped: set[str], now: float) -> float:
        """How long the master should keep this agent away: until the soonest wait ends, at most
        ``refuse_seconds``, while jobs wait; 0 when tasks wait that did not fit; long when none wait."""
        if skipped:
            soonest = min(self._skipping_since[job] + self.max_wait - now for job in skipped)
            return max(0.0, min(self.refuse_seconds, soonest))
        return 0.0 if self._pending else self.idle_refuse_seconds

    def _left(self, job: str) -> None:
        """One task of ``job`` stopped waiting; a job with none left waiting has no wait either."""
        left = self._waiting_per_job[job] - 1
        if left:
            self._waiting_per_job[job] = left
        else:
            del self._waiting_per_job[job]
            self._skipping_since.pop(job, None)
