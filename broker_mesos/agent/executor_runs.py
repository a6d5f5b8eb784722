"""One framework executor run as its agent keeps it (``ExecutorRun``), what the executor manager needs of
its agent (``ExecutorHost``), its timeouts, and the environment an executor starts with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from broker_mesos.agent.checkpoint import ExecutorTaskLog
from broker_mesos.agent.executor_channel import Connection
from broker_mesos.core.agent_executors import ExecutorEnd, executor_key
from broker_mesos.core.agent_state import Outcome, TaskEntry, TaskKey, TaskTable
from broker_mesos.core.protocol import (
    ENV_AGENT_ENDPOINT,
    ENV_AGENT_ID,
    ENV_EXECUTOR_ID,
    ENV_EXECUTOR_TOKEN,
    ENV_FRAMEWORK_ID,
    ENV_RECOVERY_TIMEOUT,
    ExecutorInfo,
    TaskInfo,
    TaskStatus,
)

RECOVERY_TIMEOUT = 60.0  # seconds an executor keeps trying to reconnect after its agent went away


@dataclass(frozen=True)
class ExecutorTimeouts:
    """The operator's ``--executor-*`` options (seconds) and the agent's ``--kill-grace``."""

    idle: float = 10.0
    shutdown_grace: float = 5.0
    register: float = 60.0
    reregister: float = 10.0
    kill_grace: float = 3.0


class ExecutorHost(Protocol):
    """What the manager needs of its agent (``agent.process.Agent``)."""

    agent_id: str
    tasks: TaskTable

    def report(self, entry: TaskEntry, outcome: Outcome) -> None:
        """End a task as ``outcome`` says (publish, checkpoint)."""

    def publish_update(self, entry: TaskEntry, status: TaskStatus) -> None:
        """Take an executor's update for ``entry`` into the agent's update path."""

    def schedule_flush(self) -> None:
        """Make sure a flush runs soon (acknowledgements go out after it)."""

    def executor_finished(self, key: TaskKey) -> None:
        """An executor's process is gone and its tasks are reported: its sandbox may be collected."""


@dataclass(eq=False)
class ExecutorRun:
    """One executor process of this agent, from its start until it is reaped."""

    framework_id: str
    info: ExecutorInfo
    token: str
    user: str
    uid: int
    meta: Path
    recovering: bool = False       # adopted after an agent restart, not subscribed again yet
    subscribed: bool = False
    tasks: dict[str, TaskInfo] = field(default_factory=dict)  # its live tasks, in launch order
    queued: list[str] = field(default_factory=list)  # task ids waiting for its SUBSCRIBE
    conn: Connection | None = None
    end: ExecutorEnd = ExecutorEnd.EXITED
    shutting_down: bool = False
    idle_since: float | None = None
    disconnected_at: float | None = None  # its connection closed while it runs (it should reconnect)
    log: ExecutorTaskLog | None = None  # the checkpoint of its tasks (None: checkpointing is off)
    finished: list[str] = field(default_factory=list)  # ids of its ended tasks, for the log's compaction

    @property
    def executor_id(self) -> str:
        return self.info.executor_id

    @property
    def key(self) -> TaskKey:
        return executor_key(self.framework_id, self.info.executor_id)

    def __repr__(self) -> str:
        return f"executor={self.executor_id} framework={self.framework_id}"


def executor_environment(info: ExecutorInfo, framework_id: str, agent_id: str, endpoint: Path, token: str
                         ) -> dict[str, str]:
    """An executor's ``CommandInfo.environment`` as started: its own, then the agent's variables (which
    it cannot override). ``BMESOS_SANDBOX`` and the rest come with every task (``task_environment``)."""
    return {**info.command.environment, ENV_AGENT_ENDPOINT: str(endpoint), ENV_EXECUTOR_TOKEN: token,
            ENV_EXECUTOR_ID: info.executor_id, ENV_FRAMEWORK_ID: framework_id, ENV_AGENT_ID: agent_id,
            ENV_RECOVERY_TIMEOUT: f"{RECOVERY_TIMEOUT:g}"}
