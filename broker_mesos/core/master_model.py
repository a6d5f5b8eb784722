"""The master's data model: the effects its rules return, its records of the cluster, its config.

Plain data, no rules: ``core.master`` (framework calls, offers, rounds) and ``core.master_agents``
(agent lifecycle) change these records; ``master.registry`` persists them.
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from broker_mesos.core.allocation.registry import DEFAULT_POLICY
from broker_mesos.core.protocol import ExecutorInfo, TaskState, TaskStatus
from broker_mesos.core.resources import Resources

COMPLETED_TASKS_KEPT = 10_000
# per agent: 100,000 cpus, 1 PiB of mem and of disk (MB), 1,000 gpus; names not listed are bounded by the
# codec alone (finite, at most resources.MAX_SCALAR)
DEFAULT_MAX_AGENT_RESOURCES_TEXT = "cpus:100000;mem:1073741824;disk:1073741824;gpus:1000"
DEFAULT_MAX_AGENT_RESOURCES = Resources.parse(DEFAULT_MAX_AGENT_RESOURCES_TEXT)
REMOVED_AGENTS_KEPT = 1_000
GONE_AGENTS_KEPT = 10_000  # agent ids marked gone by an operator (MARK_AGENT_GONE), oldest forgotten first
# per task: its latest status updates, for `bmesos describe task` (not persisted: a new master starts afresh);
# each without its opaque data and with its message cut to HISTORY_MESSAGE_CHARS, so 10,000 live and
# 10,000 remembered tasks hold at most about 20,000 * 32 small records
STATUS_HISTORY_KEPT = 32
HISTORY_MESSAGE_CHARS = 1024


# -- effects ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToFramework:
    """Send ``body`` to a framework: to ``reply_to`` when given, else to its ``offers.<id>`` queue."""

    framework_id: str
    body: Any
    reply_to: str | None = None
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class ToAgent:
    agent_id: str
    body: Any


@dataclass(frozen=True, slots=True)
class PublishStatus:
    """A status update the master decides itself (LOST, ERROR, DROPPED), published on ``status``."""

    status: TaskStatus


@dataclass(frozen=True, slots=True)
class PublishEvent:
    kind: str
    detail: dict[str, Any]


Effect = ToFramework | ToAgent | PublishStatus | PublishEvent


# -- records ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskUsage:
    """What a task uses as its agent last reported it (HEARTBEAT ``usage``), or a sum of such: for state
    queries and metrics only, never for allocation (an agent's word, not the master's books)."""

    cpu_seconds: float = 0.0
    mem_mb: float = 0.0
    disk_mb: float = 0.0

    def __add__(self, other: TaskUsage) -> TaskUsage:
        return TaskUsage(self.cpu_seconds + other.cpu_seconds, self.mem_mb + other.mem_mb,
                         self.disk_mb + other.disk_mb)

    def __sub__(self, other: TaskUsage) -> TaskUsage:  # never below 0 (float sums drift)
        return TaskUsage(max(0.0, self.cpu_seconds - other.cpu_seconds), max(0.0, self.mem_mb - other.mem_mb),
                         max(0.0, self.disk_mb - other.disk_mb))


NO_USAGE = TaskUsage()


@dataclass(slots=True)
class DrainInfo:
    """An operator's DRAIN_AGENT (Mesos maintenance, ``nomad node drain``): no offers from the agent;
    ``kill``: its tasks were told to die at once; ``deadline``: the time (the master's clock) its tasks
    still running are killed; ``killed``: that kill went out; ``drained``: ``agent.drained`` was
    published (no task left)."""

    since: float
    deadline: float | None = None
    kill: bool = False
    killed: bool = False
    drained: bool = False


@dataclass(slots=True)
class AgentRecord:
    agent_id: str
    hostname: str
    total: Resources
    free: Resources
    attributes: dict[str, str]
    last_seen: float
    heartbeat_interval: float
    tasks: set[tuple[str, str]] = field(default_factory=set)
    offers: set[str] = field(default_factory=set)
    executors: set[tuple[str, str]] = field(default_factory=set)  # (framework id, executor id) booked here
    # not removed for silence before this time (set when a new master restores it from the registry)
    grace_until: float = 0.0
    # the sum of its live tasks' latest reported usage (TaskRecord.usage)
    usage: TaskUsage = NO_USAGE
    drain: DrainInfo | None = None  # set while an operator drains it (persisted in the registry)


@dataclass(slots=True)
class FrameworkRecord:
    framework_id: str
    name: str
    role: str
    weight: float
    seq: int
    reply_to: str | None
    suppressed: bool = False
    allocated: Resources = field(default_factory=Resources)
    # agent id -> [(until, refused resources)]: Mesos' refused-resources filters
    filters: dict[str, list[tuple[float, Resources]]] = field(default_factory=dict)
    offers: set[str] = field(default_factory=set)
    tasks: set[str] = field(default_factory=set)
    executors: set[tuple[str, str]] = field(default_factory=set)  # (agent id, executor id) booked for it
    failover_timeout: float = 0.0
    partition_aware: bool = False
    user: str = ""  # the OS user its tasks run as when they name none (SUBSCRIBE.user)
    # set while the framework's scheduler is gone: it keeps its tasks until failover_timeout has passed
    disconnected_at: float | None = None
    suppressed_before_disconnect: bool = False


@dataclass(slots=True)
class TaskRecord:
    task_id: str
    framework_id: str
    agent_id: str
    resources: Resources
    state: TaskState
    last_status: TaskStatus | None = None
    launched_at: float = 0.0  # when this master launched it (or restored it from the registry)
    usage: TaskUsage | None = None  # the latest its agent reported (None: none yet); not persisted
    history: collections.deque[TaskStatus] = field(
        default_factory=lambda: collections.deque(maxlen=STATUS_HISTORY_KEPT))

    def note(self, status: TaskStatus) -> None:
        """Keep ``status`` in the bounded history (data dropped, message cut)."""
        if status.data or len(status.message) > HISTORY_MESSAGE_CHARS:
            status = dataclasses.replace(status, data=b"", message=status.message[:HISTORY_MESSAGE_CHARS])
        self.history.append(status)


@dataclass(slots=True)
class ExecutorRecord:
    """An executor booked on an agent: its own resources are charged there once, on top of its tasks'.
    ``info`` is None for one adopted from an agent's report (only its resources known) until a task
    names it again."""

    agent_id: str
    framework_id: str
    executor_id: str
    info: ExecutorInfo | None
    resources: Resources
    booked_at: float  # when booked (or restored from the registry): the grace before it must be reported

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.agent_id, self.framework_id, self.executor_id)


@dataclass(slots=True)
class OfferRecord:
    offer_id: str
    framework_id: str
    agent_id: str
    resources: Resources
    expires_at: float


@dataclass(frozen=True, slots=True)
class MasterConfig:
    master_id: str = "master"
    allocation_interval: float = 1.0
    batch_threshold: int = 1000
    offer_timeout: float = 30.0
    # an agent is removed after this many heartbeats are missed in a row (0: never; `bmesos master`
    # defaults to 5); a heartbeat is missed when agent_ping_timeout (default: the interval the agent
    # reports) passes without one
    max_missed_heartbeats: int = 0
    agent_ping_timeout: float | None = None
    # after a master takes over (registry restored), agents it knows get this long to re-register before
    # the heartbeat rule applies to them: their own reconnect after a broker restart takes time (Mesos'
    # --agent_reregister_timeout)
    agent_reregister_timeout: float = 10.0
    # the allocator policy at start (by registry name) and its parameters; switchable at runtime
    allocator: str = DEFAULT_POLICY
    allocator_params: tuple[tuple[str, str], ...] = ()
    # the most one agent may report (REGISTER / HEARTBEAT beyond it are refused): a wrong or hostile
    # agent cannot inflate the cluster's totals, and so every share, without bound
    max_agent_resources: Resources = DEFAULT_MAX_AGENT_RESOURCES
