"""Task sandboxes: ``<work_dir>/frameworks/<framework_id>/tasks/<task_id>/`` with ``stdout`` and ``stderr``.

The layout follows Mesos' so operators find a task's output where they expect it. Ids are protocol
identifiers (``[A-Za-z0-9_-]``), so they are safe as path components.

Modes: the directories above the sandboxes belong to the agent, mode 0711 (tasks pass through to their
own sandbox but list nothing); a sandbox is mode 0700 and, on an agent running as root, belongs to the
task's user, as do its ``stdout`` and ``stderr`` (0600): a task cannot read another user's sandbox. The
agent never follows a link a task may have left in its sandbox: the files are opened relative to the
directory, with ``O_NOFOLLOW``, and must be plain files with one link owned by the task's user.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

STDOUT = "stdout"
STDERR = "stderr"
PARENT_MODE = 0o711
SANDBOX_MODE = 0o700
OUTPUT_MODE = 0o600


def sandbox_dir(work_dir: Path, framework_id: str, task_id: str) -> Path:
    return work_dir / "frameworks" / framework_id / "tasks" / task_id


@dataclass
class Sandbox:
    """A task's directory and its open output files (the agent closes its copies after the spawn)."""

    path: Path
    stdout: int
    stderr: int

    def close(self) -> None:
        os.close(self.stdout)
        os.close(self.stderr)


def open_sandbox(work_dir: Path, framework_id: str, task_id: str, owner: tuple[int, int] | None = None) -> Sandbox:
    """Create the sandbox (kept if it exists: a relaunch after an agent restart appends) and open its files.

    ``owner`` (uid, gid): the task's user, when it is not the agent's (the agent runs as root); a
    sandbox an earlier run left to another user is refused (``ValueError``), never handed over."""
    path = sandbox_dir(work_dir, framework_id, task_id)
    for parent in (work_dir / "frameworks", work_dir / "frameworks" / framework_id, path.parent):
        _mkdir(parent, PARENT_MODE)
    created = _mkdir(path, SANDBOX_MODE)
    dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if owner is not None:
            if created:
                os.fchown(dir_fd, *owner)
            elif (uid := os.fstat(dir_fd).st_uid) != owner[0]:
                raise ValueError(f"sandbox {path} belongs to uid {uid}, not to the task's user (uid {owner[0]}): "
                                 "an earlier run of this task id as another user")
        stdout = _open_output(dir_fd, STDOUT, owner)
        try:
            stderr = _open_output(dir_fd, STDERR, owner)
        except BaseException:
            os.close(stdout)
            raise
    finally:
        os.close(dir_fd)
    return Sandbox(path, stdout, stderr)


def _mkdir(path: Path, mode: int) -> bool:
    """Create one directory with exactly ``mode`` (whatever the umask); False if it existed."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return False
    os.chmod(path, mode)
    return True


def _open_output(dir_fd: int, name: str, owner: tuple[int, int] | None) -> int:
    """Open ``name`` in the sandbox for appending, as a descriptor for the task (not inheritable until
    the spawn dup2s it): never through a link, never a FIFO (``O_NONBLOCK``: no open that blocks the agent)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, OUTPUT_MODE, dir_fd=dir_fd)
        created = True
    except FileExistsError:
        fd = os.open(name, flags, dir_fd=dir_fd)
        created = False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise ValueError(f"the sandbox's {name} is not a plain file")
        if owner is not None:
            if created:
                os.fchown(fd, *owner)
            elif st.st_uid != owner[0]:
                raise ValueError(f"the sandbox's {name} belongs to uid {st.st_uid}, not to the task's user")
        os.set_blocking(fd, True)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    return fd
