"""Operators drain agents and mark removed ones gone (DRAIN_AGENT, UNDRAIN_AGENT, MARK_AGENT_GONE): the rules
on ``MasterState`` with a virtual clock, and the drain's round trip through the registry snapshot."""

from __future__ import annotations

from typing import Any

import pytest

from broker_mesos.core import codec, protocol, queries
from broker_mesos.core.errors import CallRefused, ProtocolError
from broker_mesos.core.master import MasterConfig, MasterState, PublishEvent, PublishStatus, ToAgent, ToFramework
from broker_mesos.core.protocol import TaskState
from broker_mesos.core.resources import Resources
from broker_mesos.master import registry

T0 = 1000.0


class Cluster:
    """Agents a1 and a2 (2 cpus each), framework fw holding one running task per agent."""

    def __init__(self) -> None:
        self.now = T0
        self.state = MasterState(MasterConfig("m"))
        for agent_id in ("a1", "a2"):
            self.register(agent_id)
        self.state.subscribe(protocol.Subscribe("fw", "fw"), None, "c", self.now)
        offers = self.offers()["fw"]
        tasks = [protocol.TaskInfo(f"t-{o.agent_id}", o.agent_id, Resources.of(cpus=1, mem=64),
                                   protocol.CommandInfo("sleep 60")) for o in offers]
        self.state.accept(protocol.Accept("fw", [o.offer_id for o in offers], tasks), self.now)
        for task in tasks:
            self.status(task.task_id, task.agent_id, TaskState.RUNNING)
        self.state.check_invariants()

    def register(self, agent_id: str) -> list[Any]:
        return self.state.agent_info(protocol.Register(agent_id, agent_id, Resources.of(cpus=2, mem=1024)),
                                     self.now)

    def offers(self, step: float = 10.0) -> dict[str, list[protocol.Offer]]:
        """Advance the clock, tick (a round is due): the offers made, by framework."""
        self.now += step
        effects = self.state.tick(self.now)
        self.state.check_invariants()
        return {e.framework_id: e.body.offers for e in effects
                if isinstance(e, ToFramework) and isinstance(e.body, protocol.Offers)}

    def tick(self, step: float) -> list[Any]:
        self.now += step
        effects = self.state.tick(self.now)
        self.state.check_invariants()
        return effects

    def status(self, task_id: str, agent_id: str, state: TaskState) -> list[Any]:
        effects = self.state.status_update(protocol.TaskStatus(task_id, "fw", agent_id, state, f"u-{task_id}-{state}",
                                                               self.now), self.now)
        self.state.check_invariants()
        return effects

    def admin(self, call: Any) -> list[Any]:
        effects = self.state.admin(call, "amq.gen-x", "cid", self.now)
        self.state.check_invariants()
        return effects


def reply(effects: list[Any]) -> protocol.AgentAdminResult:
    (answer,) = [e.body for e in effects if isinstance(e, ToFramework) and e.framework_id == ""]
    assert isinstance(answer, protocol.AgentAdminResult)
    assert codec.decode(codec.encode(answer, 0.0)).body == answer  # a valid message
    return answer


def events(effects: list[Any]) -> dict[str, dict[str, Any]]:
    return {e.kind: e.detail for e in effects if isinstance(e, PublishEvent)}


def kills(effects: list[Any]) -> dict[str, list[str]]:
    return {e.agent_id: e.body.task_ids for e in effects if isinstance(e, ToAgent)
            and isinstance(e.body, protocol.KillTasks)}


