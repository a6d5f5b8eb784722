"""Task usage in heartbeats: the sampler on its own (fake executors, real processes and sandboxes), and
a real ``bmesos agent`` whose HEARTBEATs, read by the test playing the master, report a task's memory
and another's growing CPU time — without isolation, and in cgroups where the agent can use them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from broker_mesos.agent import usage as usage_mod
from broker_mesos.agent.sandbox import sandbox_dir
from broker_mesos.agent.usage import UsageSampler, process_trees, tree_usage
from broker_mesos.core.protocol import AgentTask, CommandInfo, TaskInfo, Usage
from broker_mesos.core.resources import Resources
from broker_mesos.testing.fake_master import FakeMaster
from broker_mesos.testing.processes import Proc, ProcessGroup
from broker_mesos.testing.wait import wait_for

FW = "fw1"
PYTHON = "/usr/bin/python3"  # on the tasks' PATH (they run as nobody, with a fixed PATH)
HOLD_100_MB = f'{PYTHON} -c "b = bytearray(100 * 2**20); import time; time.sleep(60)"'
SPIN = f'{PYTHON} -c "while True: pass"'


# -- the sampler, without an agent ------------------------------------------------------------------


class FakeContainers:
    def __init__(self, usage: dict[tuple[str, str], tuple[float | None, int | None]]) -> None:
        self._usage = usage

    def usage(self, key: tuple[str, str]) -> tuple[float | None, int | None]:
        return self._usage.get(key, (None, None))


class FakeExecutor:
    def __init__(self, containers: FakeContainers | None = None, pgid: dict[tuple[str, str], int] | None = None):
        self.containers = containers
        self._pgid = pgid or {}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _tasks(*ids: str) -> list[AgentTask]:
    return [AgentTask(t, FW) for t in ids]


def test_cgroup_numbers_are_used_when_the_container_has_them(tmp_path: Path) -> None:
    containers = FakeContainers({(FW, "a"): (12.5, 300 * 2**20), (FW, "b"): (None, None)})
    sampler = UsageSampler(FakeExecutor(containers), tmp_path)
    assert sampler.sample(_tasks("a", "b")) == Usage([12.5, 0.0], [300.0, 0.0], [0.0, 0.0])


def test_a_process_tree_is_measured_when_the_container_cannot_tell(tmp_path: Path) -> None:
    code = "import os, time; b = bytearray(50 * 2**20); os.fork() or time.sleep(30); time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        def tree() -> Any:
            found = process_trees([proc.pid]).get(proc.pid, [])
            return found if len(found) == 2 else None

        wait_for(tree, 10, "the child to fork")
        cpu, rss = tree_usage(process_trees([proc.pid])[proc.pid]) or (0.0, 0)
        assert rss >= 2 * 45 * 2**20  # the child has its own copy of the touched pages' accounting
        assert cpu >= 0.0
        # memory from the cgroup, CPU time from the processes (a v1 cpu hierarchy without cpuacct)
        containers = FakeContainers({(FW, "t"): (None, 7 * 2**20)})
        usage = UsageSampler(FakeExecutor(containers, {(FW, "t"): proc.pid}), tmp_path).sample(_tasks("t"))
        assert usage.mem_mb == [7.0] and usage.cpu_seconds[0] >= 0.0
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def test_a_task_that_ended_keeps_its_last_values(tmp_path: Path) -> None:
    containers = FakeContainers({(FW, "t"): (3.0, 2**20)})
    clock = Clock()
    sampler = UsageSampler(FakeExecutor(containers, {}), tmp_path, clock)
    assert sampler.sample(_tasks("t")).cpu_seconds == [3.0]
    containers._usage.clear()  # its cgroup is gone, its supervisor too
    clock.now += 5
    assert sampler.sample(_tasks("t")) == Usage([3.0], [1.0], [0.0])
    gone = UsageSampler(FakeExecutor(None, {(FW, "t"): 2**22 + 12345}), tmp_path, clock)  # no such pid
    assert gone.sample(_tasks("t")) == Usage([0.0], [0.0], [0.0])


def test_sandboxes_are_walked_at_most_every_disk_min_age_within_a_budget(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for t in ("a", "b", "c"):
        box = sandbox_dir(tmp_path, FW, t)
        box.mkdir(parents=True)
        (box / "data").write_bytes(os.urandom(2 * 2**20))
    walked: list[str] = []
    real = usage_mod.disk_usage

    def counting(path: Path) -> int:
        walked.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(usage_mod, "disk_usage", counting)
    monkeypatch.setattr(usage_mod, "DISK_BUDGET", -1.0)  # one sandbox per sample
    clock = Clock()
    sampler = UsageSampler(FakeExecutor(), tmp_path, clock)
    disks = []
    for _ in range(3):
        clock.now += usage_mod.MIN_SAMPLE_INTERVAL
        disks.append(sampler.sample(_tasks("a", "b", "c")).disk_mb)
    assert walked == ["a", "b", "c"]
    assert disks[0][0] >= 2.0 and disks[0][1:] == [0.0, 0.0]
    assert all(d >= 2.0 for d in disks[2])
    clock.now += usage_mod.MIN_SAMPLE_INTERVAL
    sampler.sample(_tasks("a", "b", "c"))
    assert len(walked) == 3  # all fresh: nothing walked
    clock.now += usage_mod.DISK_MIN_AGE
    (sandbox_dir(tmp_path, FW, "a") / "more").write_bytes(os.urandom(3 * 2**20))
    assert sampler.sample(_tasks("a", "b", "c")).disk_mb[0] >= 5.0 and walked[3:] == ["a"]
    # a sample asked for again within MIN_SAMPLE_INTERVAL is the last one
    assert sampler.sample(_tasks("a", "b", "c")).disk_mb[0] >= 5.0 and len(walked) == 4


def test_the_sampler_forgets_ended_tasks(tmp_path: Path) -> None:
    clock = Clock()
    sampler = UsageSampler(FakeExecutor(FakeContainers({(FW, "a"): (1.0, 0), (FW, "b"): (2.0, 0)})), tmp_path,
                           clock)
    sampler.sample(_tasks("a", "b"))
    clock.now += 10
    assert sampler.sample(_tasks("b")).cpu_seconds == [2.0]
    assert set(sampler._cpu_mem) == {(FW, "b")} and set(sampler._disk) == {(FW, "b")}


# -- a real agent ------------------------------------------------------------------------------------


def _start_agent(procs: ProcessGroup, url: str, work: Path, agent_id: str, isolation: str) -> Proc:
    args = ("--isolation", "none") if isolation == "none" else ()
    proc = procs.bmesos(f"agent-{agent_id}", "agent", "--broker", url, "--id", agent_id, "--resources",
                        "cpus:2;mem:1024;disk:100", "--work-dir", str(work), "--kill-on-stop",
                        "--kill-grace", "0.5", "--heartbeat-interval", "0.3", *args)
    proc.wait_output(rf"agent {agent_id} registered with", timeout=20)
    if isolation == "cgroups" and (refused := re.search(r"tasks are not isolated.*", proc.output())):
        pytest.skip(f"the agent cannot use cgroups on this machine: {refused.group(0)}")
    return proc


def _task(task_id: str, value: str, cpus: float, mem: float) -> TaskInfo:
    return TaskInfo(task_id=task_id, agent_id="x", resources=Resources.of(cpus=cpus, mem=mem),
                    command=CommandInfo(value))


@pytest.mark.parametrize("isolation", ["none", "cgroups"])
def test_heartbeats_report_each_tasks_memory_and_growing_cpu_time(
        procs: ProcessGroup, broker_url: str, master: FakeMaster, work_root: Path, isolation: str) -> None:
    agent_id = f"usage-{isolation}"
    _start_agent(procs, broker_url, work_root / agent_id, agent_id, isolation)
    master.run(agent_id, _task("hold", HOLD_100_MB, 0.5, 512), _task("spin", SPIN, 1, 64))

    def reported() -> dict[str, tuple[float, float, float]] | None:
        beat = master.latest_heartbeat()
        if beat is None or beat.usage is None:
            return None
        u = beat.usage
        return {t.task_id: (u.cpu_seconds[i], u.mem_mb[i], u.disk_mb[i]) for i, t in enumerate(beat.tasks)}

    def holding() -> dict[str, tuple[float, float, float]] | None:
        seen = reported()
        return seen if seen and seen.get("hold", (0, 0, 0))[1] >= 90 and seen.get("spin", (0, 0, 0))[0] > 0 else None

    first = wait_for(holding, 20, "a heartbeat with the task holding ~100 MB")
    assert first["hold"][1] < 512  # its own memory, not the machine's
    assert first["spin"][1] < 64 and first["hold"][0] < first["spin"][0] + 5

    def grown() -> dict[str, tuple[float, float, float]] | None:
        seen = reported()
        return seen if seen and "spin" in seen and seen["spin"][0] >= first["spin"][0] + 0.5 else None

    later = wait_for(grown, 20, "the spinning task's CPU seconds to grow")
    assert later["hold"][1] >= 90
    assert all(disk >= 0.0 for _, _, disk in later.values())
