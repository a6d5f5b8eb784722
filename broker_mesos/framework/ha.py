"""Running a pure planner as a highly available framework: the shell of the built-in frameworks.

``BuiltinScheduler`` wires a planner (``framework/services``, ``framework/jobs``) to the scheduler
driver and to three queues of its own (``topology.builtin_queues``):

* **lease** — any number of schedulers of one framework id may run; the one whose connection holds
  the exclusive queue ``builtin.<id>.lease`` is active, exactly like the master (``bus.lease``).
  Its consumers (offers, status, calls) start only once it holds the lease and has loaded the state,
  and stop with the connection that holds it: two schedulers are never active at once.
* **state** — the planner's durable state, one msgpack message in the quorum queue
  ``builtin.<id>.state`` (it keeps only the latest), written by the active scheduler. A task is in the
  state before its ACCEPT is published, on the same channel: if the master got the ACCEPT, the broker
  got the state first (write-ahead). A successor loads it, re-subscribes with the same framework id
  (tasks outlive a scheduler for its failover timeout: a week by default) and reconciles: recorded
  tasks the master never saw are replaced, tasks the state does not know are killed.
* **calls** — operators' commands (CONTROL, docs/protocol.md §20) on ``builtin.<id>.calls``, answered
  with CONTROL_RESULT to the caller's reply queue; connected as a principal, only operators (all
  commands), monitors (read-only ones) and the framework's own principal are obeyed.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from broker_mesos.bus import topology
from broker_mesos.bus.connection import Delivery, decode_delivery
from broker_mesos.bus.lease import Lease
from broker_mesos.bus.tls import TlsOptions
from broker_mesos.core import codec, protocol, security
from broker_mesos.core.errors import ProtocolError
from broker_mesos.framework.driver import SchedulerDriver
from broker_mesos.framework.planned import Planner, PlannerScheduler
from broker_mesos.framework.planning import CommandError, Effect

log = logging.getLogger(__name__)

STATE_FORMAT = 1
TICK_INTERVAL = 0.1  # seconds between the planner's timer ticks (cron fires, backoff ends, deadlines)
PERSIST_INTERVAL = 0.5  # a change not tied to a launch or a command is written at most this late
STATE_WARN_BYTES = 4 * 1024 * 1024  # a state this large is logged: the planners bound their histories
# tasks of a built-in framework outlive its scheduler this long (Marathon's default): a week covers a
# weekend's outage of every scheduler; the framework is torn down only by the operator
DEFAULT_BUILTIN_FAILOVER = 7 * 24 * 3600.0
REPLY_KEY = re.compile(security.SERVER_NAMED)
MAX_ERROR = 2000  # characters of a refusal's reason sent back


@dataclass(frozen=True, slots=True)
class Command:
    """One CONTROL command: ``run(planner, args, now) -> (result, effects)``, the result a mapping of
    JSON-like values; ``read_only`` ones may be used by monitors. ``run`` raises ``CommandError`` to refuse."""

    run: Callable[[Any, dict[str, Any], float], tuple[dict[str, Any], list[Effect]]]
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class Kind:
    """A built-in framework: how to make, load and command its planner."""

    label: str  # for logs: "service scheduler"
    new: Callable[[str, str], Planner]  # (framework_id, role)
    load: Callable[[dict[str, Any], str, str], Planner]  # (data, framework_id, role); ValueError if unreadable
    commands: Mapping[str, Command]


def text_arg(args: dict[str, Any], key: str) -> str:
    """A command's required non-empty string argument, or ``CommandError``."""
    value = args.get(key)
    if not isinstance(value, str) or not value:
        raise CommandError(f"{key} must be a non-empty string")
    return value


class StateUnreadable(Exception):
    """The persisted state cannot be read: serving without it would kill every task it does not know."""


