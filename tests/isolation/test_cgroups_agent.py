"""Tasks get what they were offered and no more: real ``bmesos agent`` processes (root) in this machine's
real cgroup hierarchy (v1 or v2, whichever the agent picks), the test playing the master with plain pika
over a private broker.

Skipped, with the reason printed, where the agent cannot isolate: not root, or the agent itself says
it cannot create its cgroups (its warning is the skip reason).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker_mesos.agent.checkpoint import kill_checkpointed_tasks
from broker_mesos.agent.container_limits import parse_proc_cgroup
from broker_mesos.agent.isolation import cgroup_name, cgroupfs, own_cgroups
from broker_mesos.agent.isolation.layout import agent_subtree, task_subpath
from broker_mesos.core.agent_state import REASON_CONTAINER_LIMITATION_MEMORY
from broker_mesos.core.protocol import CommandInfo, TaskInfo, TaskState
from broker_mesos.core.resources import Resources
from broker_mesos.testing.fake_master import FakeMaster
from broker_mesos.testing.processes import Proc, ProcessGroup
from broker_mesos.testing.wait import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cgroup isolation needs an agent running as root")

RESOURCES = "cpus:2;mem:1024;disk:100;ports:[31000-31010]"
FW = "fw1"
PYTHON = "/usr/bin/python3"  # on the tasks' PATH (they run as nobody, with a fixed PATH)
ALLOCATE_256_MB = f"{PYTHON} -c 'b = bytearray(256 * 2**20)'"
FORK_BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"


@dataclass
class Cgroups:
    """Where an agent's task cgroups are: per v1 controller, or ``unified`` for v2."""

    version: str
    agent_id: str
    bases: dict[str, Path]  # the agent's own cgroup in each hierarchy

    def task(self, task_id: str) -> dict[str, Path]:
        return {c: base / agent_subtree(self.agent_id) / task_subpath(FW, task_id) for c, base in self.bases.items()}

    def file(self, task_id: str, what: str) -> Path:
        """``what``: memory, memsw, cpu, quota, pids, pids.current, pids.events (the file for this version)."""
        v1 = {"memory": ("memory", "memory.limit_in_bytes"), "memsw": ("memory", "memory.memsw.limit_in_bytes"),
              "cpu": ("cpu", "cpu.shares"), "quota": ("cpu", "cpu.cfs_quota_us"), "pids": ("pids", "pids.max"),
              "pids.current": ("pids", "pids.current"), "pids.events": ("pids", "pids.events")}
        v2 = {"memory": "memory.max", "memsw": "memory.swap.max", "cpu": "cpu.weight", "quota": "cpu.max",
              "pids": "pids.max", "pids.current": "pids.current", "pids.events": "pids.events"}
        if self.version == "v1":
            controller, name = v1[what]
            return self.task(task_id)[controller] / name
        return self.task(task_id)["unified"] / v2[what]

    def procs(self, task_id: str) -> set[int]:
        found: set[int] = set()
        for d in self.task(task_id).values():
            try:
                found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except FileNotFoundError:
                continue
        return found

    def exist(self, task_id: str) -> bool:
        return any(d.exists() for d in self.task(task_id).values())


USED: list[Cgroups] = []


@pytest.fixture(autouse=True)
def no_task_survives_a_test() -> Iterator[None]:
    """Whatever a failed test left in its agents' task cgroups (a raging fork bomb) is killed after it."""
    yield
    while USED:
        cgroups = USED.pop()
        for base in cgroups.bases.values():
            for task_dir in (base / agent_subtree(cgroups.agent_id)).glob("framework.*/task.*"):
                cgroupfs.kill_procs(task_dir, rounds=100)
                cgroupfs.remove_dir(task_dir)
                cgroupfs.remove_parent_if_empty(task_dir)


