"""The master process: decode, apply to ``MasterState``, publish the effects, ack.

It consumes three quorum queues (agent reports, framework calls, status updates), runs allocation
rounds on a timer and when a batch of changes has built up, and turns effects into publishes. A message
that cannot be decoded, or that the master refuses, never stops it: bad messages are dead-lettered with
the reason, refused calls answered with ERROR to the caller.

Fault tolerance (docs/fault-tolerance.md): any number of masters run; only the one holding the lease
(``bus.lease.Lease``) consumes. On taking over it loads the registry snapshot (``registry``), then the
agents' heartbeats and the frameworks' re-SUBSCRIBEs fill in the rest. A delivery that changed state
is acked only once a snapshot containing the change is confirmed by the broker, so whatever a dead
master had not persisted is redelivered to its successor. Whenever the connection (and so the lease)
is lost, the master drops its state and unconfirmed publishes, and rebuilds from the registry.
"""

from __future__ import annotations

import logging
import secrets
import signal
import time
import uuid
from collections.abc import Callable

from broker_mesos.bus import topology
from broker_mesos.bus.connection import Bus, Delivery, decode_delivery
from broker_mesos.bus.lease import Lease
from broker_mesos.bus.tls import TlsOptions
from broker_mesos.core import codec, protocol, queries, security
from broker_mesos.core.errors import CallRefused, ProtocolError
from broker_mesos.core.master import (
    Effect,
    MasterConfig,
    MasterState,
    PublishEvent,
    PublishStatus,
    ToAgent,
    ToFramework,
)
from broker_mesos.core.ratelimit import LogLimiter
from broker_mesos.master import registry
from broker_mesos.master.allocators import load_policies
from broker_mesos.master.logs import LogRelay
from broker_mesos.master.metrics import MasterMetrics, Rejection

log = logging.getLogger(__name__)

TICK_FRACTION = 0.2
MIN_TICK = 0.01
REGISTRY_INTERVAL = 0.05  # seconds between snapshots (when something changed): bounds ack latency
MAX_UNPERSISTED = 100  # write a snapshot early once this many state-changing deliveries wait for it
FRAMEWORK_CHECK_INTERVAL = 1.0  # seconds between checks of each framework's offers-queue consumers
FRAMEWORK_RECONNECT_GRACE = 10.0  # after taking over, frameworks get this long to reconnect first
DROPPED_REPORT_INTERVAL = 10.0  # seconds between `dead-letters.dropped` events (when the count moved)
SERVER_NAMED_PREFIXES = ("amq.gen-", "amq.rabbitmq.reply-to")


def offer_token() -> str:
    """64 random bits at the end of every offer id: nobody can guess another framework's offer."""
    return secrets.token_hex(8)


def reply_allowed(reply_to: str, framework_id: str | None, owner: security.Principal | None = None,
                  secure: bool = False) -> bool:
    """Where the master may send a reply: a server-named queue (exclusive to the connection that
    declared it, e.g. `bmesos admin`'s) or direct reply-to; else only the calling framework's own
    ``offers.<id>`` — or, for a message too broken (or refused too early) to say whose it is
    (``framework_id`` None), an offers queue of a framework its sender owns (``secure``; any
    framework's without security). An operator's call (``framework_id`` "") is answered on
    server-named queues only. Never an agent's task queue, the master's own inputs, or anything else."""
    if reply_to.startswith(SERVER_NAMED_PREFIXES):
        return True
    if framework_id == "":
        return False
    if framework_id is not None:
        return reply_to == topology.offers_queue_name(framework_id)
    prefix = topology.offers_queue_name("")
    target = reply_to[len(prefix):]
    if not reply_to.startswith(prefix) or not codec.ID_PATTERN.fullmatch(target):
        return False
    return not secure or (owner is not None and security.owns_framework(owner, target))


