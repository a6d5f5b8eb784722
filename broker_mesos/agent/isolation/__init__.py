"""Isolation: each task gets what it was offered and no more (Mesos' cgroups isolators).

One interface, three implementations: ``cgroups-v1`` (``v1.py``), ``cgroups-v2`` (``v2.py``) and
``none`` (``none.py``: tasks share the machine freely). An ``Isolator`` makes one ``Container`` per task
(``create``) before the task is spawned; the task joins it itself, as root, before it drops to its user
and execs (``Container.procs_files``, written by the executor's switch step), so nothing of the
task ever runs outside it, while the task's supervisor stays outside (it outlives an OOM kill of the
task and records how the task ended). When the task ends the executor asks whether the kernel's OOM
killer struck in it (``memory_limit_reached``), kills whatever is left in it (``kill_all``) and removes
it (``remove``). Its ``record`` goes into the task's checkpoint so that a restarted agent can ``attach``
to it again.

``make_isolator`` picks one: ``--isolation cgroups`` (the agent's subtree must be creatable, else the
agent refuses to start), ``none``, or by default cgroups when the agent can, else none with one warning
saying why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Collection
from pathlib import Path
from typing import Protocol

from broker_mesos.agent.container_limits import cgroup_dir, find_mount, parse_mountinfo, parse_proc_cgroup
from broker_mesos.agent.isolation.cgroupfs import IsolationUnavailable
from broker_mesos.agent.isolation.layout import V1_CONTROLLERS
from broker_mesos.agent.isolation.limits import Policy
from broker_mesos.agent.isolation.none import NoIsolation
from broker_mesos.agent.isolation.v1 import CgroupsV1, V1Container
from broker_mesos.agent.isolation.v2 import CgroupsV2, V2Container, controllers
from broker_mesos.core.agent_state import TaskKey
from broker_mesos.core.errors import ConfigError
from broker_mesos.core.resources import Resources

log = logging.getLogger(__name__)

ISOLATIONS = ("cgroups", "none")
__all__ = ["ISOLATIONS", "Container", "IsolationUnavailable", "Isolator", "attach", "make_isolator", "own_cgroups"]


class Container(Protocol):
    """One task's cgroup(s), from before its spawn until it is released."""

    @property
    def procs_files(self) -> tuple[str, ...]:
        """The files a process writes its pid into to join the container (none: nothing to join)."""

    def record(self) -> str | None:
        """What the task's checkpoint keeps so that ``attach`` finds the container again."""

    def add(self, pid: int) -> None:
        """Move process ``pid`` into the container."""

    def kill_all(self) -> bool:
        """SIGKILL every process in the container; True once none is left (else try again later)."""

    def memory_limit_reached(self) -> float | None:
        """The memory limit (MB) if the kernel's OOM killer killed a process of the container, else None."""

    def usage(self) -> tuple[float | None, int | None]:
        """(CPU seconds used since it was made, memory bytes in use now), each None when the container
        cannot tell (no cgroup, no cpuacct, the cgroup is gone): the caller measures the processes instead."""

    def remove(self) -> bool:
        """Remove the container's cgroups; True once they are gone (False while processes remain)."""


class Isolator(Protocol):
    name: str

    def create(self, key: TaskKey, resources: Resources) -> Container:
        """A new container limited to ``resources``; ``OSError`` (the task fails to start) if it cannot be made."""

    def resize(self, container: Container, resources: Resources) -> None:
        """Limit a live container (made by this isolator, or attached from a record) to ``resources``
        from now on (an executor's container follows its tasks); ``OSError`` if a limit cannot be set."""

    def sweep(self, keep: Collection[TaskKey]) -> tuple[int, list[Path]]:
        """Remove this agent's empty containers of tasks not in ``keep`` (left by an earlier agent process);
        returns how many went and the cgroups that still hold processes (left alone)."""

    def describe(self) -> str:
        """One line for the agent's start-up log."""