def start_agent(procs: ProcessGroup, broker_url: str, work_dir: Path, agent_id: str, *args: str,
                kill_on_stop: bool = True) -> tuple[Proc, Cgroups]:
    """An agent, and where its task cgroups are; skips the test (saying why) when the agent cannot isolate."""
    extra = ("--kill-on-stop",) if kill_on_stop else ()
    proc = procs.bmesos(f"agent-{agent_id}-{len(procs.procs)}", "agent", "--broker", broker_url, "--id", agent_id,
                        "--resources", RESOURCES, "--work-dir", str(work_dir), "--kill-grace", "0.5", *extra, *args)
    proc.wait_output(rf"agent {agent_id} registered with", timeout=20)
    if (refused := re.search(r"tasks are not isolated.*", proc.output())) is not None:
        pytest.skip(f"the agent cannot use cgroups on this machine: {refused.group(0)}")
    version = proc.wait_output(rf"agent {agent_id}: tasks run in cgroups (v\d)").group(1)
    v1, v2 = own_cgroups(Path(f"/proc/{proc.popen.pid}/mountinfo").read_text(),
                         Path(f"/proc/{proc.popen.pid}/cgroup").read_text())
    if version == "v1":
        bases = v1
    else:
        assert v2 is not None
        bases = {"unified": v2}
    USED.append(Cgroups(version, cgroup_name(agent_id, work_dir), bases))
    return proc, USED[-1]


def task(task_id: str, value: str, cpus: float = 0.1, mem: float = 64) -> TaskInfo:
    return TaskInfo(task_id=task_id, agent_id="x", resources=Resources.of(cpus=cpus, mem=mem),
                    command=CommandInfo(value))


def until_go(code: int = 0) -> str:
    return f"while [ ! -e go ]; do sleep 0.05; done; exit {code}"


def sandbox(work: Path, task_id: str) -> Path:
    return work / "frameworks" / FW / "tasks" / task_id


def meta(work: Path, task_id: str) -> Path:
    return work / "meta" / "frameworks" / FW / "tasks" / task_id


Process = tuple[int, str]
"""(pid, start time): a process, told apart from a later one with the same pid (a fork bomb recycles pids)."""


def processes(pids: set[int]) -> set[Process]:
    found = set()
    for pid in pids:
        fields = _stat(pid)
        if fields is not None and fields[0] not in ("Z", "X"):
            found.add((pid, fields[19]))
    return found


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError):
        return None


def read_pid(path: Path) -> int:
    wait_for(lambda: path.exists() and path.read_text().strip(), 10, f"{path.name} to be written")
    return int(path.read_text())


def gone(cgroups: Cgroups, task_id: str, seen: set[Process]) -> None:
    """No cgroup of the task is left, nor any of the processes ``seen`` in it."""
    assert seen
    wait_for(lambda: not cgroups.exist(task_id), 10, f"the cgroups of {task_id} to be removed")
    wait_for(lambda: not processes({pid for pid, _ in seen}) & seen, 10, f"every process of {task_id} to be gone")


@pytest.fixture(scope="module", autouse=True)
def python_for_tasks() -> None:
    if not os.access(PYTHON, os.X_OK):
        pytest.skip(f"{PYTHON} (what the tasks run to allocate memory) is not installed")


