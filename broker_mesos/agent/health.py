"""Health checks of the agent's command tasks (``TaskInfo.health_check``): run here, decided in
``core.health``, reported by the agent process.

Scheduling happens on the bus' I/O loop (``call_later``): a task's first check is due
``delay_seconds`` after it is RUNNING, then one every ``interval_seconds``; a check still running
when the next is due is not started again (that turn is skipped). The checks themselves never run on
the loop: they run in a thread pool of at most ``MAX_CONCURRENT_CHECKS`` threads (more checks due at
once wait in its queue; a check's timeout counts from when it starts), and each result comes back to
the loop through ``call_threadsafe``, where the task's ``HealthState`` turns it into a verdict.

- COMMAND: ``/bin/sh -c value`` (or ``arguments`` as argv) as the task's OS user, through the same user
  switch the task was started with (``executor.run_as``: ``setpriv`` on an agent running as root, its
  environment passed through a memfd), in the task's sandbox, with the task's environment plus the
  check's own ``environment``, in a session of its own, outside the task's cgroups; exit status 0 is
  a success. At the timeout its whole process group is SIGKILLed, as are any processes it leaves.
- TCP: a connection to 127.0.0.1:<port> is accepted. HTTP: ``GET <path>`` on 127.0.0.1:<port>
  answers a status in 200-399. The port: ``core.health.check_port``.

Only command tasks are checked: a task run by a framework's executor is that executor's business.
Health state is not checkpointed: a restarted agent checks the tasks it re-attaches from scratch
(their first check ``delay_seconds`` after the restart, unknown health until then).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import http.client
import logging
import os
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from broker_mesos.agent.executor import CommandExecutor, filled, run_as, task_environment
from broker_mesos.agent.sandbox import sandbox_dir
from broker_mesos.bus.connection import Bus
from broker_mesos.core.agent_state import TaskEntry, TaskKey
from broker_mesos.core.health import (
    HealthState,
    brief,
    check_port,
    describe,
    kill_message,
    update_message,
)
from broker_mesos.core.protocol import HealthCheck, HealthCheckType, TaskInfo

log = logging.getLogger(__name__)

MAX_CONCURRENT_CHECKS = 8  # threads running checks, agent-wide
MAX_OUTPUT = 4096  # bytes of a command check's output kept (the rest is read and dropped)
HOST = "127.0.0.1"
USER_AGENT = "bmesos-health-check"

CHECK_WRAPPER = 't=$1; shift; (sleep "$t"; kill -9 0) </dev/null >/dev/null 2>&1 & "$@" >&2; echo $?'
"""Runs a command check (``/bin/sh -c``, arguments: the backstop in seconds, then the check's argv)
with its stdout and stderr on the output pipe, then writes its exit status on its own stdout, the
status pipe, which the check itself never holds: the status arrives even when the agent's reaper
(``waitpid(-1)``) reaps this shell first, and end-of-file without a status means the check was
killed. The agent kills the check's process group at its timeout; the backstop, a little later, kills
it even if the agent died meanwhile."""
BACKSTOP_EXTRA = 1.0  # seconds after the timeout when a check's own backstop kills it

class Probe:
    """One check in flight, cancellable from the loop thread (its task ended, the agent stops)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cancelled = False
        self._pgid: int | None = None
        self._sock: socket.socket | None = None

    def attach_group(self, pgid: int) -> bool:
        """Watch a command check's process group; False (and it is killed) if already cancelled."""
        with self._lock:
            self._pgid = pgid
            if not self.cancelled:
                return True
        _kill_group(pgid)
        return False

    def attach_socket(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            if self.cancelled:
                sock.close()

    def cancel(self) -> None:
        """Kill the check's processes or close its socket: its thread returns soon after."""
        with self._lock:
            self.cancelled = True
            pgid, sock = self._pgid, self._sock
        if pgid is not None:
            _kill_group(pgid)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@dataclass(slots=True)
class _Checked:
    """A task under health checks."""

    entry: TaskEntry
    state: HealthState
    timer: object | None = None
    probe: Probe | None = None  # the check in flight
    kill_message: str = ""  # set once the checks had it killed


@dataclass(frozen=True, slots=True)
class Ended:
    """What the checks of a task that ended leave for its terminal update."""

    healthy: bool | None
    kill_message: str  # "": the checks did not kill it


class HealthChecks:
    """The health checks of one agent's command tasks (nameko-style: ``close`` never raises).

    ``publish(entry, healthy, message)`` reports a change of health; ``kill(entry)`` kills the task
    through the agent's ordinary kill path. Both are called on the loop thread."""

    def __init__(self, bus: Bus, executor: CommandExecutor, work_dir: Path, agent_id: str,
                 publish: Callable[[TaskEntry, bool, str], None], kill: Callable[[TaskEntry], None],
                 clock: Callable[[], float] = time.monotonic, max_workers: int = MAX_CONCURRENT_CHECKS) -> None:
        self.bus = bus
        self.executor = executor
        self.work_dir = work_dir
        self.agent_id = agent_id
        self._publish = publish
        self._kill = kill
        self._clock = clock
        self._max_workers = max_workers
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None  # made at the first check
        self._tasks: dict[TaskKey, _Checked] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, entry: TaskEntry) -> None:
        """Begin checking a command task that is RUNNING (nothing for a task without a health check)."""
        check = entry.task.health_check
        if check is None or entry.task.executor is not None or self._closed or entry.key in self._tasks:
            return
        checked = _Checked(entry, HealthState(check, self._clock()))
        self._tasks[entry.key] = checked
        checked.timer = self.bus.call_later(check.delay_seconds, partial(self._due, entry.key, checked))
        log.debug("agent %s: task=%s framework=%s: health checks (%s) begin in %gs", self.agent_id,
                  entry.task_id, entry.framework_id, describe(check), check.delay_seconds)

    def healthy(self, key: TaskKey) -> bool | None:
        """The task's health as last published (None: unknown, or no checks)."""
        checked = self._tasks.get(key)
        return checked.state.healthy if checked is not None else None

    def stop(self, key: TaskKey) -> Ended | None:
        """The task ended: stop its checks (one in flight is cancelled); None if it had none."""
        checked = self._tasks.pop(key, None)
        if checked is None:
            return None
        self._quiesce(checked)
        return Ended(checked.state.healthy, checked.kill_message)

    def close(self) -> None:
        """Stop every check and start no more (the agent stops; what ``stop`` returns is kept); never
        raises."""
        self._closed = True
        for checked in list(self._tasks.values()):
            try:
                self._quiesce(checked)
            except Exception:
                log.exception("agent %s: could not stop the health checks of task=%s", self.agent_id,
                              checked.entry.task_id)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _quiesce(self, checked: _Checked) -> None:
        if checked.timer is not None:
            self.bus.cancel(checked.timer)
            checked.timer = None
        if checked.probe is not None:
            checked.probe.cancel()
            checked.probe = None

    # -- the loop side --------------------------------------------------------------------------
    def _due(self, key: TaskKey, checked: _Checked) -> None:
        if self._tasks.get(key) is not checked:
            return
        check = checked.state.check
        checked.timer = self.bus.call_later(check.interval_seconds, partial(self._due, key, checked))
        if checked.probe is not None:
            log.debug("agent %s: task=%s: health check still running; this turn skipped", self.agent_id, key[1])
            return
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self._max_workers, thread_name_prefix="health")
        probe = checked.probe = Probe()
        future = self._pool.submit(self.run_check, key[0], checked.entry.task, check, probe)
        future.add_done_callback(partial(self._hand_back, key, checked, probe))

    def _hand_back(self, key: TaskKey, checked: _Checked, probe: Probe,
                   future: concurrent.futures.Future[tuple[bool, str]]) -> None:
        """In the check's thread: give its result to the loop."""
        try:
            self.bus.call_threadsafe(partial(self._result, key, checked, probe, future))
        except Exception:  # the loop is gone (the agent stopped): nobody wants the result
            log.debug("agent %s: health check result of task=%s dropped", self.agent_id, key[1])

    def _result(self, key: TaskKey, checked: _Checked, probe: Probe,
                future: concurrent.futures.Future[tuple[bool, str]]) -> None:
        if checked.probe is probe:
            checked.probe = None
        if self._tasks.get(key) is not checked or probe.cancelled or future.cancelled():
            return
        error = future.exception()
        ok, detail = (False, f"the check could not run: {error!r}") if error is not None else future.result()
        verdict = checked.state.observe(ok, self._clock())
        entry = checked.entry
        if not verdict.counted:
            log.debug("agent %s: task=%s: health check failed in its grace period: %s", self.agent_id,
                      entry.task_id, detail)
            return
        if verdict.publish:
            level = logging.INFO if ok else logging.WARNING
            log.log(level, "agent %s: task=%s framework=%s is %s: %s", self.agent_id, entry.task_id,
                    entry.framework_id, "healthy" if ok else "unhealthy", detail)
            if not entry.kill_requested:
                self._publish(entry, ok, update_message(ok, detail))
        if verdict.kill:
            checked.kill_message = kill_message(verdict.consecutive_failures, detail)
            log.warning("agent %s: task=%s framework=%s %s", self.agent_id, entry.task_id, entry.framework_id,
                        checked.kill_message)
            self._quiesce(checked)
            self._kill(entry)

    # -- the checks (in the pool's threads) ---------------------------------------------------
    def run_check(self, framework_id: str, task: TaskInfo, check: HealthCheck, probe: Probe) -> tuple[bool, str]:
        """(success, what happened) of one check of ``task``; never raises."""
        deadline = time.monotonic() + check.timeout_seconds
        try:
            if check.type is HealthCheckType.COMMAND:
                return self._run_command(framework_id, task, check, probe, deadline)
            port = check_port(check, task.resources)
            if check.type is HealthCheckType.TCP:
                return _tcp(port, probe, deadline, check.timeout_seconds)
            return _http(port, check.path, probe, deadline, check.timeout_seconds)
        except LookupError as exc:
            return False, str(exc)
        except Exception as exc:
            return False, f"the check could not run: {exc}"

    def _run_command(self, framework_id: str, task: TaskInfo, check: HealthCheck, probe: Probe,
                     deadline: float) -> tuple[bool, str]:
        command = check.command
        assert command is not None  # HealthCheck refuses a COMMAND check without one
        users = self.executor.users
        user = users.resolve(task.user or users.default)
        sandbox = sandbox_dir(self.work_dir, framework_id, task.task_id)
        merged = dataclasses.replace(task, command=dataclasses.replace(
            task.command, environment={**task.command.environment, **command.environment}))
        env = task_environment(merged, framework_id, self.agent_id, sandbox, user.name)
        argv = ["/bin/sh", "-c", command.value] if command.shell else list(command.arguments)
        run, spawn_env, script = run_as(user, env, argv)
        backstop = f"{check.timeout_seconds + BACKSTOP_EXTRA:g}"
        return _run_wrapped(["/bin/sh", "-c", CHECK_WRAPPER, "bmesos-health-check", backstop, *run], spawn_env,
                            script, sandbox, probe, deadline, check.timeout_seconds)


