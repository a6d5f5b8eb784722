"""The fault-tolerance rules of the pure master state, without a broker: agent removal and return,
framework failover, and the registry snapshot round trip (books balance after every step)."""

from __future__ import annotations

from broker_mesos.core import protocol
from broker_mesos.core.master import MasterConfig, MasterState, PublishEvent, PublishStatus, ToAgent, ToFramework
from broker_mesos.core.protocol import TaskState
from broker_mesos.core.resources import Resources
from broker_mesos.master import registry

AGENT = Resources.parse("cpus:2;mem:1024")
TASK = Resources.parse("cpus:1;mem:256")


def cluster(**config: object) -> tuple[MasterState, list[protocol.Offer]]:
    state = MasterState(MasterConfig("m", allocation_interval=0.0, max_missed_heartbeats=3, **config))  # type: ignore[arg-type]
    state.subscribe(protocol.Subscribe("fw", "fw", failover_timeout=10.0), None, "c", 0.0)
    state.agent_info(protocol.Register("a1", "h", AGENT, heartbeat_interval=1.0), 0.0)
    effects = state.tick(0.0)
    offers = [o for e in effects if isinstance(e, ToFramework) and isinstance(e.body, protocol.Offers)
              for o in e.body.offers]
    return state, offers


def launch(state: MasterState, offers: list[protocol.Offer], *task_ids: str) -> None:
    tasks = [protocol.TaskInfo(t, "a1", TASK, protocol.CommandInfo("sleep 60")) for t in task_ids]
    state.accept(protocol.Accept("fw", [o.offer_id for o in offers], tasks), 0.0)
    for t in task_ids:
        state.status_update(protocol.TaskStatus(t, "fw", "a1", TaskState.RUNNING, f"u-{t}", 0.0), 0.0)
    state.check_invariants()


def test_silent_agent_is_removed_after_missed_heartbeats_and_killed_tasks_on_return() -> None:
    state, offers = cluster()
    launch(state, offers, "t1")
    assert not [e for e in state.tick(2.9) if isinstance(e, PublishStatus)]  # 2.9 s < 3 x 1 s
    effects = state.tick(3.2)
    (lost,) = [e.status for e in effects if isinstance(e, PublishStatus)]
    assert (lost.task_id, lost.state, lost.reason, lost.source) == (
        "t1", TaskState.LOST, "REASON_AGENT_REMOVED", "SOURCE_MASTER")
    assert any(isinstance(e, PublishEvent) and e.kind == "agent.removed" for e in effects)
    assert "a1" not in state.agents and state.total == Resources()
    state.check_invariants()

    running = protocol.AgentTask("t1", "fw", TASK, TaskState.RUNNING)
    effects = state.agent_info(protocol.Heartbeat("a1", "h", AGENT, tasks=[running], heartbeat_interval=1.0), 5.0)
    (kill,) = [e for e in effects if isinstance(e, ToAgent)]
    assert kill.body == protocol.KillTasks("fw", ["t1"], quiet=True)  # LOST was its last word on `status`
    assert state.agents["a1"].free == AGENT - TASK  # held until the agent reports it ended
    state.check_invariants()
    reconciled = state.reconcile(protocol.Reconcile("fw", ["t1"]), None, "c", 5.0)[0].body.updates
    assert reconciled[0].state == TaskState.LOST  # what the framework was told
    still = state.agent_info(protocol.Heartbeat("a1", "h", AGENT, tasks=[running], heartbeat_interval=1.0), 5.2)
    assert state.agents["a1"].free == AGENT - TASK and not [e for e in still if isinstance(e, PublishStatus)]
    gone = state.agent_info(protocol.Heartbeat("a1", "h", AGENT, heartbeat_interval=1.0), 5.5)
    assert not [e for e in gone if isinstance(e, PublishStatus)]  # ended quietly: nothing more published
    assert state.agents["a1"].free == AGENT and ("fw", "t1") not in state.tasks
    state.check_invariants()