def test_a_draining_agent_gets_no_offers_and_its_outstanding_offers_are_rescinded() -> None:
    c = Cluster()
    outstanding = c.offers()["fw"]  # the cpu each agent has left
    assert {o.agent_id for o in outstanding} == {"a1", "a2"}
    effects = c.admin(protocol.DrainAgent("a1"))
    rescinded = [e.body.offer_ids for e in effects
                 if isinstance(e, ToFramework) and isinstance(e.body, protocol.Rescind)]
    assert rescinded == [[o.offer_id for o in outstanding if o.agent_id == "a1"]]
    assert c.state.agents["a1"].offers == set()
    assert kills(effects) == {}  # neither kill nor deadline: its task is left to finish
    assert events(effects)["agent.draining"]["offers_rescinded"] == 1
    answer = reply(effects)
    assert (answer.agent_id, answer.state, answer.tasks, answer.killed, answer.deadline) == \
        ("a1", "DRAINING", 1, 0, None)
    a2_offer = [o.offer_id for o in outstanding if o.agent_id == "a2"]
    c.state.decline(protocol.Decline("fw", a2_offer), c.now)
    for _ in range(3):  # full rounds too: a1 is never offered, a2 is
        made = c.offers(step=400.0).get("fw", [])
        assert [o.agent_id for o in made] == ["a2"]
        c.state.decline(protocol.Decline("fw", [o.offer_id for o in made]), c.now)
    with pytest.raises(CallRefused, match="unknown, expired or already used"):  # the rescinded offer is dead
        c.state.accept(protocol.Accept("fw", [o.offer_id for o in outstanding if o.agent_id == "a1"],
                                       [protocol.TaskInfo("late", "a1", Resources.of(cpus=1),
                                                          protocol.CommandInfo("true"))]), c.now)
    for agent_id in ("a1", "a2"):  # heard from just now: not SILENT
        c.state.agents[agent_id].last_seen = c.now
    summary = queries.summary(c.state, c.now, T0)
    assert summary.agents["DRAINING"] == 1 and summary.agents["ACTIVE"] == 1


def test_drain_with_kill_kills_its_tasks_now_and_drained_follows_the_last_end() -> None:
    c = Cluster()
    effects = c.admin(protocol.DrainAgent("a1", kill=True))
    assert kills(effects) == {"a1": ["t-a1"]}
    assert reply(effects).killed == 1 and "agent.drained" not in events(effects)
    note = c.state.tasks[("fw", "t-a1")].history[-1]
    assert note.reason == "REASON_AGENT_DRAINING" and "drained" in note.message
    assert events(c.status("t-a1", "a1", TaskState.KILLED)) == {"agent.drained": {"agent_id": "a1"}}
    assert not any(isinstance(e, PublishEvent) and e.kind == "agent.drained" for e in c.tick(1.0))  # once
    c.state.agents["a1"].last_seen = c.now  # heard from: not SILENT
    assert queries.agent_state(c.state, c.state.agents["a1"], c.now) == "DRAINED"
    assert ("fw", "t-a2") in c.state.tasks  # the other agent's task is untouched


def test_tasks_still_running_at_the_deadline_are_killed_once() -> None:
    c = Cluster()
    start = c.now
    answer = reply(c.admin(protocol.DrainAgent("a1", deadline_seconds=30.0)))
    assert answer.deadline == start + 30.0 and answer.killed == 0
    assert kills(c.tick(29.0)) == {}
    effects = c.tick(1.5)
    assert kills(effects) == {"a1": ["t-a1"]}
    assert events(effects)["agent.drain_deadline"] == {"agent_id": "a1", "tasks_killed": 1}
    assert kills(c.tick(1.0)) == {}  # told once
    c.status("t-a1", "a1", TaskState.KILLED)
    assert c.state.agents["a1"].drain is not None and c.state.agents["a1"].drain.drained


def test_an_agent_without_tasks_is_drained_at_once_and_undrain_offers_it_again() -> None:
    c = Cluster()
    c.status("t-a1", "a1", TaskState.FINISHED)
    c.offers()
    effects = c.admin(protocol.DrainAgent("a1"))
    assert list(events(effects)) == ["agent.draining", "agent.drained"] and reply(effects).state == "DRAINED"
    assert "a1" not in {o.agent_id for o in c.offers(step=400.0).get("fw", [])}
    effects = c.admin(protocol.UndrainAgent("a1"))
    assert events(effects) == {"agent.undrained": {"agent_id": "a1"}} and reply(effects).state == "ACTIVE"
    assert c.state.draining == set() and c.state.agents["a1"].drain is None
    assert [o.agent_id for o in c.offers()["fw"]] == ["a1"]
    assert events(c.admin(protocol.UndrainAgent("a1"))) == {}  # not draining: answered, nothing changes


def test_drain_and_undrain_of_an_agent_that_is_not_registered_are_refused() -> None:
    c = Cluster()
    for call in (protocol.DrainAgent("nope"), protocol.UndrainAgent("nope")):
        with pytest.raises(CallRefused, match="nope is not registered"):
            c.admin(call)
    assert c.state.draining == set()


