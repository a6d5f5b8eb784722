"""No isolation (``--isolation none``): tasks share the machine; a task's process group is all the
executor can kill."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from broker_mesos.core.agent_state import TaskKey
from broker_mesos.core.resources import Resources


class Unconfined:
    """The container of a task that is not isolated: nothing to join, kill, measure or remove."""

    procs_files: tuple[str, ...] = ()

    def record(self) -> None:
        return None

    def add(self, pid: int) -> None:
        return None

    def kill_all(self) -> bool:
        return True

    def memory_limit_reached(self) -> None:
        return None

    def usage(self) -> tuple[None, None]:
        return None, None

    def remove(self) -> bool:
        return True


class NoIsolation:
    name = "none"

    def create(self, key: TaskKey, resources: Resources) -> Unconfined:
        return Unconfined()

    def resize(self, container: object, resources: Resources) -> None:
        return None

    def sweep(self, keep: Collection[TaskKey]) -> tuple[int, list[Path]]:
        return 0, []

    def describe(self) -> str:
        return "no isolation"