def test_an_agent_that_still_reports_a_task_the_master_ended_is_told_to_end_it_quietly() -> None:
    """A task the master declared DROPPED that its agent started after all: killed, with no update."""
    state, offers = cluster()
    tasks = [protocol.TaskInfo("t1", "a1", TASK, protocol.CommandInfo("sleep 60"))]
    state.accept(protocol.Accept("fw", [o.offer_id for o in offers], tasks), 0.0)
    (dropped,) = state.agent_info(protocol.Heartbeat("a1", "h", AGENT, heartbeat_interval=1.0), 6.0)
    assert isinstance(dropped, PublishStatus) and dropped.status.state == TaskState.DROPPED
    late = protocol.Heartbeat("a1", "h", AGENT, tasks=[protocol.AgentTask("t1", "fw", TASK)], heartbeat_interval=1.0)
    effects = state.agent_info(late, 7.0)
    assert [e.body for e in effects if isinstance(e, ToAgent)] == [protocol.KillTasks("fw", ["t1"], quiet=True)]
    assert ("fw", "t1") not in state.tasks
    state.check_invariants()


def test_framework_keeps_tasks_within_failover_timeout_and_loses_them_after() -> None:
    state, offers = cluster()
    launch(state, offers, "t1")
    beat = protocol.Heartbeat("a1", "h", AGENT, tasks=[protocol.AgentTask("t1", "fw", TASK)], heartbeat_interval=1.0)
    state.framework_disconnected("fw", 1.0)
    assert state.frameworks["fw"].suppressed
    state.agent_info(beat, 10.0)
    assert not [e for e in state.tick(10.5) if isinstance(e, ToAgent)]
    state.subscribe(protocol.Subscribe("fw", "fw", failover_timeout=10.0), None, "c2", 10.6)
    assert not state.frameworks["fw"].suppressed and state.frameworks["fw"].disconnected_at is None

    state.framework_disconnected("fw", 11.0)
    state.agent_info(beat, 21.0)
    effects = state.tick(21.1)
    assert [e.body for e in effects if isinstance(e, ToAgent)] == [protocol.KillTasks("fw", ["t1"])]
    assert "fw" not in state.frameworks
    state.check_invariants()


def test_registry_round_trip_keeps_books_and_answers() -> None:
    state, offers = cluster()
    launch(state, offers, "t1", "t2")
    state.status_update(protocol.TaskStatus("t2", "fw", "a1", TaskState.FINISHED, "u-f", 1.0), 1.0)
    raw = registry.snapshot(state, "m", {"fw"})
    restored = MasterState(state.config)
    writer, seen = registry.restore(restored, raw, 50.0)
    restored.check_invariants()
    assert (writer, seen) == ("m", {"fw"})
    assert restored.agents["a1"].free == AGENT - TASK and restored.agents["a1"].last_seen == 50.0
    answers = {u.task_id: u.state for u in restored.reconcile(protocol.Reconcile("fw", ["t1", "t2"]), None, "c",
                                                              50.0)[0].body.updates}
    assert answers == {"t1": TaskState.RUNNING, "t2": TaskState.FINISHED}
    effects = restored.tick(50.0)
    (offer,) = [o for e in effects if isinstance(e, ToFramework) and isinstance(e.body, protocol.Offers)
                for o in e.body.offers]
    assert offer.resources == AGENT - TASK and offer.offer_id not in {o.offer_id for o in offers}


def test_registry_keeps_the_operators_policy_and_roles() -> None:
    state, _offers = cluster()
    state.admin(protocol.SetAllocator("binpack", {}), None, "c1", 1.0)
    state.admin(protocol.SetRole("batch", weight=3.0, limit=Resources.of(cpus=2)), None, "c2", 1.0)
    restored = MasterState(state.config)
    registry.restore(restored, registry.snapshot(state, "m", set()), 5.0)
    assert restored.allocator.policy.name == "binpack"
    assert restored.allocator.role("batch").weight == 3.0
    assert restored.allocator.role("batch").limit == Resources.of(cpus=2)


