"""The agent's bookkeeping, without I/O: its task table, exit outcomes and status batching.

The agent process (``broker_mesos/agent/process.py``) spawns, reaps and publishes; everything it
decides — is this task new, what state does an exit code mean, how are updates grouped into STATUS
messages and in which order — is decided here, so it is testable without a broker or a clock
(uuids and timestamps are passed in).
"""

from __future__ import annotations

import collections
import signal
from collections.abc import Iterable
from dataclasses import dataclass

from broker_mesos.core.protocol import AgentTask, TaskInfo, TaskState, TaskStatus

SOURCE_AGENT = "SOURCE_AGENT"
MAX_UPDATES_PER_MESSAGE = 1000
REMEMBERED_TASKS = 200_000

# Updates are published in this order of state so that, whatever the grouping, a task's STARTING is
# never published after its RUNNING, nor its RUNNING after its terminal state.
_STATE_RANK = {TaskState.STAGING: 0, TaskState.STARTING: 1, TaskState.RUNNING: 2}
_TERMINAL_RANK = 3

GroupKey = tuple[str, str, TaskState]
"""(framework_id, agent_id, state): what a status routing key is made of."""


@dataclass(slots=True)
class TaskEntry:
    """A task this agent was asked to run and has not finished yet."""

    task_id: str
    framework_id: str
    task: TaskInfo
    state: TaskState
    kill_requested: bool = False


class TaskTable:
    """Active tasks by id, plus a bounded memory of finished ones so a redelivered launch is ignored.

    ``remember`` bounds the finished-id memory (oldest forgotten first): an agent running the noop
    executor at thousands of tasks per second must not grow without limit.
    """

    def __init__(self, remember: int = REMEMBERED_TASKS) -> None:
        self._active: dict[str, TaskEntry] = {}
        self._finished: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._remember = remember

    def __len__(self) -> int:
        return len(self._active)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._active or task_id in self._finished

    def get(self, task_id: str) -> TaskEntry | None:
        return self._active.get(task_id)

    def active(self) -> list[TaskEntry]:
        return list(self._active.values())

    def launch(self, framework_id: str, task: TaskInfo) -> TaskEntry | None:
        """Add a new task in TASK_STARTING; None when the id is already known (a redelivery)."""
        if task.task_id in self:
            return None
        entry = TaskEntry(task.task_id, framework_id, task, TaskState.STARTING)
        self._active[task.task_id] = entry
        return entry

    def set_state(self, task_id: str, state: TaskState) -> TaskEntry | None:
        """Move an active task to ``state``; a terminal state removes it from the active table."""
        entry = self._active.get(task_id)
        if entry is None:
            return None
        entry.state = state
        if state.terminal:
            del self._active[task_id]
            self._finished[task_id] = None
            while len(self._finished) > self._remember:
                self._finished.popitem(last=False)
        return entry

    def request_kill(self, task_id: str) -> TaskEntry | None:
        """Mark an active task as being killed; None when it is unknown or already finished."""
        entry = self._active.get(task_id)
        if entry is not None:
            entry.kill_requested = True
        return entry

    def agent_tasks(self) -> list[AgentTask]:
        """The active tasks as REGISTER / HEARTBEAT report them."""
        return [AgentTask(e.task_id, e.framework_id, e.task.resources, e.state) for e in self._active.values()]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a task ended, as its final status reports it."""

    state: TaskState
    exit_code: int | None
    message: str


def exit_outcome(returncode: int, kill_requested: bool) -> Outcome:
    """Map a process' return code (negative = killed by that signal, as ``subprocess`` reports it).

    A kill that was asked for gives TASK_KILLED whatever the code. A signal death is reported with the
    shell's convention, exit code 128 + signal number.
    """
    if returncode < 0:
        signum = -returncode
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = str(signum)
        exit_code, message = 128 + signum, f"killed by signal {name}"
    else:
        exit_code, message = returncode, f"exited with {returncode}"
    if kill_requested:
        return Outcome(TaskState.KILLED, exit_code, f"killed on request; {message}")
    if returncode == 0:
        return Outcome(TaskState.FINISHED, 0, message)
    return Outcome(TaskState.FAILED, exit_code, message)


def make_status(entry: TaskEntry, agent_id: str, state: TaskState, uuid: str, timestamp: float,
                message: str = "", exit_code: int | None = None) -> TaskStatus:
    return TaskStatus(task_id=entry.task_id, framework_id=entry.framework_id, agent_id=agent_id, state=state,
                      uuid=uuid, timestamp=timestamp, message=message, source=SOURCE_AGENT, exit_code=exit_code)


def group_updates(updates: Iterable[TaskStatus], max_per_message: int = MAX_UPDATES_PER_MESSAGE
                  ) -> list[tuple[GroupKey, list[TaskStatus]]]:
    """Group updates into STATUS messages: one per (framework, agent, state), at most
    ``max_per_message`` updates each, ordered by state so each task's updates stay in order."""
    groups: dict[GroupKey, list[TaskStatus]] = {}
    for update in updates:
        groups.setdefault((update.framework_id, update.agent_id, update.state), []).append(update)
    ordered = sorted(groups.items(), key=lambda kv: _STATE_RANK.get(kv[0][2], _TERMINAL_RANK))
    out: list[tuple[GroupKey, list[TaskStatus]]] = []
    for key, items in ordered:
        for i in range(0, len(items), max_per_message):
            out.append((key, items[i:i + max_per_message]))
    return out
