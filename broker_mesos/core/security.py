"""Who may do what: principals are RabbitMQ users, and this module says what each may do, both as the
broker's permissions (``permissions``) and as the master's checks (``may_*``). Pure: no I/O.

A principal's kind and name are in its user name, so the broker's answer to "who is this?" (the
AMQP ``user_id`` it validates on every publish) is all the master needs::

    master                 the master (shared by its standbys; ``--master-principal`` to rename)
    agent.<agent_id>       one agent: registers, heartbeats and reports status as <agent_id> only
    framework.<name>       one framework owner: framework ids <name> and <name>-<anything>
    operator.<name>        admin calls (allocator, roles, kills), state queries, reads status and events
    monitor.<name>         state queries, reads status and events, nothing else

Two fences (docs/security.md): the broker enforces ``permissions`` (which queues and exchanges,
and on the topic exchanges which routing keys); the master checks every message's ``user_id``
against what it claims. The master's check is the authority: RabbitMQ 3.x does not check CC/BCC
routing headers against topic permissions.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from broker_mesos.core.codec import ID_PATTERN

DEFAULT_MASTER_PRINCIPAL = "master"
SERVER_NAMED = r"amq\.gen-[A-Za-z0-9_-]+"


class Kind(enum.StrEnum):
    MASTER = "master"
    AGENT = "agent"
    FRAMEWORK = "framework"
    OPERATOR = "operator"
    MONITOR = "monitor"


@dataclass(frozen=True, slots=True)
class Principal:
    kind: Kind
    name: str  # the agent id, the framework owner, the operator's or monitor's name ("" for the master)

    @property
    def user(self) -> str:
        return self.name if self.kind is Kind.MASTER else f"{self.kind.value}.{self.name}"


def principal(kind: Kind | str, name: str) -> Principal:
    """A principal of ``kind`` named ``name`` (an identifier), or ``ValueError``."""
    kind = Kind(kind)
    if not ID_PATTERN.fullmatch(name):
        raise ValueError(f"principal name {name!r} is not an identifier (1-128 of A-Z a-z 0-9 _ -)")
    return Principal(kind, name)


def parse(user: str | None, master_user: str = DEFAULT_MASTER_PRINCIPAL) -> Principal | None:
    """The principal a broker user name stands for, or None (not one of ours: refused everywhere)."""
    if not user:
        return None
    if user == master_user:
        return Principal(Kind.MASTER, user)
    kind, dot, name = user.partition(".")
    if not dot or kind == Kind.MASTER.value or kind not in Kind.__members__.values() \
            or not ID_PATTERN.fullmatch(name):
        return None
    return Principal(Kind(kind), name)


def owns_framework(who: Principal, framework_id: str) -> bool:
    """A framework principal owns the framework ids ``<name>`` and ``<name>-<anything>``."""
    return who.kind is Kind.FRAMEWORK and (framework_id == who.name or framework_id.startswith(who.name + "-"))


def framework_id_prefix(who: Principal) -> str:
    """What the SDK puts before its generated framework ids so that this principal owns them."""
    return f"{who.name}-"


# -- the master's checks ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Denied:
    """Why a message is refused, said to the sender and in the ``security.denied`` event."""

    reason: str


def check_call(who: Principal | None, call_type: str, framework_id: str | None) -> Denied | None:
    """A call on exchange ``master``: framework calls from the owner of ``framework_id``, admin calls
    (``framework_id`` None) from operators."""
    if who is None:
        return Denied(f"{call_type} from a user that is no principal of this cluster")
    if framework_id is None:
        if who.kind is not Kind.OPERATOR:
            return Denied(f"{call_type} is an operator's call; {who.user} is not an operator")
        return None
    if not owns_framework(who, framework_id):
        return Denied(f"{who.user} may not act for framework {framework_id}")
    return None


FRAMEWORK_QUERIES = frozenset({"summary", "agents", "frameworks", "tasks", "offers"})


def check_query(who: Principal | None, what: str) -> Denied | None:
    """QUERY: operators and monitors may ask anything; a framework principal every kind but ``roles``
    (the master then shows it only its own frameworks, their tasks and offers: ``query_scope``);
    agents nothing."""
    if who is not None and who.kind in (Kind.OPERATOR, Kind.MONITOR, Kind.MASTER):
        return None
    if who is not None and who.kind is Kind.FRAMEWORK and what in FRAMEWORK_QUERIES:
        return None
    shown = who.user if who is not None else "a user that is no principal of this cluster"
    return Denied(f"{shown} may not query {what}")


def query_scope(who: Principal | None) -> Callable[[str], bool] | None:
    """The framework ids a query's answer may show this asker (None: every one)."""
    if who is None or who.kind is not Kind.FRAMEWORK:
        return None
    return lambda framework_id: owns_framework(who, framework_id)


