"""Every exchange, queue and binding of broker-mesos, declared here and nowhere else.

Declarations are plain objects that exist before any channel (as in kombu); ``bus.connection``
declares them on every (re)connect. docs/protocol.md describes the same topology for other clients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from broker_mesos.core import protocol

# -- exchanges ---------------------------------------------------------------------------------
AGENT_REGISTER = "agent.register"
MASTER = "master"
OFFERS = "offers"
TASKS = "tasks"
STATUS = "status"
EVENTS = "events"
BUILTIN = "builtin"  # CONTROL calls to built-in frameworks and their answers, their state (docs/protocol.md §20)
LOGS = "logs"  # LOG_DATA from agents to whoever asked (key <user>.<reply_token>, docs/protocol.md §19)
DEAD_LETTER = "bmesos.dlx"
DEAD_LETTER_DROPPED = "bmesos.dlx.dropped"  # what `dead-letters` drops (full or too old), to be counted

# -- routing keys on agent.register -----------------------------------------------------------
KEY_REGISTER = "register"
KEY_HEARTBEAT = "heartbeat"
KEY_MESSAGE = "message"  # FROM_EXECUTOR: an executor's framework message, relayed by its agent

# -- well-known queues -------------------------------------------------------------------------
MASTER_AGENTS_QUEUE = "master.agents"
MASTER_CALLS_QUEUE = "master.calls"
MASTER_STATUS_QUEUE = "master.status"
MASTER_LEASE_QUEUE = "master.lease"
MASTER_REGISTRY_QUEUE = "master.registry"
DEAD_LETTER_QUEUE = "dead-letters"
DEAD_LETTER_DROPPED_QUEUE = "dead-letters.dropped"
HISTORY_QUEUE = "history"

# -- dead-letter headers -----------------------------------------------------------------------
HEADER_REASON = "x-bmesos-reason"
HEADER_ORIGINAL_EXCHANGE = "x-bmesos-original-exchange"
HEADER_ORIGINAL_ROUTING_KEY = "x-bmesos-original-routing-key"
HEADER_QUEUE = "x-bmesos-queue"

# -- bounds (docs/protocol.md §12) -----------------------------------------------------------------
# a quorum queue dead-letters (or drops) a message redelivered this many times: a message that keeps
# killing its consumer cannot loop forever, whatever the consumer does
DELIVERY_LIMIT = 20
DEAD_LETTER_MAX_LENGTH = 10_000
DEAD_LETTER_MAX_BYTES = 64 * 1024 * 1024
DEAD_LETTER_TTL_MS = 24 * 3600 * 1000
DROPPED_MAX_LENGTH = 10_000
DROPPED_MAX_BYTES = 16 * 1024 * 1024
# the history stream (docs/protocol.md §10): the broker deletes whole segments, oldest first, once
# everything in one is older than the age or the stream is over the size; it looks when a segment
# fills, so the stream holds at least min(7 days, 1 GiB) and at most one segment (64 MiB) more
HISTORY_MAX_AGE = "7D"
HISTORY_MAX_BYTES = 1024 * 1024 * 1024
HISTORY_SEGMENT_BYTES = 64 * 1024 * 1024

QUORUM = {"x-queue-type": "quorum", "x-delivery-limit": DELIVERY_LIMIT}
DEAD_LETTERED = {"x-dead-letter-exchange": DEAD_LETTER}


@dataclass(frozen=True)
class Exchange:
    name: str
    type: str
    durable: bool = True


@dataclass(frozen=True)
class Queue:
    """A queue and its bindings. ``name=""`` asks the broker for an exclusive server-named queue."""

    name: str
    bindings: tuple[tuple[str, str], ...] = ()
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)


EXCHANGES: tuple[Exchange, ...] = (
    Exchange(AGENT_REGISTER, "direct"),
    Exchange(MASTER, "direct"),
    # topic, though keys are plain ids: topic permissions then limit which keys a principal may bind
    Exchange(OFFERS, "topic"),
    Exchange(TASKS, "topic"),
    Exchange(STATUS, "topic"),
    Exchange(EVENTS, "topic"),
    Exchange(LOGS, "topic"),
    Exchange(BUILTIN, "topic"),
    Exchange(DEAD_LETTER, "fanout"),
    Exchange(DEAD_LETTER_DROPPED, "fanout"),
)

# `dead-letters` is for people to read: bounded in count, bytes and age, oldest dropped first. What it
# drops goes to `dead-letters.dropped`, which the active master drains and counts (bounded too, then
# dropped silently). Both are quorum queues, as every queue every process declares must be: a classic
# queue whose node is down cannot be declared, and that would keep every process from connecting.
DEAD_LETTER_QUEUES = (
    Queue(DEAD_LETTER_QUEUE, ((DEAD_LETTER, ""),), arguments={
        **QUORUM, "x-max-length": DEAD_LETTER_MAX_LENGTH, "x-max-length-bytes": DEAD_LETTER_MAX_BYTES,
        "x-overflow": "drop-head", "x-message-ttl": DEAD_LETTER_TTL_MS, "x-dead-letter-exchange": DEAD_LETTER_DROPPED}),
    Queue(DEAD_LETTER_DROPPED_QUEUE, ((DEAD_LETTER_DROPPED, ""),), arguments={
        **QUORUM, "x-max-length": DROPPED_MAX_LENGTH, "x-max-length-bytes": DROPPED_MAX_BYTES,
        "x-overflow": "drop-head"}),
)


# A RabbitMQ stream (an append-only log read from any offset, RabbitMQ >= 3.9): every status update and
# every cluster event, kept for HISTORY_MAX_AGE or HISTORY_MAX_BYTES, so a monitor started late replays
# them. Replicated like a quorum queue, so it may be one of the queues every process declares.
HISTORY_STREAM = Queue(HISTORY_QUEUE, ((STATUS, "#"), (EVENTS, "#")), arguments={
    "x-queue-type": "stream", "x-max-age": HISTORY_MAX_AGE, "x-max-length-bytes": HISTORY_MAX_BYTES,
    "x-stream-max-segment-size-bytes": HISTORY_SEGMENT_BYTES})


def call_type(cls: type) -> str:
    from broker_mesos.core.codec import registered_types

    return next(name for name, c in registered_types().items() if c is cls)


def master_queues() -> tuple[Queue, ...]:
    """The master's three input queues (quorum, dead-lettered)."""
    args = {**QUORUM, **DEAD_LETTERED}
    agent_keys = tuple((AGENT_REGISTER, k) for k in (KEY_REGISTER, KEY_HEARTBEAT, KEY_MESSAGE))
    calls = (*protocol.FRAMEWORK_CALLS, *protocol.ADMIN_CALLS, *protocol.LOG_CALLS)
    call_keys = tuple((MASTER, call_type(c)) for c in calls)
    return (
        Queue(MASTER_AGENTS_QUEUE, agent_keys, arguments=args),
        Queue(MASTER_CALLS_QUEUE, call_keys, arguments=args),
        Queue(MASTER_STATUS_QUEUE, ((STATUS, "#"),), arguments=args),
    )


