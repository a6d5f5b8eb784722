"""A ``Scheduler`` that runs a pure planner: callbacks in, the planner's effects out as driver calls.

The same object drives a planner under the real driver (``framework.ha.BuiltinScheduler`` adds the
lease, the persisted state and the operators' commands) and under the simulator's driver on a virtual
clock (``sim.engine``: ``tests/sim/test_builtin_planners.py``). No I/O here: ``persist`` is a hook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from broker_mesos.core.protocol import Error, Offer, TaskStatus
from broker_mesos.framework.calls import SchedulerCalls
from broker_mesos.framework.planning import Decline, Effect, KillTask, Launch, Reconcile, Revive, Suppress
from broker_mesos.framework.scheduler import Scheduler


class Planner(Protocol):
    """What a planner offers (docs in ``framework/planning.py``)."""

    dirty: bool

    def offers(self, offers: list[Offer], now: float) -> list[Effect]: ...
    def offer_rescinded(self, offer_id: str) -> None: ...
    def status_update(self, status: TaskStatus, now: float) -> list[Effect]: ...
    def tick(self, now: float) -> list[Effect]: ...
    def recovered(self, now: float) -> list[Effect]: ...
    def to_wire(self) -> dict[str, Any]: ...


class PlannerScheduler(Scheduler):
    """Feeds ``planner`` (None: not active, offers are declined) and performs what it returns on
    ``calls`` (the driver); ``tick()`` is the owner's to call periodically."""

    def __init__(self, clock: Callable[[], float], planner: Planner | None = None) -> None:
        self.clock = clock
        self.planner = planner
        self.calls: SchedulerCalls | None = None

    def persist(self) -> None:
        """Write the planner's state somewhere durable (here: nowhere; the HA shell overrides it)."""
        if self.planner is not None:
            self.planner.dirty = False

    def perform(self, effects: list[Effect], *, persist: bool = False) -> None:
        """Persist first when anything launches (write-ahead) or when asked; then make the calls."""
        if persist or any(isinstance(e, Launch) for e in effects):
            self.persist()
        calls = self.calls
        if calls is None:
            return
        for effect in effects:
            if isinstance(effect, Launch):
                calls.accept([effect.offer_id], effect.tasks)
            elif isinstance(effect, Decline):
                calls.decline(effect.offer_ids, effect.refuse_seconds)
            elif isinstance(effect, KillTask):
                calls.kill(effect.task_id)
            elif isinstance(effect, Revive):
                calls.revive()
            elif isinstance(effect, Suppress):
                calls.suppress()
            elif isinstance(effect, Reconcile):
                calls.reconcile(effect.task_ids)

    def tick(self) -> None:
        if self.planner is not None:
            self.perform(self.planner.tick(self.clock()))

    # -- Scheduler callbacks ------------------------------------------------------------------------
    def registered(self, driver: Any, framework_id: str) -> None:
        if self.planner is not None:
            self.perform(self.planner.recovered(self.clock()), persist=True)

    def reregistered(self, driver: Any, master_id: str) -> None:
        self.registered(driver, master_id)

    def resource_offers(self, driver: Any, offers: list[Offer]) -> None:
        if self.planner is None:
            driver.decline([o.offer_id for o in offers], 1.0)
            return
        self.perform(self.planner.offers(offers, self.clock()))

    def offer_rescinded(self, driver: Any, offer_id: str) -> None:
        if self.planner is not None:
            self.planner.offer_rescinded(offer_id)

    def status_update(self, driver: Any, status: TaskStatus) -> None:
        if self.planner is not None:
            self.perform(self.planner.status_update(status, self.clock()))

    def call_refused(self, driver: Any, error: Error) -> None:
        """A refused call needs nothing: the planner's timers reconcile what did not happen."""
