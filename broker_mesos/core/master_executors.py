"""The master's rules for framework executors: booking their resources, following the agents' reports
of them, and relaying framework messages between schedulers and executors.

A mixin of ``MasterState`` (``core.master``). An executor's own resources are charged once per agent
(Mesos' rule), on top of its tasks': from the offer of the first task that names it there, or, for one an
agent reports that this master never booked (e.g. launched by a master that died before persisting it),
from the agent's free pool if they fit. It stays booked while its agent reports it in REGISTER /
HEARTBEAT, and is released once the agent stops reporting it (after the same grace a launched task
gets to reach its agent). Framework messages are best effort: the master relays them only between a
framework and an executor it has booked for that framework on that agent.
"""

from __future__ import annotations

from broker_mesos.core import protocol
from broker_mesos.core.allocation.engine import Allocator
from broker_mesos.core.errors import CallRefused
from broker_mesos.core.master_agents import report_grace
from broker_mesos.core.master_model import (
    AgentRecord,
    Effect,
    ExecutorRecord,
    FrameworkRecord,
    PublishEvent,
    ToAgent,
    ToFramework,
)
from broker_mesos.core.protocol import ExecutorInfo, TaskInfo
from broker_mesos.core.resources import Resources


class ExecutorPlan:
    """What an ACCEPT does with executors, decided before anything changes: per task id, the error that
    makes the task TASK_ERROR, or the ExecutorInfo booked with it (the first task naming an executor
    not yet booked on its agent)."""

    __slots__ = ("errors", "new")

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}
        self.new: dict[str, ExecutorInfo] = {}

    def charge(self, task: TaskInfo) -> Resources:
        """What the task takes from its offer: its resources, plus its executor's when it books one."""
        info = self.new.get(task.task_id)
        return task.resources if info is None else task.resources + info.resources


