"""An executor's task log (agent/checkpoint.py ``ExecutorTaskLog``): what a restarted agent reads back."""

from __future__ import annotations

from pathlib import Path

from broker_mesos.agent import checkpoint
from broker_mesos.core.protocol import ExecutorInfo, TaskInfo


def _task(task_id: str) -> TaskInfo:
    return TaskInfo(task_id, "a1", executor=ExecutorInfo("e1"), data=b"call " + task_id.encode())


def test_launched_killed_and_done_tasks_read_back(tmp_path: Path) -> None:
    log = checkpoint.ExecutorTaskLog(tmp_path)
    for task_id in ("t1", "t2", "t3"):
        log.launched("fw1", _task(task_id))
    log.killed("t2")
    log.done("t1")
    log.close()
    live, finished = checkpoint.read_executor_tasks(tmp_path)
    assert [(t.framework_id, t.task.task_id, t.kill_requested, t.done) for t in live] == [
        ("fw1", "t2", True, False), ("fw1", "t3", False, False)]
    assert live[0].task == _task("t2")  # the whole TaskInfo, its data and executor included
    assert finished == ["t1"]


def test_a_record_cut_short_by_a_crash_is_ignored(tmp_path: Path) -> None:
    log = checkpoint.ExecutorTaskLog(tmp_path)
    log.launched("fw1", _task("t1"))
    log.launched("fw1", _task("t2"))
    log.close()
    path = tmp_path / checkpoint.EXECUTOR_TASKS_LOG
    path.write_bytes(path.read_bytes()[:-7])  # the agent died in the middle of t2's record
    live, finished = checkpoint.read_executor_tasks(tmp_path)
    assert [t.task.task_id for t in live] == ["t1"] and finished == []


def test_garbage_stops_the_reading_without_raising(tmp_path: Path) -> None:
    log = checkpoint.ExecutorTaskLog(tmp_path)
    log.launched("fw1", _task("t1"))
    log.close()
    with open(tmp_path / checkpoint.EXECUTOR_TASKS_LOG, "ab") as f:
        f.write(b"\x00\x00\x00\x03abc")
    live, _ = checkpoint.read_executor_tasks(tmp_path)
    assert [t.task.task_id for t in live] == ["t1"]
    assert checkpoint.read_executor_tasks(tmp_path / "nowhere") == ([], [])


def test_compaction_keeps_live_tasks_their_kill_flag_and_the_latest_finished_ids(tmp_path: Path) -> None:
    log = checkpoint.ExecutorTaskLog(tmp_path)
    for i in range(50):
        log.launched("fw1", _task(f"t{i}"))
        log.done(f"t{i}")
    log.launched("fw1", _task("live"))
    before = (tmp_path / checkpoint.EXECUTOR_TASKS_LOG).stat().st_size
    log.compact("fw1", [(_task("live"), True)], [f"t{i}" for i in range(50)])
    log.launched("fw1", _task("after"))  # appends go on after a compaction
    log.close()
    assert (tmp_path / checkpoint.EXECUTOR_TASKS_LOG).stat().st_size < before
    live, finished = checkpoint.read_executor_tasks(tmp_path)
    assert [(t.task.task_id, t.kill_requested) for t in live] == [("live", True), ("after", False)]
    assert finished == [f"t{i}" for i in range(50)]
    assert log.appended < before and not log.needs_compaction()