def test_each_limit_is_written_and_the_task_joins_its_cgroups_before_it_execs(
        procs: ProcessGroup, broker_url: str, master: FakeMaster, work_root: Path) -> None:
    work = work_root / "limits"
    _, cgroups = start_agent(procs, broker_url, work, "cg-limits", "--cgroups-cpu-limit")
    master.run("cg-limits", task("t-limits", "echo $$ > pid; cat /proc/self/cgroup > cgroup; " + until_go(),
                                 cpus=0.5, mem=100))
    master.wait_state("t-limits", TaskState.RUNNING)
    box = sandbox(work, "t-limits")
    pid = read_pid(box / "pid")
    mine = processes({pid})
    wait_for(lambda: (box / "cgroup").exists() and (box / "cgroup").read_text(), 10, "the task's view of its cgroups")

    def value(what: str) -> str:
        return cgroups.file("t-limits", what).read_text().strip()

    mb100 = str(100 * 2**20)
    if cgroups.version == "v1":
        assert value("memory") == mb100 and value("cpu") == "512" and value("quota") == "50000"
        if cgroups.file("t-limits", "memsw").exists():
            assert value("memsw") == mb100  # swap adds no headroom
    else:
        assert value("memory") == mb100 and value("cpu") == "50" and value("quota") == "50000 100000"
        if cgroups.file("t-limits", "memsw").exists():
            assert value("memsw") == "0"
    if "pids" in cgroups.bases or cgroups.version == "v2":
        assert value("pids") == "1024"  # the default --cgroups-pids-limit

    # the task was in every one of its cgroups from its first instruction: what it saw itself
    suffix = f"/{agent_subtree(cgroups.agent_id)}/{task_subpath(FW, 't-limits')}"
    seen = parse_proc_cgroup((box / "cgroup").read_text())
    for controller in cgroups.bases:
        [path] = [e.path for e in seen if (e.v2 if controller == "unified" else controller in e.controllers)]
        assert path.endswith(suffix), seen
    assert pid in cgroups.procs("t-limits")
    supervisor = int((meta(work, "t-limits") / "pid").read_text().split()[0])
    assert supervisor not in cgroups.procs("t-limits")  # it stays outside: it must outlive the task's OOM
    assert "cgroups-" + cgroups.version in (meta(work, "t-limits") / "cgroup").read_text()

    (box / "go").touch()
    master.wait_state("t-limits", TaskState.FINISHED)
    gone(cgroups, "t-limits", mine)


def test_a_task_over_its_memory_limit_fails_with_the_memory_reason_and_its_neighbour_runs_on(
        procs: ProcessGroup, broker_url: str, master: FakeMaster, work_root: Path) -> None:
    work = work_root / "oom"
    proc, cgroups = start_agent(procs, broker_url, work, "cg-oom")
    master.run("cg-oom", task("t-neighbour", "echo $$ > pid; " + until_go(), mem=64))
    master.wait_state("t-neighbour", TaskState.RUNNING)
    master.run("cg-oom", task("t-hog", ALLOCATE_256_MB, mem=64))

    failed = master.wait_state("t-hog", TaskState.FAILED)
    assert failed.reason == REASON_CONTAINER_LIMITATION_MEMORY
    assert failed.message.startswith("memory limit 64 MB reached"), failed.message
    assert failed.exit_code == 128 + signal.SIGKILL
    proc.wait_output(r"task=t-hog framework=fw1 TASK_FAILED \(memory limit 64 MB reached")
    wait_for(lambda: not cgroups.exist("t-hog"), 10, "t-hog's cgroups to be removed")

    neighbour = processes({read_pid(sandbox(work, "t-neighbour") / "pid")})
    assert master.states("t-neighbour") == [TaskState.STARTING, TaskState.RUNNING]
    assert neighbour and {pid for pid, _ in neighbour} <= cgroups.procs("t-neighbour")
    (sandbox(work, "t-neighbour") / "go").touch()
    finished = master.wait_state("t-neighbour", TaskState.FINISHED)
    assert finished.reason == ""
    gone(cgroups, "t-neighbour", neighbour)