def test_a_drain_survives_a_failover_through_the_registry() -> None:
    c = Cluster()
    start = c.now
    c.admin(protocol.DrainAgent("a1", deadline_seconds=60.0))
    restored = MasterState(MasterConfig("m2"))
    registry.restore(restored, registry.snapshot(c.state, "m", set()), c.now)
    restored.check_invariants()
    drain = restored.agents["a1"].drain
    assert drain is not None and drain.deadline == start + 60.0 and not drain.killed
    assert restored.draining == {"a1"} and restored.agents["a2"].drain is None
    effects = restored.tick(c.now + 10.0)
    offered = {o.agent_id for e in effects if isinstance(e, ToFramework) and isinstance(e.body, protocol.Offers)
               for o in e.body.offers}
    assert "a1" not in offered
    effects = restored.tick(start + 61.0)  # the restored deadline still holds
    assert kills(effects) == {"a1": ["t-a1"]}


def test_marking_a_removed_agent_gone_ends_its_lost_tasks_and_refuses_its_return() -> None:
    c = Cluster()
    with pytest.raises(CallRefused, match="is registered"):
        c.admin(protocol.MarkAgentGone("a1"))
    c.state.remove_agent("a1", "no heartbeat", c.now)
    assert c.state.completed[("fw", "t-a1")].state == TaskState.LOST
    effects = c.admin(protocol.MarkAgentGone("a1"))
    statuses = [e.status for e in effects if isinstance(e, PublishStatus)]
    assert [(s.task_id, s.state, s.reason) for s in statuses] == [
        ("t-a1", TaskState.GONE_BY_OPERATOR, "REASON_AGENT_GONE_BY_OPERATOR")]
    assert TaskState.GONE_BY_OPERATOR.terminal
    assert c.state.completed[("fw", "t-a1")].state == TaskState.GONE_BY_OPERATOR
    assert reply(effects).state == "GONE" and reply(effects).gone == 1
    assert events(effects)["agent.gone"] == {"agent_id": "a1", "tasks_gone": 1}
    assert "a1" not in c.state.removed_agents
    summary = queries.summary(c.state, c.now, T0)
    assert summary.agents["GONE"] == 1 and summary.agents["REMOVED"] == 0
    with pytest.raises(CallRefused, match="marked gone"):
        c.register("a1")
    assert "a1" not in c.state.agents
    assert reply(c.admin(protocol.MarkAgentGone("a1"))).gone == 0  # again: answered, nothing more
    with pytest.raises(CallRefused, match="unknown to the master"):
        c.admin(protocol.MarkAgentGone("never-seen"))
    restored = MasterState(MasterConfig("m2"))  # remembered across a failover
    registry.restore(restored, registry.snapshot(c.state, "m", set()), c.now)
    with pytest.raises(CallRefused, match="marked gone"):
        restored.agent_info(protocol.Register("a1", "a1", Resources.of(cpus=2, mem=1024)), c.now)


def test_gone_marks_unreachable_tasks_of_partition_aware_frameworks_too() -> None:
    state = MasterState(MasterConfig("m"))
    state.agent_info(protocol.Register("a1", "a1", Resources.of(cpus=2, mem=1024)), T0)
    state.subscribe(protocol.Subscribe("pa", "pa", partition_aware=True), None, "c", T0)
    offers = [o for e in state.tick(T0 + 10) if isinstance(e, ToFramework) and isinstance(e.body, protocol.Offers)
              for o in e.body.offers]
    state.accept(protocol.Accept("pa", [offers[0].offer_id], [protocol.TaskInfo(
        "u1", "a1", Resources.of(cpus=1), protocol.CommandInfo("sleep 60"))]), T0 + 10)
    state.remove_agent("a1", "no heartbeat", T0 + 20)
    assert state.completed[("pa", "u1")].state == TaskState.UNREACHABLE
    effects = state.admin(protocol.MarkAgentGone("a1"), "amq.gen-x", "cid", T0 + 30)
    assert [e.status.state for e in effects if isinstance(e, PublishStatus)] == [TaskState.GONE_BY_OPERATOR]


def test_the_calls_are_admin_calls_with_bounded_fields() -> None:
    for cls in (protocol.DrainAgent, protocol.UndrainAgent, protocol.MarkAgentGone):
        assert cls in protocol.ADMIN_CALLS
    call = protocol.DrainAgent("a1", 10.0, True)
    assert codec.decode(codec.encode(call, 0.0)).body == call
    with pytest.raises(ProtocolError):
        codec.decode(codec.encode(protocol.DrainAgent("a1", protocol.MAX_DRAIN_DEADLINE * 2), 0.0))
