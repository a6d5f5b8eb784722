"""The agent's bookkeeping, without I/O: its task table, exit outcomes, status batching and recovery.

The agent process (``broker_mesos/agent/process.py``) spawns, reaps, checkpoints and publishes;
everything it decides — is this task new, what state does an exit code mean, how are updates grouped
into STATUS messages and in which order, what happens to a checkpointed task after a restart — is
decided here, so it is testable without a broker or a clock
(uuids and timestamps are passed in).
"""

from __future__ import annotations

import collections
import enum
import signal
from collections.abc import Iterable
from dataclasses import dataclass

from broker_mesos.core.protocol import AgentTask, TaskInfo, TaskState, TaskStatus

SOURCE_AGENT = "SOURCE_AGENT"
REASON_AGENT_RESTARTED = "REASON_AGENT_RESTARTED"
REASON_EXECUTOR_TERMINATED = "REASON_EXECUTOR_TERMINATED"
REASON_CONTAINER_LIMITATION_MEMORY = "REASON_CONTAINER_LIMITATION_MEMORY"
REASON_CONTAINER_LIMITATION_DISK = "REASON_CONTAINER_LIMITATION_DISK"
MAX_UPDATES_PER_MESSAGE = 1000
REMEMBERED_TASKS = 200_000

# Updates are published in this order of state so that, whatever the grouping, a task's STARTING is
# never published after its RUNNING, nor its RUNNING after its terminal state.
_STATE_RANK = {TaskState.STAGING: 0, TaskState.STARTING: 1, TaskState.RUNNING: 2}
_TERMINAL_RANK = 3

_SIGNALS = frozenset(int(s) for s in signal.Signals)

GroupKey = tuple[str, str, TaskState]
"""(framework_id, agent_id, state): what a status routing key is made of."""


TaskKey = tuple[str, str]
"""(framework_id, task_id): Mesos task ids are unique only within their framework."""


@dataclass(slots=True)
class TaskEntry:
    """A task this agent was asked to run and has not finished yet."""

    task_id: str
    framework_id: str
    task: TaskInfo
    state: TaskState
    kill_requested: bool = False
    quiet: bool = False  # its end is reported by no status update (a quiet KILL_TASKS)

    @property
    def key(self) -> TaskKey:
        return (self.framework_id, self.task_id)


class TaskTable:
    """Active tasks by (framework, task id), plus a bounded memory of finished ones so a redelivered
    launch is ignored.

    ``remember`` bounds the finished-id memory (oldest forgotten first): an agent running the noop
    executor at thousands of tasks per second must not grow without limit.
    """

    def __init__(self, remember: int = REMEMBERED_TASKS) -> None:
        self._active: dict[TaskKey, TaskEntry] = {}
        self._finished: collections.OrderedDict[TaskKey, None] = collections.OrderedDict()
        self._remember = remember

    def __len__(self) -> int:
        return len(self._active)

    def __contains__(self, key: object) -> bool:
        return key in self._active or key in self._finished

    def get(self, key: TaskKey) -> TaskEntry | None:
        return self._active.get(key)

    def active(self) -> list[TaskEntry]:
        return list(self._active.values())

    def launch(self, framework_id: str, task: TaskInfo, state: TaskState = TaskState.STARTING) -> TaskEntry | None:
        """Add a new task (in ``state``); None when the key is already known (a redelivery)."""
        key = (framework_id, task.task_id)
        if key in self:
            return None
        entry = TaskEntry(task.task_id, framework_id, task, state)
        self._active[key] = entry
        return entry

    def remember_finished(self, key: TaskKey) -> None:
        """Record a task that ended before this table existed (recovered from a checkpoint)."""
        self._finished[key] = None
        self._forget_oldest()

    def set_state(self, key: TaskKey, state: TaskState) -> TaskEntry | None:
        """Move an active task to ``state``; a terminal state removes it from the active table."""
        entry = self._active.get(key)
        if entry is None:
            return None
        entry.state = state
        if state.terminal:
            del self._active[key]
            self._finished[key] = None
            self._forget_oldest()
        return entry

    def _forget_oldest(self) -> None:
        while len(self._finished) > self._remember:
            self._finished.popitem(last=False)

    def request_kill(self, key: TaskKey, quiet: bool = False) -> TaskEntry | None:
        """Mark an active task as being killed (``quiet``: its end is not to be reported); None when it
        is unknown or already finished."""
        entry = self._active.get(key)
        if entry is not None:
            entry.kill_requested = True
            entry.quiet = entry.quiet or quiet
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
    reason: str = ""


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