def master_lease_queue() -> Queue:
    """Held (exclusive) by the active master's connection: whoever holds it is the one active master."""
    return Queue(MASTER_LEASE_QUEUE, durable=False, exclusive=True)


def master_registry_queue() -> Queue:
    """The master's persisted registry: one message, the latest snapshot (older ones are dropped)."""
    # no delivery limit: a snapshot handed to many masters that died in turn is still the truth
    return Queue(MASTER_REGISTRY_QUEUE, arguments={"x-queue-type": "quorum", "x-max-length": 1,
                                                   "x-overflow": "drop-head"})


# -- built-in frameworks (services, jobs: framework.ha) ----------------------------------------------
# one framework's calls, its persisted state and its lease; keys on exchange `builtin` are
# `<framework_id>.calls` and `<framework_id>.state`, answers go back with the caller's reply queue name
# as the key (topic permissions keep each principal to its own keys: core/security.py)
BUILTIN_CALLS_SUFFIX = "calls"
OWN_NAME = "{queue}"  # a binding key that stands for the queue's own (server-given) name: reply queues
BUILTIN_STATE_SUFFIX = "state"


def builtin_calls_key(framework_id: str) -> str:
    return f"{framework_id}.{BUILTIN_CALLS_SUFFIX}"


def builtin_state_key(framework_id: str) -> str:
    return f"{framework_id}.{BUILTIN_STATE_SUFFIX}"


