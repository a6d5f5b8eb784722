"""The limits of the container the agent runs in: its cgroups' cpu quota and memory limit, its cpu affinity.

An agent in a container with ``cpus: 1.5`` / ``mem_limit: 512m`` must offer 1.5 cpus and 512 MB, not the
host's totals (psutil's counts ignore cgroups and cpusets), or ``--scale agent=N`` over-commits the host.

Where the limits are read (``read_cgroup_limits``, from a ``root`` so tests can hand it a fake tree):

- ``/proc/self/cgroup`` names this process's cgroup in each hierarchy (``ID:CONTROLLERS:PATH``; ``0::PATH``
  is cgroup v2) and ``/proc/self/mountinfo`` where each hierarchy is mounted (with the mount's root, which
  in a container is often the container's own cgroup);
- cgroup v2: ``cpu.max`` (``QUOTA PERIOD``, or ``max PERIOD`` = none) and ``memory.max`` (bytes or ``max``);
- cgroup v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1 = none) and ``memory.limit_in_bytes``
  (no limit reads as a huge number: ``advertised_mem`` counts only limits below the host's RAM);
- every file is read in the process's cgroup and in each ancestor up to the mount point, since a limit on
  a parent binds its children (a container runtime may put the limit there): the most restrictive wins.
  v1 and v2 are both read (hybrid hosts) and the most restrictive of all wins. Missing or unreadable files
  are no limit.

What is advertised (``advertised_cpus``, ``advertised_mem``: numbers in, numbers and a reason out):

- cpus = min(logical cpus, cpus in the affinity mask (a cpuset), quota / period), a quota rounded down to a
  multiple of 0.1 cpu (computed in integers, so 150000/100000 is exactly 1.5) so the agent never offers
  more than it may use; a quota below 0.1 cpu therefore offers no cpus at all;
- mem = min(host RAM, cgroup memory limit) in MB, rounded down.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

MB = 1024 * 1024

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class CgroupEntry:
    """One line of /proc/self/cgroup: ``controllers`` empty for cgroup v2 (``0::PATH``)."""

    hierarchy: str
    controllers: frozenset[str]
    path: str

    @property
    def v2(self) -> bool:
        return self.hierarchy == "0" and not self.controllers


@dataclass(frozen=True)
class CgroupMount:
    """A cgroup hierarchy's mount: ``root`` is the cgroup mounted at ``mount_point``."""

    root: str
    mount_point: str
    version: int
    options: frozenset[str]  # super options: a v1 mount's controllers are among them


@dataclass(frozen=True)
class CpuQuota:
    quota: int   # microseconds of cpu time per period
    period: int
    where: str   # the cgroup directory that sets it

    def tenths(self) -> int:
        """Whole tenths of a cpu the quota allows, rounded down."""
        return self.quota * 10 // self.period


@dataclass(frozen=True)
class MemoryLimit:
    limit: int   # bytes
    where: str


@dataclass(frozen=True)
class CgroupLimits:
    cpu: CpuQuota | None = None
    memory: MemoryLimit | None = None


# -- parsing: text in, values out ------------------------------------------------------------------


def parse_proc_cgroup(text: str) -> list[CgroupEntry]:
    """``/proc/self/cgroup``: ``4:memory:/docker/abc``, ``2:cpu,cpuacct:/``, ``0::/user.slice``."""
    entries = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        entries.append(CgroupEntry(hierarchy, frozenset(c for c in controllers.split(",") if c), path))
    return entries


