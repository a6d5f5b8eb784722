"""The master's rules for agents: admission, heartbeats, adoption of reported tasks, removal.

A mixin of ``MasterState`` (``core.master``), kept apart because agent lifecycle is a domain of its
own: what a REGISTER or HEARTBEAT changes, when silence makes an agent lost, and how a returning agent
is re-admitted (Mesos' rules for frameworks that are not partition-aware).
"""

from __future__ import annotations

import collections

from broker_mesos.core import protocol
from broker_mesos.core.allocation.engine import Allocator
from broker_mesos.core.errors import CallRefused
from broker_mesos.core.master_model import (
    COMPLETED_TASKS_KEPT,
    GONE_AGENTS_KEPT,
    NO_USAGE,
    REMOVED_AGENTS_KEPT,
    AgentRecord,
    DrainInfo,
    Effect,
    FrameworkRecord,
    MasterConfig,
    OfferRecord,
    PublishEvent,
    PublishStatus,
    TaskRecord,
    TaskUsage,
    ToAgent,
    ToFramework,
)
from broker_mesos.core.protocol import TaskState, TaskStatus
from broker_mesos.core.resources import Resources

STAGING_GRACE = 5.0  # seconds a launched task (or booked executor) may stay unknown to its agent


def report_grace(agent: AgentRecord) -> float:
    """How long something the master booked on ``agent`` may go unreported before it is dropped."""
    return max(STAGING_GRACE, 3 * agent.heartbeat_interval)