class BuiltinScheduler(PlannerScheduler):
    """One scheduler process of a built-in framework: ``run()`` blocks; ``start()`` / ``stop()`` /
    ``join()`` as the driver's."""

    def __init__(self, kind: Kind, broker_url: str, *, framework_id: str, name: str = "", role: str = "*",
                 user: str = "", failover_timeout: float = DEFAULT_BUILTIN_FAILOVER, tls: TlsOptions | None = None,
                 clock: Callable[[], float] = time.time, scheduler_id: str | None = None,
                 connect_timeout: float = 15.0,
                 master_principal: str = security.DEFAULT_MASTER_PRINCIPAL) -> None:
        super().__init__(clock)
        self.kind = kind
        self.framework_id = framework_id
        self.role = role
        self.scheduler_id = scheduler_id or uuid.uuid4().hex[:8]
        self.driver = SchedulerDriver(self, broker_url, name or framework_id, framework_id=framework_id, role=role,
                                      failover_timeout=failover_timeout, tls=tls, user=user,
                                      connect_timeout=connect_timeout, master_principal=master_principal)
        self.calls = self.driver
        self.bus = self.driver.bus
        self.failure: BaseException | None = None
        self._last_persist = 0.0
        calls, self._state_queue, lease = topology.builtin_queues(framework_id)
        self.bus.declare(self._state_queue)
        self.lease = Lease(self.bus, f"{framework_id}/{self.scheduler_id}", self._drop, self._take_over,
                           queue=lease, who=kind.label)
        self.bus.before_consume(self.lease.gate)
        self.bus.consume(calls, self._on_call)
        self.bus.call_every(TICK_INTERVAL, self.tick)

    # -- lifecycle (the driver's) ---------------------------------------------------------------
    def run(self) -> None:
        self.driver.run()
        if self.failure is not None:
            raise self.failure

    def start(self) -> None:
        self.driver.start()

    def stop(self) -> None:
        self.driver.stop()

    def join(self, timeout: float | None = None) -> None:
        self.driver.join(timeout)
        if self.failure is not None:
            raise self.failure

    @property
    def active(self) -> bool:
        return self.planner is not None

    # -- lease and state ------------------------------------------------------------------------
    def _drop(self) -> None:
        """The lease went with the connection: forget the planner; the persisted state is the truth."""
        self.planner = None

    def _take_over(self, done: Callable[[], None]) -> None:
        generation = self.bus.generation

        def got(delivery: Delivery | None) -> None:
            if generation != self.bus.generation:
                return
            try:
                self.planner = self._load(delivery)
            except StateUnreadable as exc:
                log.critical("%s %s: %s; stopping (fix or delete queue %s to start afresh)", self.kind.label,
                             self.framework_id, exc, self._state_queue.name)
                self.failure = exc
                self.bus.stop()
                return
            self.planner.dirty = True
            self.persist()  # ours now, so the queue is never empty: the old message is acked after it
            if delivery is not None:
                self.bus.ack(delivery)
            log.info("%s %s active (scheduler %s)", self.kind.label, self.framework_id, self.scheduler_id)
            done()

        self.bus.get(self._state_queue.name, got)

    def _load(self, delivery: Delivery | None) -> Planner:
        if delivery is None:
            log.info("%s %s: no state yet, starting empty", self.kind.label, self.framework_id)
            return self.kind.new(self.framework_id, self.role)
        writer = delivery.properties.user_id
        if self.driver.principal is not None and writer != self.driver.principal.user:
            raise StateUnreadable(f"the state was written by user {str(writer)[:128]!r}, not by "
                                  f"{self.driver.principal.user}")
        try:
            data = msgpack.unpackb(delivery.body, raw=False)
            if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
                raise ValueError(f"format {data.get('format') if isinstance(data, dict) else '?'!r}, "
                                 f"not {STATE_FORMAT}")
            planner = self.kind.load(data["planner"], self.framework_id, self.role)
        except Exception as exc:
            raise StateUnreadable(f"unreadable state: {exc.__class__.__name__}: {str(exc)[:300]}") from exc
        log.info("%s %s: state loaded (written by scheduler %s)", self.kind.label, self.framework_id,
                 str(data.get("writer", "?"))[:64])
        return planner

    def persist(self) -> None:
        planner = self.planner
        if planner is None or not planner.dirty:
            return
        planner.dirty = False
        body = msgpack.packb({"format": STATE_FORMAT, "writer": self.scheduler_id, "written_at": self.clock(),
                              "planner": planner.to_wire()}, use_bin_type=True)
        if len(body) > STATE_WARN_BYTES:
            log.warning("%s %s: state of %d bytes", self.kind.label, self.framework_id, len(body))
        self.bus.publish(topology.BUILTIN, topology.builtin_state_key(self.framework_id), body, persistent=True)
        self._last_persist = time.monotonic()

    def tick(self) -> None:
        super().tick()
        if self.planner is not None and self.planner.dirty and \
                time.monotonic() - self._last_persist >= PERSIST_INTERVAL:
            self.persist()

    def call_refused(self, driver: Any, error: protocol.Error) -> None:
        log.warning("%s %s: %s refused: %s", self.kind.label, self.framework_id, error.call_type,
                    error.message[:300])

    # -- operators' commands ------------------------------------------------------------------------
    def _on_call(self, delivery: Delivery) -> None:
        try:
            envelope = decode_delivery(delivery)
            if not isinstance(envelope.body, protocol.Control):
                raise ProtocolError(f"unexpected {envelope.type} on {delivery.queue}: only CONTROL")
        except ProtocolError as exc:  # the sender hears why (when it said where), the message is dead-lettered
            self._answer(delivery, {}, f"refused: {exc.reason}")
            self.bus.dead_letter(delivery, exc.reason)
            return
        result, error = self._run(envelope.body, delivery)
        self._answer(delivery, result, error)
        self.bus.ack(delivery)

    def _answer(self, delivery: Delivery, result: dict[str, Any], error: str) -> None:
        reply_to = delivery.properties.reply_to
        if not reply_to or not REPLY_KEY.fullmatch(reply_to):
            return
        if len(error) > MAX_ERROR:  # a refusal may quote what it refuses: never beyond what a client decodes
            error = error[:MAX_ERROR] + "..."
        try:
            raw = codec.encode(protocol.ControlResult(result=result, error=error), self.clock())
        except ProtocolError as exc:  # a result beyond the codec's bounds: say so instead
            raw = codec.encode(protocol.ControlResult(error=f"the answer cannot be sent: {exc.reason}"), self.clock())
        self.bus.publish(topology.BUILTIN, reply_to, raw, persistent=False,
                         correlation_id=delivery.properties.correlation_id)

    def _run(self, call: protocol.Control, delivery: Delivery) -> tuple[dict[str, Any], str]:
        command = self.kind.commands.get(call.command)
        if command is None:
            return {}, f"unknown command {call.command!r}; known: {', '.join(sorted(self.kind.commands))}"
        if self.driver.principal is not None:
            who = security.parse(delivery.properties.user_id, self.driver.master_principal)
            denied = security.check_control(who, self.framework_id, command.read_only)
            if denied is not None:
                log.warning("%s %s: refused %s: %s", self.kind.label, self.framework_id, call.command, denied.reason)
                return {}, denied.reason
        if self.planner is None:
            return {}, f"{self.kind.label} {self.framework_id} is not active"
        try:
            result, effects = command.run(self.planner, call.args, self.clock())
        except CommandError as exc:
            return {}, str(exc)
        except Exception as exc:
            log.exception("%s %s: command %s failed", self.kind.label, self.framework_id, call.command)
            return {}, f"internal error: {exc.__class__.__name__}"
        self.perform(effects, persist=True)  # the answer goes out after the state that holds the change
        return result, ""
