"""What each task uses, sampled for the agent's heartbeats (``HEARTBEAT.usage``, docs/protocol.md §6.2).

Per task: CPU seconds used since it started and memory in use now — from its container's cgroups when it
is isolated (``Container.usage``), else (or for what its cgroups cannot tell, e.g. no ``cpuacct`` in a
v1 cpu hierarchy) from its process tree below its supervisor (psutil: user + system time of every live
process, plus what their reaped children used; the sum of their RSS) — and the size of its sandbox
(``sandbox.disk_usage``).

Bounded work per heartbeat, for agents with thousands of tasks: cgroup files are two small reads per
task; the process tree costs one pass over ``/proc`` for all unisolated tasks together (their trees are
built from one pid -> parent map), then one ``oneshot`` per process in a task's tree; sandboxes are
walked at most every ``DISK_MIN_AGE`` seconds each, stalest first, and for at most ``DISK_BUDGET``
seconds per sample (at least one sandbox), the rest reusing their last size. A sample asked for sooner
than ``MIN_SAMPLE_INTERVAL`` after the last one reuses it when it covers every task (heartbeats every
50 ms must not walk ``/proc`` 20 times a second).

Sampling never fails: a task that just ended, a cgroup or process that vanished, a sandbox that cannot
be read keeps its last value (0 if it never had one). The master only keeps and sums these numbers; it
never allocates by them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import psutil

from broker_mesos.agent.sandbox import disk_usage, sandbox_dir
from broker_mesos.core.agent_state import TaskKey
from broker_mesos.core.protocol import MAX_USAGE, AgentTask, Usage

log = logging.getLogger(__name__)

MB = float(2**20)
MIN_SAMPLE_INTERVAL = 1.0  # seconds: a sample asked for sooner reuses the last one (when it covers every task)
DISK_MIN_AGE = 30.0  # seconds a sandbox's measured size is reused before it is walked again
DISK_BUDGET = 0.05  # seconds of sandbox walking per sample, at most (at least one sandbox is walked)


class UsageSampler:
    """Samples the usage of an executor's tasks. ``executor``: any executor; only a ``CommandExecutor``'s
    tasks (its ``containers`` and supervisor process groups) have CPU and memory to measure."""

    def __init__(self, executor: Any, work_dir: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.executor = executor
        self.work_dir = work_dir
        self.clock = clock
        self._cpu_mem: dict[TaskKey, tuple[float, float]] = {}  # last (CPU seconds, memory MB) per task
        self._disk: dict[TaskKey, tuple[float, float]] = {}  # (measured at, MB) per task
        self._sampled_at: float | None = None

    def sample(self, tasks: Sequence[AgentTask]) -> Usage:
        """Usage columns aligned with ``tasks`` (item i of each is about ``tasks[i]``)."""
        keys = [(t.framework_id, t.task_id) for t in tasks]
        now = self.clock()
        fresh = self._sampled_at is not None and now - self._sampled_at < MIN_SAMPLE_INTERVAL
        if not (fresh and all(k in self._cpu_mem and k in self._disk for k in keys)):
            self._sampled_at = now
            self._sample_cpu_mem(keys)
            self._sample_disks(keys, now)
        cpu_mem = [self._cpu_mem.get(k, (0.0, 0.0)) for k in keys]
        return Usage([c for c, _ in cpu_mem], [m for _, m in cpu_mem], [self._disk.get(k, (0.0, 0.0))[1] for k in keys])

    # -- CPU and memory -------------------------------------------------------------------------
    def _sample_cpu_mem(self, keys: list[TaskKey]) -> None:
        containers = getattr(self.executor, "containers", None)
        # the supervisor of each running task (its process group leader); executor.py keeps no public view
        supervisors: dict[TaskKey, int] = getattr(self.executor, "_pgid", {})
        last, self._cpu_mem = self._cpu_mem, {}
        by_tree: list[tuple[TaskKey, int, float | None, float | None]] = []
        for key in keys:
            cpu, mem_bytes = containers.usage(key) if containers is not None else (None, None)
            mem = mem_bytes / MB if mem_bytes is not None else None
            pid = supervisors.get(key)
            if (cpu is None or mem is None) and pid is not None:
                by_tree.append((key, pid, cpu, mem))
            else:
                self._keep(key, cpu, mem, last)
        if not by_tree:
            return
        trees = process_trees(pid for _, pid, _, _ in by_tree)
        for key, pid, cpu, mem in by_tree:
            measured = tree_usage(trees.get(pid, []))
            if measured is not None:
                cpu = cpu if cpu is not None else measured[0]
                mem = mem if mem is not None else measured[1] / MB
            self._keep(key, cpu, mem, last)

    def _keep(self, key: TaskKey, cpu: float | None, mem: float | None,
              last: dict[TaskKey, tuple[float, float]]) -> None:
        before = last.get(key, (0.0, 0.0))
        self._cpu_mem[key] = (_bounded(cpu, before[0]), _bounded(mem, before[1]))

    # -- sandboxes ------------------------------------------------------------------------------
    def _sample_disks(self, keys: list[TaskKey], now: float) -> None:
        known, self._disk = self._disk, {}
        stale: list[tuple[float, TaskKey]] = []
        for key in keys:
            measured = known.get(key)
            if measured is not None:
                self._disk[key] = measured
            if measured is None or now - measured[0] >= DISK_MIN_AGE:
                stale.append((measured[0] if measured is not None else -math.inf, key))
        stale.sort(key=lambda item: item[0])  # never measured first, then the stalest
        started = time.monotonic()
        for i, (_, key) in enumerate(stale):
            if i and time.monotonic() - started > DISK_BUDGET:
                break
            try:
                size = disk_usage(sandbox_dir(self.work_dir, *key)) / MB
            except Exception:  # a sampling failure must never break a heartbeat
                log.debug("sandbox of task=%s framework=%s could not be measured", key[1], key[0], exc_info=True)
                size = None
            previous = self._disk.get(key, (now, 0.0))[1]
            self._disk[key] = (now, _bounded(size, previous))


def process_trees(roots: Iterable[int]) -> dict[int, list[psutil.Process]]:
    """root pid -> the live processes of its tree (the root first), from one pass over ``/proc``."""
    wanted = set(roots)
    procs: dict[int, psutil.Process] = {}
    children: dict[int, list[int]] = {}
    for proc in psutil.process_iter(["ppid"]):
        procs[proc.pid] = proc
        ppid = proc.info.get("ppid")
        if ppid is not None:
            children.setdefault(ppid, []).append(proc.pid)
    trees: dict[int, list[psutil.Process]] = {}
    for root in wanted:
        if root not in procs:
            continue
        tree, stack, seen = [], [root], {root}
        while stack:
            pid = stack.pop()
            tree.append(procs[pid])
            for child in children.get(pid, ()):
                if child not in seen and child in procs:
                    seen.add(child)
                    stack.append(child)
        trees[root] = tree
    return trees


def tree_usage(tree: list[psutil.Process]) -> tuple[float, int] | None:
    """(CPU seconds, RSS bytes) of a process tree: user + system time of each live process and of its
    reaped children, and the sum of their resident sets; None when none of it could be read."""
    cpu, rss, read = 0.0, 0, False
    for proc in tree:
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                memory = proc.memory_info()
        except (psutil.Error, OSError):  # ended meanwhile, or not ours to read
            continue
        cpu += times.user + times.system + times.children_user + times.children_system
        rss += memory.rss
        read = True
    return (cpu, rss) if read else None


def _bounded(value: float | None, fallback: float) -> float:
    """A value the wire accepts (finite, in [0, MAX_USAGE]); ``fallback`` when it was not measured."""
    if value is None or not math.isfinite(value):
        return fallback
    return round(min(max(value, 0.0), MAX_USAGE), 3)
