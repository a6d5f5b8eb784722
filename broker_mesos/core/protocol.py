"""Message bodies of the wire protocol (normative description: docs/protocol.md).

Names follow Mesos' v1 scheduler API where it fits. Every class here is a frozen dataclass registered
with the codec under its wire ``type``; decoding validates field names, types and ranges.
"""

from __future__ import annotations

import enum
import re
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
    GONE_BY_OPERATOR = "TASK_GONE_BY_OPERATOR"  # its agent was marked gone by an operator (MARK_AGENT_GONE)

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({TaskState.FINISHED, TaskState.FAILED, TaskState.KILLED, TaskState.LOST,
                             TaskState.ERROR, TaskState.DROPPED, TaskState.GONE_BY_OPERATOR})


# -- shared values ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandInfo:
    """What to run. ``shell=True``: ``value`` is run by ``/bin/sh -c``; otherwise ``arguments`` is argv."""

    value: str = ""
    shell: bool = True
    arguments: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExecutorInfo:
    """A framework's executor (Mesos' ExecutorInfo): a process the agent starts the first time a task
    names it on that agent, hands that task and every later task naming it, and stops once it has had
    no task for the agent's idle timeout, when its framework is torn down, or when it is told to.
    ``resources`` are its own, charged once per agent on top of its tasks'. Every task naming the same
    ``executor_id`` on one agent must carry the same ExecutorInfo."""

    executor_id: str = id_field()
    command: CommandInfo = field(default_factory=CommandInfo)
    resources: Resources = field(default_factory=Resources)
    name: str = ""


class HealthCheckType(enum.StrEnum):
    """What a health check does; the value is what travels."""

    COMMAND = "COMMAND"  # ``command`` exits 0
    TCP = "TCP"  # a TCP connection to the port is accepted
    HTTP = "HTTP"  # GET ``path`` on the port answers a status in 200-399


HEALTH_CHECK_PATH = re.compile(r"/[!-~]{0,2047}")  # an HTTP check's path: "/" then printable ASCII, no space


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """Mesos' HealthCheck: run by the agent next to a command task, its result reported in the task's
    status updates (``TaskStatus.healthy``). Checks start ``delay_seconds`` after the task runs, every
    ``interval_seconds``, each given ``timeout_seconds``; failures within ``grace_period_seconds`` of the
    start do not count until a first success; ``consecutive_failures`` failures in a row kill the task.
    TCP and HTTP checks connect to 127.0.0.1 at ``port``, or (``port`` 0) at the task's
    ``port_index``-th port (its ``ports`` resource, ranges in order). Defaults are Mesos'.
    A COMMAND check needs a ``command`` to run; ``path`` is ``/`` then printable ASCII (no space)."""

    type: HealthCheckType
    command: CommandInfo | None = None
    port: int = bounded(0, 65535, default=0)
    port_index: int = bounded(0, 1023, default=0)
    path: str = "/"
    delay_seconds: float = bounded(0.0, 86400.0, default=15.0)
    interval_seconds: float = bounded(0.1, 86400.0, default=10.0)
    timeout_seconds: float = bounded(0.1, 3600.0, default=20.0)
    grace_period_seconds: float = bounded(0.0, 86400.0, default=10.0)
    consecutive_failures: int = bounded(1, 1000, default=3)

    def __post_init__(self) -> None:
        command = self.command
        if self.type == HealthCheckType.COMMAND and (
                command is None or not (command.value if command.shell else command.arguments)):
            raise ProtocolError("a COMMAND health check needs a command (a value, or arguments with shell false)")
        if not HEALTH_CHECK_PATH.fullmatch(self.path):
            raise ProtocolError("a health check's path must be / then at most 2047 printable ASCII characters "
                                "(no space)")


