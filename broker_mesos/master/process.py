"""The master process: decode, apply to ``MasterState``, publish the effects, ack.

It consumes three quorum queues (agent reports, framework calls, status updates), runs allocation
rounds on a timer and when a batch of changes has built up, and turns effects into publishes. A message
that cannot be decoded, or that the master refuses, never stops it: bad messages are dead-lettered with
the reason, refused calls answered with ERROR to the caller.
"""

from __future__ import annotations

import logging
import signal
import time
import uuid
from collections.abc import Callable

from broker_mesos.bus import topology
from broker_mesos.bus.connection import Bus, Delivery
from broker_mesos.core import codec, protocol
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

log = logging.getLogger(__name__)

TICK_FRACTION = 0.2
MIN_TICK = 0.01


class MasterProcess:
    """One master: owns a ``MasterState`` and a ``Bus``; ``run()`` blocks until ``stop()``."""

    def __init__(self, broker_url: str, config: MasterConfig, *, connect_timeout: float = 15.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.state = MasterState(config)
        self.clock = clock
        self.bus = Bus(broker_url, f"master-{config.master_id}", connect_timeout=connect_timeout)
        self._announced = False
        queues = {q.name: q for q in topology.master_queues()}
        self.bus.consume(queues[topology.MASTER_AGENTS_QUEUE], self._on_agent_message)
        self.bus.consume(queues[topology.MASTER_CALLS_QUEUE], self._on_call)
        self.bus.consume(queues[topology.MASTER_STATUS_QUEUE], self._on_status)
        self.bus.on_ready(self._on_ready)
        self.bus.call_every(max(MIN_TICK, config.allocation_interval * TICK_FRACTION), self._tick)

    # -- lifecycle --------------------------------------------------------------------------
    def run(self) -> None:
        self.bus.run()

    def stop(self) -> None:
        self.bus.stop()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.bus.call_threadsafe(self.stop))

    def _on_ready(self) -> None:
        if not self._announced:
            self._announced = True
            log.info("master %s serving (allocation interval %.3fs, offer timeout %.1fs)", self.config.master_id,
                     self.config.allocation_interval, self.config.offer_timeout)
        self._perform([PublishEvent("master.elected", {"master_id": self.config.master_id})])

    # -- inputs -----------------------------------------------------------------------------
    def _decode(self, delivery: Delivery, allowed: tuple[type, ...]) -> codec.Envelope | None:
        try:
            envelope = codec.decode(delivery.body)
            if not isinstance(envelope.body, allowed):
                raise ProtocolError(f"{envelope.type} is not accepted on {delivery.queue}")
        except ProtocolError as exc:
            self._reject(delivery, exc.reason)
            return None
        return envelope

    def _reject(self, delivery: Delivery, reason: str, call_type: str = "", call_id: str = "") -> None:
        """Dead-letter a bad message and, if the sender left an address, tell it why."""
        log.warning("rejected message on %s (key %s): %s", delivery.queue, delivery.routing_key, reason)
        reply_to = delivery.properties.reply_to
        if reply_to:
            self.bus.publish("", reply_to, codec.encode(protocol.Error(reason, call_type, call_id), self.clock()),
                             persistent=False, correlation_id=delivery.properties.correlation_id)
        self.bus.dead_letter(delivery, reason)

    def _on_agent_message(self, delivery: Delivery) -> None:
        envelope = self._decode(delivery, protocol.AGENT_MESSAGES)
        if envelope is None:
            return
        self._apply(delivery, envelope, lambda now: self.state.agent_info(envelope.body, now))

    def _on_call(self, delivery: Delivery) -> None:
        envelope = self._decode(delivery, protocol.FRAMEWORK_CALLS)
        if envelope is None:
            return
        call, reply_to, now = envelope.body, delivery.properties.reply_to, self.clock()
        handlers: dict[type, Callable[[float], list[Effect]]] = {
            protocol.Subscribe: lambda now: self.state.subscribe(call, reply_to, envelope.id, now),
            protocol.Accept: lambda now: self.state.accept(call, now),
            protocol.Decline: lambda now: self.state.decline(call, now),
            protocol.Kill: lambda now: self.state.kill(call, now),
            protocol.Revive: lambda now: self.state.revive(call, now),
            protocol.Suppress: lambda now: self.state.suppress(call, now),
            protocol.Reconcile: lambda now: self.state.reconcile(call, reply_to, envelope.id, now),
            protocol.Teardown: lambda now: self.state.teardown(call, now),
        }
        try:
            effects = handlers[type(call)](now)
        except CallRefused as exc:
            log.info("refused %s from framework=%s: %s", envelope.type, call.framework_id, exc.reason)
            error = protocol.Error(exc.reason, envelope.type, envelope.id)
            self._perform([ToFramework(call.framework_id, error, reply_to, envelope.id)])
            self.bus.ack(delivery)
            return
        except Exception as exc:  # a bug must not take the master down; the message says which
            log.exception("internal error applying %s", envelope.type)
            self._reject(delivery, f"internal error: {exc.__class__.__name__}: {exc}", envelope.type, envelope.id)
            return
        if isinstance(call, protocol.Accept) and effects:
            log.debug("framework=%s launched %d tasks", call.framework_id, len(call.tasks))
        self._perform(effects)
        self._maybe_round()
        self.bus.ack(delivery)

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
        try:
            effects = fn(self.clock())
        except Exception as exc:
            log.exception("internal error applying %s", envelope.type)
            self._reject(delivery, f"internal error: {exc.__class__.__name__}: {exc}")
            return
        self._perform(effects)
        self._maybe_round()
        self.bus.ack(delivery)

    # -- time -------------------------------------------------------------------------------
    def _tick(self) -> None:
        started = time.perf_counter()
        effects = self.state.tick(self.clock())
        if effects:
            self._perform(effects)
            log.debug("tick: %d effects in %.1f ms", len(effects), (time.perf_counter() - started) * 1000)

    def _maybe_round(self) -> None:
        if self.state.changes >= self.config.batch_threshold:
            self._perform(self.state.allocation_round(self.clock()))

    # -- effects ----------------------------------------------------------------------------
    def _perform(self, effects: list[Effect]) -> None:
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
                body = codec.encode(protocol.ClusterEvent(effect.kind, effect.detail), now)
                self.bus.publish(topology.EVENTS, effect.kind, body, persistent=False)

    def _to_framework(self, effect: ToFramework, now: float) -> None:
        body = codec.encode(effect.body, now)
        perishable = isinstance(effect.body, (protocol.Offers, protocol.Rescind))
        expiration = int(self.config.offer_timeout * 1000) if isinstance(effect.body, protocol.Offers) else None
        if effect.reply_to:
            self.bus.publish("", effect.reply_to, body, persistent=not perishable,
                             correlation_id=effect.correlation_id, expiration_ms=expiration)
        else:
            self.bus.publish(topology.OFFERS, effect.framework_id, body, persistent=not perishable,
                             correlation_id=effect.correlation_id, expiration_ms=expiration)


def new_master_id() -> str:
    return f"m{uuid.uuid4().hex[:8]}"

