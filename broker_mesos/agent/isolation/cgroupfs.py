"""Reading and writing cgroup directories, the same way in v1 and v2 (and on a plain directory tree in
tests). Every function here touches only the paths it is given."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from collections.abc import Collection, Iterable
from pathlib import Path

from broker_mesos.agent.isolation.layout import parse_keyed, task_key

log = logging.getLogger(__name__)

PROCS = "cgroup.procs"
KILL_ROUNDS = 10
KILL_ROUND_PAUSE = 0.001  # seconds for SIGKILLed processes to leave the cgroup before it is read again


class IsolationUnavailable(Exception):
    """Cgroups cannot be used here; the text says why (the agent's warning, or its refusal)."""


def write(path: Path, value: str | int) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def read(path: Path) -> str:
    with open(path) as f:
        return f.read()


def read_keyed(path: Path) -> dict[str, int]:
    """A flat-keyed file; empty when it cannot be read (the cgroup is gone)."""
    try:
        return parse_keyed(read(path))
    except OSError:
        return {}


def procs(directory: Path) -> list[int]:
    """The processes in a cgroup; none when it is gone."""
    try:
        return [int(pid) for pid in read(directory / PROCS).split()]
    except (OSError, ValueError):
        return []


def join(procs_files: Iterable[str], pid: int) -> None:
    for path in procs_files:
        write(Path(path), pid)


def kill_procs(directory: Path, rounds: int = KILL_ROUNDS) -> bool:
    """SIGKILL every process in a cgroup, again (a process may fork meanwhile) until none is left or
    ``rounds`` rounds passed; True once it is empty. A cgroup whose pids are capped can only fork so
    much, so this ends: the caller tries again later when it returns False."""
    for _ in range(rounds):
        pids = procs(directory)
        if not pids:
            return True
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(KILL_ROUND_PAUSE)
    return not procs(directory)


def make_dir(path: Path) -> None:
    """Create a cgroup (and its parents); a leftover one of the same name is removed first, so a task
    never inherits another's limits or counters (it fails if the leftover still holds processes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()
    except FileExistsError:
        path.rmdir()
        path.mkdir()


def remove_dir(path: Path) -> bool:
    """rmdir a cgroup; True once it is gone. It fails (False) while processes are still in it."""
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError as exc:
        if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
            log.warning("cannot remove cgroup %s: %s", path, exc.strerror)
        return False
    return True


def remove_parent_if_empty(path: Path) -> None:
    """Remove a task's framework cgroup once its last task cgroup is gone (fails quietly otherwise)."""
    with contextlib.suppress(OSError):
        path.parent.rmdir()


def sweep(agent_dirs: Iterable[Path], keep: Collection[tuple[str, str]]) -> tuple[int, list[Path]]:
    """Remove the task cgroups of an agent's subtree that are not in ``keep`` (tasks the agent still
    knows): those left by tasks whose end an earlier agent process never cleaned up. Returns how many
    were removed and the ones that still hold processes (left alone)."""
    removed, busy = 0, []
    for agent_dir in agent_dirs:
        for task_dir in sorted(agent_dir.glob("*/*")):
            key = task_key(task_dir.parent.name, task_dir.name)
            if key is None or key in keep or not task_dir.is_dir():
                continue
            if procs(task_dir):
                busy.append(task_dir)
            elif remove_dir(task_dir):
                removed += 1
                remove_parent_if_empty(task_dir)
    return removed, busy
