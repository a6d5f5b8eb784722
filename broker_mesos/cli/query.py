"""The request/reply client of the CLI's state queries: one call to the master, one answer, a deadline.

A call goes to exchange ``master`` with a private server-named reply queue and a per-message TTL equal
to the deadline, so a call nobody answered in time (no master running) expires in the master's queue
instead of being applied later by a master that starts after the command gave up. ``ask`` is that one
round trip, shared with the built-in frameworks' client (``cli/control.py``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from broker_mesos.bus import topology
from broker_mesos.bus.connection import Bus, Delivery
from broker_mesos.bus.tls import TlsOptions
from broker_mesos.cli.common import printable
from broker_mesos.core import codec, protocol
from broker_mesos.core.errors import BrokerMesosError, ProtocolError

DEFAULT_TIMEOUT = 5.0
MAX_PAGES = 100  # `all_items` stops after this many pages (100,000 items at the largest page size)


class NoAnswer(BrokerMesosError):
    """The master did not answer within the deadline (none running, or it is overloaded)."""


class Refused(BrokerMesosError):
    """The master answered ERROR."""


class Client:
    """One connection to the broker for a series of calls (``call`` blocks until answered or timed out)."""

    def __init__(self, broker: str, connect_timeout: float, timeout: float, tls: TlsOptions | None = None,
                 name: str = "query") -> None:
        self.broker, self.connect_timeout, self.timeout, self.tls, self.name = (broker, connect_timeout, timeout,
                                                                                tls, name)

    def call(self, body: Any) -> Any:
        """Send ``body`` to the master; its answer's body, or ``NoAnswer`` / ``Refused``."""
        replies = topology.Queue("", durable=False, exclusive=True, auto_delete=True)
        call_id = uuid.uuid4().hex  # the envelope id: the master's answer carries it as its correlation id
        answer = ask(self.broker, self.name, self.connect_timeout, self.tls, self.timeout, topology.MASTER,
                     topology.call_type(type(body)), codec.encode(body, time.time(), call_id), call_id, replies)
        if answer is None:
            raise NoAnswer(f"no answer from the master within {self.timeout:g}s (is `bmesos master` running?)")
        if isinstance(answer, protocol.Error):
            raise Refused(f"the master refused {printable(answer.call_type)}: {printable(answer.message)}")
        return answer

    def query(self, what: str, **filters: Any) -> protocol.QueryResult:
        answer = self.call(protocol.Query(what, **filters))
        if not isinstance(answer, protocol.QueryResult):
            raise Refused(f"the master answered {type(answer).__name__}, not QUERY_RESULT")
        return answer

    def all_items(self, what: str, **filters: Any) -> Iterator[Any]:
        """Every item of ``what`` passing ``filters``, page after page (at most ``MAX_PAGES``)."""
        offset = 0
        for _ in range(MAX_PAGES):
            page = self.query(what, offset=offset, limit=protocol.MAX_QUERY_LIMIT, **filters)
            items = getattr(page, what)
            yield from items
            offset += len(items)
            if not items or offset >= page.total:
                return


def ask(broker: str, name: str, connect_timeout: float, tls: TlsOptions | None, timeout: float, exchange: str,
        key: str, raw: bytes, call_id: str, replies: topology.Queue,
        believe: Callable[[Delivery, codec.Envelope], bool] = lambda _d, _e: True) -> Any | None:
    """Publish ``raw`` to ``exchange`` / ``key`` with ``replies`` (a server-named queue) as its reply_to,
    ``call_id`` as its correlation id and a TTL of ``timeout``; the body of the first answer carrying
    ``call_id`` that ``believe`` accepts, or None after ``timeout`` (``connect_timeout + timeout`` in all,
    connected or not: a connection the broker keeps refusing is never ready). Undecodable answers are dead-lettered."""
    bus = Bus(broker, name, connect_timeout=connect_timeout, tls=tls)
    result: list[Any] = []
    sent: list[bool] = []

    def on_reply(delivery: Delivery) -> None:
        try:
            envelope = codec.decode(delivery.body)
        except ProtocolError as exc:
            bus.dead_letter(delivery, exc.reason)
            return
        bus.ack(delivery)
        if delivery.properties.correlation_id == call_id and not result and believe(delivery, envelope):
            result.append(envelope.body)
            bus.stop()

    def send() -> None:
        if sent:
            return
        sent.append(True)
        bus.publish(exchange, key, raw, persistent=False, reply_to=bus.queue_name(replies), correlation_id=call_id,
                    expiration_ms=max(1, int(timeout * 1000)))
        bus.call_later(timeout, bus.stop)

    bus.consume(replies, on_reply)
    bus.on_ready(send)
    bus.call_later(connect_timeout + timeout, bus.stop)
    bus.run()
    return result[0] if result else None