def returncode_from_exit_status(text: str) -> int | None:
    """Read what the task supervisor wrote: the shell's ``$?`` (0-255, 128 + N when the task died of
    signal N). Returns ``subprocess``' convention (negative = signal), None when unreadable."""
    try:
        code = int(text.strip())
    except ValueError:
        return None
    if not 0 <= code <= 255:
        return None
    if code > 128 and code - 128 in _SIGNALS:
        return -(code - 128)
    return code


class Recovery(enum.Enum):
    """What a restarted agent does with one task found in its checkpoint."""

    FORGET = "forget"        # its final state was already reported: only remember its id
    REATTACH = "reattach"    # still running: watch it again
    REPORT = "report"        # it ended (or never started) while the agent was down: report ``outcome``


def recover_task(*, reported_terminal: bool, started: bool, alive: bool, exit_status: str | None,
                 kill_requested: bool) -> tuple[Recovery, Outcome | None]:
    """Decide a checkpointed task's fate after an agent restart.

    ``alive`` must be checked before ``exit_status`` is read: the supervisor writes the status and then
    exits, so a dead supervisor's status file is complete (or was never written: the supervisor itself
    was SIGKILLed, and the real exit status is unknowable).
    """
    if reported_terminal:
        return Recovery.FORGET, None
    if not started:
        return Recovery.REPORT, Outcome(TaskState.DROPPED, None, "the agent restarted before the task started",
                                        REASON_AGENT_RESTARTED)
    if alive:
        return Recovery.REATTACH, None
    returncode = returncode_from_exit_status(exit_status) if exit_status is not None else None
    return Recovery.REPORT, unknown_exit(kill_requested) if returncode is None else exit_outcome(returncode,
                                                                                                kill_requested)


def unknown_exit(kill_requested: bool) -> Outcome:
    """A task whose supervisor died with it (SIGKILL to the whole group, OOM killer): no exit status."""
    state = TaskState.KILLED if kill_requested else TaskState.FAILED
    return Outcome(state, None, "its exit status was not recorded (the task and its supervisor were killed)",
                   REASON_EXECUTOR_TERMINATED)


@dataclass(frozen=True, slots=True)
class Limitation:
    """A limit of its container that a task reached (Mesos' ``REASON_CONTAINER_LIMITATION_*``)."""

    reason: str
    message: str


def memory_limitation(limit_mb: float) -> Limitation:
    """The kernel's OOM killer struck in a task's container, whose memory limit is ``limit_mb``."""
    return Limitation(REASON_CONTAINER_LIMITATION_MEMORY,
                      f"memory limit {limit_mb:g} MB reached: the OOM killer killed the task")


def disk_limitation(limit_mb: float, used_bytes: int) -> Limitation:
    """A task's sandbox grew past its disk limit, ``limit_mb``: the agent killed the task."""
    return Limitation(REASON_CONTAINER_LIMITATION_DISK,
                      f"disk limit {_mb(limit_mb)} MB exceeded: sandbox uses {_mb(used_bytes / 2**20)} MB")


def _mb(value: float) -> str:
    """At most one decimal, none when it is 0: 10, 10.5, 23."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def limited(outcome: Outcome, limitation: Limitation) -> Outcome:
    """How a task ended, given a limit its container reached: a task that died of SIGKILL (or whose exit
    is unknown) because of it is TASK_FAILED with the limitation's reason and message. A kill that was
    asked for stays TASK_KILLED, and a task that outlived an OOM kill of one of its processes and exited
    on its own is reported by its exit as usual."""
    if outcome.state is not TaskState.FAILED or outcome.exit_code not in (None, 128 + signal.SIGKILL):
        return outcome
    return Outcome(TaskState.FAILED, outcome.exit_code, limitation.message, limitation.reason)


def make_status(entry: TaskEntry, agent_id: str, state: TaskState, uuid: str, timestamp: float,
                message: str = "", exit_code: int | None = None, reason: str = "") -> TaskStatus:
    executor = entry.task.executor
    return TaskStatus(task_id=entry.task_id, framework_id=entry.framework_id, agent_id=agent_id, state=state,
                      uuid=uuid, timestamp=timestamp, message=message, reason=reason, source=SOURCE_AGENT,
                      exit_code=exit_code, executor_id=executor.executor_id if executor is not None else "")


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
