"""What an agent decides about its framework executors, without I/O (the shell is ``agent/executors.py``).

An executor runs on its agent through the same machinery as a command task, keyed by a pseudo task
key ``(framework_id, "executor.<executor_id>")`` that no real task can take (task ids never hold a
``.``). Decided here: how the tasks of an executor end when it exits, is shut down or times out; which
checkpointed tasks a re-subscribing executor lost; what becomes of one update an executor sends; what
its container is sized to.
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Iterable
from dataclasses import dataclass

from broker_mesos.core.agent_state import REASON_EXECUTOR_TERMINATED, Outcome, TaskKey
from broker_mesos.core.protocol import ExecutorInfo, TaskState
from broker_mesos.core.resources import Resources

EXECUTOR_KEY_PREFIX = "executor."
SOURCE_EXECUTOR = "SOURCE_EXECUTOR"
REASON_EXECUTOR_REGISTRATION_TIMEOUT = "REASON_EXECUTOR_REGISTRATION_TIMEOUT"
REASON_EXECUTOR_REREGISTRATION_TIMEOUT = "REASON_EXECUTOR_REREGISTRATION_TIMEOUT"


def executor_key(framework_id: str, executor_id: str) -> TaskKey:
    """The pseudo task key an executor's process, sandbox, cgroup and checkpoint are kept under."""
    return (framework_id, EXECUTOR_KEY_PREFIX + executor_id)


def executor_id_of(task_id: str) -> str | None:
    """The executor id a pseudo task id stands for; None for a real task id."""
    return task_id[len(EXECUTOR_KEY_PREFIX):] if task_id.startswith(EXECUTOR_KEY_PREFIX) else None


class ExecutorEnd(enum.Enum):
    """Why an executor's process ended, as far as its agent knows."""

    EXITED = "exited"                                   # on its own, or killed by someone else
    SHUTDOWN = "shutdown"                               # the agent shut it down (idle, SHUTDOWN_EXECUTORS)
    REGISTRATION_TIMEOUT = "registration_timeout"       # it never subscribed
    REREGISTRATION_TIMEOUT = "reregistration_timeout"   # it did not subscribe again after an agent restart


def describe_exit(returncode: int | None) -> str:
    """An executor's exit, for its tasks' messages (negative: killed by that signal; None: unknown)."""
    if returncode is None:
        return "its exit status was not recorded"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"killed by signal {name}"
    return f"exited with {returncode}"


def executor_end_outcome(end: ExecutorEnd, returncode: int | None, executor_id: str) -> Outcome:
    """How each task its executor had not ended yet ends when the executor's process is gone."""
    how = describe_exit(returncode)
    if end is ExecutorEnd.SHUTDOWN:
        return Outcome(TaskState.KILLED, None, f"executor {executor_id} was shut down ({how})",
                       REASON_EXECUTOR_TERMINATED)
    if end is ExecutorEnd.REGISTRATION_TIMEOUT:
        return Outcome(TaskState.FAILED, None, f"executor {executor_id} did not subscribe in time and was killed "
                       f"({how})", REASON_EXECUTOR_REGISTRATION_TIMEOUT)
    if end is ExecutorEnd.REREGISTRATION_TIMEOUT:
        return Outcome(TaskState.FAILED, None, f"executor {executor_id} did not subscribe again after the agent "
                       f"restarted and was killed ({how})", REASON_EXECUTOR_REREGISTRATION_TIMEOUT)
    return Outcome(TaskState.FAILED, None, f"executor {executor_id} terminated: {how}", REASON_EXECUTOR_TERMINATED)


def failed_to_start(executor_id: str, why: str) -> Outcome:
    return Outcome(TaskState.FAILED, None, f"executor {executor_id} failed to start: {why}",
                   REASON_EXECUTOR_TERMINATED)


def unknown_after_restart(executor_id: str) -> Outcome:
    """A checkpointed task its executor no longer lists when it subscribes again after an agent restart."""
    return Outcome(TaskState.FAILED, None, f"unknown to its executor {executor_id} after the agent restarted",
                   REASON_EXECUTOR_TERMINATED)


def kill_not_honoured(executor_id: str, grace: float) -> Outcome:
    """A task its executor did not end within the agent's kill grace: the agent reports it killed."""
    return Outcome(TaskState.KILLED, None, f"killed on request; executor {executor_id} did not report its end "
                   f"within {grace:g}s")


def killed_before_launch(executor_id: str) -> Outcome:
    return Outcome(TaskState.KILLED, None, f"killed on request before executor {executor_id} received it")


def mismatch(running: ExecutorInfo, named: ExecutorInfo) -> str | None:
    """Why a task naming ``named`` cannot go to the running executor of the same id (None: it can)."""
    if running == named:
        return None
    differs = [f for f in ("command", "resources", "name") if getattr(running, f) != getattr(named, f)]
    return (f"executor {named.executor_id} already runs on this agent with another ExecutorInfo "
            f"(different {', '.join(differs)}): every task naming it must carry the same one")


def container_resources(executor: Resources, tasks: Iterable[Resources]) -> Resources:
    """An executor's container: its own resources plus those of its live tasks."""
    total = executor
    for resources in tasks:
        total = total + resources
    return total


def lost_tasks(checkpointed: Iterable[str], reported: Iterable[str]) -> list[str]:
    """The checkpointed live tasks of an executor that its re-SUBSCRIBE does not list, in order."""
    listed = set(reported)
    return [t for t in checkpointed if t not in listed]


class Verdict(enum.Enum):
    """What happens to one update an executor sends."""

    PUBLISH = "publish"   # journal, publish, then acknowledge
    ACK = "ack"           # acknowledge only: a duplicate, or a re-sent update of a task that has ended since
    REFUSE = "refuse"     # executor.ERROR; the connection stays


@dataclass(frozen=True, slots=True)
class UpdateDecision:
    verdict: Verdict
    reason: str = ""


def classify_update(*, duplicate: bool, live: bool, ended: bool, task_executor: str | None, executor_id: str,
                    resent: bool) -> UpdateDecision:
    """Decide an update for a task of this agent's books. ``duplicate``: its uuid was seen already;
    ``live``: the task is active here, run by ``task_executor``; ``ended``: the agent remembers it ended;
    ``resent``: it came in a SUBSCRIBE's unacknowledged updates (after an agent restart, the earlier
    agent may have published it, or ended the task itself)."""
    if duplicate:
        return UpdateDecision(Verdict.ACK)
    if live:
        if task_executor != executor_id:
            owner = f"executor {task_executor}" if task_executor else "the command executor"
            return UpdateDecision(Verdict.REFUSE, f"task is run by {owner}, not by executor {executor_id}")
        return UpdateDecision(Verdict.PUBLISH)
    if ended:
        if resent:
            return UpdateDecision(Verdict.ACK)
        return UpdateDecision(Verdict.REFUSE, "task has already ended")
    return UpdateDecision(Verdict.REFUSE, "unknown task")