@dataclass(frozen=True, slots=True)
class TaskInfo:
    task_id: str = id_field()
    agent_id: str = id_field()
    resources: Resources = field(default_factory=Resources)
    command: CommandInfo = field(default_factory=CommandInfo)
    name: str = ""
    # the OS user the task runs as ("": its framework's SUBSCRIBE.user, else the agent's default)
    user: str = user_field(default="")
    # run by this executor of the framework instead of the agent's command executor (``command`` unused)
    executor: ExecutorInfo | None = None
    data: bytes = b""  # opaque to everyone but the executor (Mesos' TaskInfo.data), at most MAX_DATA_BYTES
    # checked by the agent next to the task (command tasks only; an executor checks its own tasks)
    health_check: HealthCheck | None = None


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
    # opaque data an executor attaches to an update (e.g. a task's result), at most MAX_DATA_BYTES
    data: bytes = b""
    executor_id: str = id_field(empty_ok=True, default="")  # the executor that ran the task ("": none)
    healthy: bool | None = None  # the task's health check result (None: it has none, or none ran yet)


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
class AgentExecutor:
    """An executor an agent runs, as it reports it in REGISTER / HEARTBEAT (its resources are charged
    on the agent as long as it is reported)."""

    framework_id: str = id_field()
    executor_id: str = id_field()
    resources: Resources = field(default_factory=Resources)


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
    executors: list[AgentExecutor] = field(default_factory=list)

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


@message("MESSAGE")
@dataclass(frozen=True, slots=True)
class Message:
    """A framework message for one of its executors (Mesos' MESSAGE call): best effort, at most once,
    ``data`` at most MAX_DATA_BYTES. An executor the master does not know on that agent is an ERROR."""

    framework_id: str = id_field()
    agent_id: str = id_field()
    executor_id: str = id_field()
    data: bytes = b""


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


# -- state queries and the operator's kill (exchange master, routing key = type; docs/protocol.md §18) --

QUERY_KINDS = ("summary", "agents", "frameworks", "tasks", "offers", "roles")
MAX_QUERY_LIMIT = 1000  # items per QUERY_RESULT page
MAX_KILL_TASKS = 1000  # tasks per OPERATOR_KILL
TASK_SORTS = ("usage:cpu", "usage:mem", "usage:disk")  # tasks, largest reported usage first


@message("QUERY")
@dataclass(frozen=True, slots=True)
class Query:
    """A read-only question about the cluster, answered with QUERY_RESULT on ``reply_to``: one page
    (``offset``, ``limit``) of the items of kind ``what`` that pass every filter given."""

    what: str
    state: str = ""
    framework_id: str = id_field(empty_ok=True, default="")
    agent_id: str = id_field(empty_ok=True, default="")
    role: str = ""
    id_prefix: str = ""
    fits: Resources | None = None  # agents: only those whose total holds these
    sort: str = ""  # agents "total:<name>", "free:<name>", "used:<name>"; tasks "usage:cpu|mem|disk"
    completed: bool = False  # tasks: also the ended tasks the master remembers
    history: bool = False  # tasks: each with its status history
    offset: int = bounded(0, 1_000_000_000, default=0)
    limit: int = bounded(0, MAX_QUERY_LIMIT, default=100)

    def __post_init__(self) -> None:  # `what` and `sort` are the master's to judge (ERROR: queries.check)
        if len(self.id_prefix) > 128 or len(self.state) > 64 or len(self.role) > 128 or len(self.sort) > 160:
            raise ProtocolError("QUERY filter too long (id_prefix and role at most 128, state 64, sort 160)")


@dataclass(frozen=True, slots=True)
class ClusterSummary:
    master_id: str = ""
    uptime: float = 0.0  # seconds this master has been the active one
    agents: dict[str, int] = field(default_factory=dict)  # agents by state
    frameworks: dict[str, int] = field(default_factory=dict)  # frameworks by state
    tasks: dict[str, int] = field(default_factory=dict)  # live tasks by state, plus remembered ended ones
    total: Resources = field(default_factory=Resources)
    used: Resources = field(default_factory=Resources)
    offered: Resources = field(default_factory=Resources)
    free: Resources = field(default_factory=Resources)
    offers: int = 0