def test_restored_agents_get_the_reregister_timeout_before_the_heartbeat_rule() -> None:
    config = MasterConfig("m", max_missed_heartbeats=2, agent_ping_timeout=1.0, agent_reregister_timeout=10.0)
    state = MasterState(config)
    state.agent_info(protocol.Register("a1", "a1", AGENT), 0.0)
    restored = MasterState(config)
    registry.restore(restored, registry.snapshot(state, "m", set()), 100.0)
    restored.tick(105.0)  # silent for 5 s, but within the re-register timeout
    assert "a1" in restored.agents
    removed = restored.tick(110.5)
    assert "a1" not in restored.agents
    assert any(isinstance(e, PublishEvent) and e.kind == "agent.removed" for e in removed)


def test_partition_aware_tasks_go_unreachable_and_are_kept_when_the_agent_returns() -> None:
    state, offers = cluster()
    state.subscribe(protocol.Subscribe("fw", "fw", failover_timeout=10.0, partition_aware=True), None, "c", 0.0)
    launch(state, offers, "t1")
    effects = state.tick(3.2)
    (unreachable,) = [e.status for e in effects if isinstance(e, PublishStatus)]
    assert (unreachable.state, unreachable.reason) == (TaskState.UNREACHABLE, "REASON_AGENT_UNREACHABLE")
    assert not unreachable.state.terminal
    reconciled = state.reconcile(protocol.Reconcile("fw", ["t1"]), None, "c", 4.0)[0].body.updates
    assert reconciled[0].state == TaskState.UNREACHABLE
    state.check_invariants()

    running = protocol.AgentTask("t1", "fw", TASK, TaskState.RUNNING)
    effects = state.agent_info(protocol.Heartbeat("a1", "h", AGENT, tasks=[running], heartbeat_interval=1.0), 5.0)
    assert not [e for e in effects if isinstance(e, ToAgent)]  # not killed
    (back,) = [e.status for e in effects if isinstance(e, PublishStatus)]
    assert (back.task_id, back.state, back.reason) == ("t1", TaskState.RUNNING, "REASON_AGENT_REREGISTERED")
    assert state.tasks[("fw", "t1")].state == TaskState.RUNNING
    assert state.agents["a1"].free == AGENT - TASK
    state.check_invariants()
    state.status_update(protocol.TaskStatus("t1", "fw", "a1", TaskState.FINISHED, "u-f", 6.0), 6.0)
    assert state.agents["a1"].free == AGENT
    state.check_invariants()


def test_a_staging_task_its_agent_never_received_is_dropped_after_the_grace() -> None:
    """A RUN_TASKS lost with a dying master: the agent keeps heart-beating without the task."""
    state, offers = cluster()
    tasks = [protocol.TaskInfo("t1", "a1", TASK, protocol.CommandInfo("sleep 60"))]
    state.accept(protocol.Accept("fw", [o.offer_id for o in offers], tasks), 0.0)
    beat = protocol.Heartbeat("a1", "h", AGENT, heartbeat_interval=1.0)
    assert not state.agent_info(beat, 4.0)  # within the grace: the RUN_TASKS may still be queued
    (dropped,) = [e.status for e in state.agent_info(beat, 5.5) if isinstance(e, PublishStatus)]
    assert (dropped.task_id, dropped.state, dropped.reason) == ("t1", TaskState.DROPPED, "REASON_TASK_UNKNOWN")
    assert state.agents["a1"].free == AGENT and ("fw", "t1") not in state.tasks
    state.check_invariants()
    reported = protocol.Heartbeat("a1", "h", AGENT, tasks=[protocol.AgentTask("t2", "fw", TASK, TaskState.STAGING)],
                                  heartbeat_interval=1.0)
    state.adopt_until = 10.0  # a take-over's window: tasks an agent reports are adopted, not killed
    state.agent_info(reported, 6.0)  # adopted from the agent: reported, so never dropped
    assert not [e for e in state.agent_info(reported, 60.0) if isinstance(e, PublishStatus)]
