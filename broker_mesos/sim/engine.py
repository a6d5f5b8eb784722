"""A discrete-event simulation of a cluster: the real master core on a virtual clock, nothing else.

``Simulation`` owns a ``MasterState`` and stands in for everything around it: agents (which run each
task for the time a workload model says, then report RUNNING and FINISHED), the broker (every message
hop takes ``latency`` virtual seconds, in order) and the master process' timer (``tick`` every
``tick_interval``). Frameworks are ordinary ``Scheduler`` objects; they get a ``SimDriver`` with the
driver's calls, so scheduler code written for RabbitMQ runs here unchanged.

Deterministic: events at the same instant run in the order they were scheduled, the master core is
deterministic, and any randomness belongs to the caller's seeded RNG.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from broker_mesos.core import protocol
from broker_mesos.core.errors import CallRefused
from broker_mesos.core.master import (
    Effect,
    MasterConfig,
    MasterState,
    PublishEvent,
    PublishStatus,
    ToAgent,
    ToFramework,
)
from broker_mesos.core.protocol import TaskInfo, TaskState, TaskStatus
from broker_mesos.core.resources import Resources
from broker_mesos.framework.calls import SchedulerCalls
from broker_mesos.framework.scheduler import Scheduler

Duration = Callable[[TaskInfo], float]
"""How long a task runs on the virtual clock (its ``agent_id`` says where it was placed)."""


@dataclass(slots=True)
class SimFramework:
    """A subscribed framework: its scheduler, its workload's task durations, its driver."""

    framework_id: str
    scheduler: Scheduler
    duration: Duration
    driver: SimDriver


@dataclass(slots=True)
class Counters:
    offers: int = 0
    accepts: int = 0
    declines: int = 0
    refused_calls: int = 0
    launched: int = 0
    finished: int = 0
    rounds: int = 0
    events: dict[str, int] = field(default_factory=dict)


class SimDriver(SchedulerCalls):
    """What a scheduler calls in the simulator; the same calls as ``SchedulerDriver``.

    Each call reaches the master ``latency`` seconds later and returns its call id at once; a refused
    call comes back as ``call_refused`` with that id, as with the real master.
    """

    def __init__(self, sim: Simulation, framework_id: str) -> None:
        self.sim = sim
        self.framework_id = framework_id
        self._ids = itertools.count(1)

    @property
    def now(self) -> float:
        return self.sim.now

    def _call(self, body: Any) -> str:
        call_id = f"{self.framework_id}-C{next(self._ids)}"
        self.sim.after(self.sim.latency, lambda: self.sim.deliver_call(self.framework_id, body, call_id))
        return call_id