@dataclass(frozen=True, slots=True)
class AgentItem:
    agent_id: str = id_field()
    hostname: str = ""
    state: str = ""
    total: Resources = field(default_factory=Resources)
    free: Resources = field(default_factory=Resources)
    offered: Resources = field(default_factory=Resources)
    used: Resources = field(default_factory=Resources)
    attributes: dict[str, str] = field(default_factory=dict)
    tasks: int = 0
    last_seen: float = 0.0
    usage_cpu_seconds: float = 0.0
    usage_mem_mb: float = 0.0
    usage_disk_mb: float = 0.0


@dataclass(frozen=True, slots=True)
class FrameworkItem:
    framework_id: str = id_field()
    name: str = ""
    role: str = ""
    weight: float = 1.0
    state: str = ""
    suppressed: bool = False
    user: str = ""
    allocated: Resources = field(default_factory=Resources)
    offered: Resources = field(default_factory=Resources)
    tasks: int = 0
    failover_timeout: float = 0.0
    disconnected_at: float | None = None


@dataclass(frozen=True, slots=True)
class TaskItem:
    task_id: str = id_field()
    framework_id: str = id_field()
    agent_id: str = id_field(empty_ok=True, default="")
    hostname: str = ""
    state: TaskState = TaskState.STAGING
    resources: Resources = field(default_factory=Resources)
    launched_at: float = 0.0
    updated_at: float | None = None
    message: str = ""
    reason: str = ""
    exit_code: int | None = None
    usage_cpu_seconds: float | None = None
    usage_mem_mb: float | None = None
    usage_disk_mb: float | None = None
    history: list[TaskStatus] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class OfferItem:
    offer_id: str = id_field()
    framework_id: str = id_field()
    agent_id: str = id_field()
    resources: Resources = field(default_factory=Resources)
    expires_in: float = 0.0


@message("QUERY_RESULT")
@dataclass(frozen=True, slots=True)
class QueryResult:
    """One page of a QUERY's answer: ``total`` items passed the filters, these are from ``offset`` on."""

    what: str = ""
    total: int = 0
    offset: int = 0
    summary: ClusterSummary | None = None
    agents: list[AgentItem] = field(default_factory=list)
    frameworks: list[FrameworkItem] = field(default_factory=list)
    tasks: list[TaskItem] = field(default_factory=list)
    offers: list[OfferItem] = field(default_factory=list)
    roles: list[RoleInfo] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TaskRef:
    framework_id: str = id_field()
    task_id: str = id_field()


@message("OPERATOR_KILL")
@dataclass(frozen=True, slots=True)
class OperatorKill:
    """An operator kills tasks of any framework, through each framework's ordinary kill path; refused
    whole (nothing killed) if one of them is not live. Answered with UPDATE (their states before)."""

    tasks: list[TaskRef]

    def __post_init__(self) -> None:
        if not self.tasks or len(self.tasks) > MAX_KILL_TASKS:
            raise ProtocolError(f"OPERATOR_KILL names 1 to {MAX_KILL_TASKS} tasks")


# -- operators drain agents and mark removed ones gone (docs/protocol.md §6.8, §11) ----------------

MAX_DRAIN_DEADLINE = 30 * 24 * 3600.0  # seconds: the longest DRAIN_AGENT deadline (30 days)


@message("DRAIN_AGENT")
@dataclass(frozen=True, slots=True)
class DrainAgent:
    """Stop offering a registered agent's resources (outstanding offers rescinded at once); ``kill``: kill
    its tasks now; ``deadline_seconds``: kill those still running then; neither: let them finish.
    Answered with AGENT_ADMIN_RESULT. Draining an agent again replaces its deadline and kill."""

    agent_id: str = id_field()
    deadline_seconds: float | None = bounded(0.0, MAX_DRAIN_DEADLINE, default=None)
    kill: bool = False


@message("UNDRAIN_AGENT")
@dataclass(frozen=True, slots=True)
class UndrainAgent:
    """End a drain: the agent's resources are offered again. Answered with AGENT_ADMIN_RESULT."""

    agent_id: str = id_field()


