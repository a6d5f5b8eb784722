"""A bare, blocking framework client for tests: speaks the wire protocol directly with pika.

It uses nothing of the SDK, so a test built on it checks the master against docs/protocol.md rather
than against our own driver, and it lets a test send exactly the bad calls a buggy framework would.
"""

from __future__ import annotations

import collections
import time
import uuid
from typing import Any

import pika
import pika.adapters.blocking_connection

from broker_mesos.bus import topology
from broker_mesos.bus.connection import CONTENT_TYPE
from broker_mesos.core import codec, protocol
from broker_mesos.testing.wait import WaitTimeout


class RawFramework:
    """Declares a framework's queues, sends calls, and reads what arrives, with deadlines."""

    def __init__(self, broker_url: str, framework_id: str, *, role: str = "*") -> None:
        self.framework_id = framework_id
        self.role = role
        params = pika.URLParameters(broker_url)
        self.user = params.credentials.username  # every publish carries it as user_id (RabbitMQ checks it)
        self.connection = pika.BlockingConnection(params)
        self.channel = self.connection.channel()
        for ex in topology.EXCHANGES:
            self.channel.exchange_declare(ex.name, ex.type, durable=ex.durable)
        for q in topology.framework_queues(framework_id):
            self.channel.queue_declare(q.name, durable=q.durable, arguments=q.arguments or None)
            for exchange, key in q.bindings:
                self.channel.queue_bind(q.name, exchange, routing_key=key)
        self.events_queue = topology.offers_queue_name(framework_id)
        self.status_queue = topology.status_queue_name(framework_id)
        self.statuses: list[protocol.TaskStatus] = []
        # a framework must consume its offers queue (the master offers nothing to one that does not)
        self._events: collections.deque[bytes] = collections.deque()
        self.channel.basic_consume(self.events_queue, lambda _ch, _m, _p, body: self._events.append(body),
                                   auto_ack=True)

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()

    # -- calls ------------------------------------------------------------------------------
    def call(self, body: Any, *, raw: bytes | None = None, routing_key: str | None = None) -> str:
        """Publish a call (or ``raw`` bytes) to the master; returns the call id (the correlation id)."""
        call_id = uuid.uuid4().hex
        payload = raw if raw is not None else codec.encode(body, time.time(), call_id)
        key = routing_key if routing_key is not None else topology.call_type(type(body))
        self.channel.basic_publish(topology.MASTER, key, payload, pika.BasicProperties(
            content_type=CONTENT_TYPE, user_id=self.user, reply_to=self.events_queue, correlation_id=call_id,
            delivery_mode=2))
        return call_id

    def subscribe(self, timeout: float = 20.0) -> protocol.Subscribed:
        self.call(protocol.Subscribe(self.framework_id, self.framework_id, self.role))
        return self.expect(protocol.Subscribed, timeout)

    def accept(self, offers: list[protocol.Offer], tasks: list[protocol.TaskInfo], refuse_seconds: float = 0.0) -> str:
        return self.call(protocol.Accept(self.framework_id, [o.offer_id for o in offers], tasks, refuse_seconds))

    def decline(self, offers: list[protocol.Offer], refuse_seconds: float) -> str:
        return self.call(protocol.Decline(self.framework_id, [o.offer_id for o in offers], refuse_seconds))

    # -- reading ----------------------------------------------------------------------------
    def _get(self, queue: str) -> Any | None:
        if queue == self.events_queue:
            self.connection.process_data_events(0)
            return codec.decode(self._events.popleft()).body if self._events else None
        method, _props, body = self.channel.basic_get(queue, auto_ack=True)
        if method is None:
            return None
        return codec.decode(body).body

    def expect(self, kind: type, timeout: float = 20.0, skip: tuple[type, ...] = (protocol.Offers,)) -> Any:
        """The next event of ``kind`` on the framework's event queue; other kinds in ``skip`` are dropped."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = self._get(self.events_queue)
            if event is None:
                self.connection.sleep(0.02)
                continue
            if isinstance(event, kind):
                return event
            if not isinstance(event, skip):
                raise AssertionError(f"expected {kind.__name__}, got {event!r}")
        raise WaitTimeout(f"no {kind.__name__} for {self.framework_id} within {timeout}s")

    def offers(self, timeout: float = 20.0) -> list[protocol.Offer]:
        return self.expect(protocol.Offers, timeout, skip=(protocol.Rescind,)).offers

    def no_event(self, within: float) -> Any | None:
        """Return the first event that arrives within ``within`` seconds, or None (for "never offered")."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            event = self._get(self.events_queue)
            if event is not None:
                return event
            self.connection.sleep(0.02)
        return None

    def wait_status(self, task_id: str, state: protocol.TaskState, timeout: float = 20.0) -> protocol.TaskStatus:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for status in self.statuses:
                if status.task_id == task_id and status.state == state:
                    return status
            body = self._get(self.status_queue)
            if body is None:
                self.connection.sleep(0.02)
            else:
                self.statuses.extend(body.updates)
        seen = [(s.task_id, s.state.value) for s in self.statuses]
        raise WaitTimeout(f"task {task_id} did not reach {state.value} within {timeout}s; saw {seen}")
