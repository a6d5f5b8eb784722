"""A restarted agent re-publishes its unconfirmed updates: replaying them into the master (and the
SDK's deduplication) must change nothing. Pure: the master state machine, no broker."""

from __future__ import annotations

from broker_mesos.core import protocol
from broker_mesos.core.agent_state import TaskEntry, make_status
from broker_mesos.core.master import MasterConfig, MasterState, ToFramework
from broker_mesos.core.protocol import TaskState, TaskStatus
from broker_mesos.core.resources import Resources
from broker_mesos.framework.driver import RecentIds


def launched_master() -> MasterState:
    master = MasterState(MasterConfig("m"))
    master.subscribe(protocol.Subscribe("fw", "fw"), None, "c1", 0.0)
    master.agent_info(protocol.Register("a1", "a1", Resources.parse("cpus:2;mem:1024")), 0.0)
    (offer,) = next(e.body.offers for e in master.tick(10.0) if isinstance(e, ToFramework))
    info = protocol.TaskInfo("t1", "a1", Resources.parse("cpus:1;mem:512"), protocol.CommandInfo("sleep 1"))
    assert master.accept(protocol.Accept("fw", [offer.offer_id], [info]), 10.0)
    master.check_invariants()
    return master


def history() -> list[TaskStatus]:
    entry = TaskEntry("t1", "fw", protocol.TaskInfo("t1", "a1"), TaskState.STARTING)
    return [make_status(entry, "a1", state, f"u{i}", 11.0 + i)
            for i, state in enumerate((TaskState.STARTING, TaskState.RUNNING, TaskState.FINISHED))]


def books(master: MasterState) -> tuple[object, ...]:
    master.check_invariants()
    agent = master.agents["a1"]
    return (sorted(master.tasks), {k: t.state for k, t in master.tasks.items()}, agent.free, master.total,
            sorted(master.completed), master.frameworks["fw"].allocated)


def test_replaying_a_suffix_of_the_history_changes_nothing() -> None:
    updates = history()
    for applied in range(len(updates) + 1):  # the agent died after the broker took ``applied`` updates
        for suffix_start in range(applied + 1):  # the journal holds a suffix of what was published
            master = launched_master()
            for u in updates[:applied]:
                assert master.status_update(u, 20.0) == []
            before = books(master)
            for u in updates[suffix_start:applied]:  # re-published duplicates
                assert master.status_update(u, 30.0) == []
            assert books(master) == before, (applied, suffix_start)
            for u in updates[applied:]:  # then the rest, as the restarted agent goes on
                master.status_update(u, 40.0)
            assert not master.tasks and ("fw", "t1") in master.completed
            assert master.agents["a1"].free == Resources.parse("cpus:2;mem:1024")


def test_a_duplicate_final_update_does_not_release_resources_twice() -> None:
    master = launched_master()
    for u in history():
        master.status_update(u, 20.0)
    free = master.agents["a1"].free
    for u in history():
        master.status_update(u, 30.0)
    master.check_invariants()
    assert master.agents["a1"].free == free == Resources.parse("cpus:2;mem:1024")


def test_the_sdk_delivers_each_update_once() -> None:
    seen = RecentIds()
    delivered = [u.uuid for u in history() + history() if not seen.seen(u.uuid)]
    assert delivered == ["u0", "u1", "u2"]
