"""Tasks get what they were offered and no more: disk. ``sandbox.disk_usage`` and the sandbox GC's choices
on a tmp tree (free space injected), then real ``bmesos agent`` processes (root, tasks as ``nobody``)
driven by a fake master over a private broker: a task over its disk is killed and ends TASK_FAILED
(REASON_CONTAINER_LIMITATION_DISK) while its neighbours keep running; a finished task's sandbox and
checkpoint are removed after ``--sandbox-gc-delay``, a running task's stay.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from broker_mesos.agent import checkpoint
from broker_mesos.agent.sandbox import SandboxGC, disk_usage, sandbox_dir
from broker_mesos.core.agent_state import REASON_CONTAINER_LIMITATION_DISK, disk_limitation
from broker_mesos.core.protocol import CommandInfo, TaskInfo, TaskState
from broker_mesos.core.resources import Resources
from broker_mesos.testing.fake_master import FakeMaster
from broker_mesos.testing.processes import Proc, ProcessGroup
from broker_mesos.testing.wait import wait_for

MB = 2**20
RESOURCES = "cpus:2;mem:512;disk:200;ports:[31000-31010]"
FW = "fw1"
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the agent runs tasks as nobody: needs root")


# -- disk_usage ------------------------------------------------------------------------------------


def test_disk_usage_counts_blocks_once_without_following_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(os.urandom(4 * MB))
    box = tmp_path / "box"
    (box / "sub" / "deeper").mkdir(parents=True)
    empty = disk_usage(box)
    assert 0 < empty < 64 * 1024  # three directories

    (box / "sub" / "deeper" / "data").write_bytes(os.urandom(2 * MB))
    os.link(box / "sub" / "deeper" / "data", box / "hardlink")  # the same blocks: counted once
    (box / "link").symlink_to(outside)  # not followed
    (box / "filelink").symlink_to(outside / "big")
    with open(box / "sparse", "wb") as f:  # 1 GB long, nothing written: no blocks
        f.truncate(1024 * MB)
    used = disk_usage(box)
    assert 2 * MB <= used - empty < 2 * MB + 64 * 1024
    if shutil.which("du"):
        du = int(subprocess.run(["du", "-sxB1", str(box)], capture_output=True, text=True, check=True)
                 .stdout.split()[0])
        assert used == du

    assert disk_usage(box / "sub" / "deeper" / "data") == (box / "hardlink").stat().st_blocks * 512
    assert disk_usage(tmp_path / "missing") == 0


def test_disk_limitation_names_the_limit_and_the_usage() -> None:
    limitation = disk_limitation(10, 23 * MB + 1000)
    assert limitation.reason == REASON_CONTAINER_LIMITATION_DISK
    assert limitation.message == "disk limit 10 MB exceeded: sandbox uses 23 MB"
    assert disk_limitation(0.5, int(1.25 * MB)).message == "disk limit 0.5 MB exceeded: sandbox uses 1.2 MB"


# -- the sandbox GC's choices ----------------------------------------------------------------------


def make_task(work: Path, task_id: str, done_at: float | None) -> tuple[Path, Path]:
    """A sandbox holding a file, and its checkpoint dir (with a ``done`` mark of that time if finished)."""
    box = sandbox_dir(work, FW, task_id)
    box.mkdir(parents=True)
    (box / "stdout").write_text("out")
    meta = checkpoint.task_meta_dir(work, FW, task_id)
    checkpoint.make_private_dirs(meta)
    if done_at is not None:
        checkpoint.record_done(meta)
        os.utime(meta / checkpoint.DONE_FILE, (done_at, done_at))
    return box, meta


class Free:
    """Injected free space: the next value at each call (the last one repeated)."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)
        self.calls = 0

    def __call__(self, _path: Path) -> float:
        self.calls += 1
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


def test_gc_removes_finished_sandboxes_after_the_delay_oldest_first(tmp_path: Path) -> None:
    work = tmp_path / "work"
    tasks = {name: make_task(work, name, at) for name, at in (("t1", 1000.0), ("t2", 1005.0), ("t3", 1009.0),
                                                                ("running", None))}
    gc = SandboxGC(work, delay=100.0, min_free=10.0, free=Free(50.0))
    gc.seed()  # from the done marks, oldest first; the running task is not there
    assert len(gc) == 3

    assert gc.collect(now=1050.0) == []
    assert gc.collect(now=1103.0) == [(FW, "t1")]
    assert not tasks["t1"][0].exists() and not tasks["t1"][1].exists()
    assert all(p.exists() for name in ("t2", "t3", "running") for p in tasks[name])
    assert gc.collect(now=2000.0) == [(FW, "t2"), (FW, "t3")]
    assert tasks["running"][0].exists() and tasks["running"][1].exists()
    assert len(gc) == 0


