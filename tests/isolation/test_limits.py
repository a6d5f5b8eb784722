"""The pure parts of isolation: limits from resources, names, where the agent's cgroups are, how a
limitation is reported."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from broker_mesos.agent.isolation import cgroup_name, layout, limits, own_cgroups
from broker_mesos.agent.isolation.layout import parse_keyed
from broker_mesos.agent.isolation.limits import Policy, task_limits
from broker_mesos.core.agent_state import (
    REASON_CONTAINER_LIMITATION_MEMORY,
    exit_outcome,
    limited,
    memory_limitation,
    unknown_exit,
)
from broker_mesos.core.protocol import TaskState
from broker_mesos.core.resources import Resources
from tests.core.test_layers import FORBIDDEN_IN_CORE, imports_of

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
33 31 0:30 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
"""
HYBRID_CGROUP = """\
9:name=systemd:/system.slice/bmesos.service
8:pids:/system.slice/bmesos.service
4:memory:/system.slice/bmesos.service
2:cpu,cpuacct:/system.slice/bmesos.service
1:cpuset:/
0::/system.slice/bmesos.service
"""


@pytest.mark.parametrize("module", ["limits.py", "layout.py"])
def test_the_pure_modules_stay_pure(module: str) -> None:
    path = Path(limits.__file__).parent / module
    assert not {name for name in imports_of(path) for f in FORBIDDEN_IN_CORE if name == f or name.startswith(f + ".")}


def test_limits_follow_the_resources() -> None:
    got = task_limits(Resources.of(cpus=0.5, mem=64), Policy())
    assert got.memory_bytes == 64 * 2**20 and got.memory_mb == 64
    assert (got.cpu_shares, got.cpu_weight, got.cfs_quota_us, got.pids_max) == (512, 50, None, 1024)
    capped = task_limits(Resources.of(cpus=2, mem=1024), Policy(cpu_limit=True, pids_limit=0))
    assert (capped.cpu_shares, capped.cpu_weight, capped.cfs_quota_us, capped.cfs_period_us) == (2048, 200, 200_000,
                                                                                                  100_000)
    assert capped.pids_max is None


def test_limits_have_floors_and_ceilings() -> None:
    nothing = task_limits(Resources(), Policy(cpu_limit=True))
    assert nothing.memory_bytes == int(limits.MIN_MEMORY_MB * 2**20)  # Mesos' minimum: a task needs some memory
    assert (nothing.cpu_shares, nothing.cpu_weight, nothing.cfs_quota_us) == (2, 1, 1_000)
    huge = task_limits(Resources.of(cpus=500, mem=10), Policy())
    assert huge.cpu_weight == 10_000 and huge.memory_bytes == 32 * 2**20
    assert limits.megabytes(64 * 2**20) == 64 and limits.megabytes(3 * 2**19) == 1.5


def test_the_agents_own_cgroups_in_a_hybrid_hierarchy() -> None:
    v1, v2 = own_cgroups(HYBRID_MOUNTINFO, HYBRID_CGROUP)
    service = "system.slice/bmesos.service"
    assert v1 == {"memory": Path(f"/sys/fs/cgroup/memory/{service}"),
                  "cpu": Path(f"/sys/fs/cgroup/cpu,cpuacct/{service}"),
                  "pids": Path(f"/sys/fs/cgroup/pids/{service}")}
    assert v2 == Path(f"/sys/fs/cgroup/unified/{service}")


def test_the_agents_own_cgroups_on_a_v2_machine_and_in_a_container() -> None:
    v2_only = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n"
    assert own_cgroups(v2_only, "0::/user.slice/a\n") == ({}, Path("/sys/fs/cgroup/user.slice/a"))
    # a container without a cgroup namespace: the mount shows only the container's own cgroup
    bound = "35 31 0:32 /docker/c1 /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    assert own_cgroups(bound, "4:memory:/docker/c1/inner\n") == ({"memory": Path("/sys/fs/cgroup/memory/inner")},
                                                                  None)


def test_names_cannot_meet_control_files() -> None:
    assert str(layout.agent_subtree("a1")) == "bmesos/agent.a1"
    assert str(layout.task_subpath("fw", "tasks")) == "framework.fw/task.tasks"  # "tasks" is a v1 control file
    assert layout.task_key("framework.fw", "task.tasks") == ("fw", "tasks")
    assert layout.task_key("framework.fw", "memory.max") is None
    assert layout.task_key("agent", "cgroup.procs") is None


def test_keyed_files() -> None:
    assert parse_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n") == {"oom_kill_disable": 0, "under_oom": 0,
                                                                            "oom_kill": 2}
    assert parse_keyed("low 0\nbad x\n\n") == {"low": 0}


def test_a_memory_limitation_fails_a_task_killed_by_the_oom_killer() -> None:
    oom = memory_limitation(64)
    oomed = limited(exit_outcome(-signal.SIGKILL, False), oom)
    assert (oomed.state, oomed.exit_code, oomed.reason) == (TaskState.FAILED, 137, REASON_CONTAINER_LIMITATION_MEMORY)
    assert oomed.message.startswith("memory limit 64 MB reached")
    assert limited(unknown_exit(False), oom).reason == REASON_CONTAINER_LIMITATION_MEMORY
    assert memory_limitation(1.5).message.startswith("memory limit 1.5 MB reached")


@pytest.mark.parametrize("outcome", [
    exit_outcome(-signal.SIGKILL, True),   # a kill was asked for: TASK_KILLED stays
    exit_outcome(0, False),                # it outlived the OOM kill of a child and finished
    exit_outcome(3, False),                # ... or failed on its own
    exit_outcome(-signal.SIGSEGV, False),
])
def test_a_memory_limitation_changes_nothing_else(outcome: object) -> None:
    assert limited(outcome, memory_limitation(64)) == outcome  # type: ignore[arg-type]


def test_agents_of_one_id_with_other_work_dirs_get_other_subtrees(tmp_path: Path) -> None:
    """Two clusters on one machine may both have an agent a1: their subtrees must differ, or each
    agent's start-up would kill the other's task cgroups as orphans."""
    one, two = cgroup_name("a1", tmp_path / "one"), cgroup_name("a1", tmp_path / "two")
    assert one != two and one.startswith("a1.") and two.startswith("a1.")
    assert cgroup_name("a1", tmp_path / "one") == one  # stable: a restarted agent finds its subtree
    assert cgroup_name("a1", tmp_path / "x" / ".." / "one") == one  # by the work dir's real path