def _memfd(data: bytes) -> int:
    """A descriptor on an anonymous file holding ``data``, at its start: nothing on any disk."""
    return filled(os.memfd_create("bmesos-health-env", os.MFD_CLOEXEC), data)


def _run_wrapped(argv: list[str], env: dict[str, str], script: bytes | None, cwd: Path, probe: Probe,
                 deadline: float, timeout: float) -> tuple[bool, str]:
    """Run ``argv`` (``CHECK_WRAPPER``) until it reports a status or the deadline passes."""
    stdin = _memfd(script) if script is not None else subprocess.DEVNULL
    status_r, status_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        popen = subprocess.Popen(argv, cwd=cwd, env=env, stdin=stdin, stdout=status_w, stderr=out_w,
                                 close_fds=True, start_new_session=True)
    except BaseException:
        os.close(status_r)
        os.close(out_r)
        raise
    finally:
        for fd in (status_w, out_w) + ((stdin,) if script is not None else ()):
            os.close(fd)
    # the agent's reaper may reap the wrapper: this Popen must never wait for its pid (which may be reused)
    popen.returncode = 0
    status = bytearray()
    output = bytearray()
    try:
        if not probe.attach_group(popen.pid):
            return False, "cancelled"
        with selectors.DefaultSelector() as selector:
            selector.register(status_r, selectors.EVENT_READ)
            selector.register(out_r, selectors.EVENT_READ)
            status_open = True
            while status_open:
                left = deadline - time.monotonic()
                if left <= 0:
                    _kill_group(popen.pid)
                    return False, f"command timed out after {timeout:g}s{_tail(output)}"
                for key, _events in selector.select(left):
                    data = os.read(key.fd, 65536)
                    if key.fd == status_r:
                        status += data
                        status_open = bool(data)
                    elif data:
                        output += data[:max(0, MAX_OUTPUT - len(output))]
                    else:
                        selector.unregister(out_r)
        os.set_blocking(out_r, False)
        with contextlib.suppress(BlockingIOError):  # what it wrote just before it exited, if the status came first
            output += os.read(out_r, MAX_OUTPUT)[:max(0, MAX_OUTPUT - len(output))]
    finally:
        _kill_group(popen.pid)  # whatever the check left behind
        os.close(status_r)
        os.close(out_r)
    text = status.decode("ascii", "replace").strip()
    if not text.isdigit():
        return False, f"command was killed{_tail(output)}"
    code = int(text)
    return code == 0, f"command exited with {code}{_tail(output)}"


