"""Message bodies of the wire protocol (normative description: docs/protocol.md).

Names follow Mesos' v1 scheduler API where it fits. Every class here is a frozen dataclass registered
with the codec under its wire ``type``; decoding validates field names, types and ranges.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from broker_mesos.core.codec import MAX_TIMESTAMP, bounded, id_field, message, role_field, user_field
from broker_mesos.core.errors import ProtocolError
from broker_mesos.core.resources import Resources

DEFAULT_REFUSE_SECONDS = 5.0
# how long a framework whose scheduler is gone keeps its tasks (Mesos' default, 0, killed every task on
# a connection blip): ten minutes outlast a broker restart, a RabbitMQ node failover and a scheduler
# restarted by its supervisor, while the tasks of a framework that died for good (its id is random by
# default, so nothing can come back as it) free their resources within the same ten minutes.
# Long-running services that must survive longer outages of their scheduler set more (Marathon: a week).
DEFAULT_FAILOVER_TIMEOUT = 600.0
MAX_REFUSE_SECONDS = 365 * 24 * 3600.0
MAX_USAGE = 1e12  # the most any usage column may report (CPU seconds, MB)


class TaskState(enum.StrEnum):
    """Mesos' task states; the value is what travels and what status routing keys end with."""

    STAGING = "TASK_STAGING"
    STARTING = "TASK_STARTING"
    RUNNING = "TASK_RUNNING"
    FINISHED = "TASK_FINISHED"
    FAILED = "TASK_FAILED"
    KILLED = "TASK_KILLED"
    LOST = "TASK_LOST"
    ERROR = "TASK_ERROR"
    DROPPED = "TASK_DROPPED"
    UNREACHABLE = "TASK_UNREACHABLE"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({TaskState.FINISHED, TaskState.FAILED, TaskState.KILLED, TaskState.LOST,
                             TaskState.ERROR, TaskState.DROPPED})


# -- shared values ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandInfo:
    """What to run. ``shell=True``: ``value`` is run by ``/bin/sh -c``; otherwise ``arguments`` is argv."""

    value: str = ""
    shell: bool = True
    arguments: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TaskInfo:
    task_id: str = id_field()
    agent_id: str = id_field()
    resources: Resources = field(default_factory=Resources)
    command: CommandInfo = field(default_factory=CommandInfo)
    name: str = ""
    # the OS user the task runs as ("": its framework's SUBSCRIBE.user, else the agent's default)
    user: str = user_field(default="")


@dataclass(frozen=True, slots=True)
class TaskStatus:
    task_id: str = id_field()
    framework_id: str = id_field()
    agent_id: str = id_field(empty_ok=True)  # "" when the master reports a task it knows no agent for
    state: TaskState
    uuid: str = id_field()
    timestamp: float = bounded(0.0, MAX_TIMESTAMP)
    message: str = ""
    reason: str = ""
    source: str = "SOURCE_AGENT"
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class Offer:
    offer_id: str = id_field()
    framework_id: str = id_field()
    agent_id: str = id_field()
    hostname: str = ""
    resources: Resources = field(default_factory=Resources)
    attributes: dict[str, str] = field(default_factory=dict)
    expires_in: float = bounded(0.0, 86400.0, default=0.0)


@dataclass(frozen=True, slots=True)
class AgentTask:
    """A task as an agent reports it in REGISTER / HEARTBEAT."""

    task_id: str = id_field()
    framework_id: str = id_field()
    resources: Resources = field(default_factory=Resources)
    state: TaskState = TaskState.RUNNING


@dataclass(frozen=True, slots=True)
class Usage:
    """What an agent's tasks use, sampled once per heartbeat, in columns: item ``i`` of each column is
    about ``tasks[i]`` of the same REGISTER / HEARTBEAT (no ids repeated: 27 bytes of msgpack per task).
    A value the agent could not measure is its last known one, else 0."""

    cpu_seconds: list[float] = bounded(0.0, MAX_USAGE, default_factory=list)  # CPU time used since start
    mem_mb: list[float] = bounded(0.0, MAX_USAGE, default_factory=list)  # memory in use now
    disk_mb: list[float] = bounded(0.0, MAX_USAGE, default_factory=list)  # size of the sandbox