def check_routing(delivery: Delivery, envelope: codec.Envelope) -> None:
    """The routing key must say what the envelope is (docs/protocol.md §5.3): a call's key is its
    type, an agent's is ``register`` / ``heartbeat``, a status update's ``<fw>.<agent>.<state>`` of
    every update in it."""
    body, key = envelope.body, delivery.routing_key
    if isinstance(body, protocol.Status):
        for update in body.updates:
            want = topology.status_key(update.framework_id, update.agent_id, update.state)
            if key != want:
                raise ProtocolError(f"status update for {want} sent with routing key {key[:300]!r}")
        return
    if isinstance(body, protocol.Register | protocol.Heartbeat):
        want = topology.KEY_REGISTER if isinstance(body, protocol.Register) else topology.KEY_HEARTBEAT
    elif isinstance(body, protocol.FromExecutor):
        want = topology.KEY_MESSAGE
    else:
        want = envelope.type
    if key != want:
        raise ProtocolError(f"{envelope.type} sent with routing key {key[:300]!r}, not {want!r}")


class MasterProcess:
    """One master: owns a ``MasterState`` and a ``Bus``; ``run()`` blocks until ``stop()``."""

    def __init__(self, broker_url: str, config: MasterConfig, *, connect_timeout: float = 15.0,
                 clock: Callable[[], float] = time.time, insecure: bool = False,
                 master_principal: str = security.DEFAULT_MASTER_PRINCIPAL, tls: TlsOptions | None = None) -> None:
        self.config = config
        # without security every sender is believed (tests, the demo): explicit, and said at start
        self.insecure = insecure
        self.master_principal = master_principal
        self._denials = LogLimiter()
        self.policies = load_policies()
        self.state = MasterState(config, self.policies, offer_token)
        self.clock = clock
        self.bus = Bus(broker_url, f"master-{config.master_id}", connect_timeout=connect_timeout,
                       resend_after_reconnect=False, tls=tls)
        self.active = False
        self.active_since = 0.0
        self.lease = Lease(self.bus, config.master_id, self._drop_state, self._take_over)
        self._unpersisted: list[Delivery] = []  # state-changing deliveries waiting for a snapshot
        self._dirty = False
        self._seen_consuming: set[str] = set()
        self._seen_by_me: set[str] = set()  # seen consuming by this master: no take-over grace for them
        self.dropped: dict[str, int] = {}  # what `dead-letters` dropped, by reason (maxlen, expired)
        self._dropped_reported: dict[str, int] = {}
        self._refusals = LogLimiter()
        self.logs = LogRelay(self)  # READ_LOG: relayed to the task's agent (master.logs)
        self.bus.declare(topology.master_registry_queue())
        self.bus.before_consume(self.lease.gate)
        queues = {q.name: q for q in topology.master_queues()}
        self.bus.consume(queues[topology.MASTER_AGENTS_QUEUE], self._on_agent_message)
        self.bus.consume(queues[topology.MASTER_CALLS_QUEUE], self._on_call)
        self.bus.consume(queues[topology.MASTER_STATUS_QUEUE], self._on_status)
        dropped = {q.name: q for q in topology.DEAD_LETTER_QUEUES}[topology.DEAD_LETTER_DROPPED_QUEUE]
        self.bus.consume(dropped, self._on_dropped)
        self.bus.call_every(DROPPED_REPORT_INTERVAL, self._report_dropped)
        self.bus.on_ready(self._on_ready)
        self.bus.call_every(max(MIN_TICK, config.allocation_interval * TICK_FRACTION), self._tick)
        self.bus.call_every(REGISTRY_INTERVAL, self._persist)
        self.bus.call_every(FRAMEWORK_CHECK_INTERVAL, self._check_frameworks)
        self._changed_now = True
        self.metrics = MasterMetrics.for_process(self)

    # -- lifecycle --------------------------------------------------------------------------
    def run(self) -> None:
        self.bus.run()

    def stop(self) -> None:
        self.bus.stop()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.bus.call_threadsafe(self.stop))

    def _on_ready(self) -> None:
        self.active = True
        self.active_since = self.clock()
        self.metrics.elected()
        log.info("master %s serving (allocation interval %.3fs, offer timeout %.1fs)", self.config.master_id,
                 self.config.allocation_interval, self.config.offer_timeout)
        if self.insecure:
            log.warning("master %s runs in INSECURE development mode: senders are not checked, any client of "
                        "the vhost owns the cluster (never use it on a shared cluster)", self.config.master_id)
        self._perform([PublishEvent("master.elected", {"master_id": self.config.master_id})])

    # -- election and registry --------------------------------------------------------------
    def _drop_state(self) -> None:
        """The lease is gone with the connection: forget everything, the registry is the truth now."""
        self.active = False
        self.state = MasterState(self.config, self.policies, offer_token)
        self._unpersisted.clear()  # their deliveries died with the channel and will be redelivered
        self._dirty = False
        self._seen_consuming = set()
        self._seen_by_me = set()

    def _take_over(self, done: Callable[[], None]) -> None:
        """Holding the lease: load the latest snapshot, persist it as ours, then start consuming."""
        generation = self.bus.generation

        def got(delivery: Delivery | None) -> None:
            if generation != self.bus.generation:
                return
            self.state.adopt_until = self.clock() + self.config.agent_reregister_timeout
            if delivery is not None and not self.insecure and delivery.properties.user_id != self.master_principal:
                log.error("master %s ignores a registry snapshot written by user %r, not by the master principal",
                          self.config.master_id, str(delivery.properties.user_id)[:128])
            elif delivery is not None:
                try:
                    writer, self._seen_consuming = registry.restore(self.state, delivery.body, self.clock())
                    self.state.adopt_until = self.clock() + self.config.agent_reregister_timeout
                    log.info("master %s restored the registry written by %s: %s", self.config.master_id, writer,
                             self.state.snapshot())
                except registry.RegistryError as exc:
                    log.error("master %s ignores the registry: %s", self.config.master_id, exc)
            self._dirty = True
            self._persist()
            if delivery is not None:
                self.bus.ack(delivery)  # after our own snapshot is confirmed: the registry is never empty
            done()

        self.bus.get(topology.MASTER_REGISTRY_QUEUE, got)

    def _persist(self) -> None:
        """Write a snapshot if state changed, then release the deliveries it covers (acked on confirm)."""
        if not self.lease.held:
            return
        if self._dirty:
            self._dirty = False
            body = registry.snapshot(self.state, self.config.master_id, self._seen_consuming)
            self.bus.publish("", topology.MASTER_REGISTRY_QUEUE, body)
        pending, self._unpersisted = self._unpersisted, []
        for delivery in pending:
            self.bus.ack(delivery)

    def _done(self, delivery: Delivery, changed: bool = True) -> None:
        """A delivery is applied: ack it now if it changed nothing, else once a snapshot holds it."""
        if not changed:
            self.bus.ack(delivery)
            return
        self._dirty = True
        self._unpersisted.append(delivery)
        if len(self._unpersisted) >= MAX_UNPERSISTED:
            self._persist()

    def _check_frameworks(self) -> None:
        """A framework whose offers queue has no consumer any more has lost its scheduler (no traffic
        needed: a passive declare per framework). Only frameworks seen consuming can be lost this way."""
        if not self.active:
            return
        for framework_id in list(self.state.frameworks):
            self._check_framework(framework_id, subscribed=False)

    def _check_framework(self, framework_id: str, subscribed: bool) -> None:
        """Count the consumers of one framework's offers queue: none means nobody receives its offers.
        Right after a SUBSCRIBE (``subscribed``) that holds at once: a framework must consume before
        it subscribes, and one that never does gets no offers (its failover clock runs)."""
        generation = self.bus.generation

        def counted(count: int | None) -> None:
            if generation != self.bus.generation or not self.active or framework_id not in self.state.frameworks:
                return
            log.debug("framework=%s offers queue consumers: %s", framework_id, count)
            now = self.clock()
            if count:
                if framework_id not in self._seen_consuming:
                    self._seen_consuming.add(framework_id)
                    self._dirty = True
                self._seen_by_me.add(framework_id)
                self.state.framework_connected(framework_id, now)
            elif subscribed or (framework_id in self._seen_consuming and (
                    framework_id in self._seen_by_me or now - self.active_since >= FRAMEWORK_RECONNECT_GRACE)):
                effects = self.state.framework_disconnected(framework_id, now)
                if effects:
                    log.info("framework=%s disconnected (no consumer on its offers queue)", framework_id)
                    self._dirty = True
                    self._perform(effects)

        self.bus.queue_consumers(topology.offers_queue_name(framework_id), counted)

    # -- inputs -----------------------------------------------------------------------------
    def _decode(self, delivery: Delivery, allowed: tuple[type, ...]) -> codec.Envelope | None:
        message_type = None  # unknown until decoded
        try:
            envelope = decode_delivery(delivery)
            message_type = envelope.type
            if not isinstance(envelope.body, allowed):
                raise ProtocolError(f"{envelope.type} is not accepted on {delivery.queue}")
            check_routing(delivery, envelope)
        except ProtocolError as exc:
            self.metrics.rejected(message_type, Rejection.INVALID)
            self._reject(delivery, exc.reason)
            return None
        denied = None if self.insecure else self._authorise(delivery, envelope)
        if denied is not None:
            self.metrics.rejected(envelope.type, Rejection.DENIED)
            self._deny(delivery, envelope, denied)
            return None
        self.metrics.received(envelope)
        return envelope

    # -- the master's fence: every message's user_id against what it claims ------------------
    def _sender(self, delivery: Delivery) -> security.Principal | None:
        return security.parse(delivery.properties.user_id, self.master_principal)

    def _authorise(self, delivery: Delivery, envelope: codec.Envelope) -> security.Denied | None:
        who, body = self._sender(delivery), envelope.body
        if isinstance(body, protocol.Query):
            return security.check_query(who, body.what)
        if isinstance(body, protocol.ADMIN_CALLS):
            return security.check_call(who, envelope.type, None)
        if isinstance(body, protocol.FRAMEWORK_CALLS):
            denied = security.check_call(who, envelope.type, body.framework_id)
            if denied is None and isinstance(body, protocol.Subscribe):
                denied = self.state.acl_check_subscribe(who, body)
            elif denied is None and isinstance(body, protocol.Accept):
                denied = self.state.acl_check_accept(who, body)
            return denied
        if isinstance(body, protocol.Register | protocol.Heartbeat | protocol.FromExecutor):
            return security.check_agent(who, body.agent_id)
        if isinstance(body, protocol.Status):
            if who is not None and who.kind is security.Kind.MASTER:
                return None
            for update in body.updates:
                denied = security.check_agent(who, update.agent_id)
                if denied is not None:
                    return denied
                task = self.state.tasks.get((update.framework_id, update.task_id))
                if task is not None and task.agent_id != update.agent_id:
                    return security.Denied(f"task {update.task_id} of {update.framework_id} is on agent "
                                           f"{task.agent_id}, not on {update.agent_id}")
            return None
        return security.Denied(f"{envelope.type} is not a call anyone may send to the master")

    def _deny(self, delivery: Delivery, envelope: codec.Envelope, denied: security.Denied) -> None:
        """Refused for who sent it: ERROR to the sender's own reply queue, a `security.denied` event,
        a (rate-limited) log line, and the message dead-lettered."""
        who = self._sender(delivery)
        user = delivery.properties.user_id or ""
        allowed, held = self._denials.allow(user[:128] or "(no user_id)", self.clock())
        if allowed:
            more = f" ({held} more denied meanwhile)" if held else ""
            log.warning("security: denied %s from user %r: %s%s", envelope.type, user[:128], denied.reason, more)
        reply_to = delivery.properties.reply_to
        if reply_to and reply_allowed(reply_to, None, who, secure=True):
            error = protocol.Error(f"denied: {denied.reason}", envelope.type, envelope.id)
            self.bus.publish("", reply_to, codec.encode(error, self.clock()), persistent=False,
                             correlation_id=delivery.properties.correlation_id)
        self._perform([PublishEvent("security.denied", {"user": user[:128], "type": envelope.type,
                                                        "reason": denied.reason})])
        self.bus.dead_letter(delivery, f"denied: {denied.reason}")

    def _reject(self, delivery: Delivery, reason: str, call_type: str = "", call_id: str = "",
                framework_id: str | None = None) -> None:
        """Dead-letter a bad message and, if the sender left an address it may use, tell it why."""
        reply_to = delivery.properties.reply_to
        if reply_to and reply_allowed(reply_to, framework_id, self._sender(delivery), secure=not self.insecure):
            self.bus.publish("", reply_to, codec.encode(protocol.Error(reason, call_type, call_id), self.clock()),
                             persistent=False, correlation_id=delivery.properties.correlation_id)
        self.bus.dead_letter(delivery, reason)

    def _on_agent_message(self, delivery: Delivery) -> None:
        envelope = self._decode(delivery, protocol.AGENT_MESSAGES)
        if envelope is None:
            return
        if isinstance(envelope.body, protocol.FromExecutor):
            self._on_from_executor(delivery, envelope.body)
            return
        agent = self.state.agents.get(envelope.body.agent_id)
        before = (agent is not None, len(agent.tasks) if agent else 0, agent.total if agent else None,
                  frozenset(agent.executors) if agent else frozenset())

        def apply(now: float) -> list[Effect]:
            try:
                effects = self.state.agent_info(envelope.body, now)
            except CallRefused as exc:  # dead-lettered, told to the agent (its task queue) and on `events`
                self.metrics.rejected(envelope.type, Rejection.REFUSED)
                self._reject(delivery, exc.reason)
                agent_id = envelope.body.agent_id
                self._perform([ToAgent(agent_id, protocol.Error(exc.reason, envelope.type, envelope.id)),
                               PublishEvent("agent.refused", {"agent_id": agent_id, "reason": exc.reason})])
                raise _Settled from None
            after = self.state.agents[envelope.body.agent_id]
            self._changed_now = before != (True, len(after.tasks), after.total, frozenset(after.executors))
            return effects

        self._apply(delivery, envelope, apply)

    def _on_from_executor(self, delivery: Delivery, message: protocol.FromExecutor) -> None:
        """An executor's message for its scheduler (best effort): relayed if the executor is booked on
        the sending agent for that framework, else dead-lettered with the reason. Changes no state."""
        try:
            effects = self.state.from_executor(message, self.clock())
        except CallRefused as exc:
            self.metrics.rejected("FROM_EXECUTOR", Rejection.REFUSED)
            self._log_refusal(f"agent={message.agent_id}", "FROM_EXECUTOR", exc.reason)
            self.bus.dead_letter(delivery, exc.reason)
            return
        if not effects:
            log.debug("framework=%s is not subscribed: dropped a message of executor %s", message.framework_id,
                      message.executor_id)
        self._perform(effects)
        self.bus.ack(delivery)

    def _on_call(self, delivery: Delivery) -> None:
        if self.logs.handles(delivery):
            return
        envelope = self._decode(delivery, protocol.FRAMEWORK_CALLS + protocol.ADMIN_CALLS)
        if envelope is None:
            return
        call, reply_to, now = envelope.body, delivery.properties.reply_to, self.clock()
        if isinstance(call, protocol.Query | protocol.OperatorKill):
            self._on_query(delivery, envelope, reply_to, now)
            return
        if isinstance(call, protocol.ADMIN_CALLS):
            self._on_admin_call(delivery, envelope, reply_to, now)
            return
        handlers: dict[type, Callable[[float], list[Effect]]] = {
            protocol.Subscribe: lambda now: self.state.subscribe(call, reply_to, envelope.id, now, consuming=False),
            protocol.Accept: lambda now: self.state.accept(call, now),
            protocol.Decline: lambda now: self.state.decline(call, now),
            protocol.Kill: lambda now: self.state.kill(call, now),
            protocol.Revive: lambda now: self.state.revive(call, now),
            protocol.Suppress: lambda now: self.state.suppress(call, now),
            protocol.Reconcile: lambda now: self.state.reconcile(call, reply_to, envelope.id, now),
            protocol.Teardown: lambda now: self.state.teardown(call, now),
            protocol.Message: lambda now: self.state.message(call, now),
        }
        try:
            effects = handlers[type(call)](now)
        except CallRefused as exc:
            self.metrics.rejected(envelope.type, Rejection.REFUSED)
            self._log_refusal(f"framework={call.framework_id}", envelope.type, exc.reason)
            error = protocol.Error(exc.reason, envelope.type, envelope.id)
            self._perform([ToFramework(call.framework_id, error, reply_to, envelope.id)])
            self._done(delivery, changed=not isinstance(call, protocol.Message))  # a refused ACCEPT used offers
            return
        except Exception as exc:  # a bug must not take the master down; the message says which
            log.exception("internal error applying %s", envelope.type)
            self.metrics.rejected(envelope.type, Rejection.INTERNAL)
            self._reject(delivery, f"internal error: {exc.__class__.__name__}: {exc}", envelope.type, envelope.id,
                         framework_id=call.framework_id)
            return
        if isinstance(call, protocol.Accept) and effects:
            log.debug("framework=%s launched %d tasks", call.framework_id, len(call.tasks))
        self._perform(effects)
        if isinstance(call, protocol.Message):  # relayed, nothing changed: no snapshot, no round
            self._done(delivery, changed=False)
            return
        self._maybe_round()
        self._done(delivery)
        if isinstance(call, protocol.Subscribe):
            self._check_framework(call.framework_id, subscribed=True)

    def _log_refusal(self, who: str, call_type: str, reason: str) -> None:
        allowed, held = self._refusals.allow(who, self.clock())
        if allowed:
            more = f" ({held} more refused meanwhile)" if held else ""
            log.info("refused %s from %s: %s%s", call_type, who, reason, more)

    def _on_admin_call(self, delivery: Delivery, envelope: codec.Envelope, reply_to: str | None, now: float) -> None:
        """An operator's call (``bmesos admin``): answered on reply_to, refused with ERROR, never fatal."""
        try:
            effects = self.state.admin(envelope.body, reply_to, envelope.id, now)
        except CallRefused as exc:
            self.metrics.rejected(envelope.type, Rejection.REFUSED)
            self._log_refusal("operator", envelope.type, exc.reason)
            self._perform([ToFramework("", protocol.Error(exc.reason, envelope.type, envelope.id), reply_to,
                                       envelope.id)])
            self._done(delivery, changed=False)
            return
        except Exception as exc:  # a bug must not take the master down; the message says which
            log.exception("internal error applying %s", envelope.type)
            self.metrics.rejected(envelope.type, Rejection.INTERNAL)
            self._reject(delivery, f"internal error: {exc.__class__.__name__}: {exc}", envelope.type, envelope.id,
                         framework_id="")
            return
        for effect in effects:
            if isinstance(effect, PublishEvent):
                log.info("%s %s", effect.kind, " ".join(f"{k}={v}" for k, v in sorted(effect.detail.items())))
        self._perform(effects)
        self._done(delivery, changed=any(isinstance(e, PublishEvent) for e in effects))

    def _on_query(self, delivery: Delivery, envelope: codec.Envelope, reply_to: str | None, now: float) -> None:
        """QUERY (read-only, answered from memory) and OPERATOR_KILL (kills go out at once): neither
        changes the master's books, so neither waits for a snapshot (docs/protocol.md §18)."""
        call = envelope.body
        try:
            if isinstance(call, protocol.Query):  # a `what` or `sort` it does not know: CallRefused
                scope = None if self.insecure else security.query_scope(self._sender(delivery))
                result = queries.answer(self.state, call, now, self.active_since, scope)
                effects: list[Effect] = [ToFramework("", result, reply_to, envelope.id)]
            else:
                effects = self.state.operator_kill(call, reply_to, envelope.id, now)
                log.info("operator kill of %d task(s) from %s", len(call.tasks),
                         str(delivery.properties.user_id or "(no user_id)")[:128])
        except CallRefused as exc:
            self.metrics.rejected(envelope.type, Rejection.REFUSED)
            self._log_refusal("operator", envelope.type, exc.reason)
            effects = [ToFramework("", protocol.Error(exc.reason, envelope.type, envelope.id), reply_to, envelope.id)]
        except Exception as exc:  # a bug must not take the master down; the message says which
            log.exception("internal error applying %s", envelope.type)
            self.metrics.rejected(envelope.type, Rejection.INTERNAL)
            self._reject(delivery, f"internal error: {exc.__class__.__name__}: {exc}", envelope.type, envelope.id,
                         framework_id="")
            return
        self._perform(effects)
        self._done(delivery, changed=False)

    def _on_status(self, delivery: Delivery) -> None:
        envelope = self._decode(delivery, (protocol.Status,))
        if envelope is None:
            return

        def apply(now: float) -> list[Effect]:
            effects: list[Effect] = []
            for update in envelope.body.updates:
                effects.extend(self.state.status_update(update, now))
            return effects

        self._apply(delivery, envelope, apply)

    def _apply(self, delivery: Delivery, envelope: codec.Envelope, fn: Callable[[float], list[Effect]]) -> None:
        self._changed_now = True
        try:
            effects = fn(self.clock())
        except _Settled:
            return
        except Exception as exc:
            log.exception("internal error applying %s", envelope.type)
            self.metrics.rejected(envelope.type, Rejection.INTERNAL)
            self._reject(delivery, f"internal error: {exc.__class__.__name__}: {exc}")
            return
        self._perform(effects)
        self._maybe_round()
        self._done(delivery, self._changed_now)

    def _on_dropped(self, delivery: Delivery) -> None:
        """A message `dead-letters` dropped (full, or past its age limit): counted, then forgotten."""
        deaths = (delivery.properties.headers or {}).get("x-death")
        reason = "unknown"
        if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
            reason = str(deaths[0].get("reason", "unknown"))[:32]
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self.bus.ack(delivery)

    def _report_dropped(self) -> None:
        if self.active and self.dropped != self._dropped_reported:
            self._dropped_reported = dict(self.dropped)
            log.warning("dead-letters dropped %s message(s) since this master started (by reason: %s)",
                        sum(self.dropped.values()), self.dropped)
            self._perform([PublishEvent("dead-letters.dropped", {"total": sum(self.dropped.values()),
                                                                 "by_reason": dict(self.dropped)})])

    # -- time -------------------------------------------------------------------------------
    def _tick(self) -> None:
        if not self.active or not self.bus.ready:
            return
        started = time.perf_counter()
        rounds = self.state.rounds
        effects = self.state.tick(self.clock())
        if self.state.rounds != rounds:
            self.metrics.allocation_round(time.perf_counter() - started)
        if any(not isinstance(e, ToFramework) and not (isinstance(e, PublishEvent) and e.kind == "allocation.round")
               for e in effects):
            self._dirty = True  # agents removed, frameworks past their failover timeout: persist that
        if effects:
            self._perform(effects)
            log.debug("tick: %d effects in %.1f ms", len(effects), (time.perf_counter() - started) * 1000)

    def _maybe_round(self) -> None:
        if self.state.changes >= self.config.batch_threshold:
            started = time.perf_counter()
            effects = self.state.allocation_round(self.clock())
            self.metrics.allocation_round(time.perf_counter() - started)
            self._perform(effects)

    # -- effects ----------------------------------------------------------------------------
    def _perform(self, effects: list[Effect]) -> None:
        self.metrics.performed(effects)
        now = self.clock()
        for effect in effects:
            if isinstance(effect, ToAgent):
                self.bus.publish(topology.TASKS, effect.agent_id, codec.encode(effect.body, now))
            elif isinstance(effect, ToFramework):
                self._to_framework(effect, now)
            elif isinstance(effect, PublishStatus):
                status = effect.status
                body = codec.encode(protocol.Status([status]), now)
                self.bus.publish(topology.STATUS, topology.status_key(status.framework_id, status.agent_id,
                                                                       status.state), body)
            elif isinstance(effect, PublishEvent):
                if effect.kind != "allocation.round":
                    log.info("event %s %s", effect.kind, " ".join(f"{k}={v}" for k, v in effect.detail.items()))
                body = codec.encode(protocol.ClusterEvent(effect.kind, effect.detail), now)
                self.bus.publish(topology.EVENTS, effect.kind, body, persistent=False)

    def _to_framework(self, effect: ToFramework, now: float) -> None:
        body = codec.encode(effect.body, now)
        perishable = isinstance(effect.body, (protocol.Offers, protocol.Rescind, protocol.ExecutorMessage))
        expiration = int(self.config.offer_timeout * 1000) if isinstance(effect.body, protocol.Offers) else None
        if effect.reply_to and reply_allowed(effect.reply_to, effect.framework_id):
            self.bus.publish("", effect.reply_to, body, persistent=not perishable,
                             correlation_id=effect.correlation_id, expiration_ms=expiration)
        elif effect.framework_id:
            self.bus.publish(topology.OFFERS, effect.framework_id, body, persistent=not perishable,
                             correlation_id=effect.correlation_id, expiration_ms=expiration)
        else:
            log.debug("no allowed reply queue for a %s (reply_to %r)", type(effect.body).__name__, effect.reply_to)


class _Settled(Exception):
    """Raised inside an ``_apply`` step that has already dead-lettered its delivery."""


def new_master_id() -> str:
    return f"m{uuid.uuid4().hex[:8]}"