class Simulation:
    """Agents, frameworks and the master core on one virtual clock; ``run`` advances it."""

    def __init__(self, config: MasterConfig | None = None, *, tick_interval: float = 0.05,
                 latency: float = 0.0) -> None:
        self.master = MasterState(config or MasterConfig(master_id="sim", allocation_interval=0.1))
        self.tick_interval = tick_interval
        self.latency = latency
        self.now = 0.0
        self.frameworks: dict[str, SimFramework] = {}
        self.counters = Counters()
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._status_ids = itertools.count(1)
        self._running: dict[tuple[str, str], TaskInfo] = {}  # (framework, task) -> task, on its agent
        self._ticking = False

    # -- the clock ----------------------------------------------------------------------------
    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (max(when, self.now), next(self._seq), action))

    def after(self, delay: float, action: Callable[[], None]) -> None:
        self.at(self.now + delay, action)

    def run(self, *, until: float | None = None, stop: Callable[[], bool] | None = None) -> float:
        """Process events in time order until ``stop()`` holds, the clock passes ``until`` or nothing
        is left to do; returns the virtual time reached."""
        if until is None and stop is None:
            raise ValueError("run needs until= or stop=: the master's timer never runs out of events")
        self._start_ticking()
        while self._queue and not (stop is not None and stop()):
            when = self._queue[0][0]
            if until is not None and when > until:
                self.now = until
                break
            _, _, action = heapq.heappop(self._queue)
            self.now = when
            action()
        return self.now

    def _start_ticking(self) -> None:
        if not self._ticking:
            self._ticking = True
            self.after(0.0, self._tick)

    def _tick(self) -> None:
        rounds = self.master.rounds
        self._apply(self.master.tick(self.now))
        self.counters.rounds += self.master.rounds - rounds
        self.after(self.tick_interval, self._tick)

    # -- cluster membership -------------------------------------------------------------------
    def add_agent(self, agent_id: str, resources: Resources | str, attributes: dict[str, str] | None = None, *,
                  heartbeat_interval: float = 5.0) -> None:
        """An agent registers now (its REGISTER reaches the master after ``latency``), then sends a
        HEARTBEAT with its running tasks every ``heartbeat_interval``, as ``bmesos agent`` does."""
        res = Resources.parse(resources) if isinstance(resources, str) else resources
        attrs = dict(attributes or {})
        register = protocol.Register(agent_id, agent_id, res, attrs, [], heartbeat_interval)
        self.after(self.latency, lambda: self._apply(self.master.agent_info(register, self.now)))

        def heartbeat() -> None:
            tasks = [protocol.AgentTask(task.task_id, fw, task.resources, TaskState.RUNNING)
                     for (fw, _), task in self._running.items() if task.agent_id == agent_id]
            beat = protocol.Heartbeat(agent_id, agent_id, res, attrs, tasks, heartbeat_interval)
            self.after(self.latency, lambda: self._apply(self.master.agent_info(beat, self.now)))
            self.after(heartbeat_interval, heartbeat)

        self.after(heartbeat_interval, heartbeat)

    def add_framework(self, framework_id: str, scheduler: Scheduler, duration: Duration, *, role: str = "*",
                      weight: float = 1.0) -> SimDriver:
        """Subscribe ``scheduler`` as ``framework_id``; ``duration(task)`` is how long each of its tasks runs."""
        driver = SimDriver(self, framework_id)
        self.frameworks[framework_id] = SimFramework(framework_id, scheduler, duration, driver)
        subscribe = protocol.Subscribe(framework_id, framework_id, role, weight)
        self.after(self.latency, lambda: self._apply(
            self.master.subscribe(subscribe, None, f"{framework_id}-subscribe", self.now)))
        return driver

    # -- master inputs --------------------------------------------------------------------------
    def deliver_call(self, framework_id: str, body: Any, call_id: str) -> None:
        """A framework's call reaches the master; a refusal goes back as ERROR, as the real master does."""
        handlers: dict[type, Callable[[], list[Effect]]] = {
            protocol.Accept: lambda: self.master.accept(body, self.now),
            protocol.Decline: lambda: self.master.decline(body, self.now),
            protocol.Kill: lambda: self.master.kill(body, self.now),
            protocol.Revive: lambda: self.master.revive(body, self.now),
            protocol.Suppress: lambda: self.master.suppress(body, self.now),
            protocol.Teardown: lambda: self.master.teardown(body, self.now),
            protocol.Reconcile: lambda: self.master.reconcile(body, None, call_id, self.now),
        }
        if isinstance(body, protocol.Accept):
            self.counters.accepts += 1
        elif isinstance(body, protocol.Decline):
            self.counters.declines += 1
        try:
            effects = handlers[type(body)]()
        except CallRefused as exc:
            self.counters.refused_calls += 1
            error = protocol.Error(str(exc), type(body).__name__.upper(), call_id)
            effects = [ToFramework(framework_id, error)]
        self._apply(effects)

    def _status(self, framework_id: str, task: TaskInfo, state: TaskState) -> None:
        """The agent reports ``state``: the update reaches the master and the framework (the status
        exchange fans out to both), each after ``latency``."""
        status = TaskStatus(task.task_id, framework_id, task.agent_id, state, f"sim-S{next(self._status_ids)}",
                            self.now)
        self.after(self.latency, lambda: self._apply(self.master.status_update(status, self.now)))
        self._to_framework(framework_id, "status_update", status)

    # -- effects ----------------------------------------------------------------------------------
    def _apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, ToFramework):
                self._framework_message(effect.framework_id, effect.body)
            elif isinstance(effect, ToAgent):
                self.after(self.latency, lambda body=effect.body: self._agent_message(body))
            elif isinstance(effect, PublishStatus):
                self._to_framework(effect.status.framework_id, "status_update", effect.status)
            elif isinstance(effect, PublishEvent):
                self.counters.events[effect.kind] = self.counters.events.get(effect.kind, 0) + 1

    def _framework_message(self, framework_id: str, body: Any) -> None:
        if isinstance(body, protocol.Offers):
            self.counters.offers += len(body.offers)
            self._to_framework(framework_id, "resource_offers", list(body.offers))
        elif isinstance(body, protocol.Rescind):
            for offer_id in body.offer_ids:
                self._to_framework(framework_id, "offer_rescinded", offer_id)
        elif isinstance(body, protocol.Subscribed):
            self._to_framework(framework_id, "registered", framework_id)
        elif isinstance(body, protocol.Update):
            for status in body.updates:
                self._to_framework(framework_id, "status_update", status)
        elif isinstance(body, protocol.Error):
            self._to_framework(framework_id, "call_refused", body)

    def _to_framework(self, framework_id: str, callback: str, *args: Any) -> None:
        framework = self.frameworks.get(framework_id)
        if framework is not None:
            self.after(self.latency, lambda: getattr(framework.scheduler, callback)(framework.driver, *args))

    def _agent_message(self, body: Any) -> None:
        """RUN_TASKS: each task runs for its duration; KILL_TASKS: running tasks end KILLED."""
        if isinstance(body, protocol.RunTasks):
            framework = self.frameworks.get(body.framework_id)
            for task in body.tasks:
                key = (body.framework_id, task.task_id)
                self._running[key] = task
                self.counters.launched += 1
                self._status(body.framework_id, task, TaskState.RUNNING)
                seconds = framework.duration(task) if framework is not None else 0.0
                self.after(seconds, lambda key=key: self._task_ended(key, TaskState.FINISHED))
        elif isinstance(body, protocol.KillTasks):
            for task_id in body.task_ids:
                self._task_ended((body.framework_id, task_id), TaskState.KILLED)

    def _task_ended(self, key: tuple[str, str], state: TaskState) -> None:
        task = self._running.pop(key, None)
        if task is None:
            return  # killed before it finished
        if state is TaskState.FINISHED:
            self.counters.finished += 1
        self._status(key[0], task, state)