def test_a_fork_bomb_is_contained_and_the_agent_keeps_answering(
        procs: ProcessGroup, broker_url: str, master: FakeMaster, work_root: Path) -> None:
    work = work_root / "bomb"
    limit = 48
    _, cgroups = start_agent(procs, broker_url, work, "cg-bomb", "--cgroups-pids-limit", str(limit))
    # every bomb process forks for ever, whether the fork works or not, and reaps nothing
    master.run("cg-bomb", task("t-bomb", f"echo $$ > pid; exec {PYTHON} -c {shlex.quote(FORK_BOMB)}", mem=512))
    master.wait_state("t-bomb", TaskState.RUNNING)
    seen = processes({read_pid(sandbox(work, "t-bomb") / "pid")})

    def refused() -> int:
        events = cgroups.file("t-bomb", "pids.events")
        return int(events.read_text().split()[-1]) if events.exists() else 0

    wait_for(refused, 20, "the bomb to hit pids.max")
    counts = []
    for _ in range(20):
        counts.append(int(cgroups.file("t-bomb", "pids.current").read_text()))
        seen |= processes(cgroups.procs("t-bomb"))
    assert max(counts) <= limit and max(counts) > limit // 2, counts  # raging, and held at the limit

    # the agent answers while the bomb rages: a task launched now runs and finishes
    master.run("cg-bomb", task("t-after", "echo still here"))
    master.wait_state("t-after", TaskState.FINISHED, timeout=30)
    assert (sandbox(work, "t-after") / "stdout").read_text() == "still here\n"
    assert refused() > 0 and cgroups.procs("t-bomb")

    seen |= processes(cgroups.procs("t-bomb"))
    master.kill("cg-bomb", "t-bomb")
    killed = master.wait_state("t-bomb", TaskState.KILLED, timeout=30)
    assert killed.message.startswith("killed on request")
    gone(cgroups, "t-bomb", seen)


def test_a_killed_task_and_a_finished_one_leave_no_process_and_no_cgroup(
        procs: ProcessGroup, broker_url: str, master: FakeMaster, work_root: Path) -> None:
    """Each starts a child in a session of its own (out of reach of the task's process group)."""
    work = work_root / "kill"
    _, cgroups = start_agent(procs, broker_url, work, "cg-kill")
    escape = "setsid sleep 300 & echo $! > child; echo $$ > pid; "
    master.run("cg-kill", task("t-killed", escape + "sleep 300"), task("t-done", escape + until_go()))
    found: dict[str, set[Process]] = {}
    for task_id in ("t-killed", "t-done"):
        master.wait_state(task_id, TaskState.RUNNING)
        box = sandbox(work, task_id)
        pids = {read_pid(box / "pid"), read_pid(box / "child")}
        wait_for(lambda p=pids, t=task_id: p <= cgroups.procs(t), 10, f"{task_id}'s processes in its cgroup")
        found[task_id] = processes(pids)
        assert len(found[task_id]) == 2

    master.kill("cg-kill", "t-killed")
    master.wait_state("t-killed", TaskState.KILLED)
    gone(cgroups, "t-killed", found["t-killed"])

    (sandbox(work, "t-done") / "go").touch()
    master.wait_state("t-done", TaskState.FINISHED)  # a task's normal end takes what it left behind with it
    gone(cgroups, "t-done", found["t-done"])
    assert not (cgroups.task("t-done")["memory" if cgroups.version == "v1" else "unified"].parent).exists()


