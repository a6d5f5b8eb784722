"""The executor SDK: subclass ``Executor``, hand it to an ``ExecutorDriver``, ``run()`` it (Mesos' executor API).

An executor is a process the agent starts for a framework (a task's ``ExecutorInfo``); it talks only
to its agent, over the agent's local Unix socket (``$BMESOS_AGENT_ENDPOINT``), in length-prefixed
frames of one codec envelope each (``core.framing``, docs/protocol.md section 17).

What the driver promises:

* ``run()`` connects, sends ``executor.SUBSCRIBE`` (token, framework and executor ids from the
  environment the agent gave the process) and dispatches the agent's events to the callbacks, one at a
  time, on the thread that called ``run()``. It returns the process' exit status: 0 after ``stop()``
  (the default ``shutdown`` stops), 1 when the agent refused it, sent a frame over
  ``framing.MAX_FRAME_BYTES`` (the stream cannot be trusted; ``error`` is called first), or could not be
  subscribed with (again) within ``$BMESOS_RECOVERY_TIMEOUT`` seconds (default 60; ``error`` first).
* Status updates are at-least-once: each is kept until the agent's ``executor.ACKNOWLEDGED`` (the agent
  acknowledges once it has journaled it) and re-sent in the SUBSCRIBE after a reconnect, with the ids
  of the tasks the executor runs (launched, terminal update not yet acknowledged). They are kept in
  memory with no bound but memory: an executor whose agent is away keeps everything it reports. A
  SUBSCRIBE that would pass the frame limit carries the oldest updates that fit; the rest follow as
  ``executor.UPDATE`` once subscribed. An update the agent refuses (its ``executor.ERROR`` names the
  update's uuid: a task that already ended or is not this executor's) is dropped, never re-sent.
  Framework messages are best effort (dropped while disconnected).
* ``send_status_update``, ``send_framework_message`` and ``stop`` are thread-safe: callbacks may hand
  work to other threads. Frames are appended to one buffer under a lock and written by the driver's
  thread, so a burst of updates leaves in few writes; another thread wakes the driver (one byte on a
  socketpair) only when no wake-up is pending already.
* Bad input from the agent never crashes the executor: an undecodable frame is logged and dropped;
  an exception raised by a callback is logged with its traceback and the driver goes on.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import selectors
import socket
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from broker_mesos.core import codec
from broker_mesos.core.errors import ConfigError, ProtocolError
from broker_mesos.core.framing import MAX_FRAME_BYTES, FrameReader, frame
from broker_mesos.core.protocol import (
    ENV_AGENT_ENDPOINT,
    ENV_AGENT_ID,
    ENV_EXECUTOR_ID,
    ENV_EXECUTOR_TOKEN,
    ENV_FRAMEWORK_ID,
    ENV_RECOVERY_TIMEOUT,
    ExecutorAcknowledged,
    ExecutorData,
    ExecutorError,
    ExecutorKill,
    ExecutorLaunch,
    ExecutorShutdown,
    ExecutorSubscribe,
    ExecutorSubscribed,
    ExecutorUpdate,
    TaskInfo,
    TaskState,
    TaskStatus,
)

log = logging.getLogger(__name__)

DEFAULT_RECOVERY_TIMEOUT = 60.0
MAX_RECOVERY_TIMEOUT = 86_400.0
CONNECT_TIMEOUT = 2.0  # seconds for one connect() to the agent's socket
SUBSCRIBE_TIMEOUT = 10.0  # seconds for SUBSCRIBED to follow SUBSCRIBE before the driver reconnects ...
SUBSCRIBE_MIN_WAIT = 1.0  # ... at least this long, even when the recovery timeout ends sooner
BACKOFF_FIRST = 0.05  # seconds between reconnect attempts: doubling from here ...
BACKOFF_MAX = 1.0  # ... up to this
STOP_ACK_TIMEOUT = 1.0  # seconds stop() waits for the agent to acknowledge the last updates
READ_BYTES = 256 * 1024
FLUSH_INTERVAL = 0.001  # while dispatching a burst of events, write what callbacks sent at least this often

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2

SOURCE_EXECUTOR = "SOURCE_EXECUTOR"


class Executor:
    """Mesos' ``Executor`` callbacks; override what you need. All run on the driver's thread, one at a
    time: a callback that blocks holds up every event behind it (hand long work to another thread,
    which may call the driver). An exception a callback raises is logged and the driver goes on."""

    def registered(self, driver: ExecutorDriver, agent_id: str, framework_id: str, executor_id: str) -> None:
        """The agent accepted the first SUBSCRIBE; LAUNCHes follow."""

    def reregistered(self, driver: ExecutorDriver, agent_id: str) -> None:
        """The agent (maybe a restarted agent process) accepted the SUBSCRIBE after a reconnect."""

    def disconnected(self, driver: ExecutorDriver) -> None:
        """The connection to the agent dropped; the driver reconnects for the recovery timeout."""

    def launch_task(self, driver: ExecutorDriver, task: TaskInfo) -> None:
        """Run ``task``: send TASK_RUNNING, then a terminal update, via ``driver.send_status_update``."""

    def kill_task(self, driver: ExecutorDriver, task_id: str) -> None:
        """Stop the task and send TASK_KILLED (the agent reports it itself after its kill grace)."""

    def framework_message(self, driver: ExecutorDriver, data: bytes) -> None:
        """A message from the framework's scheduler (best effort, at most once)."""

    def shutdown(self, driver: ExecutorDriver) -> None:
        """The agent asks the executor to end (idle, framework torn down): kill the tasks, then stop.
        The default stops the driver; the agent SIGKILLs what is left after its shutdown grace."""
        driver.stop()

    def error(self, driver: ExecutorDriver, message: str) -> None:
        """The agent reported an error, or sent something that cannot be trusted."""


