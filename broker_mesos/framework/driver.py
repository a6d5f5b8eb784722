"""The scheduler driver: connects a ``Scheduler`` to the master through RabbitMQ.

What it promises:

* On every (re)connect it declares and consumes the framework's queues (``offers.<fw>``,
  ``status.<fw>``) and sends SUBSCRIBE; re-subscribing with the same id is idempotent on the master.
* Every call is one message to exchange ``master`` (routing key = call type, reply_to = the offers
  queue, correlation_id = envelope id), persistent, confirmed, re-sent after a reconnect. The call
  methods return that id, which the master echoes in an ERROR if it refuses the call.
* Calls are thread-safe: from another thread they are marshalled onto the loop; no call waits for a
  reply, so a scheduler can launch thousands of tasks per ACCEPT without round trips.
* Status updates reach ``status_update`` once each (deduplicated by ``TaskStatus.uuid``), and at most
  one terminal update per task (a LOST from the master is not followed by the agent's KILLED when a
  removed agent comes back); UPDATE answers to RECONCILE are always delivered. Deliveries are acked
  only after the callback returned.
* Master failover is handled here: the driver follows ``master.elected`` events (and ERRORs saying the
  framework is unknown) and re-SUBSCRIBEs; the scheduler sees ``reregistered`` once, and
  ``offer_rescinded`` for offers the old master made (they died with it).
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from broker_mesos.bus import topology
from broker_mesos.bus.connection import Bus, Delivery, decode_delivery, url_user
from broker_mesos.bus.tls import TlsOptions
from broker_mesos.core import codec, protocol, security
from broker_mesos.core.errors import ConfigError, ProtocolError
from broker_mesos.core.protocol import CommandInfo, ExecutorInfo, TaskInfo, TaskStatus
from broker_mesos.core.resources import Resources
from broker_mesos.framework.calls import SchedulerCalls
from broker_mesos.framework.scheduler import Scheduler

log = logging.getLogger(__name__)

DEDUP_CAPACITY = 100_000
DISCONNECT_CHECK_INTERVAL = 0.5
RESUBSCRIBE_MIN_INTERVAL = 1.0  # seconds: an unknown-framework ERROR re-SUBSCRIBEs at most this often
_NOT_ID = re.compile(r"[^A-Za-z0-9_-]+")
MASTER_ELECTED = "master.elected"  # the event kind a new active master publishes on `events`
UNKNOWN_FRAMEWORK = "is not subscribed"  # in the ERROR a master sends for calls of a framework it lacks


class RecentIds:
    """Remembers the last ``capacity`` ids seen (LRU), so duplicates are recognised in bounded memory."""

    def __init__(self, capacity: int = DEDUP_CAPACITY) -> None:
        self.capacity = capacity
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()

    def seen(self, item: str) -> bool:
        """True if ``item`` was seen recently; otherwise remember it and return False."""
        if item in self._ids:
            self._ids.move_to_end(item)
            return True
        self._ids[item] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return False

    def __contains__(self, item: object) -> bool:
        return item in self._ids

    def forget(self, item: str) -> None:
        self._ids.pop(item, None)

    def __len__(self) -> int:
        return len(self._ids)


def identifier(text: str, fallback: str = "framework") -> str:
    """``text`` made safe as an id (queue names, routing keys): other characters become ``-``."""
    cleaned = _NOT_ID.sub("-", text).strip("-")[:119]
    return cleaned or fallback


def default_framework_id(name: str, owner: security.Principal | None = None) -> str:
    """``<name>-<8 hex>``: unique enough that two runs of the same framework never collide; for a
    framework principal ``<owner>-<name>-<8 hex>``, an id it owns."""
    prefix = security.framework_id_prefix(owner) if owner is not None else ""
    return f"{prefix}{identifier(name)[:100]}-{uuid.uuid4().hex[:8]}"


def task(task_id: str, agent_id: str, command: str | Sequence[str], *, cpus: float = 1.0, mem: float = 128.0,
         resources: Resources | str | None = None, shell: bool | None = None,
         arguments: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
         name: str = "", executor: ExecutorInfo | None = None, data: bytes = b"") -> TaskInfo:
    """Build a ``TaskInfo``.

    ``command`` as a string runs through ``/bin/sh -c`` (unless ``shell=False``: then it is the program
    and ``arguments`` its argv); as a list it is the argv, run without a shell. ``resources`` (a
    ``Resources`` or ``'cpus:1;mem:64'`` text) replaces ``cpus``/``mem`` when given. With ``executor``
    (see ``executor_info``) the task is handed to that executor of the framework instead, with ``data``
    (opaque, at most ``codec.MAX_DATA_BYTES``); ``command`` is then unused and may be ``""``.
    """
    if executor is not None and not command:
        info = CommandInfo(environment=dict(env or {}))
    else:
        info = _command_info(command, shell, arguments, env)
    if len(data) > codec.MAX_DATA_BYTES:
        raise ValueError(f"task data has {len(data)} bytes, more than {codec.MAX_DATA_BYTES}")
    return TaskInfo(task_id=task_id, agent_id=agent_id, resources=_resources(resources, cpus, mem), command=info,
                    name=name or task_id, executor=executor, data=bytes(data))


def executor_info(executor_id: str, command: str | Sequence[str], *, cpus: float = 0.1, mem: float = 32.0,
                  resources: Resources | str | None = None, env: Mapping[str, str] | None = None,
                  name: str = "") -> ExecutorInfo:
    """Build an ``ExecutorInfo`` (``command`` and ``resources`` as in ``task``): the executor's own
    resources are charged once per agent, on top of its tasks'. Every task naming ``executor_id`` on
    one agent must carry an equal ExecutorInfo (build it once and reuse it)."""
    if not codec.ID_PATTERN.fullmatch(executor_id):
        raise ValueError(f"executor id {executor_id!r} is not an identifier ([A-Za-z0-9_-]{{1,128}})")
    return ExecutorInfo(executor_id=executor_id, command=_command_info(command, None, None, env),
                        resources=_resources(resources, cpus, mem), name=name or executor_id)


def _command_info(command: str | Sequence[str], shell: bool | None, arguments: Sequence[str] | None,
                  env: Mapping[str, str] | None) -> CommandInfo:
    if isinstance(command, str):
        use_shell = True if shell is None else shell
        argv = list(arguments) if arguments is not None else ([] if use_shell else [command])
        return CommandInfo(value=command, shell=use_shell, arguments=argv, environment=dict(env or {}))
    argv = list(command)
    if not argv:
        raise ValueError("command must not be empty")
    if shell:
        raise ValueError("a command given as an argument list runs without a shell")
    return CommandInfo(value=argv[0], shell=False, arguments=argv, environment=dict(env or {}))


def _resources(resources: Resources | str | None, cpus: float, mem: float) -> Resources:
    if isinstance(resources, str):
        return Resources.parse(resources)
    if resources is not None:
        return resources
    return Resources.of(cpus=cpus, mem=mem)


_CALL_TYPES: dict[type, str] = {}


def _call_type(cls: type) -> str:
    name = _CALL_TYPES.get(cls)
    if name is None:
        name = _CALL_TYPES[cls] = topology.call_type(cls)
    return name


class SchedulerDriver(SchedulerCalls):
    """Runs one framework: ``run()`` blocks, or ``start()`` it in a thread, then ``stop()`` / ``join()``."""

    def __init__(self, scheduler: Scheduler, broker_url: str, name: str, *, framework_id: str | None = None,
                 role: str = "*", weight: float = 1.0,
                 failover_timeout: float = protocol.DEFAULT_FAILOVER_TIMEOUT,
                 partition_aware: bool = False, connect_timeout: float = 15.0,
                 tls: TlsOptions | None = None, user: str = "",
                 master_principal: str = security.DEFAULT_MASTER_PRINCIPAL) -> None:
        self.scheduler = scheduler
        self.name = name
        self.master_principal = master_principal  # whose offers and events count (connected as a principal)
        self.principal = security.parse(url_user(broker_url), master_principal)
        if self.principal is not None and self.principal.kind is not security.Kind.FRAMEWORK:
            raise ConfigError(f"a framework connects as a framework principal (framework.<name>), "
                              f"not as {self.principal.user}")
        self.framework_id = framework_id or default_framework_id(name, self.principal)
        if not codec.ID_PATTERN.fullmatch(self.framework_id):
            raise ValueError(f"framework id {self.framework_id!r} is not an identifier ([A-Za-z0-9_-]{{1,128}})")
        if self.principal is not None and not security.owns_framework(self.principal, self.framework_id):
            raise ConfigError(f"framework id {self.framework_id} is not {self.principal.user}'s: it must be "
                              f"{self.principal.name} or start with {security.framework_id_prefix(self.principal)}")
        self.user = user  # the OS user its tasks run as when they name none (the master checks its ACL)
        self.role = role
        self.weight = weight
        self.failover_timeout = failover_timeout
        self.partition_aware = partition_aware
        self.subscribed = False
        self.bus = Bus(broker_url, f"framework {self.framework_id}", connect_timeout=connect_timeout, tls=tls)
        self._offers_queue, self._status_queue = topology.framework_queues(self.framework_id)
        self._reply_to = self._offers_queue.name
        self._seen_updates = RecentIds()
        self._terminal_tasks = RecentIds()
        self._master_events = topology.monitor_queue(MASTER_ELECTED, topology.EVENTS)
        self.master_id: str | None = None
        self._outstanding: set[str] = set()  # offer ids received and not yet answered or rescinded
        self._last_resubscribe = float("-inf")
        self._loop_thread: int | None = None
        self._thread: threading.Thread | None = None
        self._loop_started = threading.Event()
        self._failure: BaseException | None = None
        self._was_ready = False
        self._stopped = False

    # -- lifecycle --------------------------------------------------------------------------
    def run(self) -> None:
        """Connect, subscribe and dispatch callbacks until ``stop()``; raises ``BrokerUnreachable``
        if the broker cannot be reached within ``connect_timeout``."""
        self._loop_thread = threading.get_ident()
        self._loop_started.set()
        self.bus.consume(self._offers_queue, self._on_event)
        self.bus.consume(self._status_queue, self._on_status)
        self.bus.consume(self._master_events, self._on_master_event)
        self.bus.on_ready(self._on_ready)
        self.bus.call_every(DISCONNECT_CHECK_INTERVAL, self._check_connection)
        log.info("framework=%s name=%s starting", self.framework_id, self.name)
        self.bus.run()
        log.info("framework=%s stopped", self.framework_id)

    def start(self) -> None:
        """Run the driver in a background (daemon) thread; ``join()`` re-raises what it failed with."""

        def target() -> None:
            try:
                self.run()
            except BaseException as exc:  # handed to join()
                self._failure = exc
                self._loop_started.set()

        self._thread = threading.Thread(target=target, name=f"driver-{self.framework_id}", daemon=True)
        self._thread.start()
        self._loop_started.wait()

    def stop(self) -> None:
        """Stop after flushing pending calls (best effort). Does not tear the framework down."""
        self._stopped = True
        self._on_loop(self.bus.stop)

    def join(self, timeout: float | None = None) -> None:
        """Wait for a ``start()``-ed driver to end; re-raise the error that ended it, if any."""
        if self._thread is not None:
            self._thread.join(timeout)
        if self._failure is not None:
            raise self._failure

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- calls (SchedulerCalls: accept, launch, decline, kill, ...; thread-safe) ---------------
    def _offers_answered(self, offer_ids: list[str]) -> None:
        self._on_loop(lambda: self._outstanding.difference_update(offer_ids))

    def _launching(self, task_ids: list[str]) -> None:
        """A task id launched again is a new task: its updates count again."""
        self._on_loop(lambda: [self._terminal_tasks.forget(task_id) for task_id in task_ids])

    def _call(self, body: Any) -> str:
        msg_id = uuid.uuid4().hex
        raw = codec.encode(body, time.time(), msg_id=msg_id)
        key = _call_type(type(body))
        log.debug("framework=%s call=%s id=%s", self.framework_id, key, msg_id)
        self._on_loop(lambda: self.bus.publish(topology.MASTER, key, raw, persistent=True,
                                               reply_to=self._reply_to, correlation_id=msg_id))
        return msg_id

    def _on_loop(self, fn: Callable[[], None]) -> None:
        if self._loop_thread is None or threading.get_ident() == self._loop_thread:
            fn()
        else:
            self.bus.call_threadsafe(fn)

    # -- loop side ----------------------------------------------------------------------------
    def _on_ready(self) -> None:
        self._was_ready = True
        self._subscribe()

    def _subscribe(self) -> None:
        self._last_resubscribe = time.monotonic()
        self._call(protocol.Subscribe(self.framework_id, self.name, self.role, self.weight, self.user,
                                      failover_timeout=self.failover_timeout,
                                      partition_aware=self.partition_aware))
        log.info("framework=%s subscribing", self.framework_id)

    def _on_master_event(self, delivery: Delivery) -> None:
        env = self._decode(delivery)
        if env is None:
            return
        if isinstance(env.body, protocol.ClusterEvent) and env.body.kind == MASTER_ELECTED:
            master_id = str(env.body.detail.get("master_id", ""))
            if self.master_id is not None and master_id and master_id != self.master_id:
                log.info("framework=%s master %s elected (was %s): re-subscribing", self.framework_id, master_id,
                         self.master_id)
                self._subscribe()
        self.bus.ack(delivery)

    def _on_subscribed(self, master_id: str) -> None:
        previous, self.master_id = self.master_id, master_id
        self.subscribed = True
        log.info("framework=%s subscribed master=%s", self.framework_id, master_id or "?")
        if previous is None or previous == master_id:
            self._callback("registered", self, self.framework_id)
            return
        stale = sorted(o for o in self._outstanding if not o.startswith(f"{master_id}-"))
        self._outstanding.difference_update(stale)
        for offer_id in stale:  # made by the old master: gone with it
            self._callback("offer_rescinded", self, offer_id)
        self._callback("reregistered", self, master_id)

    def _check_connection(self) -> None:
        if self._was_ready and not self.bus.ready and not self._stopped:
            self._was_ready = False
            self.subscribed = False
            log.warning("framework=%s disconnected from the broker", self.framework_id)
            self._callback("disconnected", self)

    def _callback(self, name: str, *args: Any) -> None:
        try:
            getattr(self.scheduler, name)(*args)
        except Exception:
            log.exception("framework=%s scheduler callback %s raised", self.framework_id, name)

    def _decode(self, delivery: Delivery,
                senders: Callable[[Any, str | None], bool] | None = None) -> codec.Envelope | None:
        """The envelope, if it decodes and (connected as a principal) its sender may send it."""
        try:
            envelope = decode_delivery(delivery)
            if self._secure:
                user = delivery.properties.user_id
                allowed = senders(envelope.body, user) if senders is not None else user == self.master_principal
                if not allowed:
                    raise ProtocolError(f"{envelope.type} from user {str(user)[:128]!r}, who may not send it here")
            return envelope
        except ProtocolError as exc:  # logged, rate-limited, by the bus
            self.bus.dead_letter(delivery, exc.reason)
            return None

    @property
    def _secure(self) -> bool:
        """Connected as a framework principal: only the master's events and the agents' own updates count."""
        return self.principal is not None

    def _status_senders(self, body: Any, user: str | None) -> bool:
        """A status update comes from the master or from the agent it is about."""
        if user == self.master_principal:
            return True
        return isinstance(body, protocol.Status) and all(
            user == security.Principal(security.Kind.AGENT, u.agent_id).user for u in body.updates)

    def _on_event(self, delivery: Delivery) -> None:
        env = self._decode(delivery)
        if env is None:
            return
        body = env.body
        if isinstance(body, protocol.Offers):
            self._outstanding.update(o.offer_id for o in body.offers)
            self._callback("resource_offers", self, list(body.offers))
        elif isinstance(body, protocol.Rescind):
            for offer_id in body.offer_ids:
                self._outstanding.discard(offer_id)
                self._callback("offer_rescinded", self, offer_id)
        elif isinstance(body, protocol.Subscribed):
            self._on_subscribed(body.master_id)
        elif isinstance(body, protocol.Update):
            for status in body.updates:  # answers to RECONCILE: delivered even if seen before
                self._callback("status_update", self, status)
        elif isinstance(body, protocol.ExecutorMessage):
            self._callback("framework_message", self, body.agent_id, body.executor_id, body.data)
        elif isinstance(body, protocol.Error):
            log.warning("framework=%s call=%s id=%s refused: %s", self.framework_id, body.call_type,
                        body.call_id, body.message)
            if UNKNOWN_FRAMEWORK in body.message and \
                    time.monotonic() - self._last_resubscribe >= RESUBSCRIBE_MIN_INTERVAL:
                self._subscribe()  # a master that does not know us (it lost us, or we it): subscribe again
            self._callback("call_refused", self, body)
        else:
            self.bus.dead_letter(delivery, f"unexpected {env.type} on a framework's offers queue")
            return
        self.bus.ack(delivery)

    def _on_status(self, delivery: Delivery) -> None:
        env = self._decode(delivery, self._status_senders)
        if env is None:
            return
        if not isinstance(env.body, protocol.Status):
            self.bus.dead_letter(delivery, f"unexpected {env.type} on a framework's status queue")
            return
        self._deliver_updates(env.body.updates)
        self.bus.ack(delivery)

    def _deliver_updates(self, updates: Iterable[TaskStatus]) -> None:
        for status in updates:
            if self._seen_updates.seen(status.uuid):
                continue
            if status.task_id in self._terminal_tasks:  # e.g. a LOST, then the agent's KILLED; or a stale
                log.info("framework=%s task=%s already ended; ignoring its later %s", self.framework_id,
                         status.task_id, status.state.value)  # state from a master restored from its registry
                continue
            if status.state.terminal:
                self._terminal_tasks.seen(status.task_id)
            self._callback("status_update", self, status)
