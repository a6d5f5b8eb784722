"""The agent's pure bookkeeping: task table, exit outcomes, status grouping, recovery decisions."""

from __future__ import annotations

import signal

from broker_mesos.core.agent_state import (
    REASON_AGENT_RESTARTED,
    REASON_EXECUTOR_TERMINATED,
    Outcome,
    Recovery,
    TaskEntry,
    TaskTable,
    exit_outcome,
    group_updates,
    make_status,
    recover_task,
    returncode_from_exit_status,
    unknown_exit,
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
    assert entry is not None and entry.state is TaskState.STARTING and entry.key == ("fw", "t1")
    assert table.launch("fw", task("t1")) is None
    table.set_state(("fw", "t1"), TaskState.RUNNING)
    assert table.get(("fw", "t1")) is entry and len(table) == 1
    table.set_state(("fw", "t1"), TaskState.FINISHED)
    assert table.get(("fw", "t1")) is None and len(table) == 0
    assert ("fw", "t1") in table
    assert table.launch("fw", task("t1")) is None


def test_task_ids_are_scoped_by_framework() -> None:
    """Two frameworks (two ``bmesos run``s both launching ``run-0``) may use the same task id."""
    table = TaskTable()
    first = table.launch("fw-a", task("run-0"))
    second = table.launch("fw-b", task("run-0"))
    assert first is not None and second is not None and first is not second
    assert len(table) == 2
    table.set_state(("fw-a", "run-0"), TaskState.FINISHED)
    assert table.get(("fw-b", "run-0")) is second and len(table) == 1
    assert table.request_kill(("fw-a", "run-0")) is None
    assert table.request_kill(("fw-b", "run-0")) is second
    assert table.launch("fw-c", task("run-0")) is not None
    assert table.launch("fw-a", task("run-0")) is None


def test_finished_ids_are_remembered_up_to_a_bound() -> None:
    table = TaskTable(remember=3)
    for i in range(5):
        table.launch("fw", task(f"t{i}"))
        table.set_state(("fw", f"t{i}"), TaskState.FINISHED)
    assert [("fw", f"t{i}") in table for i in range(5)] == [False, False, True, True, True]
    assert table.launch("fw", task("t0")) is not None
    table.remember_finished(("fw", "old"))
    assert ("fw", "old") in table and table.launch("fw", task("old")) is None


def test_request_kill_marks_only_active_tasks() -> None:
    table = TaskTable()
    table.launch("fw", task("t1"))
    entry = table.request_kill(("fw", "t1"))
    assert entry is not None and entry.kill_requested
    assert table.request_kill(("fw", "nope")) is None
    table.set_state(("fw", "t1"), TaskState.KILLED)
    assert table.request_kill(("fw", "t1")) is None


def test_agent_tasks_lists_active_tasks_with_state() -> None:
    table = TaskTable()
    table.launch("fw", task("t1"))
    table.launch("fw2", task("t2"))
    table.set_state(("fw2", "t2"), TaskState.RUNNING)
    table.launch("fw", task("t3"))
    table.set_state(("fw", "t3"), TaskState.FAILED)
    table.launch("fw", task("t4"), TaskState.RUNNING)
    assert table.agent_tasks() == [AgentTask("t1", "fw", Resources.of(cpus=1), TaskState.STARTING),
                                   AgentTask("t2", "fw2", Resources.of(cpus=1), TaskState.RUNNING),
                                   AgentTask("t4", "fw", Resources.of(cpus=1), TaskState.RUNNING)]


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
    st = make_status(entry, "a1", TaskState.FAILED, "abc", 12.5, "exited with 2", 2, "REASON_X")
    assert st == TaskStatus(task_id="t1", framework_id="fw", agent_id="a1", state=TaskState.FAILED, uuid="abc",
                            timestamp=12.5, message="exited with 2", reason="REASON_X", source="SOURCE_AGENT",
                            exit_code=2)


def test_exit_status_file_follows_the_shell_convention() -> None:
    assert returncode_from_exit_status("0\n") == 0
    assert returncode_from_exit_status("3\n") == 3
    assert returncode_from_exit_status("143\n") == -signal.SIGTERM
    assert returncode_from_exit_status("137") == -signal.SIGKILL
    assert returncode_from_exit_status("128") == 128
    assert returncode_from_exit_status("255") == 255  # no signal 127
    for bad in ("", "x", "-1", "256", "1.5"):
        assert returncode_from_exit_status(bad) is None


def test_recovery_decisions() -> None:
    def decide(**kw: object) -> tuple[Recovery, Outcome | None]:
        args: dict[str, object] = {"reported_terminal": False, "started": True, "alive": False,
                                   "exit_status": None, "kill_requested": False, **kw}
        return recover_task(**args)  # type: ignore[arg-type]

    assert decide(reported_terminal=True, alive=True) == (Recovery.FORGET, None)
    assert decide(alive=True, exit_status="0") == (Recovery.REATTACH, None)
    kind, dropped = decide(started=False)
    assert kind is Recovery.REPORT and dropped is not None
    assert (dropped.state, dropped.reason) == (TaskState.DROPPED, REASON_AGENT_RESTARTED)
    kind, ended = decide(exit_status="5\n")
    assert kind is Recovery.REPORT and ended == exit_outcome(5, False)
    assert decide(exit_status="0")[1] == Outcome(TaskState.FINISHED, 0, "exited with 0")
    assert decide(exit_status="143", kill_requested=True)[1] == exit_outcome(-signal.SIGTERM, True)
    kind, unknown = decide(exit_status=None)
    assert kind is Recovery.REPORT and unknown is not None
    assert (unknown.state, unknown.exit_code, unknown.reason) == (TaskState.FAILED, None,
                                                                  REASON_EXECUTOR_TERMINATED)
    assert decide(exit_status="garbage", kill_requested=True)[1] == unknown_exit(True)
    assert unknown_exit(True).state is TaskState.KILLED


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