@dataclass(frozen=True)
class ExecutorSettings:
    """Who the executor is and where its agent listens: the variables the agent set for it."""

    endpoint: str
    token: str = field(repr=False)  # a secret: kept out of logs and tracebacks
    framework_id: str
    executor_id: str
    agent_id: str
    recovery_timeout: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ExecutorSettings:
        """The settings, or ``ConfigError`` naming what is missing (the process was not started by an agent)."""
        missing = [name for name in (ENV_AGENT_ENDPOINT, ENV_EXECUTOR_TOKEN, ENV_FRAMEWORK_ID, ENV_EXECUTOR_ID)
                   if not env.get(name)]
        if missing:
            raise ConfigError(f"not started by a broker-mesos agent: {', '.join(missing)} not set")
        for name in (ENV_FRAMEWORK_ID, ENV_EXECUTOR_ID):
            if not codec.ID_PATTERN.fullmatch(env[name]):
                raise ConfigError(f"{name} is not an identifier ([A-Za-z0-9_-]{{1,128}})")
        agent_id = env.get(ENV_AGENT_ID, "")
        raw_timeout = env.get(ENV_RECOVERY_TIMEOUT) or str(DEFAULT_RECOVERY_TIMEOUT)
        try:
            recovery_timeout = float(raw_timeout)
        except ValueError:
            raise ConfigError(f"{ENV_RECOVERY_TIMEOUT}={raw_timeout[:32]!r} is not a number of seconds") from None
        if not 0 <= recovery_timeout <= MAX_RECOVERY_TIMEOUT:
            raise ConfigError(f"{ENV_RECOVERY_TIMEOUT} must be within [0, {MAX_RECOVERY_TIMEOUT:g}] seconds")
        return cls(endpoint=env[ENV_AGENT_ENDPOINT], token=env[ENV_EXECUTOR_TOKEN],
                   framework_id=env[ENV_FRAMEWORK_ID], executor_id=env[ENV_EXECUTOR_ID],
                   agent_id=agent_id if codec.ID_PATTERN.fullmatch(agent_id) else "",
                   recovery_timeout=recovery_timeout)


class _Fatal(Exception):
    """The session cannot go on and the driver must not reconnect (refused, or an untrustworthy stream)."""


