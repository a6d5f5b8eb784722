"""The agent's local executor socket: a Unix stream socket its executors connect to (docs/protocol.md §17).

Runs on the agent's one bus I/O loop (``Bus.add_reader``): accepts and reads without blocking, cuts the
byte stream into frames (``core.framing``), decodes each as one codec envelope and hands the executor
calls (``protocol.EXECUTOR_CALLS``) to the executor manager. Whatever a client sends — garbage, a frame
over ``MAX_FRAME_BYTES``, an envelope of another type, a call its handler refuses — costs it an
``executor.ERROR`` and its connection, never an exception out of the loop.

Bounds: at most ``MAX_CONNECTIONS`` connections (more are closed at once); ``READ_CHUNK`` bytes per read
and at most ``READS_PER_WAKEUP`` reads per readiness event (one chatty executor cannot starve the loop);
at most ``MAX_OUTGOING`` bytes queued for a client that does not read (then it is dropped: it reconnects
and re-subscribes); a connection must subscribe within ``SUBSCRIBE_DEADLINE`` seconds. Writes go out at
once as far as the socket takes them; the rest is retried on every agent tick (50 ms).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker_mesos.bus.connection import Bus
from broker_mesos.core import codec
from broker_mesos.core.errors import ProtocolError
from broker_mesos.core.framing import FrameReader, frame
from broker_mesos.core.protocol import EXECUTOR_CALLS, ExecutorError, ExecutorSubscribe
from broker_mesos.core.ratelimit import LogLimiter

log = logging.getLogger(__name__)

RUN_DIR = "run"
SOCKET_NAME = "executor.sock"
RUN_DIR_MODE = 0o755
SOCKET_MODE = 0o666
MAX_CONNECTIONS = 1024
READ_CHUNK = 256 * 1024
READS_PER_WAKEUP = 16
MAX_OUTGOING = 16 * 1024 * 1024
SUBSCRIBE_DEADLINE = 5.0
MAX_UNIX_PATH = 107  # sun_path holds 108 bytes, NUL included
_PEERCRED = struct.Struct("3i")


def socket_path(work_dir: Path) -> Path:
    return work_dir / RUN_DIR / SOCKET_NAME


class Connection:
    """One client of the socket. ``owner`` is whatever the manager attaches once it subscribed."""

    def __init__(self, sock: socket.socket, pid: int, uid: int, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer_pid = pid
        self.peer_uid = uid
        self.reader = FrameReader()
        self.outgoing = bytearray()
        self.deadline: float | None = now + SUBSCRIBE_DEADLINE  # None once subscribed
        self.owner: Any = None
        self.closed = False

    def __repr__(self) -> str:
        return f"<executor connection fd={self.fd} pid={self.peer_pid} uid={self.peer_uid}>"


class ChannelServer:
    """Listens on ``path``; ``on_call(conn, body)`` gets every decoded executor call (it may raise
    ``ProtocolError``: the client gets ERROR and is dropped); ``on_close(conn)`` every closed connection."""

    def __init__(self, bus: Bus, path: Path, on_call: Callable[[Connection, Any], None],
                 on_close: Callable[[Connection], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.bus = bus
        self.path = path
        self.on_call = on_call
        self.on_close = on_close
        self.clock = clock
        self._listener: socket.socket | None = None
        self._connections: dict[int, Connection] = {}
        self._limiter = LogLimiter(burst=5, period=60.0)
        self._unwritten: dict[int, Connection] = {}  # written at the end of this loop turn
        self._write_scheduled = False

    def start(self) -> None:
        """(Re)create the socket: ``<work_dir>/run`` 0755, the socket 0666 (executors run as other users;
        the token and the peer's uid prove who connects). ``OSError`` / ``ValueError`` if it cannot be."""
        if len(os.fsencode(self.path)) > MAX_UNIX_PATH:
            raise ValueError(f"{self.path} is longer than the {MAX_UNIX_PATH} bytes a Unix socket path may have")
        self.path.parent.mkdir(mode=RUN_DIR_MODE, parents=True, exist_ok=True)
        os.chmod(self.path.parent, RUN_DIR_MODE)
        self.path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            listener.bind(str(self.path))
            os.chmod(self.path, SOCKET_MODE)
            listener.listen(128)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self.bus.add_reader(listener.fileno(), self._accept)

    def stop(self) -> None:
        """Close every connection and the socket (never raises)."""
        for conn in list(self._connections.values()):
            self.close(conn)
        if self._listener is not None:
            try:
                self.bus.remove_reader(self._listener.fileno())
            except Exception:  # the loop may be gone already
                log.debug("removing the executor socket's reader failed", exc_info=True)
            self._listener.close()
            self._listener = None
            self.path.unlink(missing_ok=True)

    def __len__(self) -> int:
        return len(self._connections)

    # -- accepting and reading ----------------------------------------------------------------------
    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(READS_PER_WAKEUP):
            try:
                sock, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: drop nothing, try on the next wakeup
                self._log("accept", f"executor socket: accept failed: {exc}")
                return
            sock.setblocking(False)
            try:
                pid, uid, _gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                  _PEERCRED.size))
            except OSError:
                pid, uid = 0, -1
            conn = Connection(sock, pid, uid, self.clock())
            if len(self._connections) >= MAX_CONNECTIONS:
                self._log("full", f"executor socket: {MAX_CONNECTIONS} connections already; refused pid {pid}")
                self._refuse(conn, f"the agent has {MAX_CONNECTIONS} executor connections already")
                sock.close()
                continue
            self._connections[conn.fd] = conn
            self.bus.add_reader(conn.fd, functools.partial(self._read, conn))

    def _read(self, conn: Connection) -> None:
        for _ in range(READS_PER_WAKEUP):
            if conn.closed:
                return
            try:
                data = conn.sock.recv(READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("executor socket: %r: %s", conn, exc)
                self.close(conn)
                return
            if not data:
                self.close(conn)
                return
            try:
                frames = conn.reader.feed(data)
            except ProtocolError as exc:
                self.fail(conn, exc.reason)
                return
            for payload in frames:
                if conn.closed:
                    return
                self._dispatch(conn, payload)

    def _dispatch(self, conn: Connection, payload: bytes) -> None:
        try:
            envelope = codec.decode(payload)
            body = envelope.body
            if not isinstance(body, EXECUTOR_CALLS):
                raise ProtocolError(f"{envelope.type} is no executor call (expected one of executor.SUBSCRIBE, "
                                    "executor.UPDATE, executor.MESSAGE)")
            if conn.deadline is not None and not isinstance(body, ExecutorSubscribe):
                raise ProtocolError(f"the first frame must be executor.SUBSCRIBE, not {envelope.type}")
            self.on_call(conn, body)
        except ProtocolError as exc:
            self.fail(conn, exc.reason)
        except Exception as exc:  # a bug in a handler drops this client, never the agent
            log.exception("executor socket: handling a frame of %r failed", conn)
            self.fail(conn, f"the agent could not handle the frame ({exc.__class__.__name__})")

    # -- writing ----------------------------------------------------------------------------------
    def send(self, conn: Connection, body: Any) -> bool:
        """Queue one event for ``conn``, written at the end of this loop turn together with the others
        queued in it (one system call for a RUN_TASKS' many LAUNCH frames, not one each); False when
        ``conn`` is closed (or is closed now: its queue passed ``MAX_OUTGOING``). ``ValueError`` for a
        body over a frame."""
        if conn.closed:
            return False
        conn.outgoing += frame(codec.encode(body, time.time()))
        if len(conn.outgoing) > MAX_OUTGOING:
            self._log("slow", f"executor socket: {conn!r} reads nothing ({len(conn.outgoing)} bytes queued); dropped")
            self.close(conn)
            return False
        self._unwritten[conn.fd] = conn
        if not self._write_scheduled:
            self._write_scheduled = True
            self.bus.call_later(0, self._write_queued)
        return True

    def _write_queued(self) -> None:
        self._write_scheduled = False
        queued, self._unwritten = self._unwritten, {}
        for conn in queued.values():
            self._write(conn)

    def _write(self, conn: Connection) -> None:
        while conn.outgoing and not conn.closed:
            try:
                sent = conn.sock.send(conn.outgoing)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("executor socket: %r: %s", conn, exc)
                self.close(conn)
                return
            del conn.outgoing[:sent]

    def tick(self) -> None:
        """Retry pending writes; drop connections that did not subscribe in time."""
        now = self.clock()
        for conn in list(self._connections.values()):
            if conn.outgoing:
                self._write(conn)
            if conn.deadline is not None and now > conn.deadline and not conn.closed:
                self.fail(conn, f"no executor.SUBSCRIBE within {SUBSCRIBE_DEADLINE:g}s of connecting")

    # -- closing ------------------------------------------------------------------------------------
    def fail(self, conn: Connection, reason: str) -> None:
        """Send ``executor.ERROR`` (best effort) and close."""
        self._log(f"bad:{conn.peer_uid}", f"executor socket: {conn!r}: {reason[:300]}; connection closed")
        self._refuse(conn, reason)
        self.close(conn)

    def _refuse(self, conn: Connection, reason: str) -> None:
        with contextlib.suppress(OSError):
            conn.sock.send(bytes(conn.outgoing) + frame(codec.encode(ExecutorError(reason[:1000]), time.time())))
        conn.outgoing.clear()

    def error(self, conn: Connection, reason: str) -> None:
        """Send ``executor.ERROR`` and keep the connection."""
        self._log(f"err:{conn.peer_uid}", f"executor socket: {conn!r}: {reason[:300]}")
        self.send(conn, ExecutorError(reason[:1000]))

    def close(self, conn: Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        if self._connections.pop(conn.fd, None) is not None:
            try:
                self.bus.remove_reader(conn.fd)
            except Exception:
                log.debug("removing the reader of %r failed", conn, exc_info=True)
        conn.sock.close()
        self.on_close(conn)

    def _log(self, key: str, line: str) -> None:
        allowed, held = self._limiter.allow(key, self.clock())
        if allowed:
            log.warning("%s%s", line, f" ({held} similar line(s) suppressed)" if held else "")
