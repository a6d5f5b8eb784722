"""Executors: how an agent runs a task. ``command`` spawns a process; ``noop`` runs nothing.

Both are driven by the agent's single I/O loop thread: ``launch`` starts a task, ``adopt`` watches one
an earlier agent process started, ``reap`` (polled) returns the tasks that have exited, ``terminate`` /
``force_kill`` signal one. No executor publishes anything; the agent turns what they return into
status updates.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from broker_mesos.agent import checkpoint
from broker_mesos.agent.sandbox import open_sandbox, sandbox_dir
from broker_mesos.core.agent_state import TaskKey, returncode_from_exit_status
from broker_mesos.core.protocol import TaskInfo

log = logging.getLogger(__name__)

ENV_TASK_ID = "BMESOS_TASK_ID"
ENV_FRAMEWORK_ID = "BMESOS_FRAMEWORK_ID"
ENV_AGENT_ID = "BMESOS_AGENT_ID"
ENV_SANDBOX = "BMESOS_SANDBOX"


SUPERVISOR = 'f=$1; shift; trap : TERM INT HUP; "$@"; s=$?; echo "$s" > "$f"; exit "$s"'
"""The task supervisor, a ``/bin/sh`` script (one small process per task): run the task, wait for it,
write its exit status to its checkpoint directory, exit with it. It outlives a signal sent to the
whole group (the trap defers it until the task has ended) and does not pass its trap on to the task,
so whichever agent process comes next can learn how the task ended."""

ADOPTED_POLL_TICKS = 10


class Executor(Protocol):
    name: str

    def launch(self, framework_id: str, task: TaskInfo) -> int | None:
        """Start ``task``. Return its exit code if it is already over, None while it runs.
        Raise ``OSError`` or ``ValueError`` (the text is the failure message) if it cannot start."""

    def adopt(self, key: TaskKey, pid: int, start_time: str | None) -> None:
        """Watch a task started by an earlier agent process (its supervisor is ``pid``)."""

    def reap(self) -> list[tuple[TaskKey, int | None]]:
        """(task, returncode) of every task that exited since the last call; negative = signal,
        None = unknown (the task and its supervisor were killed together)."""

    def terminate(self, key: TaskKey) -> None:
        """Ask the task to stop (SIGTERM to its process group)."""

    def force_kill(self, key: TaskKey) -> None:
        """Stop the task now (SIGKILL to its process group); nothing happens if it is gone."""


class NoopExecutor:
    """Runs nothing: every task finishes at once with exit code 0 (benchmarks, many simulated agents)."""

    name = "noop"

    def launch(self, framework_id: str, task: TaskInfo) -> int | None:
        return 0

    def adopt(self, key: TaskKey, pid: int, start_time: str | None) -> None:
        return None

    def reap(self) -> list[tuple[TaskKey, int | None]]:
        return []

    def terminate(self, key: TaskKey) -> None:
        return None

    def force_kill(self, key: TaskKey) -> None:
        return None


@dataclass(slots=True)
class _Adopted:
    pid: int
    start_time: str | None
    meta: Path


class CommandExecutor:
    """Runs each task's command under its supervisor, in its own session, cwd = its sandbox.

    Children are reaped with ``waitpid(-1, WNOHANG)`` so a poll costs O(exited), not O(running).
    Tasks adopted after a restart are not our children: their supervisors are polled (every
    ``ADOPTED_POLL_TICKS`` reaps) and, once gone, their exit status is read from the checkpoint. When a
    task ends, whatever it left in its process group is SIGKILLed, as Mesos tears down a container.
    """

    name = "command"

    def __init__(self, work_dir: Path, agent_id: str) -> None:
        self.work_dir = work_dir
        self.agent_id = agent_id
        self._children: dict[int, tuple[TaskKey, subprocess.Popen[bytes], Path]] = {}
        self._pgid: dict[TaskKey, int] = {}
        self._adopted: dict[TaskKey, _Adopted] = {}
        self._ticks = 0

    def launch(self, framework_id: str, task: TaskInfo) -> int | None:
        command = task.command
        sandbox_path = sandbox_dir(self.work_dir, framework_id, task.task_id)
        env = {**os.environ, ENV_TASK_ID: task.task_id, ENV_FRAMEWORK_ID: framework_id,
               ENV_AGENT_ID: self.agent_id, ENV_SANDBOX: str(sandbox_path), **command.environment}
        if command.shell:
            argv = ["/bin/sh", "-c", command.value]
        elif command.arguments:
            argv = list(command.arguments)
            _check_program(argv[0], env.get("PATH", os.defpath), sandbox_path)
        else:
            raise ValueError("command has shell=false and no arguments")
        meta = checkpoint.task_meta_dir(self.work_dir, framework_id, task.task_id)
        meta.mkdir(parents=True, exist_ok=True)
        (meta / checkpoint.EXIT_STATUS_FILE).unlink(missing_ok=True)
        sandbox = open_sandbox(self.work_dir, framework_id, task.task_id)
        supervised = ["/bin/sh", "-c", SUPERVISOR, "bmesos-supervise", str(meta / checkpoint.EXIT_STATUS_FILE),
                      *argv]
        try:
            popen = subprocess.Popen(supervised, cwd=sandbox.path, env=env, stdin=subprocess.DEVNULL,
                                     stdout=sandbox.stdout, stderr=sandbox.stderr, start_new_session=True)
        finally:
            sandbox.close()
        key = (framework_id, task.task_id)
        self._children[popen.pid] = (key, popen, meta)
        self._pgid[key] = popen.pid
        checkpoint.record_pid(meta, popen.pid, checkpoint.process_start_time(popen.pid))
        log.debug("task=%s framework=%s started pid=%d", task.task_id, framework_id, popen.pid)
        return None

    def adopt(self, key: TaskKey, pid: int, start_time: str | None) -> None:
        self._adopted[key] = _Adopted(pid, start_time, checkpoint.task_meta_dir(self.work_dir, *key))
        self._pgid[key] = pid

    def reap(self) -> list[tuple[TaskKey, int | None]]:
        exited: list[tuple[TaskKey, int | None]] = []
        while True:  # also reaps orphans re-parented to us (an agent running as pid 1 in a container)
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            found = self._children.pop(pid, None)
            if found is None:
                continue
            key, popen, meta = found
            popen.returncode = os.waitstatus_to_exitcode(status)  # so subprocess never waits for it again
            exited.append((key, self._ended(key, pid, meta, popen.returncode)))
        self._ticks += 1
        if self._adopted and self._ticks % ADOPTED_POLL_TICKS == 0:
            for key, adopted in list(self._adopted.items()):
                if not checkpoint.process_alive(adopted.pid, adopted.start_time):
                    del self._adopted[key]
                    exited.append((key, self._ended(key, adopted.pid, adopted.meta, None)))
        return exited

    def _ended(self, key: TaskKey, pid: int, meta: Path, supervisor_code: int | None) -> int | None:
        """The task's return code: what its supervisor recorded, else how the supervisor itself died."""
        del self._pgid[key]
        _signal_group(pid, signal.SIGKILL)  # leftovers of the task, if any
        text = checkpoint.read_exit_status(meta)
        returncode = returncode_from_exit_status(text) if text is not None else None
        return returncode if returncode is not None else supervisor_code

    def terminate(self, key: TaskKey) -> None:
        pgid = self._pgid.get(key)
        if pgid is not None:
            _signal_group(pgid, signal.SIGTERM)

    def force_kill(self, key: TaskKey) -> None:
        pgid = self._pgid.get(key)
        if pgid is not None:
            _signal_group(pgid, signal.SIGKILL)


def _check_program(program: str, search_path: str, cwd: Path) -> None:
    """Fail the launch as ``exec`` would (the supervisor always starts, so it cannot tell us)."""
    if "/" in program:
        path = program if os.path.isabs(program) else str(cwd / program)
        if not os.path.isfile(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if not os.access(path, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
    elif shutil.which(program, path=search_path) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        log.warning("cannot signal process group %d: %s", pgid, exc)


EXECUTORS = ("command", "noop")


def make_executor(name: str, work_dir: Path, agent_id: str) -> Executor:
    if name == "noop":
        return NoopExecutor()
    if name == "command":
        return CommandExecutor(work_dir, agent_id)
    raise ValueError(f"unknown executor {name!r} (choose from {', '.join(EXECUTORS)})")
