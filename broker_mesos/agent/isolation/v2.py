"""Cgroups v2: one cgroup per task in the unified hierarchy, below the agent's own cgroup.

memory: ``memory.max`` = the task's memory, ``memory.swap.max`` = 0 (where the kernel offers swap
accounting: swap adds no headroom), ``memory.oom.group`` = 1 (an OOM kill takes the whole task, as
Mesos destroys the container); an OOM kill shows in ``memory.events`` (``oom_kill``). cpu:
``cpu.weight`` (100 per CPU), and with the hard cap ``cpu.max`` = "quota period". pids: ``pids.max``.
Killing writes ``cgroup.kill`` (Linux 5.14+), else SIGKILLs every pid in ``cgroup.procs``.

A v2 cgroup that holds processes cannot hand controllers to children (the "no internal processes"
rule), except the root. So when the agent's own cgroup is not the root, the agent first moves itself
into a leaf of its subtree (``bmesos/agent.<id>.<8 hex>/agent``; the tasks' supervisors, its children, follow it
there) — possible only when it is alone in its cgroup, as under systemd with ``Delegate=yes`` or as a
container's only process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from pathlib import Path

from broker_mesos.agent.isolation import cgroupfs
from broker_mesos.agent.isolation.cgroupfs import IsolationUnavailable
from broker_mesos.agent.isolation.layout import ROOT, V2_CONTROLLERS, agent_subtree, task_subpath
from broker_mesos.agent.isolation.limits import Policy, megabytes, task_limits
from broker_mesos.core.agent_state import TaskKey
from broker_mesos.core.resources import Resources

SUBTREE_CONTROL = "cgroup.subtree_control"
AGENT_LEAF = "agent"


def controllers(directory: Path) -> list[str]:
    """The controllers available in a v2 cgroup (its ``cgroup.controllers``); none if unreadable."""
    try:
        return cgroupfs.read(directory / "cgroup.controllers").split()
    except OSError:
        return []


class V2Container:
    """A task's cgroup in the unified hierarchy."""

    kind = "cgroups-v2"
    unified = "unified"  # its key in the record

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    @property
    def procs_files(self) -> tuple[str, ...]:
        return (str(self.dir / cgroupfs.PROCS),)

    def record(self) -> str:
        return json.dumps({"isolation": self.kind, "cgroups": {self.unified: str(self.dir)}})

    def add(self, pid: int) -> None:
        cgroupfs.join(self.procs_files, pid)

    def kill_all(self) -> bool:
        kill = self.dir / "cgroup.kill"
        if kill.exists():
            try:
                cgroupfs.write(kill, 1)
            except FileNotFoundError:
                return True
            return not cgroupfs.procs(self.dir)  # the kernel kills them all; they are gone by a next try
        return cgroupfs.kill_procs(self.dir)

    def memory_limit_reached(self) -> float | None:
        if cgroupfs.read_keyed(self.dir / "memory.events").get("oom_kill", 0) <= 0:
            return None
        try:
            text = cgroupfs.read(self.dir / "memory.max").strip()
        except OSError:
            return None
        return megabytes(int(text)) if text.isdigit() else None

    def usage(self) -> tuple[float | None, int | None]:
        """(CPU seconds, memory bytes) the task has used / uses now: ``cpu.stat`` ``usage_usec`` and
        ``memory.current``; None if unreadable (the cgroup is gone)."""
        usec = cgroupfs.read_keyed(self.dir / "cpu.stat").get("usage_usec")
        try:
            memory: int | None = int(cgroupfs.read(self.dir / "memory.current").split()[0])
        except (OSError, ValueError, IndexError):
            memory = None
        return (usec / 1e6 if usec is not None else None), memory

    def remove(self) -> bool:
        gone = cgroupfs.remove_dir(self.dir)
        cgroupfs.remove_parent_if_empty(self.dir)
        return gone