def _tail(output: bytes) -> str:
    text = brief(output.decode("utf-8", "replace"), 200)
    return f": {text}" if text else ""


def _connect(port: int, probe: Probe, deadline: float) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.attach_socket(sock)
    try:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.connect((HOST, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _tcp(port: int, probe: Probe, deadline: float, timeout: float) -> tuple[bool, str]:
    try:
        _connect(port, probe, deadline).close()
    except TimeoutError:
        return False, f"TCP connection to {HOST}:{port} timed out after {timeout:g}s"
    except OSError as exc:
        return False, f"TCP connection to {HOST}:{port} failed: {exc.strerror or exc}"
    return True, f"TCP connection to {HOST}:{port} accepted"


def _http(port: int, path: str, probe: Probe, deadline: float, timeout: float) -> tuple[bool, str]:
    """GET ``path``; each step (connect, send, read the status line and headers) waits at most for the
    time left before the deadline."""
    where = f"{HOST}:{port}{path}"
    try:
        sock = _connect(port, probe, deadline)
        conn = http.client.HTTPConnection(HOST, port)
        conn.sock = sock
        try:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            conn.request("GET", path, headers={"User-Agent": USER_AGENT, "Connection": "close"})
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            status = conn.getresponse().status
        finally:
            conn.close()
    except TimeoutError:
        return False, f"HTTP GET {where} timed out after {timeout:g}s"
    except OSError as exc:
        return False, f"HTTP GET {where} failed: {exc.strerror or exc}"
    except http.client.HTTPException as exc:
        return False, f"HTTP GET {where} failed: {type(exc).__name__} {exc}"
    return 200 <= status < 400, f"HTTP {status} from {where}"
