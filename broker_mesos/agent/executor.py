"""Executors: how an agent runs a task. ``command`` spawns a process; ``noop`` runs nothing.

Both are driven by the agent's single I/O loop thread: ``launch`` starts a task, ``reap`` (polled)
returns the tasks that have exited, ``terminate`` / ``force_kill`` signal one. No executor publishes
anything; the agent turns what they return into status updates.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import Protocol

from broker_mesos.agent.sandbox import open_sandbox
from broker_mesos.core.protocol import TaskInfo

log = logging.getLogger(__name__)

ENV_TASK_ID = "BMESOS_TASK_ID"
ENV_FRAMEWORK_ID = "BMESOS_FRAMEWORK_ID"
ENV_AGENT_ID = "BMESOS_AGENT_ID"
ENV_SANDBOX = "BMESOS_SANDBOX"


class Executor(Protocol):
    name: str

    def launch(self, framework_id: str, task: TaskInfo) -> int | None:
        """Start ``task``. Return its exit code if it is already over, None while it runs.
        Raise ``OSError`` or ``ValueError`` (the text is the failure message) if it cannot start."""

    def reap(self) -> list[tuple[str, int]]:
        """(task_id, returncode) of every task that exited since the last call; negative = signal."""

    def terminate(self, task_id: str) -> None:
        """Ask the task to stop (SIGTERM to its process group)."""

    def force_kill(self, task_id: str) -> None:
        """Stop the task now (SIGKILL to its process group); nothing happens if it is gone."""


class NoopExecutor:
    """Runs nothing: every task finishes at once with exit code 0 (benchmarks, many simulated agents)."""

    name = "noop"

    def launch(self, framework_id: str, task: TaskInfo) -> int | None:
        return 0

    def reap(self) -> list[tuple[str, int]]:
        return []

    def terminate(self, task_id: str) -> None:
        return None

    def force_kill(self, task_id: str) -> None:
        return None


class CommandExecutor:
    """Runs each task's command as a child in its own process group, cwd = its sandbox.

    Children are reaped with ``waitpid(-1, WNOHANG)`` so a poll costs O(exited), not O(running).
    When a task's main process exits, whatever it left in its process group is SIGKILLed, as Mesos
    tears down a task's container.
    """

    name = "command"

    def __init__(self, work_dir: Path, agent_id: str) -> None:
        self.work_dir = work_dir
        self.agent_id = agent_id
        self._by_pid: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}
        self._pid_of: dict[str, int] = {}

    def launch(self, framework_id: str, task: TaskInfo) -> int | None:
        command = task.command
        if command.shell:
            argv = ["/bin/sh", "-c", command.value]
        elif command.arguments:
            argv = list(command.arguments)
        else:
            raise ValueError("command has shell=false and no arguments")
        sandbox = open_sandbox(self.work_dir, framework_id, task.task_id)
        env = {**os.environ, ENV_TASK_ID: task.task_id, ENV_FRAMEWORK_ID: framework_id,
               ENV_AGENT_ID: self.agent_id, ENV_SANDBOX: str(sandbox.path), **command.environment}
        try:
            popen = subprocess.Popen(argv, cwd=sandbox.path, env=env, stdin=subprocess.DEVNULL,
                                     stdout=sandbox.stdout, stderr=sandbox.stderr, start_new_session=True)
        finally:
            sandbox.close()
        self._by_pid[popen.pid] = (task.task_id, popen)
        self._pid_of[task.task_id] = popen.pid
        log.debug("task=%s framework=%s started pid=%d", task.task_id, framework_id, popen.pid)
        return None

    def reap(self) -> list[tuple[str, int]]:
        exited: list[tuple[str, int]] = []
        while self._by_pid:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            found = self._by_pid.pop(pid, None)
            if found is None:
                continue
            task_id, popen = found
            returncode = os.waitstatus_to_exitcode(status)
            popen.returncode = returncode  # so subprocess never waits for this pid again
            del self._pid_of[task_id]
            _signal_group(pid, signal.SIGKILL)  # leftovers of the task, if any
            exited.append((task_id, returncode))
        return exited

    def terminate(self, task_id: str) -> None:
        pid = self._pid_of.get(task_id)
        if pid is not None:
            _signal_group(pid, signal.SIGTERM)

    def force_kill(self, task_id: str) -> None:
        pid = self._pid_of.get(task_id)
        if pid is not None:
            _signal_group(pid, signal.SIGKILL)


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