@message("MARK_AGENT_GONE")
@dataclass(frozen=True, slots=True)
class MarkAgentGone:
    """An agent that is not registered (removed for silence) is gone for good: its tasks the master
    remembers as TASK_LOST / TASK_UNREACHABLE end TASK_GONE_BY_OPERATOR, and the id may never register
    again. Answered with AGENT_ADMIN_RESULT."""

    agent_id: str = id_field()


@message("AGENT_ADMIN_RESULT")
@dataclass(frozen=True, slots=True)
class AgentAdminResult:
    """The answer to DRAIN_AGENT, UNDRAIN_AGENT and MARK_AGENT_GONE: the agent's state now (``ACTIVE``,
    ``DRAINING``, ``DRAINED`` or ``GONE``), its live tasks, how many this call killed or marked gone,
    and the drain deadline (the master's clock, seconds since the epoch) if there is one."""

    agent_id: str = id_field()
    state: str = ""
    tasks: int = 0
    killed: int = 0
    gone: int = 0
    deadline: float | None = None


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


@message("EXECUTOR_MESSAGE")
@dataclass(frozen=True, slots=True)
class ExecutorMessage:
    """A message from one of the framework's executors (Mesos' MESSAGE event), relayed by the master."""

    agent_id: str = id_field()
    executor_id: str = id_field()
    data: bytes = b""


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


@message("TO_EXECUTOR")
@dataclass(frozen=True, slots=True)
class ToExecutor:
    """A framework's MESSAGE, relayed by the master to the agent that runs the executor."""

    framework_id: str = id_field()
    executor_id: str = id_field()
    data: bytes = b""


@message("SHUTDOWN_EXECUTORS")
@dataclass(frozen=True, slots=True)
class ShutdownExecutors:
    """Stop these executors of the framework (all of them when ``executor_ids`` is empty): each gets its
    shutdown callback, then SIGKILL after the agent's shutdown grace; their tasks end TASK_KILLED."""

    framework_id: str = id_field()
    executor_ids: list[str] = id_field(default_factory=list)


# -- agent -> master (exchange agent.register, routing key message) -----------------------------


@message("FROM_EXECUTOR")
@dataclass(frozen=True, slots=True)
class FromExecutor:
    """An executor's message for its scheduler, sent by the agent that runs it; relayed by the master
    as EXECUTOR_MESSAGE on the framework's offers queue."""

    agent_id: str = id_field()
    framework_id: str = id_field()
    executor_id: str = id_field()
    data: bytes = b""


# -- executor <-> its agent (the agent's local executor socket, docs/protocol.md section 17) --------


# the environment an agent gives each executor it starts (besides every task's: BMESOS_FRAMEWORK_ID,
# BMESOS_AGENT_ID, BMESOS_SANDBOX, ...)
ENV_AGENT_ENDPOINT = "BMESOS_AGENT_ENDPOINT"  # the path of the agent's executor socket
ENV_EXECUTOR_TOKEN = "BMESOS_EXECUTOR_TOKEN"  # the secret its executor.SUBSCRIBE must carry
ENV_EXECUTOR_ID = "BMESOS_EXECUTOR_ID"
ENV_FRAMEWORK_ID = "BMESOS_FRAMEWORK_ID"
ENV_AGENT_ID = "BMESOS_AGENT_ID"
ENV_RECOVERY_TIMEOUT = "BMESOS_RECOVERY_TIMEOUT"  # seconds it keeps reconnecting after its agent went away


@message("executor.SUBSCRIBE")
@dataclass(frozen=True, slots=True)
class ExecutorSubscribe:
    """An executor's first frame on each connection (also after its agent restarted): who it is, the
    token the agent gave it, the updates it sent and saw no ACKNOWLEDGED for, the tasks it runs."""

    framework_id: str = id_field()
    executor_id: str = id_field()
    token: str = ""
    unacknowledged_updates: list[TaskStatus] = field(default_factory=list)
    task_ids: list[str] = id_field(default_factory=list)


