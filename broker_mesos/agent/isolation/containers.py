"""The containers of one agent's tasks, as its executor keeps them: made at launch and recorded in the
task's checkpoint, found again from it after an agent restart, released when the task ends (what the
OOM killer did is read, what is left is killed, the cgroups removed, again on later ticks until gone)."""

from __future__ import annotations

import logging
from pathlib import Path

from broker_mesos.agent import checkpoint
from broker_mesos.agent.isolation import Container, Isolator, attach, cgroupfs
from broker_mesos.core.agent_state import Limitation, TaskKey, memory_limitation
from broker_mesos.core.resources import Resources

log = logging.getLogger(__name__)

CGROUP_FILE = "cgroup"
"""A task's container in its checkpoint directory (``Container.record``), so a restarted agent finds it."""

REMOVE_ATTEMPTS = 200
"""Ticks (the agent's reaps, 50 ms apart) during which a released container is killed and removed again."""


class Containers:
    def __init__(self, isolator: Isolator, agent_id: str) -> None:
        self.isolator = isolator
        self.agent_id = agent_id
        self._live: dict[TaskKey, Container] = {}
        self._removing: dict[TaskKey, tuple[Container, int]] = {}  # released, not gone yet: (it, attempts left)
        self._swept = False

    def create(self, key: TaskKey, resources: Resources, meta: Path) -> Container:
        """A task's new container, recorded in its checkpoint directory ``meta`` before anything joins it."""
        (meta / CGROUP_FILE).unlink(missing_ok=True)
        container = self.isolator.create(key, resources)
        self._live[key] = container
        record = container.record()
        if record is not None:
            try:
                checkpoint.write_atomically(meta / CGROUP_FILE, record.encode())
            except OSError:
                self.discard(key)
                raise
        return container

    def discard(self, key: TaskKey) -> None:
        """Remove the container of a task that could not be started."""
        container = self._live.pop(key, None)
        if container is not None and not (container.kill_all() and container.remove()):
            self._removing[key] = (container, REMOVE_ATTEMPTS)

    def adopt(self, key: TaskKey, meta: Path) -> None:
        """Take back the container of a task an earlier agent process started."""
        container = _recorded(key, meta)
        if container is not None:
            self._live[key] = container

    def resize(self, key: TaskKey, resources: Resources) -> bool:
        """Limit a live container to ``resources`` from now on; False (logged) when it cannot be."""
        container = self._live.get(key)
        if container is None:
            return False
        try:
            self.isolator.resize(container, resources)
        except OSError as exc:
            log.warning("agent %s: task=%s framework=%s: cannot resize its container to %s: %s", self.agent_id,
                        key[1], key[0], resources, exc)
            return False
        return True

    def kill(self, key: TaskKey) -> None:
        container = self._live.get(key)
        if container is not None:
            container.kill_all()

    def usage(self, key: TaskKey) -> tuple[float | None, int | None]:
        """(CPU seconds, memory bytes) of a live task's container (``Container.usage``); (None, None) for a
        task without one, or when it cannot be read."""
        container = self._live.get(key)
        if container is None:
            return None, None
        try:
            return container.usage()
        except (OSError, ValueError):
            return None, None

    def release(self, key: TaskKey, meta: Path) -> Limitation | None:
        """Release an ended task's container (its record in ``meta`` if this process never knew it); the
        limit the task reached, if any."""
        container = self._live.pop(key, None) or _recorded(key, meta)
        if container is None:
            return None
        limit_mb = container.memory_limit_reached()
        if not (container.kill_all() and container.remove()):
            self._removing[key] = (container, REMOVE_ATTEMPTS)
        return memory_limitation(limit_mb) if limit_mb is not None else None

    def tick(self) -> None:
        """Called on every reap. The first sweeps what earlier agent processes left (by then the recovery
        has adopted or released every container still wanted): empty cgroups are removed, and the
        processes of cgroups no checkpoint knows are killed first; each call retries pending removals."""
        if not self._swept:
            self._swept = True
            self._sweep()
        for key, (container, attempts) in list(self._removing.items()):
            if container.kill_all() and container.remove():
                del self._removing[key]
            elif attempts > 1:
                self._removing[key] = (container, attempts - 1)
            else:
                del self._removing[key]
                log.warning("agent %s: task=%s framework=%s: its container could not be removed (%s)", self.agent_id,
                            key[1], key[0], container.record())

    def _sweep(self) -> None:
        removed, busy = self.isolator.sweep(set(self._live) | set(self._removing))
        if removed:
            log.info("agent %s: removed %d container(s) left by ended tasks", self.agent_id, removed)
        for orphan in busy:  # a task no checkpoint of this agent knows: nobody may run outside the books
            if cgroupfs.kill_procs(orphan) and cgroupfs.remove_dir(orphan):
                cgroupfs.remove_parent_if_empty(orphan)
                log.warning("agent %s: killed the processes of %s, a task this agent does not know, and removed "
                            "its cgroup", self.agent_id, orphan)
            else:
                log.warning("agent %s: could not empty %s (a task this agent does not know): it keeps running "
                            "outside the books until the agent restarts", self.agent_id, orphan)


def _recorded(key: TaskKey, meta: Path) -> Container | None:
    path = meta / CGROUP_FILE
    try:
        return attach(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("task=%s framework=%s: %s is unreadable (%s); its container is left alone", key[1], key[0], path,
                  exc)
        return None
