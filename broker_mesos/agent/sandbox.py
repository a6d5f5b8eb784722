"""Task sandboxes: ``<work_dir>/frameworks/<framework_id>/tasks/<task_id>/`` with ``stdout`` and ``stderr``.

The layout follows Mesos' so operators find a task's output where they expect it. Ids are protocol
identifiers (``[A-Za-z0-9_-]``), so they are safe as path components.

Modes: the directories above the sandboxes belong to the agent, mode 0711 (tasks pass through to their
own sandbox but list nothing); a sandbox is mode 0700 and, on an agent running as root, belongs to the
task's user, as do its ``stdout`` and ``stderr`` (0600): a task cannot read another user's sandbox. The
agent never follows a link a task may have left in its sandbox: the files are opened relative to the
directory, with ``O_NOFOLLOW``, and must be plain files with one link owned by the task's user.

Disk: ``disk_usage`` measures what a sandbox holds (the agent's disk limit and usage reports).
Sandbox GC: ``SandboxGC`` removes finished tasks' sandboxes, with their checkpoint directories,
a delay after they ended, or earlier, oldest first, when the work dir's filesystem runs short of space.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from broker_mesos.agent import checkpoint

log = logging.getLogger(__name__)

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


# -- disk usage ------------------------------------------------------------------------------


def disk_usage(path: Path | str) -> int:
    """Bytes a sandbox tree actually uses on disk: the sum of ``st_blocks * 512`` of ``path`` and
    everything below it (so sparse files count what they hold, not their length), like ``du -sx``.

    Symbolic links are never followed (a link counts its own blocks, usually none), nothing on another
    filesystem is counted or entered (a mount below the sandbox), and a file with several hard links in
    the tree is counted once. Entries that vanish during the walk are skipped; 0 when ``path`` is gone.

    Cost: one ``lstat`` per entry (``os.scandir``, no ``stat`` of the entries' targets), i.e. O(entries
    in the tree), about 1-2 µs each with a warm dentry cache: a sandbox of a few files takes tens of µs,
    one of 100 000 files some 0.1-0.2 s. Memory: O(depth) directories open at once (iterative walk)
    plus the inodes with several links. The agent calls it every ``--disk-check-interval`` for every
    running task that has a ``disk`` resource, spread over its loop ticks (``Agent._disk_tick``).
    """
    try:
        top = os.lstat(path)
    except OSError:
        return 0
    total = top.st_blocks * 512
    if not stat.S_ISDIR(top.st_mode):
        return total
    dev = top.st_dev
    linked: set[int] = set()
    stack = [os.fspath(path)]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:  # vanished, or not ours to read
            continue
        with it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_dev != dev:
                    continue  # another filesystem mounted in the sandbox: neither counted nor entered
                if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                    if st.st_ino in linked:
                        continue
                    linked.add(st.st_ino)
                total += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
    return total


# -- sandbox garbage collection --------------------------------------------------------------


def free_percent(path: Path) -> float:
    """Percent free on the filesystem holding ``path``, as unprivileged users see it: of its blocks or of
    its inodes, whichever is scarcer (many small sandboxes exhaust inodes first)."""
    st = os.statvfs(path)
    blocks = 100.0 * st.f_bavail / st.f_blocks if st.f_blocks else 100.0
    inodes = 100.0 * st.f_favail / st.f_files if st.f_files else 100.0
    return min(blocks, inodes)


GC_MAX_PER_RUN = 1000


class SandboxGC:
    """Finished tasks, oldest first, whose sandbox and checkpoint directory go once they are ``delay``
    seconds old, or earlier, oldest first, while the work dir's filesystem has less than ``min_free``
    percent free (Mesos' ``--gc_delay`` and its disk-watch).

    The agent tells it of each task that ended (``finished``, in order) and it keeps them in a queue,
    seeded from the checkpoint's ``done`` marks at start (``seed``): a ``collect`` costs O(removed), one
    ``statvfs`` per removal while space is short, and removes at most ``max_per_run`` tasks (the rest
    waits for the next run). ``free`` is injectable (tests).
    """

    def __init__(self, work_dir: Path, delay: float, min_free: float,
                 free: Callable[[Path], float] = free_percent, max_per_run: int = GC_MAX_PER_RUN) -> None:
        self.work_dir = work_dir
        self.delay = delay
        self.min_free = min_free
        self.free = free
        self.max_per_run = max_per_run
        self._queue: collections.deque[tuple[float, str, str]] = collections.deque()

    def __len__(self) -> int:
        return len(self._queue)

    def seed(self) -> None:
        """Queue every finished task the checkpoint knows of (its ``done`` mark's time), oldest first."""
        self._queue = collections.deque(sorted(checkpoint.finished_tasks(self.work_dir)))

    def finished(self, framework_id: str, task_id: str, at: float | None = None) -> None:
        self._queue.append((time.time() if at is None else at, framework_id, task_id))

    def collect(self, now: float | None = None) -> list[tuple[str, str]]:
        """Remove what is due; returns the (framework_id, task_id) removed, oldest first."""
        now = time.time() if now is None else now
        removed: list[tuple[str, str]] = []
        short = self._short()
        while self._queue and len(removed) < self.max_per_run:
            ended, framework_id, task_id = self._queue[0]
            if ended > now - self.delay and not short:
                break
            self._queue.popleft()
            if self.remove(framework_id, task_id):
                removed.append((framework_id, task_id))
                if short:
                    short = self._short()
        if removed and short and not self._queue:
            log.warning("work dir %s: %.1f%% free, under --sandbox-gc-min-free %g%%, and no finished sandbox "
                        "left to remove", self.work_dir, self._free(), self.min_free)
        return removed

    def remove(self, framework_id: str, task_id: str) -> bool:
        """Remove a finished task's sandbox and checkpoint directory; False (nothing removed) if the task
        is not finished (no ``done`` mark: relaunched, or already forgotten)."""
        meta = checkpoint.task_meta_dir(self.work_dir, framework_id, task_id)
        if not (meta / checkpoint.DONE_FILE).exists():
            return False
        path = sandbox_dir(self.work_dir, framework_id, task_id)
        shutil.rmtree(path, onerror=_log_rmtree_error)
        _remove_empty_parents(path.parent, stop=self.work_dir / "frameworks")
        checkpoint.forget_task(self.work_dir, framework_id, task_id)
        return True

    def _free(self) -> float:
        try:
            return self.free(self.work_dir)
        except OSError as exc:
            log.warning("cannot read the free space of %s: %s", self.work_dir, exc)
            return 100.0

    def _short(self) -> bool:
        return self.min_free > 0 and self._free() < self.min_free


def _log_rmtree_error(_func: object, path: str, exc_info: object) -> None:
    if isinstance(exc_info, tuple) and isinstance(exc_info[1], FileNotFoundError):
        return
    log.warning("sandbox GC: cannot remove %s: %s", path, exc_info[1] if isinstance(exc_info, tuple) else exc_info)


def _remove_empty_parents(path: Path, stop: Path) -> None:
    """``rmdir`` ``path`` and its parents up to (not including) ``stop`` while they are empty."""
    for directory in _up_to(path, stop):
        try:
            os.rmdir(directory)
        except OSError:
            return


def _up_to(path: Path, stop: Path) -> Iterable[Path]:
    while path != stop and stop in path.parents:
        yield path
        path = path.parent