class CgroupsV2:
    """Makes ``V2Container``s below ``agent_dir`` (the agent's subtree), with ``enabled`` controllers."""

    name = "cgroups-v2"

    def __init__(self, agent_dir: Path, policy: Policy, enabled: tuple[str, ...], swap: bool, oom_group: bool
                 ) -> None:
        self.agent_dir = agent_dir
        self.policy = policy
        self.enabled = enabled
        self.swap = swap            # memory.swap.max exists
        self.oom_group = oom_group  # memory.oom.group exists

    @classmethod
    def prepare(cls, base: Path, agent_id: str, policy: Policy) -> CgroupsV2:
        """Create the agent's subtree below its own cgroup ``base`` and hand it the controllers."""
        available = controllers(base)
        enabled = tuple(c for c in V2_CONTROLLERS if c in available)
        if "memory" not in enabled:
            raise IsolationUnavailable(f"cgroup v2: the memory controller is not available in {base}")
        subtree = base / agent_subtree(agent_id)
        try:
            subtree.mkdir(parents=True, exist_ok=True)
            if (base / "cgroup.type").exists():  # not the root cgroup: its processes must move out first
                _leave(base, subtree / AGENT_LEAF)
            for d in (base, base / ROOT, subtree):
                _enable(d, enabled)
        except OSError as exc:
            raise IsolationUnavailable(f"cgroup v2: cannot set up {subtree}: {exc.strerror or exc}") from None
        return cls(subtree, policy, enabled, (subtree / "memory.swap.max").exists(),
                   (subtree / "memory.oom.group").exists())

    def describe(self) -> str:
        caps = ["memory" + (" (swap included)" if self.swap else "")]
        if "cpu" in self.enabled:
            caps.append("cpu weight" + (" and max" if self.policy.cpu_limit else ""))
        if "pids" in self.enabled and self.policy.pids_limit:
            caps.append(f"at most {self.policy.pids_limit} pids")
        return f"cgroups v2 below {self.agent_dir} (limits: {', '.join(caps)})"

    def create(self, key: TaskKey, resources: Resources) -> V2Container:
        limits = task_limits(resources, self.policy)
        container = V2Container(self.agent_dir / task_subpath(*key))
        d = container.dir
        try:
            if not d.parent.is_dir():
                d.parent.mkdir()
                _enable(d.parent, self.enabled)
            cgroupfs.make_dir(d)
            if self.swap:
                cgroupfs.write(d / "memory.swap.max", 0)
            if self.oom_group:
                cgroupfs.write(d / "memory.oom.group", 1)
            if "pids" in self.enabled and limits.pids_max is not None:
                cgroupfs.write(d / "pids.max", limits.pids_max)
            self._write_limits(d, resources)
        except OSError:
            container.remove()
            raise
        return container

    def resize(self, container: object, resources: Resources) -> None:
        """Set a live container's memory and CPU to ``resources`` (an executor's, as its tasks come and go)."""
        if isinstance(container, V2Container):
            self._write_limits(container.dir, resources)

    def _write_limits(self, d: Path, resources: Resources) -> None:
        limits = task_limits(resources, self.policy)
        cgroupfs.write(d / "memory.max", limits.memory_bytes)
        if "cpu" in self.enabled:
            cgroupfs.write(d / "cpu.weight", limits.cpu_weight)
            if limits.cfs_quota_us is not None:
                cgroupfs.write(d / "cpu.max", f"{limits.cfs_quota_us} {limits.cfs_period_us}")

    def sweep(self, keep: Collection[TaskKey]) -> tuple[int, list[Path]]:
        return cgroupfs.sweep([self.agent_dir], keep)


def _enable(directory: Path, enabled: tuple[str, ...]) -> None:
    cgroupfs.write(directory / SUBTREE_CONTROL, " ".join("+" + c for c in enabled))


def _leave(base: Path, leaf: Path) -> None:
    """Move the agent out of ``base`` into ``leaf``, if it is alone there (else nothing can be delegated)."""
    others = set(cgroupfs.procs(base)) - {os.getpid()}
    if others:
        raise IsolationUnavailable(f"cgroup v2: the agent's cgroup {base} holds other processes ({len(others)}), "
                                   "and a v2 cgroup with processes cannot delegate controllers to child cgroups; "
                                   "run the agent alone in a delegated cgroup (systemd: Delegate=yes)")
    if cgroupfs.procs(base):
        leaf.mkdir(exist_ok=True)
        cgroupfs.write(leaf / cgroupfs.PROCS, os.getpid())