def test_a_restarted_agent_keeps_using_the_recorded_cgroups(
        procs: ProcessGroup, broker_url: str, master: FakeMaster, work_root: Path) -> None:
    work = work_root / "restart"
    try:
        first, cgroups = start_agent(procs, broker_url, work, "cg-restart", kill_on_stop=False)
        master.run("cg-restart",
                   task("t-later", "echo $$ > pid; while [ ! -e go ]; do sleep 0.05; done; exec " + ALLOCATE_256_MB),
                   task("t-down", "while [ ! -e go ]; do sleep 0.05; done; exec " + ALLOCATE_256_MB),
                   task("t-kill", "setsid sleep 300 & echo $! > child; sleep 300"))
        for task_id in ("t-later", "t-down", "t-kill"):
            master.wait_state(task_id, TaskState.RUNNING)
        kill_pids = processes({read_pid(sandbox(work, "t-kill") / "child")})
        first.signal(signal.SIGTERM)
        assert first.wait(timeout=15) == 0

        # while no agent runs: t-down reaches its limit and the OOM killer kills it; its supervisor records it
        (sandbox(work, "t-down") / "go").touch()
        wait_for(lambda: (meta(work, "t-down") / "exit_status").exists(), 10, "t-down's end to be recorded")
        assert cgroups.exist("t-down")  # nobody removed it yet

        second, _ = start_agent(procs, broker_url, work, "cg-restart", kill_on_stop=False)
        second.wait_output(r"2 task\(s\) re-attached, 1 ended while it was down")
        down = master.wait_state("t-down", TaskState.FAILED)
        assert down.reason == REASON_CONTAINER_LIMITATION_MEMORY and "memory limit 64 MB" in down.message
        wait_for(lambda: not cgroups.exist("t-down"), 10, "t-down's cgroups to be removed")

        (sandbox(work, "t-later") / "go").touch()  # now re-attached: the OOM kill is seen in its recorded cgroup
        later = master.wait_state("t-later", TaskState.FAILED)
        assert later.reason == REASON_CONTAINER_LIMITATION_MEMORY
        wait_for(lambda: not cgroups.exist("t-later"), 10, "t-later's cgroups to be removed")

        kill_pids |= processes(cgroups.procs("t-kill"))
        master.kill("cg-restart", "t-kill")
        master.wait_state("t-kill", TaskState.KILLED)
        gone(cgroups, "t-kill", kill_pids)
    finally:
        kill_checkpointed_tasks(work)


def test_isolation_none_leaves_tasks_in_the_agents_cgroups(
        procs: ProcessGroup, broker_url: str, master: FakeMaster, work_root: Path) -> None:
    work = work_root / "none"
    proc = procs.bmesos("agent-none", "agent", "--broker", broker_url, "--id", "cg-none", "--resources", RESOURCES,
                        "--work-dir", str(work), "--kill-on-stop", "--isolation", "none")
    proc.wait_output(r"agent cg-none registered with", timeout=20)
    proc.wait_output(r"agent cg-none: tasks are not isolated \(--isolation none\)")
    master.run("cg-none", task("t-free", f"cat /proc/self/cgroup; {PYTHON} -c {shlex.quote('print(1)')}"))
    master.wait_state("t-free", TaskState.FINISHED)
    out = (sandbox(work, "t-free") / "stdout").read_text()
    assert "bmesos" not in out and out.endswith("1\n")
    assert not (meta(work, "t-free") / "cgroup").exists()
    assert "WARNING" not in proc.output()


def test_an_agent_kills_and_removes_a_task_cgroup_no_checkpoint_knows(
        procs: ProcessGroup, broker_url: str, master: FakeMaster, work_root: Path) -> None:
    """A task whose checkpoint is gone (say, a wiped meta dir) must not run on outside the books."""
    work = work_root / "orphan"
    try:
        first, cgroups = start_agent(procs, broker_url, work, "cg-orphan", kill_on_stop=False)
        master.run("cg-orphan", task("t-orphan", "setsid sleep 300 & echo $! > child; echo $$ > pid; sleep 300"))
        master.wait_state("t-orphan", TaskState.RUNNING)
        box = sandbox(work, "t-orphan")
        seen = processes({read_pid(box / "pid"), read_pid(box / "child")})
        wait_for(lambda: {pid for pid, _ in seen} <= cgroups.procs("t-orphan"), 10,
                 "the task's processes in its cgroup")
        first.signal(signal.SIGTERM)
        assert first.wait(timeout=15) == 0
        shutil.rmtree(meta(work, "t-orphan"))  # no checkpoint knows the task any more

        second, _ = start_agent(procs, broker_url, work, "cg-orphan", kill_on_stop=False)
        second.wait_output(r"killed the processes of \S+task\.t-orphan, a task this agent does not know", 15)
        wait_for(lambda: not processes({pid for pid, _ in seen}) & seen, 10, "the orphan's processes to be gone")
        assert not cgroups.exist("t-orphan")
    finally:
        kill_checkpointed_tasks(work)
