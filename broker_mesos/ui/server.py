"""The dashboard's web server: static pages, JSON pages of the cluster, and server-sent events.

Why aiohttp: one well-kept library (aio-libs, on asyncio, releases every few weeks) that is both the
HTTP server and the streaming response SSE needs, with no ASGI server, template engine or build step
beside it; the broker side stays on pika in a thread of its own (``feed.py``).

The browser reads pages of the server's ``ClusterView`` (``/api/agents?offset=&limit=&state=``, at most
``view.MAX_PAGE`` rows), never the whole state, and follows ``/api/stream``: every status update, event
and summary, as JSON, as it happens. Each browser has a queue of ``STREAM_QUEUE`` messages; one that
falls that far behind is sent ``resync`` (reload your page) and its backlog dropped. A task's page asks
the master for the task with its history (QUERY) and its agent for a window of its log (READ_LOG),
``feed.LOG_WINDOW`` bytes at most per request.

It holds the operator's (or monitor's) view of the whole cluster and asks nothing of who is looking:
it listens on 127.0.0.1 unless told otherwise, and, on a loopback address, answers only requests whose
``Host`` is a loopback name (no DNS rebinding). Every response forbids framing and any script but its own.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from broker_mesos.core import codec, protocol
from broker_mesos.ui.feed import Failed, Feed
from broker_mesos.ui.view import ClusterView, status_row, task_row

log = logging.getLogger("broker_mesos.ui")

STATIC = Path(__file__).parent / "static"
STREAM_QUEUE = 1000
MAX_LOOKUPS = 32  # task resource look-ups in flight
KEEPALIVE_SECONDS = 15.0
SHUTDOWN_SECONDS = 2.0  # requests still running when the server stops get this long
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
HEADERS = {"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
           "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-store"}


class Hub:
    """The browsers following the stream, each with a bounded queue; applies what the feed hands over."""

    def __init__(self, view: ClusterView) -> None:
        self.view = view
        self.feed: Feed | None = None  # to look up the resources of tasks first seen on `status`
        self.clients: set[asyncio.Queue[str]] = set()
        self.loaded: set[str] = set()
        self.lookups: set[tuple[str, str]] = set()

    def publish(self, kind: str, data: Any) -> None:
        message = f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
        for queue in list(self.clients):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait("event: resync\ndata: {}\n\n")

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        for queue in list(self.clients):
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait("")

    def sink(self, kind: str, value: Any) -> None:
        """What the feed hands over, on the loop: apply it to the view, tell the browsers."""
        if kind == "page":
            self.view.add_page(value)
            if value.what == "summary":
                self.publish("summary", self.view.summary)
        elif kind == "status":
            row = self.view.apply_status(value)
            self.publish("status", {"update": status_row(value), "task": row})
            if not row["resources"] and not value.state.terminal:
                self.look_up(value.framework_id, value.task_id)
        elif kind == "event":
            event, timestamp = value
            self.publish("event", self.view.apply_event(event, timestamp))
        elif kind == "loaded":
            self.loaded.add(value)
            self.publish("loaded", value)

    def look_up(self, framework_id: str, task_id: str) -> None:
        """Ask the master for a new task's resources (one small query; at most ``MAX_LOOKUPS`` at once,
        beyond that the task shows none until the next one)."""
        key = (framework_id, task_id)
        if self.feed is None or key in self.lookups or len(self.lookups) >= MAX_LOOKUPS:
            return
        self.lookups.add(key)
        future = self.feed.request(protocol.Query("tasks", framework_id=framework_id, id_prefix=task_id, limit=10))

        def done(f: asyncio.Future[Any]) -> None:
            self.lookups.discard(key)
            if f.cancelled() or f.exception() is not None:
                return
            for item in getattr(f.result(), "tasks", []):
                if item.task_id == task_id:
                    self.view.set_resources(framework_id, task_id, item.resources)

        future.add_done_callback(done)


VIEW_KEY = web.AppKey("view", ClusterView)
HUB_KEY = web.AppKey("hub", Hub)
FEED_KEY = web.AppKey("feed", Feed)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def make_app(view: ClusterView, hub: Hub, feed: Feed | None, host: str) -> web.Application:
    """The web application; ``feed`` None serves the view only (no task or log requests)."""
    only_loopback_hosts = _loopback(host)

    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        if only_loopback_hosts:
            name = (request.host or "").rsplit(":", 1)[0] if not (request.host or "").startswith("[") \
                else (request.host or "").split("]")[0] + "]"
            if name.lower() not in LOOPBACK_NAMES:
                raise web.HTTPMisdirectedRequest(text="this dashboard answers only to localhost")
        response = await handler(request)
        response.headers.update(HEADERS)
        return response

    app = web.Application(middlewares=[guard])
    app[VIEW_KEY], app[HUB_KEY] = view, hub
    if feed is not None:
        app[FEED_KEY] = feed
    app.router.add_get("/", index)
    app.router.add_get("/favicon.ico", lambda _request: _no_content())
    app.router.add_get("/api/summary", summary)
    app.router.add_get("/api/{kind:agents|frameworks|tasks}", table)
    app.router.add_get("/api/events", events)
    app.router.add_get("/api/stream", stream)
    app.router.add_get("/api/task/{framework_id}/{task_id}", task)
    app.router.add_get("/api/log/{framework_id}/{task_id}", task_log)
    app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
    return app


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=lambda v: json.dumps(v, separators=(",", ":")))


def _int(request: web.Request, name: str, default: int, high: int) -> int:
    try:
        return max(0, min(high, int(request.query.get(name, default))))
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be a number") from None


def _id(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not codec.ID_PATTERN.fullmatch(value):
        raise web.HTTPBadRequest(text=f"{name} is not an id")
    return value


async def _closed(hub: Hub) -> None:
    hub.close()


async def _no_content() -> web.Response:
    return web.Response(status=204)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def summary(request: web.Request) -> web.Response:
    view = request.app[VIEW_KEY]
    return _json({"summary": view.summary, "roles": view.roles, "agents": len(view.agents),
                  "frameworks": len(view.frameworks), "task_states": view.task_states(),
                  "loaded": sorted(request.app[HUB_KEY].loaded)})


async def table(request: web.Request) -> web.Response:
    view = request.app[VIEW_KEY]
    q = request.query
    return _json(view.page(request.match_info["kind"], _int(request, "offset", 0, 10**9),
                           _int(request, "limit", 50, 1000), q.get("state", "")[:64],
                           q.get("framework_id", "")[:128], q.get("agent_id", "")[:128]))


async def events(request: web.Request) -> web.Response:
    return _json({"items": list(request.app[VIEW_KEY].events)})


async def stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``summary``, ``status``, ``event``, ``loaded``, ``resync``; a comment line
    every ``KEEPALIVE_SECONDS`` keeps proxies from closing it."""
    hub = request.app[HUB_KEY]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **HEADERS})
    await response.prepare(request)
    queue: asyncio.Queue[str] = asyncio.Queue(STREAM_QUEUE)
    hub.clients.add(queue)
    try:
        await response.write(b": connected\n\n")
        while True:
            try:
                message = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                message = ": keepalive\n\n"
            if not message:
                break
            await response.write(message.encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        hub.clients.discard(queue)
    return response


def _feed(request: web.Request) -> Feed:
    feed = request.app.get(FEED_KEY)
    if feed is None:
        raise web.HTTPServiceUnavailable(text="not connected to the cluster")
    return feed


async def task(request: web.Request) -> web.Response:
    """The task as the master knows it now, with its status history (QUERY tasks history=true)."""
    framework_id, task_id = _id(request, "framework_id"), _id(request, "task_id")
    query = protocol.Query("tasks", framework_id=framework_id, id_prefix=task_id, completed=True, history=True,
                           limit=10)
    try:
        result = await _feed(request).request(query)
    except Failed as exc:
        return _json({"error": str(exc)}, 502)
    items = [t for t in getattr(result, "tasks", []) if t.task_id == task_id]
    if not items:
        return _json({"error": f"the master knows no task {task_id} of framework {framework_id}"}, 404)
    item = items[0]
    return _json({"task": task_row(item), "history": [status_row(s) for s in item.history]})


async def task_log(request: web.Request) -> web.Response:
    """One window of the task's stdout (``?file=stderr``): from ``offset``, or its last ``tail`` lines.
    ``text`` is UTF-8 with bad bytes replaced; ``next`` is the offset to ask from; ``done``: nothing more."""
    framework_id, task_id = _id(request, "framework_id"), _id(request, "task_id")
    file = protocol.LogFile.STDERR if request.query.get("file") == "stderr" else protocol.LogFile.STDOUT
    tail = request.query.get("tail")
    tail_lines = _int(request, "tail", 0, protocol.MAX_TAIL_LINES) if tail is not None else None
    offset = _int(request, "offset", 0, 2**62)
    try:
        chunks = await _feed(request).read_log(task_id, framework_id, file, offset, tail_lines)
    except Failed as exc:
        return _json({"error": str(exc)}, 502)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = "".join(decoder.decode(c.data) for c in chunks) + decoder.decode(b"", final=True)
    last = chunks[-1] if chunks else None
    start = chunks[0].offset if chunks else offset
    return _json({"text": text, "offset": start, "next": (last.offset + len(last.data)) if last else offset,
                  "size": last.size if last else 0, "done": bool(last and last.done)})


async def serve(app: web.Application, host: str, port: int, started: Callable[[str], None] | None = None) -> None:
    """Serve ``app`` until cancelled."""
    app.on_shutdown.append(lambda _app: _closed(_app[HUB_KEY]))
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        if started is not None:
            sockets = getattr(site._server, "sockets", None) or []
            bound = sockets[0].getsockname()[1] if sockets else port
            started(f"http://{host if ':' not in host else f'[{host}]'}:{bound}/")
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
    finally:
        await runner.cleanup()
