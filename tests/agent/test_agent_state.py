"""The agent's pure bookkeeping: task table, exit outcomes, status grouping."""

from __future__ import annotations

import signal

from broker_mesos.core.agent_state import (
    TaskEntry,
    TaskTable,
    exit_outcome,
    group_updates,
    make_status,
)
from broker_mesos.core.protocol import AgentTask, TaskInfo, TaskState, TaskStatus
from broker_mesos.core.resources import Resources


def task(task_id: str) -> TaskInfo:
    return TaskInfo(task_id=task_id, agent_id="a1", resources=Resources.of(cpus=1))


def status(task_id: str, state: TaskState, fw: str = "fw") -> TaskStatus:
    return make_status(TaskEntry(task_id, fw, task(task_id), state), "a1", state, f"u-{task_id}-{state.name}", 1.0)


def test_launch_ignores_known_ids_active_or_finished() -> None:
    table = TaskTable()
    entry = table.launch("fw", task("t1"))
    assert entry is not None and entry.state is TaskState.STARTING
    assert table.launch("fw", task("t1")) is None
    table.set_state("t1", TaskState.RUNNING)
    assert table.get("t1") is entry and len(table) == 1
    table.set_state("t1", TaskState.FINISHED)
    assert table.get("t1") is None and len(table) == 0
    assert "t1" in table
    assert table.launch("fw", task("t1")) is None


def test_finished_ids_are_remembered_up_to_a_bound() -> None:
    table = TaskTable(remember=3)
    for i in range(5):
        table.launch("fw", task(f"t{i}"))
        table.set_state(f"t{i}", TaskState.FINISHED)
    assert [f"t{i}" in table for i in range(5)] == [False, False, True, True, True]
    assert table.launch("fw", task("t0")) is not None


def test_request_kill_marks_only_active_tasks() -> None:
    table = TaskTable()
    table.launch("fw", task("t1"))
    entry = table.request_kill("t1")
    assert entry is not None and entry.kill_requested
    assert table.request_kill("nope") is None
    table.set_state("t1", TaskState.KILLED)
    assert table.request_kill("t1") is None


def test_agent_tasks_lists_active_tasks_with_state() -> None:
    table = TaskTable()
    table.launch("fw", task("t1"))
    table.launch("fw2", task("t2"))
    table.set_state("t2", TaskState.RUNNING)
    table.launch("fw", task("t3"))
    table.set_state("t3", TaskState.FAILED)
    assert table.agent_tasks() == [AgentTask("t1", "fw", Resources.of(cpus=1), TaskState.STARTING),
                                   AgentTask("t2", "fw2", Resources.of(cpus=1), TaskState.RUNNING)]


def test_exit_outcomes() -> None:
    assert exit_outcome(0, False).state is TaskState.FINISHED
    failed = exit_outcome(3, False)
    assert (failed.state, failed.exit_code, failed.message) == (TaskState.FAILED, 3, "exited with 3")
    sig = exit_outcome(-signal.SIGSEGV, False)
    assert (sig.state, sig.exit_code, sig.message) == (TaskState.FAILED, 128 + signal.SIGSEGV,
                                                       "killed by signal SIGSEGV")
    killed = exit_outcome(-signal.SIGTERM, True)
    assert killed.state is TaskState.KILLED and killed.exit_code == 128 + signal.SIGTERM
    assert exit_outcome(0, True).state is TaskState.KILLED  # it was asked to stop and did


def test_make_status_fills_every_field() -> None:
    entry = TaskEntry("t1", "fw", task("t1"), TaskState.RUNNING)
    st = make_status(entry, "a1", TaskState.FAILED, "abc", 12.5, "exited with 2", 2)
    assert st == TaskStatus(task_id="t1", framework_id="fw", agent_id="a1", state=TaskState.FAILED, uuid="abc",
                            timestamp=12.5, message="exited with 2", source="SOURCE_AGENT", exit_code=2)


def test_group_updates_keeps_each_tasks_order() -> None:
    # t0 finished before t1 started, all in one buffer: FINISHED comes first in the buffer
    updates = [status("t0", TaskState.FINISHED), status("t1", TaskState.STARTING), status("t1", TaskState.RUNNING),
               status("t1", TaskState.FINISHED), status("t2", TaskState.STARTING, fw="other")]
    groups = group_updates(updates)
    keys = [k for k, _ in groups]
    assert keys == [("fw", "a1", TaskState.STARTING), ("other", "a1", TaskState.STARTING),
                    ("fw", "a1", TaskState.RUNNING), ("fw", "a1", TaskState.FINISHED)]
    assert [u.task_id for u in groups[-1][1]] == ["t0", "t1"]
    published = [u for _k, us in groups for u in us]
    assert sorted(published, key=id) == sorted(updates, key=id)
    for tid in ("t0", "t1", "t2"):
        states = [u.state for u in published if u.task_id == tid]
        assert states == [u.state for u in updates if u.task_id == tid]


def test_group_updates_splits_large_groups() -> None:
    updates = [status(f"t{i}", TaskState.FINISHED) for i in range(25)]
    groups = group_updates(updates, max_per_message=10)
    assert [len(us) for _k, us in groups] == [10, 10, 5]
    assert [u.task_id for _k, us in groups for u in us] == [f"t{i}" for i in range(25)]
    assert group_updates([]) == []