def builtin_queues(framework_id: str) -> tuple[Queue, Queue, Queue]:
    """(calls, state, lease) of the built-in framework ``framework_id``: calls are a dead-lettered
    quorum queue; the state keeps only its latest message, like the master's registry; the lease is
    held exclusively by the active scheduler's connection, like ``master.lease``."""
    calls = Queue(f"builtin.{framework_id}.calls", ((BUILTIN, builtin_calls_key(framework_id)),),
                  arguments={**QUORUM, **DEAD_LETTERED})
    state = Queue(f"builtin.{framework_id}.state", ((BUILTIN, builtin_state_key(framework_id)),),
                  arguments={"x-queue-type": "quorum", "x-max-length": 1, "x-overflow": "drop-head"})
    lease = Queue(f"builtin.{framework_id}.lease", durable=False, exclusive=True)
    return calls, state, lease


def base_queues() -> tuple[Queue, ...]:
    """Declared by every process on connect: the master's inputs, the dead-letter queues and the history.

    Whoever connects first creates them, so REGISTER, SUBSCRIBE and status updates sent before any
    master is up wait in the master's queues instead of being dropped as unroutable (and are in the
    history from the first one on).
    """
    return (*DEAD_LETTER_QUEUES, *master_queues(), HISTORY_STREAM)


def agent_tasks_queue(agent_id: str) -> Queue:
    return Queue(tasks_queue_name(agent_id), ((TASKS, agent_id),), arguments={**QUORUM, **DEAD_LETTERED})


def tasks_queue_name(agent_id: str) -> str:
    return f"tasks.{agent_id}"


def offers_queue_name(framework_id: str) -> str:
    return f"offers.{framework_id}"


def status_queue_name(framework_id: str) -> str:
    return f"status.{framework_id}"


def framework_queues(framework_id: str) -> tuple[Queue, ...]:
    """A framework's event queue (offers, replies) and its status queue, both quorum so that they
    survive the loss of any one node of a cluster (offers carry a per-message TTL: they still perish)."""
    return (
        Queue(offers_queue_name(framework_id), ((OFFERS, framework_id),), arguments=dict(QUORUM)),
        Queue(status_queue_name(framework_id), ((STATUS, f"{framework_id}.#"),),
              arguments={**QUORUM, **DEAD_LETTERED}),
    )


def status_key(framework_id: str, agent_id: str, state: protocol.TaskState) -> str:
    return f"{framework_id}.{agent_id}.{state.value}"


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching, as the broker does it: words split on ``.``, ``*`` is exactly one word and
    ``#`` zero or more (what a monitor reading the history stream filters with)."""
    words, keys = pattern.split("."), key.split(".")
    # positions in ``keys`` reachable after each prefix of ``words`` (no recursion: bounded by len*len)
    reachable = {0}
    for word in words:
        if word == "#":
            reachable = set(range(min(reachable), len(keys) + 1)) if reachable else set()
        else:
            reachable = {i + 1 for i in reachable if i < len(keys) and (word == "*" or word == keys[i])}
    return len(keys) in reachable


def monitor_queue(pattern: str, exchange: str = STATUS) -> Queue:
    """An exclusive, auto-deleted, server-named queue bound with a topic pattern (``#``, ``fw1.#``)."""
    return Queue("", ((exchange, pattern),), durable=False, exclusive=True, auto_delete=True)