def cgroup_name(agent_id: str, work_dir: str | os.PathLike[str]) -> str:
    """The name of an agent's cgroup subtree (``layout``): its id and a digest of its work dir's real path."""
    digest = hashlib.sha256(os.fsencode(os.path.realpath(work_dir))).hexdigest()[:8]
    return f"{agent_id}.{digest}"


def make_isolator(isolation: str | None, agent_id: str, policy: Policy, name: str | None = None) -> Isolator:
    """``isolation``: "cgroups", "none", or None (cgroups when this agent can, else none, with one warning);
    ``name``: its cgroup subtree's (``cgroup_name``; default the agent id)."""
    if isolation == "none":
        log.info("agent %s: tasks are not isolated (--isolation none)", agent_id)
        return NoIsolation()
    if isolation not in (None, "cgroups"):
        raise ConfigError(f"unknown isolation {isolation!r} (choose from {', '.join(ISOLATIONS)})")
    try:
        isolator = cgroups_isolator(name or agent_id, policy)
    except IsolationUnavailable as exc:
        if isolation == "cgroups":
            raise ConfigError(f"--isolation cgroups: {exc}") from None
        log.warning("agent %s: tasks are not isolated, they may use any amount of this machine's memory and CPU: %s "
                    "(--isolation none says this is intended)", agent_id, exc)
        return NoIsolation()
    log.info("agent %s: tasks run in %s", agent_id, isolator.describe())
    return isolator


def cgroups_isolator(agent_id: str, policy: Policy, proc: Path = Path("/proc/self")) -> Isolator:
    """The cgroups isolator for the hierarchy this agent is in: v1 when memory is a v1 controller (hybrid
    machines too), else v2; its subtree is created. ``IsolationUnavailable`` says why not."""
    if os.geteuid() != 0:
        raise IsolationUnavailable(f"the agent runs as uid {os.geteuid()}, not root (tasks join their cgroups as "
                                   "root, before they switch to their user)")
    try:
        v1, v2 = own_cgroups((proc / "mountinfo").read_text(), (proc / "cgroup").read_text())
    except OSError as exc:
        raise IsolationUnavailable(f"cannot read {exc.filename}: {exc.strerror}") from None
    if "memory" in v1:
        return CgroupsV1.prepare(v1, agent_id, policy)
    if v2 is not None and "memory" in controllers(v2):
        return CgroupsV2.prepare(v2, agent_id, policy)
    raise IsolationUnavailable("no memory controller: neither a cgroup v1 memory hierarchy nor a cgroup2 mount "
                               "offering memory shows this agent's cgroup")


def own_cgroups(mountinfo: str, proc_cgroup: str) -> tuple[dict[str, Path], Path | None]:
    """The directories of a process' own cgroups (from its ``/proc/<pid>/mountinfo`` and ``cgroup``):
    per v1 controller a task may join, and in the cgroup2 hierarchy."""
    mounts = parse_mountinfo(mountinfo)
    v1: dict[str, Path] = {}
    v2: Path | None = None
    for entry in parse_proc_cgroup(proc_cgroup):
        mount = find_mount(entry, mounts)
        if mount is None:
            continue
        where = Path(cgroup_dir(mount, entry.path))
        if entry.v2:
            v2 = where
        v1.update({c: where for c in V1_CONTROLLERS if c in entry.controllers})
    return v1, v2


def attach(record: str) -> Container:
    """The container a checkpoint recorded (``Container.record``); ``ValueError`` if it is not one."""
    try:
        data = json.loads(record)
        kind, cgroups = data["isolation"], data["cgroups"]
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"not a container record: {exc}") from None
    if not isinstance(cgroups, dict) or not all(isinstance(p, str) and os.path.isabs(p) for p in cgroups.values()):
        raise ValueError("not a container record: bad cgroup paths")
    paths = {str(name): Path(p) for name, p in cgroups.items()}
    if kind == V1Container.kind and "memory" in paths:
        return V1Container(paths)
    if kind == V2Container.kind and set(paths) == {V2Container.unified}:
        return V2Container(paths[V2Container.unified])
    raise ValueError(f"not a container record: isolation {kind!r}")