@message("executor.SUBSCRIBED")
@dataclass(frozen=True, slots=True)
class ExecutorSubscribed:
    agent_id: str = id_field()
    framework_id: str = id_field()
    executor_id: str = id_field()
    hostname: str = ""


@message("executor.LAUNCH")
@dataclass(frozen=True, slots=True)
class ExecutorLaunch:
    task: TaskInfo


@message("executor.KILL")
@dataclass(frozen=True, slots=True)
class ExecutorKill:
    task_id: str = id_field()


@message("executor.UPDATE")
@dataclass(frozen=True, slots=True)
class ExecutorUpdate:
    """A status update for one of the executor's tasks. The agent fills in (and checks) framework,
    agent and executor ids and the source; it answers executor.ACKNOWLEDGED once the update is in its
    status journal (from there on the agent's at-least-once delivery covers it)."""

    status: TaskStatus


@message("executor.ACKNOWLEDGED")
@dataclass(frozen=True, slots=True)
class ExecutorAcknowledged:
    task_id: str = id_field()
    uuid: str = id_field()


@message("executor.MESSAGE")
@dataclass(frozen=True, slots=True)
class ExecutorData:
    """A framework message: to the executor (from its scheduler) or from it (for its scheduler)."""

    data: bytes = b""


@message("executor.SHUTDOWN")
@dataclass(frozen=True, slots=True)
class ExecutorShutdown:
    """Stop: kill every task (each ends TASK_KILLED) and exit; SIGKILL follows after the grace."""

    grace_seconds: float = bounded(0.0, 3600.0, default=5.0)


@message("executor.ERROR")
@dataclass(frozen=True, slots=True)
class ExecutorError:
    message: str = ""


EXECUTOR_CALLS: tuple[type, ...] = (ExecutorSubscribe, ExecutorUpdate, ExecutorData)
EXECUTOR_EVENTS: tuple[type, ...] = (ExecutorSubscribed, ExecutorLaunch, ExecutorKill, ExecutorAcknowledged,
                                     ExecutorData, ExecutorShutdown, ExecutorError)


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



# -- task logs (docs/protocol.md §19): requester -> master (READ_LOG), master -> agent (SEND_LOG),
# agent -> requester (LOG_DATA, exchange logs, key <requester user>.<reply_token>) ------------------

LOG_CHUNK_BYTES = 256 * 1024  # the most one LOG_DATA carries (the codec's bytes limit)
LOG_MAX_WINDOW = 4 * 1024 * 1024  # the most one READ_LOG is answered with (16 chunks); ask again for more
MAX_TAIL_LINES = 100_000
LOG_BUSY = "busy:"  # an ERROR answering READ_LOG that begins so means: ask again a little later
MAX_LOG_OFFSET = 2**62
LOG_REPLY_KEY = re.compile(r"[A-Za-z0-9_.-]{1,300}")  # no * or #: an exact topic key


class LogFile(enum.StrEnum):
    """Which file of the task's sandbox."""

    STDOUT = "stdout"
    STDERR = "stderr"


@message("READ_LOG")
@dataclass(frozen=True, slots=True)
class ReadLog:
    """Ask for up to ``max_bytes`` of a task's stdout or stderr from ``offset`` on (or from the start of
    its last ``tail_lines`` lines). The master finds the task's agent (``framework_id`` "": the one
    framework the sender may read with such a task; ``task_id`` may be a unique prefix), authorises the
    sender and relays it as SEND_LOG; the agent answers with LOG_DATA, problems come as ERROR."""

    task_id: str = id_field()
    reply_token: str = id_field()  # the answer's routing key on `logs` is <sender user>.<reply_token>
    framework_id: str = id_field(empty_ok=True, default="")
    file: LogFile = LogFile.STDOUT
    offset: int = bounded(0, MAX_LOG_OFFSET, default=0)
    tail_lines: int | None = bounded(0, MAX_TAIL_LINES, default=None)
    max_bytes: int = bounded(1, LOG_MAX_WINDOW, default=LOG_MAX_WINDOW)


