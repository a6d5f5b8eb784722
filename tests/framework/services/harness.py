"""A virtual cluster driving a ``ServicePlanner``: agents, offers from free resources, task states,
and an invariant check on every kill the planner chooses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from broker_mesos.core.protocol import Offer, TaskInfo, TaskState, TaskStatus
from broker_mesos.core.resources import Resources
from broker_mesos.framework.planning import Decline, Effect, KillTask, Launch, Revive, Suppress
from broker_mesos.framework.services.planner import ServicePlanner
from broker_mesos.framework.services.spec import ServiceSpec, parse_service

FW = "services"


def spec(**fields: Any) -> ServiceSpec:
    data: dict[str, Any] = {"name": "web", "command": "serve"}
    data.update(fields)
    return parse_service(data)


@dataclass
class Agent:
    agent_id: str
    hostname: str
    resources: Resources
    attributes: dict[str, str] = field(default_factory=dict)


def agents(n: int, text: str = "cpus:4;mem:4096;ports:[31000-31009]", **attrs: list[str]) -> list[Agent]:
    return [Agent(f"a{i}", f"host{i}", Resources.parse(text), {k: v[i] for k, v in attrs.items()})
            for i in range(n)]


class InvariantBroken(AssertionError):
    pass


class Cluster:
    """Applies the planner's effects as the master and agents would; tasks only change when the test
    says so (``run``, ``fail``, ``finish_kills``), so every interleaving is the test's choice."""

    def __init__(self, planner: ServicePlanner, nodes: Sequence[Agent], now: float = 1000.0) -> None:
        self.planner = planner
        self.agents = {a.agent_id: a for a in nodes}
        self.now = now
        self.tasks: dict[str, TaskInfo] = {}
        self.states: dict[str, TaskState] = {}
        self.healthy: dict[str, bool | None] = {}
        self.kill_requested: set[str] = set()
        self.ever_killed: set[str] = set()
        self.effects: list[Effect] = []
        self.suppressed = False
        self.check_invariant = True
        self._offers = 0
        self._uuid = 0

    # -- driving ---------------------------------------------------------------------------
    def offer(self) -> list[Effect]:
        offers = []
        for a in self.agents.values():
            used = [t.resources for tid, t in self.tasks.items() if t.agent_id == a.agent_id
                    and not self.states[tid].terminal]
            free = a.resources
            for r in used:
                free = free - r
            self._offers += 1
            offers.append(Offer(offer_id=f"o{self._offers}", framework_id=FW, agent_id=a.agent_id,
                                hostname=a.hostname, resources=free, attributes=dict(a.attributes)))
        effects = self._call(lambda: self.planner.offers(offers, self.now))
        answered = [oid for e in effects if isinstance(e, Launch) for oid in [e.offer_id]]
        answered += [oid for e in effects if isinstance(e, Decline) for oid in e.offer_ids]
        assert sorted(answered) == sorted(o.offer_id for o in offers), "every offer answered exactly once"
        return effects

    def tick(self, dt: float = 0.0) -> list[Effect]:
        self.now += dt
        return self._call(lambda: self.planner.tick(self.now))

    def update(self, task_id: str, state: TaskState, *, healthy: bool | None = None, exit_code: int | None = None,
               agent_id: str | None = None, message: str = "") -> list[Effect]:
        self._uuid += 1
        agent = agent_id if agent_id is not None else (self.tasks[task_id].agent_id if task_id in self.tasks else "a0")
        status = TaskStatus(task_id=task_id, framework_id=FW, agent_id=agent, state=state, uuid=f"u{self._uuid}",
                            timestamp=self.now, healthy=healthy, exit_code=exit_code, message=message)
        if task_id in self.tasks:
            self.states[task_id] = state
            self.healthy[task_id] = healthy if state is TaskState.RUNNING else None
        return self._call(lambda: self.planner.status_update(status, self.now))

    def run(self, task_id: str, healthy: bool | None = True) -> list[Effect]:
        return self.update(task_id, TaskState.RUNNING, healthy=healthy)

    def fail(self, task_id: str, exit_code: int = 1) -> list[Effect]:
        return self.update(task_id, TaskState.FAILED, exit_code=exit_code)

    def finish_kills(self) -> list[Effect]:
        out: list[Effect] = []
        for tid in sorted(self.kill_requested):
            self.kill_requested.discard(tid)
            if not self.states[tid].terminal:
                out += self.update(tid, TaskState.KILLED)
        return out

    def run_all(self, healthy: bool | None = True) -> list[Effect]:
        """Every launched task that has not started runs (and passes its check)."""
        out: list[Effect] = []
        for tid in sorted(self.tasks):
            if self.states[tid] is TaskState.STAGING and tid not in self.kill_requested:
                out += self.run(tid, healthy)
        return out

    def settle(self, rounds: int = 30, healthy: bool | None = True) -> None:
        """Offers, starts and kills until nothing changes (all well-behaved)."""
        for _ in range(rounds):
            self.tick(0.5)
            self.offer()
            self.run_all(healthy)
            self.finish_kills()

    # -- views -----------------------------------------------------------------------------
    def live(self, name: str = "web") -> list[str]:
        return [t for t, s in self.states.items() if not s.terminal and t.startswith(name + "_")]

    def summary(self, name: str = "web") -> dict[str, Any]:
        return next(s for s in self.planner.list_services(self.now) if s["name"] == name)

    # -- inside ----------------------------------------------------------------------------
    def _call(self, call: Any) -> list[Effect]:
        healthy_before = {t for t, h in self.healthy.items() if h is not False and self.states[t] is TaskState.RUNNING}
        effects: list[Effect] = call()
        self.effects += effects
        killed_healthy = []
        for e in effects:
            if isinstance(e, Launch):
                for task in e.tasks:
                    assert task.task_id not in self.tasks, f"task id {task.task_id} reused"
                    self.tasks[task.task_id] = task
                    self.states[task.task_id] = TaskState.STAGING
                    self.healthy[task.task_id] = None
            elif isinstance(e, KillTask):
                if e.task_id in healthy_before and e.task_id not in self.ever_killed:  # a resend chooses nothing
                    killed_healthy.append(e.task_id)
                self.kill_requested.add(e.task_id)
                self.ever_killed.add(e.task_id)
            elif isinstance(e, Suppress):
                self.suppressed = True
            elif isinstance(e, Revive):
                self.suppressed = False
        if self.check_invariant and killed_healthy:
            self._check(killed_healthy)
        return effects

    def _check(self, killed: list[str]) -> None:
        for view in self.planner.list_services(self.now):
            if view["status"] == "stopping":
                continue
            status = self.planner.status(view["name"], self.now)
            mine = [t for t in killed if t.startswith(view["name"] + "_")]
            minimum = ServiceSpec.from_wire(status["spec"]).min_healthy
            if mine and view["healthy"] < minimum:
                raise InvariantBroken(f"killed healthy {mine}: {view['healthy']} healthy left, min {minimum}")
