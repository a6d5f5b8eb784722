"""What a task's cgroup is set to, from the resources it was given (pure: no I/O).

Mesos' rules: memory is a hard limit of the task's ``mem`` (at least ``MIN_MEMORY_MB``), swap adds no
headroom; CPU is a weight proportional to ``cpus`` (v1 ``cpu.shares`` = 1024 per CPU, v2 ``cpu.weight``
= 100 per CPU, the kernel's default for one CPU's worth) and, with the operator's hard cap, a CFS quota of
``cpus`` CPU periods; the number of processes and threads is capped by ``pids_limit`` (0: no cap).
"""

from __future__ import annotations

from dataclasses import dataclass

from broker_mesos.core.resources import Resources

MIN_MEMORY_MB = 32.0
"""The smallest memory limit (Mesos' ``MIN_MEMORY``): a task offered less, or none, gets this much."""
DEFAULT_PIDS_LIMIT = 1024
CPU_SHARES_PER_CPU = 1024
MIN_CPU_SHARES = 2  # the kernel's minimum
CPU_WEIGHT_PER_CPU = 100
CPU_WEIGHT_RANGE = (1, 10_000)  # the kernel's bounds
CFS_PERIOD_US = 100_000
MIN_CFS_QUOTA_US = 1_000  # the kernel's minimum


@dataclass(frozen=True, slots=True)
class Policy:
    """The agent operator's choices (``--cgroups-cpu-limit``, ``--cgroups-pids-limit``)."""

    cpu_limit: bool = False
    pids_limit: int = DEFAULT_PIDS_LIMIT


@dataclass(frozen=True, slots=True)
class TaskLimits:
    memory_bytes: int
    cpu_shares: int
    cpu_weight: int
    cfs_quota_us: int | None  # None: no hard cap
    pids_max: int | None      # None: no cap ("max")
    cfs_period_us: int = CFS_PERIOD_US

    @property
    def memory_mb(self) -> float:
        return self.memory_bytes / 2**20


def task_limits(resources: Resources, policy: Policy) -> TaskLimits:
    cpus = resources.scalar("cpus")
    mem = max(resources.scalar("mem"), MIN_MEMORY_MB)
    low, high = CPU_WEIGHT_RANGE
    return TaskLimits(
        memory_bytes=int(mem * 2**20),
        cpu_shares=max(MIN_CPU_SHARES, int(cpus * CPU_SHARES_PER_CPU)),
        cpu_weight=min(high, max(low, round(cpus * CPU_WEIGHT_PER_CPU))),
        cfs_quota_us=max(MIN_CFS_QUOTA_US, int(cpus * CFS_PERIOD_US)) if policy.cpu_limit else None,
        pids_max=policy.pids_limit or None,
    )


def megabytes(limit_bytes: int) -> float:
    """A memory limit in MB, as the task asked for it (64 MB, not 67108864 bytes)."""
    return round(limit_bytes / 2**20, 3)