def test_gc_removes_sooner_oldest_first_while_free_space_is_short(tmp_path: Path) -> None:
    work = tmp_path / "work"
    for name in ("t1", "t2", "t3"):
        make_task(work, name, None)
        checkpoint.record_done(checkpoint.task_meta_dir(work, FW, name))
    make_task(work, "running", None)
    free = Free(5.0, 5.0, 50.0)  # before the first removal, after it, after the second: enough
    gc = SandboxGC(work, delay=86400.0, min_free=10.0, free=free)
    gc.finished(FW, "t1", at=1000.0)
    gc.finished(FW, "running", at=1000.5)  # queued by mistake (e.g. relaunched): no done mark, kept
    gc.finished(FW, "t2", at=1001.0)
    gc.finished(FW, "t3", at=1002.0)

    assert gc.collect(now=1003.0) == [(FW, "t1"), (FW, "t2")]
    assert sandbox_dir(work, FW, "t3").exists() and sandbox_dir(work, FW, "running").exists()
    assert checkpoint.task_meta_dir(work, FW, "running").exists()
    assert gc.collect(now=1004.0) == []  # enough free space again, nothing old enough

    gc = SandboxGC(work, delay=86400.0, min_free=10.0, free=Free(1.0), max_per_run=1)
    gc.seed()
    assert gc.collect(now=1005.0) == [(FW, "t3")]  # bounded per run; then nothing finished is left
    assert sandbox_dir(work, FW, "running").exists()
    assert not (work / "frameworks" / FW / "tasks" / "t3").exists()


def test_gc_with_no_min_free_never_reads_free_space(tmp_path: Path) -> None:
    work = tmp_path / "work"
    make_task(work, "t1", 1000.0)
    free = Free(1.0)
    gc = SandboxGC(work, delay=10.0, min_free=0.0, free=free)
    gc.seed()
    assert gc.collect(now=1005.0) == []
    assert gc.collect(now=1011.0) == [(FW, "t1")]
    assert free.calls == 0


# -- real agents -----------------------------------------------------------------------------------


def start_agent(procs: ProcessGroup, broker_url: str, work_dir: Path, agent_id: str, *args: str) -> Proc:
    proc = procs.bmesos(f"agent-{agent_id}-{len(procs.procs)}", "agent", "--broker", broker_url, "--id", agent_id,
                        "--resources", RESOURCES, "--work-dir", str(work_dir), "--kill-on-stop",
                        "--isolation", "none", "--kill-grace", "0.5", *args, env={"BMESOS_BROKER": broker_url})
    proc.wait_output(rf"agent {agent_id} registered with", timeout=20)
    return proc


def shell(task_id: str, value: str, **resources: float) -> TaskInfo:
    return TaskInfo(task_id=task_id, agent_id="x", resources=Resources.of(cpus=0.1, **resources),
                    command=CommandInfo(value))


def write_mb(n: int) -> str:
    return f'dd if=/dev/zero of="$BMESOS_SANDBOX/f" bs=1M count={n} 2>/dev/null; touch "$BMESOS_SANDBOX/written"; '


@as_root
def test_a_task_over_its_disk_fails_with_the_disk_reason_and_its_neighbours_run_on(
        procs: ProcessGroup, broker_url: str, master: FakeMaster, work_root: Path) -> None:
    work = work_root / "disk"
    start_agent(procs, broker_url, work, "disk-limit", "--disk-check-interval", "0.3")
    master.run("disk-limit",
               shell("t-hog", write_mb(30) + "sleep 60", disk=10),
               shell("t-small", write_mb(2) + "sleep 60", disk=10),  # under its limit
               shell("t-unlimited", write_mb(30) + "sleep 60"))  # no disk resource: not limited

    failed = master.wait_state("t-hog", TaskState.FAILED, timeout=20)
    assert failed.reason == REASON_CONTAINER_LIMITATION_DISK
    # measured while it may still be writing its 30 MB: anything over the limit, up to what it writes
    used = re.fullmatch(r"disk limit 10 MB exceeded: sandbox uses (\d+(?:\.\d)?) MB", failed.message)
    assert used is not None and 10 < float(used.group(1)) <= 31, failed.message
    assert failed.exit_code == 137

    for task_id in ("t-small", "t-unlimited"):
        master.wait_state(task_id, TaskState.RUNNING)
        wait_for(lambda t=task_id: (sandbox_dir(work, FW, t) / "written").exists(), 10, f"{task_id} to write")
    time.sleep(1.5)  # five more disk checks
    for task_id in ("t-small", "t-unlimited"):
        assert master.states(task_id)[-1] is TaskState.RUNNING, (task_id, master.states(task_id))


@as_root
def test_finished_sandboxes_and_checkpoints_are_removed_after_the_gc_delay(
        procs: ProcessGroup, broker_url: str, master: FakeMaster, work_root: Path) -> None:
    work = work_root / "gc"
    start_agent(procs, broker_url, work, "disk-gc", "--sandbox-gc-delay", "0.5")
    master.run("disk-gc", shell("t-done", "echo hi"), shell("t-running", "echo on; sleep 60"))
    master.wait_state("t-done", TaskState.FINISHED)
    master.wait_state("t-running", TaskState.RUNNING)
    done_box, done_meta = sandbox_dir(work, FW, "t-done"), checkpoint.task_meta_dir(work, FW, "t-done")

    wait_for(lambda: not done_box.exists() and not done_meta.exists(), 15, "t-done's sandbox and checkpoint to go")
    assert (sandbox_dir(work, FW, "t-running") / "stdout").read_text() == "on\n"
    assert (checkpoint.task_meta_dir(work, FW, "t-running") / checkpoint.TASK_FILE).exists()
    assert master.states("t-running")[-1] is TaskState.RUNNING
