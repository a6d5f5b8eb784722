"""The dashboard's side of the broker: one ``Bus`` on a thread of its own (pika is not asyncio), handing
everything to the web server's event loop with ``call_soon_threadsafe``; the loop asks back with
``Bus.call_threadsafe``. Nothing else crosses the two threads.

It follows ``status`` and ``events`` on one exclusive queue bound with ``#`` (what happens while the
dashboard runs), reads the state once (summary, agents, frameworks, tasks with the remembered ended
ones, roles: pages of ``protocol.MAX_QUERY_LIMIT``, at most ``MAX_LOAD_PAGES`` per kind), then asks only
for the summary and the roles every ``SUMMARY_INTERVAL`` seconds, and on demand for one task (its
resources, its history) or one window of a task's log (READ_LOG, docs/protocol.md §19). Replies and
log chunks come to a second exclusive queue, bound to ``logs`` with ``<our user>.<token>``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from broker_mesos.bus import topology
from broker_mesos.bus.connection import Bus, Delivery, decode_delivery
from broker_mesos.bus.tls import TlsOptions
from broker_mesos.core import codec, protocol, security
from broker_mesos.core.errors import ProtocolError

log = logging.getLogger("broker_mesos.ui")

SUMMARY_INTERVAL = 3.0
MAX_LOAD_PAGES = 20  # per kind: 20,000 items at the largest page size
LOG_WINDOW = 256 * 1024  # the most log bytes one request of the page gets
REQUEST_TIMEOUT = 10.0
LOAD_KINDS = ("summary", "agents", "frameworks", "tasks", "roles")

Sink = Callable[[str, Any], None]  # (kind, value) on the server's loop: "page", "status", "event", "loaded"


class Failed(Exception):
    """A request of the page the master or an agent refused, or did not answer in time."""


class Feed:
    """Reads the cluster and follows it; ``sink`` gets each page, status update and event on ``loop``."""

    def __init__(self, broker: str, connect_timeout: float, tls: TlsOptions | None, master_principal: str,
                 loop: asyncio.AbstractEventLoop, sink: Sink) -> None:
        self.loop, self.sink, self.master_principal = loop, sink, master_principal
        self.bus = Bus(broker, "ui", connect_timeout=connect_timeout, tls=tls)
        self.secure = security.parse(self.bus.user, master_principal) is not None
        self.token = uuid.uuid4().hex
        self.replies = topology.Queue("", ((topology.LOGS, f"{self.bus.user}.{self.token}"),), durable=False,
                                      exclusive=True, auto_delete=True)
        self.updates = topology.Queue("", ((topology.STATUS, "#"), (topology.EVENTS, "#")), durable=False,
                                      exclusive=True, auto_delete=True)
        self.waiting: dict[str, Callable[[Any], None]] = {}  # correlation id -> what to do with the answer (bus thread)
        self.thread = threading.Thread(target=self._run, name="ui-bus", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self.bus.consume(self.replies, self._guarded(self._on_reply))
        self.bus.consume(self.updates, self._guarded(self._on_update))
        self.bus.on_ready(self._load)  # again after a reconnect: what happened meanwhile is read anew
        self.bus.call_every(SUMMARY_INTERVAL, self._refresh)
        self.thread.start()

    def stop(self) -> None:
        self.bus.stop_threadsafe()
        self.thread.join(5)

    def _run(self) -> None:
        try:
            self.bus.run()
        except BaseException as exc:  # the server reports it; this thread only ends
            self.error = exc
            log.debug("ui: the broker connection ended: %s", exc)

    def _guarded(self, handle: Callable[[Delivery], None]) -> Callable[[Delivery], None]:
        """``handle``, whose failure on one message is logged and never ends the bus thread."""

        def guarded(delivery: Delivery) -> None:
            try:
                handle(delivery)
            except Exception:
                log.exception("ui: failed to handle a message from %s", delivery.properties.user_id)

        return guarded

    def _to_loop(self, kind: str, value: Any) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.sink, kind, value)

    # -- the bus thread --------------------------------------------------------------------------

    def _ask(self, call: Any, then: Callable[[Any], None], timeout: float = REQUEST_TIMEOUT) -> str:
        call_id = uuid.uuid4().hex
        self.waiting[call_id] = then
        self.bus.publish(topology.MASTER, topology.call_type(type(call)), codec.encode(call, time.time(), call_id),
                         persistent=False, reply_to=self.bus.queue_name(self.replies), correlation_id=call_id,
                         expiration_ms=int(timeout * 1000))

        def expire() -> None:
            answer = self.waiting.pop(call_id, None)
            if answer is not None:
                answer(protocol.Error(f"no answer within {timeout:g}s", call_type=topology.call_type(type(call))))

        self.bus.call_later(timeout, expire)
        return call_id

    def _refresh(self) -> None:
        """The summary and the roles (one page: roles are few), every ``SUMMARY_INTERVAL``."""
        self._ask(protocol.Query("summary"), self._page)
        self._ask(protocol.Query("roles", limit=protocol.MAX_QUERY_LIMIT), self._page)

    def _load(self) -> None:
        for what in LOAD_KINDS:
            self._load_page(what, 0, 0)

    def _load_page(self, what: str, offset: int, pages: int) -> None:
        extra: dict[str, Any] = {"completed": True} if what == "tasks" else {}
        query = protocol.Query(what, offset=offset, limit=protocol.MAX_QUERY_LIMIT, **extra)

        def then(body: Any) -> None:
            if not isinstance(body, protocol.QueryResult):
                log.warning("ui: the master did not answer QUERY %s: %s", what, getattr(body, "message", body))
                return
            self._page(body)
            got = len(getattr(body, what)) if what != "summary" else 0
            if got and offset + got < body.total and pages + 1 < MAX_LOAD_PAGES:
                self._load_page(what, offset + got, pages + 1)
            else:
                self._to_loop("loaded", what)

        self._ask(query, then)

    def _page(self, body: Any) -> None:
        if isinstance(body, protocol.QueryResult):
            self._to_loop("page", body)

    def _on_reply(self, delivery: Delivery) -> None:
        try:
            envelope = decode_delivery(delivery)
        except ProtocolError as exc:
            self.bus.dead_letter(delivery, exc.reason)
            return
        self.bus.ack(delivery)
        body = envelope.body
        call_id = delivery.properties.correlation_id or ""
        if self.secure:
            who = security.parse(delivery.properties.user_id, self.master_principal)
            if who is None or who.kind not in (security.Kind.MASTER, security.Kind.AGENT):
                return
        if isinstance(body, protocol.LogData) and not body.last:
            answer = self.waiting.get(call_id)
        else:
            answer = self.waiting.pop(call_id, None)
        if answer is not None:
            answer(body)

    def _on_update(self, delivery: Delivery) -> None:
        try:
            envelope = decode_delivery(delivery)
        except ProtocolError as exc:
            self.bus.dead_letter(delivery, exc.reason)
            return
        self.bus.ack(delivery)
        body = envelope.body
        sender = security.parse(delivery.properties.user_id, self.master_principal)
        if isinstance(body, protocol.Status):
            for update in body.updates:
                if self.secure and (sender is None or not (sender.kind is security.Kind.MASTER or (
                        sender.kind is security.Kind.AGENT and sender.name == update.agent_id))):
                    continue  # only the master and the update's own agent are believed (§16.4)
                self._to_loop("status", update)
        elif isinstance(body, protocol.ClusterEvent):
            if self.secure and (sender is None or sender.kind is not security.Kind.MASTER):
                return
            self._to_loop("event", (body, envelope.ts))

    # -- asked from the server's loop ------------------------------------------------------------

    def request(self, call: Any, collect: bool = False) -> asyncio.Future[Any]:
        """Send ``call`` to the master; a future (on the loop) of its answer: the body, or with
        ``collect`` (READ_LOG) the list of LOG_DATA chunks up to the ``last`` one; ``Failed`` for ERROR."""
        future: asyncio.Future[Any] = self.loop.create_future()
        chunks: list[protocol.LogData] = []

        def settle(result: Any, failure: str | None) -> None:
            if future.done():
                return
            if failure is not None:
                future.set_exception(Failed(failure))
            else:
                future.set_result(result)

        def then(body: Any) -> None:  # on the bus thread
            if isinstance(body, protocol.Error):
                self.loop.call_soon_threadsafe(settle, None, body.message)
            elif collect and isinstance(body, protocol.LogData):
                chunks.append(body)
                if body.last:
                    self.loop.call_soon_threadsafe(settle, list(chunks), None)
            else:
                self.loop.call_soon_threadsafe(settle, body, None)

        self.bus.call_threadsafe(lambda: self._ask(call, then))
        return future

    def read_log(self, task_id: str, framework_id: str, file: protocol.LogFile, offset: int,
                 tail_lines: int | None) -> asyncio.Future[Any]:
        return self.request(protocol.ReadLog(task_id, self.token, framework_id, file, offset, tail_lines,
                                             LOG_WINDOW), collect=True)