@message("SEND_LOG")
@dataclass(frozen=True, slots=True)
class SendLog:
    """The master's order to an agent (exchange tasks): send these bytes of this task's sandbox file as
    LOG_DATA to exchange ``logs`` with routing key ``reply_key`` (AMQP correlation_id copied)."""

    framework_id: str = id_field()
    task_id: str = id_field()
    reply_key: str
    file: LogFile = LogFile.STDOUT
    offset: int = bounded(0, MAX_LOG_OFFSET, default=0)
    tail_lines: int | None = bounded(0, MAX_TAIL_LINES, default=None)
    max_bytes: int = bounded(1, LOG_MAX_WINDOW, default=LOG_MAX_WINDOW)

    def __post_init__(self) -> None:
        if not LOG_REPLY_KEY.fullmatch(self.reply_key):
            raise ProtocolError("SEND_LOG reply_key must be 1-300 of A-Z a-z 0-9 _ . - (<user>.<reply_token>)")


@message("LOG_DATA")
@dataclass(frozen=True, slots=True)
class LogData:
    """One chunk of a task's file: ``data`` are its bytes from ``offset`` on; ``size`` its length when
    the answer began. ``last``: the answer's final chunk; ``done``: besides, the task had ended before
    the read began and this chunk reaches the end of the file, so nothing more will ever come."""

    framework_id: str = id_field()
    task_id: str = id_field()
    agent_id: str = id_field()
    file: LogFile = LogFile.STDOUT
    offset: int = bounded(0, MAX_LOG_OFFSET, default=0)
    size: int = bounded(0, MAX_LOG_OFFSET, default=0)
    data: bytes = b""
    last: bool = False
    done: bool = False

# -- built-in frameworks (docs/protocol.md §20): caller -> exchange builtin, key <framework_id>.calls
# (CONTROL); the framework's active scheduler -> exchange builtin, key = the caller's reply queue
# (CONTROL_RESULT, correlation_id copied) -------------------------------------------------------------
MAX_CONTROL_COMMAND = 64


@message("CONTROL")
@dataclass(frozen=True, slots=True)
class Control:
    """A command to a built-in framework's scheduler (``bmesos service ...``, ``bmesos job ...``):
    ``command`` names it, ``args`` are its JSON-like arguments (e.g. a parsed spec)."""

    command: str
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < len(self.command) <= MAX_CONTROL_COMMAND or not self.command.replace("-", "").isalnum():
            raise ProtocolError(f"CONTROL command must be 1-{MAX_CONTROL_COMMAND} of A-Z a-z 0-9 -")


@message("CONTROL_RESULT")
@dataclass(frozen=True, slots=True)
class ControlResult:
    """The answer to one CONTROL: ``result`` (JSON-like values; a list answer is under ``items``) when
    ``error`` is empty, else why it was refused."""

    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""


FRAMEWORK_CALLS: tuple[type, ...] = (Subscribe, Accept, Decline, Kill, Revive, Suppress, Reconcile, Teardown,
                                     Message)
AGENT_MESSAGES: tuple[type, ...] = (Register, Heartbeat, FromExecutor)
# QUERY is here for its binding on `master.calls`; unlike the others it is open to monitors and frameworks
ADMIN_CALLS: tuple[type, ...] = (SetAllocator, GetAllocator, SetRole, GetRoles, SetAcl, GetAcls, Query, OperatorKill,
                                 DrainAgent, UndrainAgent, MarkAgentGone)
AGENT_ADMIN_CALLS: tuple[type, ...] = (DrainAgent, UndrainAgent, MarkAgentGone)
ALLOCATION_CALLS: tuple[type, ...] = (SetAllocator, GetAllocator, SetRole, GetRoles)
LOG_CALLS: tuple[type, ...] = (ReadLog,)  # answered by the task's agent, not the master