# -- agent -> master (exchange agent.register) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class _AgentInfo:
    agent_id: str = id_field()
    hostname: str = ""
    resources: Resources = field(default_factory=Resources)
    attributes: dict[str, str] = field(default_factory=dict)
    tasks: list[AgentTask] = field(default_factory=list)
    heartbeat_interval: float = bounded(0.05, 3600.0, default=5.0)
    # absent: not sampled (e.g. a REGISTER); else each column has exactly one value per item of ``tasks``
    usage: Usage | None = None

    def __post_init__(self) -> None:
        u = self.usage
        if u is not None and not len(u.cpu_seconds) == len(u.mem_mb) == len(u.disk_mb) == len(self.tasks):
            raise ProtocolError(f"usage columns have {len(u.cpu_seconds)}, {len(u.mem_mb)} and {len(u.disk_mb)} "
                                f"values for {len(self.tasks)} tasks (one per task each)")


@message("REGISTER")
@dataclass(frozen=True, slots=True)
class Register(_AgentInfo):
    """An agent announces itself (also sent again after a broker reconnect)."""


@message("HEARTBEAT")
@dataclass(frozen=True, slots=True)
class Heartbeat(_AgentInfo):
    """Periodic proof of life; carries the full agent info so a restarted master re-learns the agent."""


# -- framework -> master (exchange master, routing key = type) --------------------------------


@message("SUBSCRIBE")
@dataclass(frozen=True, slots=True)
class Subscribe:
    framework_id: str = id_field()
    name: str = ""
    role: str = role_field(default="*")
    weight: float = bounded(0.001, 1e6, default=1.0)
    user: str = user_field(default="")
    failover_timeout: float = bounded(0.0, MAX_REFUSE_SECONDS, default=DEFAULT_FAILOVER_TIMEOUT)
    # Mesos' PARTITION_AWARE capability: tasks on a lost agent go TASK_UNREACHABLE (not LOST) and are
    # kept, not killed, if the agent comes back
    partition_aware: bool = False


@message("ACCEPT")
@dataclass(frozen=True, slots=True)
class Accept:
    framework_id: str = id_field()
    offer_ids: list[str] = id_field(default_factory=list)
    tasks: list[TaskInfo] = field(default_factory=list)
    refuse_seconds: float = bounded(0.0, MAX_REFUSE_SECONDS, default=0.0)


@message("DECLINE")
@dataclass(frozen=True, slots=True)
class Decline:
    framework_id: str = id_field()
    offer_ids: list[str] = id_field(default_factory=list)
    refuse_seconds: float = bounded(0.0, MAX_REFUSE_SECONDS, default=DEFAULT_REFUSE_SECONDS)


@message("KILL")
@dataclass(frozen=True, slots=True)
class Kill:
    framework_id: str = id_field()
    task_ids: list[str] = id_field(default_factory=list)


@message("REVIVE")
@dataclass(frozen=True, slots=True)
class Revive:
    framework_id: str = id_field()


@message("SUPPRESS")
@dataclass(frozen=True, slots=True)
class Suppress:
    framework_id: str = id_field()


@message("RECONCILE")
@dataclass(frozen=True, slots=True)
class Reconcile:
    """Ask for the latest state of ``task_ids``, or of every task of the framework when empty."""

    framework_id: str = id_field()
    task_ids: list[str] = id_field(default_factory=list)


@message("TEARDOWN")
@dataclass(frozen=True, slots=True)
class Teardown:
    """The framework is done: its tasks are killed and it is forgotten."""

    framework_id: str = id_field()


# -- operators -> master (exchange master, routing key = type; answered on reply_to) ---------


@message("SET_ALLOCATOR")
@dataclass(frozen=True, slots=True)
class SetAllocator:
    """Switch the running master's allocator policy (takes effect at the next round)."""

    policy: str
    params: dict[str, str] = field(default_factory=dict)


@message("GET_ALLOCATOR")
@dataclass(frozen=True, slots=True)
class GetAllocator:
    """Ask for the current allocator policy; answered with ALLOCATOR."""


@message("SET_ROLE")
@dataclass(frozen=True, slots=True)
class SetRole:
    """Set a role's weight and quota; an absent field keeps its current value."""

    role: str = role_field()
    weight: float | None = bounded(0.001, 1e6, default=None)
    guarantee: Resources | None = None
    limit: Resources | None = None


@message("GET_ROLES")
@dataclass(frozen=True, slots=True)
class GetRoles:
    """Ask for every known role (configured, or used by a framework); answered with ROLES."""