class ExecutorRules:
    """Executor bookkeeping and framework messages; the state they work on is ``MasterState``'s. It
    comes before ``AgentRules`` in ``MasterState``'s bases: the agent rules call into it."""

    allocator: Allocator
    agents: dict[str, AgentRecord]
    frameworks: dict[str, FrameworkRecord]
    executors: dict[tuple[str, str, str], ExecutorRecord]
    adopt_until: float

    def _changed(self) -> None:
        raise NotImplementedError

    def _framework(self, framework_id: str) -> FrameworkRecord:
        raise NotImplementedError

    # -- ACCEPT -----------------------------------------------------------------------------
    def _plan_executors(self, framework_id: str, tasks: list[TaskInfo]) -> ExecutorPlan:
        """Check the executors an ACCEPT's tasks name, changing nothing. Every task naming one executor
        on one agent must carry the ExecutorInfo it was booked with (or that an earlier task of the same
        ACCEPT brings); one that does not is TASK_ERROR, as in Mesos."""
        plan = ExecutorPlan()
        pending: dict[tuple[str, str], ExecutorInfo] = {}
        for task in tasks:
            info = task.executor
            if info is None:
                continue
            where = f"executor {info.executor_id} on agent {task.agent_id}"
            record = self.executors.get((task.agent_id, framework_id, info.executor_id))
            if record is not None:
                same = record.info == info if record.info is not None else record.resources == info.resources
                if not same:
                    plan.errors[task.task_id] = (f"task {task.task_id} names {where} with an ExecutorInfo that "
                                                 "differs from the one it runs with")
                continue
            earlier = pending.get((task.agent_id, info.executor_id))
            if earlier is None:
                pending[(task.agent_id, info.executor_id)] = info
                plan.new[task.task_id] = info
            elif earlier != info:
                plan.errors[task.task_id] = (f"task {task.task_id} names {where} with an ExecutorInfo that "
                                             "differs from an earlier task's in the same ACCEPT")
        return plan

    def _launch_with_executor(self, framework_id: str, task: TaskInfo, plan: ExecutorPlan,
                              now: float) -> list[Effect]:
        """Book the executor the task brings (if it is the first to name it there); an adopted executor
        learns its ExecutorInfo from the first task naming it."""
        info = plan.new.get(task.task_id)
        if info is not None:
            return [self._book_executor(ExecutorRecord(task.agent_id, framework_id, info.executor_id, info,
                                                       info.resources, now))]
        if task.executor is not None:
            record = self.executors[(task.agent_id, framework_id, task.executor.executor_id)]
            if record.info is None:
                record.info = task.executor
        return []

    # -- books ------------------------------------------------------------------------------
    def _book_executor(self, record: ExecutorRecord, adopted: bool = False) -> PublishEvent:
        """Charge the executor's resources on its agent and to its framework's share."""
        self.executors[record.key] = record
        agent = self.agents[record.agent_id]
        agent.free = agent.free - record.resources
        agent.executors.add((record.framework_id, record.executor_id))
        framework = self.frameworks.get(record.framework_id)
        if framework is not None:
            framework.executors.add((record.agent_id, record.executor_id))
            framework.allocated = framework.allocated + record.resources.quantity()
        self.allocator.agent_changed(record.agent_id)
        self._changed()
        return PublishEvent("executor.added", {
            "agent_id": record.agent_id, "framework_id": record.framework_id, "executor_id": record.executor_id,
            "resources": record.resources.to_wire(), "adopted": adopted})

    def _unbook_executor(self, record: ExecutorRecord, reason: str) -> PublishEvent:
        """The reverse of ``_book_executor`` (its agent may be gone already)."""
        del self.executors[record.key]
        agent = self.agents.get(record.agent_id)
        if agent is not None:
            agent.executors.discard((record.framework_id, record.executor_id))
            agent.free = agent.free + record.resources
            self.allocator.agent_changed(record.agent_id)
        framework = self.frameworks.get(record.framework_id)
        if framework is not None:
            framework.executors.discard((record.agent_id, record.executor_id))
            framework.allocated = framework.allocated - record.resources.quantity()
        self._changed()
        return PublishEvent("executor.removed", {
            "agent_id": record.agent_id, "framework_id": record.framework_id, "executor_id": record.executor_id,
            "reason": reason})

    def _executors_in_use(self, agent: AgentRecord) -> Resources:
        used = Resources()
        for framework_id, executor_id in agent.executors:
            used = used + self.executors[(agent.agent_id, framework_id, executor_id)].resources
        return used

    # -- agents' reports --------------------------------------------------------------------
    def _executor_reports(self, agent: AgentRecord, reported: list[protocol.AgentExecutor],
                          now: float) -> list[Effect]:
        """REGISTER / HEARTBEAT ``executors``: adopt the ones this master has not booked (if they fit),
        shut down those of frameworks it does not know (past a take-over's adoption window), and release
        booked ones the agent has not reported for longer than the grace since they were booked."""
        by_key = {(e.framework_id, e.executor_id): e for e in reported}
        effects: list[Effect] = []
        shutdown: dict[str, list[str]] = {}
        for framework_id, executor_id in sorted(by_key.keys() - agent.executors):
            executor = by_key[(framework_id, executor_id)]
            if framework_id not in self.frameworks and now >= self.adopt_until:
                shutdown.setdefault(framework_id, []).append(executor_id)
            elif executor.resources <= agent.free:
                effects.append(self._book_executor(ExecutorRecord(agent.agent_id, framework_id, executor_id, None,
                                                                  executor.resources, now), adopted=True))
        grace = report_grace(agent)
        for framework_id, executor_id in sorted(agent.executors - by_key.keys()):
            record = self.executors[(agent.agent_id, framework_id, executor_id)]
            if now - record.booked_at > grace:
                effects.append(self._unbook_executor(record, "no longer reported by its agent"))
        effects.extend(ToAgent(agent.agent_id, protocol.ShutdownExecutors(fw, ids)) for fw, ids in shutdown.items())
        return effects

    def _drop_agent_executors(self, agent: AgentRecord, reason: str) -> list[Effect]:
        """Its agent is removed: its executors leave the books with it."""
        return [self._unbook_executor(self.executors[(agent.agent_id, fw, eid)], reason)
                for fw, eid in sorted(agent.executors)]

    def _shutdown_framework_executors(self, framework: FrameworkRecord) -> list[Effect]:
        """The framework is removed: every agent running executors of it stops them all. They stay booked
        until their agents stop reporting them."""
        agent_ids = sorted({agent_id for agent_id, _ in framework.executors})
        return [ToAgent(agent_id, protocol.ShutdownExecutors(framework.framework_id, [])) for agent_id in agent_ids]

    # -- framework messages -----------------------------------------------------------------
    def message(self, call: protocol.Message, now: float) -> list[Effect]:
        """MESSAGE: relay a framework's data to one of its executors (refused if not booked there)."""
        framework = self._framework(call.framework_id)
        if (call.agent_id, framework.framework_id, call.executor_id) not in self.executors:
            raise CallRefused(f"executor {call.executor_id} of framework {framework.framework_id} is not running "
                              f"on agent {call.agent_id}")
        return [ToAgent(call.agent_id, protocol.ToExecutor(framework.framework_id, call.executor_id, call.data))]

    def from_executor(self, message: protocol.FromExecutor, now: float) -> list[Effect]:
        """FROM_EXECUTOR: relay an executor's data to its scheduler as EXECUTOR_MESSAGE. Raises
        ``CallRefused`` (dead-lettered) if the executor is not booked for that framework on that agent;
        dropped quietly (best effort) if the framework is not subscribed now."""
        if (message.agent_id, message.framework_id, message.executor_id) not in self.executors:
            raise CallRefused(f"executor {message.executor_id} of framework {message.framework_id} is not "
                              f"running on agent {message.agent_id}")
        framework = self.frameworks.get(message.framework_id)
        if framework is None or framework.disconnected_at is not None:
            return []
        return [ToFramework(framework.framework_id,
                            protocol.ExecutorMessage(message.agent_id, message.executor_id, message.data))]
