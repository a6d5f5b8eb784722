"""The agent process: registers with the master, runs what ``tasks.<agent_id>`` asks, reports status.

Everything runs on the bus' one I/O loop thread. Status updates are buffered and published once per
loop turn, grouped into one STATUS message per routing key (``core.agent_state.group_updates``); a
task message is acked only after the updates it caused have been published (and, by the bus, confirmed).
Signals only set a flag: the shutdown itself runs on the loop (the 50 ms reaper tick notices it).
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from broker_mesos.agent.executor import Executor, make_executor
from broker_mesos.bus import topology
from broker_mesos.bus.connection import Bus, Delivery
from broker_mesos.core import codec
from broker_mesos.core.agent_state import TaskEntry, TaskTable, exit_outcome, group_updates, make_status
from broker_mesos.core.errors import ProtocolError
from broker_mesos.core.protocol import Heartbeat, KillTasks, Register, RunTasks, Status, TaskInfo, TaskState, TaskStatus
from broker_mesos.core.resources import Resources

log = logging.getLogger(__name__)

REAP_INTERVAL = 0.05
SHUTDOWN_EXTRA = 1.0  # seconds after the kill grace to wait for SIGKILLed tasks to be reaped


@dataclass(frozen=True)
class AgentConfig:
    agent_id: str
    resources: Resources
    work_dir: Path
    attributes: dict[str, str] = field(default_factory=dict)
    hostname: str = field(default_factory=socket.gethostname)
    executor: str = "command"
    heartbeat_interval: float = 5.0
    kill_grace: float = 3.0


class Agent:
    """Wires a ``Bus`` to an executor and the pure task table (nameko-style start / stop / kill)."""

    def __init__(self, bus: Bus, config: AgentConfig) -> None:
        self.bus = bus
        self.config = config
        self.agent_id = config.agent_id
        self.executor: Executor = make_executor(config.executor, config.work_dir, config.agent_id)
        self.tasks = TaskTable()
        self._updates: list[TaskStatus] = []
        self._pending: list[tuple[Delivery, str | None]] = []  # (delivery, dead-letter reason or None)
        self._flush_scheduled = False
        self._registered = False
        self._stop_requested = False
        self._shutdown_deadline: float | None = None
        self._finished = False

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Hook into the bus: consume the tasks queue, register on every connect, start timers."""
        self.bus.consume(topology.agent_tasks_queue(self.agent_id), self._on_delivery)
        self.bus.on_ready(self._register)
        self.bus.call_every(self.config.heartbeat_interval, self._heartbeat)
        self.bus.call_every(REAP_INTERVAL, self._tick)

    def run(self) -> None:
        """Start, install SIGTERM/SIGINT handlers and run the loop until a graceful stop."""
        self.start()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            self.bus.run()
        finally:
            self.kill()

    def request_stop(self) -> None:
        """Ask for a graceful stop (safe from a signal handler: only sets a flag the loop polls)."""
        self._stop_requested = True

    def stop(self) -> None:
        """Kill running tasks (they report TASK_KILLED), flush their updates, then stop the bus."""
        if self._shutdown_deadline is not None:
            return
        log.info("agent %s stopping; killing %d running task(s)", self.agent_id, len(self.tasks))
        self._shutdown_deadline = time.monotonic() + self.config.kill_grace + SHUTDOWN_EXTRA
        for entry in self.tasks.active():
            self._kill_task(entry)
        self._maybe_finish_shutdown()

    def kill(self) -> None:
        """Last resort when the loop is gone: SIGKILL every task still running. Never raises."""
        for entry in self.tasks.active():
            try:
                self.executor.force_kill(entry.task_id)
            except Exception:  # kill must not raise
                log.exception("agent %s: could not kill task=%s", self.agent_id, entry.task_id)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.request_stop()

    # -- registration and heartbeats -----------------------------------------------------------
    def _info(self, cls: type[Register] | type[Heartbeat]) -> Register | Heartbeat:
        c = self.config
        return cls(agent_id=self.agent_id, hostname=c.hostname, resources=c.resources, attributes=c.attributes,
                   tasks=self.tasks.agent_tasks(), heartbeat_interval=c.heartbeat_interval)

    def _register(self) -> None:
        body = codec.encode(self._info(Register), time.time())
        self.bus.publish(topology.AGENT_REGISTER, topology.KEY_REGISTER, body, on_confirm=self._registered_once)
        log.debug("agent %s: REGISTER published", self.agent_id)

    def _registered_once(self) -> None:
        if not self._registered:
            self._registered = True
            log.info("agent %s registered with %s", self.agent_id, self.config.resources)

    def _heartbeat(self) -> None:
        if not self.bus.ready or self._finished:
            return  # a heartbeat queued while disconnected would only be stale; REGISTER follows a reconnect
        body = codec.encode(self._info(Heartbeat), time.time())
        self.bus.publish(topology.AGENT_REGISTER, topology.KEY_HEARTBEAT, body, persistent=False)

    # -- the tasks queue ------------------------------------------------------------------------
    def _on_delivery(self, delivery: Delivery) -> None:
        if self._shutdown_deadline is not None:
            return  # left unacked: the broker gives it back when this agent's connection closes
        try:
            envelope = codec.decode(delivery.body)
        except ProtocolError as exc:
            self._reject(delivery, exc.reason)
            return
        body = envelope.body
        if isinstance(body, RunTasks):
            self._run_tasks(body)
        elif isinstance(body, KillTasks):
            self._kill_tasks(body)
        else:
            self._reject(delivery, f"unexpected message type {envelope.type} on {delivery.queue}")
            return
        self._pending.append((delivery, None))
        self._schedule_flush()

    def _reject(self, delivery: Delivery, reason: str) -> None:
        log.warning("agent %s: dead-lettering a message from %s: %s", self.agent_id, delivery.queue, reason)
        self._pending.append((delivery, reason))
        self._schedule_flush()

    def _run_tasks(self, msg: RunTasks) -> None:
        for task in msg.tasks:
            entry = self.tasks.launch(msg.framework_id, task)
            if entry is None:
                log.info("agent %s: task=%s framework=%s already known; ignored", self.agent_id, task.task_id,
                         msg.framework_id)
                continue
            self._launch(entry, task)

    def _launch(self, entry: TaskEntry, task: TaskInfo) -> None:
        self._update(entry, TaskState.STARTING)
        try:
            exit_code = self.executor.launch(entry.framework_id, task)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            log.warning("agent %s: task=%s framework=%s failed to start: %s", self.agent_id, entry.task_id,
                        entry.framework_id, exc)
            self._update(entry, TaskState.FAILED, message=f"failed to start: {exc}")
            return
        except Exception as exc:  # a bug must fail this task, not the agent and every other task
            log.exception("agent %s: task=%s framework=%s could not be launched", self.agent_id, entry.task_id,
                          entry.framework_id)
            self._update(entry, TaskState.FAILED, message=f"failed to start: {exc}")
            return
        self._update(entry, TaskState.RUNNING)
        if exit_code is not None:
            self._exited(entry, exit_code)

    def _kill_tasks(self, msg: KillTasks) -> None:
        for task_id in msg.task_ids:
            entry = self.tasks.get(task_id)
            if entry is None or entry.framework_id != msg.framework_id:
                log.info("agent %s: kill of unknown or finished task=%s framework=%s ignored", self.agent_id,
                         task_id, msg.framework_id)
                continue
            self._kill_task(entry)

    def _kill_task(self, entry: TaskEntry) -> None:
        if entry.kill_requested:
            return
        self.tasks.request_kill(entry.task_id)
        log.info("agent %s: killing task=%s framework=%s", self.agent_id, entry.task_id, entry.framework_id)
        self.executor.terminate(entry.task_id)
        self.bus.call_later(self.config.kill_grace, lambda: self._force_kill(entry.task_id))

    def _force_kill(self, task_id: str) -> None:
        if self.tasks.get(task_id) is not None:
            log.warning("agent %s: task=%s outlived its kill grace; SIGKILL", self.agent_id, task_id)
            self.executor.force_kill(task_id)

    # -- exits ----------------------------------------------------------------------------------
    def _tick(self) -> None:
        if self._stop_requested and self._shutdown_deadline is None:
            self.stop()
        for task_id, returncode in self.executor.reap():
            entry = self.tasks.get(task_id)
            if entry is not None:
                self._exited(entry, returncode)
        if self._shutdown_deadline is not None:
            self._maybe_finish_shutdown()

    def _exited(self, entry: TaskEntry, returncode: int) -> None:
        outcome = exit_outcome(returncode, entry.kill_requested)
        level = logging.DEBUG if outcome.state is TaskState.FINISHED else logging.INFO
        log.log(level, "agent %s: task=%s framework=%s %s (%s)", self.agent_id, entry.task_id, entry.framework_id,
                outcome.state.value, outcome.message)
        self._update(entry, outcome.state, message=outcome.message, exit_code=outcome.exit_code)

    def _maybe_finish_shutdown(self) -> None:
        assert self._shutdown_deadline is not None
        if self._finished or (len(self.tasks) and time.monotonic() < self._shutdown_deadline):
            return
        self._finished = True
        if len(self.tasks):
            log.warning("agent %s: %d task(s) not reaped before shutdown", self.agent_id, len(self.tasks))
        self._flush()
        log.info("agent %s stopped", self.agent_id)
        self.bus.stop()

    # -- status updates -------------------------------------------------------------------------
    def _update(self, entry: TaskEntry, state: TaskState, message: str = "", exit_code: int | None = None) -> None:
        self.tasks.set_state(entry.task_id, state)
        self._updates.append(make_status(entry, self.agent_id, state, uuid.uuid4().hex, time.time(),
                                         message, exit_code))
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.bus.call_later(0, self._flush)

    def _flush(self) -> None:
        """Publish buffered updates (one STATUS per routing key), then settle the deliveries they answer."""
        self._flush_scheduled = False
        updates, self._updates = self._updates, []
        if updates:
            now = time.time()
            for (framework_id, agent_id, state), group in group_updates(updates):
                key = topology.status_key(framework_id, agent_id, state)
                self.bus.publish(topology.STATUS, key, codec.encode(Status(group), now))
        pending, self._pending = self._pending, []
        for delivery, reason in pending:
            if reason is None:
                self.bus.ack(delivery)
            else:
                self.bus.dead_letter(delivery, reason)