@dataclass(frozen=True, slots=True)
class RoleInfo:
    role: str = role_field()
    weight: float = 1.0
    guarantee: Resources = field(default_factory=Resources)
    limit: Resources = field(default_factory=Resources)
    allocated: Resources = field(default_factory=Resources)
    frameworks: list[str] = id_field(default_factory=list)


@message("ALLOCATOR")
@dataclass(frozen=True, slots=True)
class AllocatorInfo:
    """The master's allocator policy, its parameters, and every policy it can switch to."""

    policy: str = ""
    params: dict[str, str] = field(default_factory=dict)
    policies: list[str] = field(default_factory=list)


@message("ROLES")
@dataclass(frozen=True, slots=True)
class Roles:
    roles: list[RoleInfo] = field(default_factory=list)


@message("SET_ACL")
@dataclass(frozen=True, slots=True)
class SetAcl:
    """What a framework principal (``framework.<name>``) may do beyond its own framework ids: the roles
    it may subscribe with and the OS users its tasks may run as (Mesos' ``run_tasks``); ``*``: any."""

    principal: str
    roles: list[str] = role_field(default_factory=list)
    users: list[str] = field(default_factory=list)


@message("GET_ACLS")
@dataclass(frozen=True, slots=True)
class GetAcls:
    """Ask for every framework principal's ACL; answered with ACLS."""


@dataclass(frozen=True, slots=True)
class AclInfo:
    principal: str
    roles: list[str] = role_field(default_factory=list)
    users: list[str] = field(default_factory=list)


@message("ACLS")
@dataclass(frozen=True, slots=True)
class Acls:
    acls: list[AclInfo] = field(default_factory=list)


# -- master -> framework (exchange offers, routing key = framework id; or the caller's reply_to) --


@message("SUBSCRIBED")
@dataclass(frozen=True, slots=True)
class Subscribed:
    framework_id: str = id_field()
    master_id: str = ""


@message("OFFERS")
@dataclass(frozen=True, slots=True)
class Offers:
    offers: list[Offer] = field(default_factory=list)


@message("RESCIND")
@dataclass(frozen=True, slots=True)
class Rescind:
    offer_ids: list[str] = id_field(default_factory=list)


@message("UPDATE")
@dataclass(frozen=True, slots=True)
class Update:
    """Task states sent straight to a framework (answers to RECONCILE)."""

    updates: list[TaskStatus] = field(default_factory=list)


@message("ERROR")
@dataclass(frozen=True, slots=True)
class Error:
    message: str = ""
    call_type: str = ""
    call_id: str = ""


# -- master -> agent (exchange tasks, routing key = agent id) ---------------------------------


@message("RUN_TASKS")
@dataclass(frozen=True, slots=True)
class RunTasks:
    framework_id: str = id_field()
    tasks: list[TaskInfo] = field(default_factory=list)


@message("KILL_TASKS")
@dataclass(frozen=True, slots=True)
class KillTasks:
    """Kill these tasks. ``quiet``: the master has already published their terminal state (TASK_LOST
    when it removed their agent), so the agent ends them without a status update — nothing follows a
    task's terminal update on `status` — and they simply leave its heartbeats."""

    framework_id: str = id_field()
    task_ids: list[str] = id_field(default_factory=list)
    quiet: bool = False


# -- agents and master -> everyone (exchange status, key <framework>.<agent>.<state>) ---------


@message("STATUS")
@dataclass(frozen=True, slots=True)
class Status:
    """Status updates that share one framework, agent and state (so one routing key)."""

    updates: list[TaskStatus] = field(default_factory=list)


# -- master -> monitors (exchange events, key = kind) -----------------------------------------


@message("EVENT")
@dataclass(frozen=True, slots=True)
class ClusterEvent:
    kind: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


FRAMEWORK_CALLS: tuple[type, ...] = (Subscribe, Accept, Decline, Kill, Revive, Suppress, Reconcile, Teardown)
AGENT_MESSAGES: tuple[type, ...] = (Register, Heartbeat)
ADMIN_CALLS: tuple[type, ...] = (SetAllocator, GetAllocator, SetRole, GetRoles, SetAcl, GetAcls)
ALLOCATION_CALLS: tuple[type, ...] = (SetAllocator, GetAllocator, SetRole, GetRoles)