def check_control(who: Principal | None, framework_id: str, read_only: bool) -> Denied | None:
    """CONTROL to a built-in framework: operators may use every command, monitors the read-only ones,
    and the framework's own principal every command (its own tools); nobody else any."""
    if who is not None and (who.kind is Kind.OPERATOR or owns_framework(who, framework_id)):
        return None
    if who is not None and who.kind is Kind.MONITOR and read_only:
        return None
    shown = who.user if who is not None else "a user that is no principal of this cluster"
    return Denied(f"{shown} may not use this command of {framework_id}")


def check_agent(who: Principal | None, agent_id: str) -> Denied | None:
    """REGISTER / HEARTBEAT / STATUS: only agent ``agent_id`` speaks as it (the master too, for status)."""
    if who is not None and who.kind is Kind.AGENT and who.name == agent_id:
        return None
    shown = who.user if who is not None else "a user that is no principal of this cluster"
    return Denied(f"{shown} may not speak for agent {agent_id}")


@dataclass(frozen=True, slots=True)
class FrameworkAcl:
    """What an operator allowed a framework principal: roles and OS users (``*``: any)."""

    roles: frozenset[str] = frozenset({"*"})
    users: frozenset[str] = frozenset()


def check_role(acl: FrameworkAcl, role: str, who: Principal) -> Denied | None:
    if role in acl.roles:
        return None
    return Denied(f"{who.user} may not use role {role} (allowed: {', '.join(sorted(acl.roles)) or 'none'})")


def check_user(acl: FrameworkAcl, user: str, who: Principal) -> Denied | None:
    """Mesos' ``run_tasks`` ACL: a framework principal runs tasks only as the OS users allowed to it
    (``""``, the agent's default task user, is always allowed: the agent's operator chose it)."""
    if not user or user in acl.users or "*" in acl.users:
        return None
    return Denied(f"{who.user} may not run tasks as user {user or '(the agent default)'}")


def check_read_log(who: Principal | None, framework_id: str) -> Denied | None:
    """READ_LOG: operators and monitors may read any task's output, a framework principal only its own
    frameworks' tasks (docs/security.md, "Task logs"); agents none."""
    if who is not None and who.kind in (Kind.OPERATOR, Kind.MONITOR, Kind.MASTER):
        return None
    if who is not None and owns_framework(who, framework_id):
        return None
    shown = who.user if who is not None else "a user that is no principal of this cluster"
    return Denied(f"{shown} may not read the logs of framework {framework_id}'s tasks")


def log_binding(who: Principal) -> str:
    """The binding keys on exchange ``logs`` a principal may use: its own user name, a dot, a token."""
    return rf"^{re.escape(who.user)}\.[A-Za-z0-9_-]+$"


# -- the broker's permissions -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Permissions:
    """RabbitMQ permissions of one principal in the cluster's vhost: anchored regexes over resource
    names; ``topic`` maps a topic exchange to (write, read) regexes over routing / binding keys."""

    configure: str
    write: str
    read: str
    topic: dict[str, tuple[str, str]] = field(default_factory=dict)


