"""Cgroups v1 and v2 over a plain directory tree standing in for the hierarchy: which files are written
with what, how OOM kills are read, what a checkpoint record brings back, how the isolation is chosen.
Runs anywhere (no root, no cgroups); the real hierarchy is exercised by ``test_cgroups_agent.py``."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker_mesos.agent import checkpoint, isolation
from broker_mesos.agent.executor import CommandExecutor
from broker_mesos.agent.isolation import IsolationUnavailable, attach, cgroups_isolator, make_isolator
from broker_mesos.agent.isolation.containers import CGROUP_FILE, Containers
from broker_mesos.agent.isolation.limits import Policy
from broker_mesos.agent.isolation.none import NoIsolation
from broker_mesos.agent.isolation.v1 import CgroupsV1, V1Container
from broker_mesos.agent.isolation.v2 import CgroupsV2, V2Container
from broker_mesos.cli.agent import agent
from broker_mesos.core.agent_state import REASON_CONTAINER_LIMITATION_MEMORY
from broker_mesos.core.errors import ConfigError
from broker_mesos.core.protocol import CommandInfo, TaskInfo
from broker_mesos.core.resources import Resources
from broker_mesos.testing.wait import wait_for

TASK = Resources.of(cpus=0.5, mem=64)
MB64 = str(64 * 2**20)


def read(path: Path) -> str:
    return path.read_text().strip()


def v1_tree(tmp_path: Path, memsw: bool = True) -> dict[str, Path]:
    """The agent's own cgroup in three v1 hierarchies; the kernel's swap accounting file if ``memsw``."""
    bases = {c: tmp_path / c / "own" for c in ("memory", "cpu", "pids")}
    for base in bases.values():
        base.mkdir(parents=True)
    if memsw:
        agent = bases["memory"] / "bmesos" / "agent.a1"
        agent.mkdir(parents=True)
        (agent / "memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
    return bases


def test_v1_writes_each_limit_in_its_hierarchy(tmp_path: Path) -> None:
    bases = v1_tree(tmp_path)
    isolator = CgroupsV1.prepare(bases, "a1", Policy(cpu_limit=True, pids_limit=100))
    assert "swap included" in isolator.describe() and "at most 100 pids" in isolator.describe()
    container = isolator.create(("fw", "t1"), TASK)
    where = {c: base / "bmesos" / "agent.a1" / "framework.fw" / "task.t1" for c, base in bases.items()}
    assert container.dirs == where
    assert read(where["memory"] / "memory.limit_in_bytes") == MB64
    assert read(where["memory"] / "memory.memsw.limit_in_bytes") == MB64  # swap adds no headroom
    assert read(where["cpu"] / "cpu.shares") == "512"
    assert (read(where["cpu"] / "cpu.cfs_period_us"), read(where["cpu"] / "cpu.cfs_quota_us")) == ("100000", "50000")
    assert read(where["pids"] / "pids.max") == "100"
    assert container.procs_files == tuple(str(d / "cgroup.procs") for d in where.values())


def test_v1_without_swap_accounting_cpu_cap_or_pids_limit(tmp_path: Path) -> None:
    bases = v1_tree(tmp_path, memsw=False)
    del bases["pids"]
    isolator = CgroupsV1.prepare(bases, "a1", Policy(pids_limit=0))
    container = isolator.create(("fw", "t1"), Resources.of(cpus=0.001))
    assert set(container.dirs) == {"memory", "cpu"}
    names = {c: sorted(p.name for p in d.iterdir()) for c, d in container.dirs.items()}
    assert names == {"memory": ["memory.limit_in_bytes"], "cpu": ["cpu.shares"]}
    assert read(container.dirs["memory"] / "memory.limit_in_bytes") == str(32 * 2**20)  # the floor
    assert read(container.dirs["cpu"] / "cpu.shares") == "2"


def test_v1_needs_a_memory_hierarchy_it_can_write(tmp_path: Path) -> None:
    with pytest.raises(IsolationUnavailable, match="no cgroup v1 memory hierarchy"):
        CgroupsV1.prepare({"cpu": tmp_path}, "a1", Policy())
    (tmp_path / "file").write_text("")
    with pytest.raises(IsolationUnavailable, match="cannot create cgroup"):
        CgroupsV1.prepare({"memory": tmp_path / "file"}, "a1", Policy())


def test_v1_reads_oom_kills(tmp_path: Path) -> None:
    container = CgroupsV1.prepare(v1_tree(tmp_path), "a1", Policy()).create(("fw", "t1"), TASK)
    memory = container.dirs["memory"]
    oom_control = memory / "memory.oom_control"
    oom_control.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    (memory / "memory.failcnt").write_text("12\n")  # the limit was hit (page cache reclaimed), no OOM kill
    assert container.memory_limit_reached() is None
    oom_control.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    assert container.memory_limit_reached() == 64
    oom_control.write_text("oom_kill_disable 0\nunder_oom 0\n")  # before Linux 4.13: failcnt is all there is
    assert container.memory_limit_reached() == 64


def test_v1_record_attach_add_and_remove(tmp_path: Path) -> None:
    isolator = CgroupsV1.prepare(v1_tree(tmp_path), "a1", Policy())
    container = isolator.create(("fw", "t1"), TASK)
    again = attach(container.record())
    assert isinstance(again, V1Container) and again.dirs == container.dirs
    again.add(4242)
    assert all(read(Path(f)) == "4242" for f in container.procs_files)
    assert not container.remove()  # a cgroup with (here: fake) contents stays
    for d in container.dirs.values():
        for f in d.iterdir():
            f.unlink()
    assert container.kill_all()  # nothing in it
    assert container.remove()
    assert not any(d.parent.exists() for d in container.dirs.values())  # the framework's cgroup went with it
    assert container.remove()  # removing what is gone is done


def test_a_leftover_cgroup_of_the_same_task_is_replaced(tmp_path: Path) -> None:
    isolator = CgroupsV1.prepare(v1_tree(tmp_path), "a1", Policy())
    leftover = isolator.agent_dirs["memory"] / "framework.fw" / "task.t1"
    leftover.mkdir(parents=True)
    isolator.create(("fw", "t1"), TASK)
    assert read(leftover / "memory.limit_in_bytes") == MB64


def test_sweep_removes_empty_cgroups_of_tasks_the_agent_does_not_know(tmp_path: Path) -> None:
    isolator = CgroupsV1.prepare(v1_tree(tmp_path), "a1", Policy())
    memory = isolator.agent_dirs["memory"]
    for task in ("kept", "ended", "orphan"):
        (memory / "framework.fw" / f"task.{task}").mkdir(parents=True)
    (memory / "framework.fw" / "task.orphan" / "cgroup.procs").write_text("4242\n")  # still holds a process
    (memory / "framework.gone" / "task.t").mkdir(parents=True)
    removed, busy = isolator.sweep({("fw", "kept")})
    assert removed == 2 and busy == [memory / "framework.fw" / "task.orphan"]
    assert sorted(p.name for p in (memory / "framework.fw").iterdir()) == ["task.kept", "task.orphan"]
    assert not (memory / "framework.gone").exists()


def v2_tree(tmp_path: Path, procs: str = "", root: bool = False, controllers: str = "cpuset cpu io memory pids"
            ) -> Path:
    base = tmp_path / "unified" / "own"
    agent = base / "bmesos" / "agent.a1"
    agent.mkdir(parents=True)
    (base / "cgroup.controllers").write_text(controllers + "\n")
    (base / "cgroup.procs").write_text(procs)
    if not root:
        (base / "cgroup.type").write_text("domain\n")
    for name in ("memory.swap.max", "memory.oom.group", "cgroup.kill"):  # what a recent kernel offers
        (agent / name).write_text("")
    return base


def test_v2_delegates_controllers_and_writes_each_limit(tmp_path: Path) -> None:
    base = v2_tree(tmp_path, procs=f"{os.getpid()}\n")
    isolator = CgroupsV2.prepare(base, "a1", Policy(cpu_limit=True, pids_limit=100))
    agent = base / "bmesos" / "agent.a1"
    assert read(agent / "agent" / "cgroup.procs") == str(os.getpid())  # the agent left its cgroup for a leaf
    for d in (base, base / "bmesos", agent):
        assert read(d / "cgroup.subtree_control") == "+memory +cpu +pids"
    container = isolator.create(("fw", "t1"), TASK)
    d = agent / "framework.fw" / "task.t1"
    assert container.dir == d and container.procs_files == (str(d / "cgroup.procs"),)
    assert read(d.parent / "cgroup.subtree_control") == "+memory +cpu +pids"
    assert {f.name: read(f) for f in d.iterdir()} == {
        "memory.max": MB64, "memory.swap.max": "0", "memory.oom.group": "1", "cpu.weight": "50",
        "cpu.max": "50000 100000", "pids.max": "100"}


def test_v2_at_the_root_and_without_cpu_or_pids(tmp_path: Path) -> None:
    base = v2_tree(tmp_path, procs=f"1\n{os.getpid()}\n", root=True, controllers="memory io")
    isolator = CgroupsV2.prepare(base, "a1", Policy())
    assert not (base / "bmesos" / "agent.a1" / "agent").exists()  # the root cgroup may hold processes
    assert read(base / "cgroup.subtree_control") == "+memory"
    container = isolator.create(("fw", "t1"), Resources.of(cpus=1, mem=100))
    assert sorted(p.name for p in container.dir.iterdir()) == ["memory.max", "memory.oom.group", "memory.swap.max"]


@pytest.mark.parametrize(("procs", "controllers", "complaint"), [
    ("1\n{pid}\n", "cpu memory pids", "holds other processes"),
    ("{pid}\n", "cpu pids", "the memory controller is not available"),
])
def test_v2_refuses_what_it_cannot_delegate(tmp_path: Path, procs: str, controllers: str, complaint: str) -> None:
    base = v2_tree(tmp_path, procs=procs.format(pid=os.getpid()), controllers=controllers)
    with pytest.raises(IsolationUnavailable, match=complaint):
        CgroupsV2.prepare(base, "a1", Policy())


def test_v2_reads_oom_kills_kills_with_cgroup_kill_and_round_trips(tmp_path: Path) -> None:
    container = CgroupsV2.prepare(v2_tree(tmp_path), "a1", Policy()).create(("fw", "t1"), TASK)
    events = container.dir / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 3\noom 0\noom_kill 0\n")
    assert container.memory_limit_reached() is None
    events.write_text("low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n")
    assert container.memory_limit_reached() == 64
    (container.dir / "cgroup.kill").write_text("")
    assert container.kill_all() and read(container.dir / "cgroup.kill") == "1"
    again = attach(container.record())
    assert isinstance(again, V2Container) and again.dir == container.dir


@pytest.mark.parametrize("record", ["", "{}", '{"isolation": "cgroups-v1", "cgroups": {"memory": "relative"}}',
                                    '{"isolation": "cgroups-v3", "cgroups": {"memory": "/a"}}',
                                    '{"isolation": "cgroups-v2", "cgroups": {"memory": "/a"}}', "[1]"])
def test_attach_refuses_what_is_not_a_record(record: str) -> None:
    with pytest.raises(ValueError, match="not a container record"):
        attach(record)


def test_the_hierarchy_is_found_from_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation.os, "geteuid", lambda: 0)
    proc = tmp_path / "proc"
    proc.mkdir()
    (tmp_path / "memory" / "own").mkdir(parents=True)
    (tmp_path / "pids" / "own").mkdir(parents=True)
    (proc / "mountinfo").write_text(f"35 31 0:32 / {tmp_path}/memory rw - cgroup cgroup rw,memory\n"
                                    f"39 31 0:36 / {tmp_path}/pids rw - cgroup cgroup rw,pids\n"
                                    f"41 31 0:38 / {tmp_path}/unified rw - cgroup2 cgroup2 rw\n")
    (proc / "cgroup").write_text("8:pids:/own\n4:memory:/own\n0::/\n")
    found = cgroups_isolator("a1", Policy(), proc)
    assert isinstance(found, CgroupsV1) and set(found.agent_dirs) == {"memory", "pids"}
    assert (tmp_path / "memory" / "own" / "bmesos" / "agent.a1").is_dir()

    (proc / "mountinfo").write_text(f"41 31 0:38 / {tmp_path}/unified rw - cgroup2 cgroup2 rw\n")
    (tmp_path / "unified").mkdir()
    with pytest.raises(IsolationUnavailable, match="no memory controller"):
        cgroups_isolator("a1", Policy(), proc)
    (tmp_path / "unified" / "cgroup.controllers").write_text("memory pids\n")
    assert isinstance(cgroups_isolator("a1", Policy(), proc), CgroupsV2)

    monkeypatch.setattr(isolation.os, "geteuid", lambda: 1000)
    with pytest.raises(IsolationUnavailable, match="not root"):
        cgroups_isolator("a1", Policy(), proc)


def test_the_default_falls_back_to_none_with_one_warning(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    def unavailable(agent_id: str, policy: Policy) -> None:
        raise IsolationUnavailable("cannot create cgroup /x: Read-only file system")

    monkeypatch.setattr(isolation, "cgroups_isolator", unavailable)
    with caplog.at_level(logging.INFO, logger="broker_mesos.agent.isolation"):
        assert isinstance(make_isolator(None, "a1", Policy()), NoIsolation)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "tasks are not isolated" in warnings[0] and "Read-only file system" in warnings[0]

    caplog.clear()
    with pytest.raises(ConfigError, match="--isolation cgroups: cannot create cgroup /x"):
        make_isolator("cgroups", "a1", Policy())
    assert isinstance(make_isolator("none", "a1", Policy()), NoIsolation)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a task joins its cgroups as root, then switches user")
def test_a_task_joins_its_cgroups_itself_before_it_execs_and_its_release_reports_the_oom(tmp_path: Path) -> None:
    """The command executor over a fake v1 tree: the task's own pid lands in every procs file (written by
    ``SWITCH_USER``, not by the supervisor), the record goes into its checkpoint, and an OOM kill counted in
    its cgroup when it dies of SIGKILL is what ``release`` reports."""
    bases = v1_tree(tmp_path / "cgroups")
    work = tmp_path / "work"
    executor = CommandExecutor(work, "a1", isolator=CgroupsV1.prepare(bases, "a1", Policy()))
    task = TaskInfo(task_id="t1", agent_id="a1", resources=TASK,
                    command=CommandInfo('echo $$ > pid; kill -KILL $$'))
    checkpoint.record_task(work, "fw", task)
    assert executor.launch("fw", task) is None
    container = executor.containers._live[("fw", "t1")]
    assert isinstance(container, V1Container)
    meta = checkpoint.task_meta_dir(work, "fw", "t1")
    assert attach((meta / CGROUP_FILE).read_text()).dirs == container.dirs  # type: ignore[attr-defined]
    (container.dirs["memory"] / "memory.oom_control").write_text("oom_kill 1\n")
    ended: list[tuple[tuple[str, str], int | None]] = []
    wait_for(lambda: ended.extend(executor.reap()) or ended, 10, "the task's end")
    assert ended == [(("fw", "t1"), -signal.SIGKILL)]
    pid = read(work / "frameworks" / "fw" / "tasks" / "t1" / "pid")
    supervisor = int((meta / "pid").read_text().split()[0])
    assert pid != str(supervisor)
    assert [read(Path(f)) for f in container.procs_files] == [pid] * 3
    limitation = executor.release(("fw", "t1"))
    assert limitation is not None and limitation.reason == REASON_CONTAINER_LIMITATION_MEMORY
    assert limitation.message.startswith("memory limit 64 MB reached")
    assert executor.release(("fw", "unknown")) is None


def test_the_agent_refuses_to_start_when_asked_for_cgroups_it_cannot_have(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(agent_id: str, policy: Policy) -> None:
        raise IsolationUnavailable("no memory controller: nowhere")

    monkeypatch.setattr(isolation, "cgroups_isolator", unavailable)
    args = ["--broker", "amqp://guest:guest@127.0.0.1:1/%2F", "--connect-timeout", "0.1", "--work-dir",
            str(tmp_path / "work"), "--resources", "cpus:1;mem:100", "--no-checkpoint"]
    result = CliRunner().invoke(agent, [*args, "--isolation", "cgroups"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == "Error: --isolation cgroups: no memory controller: nowhere"
    assert "--cgroups-pids-limit N" in CliRunner().invoke(agent, ["--help"]).output
    refused = CliRunner().invoke(agent, [*args, "--cgroups-pids-limit", "-1"])
    assert refused.exit_code == 2 and "Invalid value for '--cgroups-pids-limit'" in refused.output


def test_containers_are_recorded_found_again_and_removed_until_gone(tmp_path: Path) -> None:
    isolator = CgroupsV1.prepare(v1_tree(tmp_path / "cgroups"), "a1", Policy())
    stale = isolator.agent_dirs["memory"] / "framework.fw" / "task.stale"
    stale.mkdir(parents=True)  # left by an earlier agent process: swept on the first tick
    meta = tmp_path / "meta"
    meta.mkdir()
    containers = Containers(isolator, "a1")
    container = containers.create(("fw", "t1"), TASK, meta)
    assert attach((meta / CGROUP_FILE).read_text()).dirs == container.dirs  # type: ignore[attr-defined]
    (container.dirs["memory"] / "memory.oom_control").write_text("oom_kill 0\n")

    later = Containers(isolator, "a1")  # a restarted agent takes it back from the checkpoint
    later.adopt(("fw", "t1"), meta)
    assert later.release(("fw", "t1"), meta) is None  # no OOM kill; not removable yet (fake files in it)
    later.tick()
    assert not stale.exists() and container.dirs["memory"].exists()
    for d in container.dirs.values():
        for f in d.iterdir():
            f.unlink()
    later.tick()
    assert not any(d.exists() for d in container.dirs.values())
    assert later.release(("fw", "unknown"), tmp_path / "nowhere") is None
