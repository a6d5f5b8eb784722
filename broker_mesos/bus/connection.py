"""The pika adapter: one asynchronous connection per process, kept alive across broker restarts.

A ``Bus`` owns an I/O loop that runs for the life of the process. Around it:

* **Reconnect.** A lost connection is reopened with exponential backoff and jitter (tenacity's wait
  strategy); on every (re)connect the topology is declared again and consumers resume.
* **Confirms, pipelined.** Every publish goes out at once on a confirm-mode channel and waits in
  ``_unconfirmed`` until the broker acks it; after a reconnect the unconfirmed ones are published
  again (at-least-once: receivers deduplicate by message id).
* **Acks after effects.** ``ack(delivery)`` does not ack at once: the delivery is acked when everything
  published before the call has been confirmed, so a message is only removed from its queue once its
  effects are safely in the broker. Acks that become ready together go out as one multiple-ack.
* **Timers and threads.** ``call_later`` / ``call_every`` run on the loop; ``call_threadsafe`` is the
  one entry point for other threads.
* **Several brokers.** ``url`` may list several AMQP URLs separated by commas (the nodes of a cluster);
  every new connection attempt goes to the next one, so a dead node is skipped.
* **A gate before consuming.** ``before_consume(gate)`` runs ``gate(done)`` on every connect after the
  topology is declared (publishing already works) and starts the consumers only when it calls ``done``:
  the master holds its lease there (``declare_exclusive``) before it takes any input.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pika
import pika.channel
import pika.exceptions
import pika.frame
import pika.spec
import tenacity
from pika.adapters.select_connection import IOLoop

from broker_mesos.bus import topology
from broker_mesos.bus.tls import (
    TlsError,
    TlsOptions,
    check_urls,
    connection_parameters,
    describe_ssl_error,
    describe_ssl_text,
)
from broker_mesos.bus.topology import Exchange, Queue
from broker_mesos.core import codec, security
from broker_mesos.core.errors import BrokerUnreachable, ProtocolError
from broker_mesos.core.ratelimit import LogLimiter

log = logging.getLogger(__name__)

# capped at 2 s: a process back within one agent timeout of a broker restart keeps its tasks
RECONNECT_WAIT = tenacity.wait_random_exponential(multiplier=0.2, max=2.0)
DEFAULT_CONNECT_TIMEOUT = 15.0
AMQP_HEARTBEAT = 10
DEFAULT_PREFETCH = 200
ACK_FLUSH_DELAY = 0.0
NACK_RETRY_DELAY = 0.2  # seconds before re-sending what the broker nacked (a queue without a leader)
CONTENT_TYPE = "application/msgpack"


@dataclass(slots=True)
class Delivery:
    """One message taken from a queue; hand it back to ``Bus.ack`` or ``Bus.dead_letter``."""

    body: bytes
    exchange: str
    routing_key: str
    properties: pika.spec.BasicProperties
    delivery_tag: int
    redelivered: bool
    queue: str
    generation: int


def url_user(url: str) -> str:
    """The broker user of an AMQP URL (the first of a comma-separated list): who this process is."""
    return str(pika.URLParameters(url.split(",")[0].strip()).credentials.username)


def decode_delivery(delivery: Delivery) -> codec.Envelope:
    """The envelope of ``delivery``, or ``ProtocolError``: the content type must be msgpack's and the
    body a valid envelope (docs/protocol.md §2)."""
    content_type = delivery.properties.content_type
    if content_type != CONTENT_TYPE:
        shown = repr(content_type)[:64] if content_type is not None else "none"
        raise ProtocolError(f"content_type is {shown}, not {CONTENT_TYPE}")
    return codec.decode(delivery.body)


@dataclass(slots=True)
class _Outgoing:
    exchange: str
    routing_key: str
    body: bytes
    properties: pika.spec.BasicProperties
    on_confirm: Callable[[], None] | None = None


@dataclass(slots=True)
class _Consumer:
    queue: Queue
    callback: Callable[[Delivery], None]
    arguments: Callable[[], dict[str, Any]] | None = None
    actual_name: str = ""


class Bus:
    """A reconnecting, confirming AMQP connection driven by one I/O loop."""

    def __init__(self, url: str, name: str, *, prefetch: int = DEFAULT_PREFETCH,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 exchanges: Iterable[Exchange] = topology.EXCHANGES,
                 queues: Iterable[Queue] | None = None, resend_after_reconnect: bool = True,
                 tls: TlsOptions | None = None) -> None:
        self.urls = [u.strip() for u in url.split(",") if u.strip()] or [url]
        self.url = self.urls[0]
        # amqps:// URLs connect with TLS and verify the broker (bus/tls.py); bad options fail here, not later
        check_urls(self.urls, tls)
        self.tls = tls
        connection_parameters(self.url, tls)
        self.resend_after_reconnect = resend_after_reconnect
        self._gate: Callable[[Callable[[], None]], None] | None = None
        self._url_index = 0
        self._publishable = False
        self.name = name
        self.prefetch = prefetch
        self.connect_timeout = connect_timeout
        self._exchanges = tuple(exchanges)
        self._queues: list[Queue] = list(topology.base_queues() if queues is None else queues)
        # the broker user this connection publishes as (AMQP user_id, which RabbitMQ validates); a
        # principal other than the master may not configure the shared topology: it declares it
        # passively (it must exist: `bmesos principals init` declares it) and only its own queues actively
        self.user = url_user(self.url)
        who = security.parse(self.user)
        self._shared_passive = who is not None and who.kind is not security.Kind.MASTER
        self._shared_queues = len(self._queues)
        self._consumers: list[_Consumer] = []
        self._on_ready: list[Callable[[], None]] = []
        self._ioloop = IOLoop()
        self._connection: pika.SelectConnection | None = None
        self._channel: pika.channel.Channel | None = None
        self._generation = 0
        self._ready = False
        self._stopping = False
        self._ever_connected = False
        self._attempt = 0
        self._first_attempt_at = 0.0
        self._failure: BaseException | None = None
        self._next_seq = 1
        self._unconfirmed: collections.OrderedDict[int, _Outgoing] = collections.OrderedDict()
        self._outbox: list[_Outgoing] = []
        # delivered and not yet acked, in delivery order: tag -> publish seq its effects need (None: not done)
        self._inflight: collections.OrderedDict[int, int | None] = collections.OrderedDict()
        self._ack_flush_scheduled = False
        self._nack_floor: int | None = None  # lowest seq of a nacked message waiting to be re-sent
        self._rejections = LogLimiter()
        self.dead_lettered = 0  # messages this process moved to the dead-letter exchange

    # -- public API -------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def generation(self) -> int:
        """Incremented on every new channel: callbacks compare it to tell a stale connection's work."""
        return self._generation

    def before_consume(self, gate: Callable[[Callable[[], None]], None]) -> None:
        """On every connect, run ``gate(done)`` after declaring the topology; consumers start on ``done()``."""
        self._gate = gate

    def declare_exclusive(self, queue: Queue, callback: Callable[[bool], None]) -> None:
        """Declare ``queue`` exclusive to this connection on a side channel: ``callback(True)`` if this
        connection now holds it, ``callback(False)`` if another connection does (RESOURCE_LOCKED) or the
        connection is gone. The queue lives exactly as long as this connection: a lease."""
        self._side_channel(lambda ch, finish: ch.queue_declare(
            queue.name, durable=False, exclusive=True, auto_delete=queue.auto_delete,
            arguments=queue.arguments or None, callback=lambda _f: finish(True)), callback, False)

    def queue_consumers(self, name: str, callback: Callable[[int | None], None]) -> None:
        """Passively declare queue ``name`` on a side channel: ``callback(consumer count)``, or
        ``callback(None)`` if it does not exist or the connection is gone."""
        self._side_channel(lambda ch, finish: ch.queue_declare(
            name, passive=True, callback=lambda f: finish(f.method.consumer_count)), callback, None)

    def get(self, queue_name: str, callback: Callable[[Delivery | None], None]) -> None:
        """``basic.get`` one message from ``queue_name`` (``None`` if empty); hand it to ``ack`` like any."""
        channel, generation = self._channel, self._generation
        if channel is None or not channel.is_open:
            callback(None)
            return
        answered = False

        def got(_ch: object, method: pika.spec.Basic.GetOk, props: pika.spec.BasicProperties, body: bytes) -> None:
            nonlocal answered
            answered = True
            self._inflight[method.delivery_tag] = None
            callback(Delivery(body, method.exchange, method.routing_key, props, method.delivery_tag,
                              method.redelivered, queue_name, generation))

        def empty(_frame: object) -> None:
            nonlocal answered
            if not answered:
                answered = True
                callback(None)

        channel.add_callback(empty, [pika.spec.Basic.GetEmpty], one_shot=True)
        channel.basic_get(queue_name, got, auto_ack=False)

    def _side_channel(self, use: Callable[[pika.channel.Channel, Callable[[Any], None]], None],
                      callback: Callable[[Any], None], failed: Any) -> None:
        """Run one operation that may be refused on a channel of its own, so a refusal (which closes
        the channel) never touches the main channel; the channel is closed afterwards."""
        connection = self._connection
        if connection is None or not connection.is_open:
            callback(failed)
            return
        finished = False

        def finish(result: Any) -> None:
            nonlocal finished
            if not finished:
                finished = True
                callback(result)

        def opened(channel: pika.channel.Channel) -> None:
            channel.add_on_close_callback(lambda _ch, _reason: finish(failed))

            def done(result: Any) -> None:
                finish(result)
                if channel.is_open:
                    channel.close()

            use(channel, done)

        try:
            connection.channel(on_open_callback=opened)
        except (pika.exceptions.AMQPError, OSError):
            finish(failed)

    def declare(self, *queues: Queue) -> None:
        """Declare queues now (if connected) and on every reconnect."""
        self._queues.extend(queues)
        if self._ready:
            for q in queues:
                self._declare_queue(q, lambda _name: None)

    def consume(self, queue: Queue, callback: Callable[[Delivery], None], *,
                arguments: Callable[[], dict[str, Any]] | None = None) -> None:
        """Declare ``queue`` and deliver its messages to ``callback`` (on the loop) from now on.
        ``arguments()``, asked on every (re)connect, gives the consumer arguments: a stream consumer's
        ``x-stream-offset`` says where it resumes. A shared queue is declared as the shared ones are."""
        consumer = _Consumer(queue, callback, arguments)
        self._consumers.append(consumer)
        if self._ready:
            self._start_consumer(consumer)

    def queue_name(self, queue: Queue) -> str:
        """The name the broker gave ``queue`` (differs from ``queue.name`` for server-named queues)."""
        for c in self._consumers:
            if c.queue is queue:
                return c.actual_name
        return queue.name

    def on_ready(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` after every (re)connect, once topology and consumers are in place."""
        self._on_ready.append(callback)
        if self._ready:
            callback()

    def publish(self, exchange: str, routing_key: str, body: bytes, *, persistent: bool = True,
                reply_to: str | None = None, correlation_id: str | None = None,
                headers: dict[str, Any] | None = None, expiration_ms: int | None = None,
                message_type: str | None = None, on_confirm: Callable[[], None] | None = None) -> None:
        """Publish now or as soon as connected; kept and re-sent until the broker confirms it."""
        props = pika.BasicProperties(
            delivery_mode=2 if persistent else 1, content_type=CONTENT_TYPE, user_id=self.user,
            reply_to=reply_to, correlation_id=correlation_id, headers=headers, type=message_type,
            expiration=str(expiration_ms) if expiration_ms is not None else None)
        out = _Outgoing(exchange, routing_key, body, props, on_confirm)
        if self._publishable:
            self._send(out)
        elif self.resend_after_reconnect:
            self._outbox.append(out)
        else:
            log.debug("%s: not connected; dropped a message to %s/%s", self.name, exchange, routing_key)

    def ack(self, delivery: Delivery) -> None:
        """Ack ``delivery`` once everything published so far is confirmed."""
        if delivery.generation != self._generation:
            return  # the channel it came on is gone; the broker will redeliver it
        if delivery.delivery_tag in self._inflight:
            self._inflight[delivery.delivery_tag] = self._next_seq - 1
            self._schedule_ack_flush()

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move ``delivery`` to the dead-letter exchange with ``reason`` in a header, then ack it; log
        it (at most ``LogLimiter``'s burst per queue and period, the rest counted)."""
        self.dead_lettered += 1
        allowed, held = self._rejections.allow(delivery.queue, time.monotonic())
        if allowed:
            more = f" ({held} more dead-lettered from this queue meanwhile)" if held else ""
            log.warning("%s: dead-lettered a message from %s (key %s): %s%s", self.name, delivery.queue,
                        delivery.routing_key[:128], reason[:300], more)
        headers = dict(delivery.properties.headers or {})
        headers.update({topology.HEADER_REASON: reason[:1000],
                        topology.HEADER_ORIGINAL_EXCHANGE: delivery.exchange,
                        topology.HEADER_ORIGINAL_ROUTING_KEY: delivery.routing_key,
                        topology.HEADER_QUEUE: delivery.queue})
        self.publish(topology.DEAD_LETTER, delivery.routing_key, delivery.body, headers=headers,
                     correlation_id=delivery.properties.correlation_id,
                     reply_to=delivery.properties.reply_to)
        self.ack(delivery)

    def call_later(self, delay: float, fn: Callable[[], None]) -> object:
        return self._ioloop.call_later(max(0.0, delay), fn)

    def cancel(self, handle: object) -> None:
        self._ioloop.remove_timeout(handle)

    def call_every(self, interval: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` every ``interval`` seconds on the loop; an exception is logged, not fatal."""

        def tick() -> None:
            try:
                fn()
            except Exception:
                log.exception("periodic task %s failed", getattr(fn, "__name__", fn))
            if not self._stopping:
                self._ioloop.call_later(interval, tick)

        self._ioloop.call_later(interval, tick)

    def call_threadsafe(self, fn: Callable[[], None]) -> None:
        self._ioloop.add_callback_threadsafe(fn)

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the loop whenever ``fd`` (a non-blocking socket) is readable (or closed);
        an exception it raises is logged, never fatal to the loop."""

        def handler(_fd: int, _events: int) -> None:
            try:
                callback()
            except Exception:
                log.exception("reader of fd %d failed", fd)

        self._ioloop.add_handler(fd, handler, self._ioloop.READ)

    def remove_reader(self, fd: int) -> None:
        self._ioloop.remove_handler(fd)

    def run(self) -> None:
        """Connect and run the loop until ``stop``; raises ``BrokerUnreachable`` if the first
        connection cannot be made within ``connect_timeout``."""
        self._first_attempt_at = time.monotonic()
        self.call_every(self._rejections.period, self._report_rejections)
        self._connect()
        self._ioloop.start()
        if self._failure is not None:
            raise self._failure

    def stop(self) -> None:
        """Close the connection after pending confirms and acks are flushed (best effort, 2 s)."""
        if self._stopping:
            return
        self._stopping = True
        deadline = time.monotonic() + 2.0

        def close_when_flushed() -> None:
            busy = self._unconfirmed or any(v is not None for v in self._inflight.values())
            if self._ready and busy and time.monotonic() < deadline:
                self._flush_acks()
                self._ioloop.call_later(0.01, close_when_flushed)
                return
            self._close()

        close_when_flushed()

    def _report_rejections(self) -> None:
        for queue, count in self._rejections.drain(time.monotonic()):
            log.warning("%s: dead-lettered %d more message(s) from %s (log lines suppressed)", self.name, count, queue)

    def stop_threadsafe(self) -> None:
        self.call_threadsafe(self.stop)

    @property
    def unconfirmed(self) -> int:
        return len(self._unconfirmed) + len(self._outbox)

    # -- connection lifecycle ---------------------------------------------------------------
    def _connect(self) -> None:
        self.url = self.urls[self._url_index % len(self.urls)]
        try:
            params = connection_parameters(self.url, self.tls)
        except TlsError as exc:  # a certificate file went away or went bad since the start: retry like a refusal
            self._attempt += 1
            self._ioloop.call_later(0, lambda error=exc: self._on_connection_error(None, error))
            return
        params.heartbeat = AMQP_HEARTBEAT
        params.connection_attempts = 1
        params.socket_timeout = 5
        params.blocked_connection_timeout = 60
        params.client_properties = {"connection_name": f"{self.name}@{socket.gethostname()}:{os.getpid()}"}
        self._attempt += 1
        self._connection = pika.SelectConnection(
            params, on_open_callback=self._on_connection_open,
            on_open_error_callback=self._on_connection_error,
            on_close_callback=self._on_connection_closed, custom_ioloop=self._ioloop)

    def _on_connection_error(self, _conn: object, error: BaseException) -> None:
        self._connection = None
        self._url_index += 1
        if self._stopping:
            self._ioloop.stop()
            return
        if not self._ever_connected and time.monotonic() - self._first_attempt_at > self.connect_timeout:
            self._failure = BrokerUnreachable(
                f"cannot connect to the broker at {_redact(self.url)}: {_describe(error)}")
            self._ioloop.stop()
            return
        self._schedule_reconnect(f"connect failed: {_describe(error)}")

    def _schedule_reconnect(self, why: str) -> None:
        state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = self._attempt
        delay = RECONNECT_WAIT(state)
        log.warning("%s: %s; reconnecting in %.2fs", self.name, why, delay)
        self._ioloop.call_later(delay, self._connect)

    def _on_connection_open(self, connection: pika.SelectConnection) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_connection_closed(self, _conn: object, reason: BaseException) -> None:
        self._lost()
        self._connection = None
        if self._stopping:
            self._ioloop.stop()
            return
        self._url_index += 1
        self._schedule_reconnect(f"connection lost ({reason})")

    def _on_channel_open(self, channel: pika.channel.Channel) -> None:
        self._channel = channel
        self._generation += 1
        channel.add_on_close_callback(self._on_channel_closed)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm)
        channel.basic_qos(prefetch_count=self.prefetch, callback=lambda _f: self._declare_all())

    def _on_channel_closed(self, channel: pika.channel.Channel, reason: BaseException) -> None:
        if self._stopping:
            log.debug("%s: channel closed: %s", self.name, reason)
        else:
            log.error("%s: channel closed: %s", self.name, reason)
        self._lost()
        if self._connection is not None and self._connection.is_open and not self._stopping:
            self._connection.close()

    def _lost(self) -> None:
        """Forget channel-bound state; unconfirmed messages go back to the outbox to be re-sent
        (or are dropped, with ``resend_after_reconnect=False``: the master re-derives them)."""
        self._ready = False
        self._publishable = False
        self._channel = None
        self._inflight.clear()
        self._nack_floor = None
        if self.resend_after_reconnect:
            self._outbox[:0] = list(self._unconfirmed.values())
        elif self._unconfirmed or self._outbox:
            log.warning("%s: dropping %d unconfirmed message(s) with the connection", self.name,
                        len(self._unconfirmed) + len(self._outbox))
            self._outbox.clear()
        self._unconfirmed.clear()
        self._next_seq = 1

    def _close(self) -> None:
        if self._connection is not None and self._connection.is_open:
            self._connection.close()
        elif self._connection is None or self._connection.is_closed:
            self._ioloop.stop()

    # -- declarations -----------------------------------------------------------------------
    def _declare_all(self) -> None:
        steps: list[Callable[[Callable[[], None]], None]] = []
        passive = self._shared_passive
        for ex in self._exchanges:
            steps.append(lambda done, ex=ex: self._channel.exchange_declare(  # type: ignore[union-attr]
                exchange=ex.name, exchange_type=ex.type, durable=ex.durable, passive=passive,
                callback=lambda _f: done()))
        for i, q in enumerate(self._queues):
            shared = passive and i < self._shared_queues
            steps.append(lambda done, q=q, shared=shared: self._declare_queue(q, lambda _n: done(), passive=shared))
        steps.append(self._open_for_publishing)
        if self._gate is not None:
            steps.append(lambda done: self._gate(done))  # type: ignore[misc]
        for c in self._consumers:
            steps.append(lambda done, c=c: self._start_consumer(c, done))
        self._run_steps(steps, self._became_ready)

    def _run_steps(self, steps: list[Callable[[Callable[[], None]], None]], finish: Callable[[], None]) -> None:
        generation = self._generation

        def run(i: int) -> None:
            if generation != self._generation or self._channel is None:
                return
            if i == len(steps):
                finish()
            else:
                steps[i](lambda: run(i + 1))

        run(0)

    def _declare_queue(self, q: Queue, done: Callable[[str], None], passive: bool = False) -> None:
        channel = self._channel
        assert channel is not None
        if passive:  # someone else's queue: it must exist; its bindings are not ours to make
            channel.queue_declare(queue=q.name, passive=True, callback=lambda frame: done(frame.method.queue))
            return

        def declared(frame: pika.frame.Method) -> None:
            name = frame.method.queue
            binds = [lambda d, ex=ex, key=key: channel.queue_bind(
                name, ex, routing_key=name if key == topology.OWN_NAME else key, callback=lambda _f: d())
                for ex, key in q.bindings]
            self._run_steps(binds, lambda: done(name))

        channel.queue_declare(queue=q.name, durable=q.durable, exclusive=q.exclusive, auto_delete=q.auto_delete,
                              arguments=q.arguments or None, callback=declared)

    def _start_consumer(self, consumer: _Consumer, done: Callable[[], None] | None = None) -> None:
        def declared(name: str) -> None:
            consumer.actual_name = name
            generation = self._generation

            def on_message(_ch: object, method: pika.spec.Basic.Deliver, props: pika.spec.BasicProperties,
                           body: bytes) -> None:
                self._inflight[method.delivery_tag] = None
                delivery = Delivery(body, method.exchange, method.routing_key, props, method.delivery_tag,
                                    method.redelivered, name, generation)
                try:
                    consumer.callback(delivery)
                except Exception as exc:  # one message must never drop the connection or loop a consumer
                    if self._rejections.allow(f"internal error on {name}", time.monotonic())[0]:
                        log.exception("%s: handling a message from %s failed", self.name, name)
                    if self._inflight.get(method.delivery_tag, 0) is None:  # not settled by the callback
                        self.dead_letter(delivery, f"internal error: {exc.__class__.__name__}: {str(exc)[:200]}")

            assert self._channel is not None
            arguments = consumer.arguments() if consumer.arguments is not None else None
            # done once the broker has registered the consumer: "ready" means messages are coming
            self._channel.basic_consume(name, on_message, auto_ack=False, arguments=arguments,
                                        callback=lambda _f: done() if done else None)

        shared = self._shared_passive and consumer.queue in self._queues[:self._shared_queues]
        self._declare_queue(consumer.queue, declared, passive=shared)

    def _open_for_publishing(self, done: Callable[[], None]) -> None:
        """Topology is in place: send what waited in the outbox, publish directly from now on."""
        self._publishable = True
        self._ever_connected = True
        outbox, self._outbox = self._outbox, []
        for out in outbox:
            self._send(out)
        done()

    def _became_ready(self) -> None:
        self._ready = True
        self._attempt = 0  # only now: a connection refused a declare (403) keeps backing off
        log.info("%s: connected to %s", self.name, _redact(self.url))
        for callback in list(self._on_ready):
            callback()

    # -- publishing and confirms ------------------------------------------------------------
    def _send(self, out: _Outgoing) -> None:
        assert self._channel is not None
        try:
            self._channel.basic_publish(out.exchange, out.routing_key, out.body, out.properties)
        except (pika.exceptions.AMQPError, OSError) as exc:
            log.warning("%s: publish failed (%s); will re-send after reconnect", self.name, exc)
            self._outbox.append(out)
            return
        self._unconfirmed[self._next_seq] = out
        self._next_seq += 1

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        method = frame.method
        tag, multiple = method.delivery_tag, method.multiple
        nacked = isinstance(method, pika.spec.Basic.Nack)
        if multiple:
            done = []
            while self._unconfirmed:
                seq = next(iter(self._unconfirmed))
                if seq > tag:
                    break
                done.append((seq, self._unconfirmed.popitem(last=False)[1]))
        else:
            out = self._unconfirmed.pop(tag, None)
            done = [(tag, out)] if out else []
        if nacked and done:
            self._retry_nacked(done)
            return
        for _seq, out in done:
            if out.on_confirm is not None:
                out.on_confirm()
        if self._inflight:
            self._schedule_ack_flush()

    def _retry_nacked(self, nacked: list[tuple[int, _Outgoing]]) -> None:
        """Re-send nacked messages after a pause, on a new connection: a quorum queue electing a new
        leader (a cluster node died) nacks for a while. Acks that depend on them wait."""
        floor = nacked[0][0]
        self._nack_floor = floor if self._nack_floor is None else min(self._nack_floor, floor)
        generation = self._generation
        log.warning("%s: broker nacked %d message(s) (first to %s/%s); re-sending in %.1fs", self.name, len(nacked),
                    nacked[0][1].exchange, nacked[0][1].routing_key, NACK_RETRY_DELAY)

        def resend() -> None:
            if generation != self._generation:
                if self.resend_after_reconnect:
                    for _seq, out in nacked:
                        if self._publishable:
                            self._send(out)
                        else:
                            self._outbox.append(out)
                return
            if not self._publishable:  # the channel is already gone: the reconnect re-sends the outbox
                if self.resend_after_reconnect:
                    self._outbox[:0] = [out for _seq, out in nacked]
                return
            # RabbitMQ 3.10 keeps nacking on a channel whose quorum queue changed leader (a node died),
            # while a new channel publishes fine: re-send through a fresh connection, nacked ones first
            self._unconfirmed = collections.OrderedDict([*nacked, *self._unconfirmed.items()])
            if self._connection is not None and self._connection.is_open:
                log.warning("%s: reopening the connection to re-send %d nacked message(s)", self.name, len(nacked))
                self._connection.close()

        self._ioloop.call_later(NACK_RETRY_DELAY, resend)

    def _schedule_ack_flush(self) -> None:
        if not self._ack_flush_scheduled:
            self._ack_flush_scheduled = True
            self._ioloop.call_later(ACK_FLUSH_DELAY, self._flush_acks)

    def _flush_acks(self) -> None:
        """Ack, with one multiple-ack, the longest prefix of deliveries whose effects are confirmed."""
        self._ack_flush_scheduled = False
        if self._channel is None or not self._publishable or not self._channel.is_open:
            return
        first_unconfirmed = next(iter(self._unconfirmed)) if self._unconfirmed else self._next_seq
        if self._nack_floor is not None:
            first_unconfirmed = min(first_unconfirmed, self._nack_floor)
        last = 0
        while self._inflight:
            tag, needed = next(iter(self._inflight.items()))
            if needed is None or needed >= first_unconfirmed:
                break
            self._inflight.popitem(last=False)
            last = tag
        if last:
            self._channel.basic_ack(last, multiple=True)