NOTHING = "^$"


def _any(*names: str) -> str:
    return "^(" + "|".join(names) + ")$"


def permissions(who: Principal) -> Permissions:
    """Least privilege (docs/security.md has the table). Exchange and queue names are spelled out
    here as regexes; ``bus.topology`` names the same objects."""
    if who.kind is Kind.MASTER:
        return Permissions(".*", ".*", ".*", {"status": (".*", ".*"), "offers": (".*", ".*"),
                                              "tasks": (".*", ".*"), "events": (".*", ".*"),
                                              "logs": (".*", ".*")})
    name = re.escape(who.name)
    if who.kind is Kind.AGENT:
        queue = rf"tasks\.{name}"
        return Permissions(
            configure=_any(queue),
            write=_any(r"agent\.register", "status", r"bmesos\.dlx", "logs", queue),
            read=_any("tasks", queue),
            topic={"tasks": (NOTHING, f"^{name}$"), "status": (rf"^[A-Za-z0-9_-]+\.{name}\.TASK_[A-Z]+$", NOTHING),
                   "logs": (r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+$", NOTHING)})
    if who.kind is Kind.FRAMEWORK:
        owned = rf"{name}(-[A-Za-z0-9_-]+)?"
        queues = rf"(offers|status)\.{owned}"
        # a framework run by framework.ha (services, jobs): its calls, state and lease queues; on exchange
        # builtin it binds its own calls/state keys and publishes its state and answers to reply queues
        builtin = rf"builtin\.{owned}\.(calls|state|lease)"
        return Permissions(
            configure=_any(queues, builtin, SERVER_NAMED),
            write=_any("master", r"bmesos\.dlx", "builtin", queues, builtin, SERVER_NAMED),
            read=_any("offers", "status", "events", "logs", "builtin", queues, builtin, SERVER_NAMED),
            topic={"offers": (NOTHING, f"^{owned}$"), "status": (NOTHING, rf"^{owned}\..*$"),
                   "events": (NOTHING, r"^master\.elected$"), "tasks": (NOTHING, NOTHING),
                   "logs": (NOTHING, log_binding(who)),
                   "builtin": (rf"^({owned}\.state|{SERVER_NAMED})$", rf"^({owned}\.(calls|state)|{SERVER_NAMED})$")})
    # operators and monitors call built-in frameworks (exchange builtin, keys <framework>.calls) and
    # bind their reply queues there; the framework decides which commands each may use
    builtin_calls = ("builtin", (r"^[A-Za-z0-9_-]+\.calls$", f"^{SERVER_NAMED}$"))
    if who.kind is Kind.OPERATOR:
        return Permissions(
            configure=_any(SERVER_NAMED),
            write=_any("master", r"bmesos\.dlx", "builtin", SERVER_NAMED),
            read=_any("status", "events", "dead-letters", "logs", "history", "builtin", SERVER_NAMED),
            topic={"status": (NOTHING, ".*"), "events": (NOTHING, ".*"), "offers": (NOTHING, NOTHING),
                   "tasks": (NOTHING, NOTHING), "logs": (NOTHING, log_binding(who)), **dict([builtin_calls])})
    return Permissions(  # monitor
        configure=_any(SERVER_NAMED),
        # master: QUERY only (the master denies it anything else); bmesos.dlx: Bus.dead_letter, for what
        # it cannot decode; builtin: the read-only commands of built-in frameworks (they refuse the rest)
        write=_any("master", r"bmesos\.dlx", "builtin", SERVER_NAMED),
        read=_any("status", "events", "logs", "history", "builtin", SERVER_NAMED),  # history: the stream
        topic={"status": (NOTHING, ".*"), "events": (NOTHING, ".*"), "offers": (NOTHING, NOTHING),
               "tasks": (NOTHING, NOTHING), "logs": (NOTHING, log_binding(who)), **dict([builtin_calls])})
