"""The agent's on-disk checkpoint (status journal, task records) and the task supervisor, without a broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from broker_mesos.agent import checkpoint
from broker_mesos.agent.executor import SUPERVISOR, CommandExecutor
from broker_mesos.core import codec
from broker_mesos.core.agent_state import TaskEntry, make_status
from broker_mesos.core.errors import ProtocolError
from broker_mesos.core.protocol import CommandInfo, Revive, Status, TaskInfo, TaskState
from broker_mesos.core.resources import Resources
from broker_mesos.testing.wait import wait_for


def status_message(task_id: str, state: TaskState, fw: str = "fw") -> checkpoint.Message:
    info = TaskInfo(task_id=task_id, agent_id="a1")
    update = make_status(TaskEntry(task_id, fw, info, state), "a1", state, f"u-{task_id}-{state.name}", 1.0)
    return f"{fw}.a1.{state.value}", codec.encode(Status([update]), 1.0)


def test_journal_keeps_batches_until_confirmed_and_reloads_them_in_order(tmp_path: Path) -> None:
    journal = checkpoint.StatusJournal(tmp_path / "status")
    assert journal.load() == []
    first = [status_message("t1", TaskState.STARTING), status_message("t1", TaskState.RUNNING)]
    second = [status_message("t1", TaskState.FINISHED)]
    b1, b2 = journal.append(first), journal.append(second)
    b3 = journal.append([status_message("t2", TaskState.STARTING)])
    assert b1 < b2 < b3 and journal.pending() == 3
    journal.confirm(b1)
    journal.confirm(b1)  # twice is harmless
    assert journal.pending() == 2

    reopened = checkpoint.StatusJournal(tmp_path / "status")
    batches = reopened.load()
    assert [seq for seq, _ in batches] == [b2, b3]
    assert batches[0][1] == second  # byte for byte what was published
    updates = list(checkpoint.batch_updates(batches[0][1]))
    assert [(u.task_id, u.state) for u in updates] == [("t1", TaskState.FINISHED)]
    assert reopened.append(second) > b3  # numbering continues after the reloaded batches


def test_journal_sets_aside_corrupt_files_and_drops_interrupted_writes(tmp_path: Path) -> None:
    journal = checkpoint.StatusJournal(tmp_path / "status")
    journal.load()
    good = journal.append([status_message("t1", TaskState.FINISHED)])
    (tmp_path / "status" / "0000000000000099.pending").write_bytes(b"\xc1 not msgpack")
    (tmp_path / "status" / "0000000000000100.pending.tmp").write_bytes(b"half")
    batches = checkpoint.StatusJournal(tmp_path / "status").load()
    assert [seq for seq, _ in batches] == [good]
    names = sorted(p.name for p in (tmp_path / "status").iterdir())
    assert names == ["0000000000000001.pending", "0000000000000099.pending.corrupt"]


@pytest.mark.parametrize("data", [b"\x93\x01\x02\x03", checkpoint.encode_batch([("k", b"\xc1")]),
                                  checkpoint.encode_batch([("k", codec.encode(Revive("fw"), 0.0))])])
def test_decode_batch_rejects_what_is_not_a_batch_of_status_messages(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        checkpoint.decode_batch(data)


def test_task_records_round_trip(tmp_path: Path) -> None:
    task = TaskInfo(task_id="t1", agent_id="a1", resources=Resources.of(cpus=0.5),
                    command=CommandInfo("sleep 1", environment={"A": "b"}))
    meta = checkpoint.record_task(tmp_path, "fw", task)
    assert meta == tmp_path / "meta" / "frameworks" / "fw" / "tasks" / "t1"
    checkpoint.record_task(tmp_path, "fw", TaskInfo(task_id="t2", agent_id="a1"))
    checkpoint.record_pid(meta, 4242, "9999")
    checkpoint.record_kill(meta)
    (tmp_path / "meta" / "frameworks" / "fw" / "tasks" / "broken").mkdir()
    found = {f.task.task_id: f for f in checkpoint.scan(tmp_path)}
    assert set(found) == {"t1", "t2"}
    t1, t2 = found["t1"], found["t2"]
    assert (t1.framework_id, t1.task, t1.pid, t1.start_time, t1.kill_requested, t1.done) == (
        "fw", task, 4242, "9999", True, False)
    assert (t2.pid, t2.start_time, t2.kill_requested, t2.done) == (None, None, False, False)
    checkpoint.record_done(t2.meta)
    assert checkpoint.remove_done(tmp_path, older_than=0.0) == 0  # too recent
    assert checkpoint.remove_done(tmp_path, older_than=float("inf")) == 1
    assert [f.task.task_id for f in checkpoint.scan(tmp_path)] == ["t1"]
    assert checkpoint.read_exit_status(meta) is None


def test_work_dir_lock_is_exclusive_and_dies_with_its_process(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from broker_mesos.agent.checkpoint import lock_work_dir; "
                               "assert lock_work_dir(Path(sys.argv[1])) is not None; print('locked', flush=True); "
                               "time.sleep(60)", str(tmp_path)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        assert checkpoint.lock_work_dir(tmp_path) is None
    finally:
        holder.kill()
        holder.wait()
    fd = checkpoint.lock_work_dir(tmp_path)
    assert fd is not None
    os.close(fd)


def test_process_alive_tells_exited_and_reused_pids_apart() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        start = checkpoint.process_start_time(child.pid)
        assert start is not None
        assert checkpoint.process_alive(child.pid, start)
        assert checkpoint.process_alive(child.pid, None)
        assert not checkpoint.process_alive(child.pid, str(int(start) + 1))  # same pid, another process
        child.kill()
        wait_for(lambda: not checkpoint.process_alive(child.pid, start), 5, "the zombie to count as dead")
    finally:
        child.kill()
        child.wait()
    assert not checkpoint.process_alive(child.pid, start)


@pytest.mark.parametrize(("command", "sig", "recorded", "returncode"), [
    ("exit 3", None, "3", 3),
    ("true", None, "0", 0),
    ("sleep 30", signal.SIGTERM, "143", 143),  # the group's SIGTERM: the supervisor outlives it
    ("trap '' TERM; touch ready; sleep 1; exit 4", signal.SIGTERM, "4", 4),
    ("sleep 30", signal.SIGKILL, None, -signal.SIGKILL),  # dies with the task: nothing recorded
])
def test_supervisor_records_the_exit_status(tmp_path: Path, command: str, sig: int | None, recorded: str | None,
                                            returncode: int) -> None:
    status_file = tmp_path / "exit_status"
    proc = subprocess.Popen(["/bin/sh", "-c", SUPERVISOR, "bmesos-supervise", str(status_file), "/bin/sh", "-c",
                             f"touch started; {command}"], cwd=tmp_path, start_new_session=True,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (tmp_path / "started").exists(), 10, "the task to start")
        if sig is not None:
            if "ready" in command:
                wait_for(lambda: (tmp_path / "ready").exists(), 10, "the task's trap")
            os.killpg(proc.pid, sig)
        assert proc.wait(timeout=30) == returncode
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = status_file.read_text().strip() if status_file.exists() else None
    assert text == recorded


def test_command_executor_adopts_a_task_it_did_not_start(tmp_path: Path) -> None:
    """What a restarted agent does: watch a supervisor that is not its child and read its exit status."""
    starter = CommandExecutor(tmp_path, "a1")
    task = TaskInfo(task_id="t1", agent_id="a1", command=CommandInfo("while [ ! -e go ]; do sleep 0.05; done; exit 6"))
    checkpoint.record_task(tmp_path, "fw", task)
    starter.launch("fw", task)
    [found] = checkpoint.scan(tmp_path)
    assert found.pid is not None and checkpoint.process_alive(found.pid, found.start_time)

    adopter = CommandExecutor(tmp_path, "a1")
    adopter.adopt(("fw", "t1"), found.pid, found.start_time)
    assert all(adopter.reap() == [] for _ in range(20))
    (tmp_path / "frameworks" / "fw" / "tasks" / "t1" / "go").touch()
    ended: list[tuple[tuple[str, str], int | None]] = []
    wait_for(lambda: ended.extend(adopter.reap()) or ended, 10, "the adopted task's exit")
    assert ended == [(("fw", "t1"), 6)]
    starter.reap()  # the real parent reaps its zombie