def _describe(error: BaseException) -> str:
    """pika wraps the real cause (refused, timed out, bad credentials) in exceptions that print empty."""
    inner = getattr(error, "exceptions", None)
    if inner:
        return _describe(inner[-1])
    if isinstance(error, ssl.SSLError):  # the TLS handshake failed: untrusted certificate, wrong host, ...
        return describe_ssl_error(error)
    cause = getattr(error, "exception", None) or (error.args[0] if error.args else None)
    if isinstance(cause, BaseException):
        return _describe(cause)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    text = str(error).strip()
    if isinstance(error, pika.exceptions.ProbableAuthenticationError):
        return "authentication failed (check the user and password in the URL)"
    if isinstance(error, pika.exceptions.ProbableAccessDeniedError):
        return "access denied (check the vhost and the user's permissions)"
    tls_failure = describe_ssl_text(text)  # a TLS alert pika only kept as text
    if tls_failure is not None:
        return tls_failure
    return f"{error.__class__.__name__}: {text}" if text else error.__class__.__name__


def _redact(url: str) -> str:
    """The URL without its password, for logs and error lines."""
    params = pika.URLParameters(url)
    vhost = "" if params.virtual_host == "/" else params.virtual_host
    scheme = "amqps" if params.ssl_options is not None else "amqp"
    return f"{scheme}://{params.host}:{params.port}/{vhost}"