class AgentRules:
    """Agent lifecycle; the state it works on is ``MasterState``'s."""

    config: MasterConfig
    allocator: Allocator
    agents: dict[str, AgentRecord]
    frameworks: dict[str, FrameworkRecord]
    tasks: dict[tuple[str, str], TaskRecord]
    offers: dict[str, OfferRecord]
    completed: collections.OrderedDict[tuple[str, str], TaskRecord]
    removed_agents: collections.OrderedDict[str, set[tuple[str, str]]]
    draining: set[str]  # ids of the agents with a ``drain`` (kept in step with AgentRecord.drain)
    gone_agents: collections.OrderedDict[str, float]  # agent id -> when an operator marked it gone
    total: Resources
    adopt_until: float

    def _changed(self) -> None:
        raise NotImplementedError

    def _master_status(self, framework_id: str, task_id: str, agent_id: str, state: TaskState, reason: str,
                       message: str, now: float) -> TaskStatus:
        raise NotImplementedError

    # implemented by ExecutorRules (core.master_executors), before this class in MasterState's bases
    def _executor_reports(self, agent: AgentRecord, reported: list[protocol.AgentExecutor],
                          now: float) -> list[Effect]:
        raise NotImplementedError

    def _drop_agent_executors(self, agent: AgentRecord, reason: str) -> list[Effect]:
        raise NotImplementedError

    def _executors_in_use(self, agent: AgentRecord) -> Resources:
        raise NotImplementedError

    def _release_offer(self, offer: OfferRecord) -> None:
        raise NotImplementedError

    def _unbook_task(self, task: TaskRecord) -> None:
        raise NotImplementedError

    # -- agents -----------------------------------------------------------------------------
    def agent_info(self, info: protocol.Register | protocol.Heartbeat, now: float) -> list[Effect]:
        """REGISTER or HEARTBEAT: admit a new agent, or refresh a known one. Tasks it reports that this
        master never launched are adopted while a take-over restores them (``adopt_until``), and
        killed on the agent after that. An agent claiming more than ``max_agent_resources`` is
        refused (``CallRefused``) and nothing changes."""
        if info.agent_id in self.gone_agents:
            raise CallRefused(f"agent {info.agent_id} was marked gone by an operator: it may not register again "
                              f"(start it afresh, with a new agent id)")
        cap = self.config.max_agent_resources
        if any(info.resources.scalar(name) > most for name, most in cap.scalars.items()):
            raise CallRefused(f"agent {info.agent_id} reports {info.resources}, more than the master admits "
                              f"for one agent ({self.config.max_agent_resources})")
        agent = self.agents.get(info.agent_id)
        if agent is not None:
            agent.last_seen = now
            agent.hostname = info.hostname
            agent.attributes = dict(info.attributes)
            agent.heartbeat_interval = info.heartbeat_interval
            if info.resources != agent.total and self._in_use(agent) <= info.resources:
                self._set_total(agent, info.resources)
            effects = self._adopt_or_kill(agent, info.tasks, now)
            effects += self._drop_undelivered(agent, info, now)
            effects += self._executor_reports(agent, info.executors, now)
            self._record_usage(agent, info)
            return effects
        agent = AgentRecord(info.agent_id, info.hostname, info.resources, info.resources,
                            dict(info.attributes), now, info.heartbeat_interval)
        self.agents[agent.agent_id] = agent
        self.total = self.total + agent.total
        self.allocator.agent_changed(agent.agent_id)
        effects: list[Effect] = []
        declared_lost = self.removed_agents.pop(info.agent_id, None)
        if declared_lost is not None:
            effects.extend(self._readmit(agent, info, declared_lost, now))
        effects.extend(self._adopt_or_kill(agent, info.tasks, now))
        effects.extend(self._executor_reports(agent, info.executors, now))
        self._record_usage(agent, info)
        self._changed()
        effects.append(PublishEvent("agent.added", {
            "agent_id": agent.agent_id, "hostname": agent.hostname, "resources": agent.total.to_wire(),
            "readmitted": declared_lost is not None}))
        return effects

    def _record_usage(self, agent: AgentRecord, info: protocol.Register | protocol.Heartbeat) -> None:
        """Keep the usage the agent reports for each of its live tasks (the latest one; absent usage, as
        in a REGISTER, keeps what was known) and sum it for the agent. Only for state and metrics: the
        master allocates by its own books, never by what an agent says its tasks use."""
        usage = info.usage
        if usage is not None:
            for i, reported in enumerate(info.tasks):
                task = self.tasks.get((reported.framework_id, reported.task_id))
                if task is not None and task.agent_id == agent.agent_id:
                    task.usage = TaskUsage(usage.cpu_seconds[i], usage.mem_mb[i], usage.disk_mb[i])
        total = NO_USAGE
        for key in agent.tasks:
            task_usage = self.tasks[key].usage
            if task_usage is not None:
                total = total + task_usage
        agent.usage = total

    def _drop_undelivered(self, agent: AgentRecord, info: protocol.Register | protocol.Heartbeat,
                          now: float) -> list[Effect]:
        """Tasks still STAGING long after their launch that the agent does not report never reached it
        (e.g. a master died with the RUN_TASKS unconfirmed): TASK_DROPPED, resources back to the pool,
        as Mesos does for tasks missing from an agent's re-registration. The grace covers RUN_TASKS
        still queued for a busy agent. Tasks already ended in the books (declared LOST, then killed
        quietly on their returned agent) that the agent no longer reports are gone: resources back."""
        grace = report_grace(agent)
        reported = {(t.framework_id, t.task_id) for t in info.tasks}
        effects: list[Effect] = []
        for key in sorted(agent.tasks - reported):
            task = self.tasks[key]
            if task.state.terminal:  # LOST, killed quietly on its returned agent: ended now, told before
                self._unbook_task(task)
                self._complete(key, task)
                self._changed()
                continue
            if task.state != TaskState.STAGING or now - task.launched_at <= grace:
                continue
            status = self._master_status(task.framework_id, task.task_id, agent.agent_id, TaskState.DROPPED,
                                         "REASON_TASK_UNKNOWN", "the agent never received the task", now)
            task.state, task.last_status = TaskState.DROPPED, status
            self._unbook_task(task)
            self._complete(key, task)
            effects.append(PublishStatus(status))
        if effects:
            self._changed()
        return effects

    def _readmit(self, agent: AgentRecord, info: protocol.Register | protocol.Heartbeat,
                 declared_lost: set[tuple[str, str]], now: float) -> list[Effect]:
        """An agent removed for silence is back and admitted afresh (Mesos' rules). Tasks of frameworks
        that are not partition-aware were declared LOST (they may have been replaced): they are killed,
        and until the agent reports them ended they keep holding their resources, still LOST in the books.
        Tasks that were declared UNREACHABLE (partition-aware frameworks) are taken back as they are, and
        their framework is told their current state. The kill is quiet: the LOST already published is
        their last word on `status`; they leave the books when the agent stops reporting them."""
        kill: dict[str, list[str]] = {}
        effects: list[Effect] = []
        for reported in info.tasks:
            key = (reported.framework_id, reported.task_id)
            if key not in declared_lost or reported.state.terminal or not reported.resources <= agent.free:
                continue
            earlier = self.completed.pop(key, None)
            if earlier is not None and earlier.state == TaskState.UNREACHABLE:
                self._book_task(TaskRecord(reported.task_id, reported.framework_id, agent.agent_id,
                                           reported.resources, reported.state))
                effects.append(PublishStatus(self._master_status(
                    reported.framework_id, reported.task_id, agent.agent_id, reported.state,
                    "REASON_AGENT_REREGISTERED", "its agent is back", now)))
                continue
            self._book_task(TaskRecord(reported.task_id, reported.framework_id, agent.agent_id,
                                       reported.resources, TaskState.LOST))
            kill.setdefault(reported.framework_id, []).append(reported.task_id)
        effects.extend(ToAgent(agent.agent_id, protocol.KillTasks(fw, sorted(ids), quiet=True))
                       for fw, ids in sorted(kill.items()))
        return effects

    # -- operators: drain, undrain, mark gone (docs/protocol.md §11) ------------------------------
    def _registered(self, agent_id: str) -> AgentRecord:
        agent = self.agents.get(agent_id)
        if agent is None:
            known = agent_id in self.removed_agents or agent_id in self.gone_agents
            raise CallRefused(f"agent {agent_id} is not registered" + (" (it was removed)" if known else
                                                                       " (unknown agent)"))
        return agent

    def drain_agent(self, call: protocol.DrainAgent, reply_to: str | None, call_id: str,
                    now: float) -> list[Effect]:
        """No offers from the agent from now on (its outstanding offers are rescinded at once); with
        ``kill`` its live tasks are killed now, with a deadline those still live then (``drain_tick``).
        Draining a draining agent again replaces its deadline and kill."""
        agent = self._registered(call.agent_id)
        deadline = None if call.deadline_seconds is None else now + call.deadline_seconds
        since = agent.drain.since if agent.drain is not None else now
        agent.drain = DrainInfo(since, deadline, call.kill)
        self.draining.add(agent.agent_id)
        rescinded: dict[str, list[str]] = {}
        for offer_id in sorted(agent.offers):
            offer = self.offers[offer_id]
            self._release_offer(offer)
            rescinded.setdefault(offer.framework_id, []).append(offer_id)
        effects: list[Effect] = [ToFramework(fw, protocol.Rescind(ids)) for fw, ids in sorted(rescinded.items())]
        killed = 0
        if call.kill or (deadline is not None and deadline <= now):
            kills, killed = self._drain_kill(agent, now, "killed: its agent is drained by an operator")
            effects.extend(kills)
        self._changed()
        effects.append(PublishEvent("agent.draining", {
            "agent_id": agent.agent_id, "deadline": deadline, "kill": call.kill, "tasks": len(agent.tasks),
            "offers_rescinded": sum(len(ids) for ids in rescinded.values()), "tasks_killed": killed}))
        effects.extend(self._drained_check(agent))
        effects.append(ToFramework("", self._agent_result(agent, killed=killed), reply_to, call_id))
        return effects

    def undrain_agent(self, call: protocol.UndrainAgent, reply_to: str | None, call_id: str,
                      now: float) -> list[Effect]:
        """End a drain: the agent's free resources are offered again from the next round. Undraining an
        agent that is not draining changes nothing (answered all the same)."""
        agent = self._registered(call.agent_id)
        effects: list[Effect] = []
        if agent.drain is not None:
            agent.drain = None
            self.draining.discard(agent.agent_id)
            self.allocator.agent_changed(agent.agent_id)
            self._changed()
            effects.append(PublishEvent("agent.undrained", {"agent_id": agent.agent_id}))
        effects.append(ToFramework("", self._agent_result(agent), reply_to, call_id))
        return effects

    def mark_agent_gone(self, call: protocol.MarkAgentGone, reply_to: str | None, call_id: str,
                        now: float) -> list[Effect]:
        """Mesos' MARK_AGENT_GONE for an agent that is not registered: its tasks the master remembers as
        TASK_LOST or TASK_UNREACHABLE end TASK_GONE_BY_OPERATOR (published on ``status``), and its id is
        refused if it registers again (the last ``GONE_AGENTS_KEPT`` ids are remembered). Refused for a
        registered agent (drain it first; it is gone once it is removed) and an id never seen."""
        agent_id = call.agent_id
        if agent_id in self.agents:
            raise CallRefused(f"agent {agent_id} is registered: only an agent the master removed can be marked gone")
        if agent_id in self.gone_agents:
            return [ToFramework("", protocol.AgentAdminResult(agent_id, "GONE"), reply_to, call_id)]
        keys = self.removed_agents.pop(agent_id, None)
        if keys is None:
            keys = {key for key, task in self.completed.items() if task.agent_id == agent_id}
            if not keys:
                raise CallRefused(f"agent {agent_id} is unknown to the master (neither registered nor removed)")
        effects: list[Effect] = []
        for key in sorted(keys):
            task = self.completed.get(key)
            if task is None or task.agent_id != agent_id or task.state not in (TaskState.LOST, TaskState.UNREACHABLE):
                continue
            status = self._master_status(task.framework_id, task.task_id, agent_id, TaskState.GONE_BY_OPERATOR,
                                         "REASON_AGENT_GONE_BY_OPERATOR",
                                         "its agent was marked gone by an operator", now)
            task.state, task.last_status = TaskState.GONE_BY_OPERATOR, status
            task.note(status)
            effects.append(PublishStatus(status))
        self.gone_agents[agent_id] = now
        while len(self.gone_agents) > GONE_AGENTS_KEPT:
            self.gone_agents.popitem(last=False)
        self._changed()
        gone = len(effects)  # one PublishStatus per task
        effects.append(PublishEvent("agent.gone", {"agent_id": agent_id, "tasks_gone": gone}))
        effects.append(ToFramework("", protocol.AgentAdminResult(agent_id, "GONE", gone=gone), reply_to, call_id))
        return effects

    def drain_tick(self, now: float) -> list[Effect]:
        """For draining agents: kill the live tasks of those past their deadline (once), and publish
        ``agent.drained`` for those with no task left (once per drain)."""
        effects: list[Effect] = []
        for agent_id in sorted(self.draining):
            agent = self.agents[agent_id]
            drain = agent.drain
            assert drain is not None
            if drain.deadline is not None and now >= drain.deadline and not drain.killed:
                kills, killed = self._drain_kill(agent, now, "killed: its agent's drain deadline passed")
                effects.extend(kills)
                if killed:
                    effects.append(PublishEvent("agent.drain_deadline", {"agent_id": agent_id,
                                                                         "tasks_killed": killed}))
            effects.extend(self._drained_check(agent))
        return effects

    def _drain_kill(self, agent: AgentRecord, now: float, message: str) -> tuple[list[Effect], int]:
        """KILL_TASKS (the ordinary kill path: each task ends TASK_KILLED on ``status``) for the agent's
        live tasks; the reason is kept in each task's history (``bmesos describe task``)."""
        assert agent.drain is not None
        agent.drain.killed = True
        by_framework: dict[str, list[str]] = {}
        for key in sorted(agent.tasks):
            task = self.tasks[key]
            if task.state.terminal:  # declared LOST, already being killed quietly
                continue
            task.note(self._master_status(task.framework_id, task.task_id, agent.agent_id, task.state,
                                          "REASON_AGENT_DRAINING", message, now))
            by_framework.setdefault(task.framework_id, []).append(task.task_id)
        effects: list[Effect] = [ToAgent(agent.agent_id, protocol.KillTasks(fw, ids))
                                 for fw, ids in sorted(by_framework.items())]
        return effects, sum(len(ids) for ids in by_framework.values())

    def _drained_check(self, agent: AgentRecord) -> list[Effect]:
        drain = agent.drain
        if drain is None or drain.drained or agent.tasks:
            return []
        drain.drained = True
        self._changed()
        return [PublishEvent("agent.drained", {"agent_id": agent.agent_id})]

    def _agent_result(self, agent: AgentRecord, killed: int = 0) -> protocol.AgentAdminResult:
        drain = agent.drain
        state = "ACTIVE" if drain is None else "DRAINED" if drain.drained else "DRAINING"
        return protocol.AgentAdminResult(agent.agent_id, state, len(agent.tasks), killed,
                                         deadline=None if drain is None else drain.deadline)

    def remove_agent(self, agent_id: str, reason: str, now: float) -> list[Effect]:
        """Drop an agent: its tasks go LOST, or UNREACHABLE for partition-aware frameworks (published as
        the master's own updates), its offers are rescinded and its resources leave the pool; if it
        comes back it is re-admitted afresh."""
        agent = self.agents.pop(agent_id)
        self.draining.discard(agent_id)  # a drain ends with the agent: it comes back undrained
        effects: list[Effect] = self._drop_agent_executors(agent, f"its agent was removed: {reason}")
        rescinded: dict[str, list[str]] = {}
        for offer_id in sorted(agent.offers):
            offer = self.offers.pop(offer_id)
            framework = self.frameworks.get(offer.framework_id)
            if framework is not None:
                framework.offers.discard(offer_id)
                framework.allocated = framework.allocated - offer.resources.quantity()
            rescinded.setdefault(offer.framework_id, []).append(offer_id)
        effects.extend(ToFramework(fw, protocol.Rescind(ids)) for fw, ids in sorted(rescinded.items()))
        lost: set[tuple[str, str]] = set()
        for key in sorted(agent.tasks):
            task = self.tasks.pop(key)
            framework = self.frameworks.get(task.framework_id)
            if framework is not None:
                framework.tasks.discard(task.task_id)
                framework.allocated = framework.allocated - task.resources.quantity()
            if not task.state.terminal:  # a LOST task still draining after a re-admission is already told
                aware = framework is not None and framework.partition_aware
                state = TaskState.UNREACHABLE if aware else TaskState.LOST
                status = self._master_status(task.framework_id, task.task_id, agent_id, state,
                                             "REASON_AGENT_UNREACHABLE" if aware else "REASON_AGENT_REMOVED",
                                             reason, now)
                task.state, task.last_status = state, status
                effects.append(PublishStatus(status))
            self._complete(key, task)
            lost.add(key)
        self.total = self.total - agent.total
        self.removed_agents[agent_id] = lost
        while len(self.removed_agents) > REMOVED_AGENTS_KEPT:
            self.removed_agents.popitem(last=False)
        self._changed()
        effects.append(PublishEvent("agent.removed", {"agent_id": agent_id, "reason": reason,
                                                      "tasks_lost": len(lost)}))
        return effects

    def agent_timeout(self, agent: AgentRecord) -> float:
        """Seconds of silence after which ``agent`` is removed."""
        ping = self.config.agent_ping_timeout or agent.heartbeat_interval
        return ping * self.config.max_missed_heartbeats

    def _complete(self, key: tuple[str, str], task: TaskRecord) -> None:
        self.completed[key] = task
        while len(self.completed) > COMPLETED_TASKS_KEPT:
            self.completed.popitem(last=False)

    def _adopt_or_kill(self, agent: AgentRecord, reported: list[protocol.AgentTask], now: float) -> list[Effect]:
        """Tasks an agent runs that this master has not booked. Just after a take-over they were
        launched by a master that died before persisting them: adopted (if they fit). Otherwise this
        master never launched them: killed on the agent (their framework hears TASK_KILLED) and never
        booked. One whose end this master already published (TASK_DROPPED, or an ended task's stale
        report) is killed quietly."""
        kill: dict[tuple[str, bool], list[str]] = {}
        for task in reported:
            key = (task.framework_id, task.task_id)
            if key in self.tasks or task.state.terminal:
                continue
            if key in self.completed:
                kill.setdefault((task.framework_id, True), []).append(task.task_id)
            elif now < self.adopt_until and task.resources <= agent.free:
                self._book_task(TaskRecord(task.task_id, task.framework_id, agent.agent_id, task.resources,
                                           task.state))
            else:
                kill.setdefault((task.framework_id, False), []).append(task.task_id)
        return [ToAgent(agent.agent_id, protocol.KillTasks(fw, sorted(ids), quiet=quiet))
                for (fw, quiet), ids in sorted(kill.items())]

    def _book_task(self, task: TaskRecord) -> None:
        """A live task holds its resources on its agent and counts in its framework's share."""
        key = (task.framework_id, task.task_id)
        self.tasks[key] = task
        agent = self.agents[task.agent_id]
        agent.free = agent.free - task.resources
        agent.tasks.add(key)
        framework = self.frameworks.get(task.framework_id)
        if framework is not None:
            framework.tasks.add(task.task_id)
            framework.allocated = framework.allocated + task.resources.quantity()

    def _unbook_task(self, task: TaskRecord) -> None:
        """The reverse of ``_book_task``, once the task has ended (its agent may be gone)."""
        key = (task.framework_id, task.task_id)
        del self.tasks[key]
        agent = self.agents.get(task.agent_id)
        if agent is not None:
            agent.tasks.discard(key)
            agent.free = agent.free + task.resources
            if task.usage is not None:
                agent.usage = agent.usage - task.usage
            self.allocator.agent_changed(agent.agent_id)
        framework = self.frameworks.get(task.framework_id)
        if framework is not None:
            framework.tasks.discard(task.task_id)
            framework.allocated = framework.allocated - task.resources.quantity()

    def _in_use(self, agent: AgentRecord) -> Resources:
        used = Resources()
        for key in agent.tasks:
            used = used + self.tasks[key].resources
        for offer_id in agent.offers:
            used = used + self.offers[offer_id].resources
        return used + self._executors_in_use(agent)

    def _set_total(self, agent: AgentRecord, total: Resources) -> None:
        self.total = self.total - agent.total + total
        agent.free = total - self._in_use(agent)
        agent.total = total
        self.allocator.agent_changed(agent.agent_id)
        self._changed()