def _unescape(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m[1], 8)), field)


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """The cgroup (v1) and cgroup2 mounts of ``/proc/self/mountinfo``.

    A line: ``ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS``.
    """
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < sep + 2:
            continue
        fstype = fields[sep + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        options = frozenset(fields[sep + 3].split(",")) if len(fields) > sep + 3 else frozenset()
        mounts.append(CgroupMount(_unescape(fields[3]), _unescape(fields[4]), 2 if fstype == "cgroup2" else 1,
                                  options))
    return mounts


def parse_cpu_max(text: str) -> tuple[int, int] | None:
    """cgroup v2 ``cpu.max``: ``"150000 100000"`` -> (150000, 100000); ``"max 100000"`` -> None."""
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    quota, period = int(parts[0]), int(parts[1]) if len(parts) > 1 else 100000
    return (quota, period) if quota > 0 and period > 0 else None


def parse_cfs_quota(quota_text: str, period_text: str) -> tuple[int, int] | None:
    """cgroup v1 ``cpu.cfs_quota_us`` and ``cpu.cfs_period_us``: a quota of -1 is none."""
    quota, period = int(quota_text.strip()), int(period_text.strip())
    return (quota, period) if quota > 0 and period > 0 else None


def parse_memory_max(text: str) -> int | None:
    """cgroup v2 ``memory.max``: bytes, or None for ``max``."""
    text = text.strip()
    return None if text == "max" else int(text)


def parse_memory_limit_in_bytes(text: str) -> int:
    """cgroup v1 ``memory.limit_in_bytes``: bytes; no limit reads as a huge number (e.g. 2**63 - 4096)."""
    return int(text.strip())


# -- reading: a (possibly fake) root in, limits out -------------------------------------------------


def _under(root: Path, absolute: str) -> Path:
    return root / absolute.lstrip("/")


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _norm(path: str) -> str:
    """An absolute, normalised cgroup path (``..`` cannot climb above ``/``; no POSIX ``//``)."""
    return posixpath.normpath("/" + path.strip().lstrip("/"))


def cgroup_dir(mount: CgroupMount, path: str) -> str:
    """Where the cgroup ``path`` (from /proc/self/cgroup) is in ``mount``'s tree.

    In a container the mount's root is usually the container's own cgroup (``/docker/ID``, or ``/`` with
    a cgroup namespace); a path outside what is mounted means the mount point is as close as we can see.
    """
    path, root = _norm(path), _norm(mount.root)
    if root == "/":
        rel = path
    elif path == root or path.startswith(root + "/"):
        rel = path[len(root):]
    else:
        return mount.mount_point
    joined = posixpath.normpath(posixpath.join(mount.mount_point, rel.lstrip("/")))
    if joined != mount.mount_point and not joined.startswith(mount.mount_point.rstrip("/") + "/"):
        return mount.mount_point
    return joined


def find_mount(entry: CgroupEntry, mounts: list[CgroupMount]) -> CgroupMount | None:
    """The mount of ``entry``'s hierarchy (v2, or v1 with its controllers) that shows its cgroup best."""
    if entry.v2:
        candidates = [m for m in mounts if m.version == 2]
    else:
        candidates = [m for m in mounts if m.version == 1 and entry.controllers and entry.controllers <= m.options]
    if not candidates:
        return None
    path = _norm(entry.path)

    def fit(mount: CgroupMount) -> int:  # the mount whose root is the longest prefix of our path
        root = _norm(mount.root)
        return len(root) if root == "/" or path == root or path.startswith(root + "/") else -1
    return max(candidates, key=fit)


def _ancestors(leaf: str, mount_point: str) -> list[str]:
    """``leaf`` and its parents up to ``mount_point``, inclusive, leaf first."""
    dirs = [leaf]
    while dirs[-1] != mount_point and dirs[-1] not in ("/", ""):
        dirs.append(posixpath.dirname(dirs[-1]))
    return dirs


def _tighter_cpu(a: CpuQuota | None, b: CpuQuota | None) -> CpuQuota | None:
    if a is None or b is None:
        return a or b
    return b if b.quota * a.period < a.quota * b.period else a


def _tighter_mem(a: MemoryLimit | None, b: MemoryLimit | None) -> MemoryLimit | None:
    if a is None or b is None:
        return a or b
    return b if b.limit < a.limit else a


def _limits_in(directory: str, real: Path, version: int, controllers: frozenset[str]) -> CgroupLimits:
    cpu = memory = None
    try:
        if version == 2:
            text = _read(real / "cpu.max")
            quota = parse_cpu_max(text) if text is not None else None
            cpu = CpuQuota(*quota, directory) if quota else None
            text = _read(real / "memory.max")
            limit = parse_memory_max(text) if text is not None else None
            memory = MemoryLimit(limit, directory) if limit is not None else None
        else:
            if "cpu" in controllers:
                quota_text, period_text = _read(real / "cpu.cfs_quota_us"), _read(real / "cpu.cfs_period_us")
                if quota_text is not None and period_text is not None:
                    quota = parse_cfs_quota(quota_text, period_text)
                    cpu = CpuQuota(*quota, directory) if quota else None
            if "memory" in controllers:
                text = _read(real / "memory.limit_in_bytes")
                memory = MemoryLimit(parse_memory_limit_in_bytes(text), directory) if text is not None else None
    except (ValueError, IndexError):  # a file we do not understand limits nothing
        pass
    return CgroupLimits(cpu, memory)


def read_cgroup_limits(root: str | os.PathLike[str] = "/") -> CgroupLimits:
    """The tightest cpu quota and memory limit over this process's cgroups and their ancestors.

    ``root`` is where ``/proc`` and the cgroup mounts are found (``/`` but in tests). Without
    ``/proc/self/cgroup`` (not Linux) there are no limits.
    """
    root = Path(root)
    proc_cgroup, mountinfo = _read(root / "proc/self/cgroup"), _read(root / "proc/self/mountinfo")
    if proc_cgroup is None or mountinfo is None:
        return CgroupLimits()
    mounts = parse_mountinfo(mountinfo)
    cpu: CpuQuota | None = None
    memory: MemoryLimit | None = None
    for entry in parse_proc_cgroup(proc_cgroup):
        if not (entry.v2 or {"cpu", "memory"} & entry.controllers):
            continue
        mount = find_mount(entry, mounts)
        if mount is None:
            continue
        version = 2 if entry.v2 else 1
        for directory in _ancestors(cgroup_dir(mount, entry.path), mount.mount_point):
            found = _limits_in(directory, _under(root, directory), version, entry.controllers)
            cpu, memory = _tighter_cpu(cpu, found.cpu), _tighter_mem(memory, found.memory)
    return CgroupLimits(cpu, memory)


def affinity_cpus() -> int | None:
    """How many cpus this process may run on (its cpuset / affinity mask), if the platform says."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


# -- what to advertise --------------------------------------------------------------------------------


def advertised_cpus(logical: int, affinity: int | None, quota: CpuQuota | None) -> tuple[float, str]:
    """min(logical cpus, affinity, quota rounded down to 0.1 cpu), and why (the binding limit; on a tie
    the more specific: the quota, then the affinity)."""
    cpus, reason = float(logical), f"{logical} logical cpus"
    if affinity is not None and affinity < logical:
        cpus, reason = float(affinity), f"cpu affinity: {affinity} of {logical} cpus"
    if quota is not None and quota.tenths() <= cpus * 10:
        cpus = quota.tenths() / 10
        reason = f"cgroup cpu quota {quota.quota}/{quota.period} in {quota.where}"
    return cpus, reason


def advertised_mem(host_bytes: int, limit: MemoryLimit | None) -> tuple[float, str]:
    """min(host RAM, cgroup memory limit) in MB, and why; a limit at or above the host's RAM is none."""
    if limit is not None and limit.limit < host_bytes:
        return float(limit.limit // MB), f"cgroup memory limit {limit.limit} bytes in {limit.where}"
    return float(host_bytes // MB), "host memory"