class ExecutorDriver:
    """Connects an ``Executor`` to its agent: ``run()`` blocks until ``stop()`` or a failure."""

    def __init__(self, executor: Executor, env: Mapping[str, str] = os.environ) -> None:
        self.executor = executor
        self.settings = ExecutorSettings.from_env(env)
        self.framework_id = self.settings.framework_id
        self.executor_id = self.settings.executor_id
        self.agent_id = self.settings.agent_id
        self.hostname = ""
        self._lock = threading.Lock()
        self._out = bytearray()  # frames to write, in order (guarded by _lock)
        self._pending: collections.OrderedDict[str, TaskStatus] = collections.OrderedDict()  # uuid -> update
        self._live: set[str] = set()  # tasks launched whose terminal update is not acknowledged yet
        self._in_subscribe: set[str] = set()  # uuids of the updates the current connection's SUBSCRIBE carried
        self._subscribed = False  # on the current connection (guarded by _lock)
        self._ever_subscribed = False
        self._stopping = False
        self._wake_due = False  # a wake-up byte is on its way to the loop
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._loop_thread: int | None = None

    # -- calls (thread-safe) ----------------------------------------------------------------
    def send_status_update(self, task_id: str, state: TaskState, message: str = "", data: bytes = b"") -> TaskStatus:
        """Report ``state`` for ``task_id``; kept and re-sent until the agent acknowledges it.

        ``ValueError`` for what the agent would refuse: a bad task id, ``data`` over ``MAX_DATA_BYTES``,
        ``message`` over ``MAX_STRING`` characters."""
        if not isinstance(task_id, str) or not codec.ID_PATTERN.fullmatch(task_id):
            raise ValueError(f"task id {str(task_id)[:64]!r} is not an identifier")
        state = TaskState(state)
        data = bytes(data)
        if len(data) > codec.MAX_DATA_BYTES:
            raise ValueError(f"status data of {len(data)} bytes is over the {codec.MAX_DATA_BYTES} byte limit")
        if len(message) > codec.MAX_STRING:
            raise ValueError(f"status message of {len(message)} characters is over {codec.MAX_STRING}")
        status = TaskStatus(task_id=task_id, framework_id=self.framework_id, agent_id=self.agent_id,
                            state=state, uuid=uuid.uuid4().hex, timestamp=time.time(), message=message,
                            source=SOURCE_EXECUTOR, data=data, executor_id=self.executor_id)
        encoded = frame(codec.encode(ExecutorUpdate(status), status.timestamp, msg_id=status.uuid))
        with self._lock:
            self._pending[status.uuid] = status
            self._live.add(task_id)
            if self._subscribed:
                self._enqueue(encoded)
        return status

    def send_framework_message(self, data: bytes) -> bool:
        """Send ``data`` to the framework's scheduler (best effort); False if dropped (not connected).
        ``ValueError`` if ``data`` is over ``MAX_DATA_BYTES``."""
        data = bytes(data)
        if len(data) > codec.MAX_DATA_BYTES:
            raise ValueError(f"a framework message holds at most {codec.MAX_DATA_BYTES} bytes, not {len(data)}")
        encoded = frame(codec.encode(ExecutorData(data), time.time()))
        with self._lock:
            if not self._subscribed:
                log.warning("executor=%s not connected to its agent: framework message of %d bytes dropped",
                            self.executor_id, len(data))
                return False
            self._enqueue(encoded)
        return True

    def stop(self) -> None:
        """End ``run()`` (status 0) once the last updates were written and, within ``STOP_ACK_TIMEOUT``,
        acknowledged. Tasks still running are the agent's to clean up."""
        with self._lock:
            self._stopping = True
            self._wake()

    @property
    def unacknowledged(self) -> list[TaskStatus]:
        """The updates sent and not yet acknowledged, oldest first."""
        with self._lock:
            return list(self._pending.values())

    @property
    def live_tasks(self) -> set[str]:
        with self._lock:
            return set(self._live)

    def _enqueue(self, encoded: bytes) -> None:
        """Append a frame (under ``_lock``); wake the loop unless it is the caller or already woken."""
        self._out += encoded
        if threading.get_ident() != self._loop_thread:
            self._wake()

    def _wake(self) -> None:
        """Under ``_lock``."""
        if self._wake_due or self._wake_w is None:
            return
        self._wake_due = True
        with contextlib.suppress(BlockingIOError, OSError):  # full: a wake-up is pending anyway; closed: done
            self._wake_w.send(b"\0")

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> int:
        """Connect, subscribe and dispatch events until stopped; returns the exit status (see module doc)."""
        self._loop_thread = threading.get_ident()
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        with self._lock:
            self._wake_r, self._wake_w = wake_r, wake_w
        log.info("executor=%s framework=%s starting (agent socket %s)", self.executor_id, self.framework_id,
                 self.settings.endpoint)
        try:
            return self._serve()
        finally:
            with self._lock:
                self._wake_r = self._wake_w = None
                self._subscribed = False
            wake_r.close()
            wake_w.close()

    def _serve(self) -> int:
        deadline = time.monotonic() + self.settings.recovery_timeout
        backoff = BACKOFF_FIRST
        while not self._stopping:
            sock = self._connect()
            if sock is not None:
                try:
                    subscribed = self._session(sock, deadline)
                except _Fatal as exc:
                    log.error("executor=%s %s: exiting", self.executor_id, exc)
                    return EXIT_FAILED
                finally:
                    sock.close()
                if self._stopping:
                    break
                if subscribed:
                    log.warning("executor=%s lost its agent connection; reconnecting for up to %gs",
                                self.executor_id, self.settings.recovery_timeout)
                    self._callback("disconnected")
                    deadline = time.monotonic() + self.settings.recovery_timeout
                    backoff = BACKOFF_FIRST
                    continue
            if time.monotonic() >= deadline:
                message = (f"could not subscribe with the agent at {self.settings.endpoint} within "
                           f"{self.settings.recovery_timeout:g}s")
                log.error("executor=%s %s: exiting", self.executor_id, message)
                self._callback("error", message)
                return EXIT_FAILED
            self._pause(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(backoff * 2, BACKOFF_MAX)
        log.info("executor=%s stopped", self.executor_id)
        return EXIT_OK

    def _connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(self.settings.endpoint)
        except OSError as exc:
            sock.close()
            log.debug("executor=%s cannot connect to %s: %s", self.executor_id, self.settings.endpoint, exc)
            return None
        sock.setblocking(False)
        return sock

    def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if ``stop()`` is called."""
        assert self._wake_r is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._wake_r, selectors.EVENT_READ)
            if sel.select(seconds):
                self._drain_wake()

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        with self._lock:  # only now: a wake-up sent before this point was drained, a later one is not lost
            self._wake_due = False

    def _subscribe_frame(self) -> tuple[bytes, set[str]]:
        """SUBSCRIBE with the tasks it runs and as many unacknowledged updates (oldest first) as fit in a
        frame; returns it and the uuids it carries. Under ``_lock``."""
        updates = list(self._pending.values())
        task_ids = sorted(self._live)[:codec.MAX_LIST_ITEMS]
        while True:
            body = ExecutorSubscribe(self.framework_id, self.executor_id, self.settings.token, updates, task_ids)
            raw = codec.encode(body, time.time())
            if len(raw) <= MAX_FRAME_BYTES:
                return frame(raw), {u.uuid for u in updates}
            if updates:
                updates = updates[:len(updates) // 2]
            else:  # only with tens of thousands of live tasks
                log.error("executor=%s runs too many tasks to list in one SUBSCRIBE; listing %d of %d",
                          self.executor_id, len(task_ids) // 2, len(self._live))
                task_ids = task_ids[:len(task_ids) // 2]

    def _session(self, sock: socket.socket, deadline: float) -> bool:
        """One connection: SUBSCRIBE, then events until it drops or the driver stops. Returns whether
        the agent accepted the SUBSCRIBE (it has until ``SUBSCRIBE_TIMEOUT``, or the recovery
        ``deadline`` if sooner, but at least ``SUBSCRIBE_MIN_WAIT``); raises ``_Fatal`` when the driver
        must not reconnect."""
        with self._lock:
            subscribe, self._in_subscribe = self._subscribe_frame()
            self._out = bytearray(subscribe)  # anything older is in the SUBSCRIBE, or best effort
            self._subscribed = False
        reader = FrameReader()
        now = time.monotonic()
        subscribe_deadline = now + max(SUBSCRIBE_MIN_WAIT, min(SUBSCRIBE_TIMEOUT, deadline - now))
        stop_deadline: float | None = None
        accepted = False
        with selectors.DefaultSelector() as sel:
            assert self._wake_r is not None
            sel.register(self._wake_r, selectors.EVENT_READ)
            sel.register(sock, selectors.EVENT_READ)
            writing = False
            while True:
                if self._stopping:
                    if stop_deadline is None:
                        stop_deadline = time.monotonic() + STOP_ACK_TIMEOUT
                    with self._lock:
                        settled = not self._out and not self._pending
                    if settled or time.monotonic() >= stop_deadline:
                        return accepted
                with self._lock:
                    want_write = bool(self._out)
                if want_write != writing:
                    writing = want_write
                    sel.modify(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if writing else 0))
                if stop_deadline is not None:
                    timeout: float | None = max(0.0, stop_deadline - time.monotonic())
                elif not accepted:
                    timeout = max(0.0, subscribe_deadline - time.monotonic())
                    if timeout == 0.0:
                        log.warning("executor=%s the agent did not answer SUBSCRIBE in time", self.executor_id)
                        return False
                else:
                    timeout = None
                for key, mask in sel.select(timeout):
                    if key.fileobj is self._wake_r:
                        self._drain_wake()
                        continue
                    if mask & selectors.EVENT_READ:
                        if not self._read(sock, reader):
                            return accepted
                        accepted = accepted or self._subscribed
                if not self._flush(sock):
                    return accepted

    def _read(self, sock: socket.socket, reader: FrameReader) -> bool:
        """Read and dispatch what arrived; False when the connection is gone."""
        try:
            data = sock.recv(READ_BYTES)
        except BlockingIOError:
            return True
        except OSError as exc:
            log.warning("executor=%s agent connection failed: %s", self.executor_id, exc)
            return False
        if not data:
            return False
        try:
            frames = reader.feed(data)
        except ProtocolError as exc:
            message = f"the agent sent a frame the executor cannot trust ({exc.reason})"
            self._callback("error", message)
            raise _Fatal(message) from None
        flush_at = time.monotonic() + FLUSH_INTERVAL
        for raw in frames:
            self._dispatch(raw)
            if self._out and time.monotonic() >= flush_at:  # a long burst: what is ready goes out meanwhile
                if not self._flush(sock):
                    return False
                flush_at = time.monotonic() + FLUSH_INTERVAL
        return True

    def _flush(self, sock: socket.socket) -> bool:
        """Write what is buffered (as much as the socket takes); False when the connection is gone. The
        send happens under the lock: non-blocking, it only copies into the socket buffer, and ``del``
        from the front of a bytearray does not move what is left."""
        with self._lock:
            if not self._out:
                return True
            try:
                sent = sock.send(self._out)
            except BlockingIOError:
                return True
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
                    log.warning("executor=%s agent connection failed: %s", self.executor_id, exc)
                return False
            del self._out[:sent]
        return True

    # -- events ---------------------------------------------------------------------------------
    def _dispatch(self, raw: bytes) -> None:
        try:
            body = codec.decode(raw).body
        except ProtocolError as exc:
            log.warning("executor=%s dropped a frame from the agent: %s", self.executor_id, exc.reason)
            return
        if isinstance(body, ExecutorAcknowledged):
            with self._lock:
                status = self._pending.pop(body.uuid, None)
                if status is not None and status.state.terminal:
                    self._live.discard(status.task_id)
        elif isinstance(body, ExecutorLaunch):
            with self._lock:
                self._live.add(body.task.task_id)
            self._callback("launch_task", body.task)
        elif isinstance(body, ExecutorKill):
            self._callback("kill_task", body.task_id)
        elif isinstance(body, ExecutorData):
            self._callback("framework_message", body.data)
        elif isinstance(body, ExecutorSubscribed):
            self._on_subscribed(body)
        elif isinstance(body, ExecutorShutdown):
            log.info("executor=%s asked to shut down (grace %gs)", self.executor_id, body.grace_seconds)
            self._callback("shutdown")
        elif isinstance(body, ExecutorError):
            log.error("executor=%s agent reports: %s", self.executor_id, body.message)
            self._callback("error", body.message)
            with self._lock:
                refused = not self._subscribed
                dropped = [u for u in self._pending if u in body.message]  # an update it refused for good
                for update_id in dropped:
                    status = self._pending.pop(update_id)
                    if status.state.terminal:
                        self._live.discard(status.task_id)
            if refused:
                raise _Fatal(f"the agent refused the executor: {body.message}")
        else:
            log.warning("executor=%s dropped an unexpected %s from the agent", self.executor_id,
                        type(body).__name__)

    def _on_subscribed(self, body: ExecutorSubscribed) -> None:
        with self._lock:
            if self._subscribed:
                log.warning("executor=%s dropped a second SUBSCRIBED", self.executor_id)
                return
            self._subscribed = True
            self.agent_id = body.agent_id
            self.hostname = body.hostname
            for status in self._pending.values():  # those the SUBSCRIBE could not carry, or sent since
                if status.uuid not in self._in_subscribe:
                    self._out += frame(codec.encode(ExecutorUpdate(status), status.timestamp))
            again, self._ever_subscribed = self._ever_subscribed, True
        log.info("executor=%s %s with agent=%s", self.executor_id, "re-subscribed" if again else "subscribed",
                 body.agent_id)
        if again:
            self._callback("reregistered", body.agent_id)
        else:
            self._callback("registered", body.agent_id, body.framework_id, body.executor_id)

    def _callback(self, name: str, *args: Any) -> None:
        try:
            getattr(self.executor, name)(self, *args)
        except Exception:
            log.exception("executor=%s callback %s raised", self.executor_id, name)


def run_executor(executor: Executor) -> NoReturn:
    """Run ``executor`` with the settings its agent gave the process; exit with ``run()``'s status
    (2 with one line on stderr when the process was not started by an agent)."""
    try:
        driver = ExecutorDriver(executor)
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(EXIT_CONFIG)
    sys.exit(driver.run())
