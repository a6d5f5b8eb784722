"""Cgroups v1: one cgroup per task in each of the memory, cpu and pids hierarchies (cpu and pids when
mounted), below the agent's own cgroup there.

memory: ``memory.limit_in_bytes`` = the task's memory, and ``memory.memsw.limit_in_bytes`` the same
when the kernel accounts swap (so swap adds no headroom); an OOM kill shows in ``memory.oom_control``
(``oom_kill``, Linux 4.13+; before that, ``memory.failcnt`` says the limit was hit). cpu:
``cpu.shares``, and with the hard cap ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``. pids:
``pids.max``. Killing is SIGKILL to every pid in ``cgroup.procs`` until it is empty (no freezer: the
pids cap bounds how much a task can fork meanwhile).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path

from broker_mesos.agent.isolation import cgroupfs
from broker_mesos.agent.isolation.cgroupfs import IsolationUnavailable
from broker_mesos.agent.isolation.layout import V1_CONTROLLERS, agent_subtree, task_subpath
from broker_mesos.agent.isolation.limits import Policy, megabytes, task_limits
from broker_mesos.core.agent_state import TaskKey
from broker_mesos.core.resources import Resources


class V1Container:
    """A task's cgroups, one per hierarchy (``dirs``: controller -> directory; memory is always there)."""

    kind = "cgroups-v1"

    def __init__(self, dirs: Mapping[str, Path]) -> None:
        self.dirs = dict(dirs)

    @property
    def procs_files(self) -> tuple[str, ...]:
        return tuple(str(d / cgroupfs.PROCS) for d in self.dirs.values())

    def record(self) -> str:
        return json.dumps({"isolation": self.kind, "cgroups": {c: str(d) for c, d in self.dirs.items()}})

    def add(self, pid: int) -> None:
        cgroupfs.join(self.procs_files, pid)

    def kill_all(self) -> bool:
        return all([cgroupfs.kill_procs(d) for d in self.dirs.values()])

    def memory_limit_reached(self) -> float | None:
        memory = self.dirs["memory"]
        oom = cgroupfs.read_keyed(memory / "memory.oom_control")
        if "oom_kill" in oom:
            hit = oom["oom_kill"] > 0
        else:  # kernels before 4.13 count no OOM kills: the limit was hit, at least
            hit = oom.get("under_oom", 0) > 0 or _read_int(memory / "memory.failcnt") > 0
        limit = _read_int(memory / "memory.limit_in_bytes")
        return megabytes(limit) if hit and limit > 0 else None

    def usage(self) -> tuple[float | None, int | None]:
        """(CPU seconds, memory bytes) the task has used / uses now: ``cpuacct.usage`` when the cpu
        hierarchy also holds cpuacct (``cpu,cpuacct``), ``memory.usage_in_bytes``; None if unreadable."""
        cpu_ns = _read_optional(self.dirs["cpu"] / "cpuacct.usage") if "cpu" in self.dirs else None
        return (cpu_ns / 1e9 if cpu_ns is not None else None,
                _read_optional(self.dirs["memory"] / "memory.usage_in_bytes"))

    def remove(self) -> bool:
        gone = [cgroupfs.remove_dir(d) for d in self.dirs.values()]
        for d in self.dirs.values():
            cgroupfs.remove_parent_if_empty(d)
        return all(gone)


class CgroupsV1:
    """Makes ``V1Container``s below ``agent_dirs`` (controller -> the agent's subtree in that hierarchy)."""

    name = "cgroups-v1"

    def __init__(self, agent_dirs: Mapping[str, Path], policy: Policy, memsw: bool) -> None:
        self.agent_dirs = dict(agent_dirs)
        self.policy = policy
        self.memsw = memsw  # the kernel accounts swap: memory.memsw.limit_in_bytes exists

    @classmethod
    def prepare(cls, bases: Mapping[str, Path], agent_id: str, policy: Policy) -> CgroupsV1:
        """Create the agent's subtree below its own cgroup (``bases``: controller -> that directory)."""
        dirs = {c: bases[c] / agent_subtree(agent_id) for c in V1_CONTROLLERS if c in bases}
        if "memory" not in dirs:
            raise IsolationUnavailable("no cgroup v1 memory hierarchy")
        for d in dirs.values():
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise IsolationUnavailable(f"cannot create cgroup {d}: {exc.strerror}") from None
        return cls(dirs, policy, (dirs["memory"] / "memory.memsw.limit_in_bytes").exists())

    def describe(self) -> str:
        caps = ["memory" + (" (swap included)" if self.memsw else "")]
        if "cpu" in self.agent_dirs:
            caps.append("cpu shares" + (" and quota" if self.policy.cpu_limit else ""))
        if "pids" in self.agent_dirs and self.policy.pids_limit:
            caps.append(f"at most {self.policy.pids_limit} pids")
        return f"cgroups v1 below {self.agent_dirs['memory']} (limits: {', '.join(caps)})"

    def create(self, key: TaskKey, resources: Resources) -> V1Container:
        limits = task_limits(resources, self.policy)
        container = V1Container({c: d / task_subpath(*key) for c, d in self.agent_dirs.items()})
        dirs = container.dirs
        try:
            for d in dirs.values():
                cgroupfs.make_dir(d)
            self._write_limits(dirs, resources, growing=False)  # from unlimited: memory first
            if "pids" in dirs and limits.pids_max is not None:
                cgroupfs.write(dirs["pids"] / "pids.max", limits.pids_max)
        except OSError:
            container.remove()
            raise
        return container

    def resize(self, container: object, resources: Resources) -> None:
        """Set a live container's memory and CPU to ``resources`` (an executor's, as its tasks come and go)."""
        if isinstance(container, V1Container):
            old = _read_int(container.dirs["memory"] / "memory.limit_in_bytes")
            self._write_limits(container.dirs, resources,
                               growing=task_limits(resources, self.policy).memory_bytes >= old)

    def _write_limits(self, dirs: Mapping[str, Path], resources: Resources, growing: bool) -> None:
        """v1 refuses a memory limit above memsw's, and memsw below memory's: the order follows the move."""
        limits = task_limits(resources, self.policy)
        memory = [("memory.limit_in_bytes", limits.memory_bytes)]
        if self.memsw:
            memsw = ("memory.memsw.limit_in_bytes", limits.memory_bytes)
            memory = [memsw, *memory] if growing else [*memory, memsw]
        for name, value in memory:
            cgroupfs.write(dirs["memory"] / name, value)
        if "cpu" in dirs:
            cgroupfs.write(dirs["cpu"] / "cpu.shares", limits.cpu_shares)
            if limits.cfs_quota_us is not None:
                cgroupfs.write(dirs["cpu"] / "cpu.cfs_period_us", limits.cfs_period_us)
                cgroupfs.write(dirs["cpu"] / "cpu.cfs_quota_us", limits.cfs_quota_us)

    def sweep(self, keep: Collection[TaskKey]) -> tuple[int, list[Path]]:
        return cgroupfs.sweep(self.agent_dirs.values(), keep)


def _read_optional(path: Path) -> int | None:
    try:
        return int(cgroupfs.read(path).split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_int(path: Path) -> int:
    try:
        return int(cgroupfs.read(path).split()[0])
    except (OSError, ValueError, IndexError):
        return 0
