"""The agent process: registers with the master, runs what ``tasks.<agent_id>`` asks, reports status.

Everything runs on the bus' one I/O loop thread. Status updates are buffered and published once per
loop turn, grouped into one STATUS message per routing key (``core.agent_state.group_updates``); with
checkpointing on, each such flush is first written to the status journal (``agent.checkpoint``) and
its file removed once the broker confirmed every message of it. A task message is acked only after
the updates it caused have been published (and, by the bus, confirmed). Tasks are keyed by
(framework_id, task_id). A restart with the same work dir recovers first (``agent.recovery``). Tasks
naming an ExecutorInfo run inside that framework executor (``agent.executors``), whose updates join the
same path.
Signals only set a flag: the shutdown itself runs on the loop (the 50 ms reaper tick notices it).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from broker_mesos.agent import checkpoint, recovery
from broker_mesos.agent.checkpoint import Message, StatusJournal
from broker_mesos.agent.executor import CommandExecutor, Executor, make_executor
from broker_mesos.agent.executors import ExecutorManager, ExecutorTimeouts
from broker_mesos.agent.health import HealthChecks
from broker_mesos.agent.isolation import cgroup_name, make_isolator
from broker_mesos.agent.isolation.limits import DEFAULT_PIDS_LIMIT, Policy
from broker_mesos.agent.logs import LogServer
from broker_mesos.agent.sandbox import SandboxGC, disk_usage, sandbox_dir
from broker_mesos.agent.usage import UsageSampler
from broker_mesos.bus import topology
from broker_mesos.bus.connection import Bus, Delivery, decode_delivery
from broker_mesos.core import codec, security
from broker_mesos.core.agent_state import (
    Limitation,
    Outcome,
    TaskEntry,
    TaskKey,
    TaskTable,
    disk_limitation,
    exit_outcome,
    group_updates,
    limited,
    make_status,
    unknown_exit,
)
from broker_mesos.core.errors import ConfigError, ProtocolError
from broker_mesos.core.health import REASON_TASK_HEALTH_CHECK_STATUS_UPDATED
from broker_mesos.core.protocol import (
    AgentTask,
    Error,
    Heartbeat,
    KillTasks,
    Register,
    RunTasks,
    SendLog,
    ShutdownExecutors,
    Status,
    TaskInfo,
    TaskState,
    TaskStatus,
    ToExecutor,
    Usage,
)
from broker_mesos.core.ratelimit import LogLimiter
from broker_mesos.core.resources import Resources

log = logging.getLogger(__name__)

REAP_INTERVAL = 0.05
SHUTDOWN_EXTRA = 1.0  # seconds after the kill grace to wait for SIGKILLed tasks to be reaped
GC_INTERVAL = 10.0  # at most; shorter when --sandbox-gc-delay is (each run costs O(removed), see SandboxGC)
DISK_TICK_BUDGET = 0.01  # seconds of sandbox measuring per loop tick (at least one sandbox per tick)


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
    checkpoint: bool = True
    kill_on_stop: bool = False
    # the OS user of tasks that name none (None: nobody for an agent running as root, else the agent's own)
    task_user: str | None = None
    allow_root_tasks: bool = False  # may tasks run as root (uid 0)?
    # "cgroups", "none", or None: cgroups when the agent can create its subtree, else none (one warning)
    isolation: str | None = None
    cgroups_cpu_limit: bool = False  # a hard CFS cap of each task's cpus, besides its weight
    cgroups_pids_limit: int = DEFAULT_PIDS_LIMIT  # processes and threads per task (0: no limit)
    # who may send this agent tasks and kills (when the agent connects as a principal, agent.<id>)
    master_principal: str = security.DEFAULT_MASTER_PRINCIPAL
    disk_check_interval: float = 5.0  # seconds between measures of a task's sandbox against its disk (0: never)
    sandbox_gc_delay: float = 86400.0  # seconds a finished task's sandbox (and checkpoint) is kept
    sandbox_gc_min_free: float = 10.0  # percent free on the work dir's filesystem below which GC removes sooner
    executor_idle_timeout: float = 10.0  # seconds a framework executor may have no task before it is shut down
    executor_shutdown_grace: float = 5.0  # seconds between executor.SHUTDOWN and SIGKILL
    executor_register_timeout: float = 60.0  # seconds a started executor has to subscribe
    executor_reregister_timeout: float = 10.0  # seconds a re-attached executor has to subscribe again


class Agent:
    """Wires a ``Bus`` to an executor, the pure task table and the checkpoint (nameko-style start / stop / kill).

    With ``checkpoint`` on, every status update is journaled before it is published and forgotten
    once the broker confirmed it, and every task is checkpointed before it is spawned: a restarted
    agent re-publishes what was never confirmed and re-attaches to its tasks, which keep running
    while it is down (a stop leaves them running unless ``kill_on_stop``).
    """

    def __init__(self, bus: Bus, config: AgentConfig) -> None:
        self.bus = bus
        self.config = config
        self.agent_id = config.agent_id
        isolator = make_isolator(config.isolation, config.agent_id,
                                 Policy(config.cgroups_cpu_limit, config.cgroups_pids_limit),
                                 cgroup_name(config.agent_id, config.work_dir)
                                 ) if config.executor == "command" else None
        self.executor: Executor = make_executor(config.executor, config.work_dir, config.agent_id,
                                                config.task_user, config.allow_root_tasks, isolator)
        self.tasks = TaskTable()
        # framework executors (tasks naming an ExecutorInfo): only with the command executor
        self.executors: ExecutorManager | None = None
        if isinstance(self.executor, CommandExecutor):
            timeouts = ExecutorTimeouts(config.executor_idle_timeout, config.executor_shutdown_grace,
                                        config.executor_register_timeout, config.executor_reregister_timeout,
                                        config.kill_grace)
            self.executors = ExecutorManager(self, bus, self.executor, config.work_dir, config.hostname, timeouts,
                                             config.checkpoint)
        # TaskInfo.health_check of command tasks (agent.health); the noop executor ignores them
        self.health: HealthChecks | None = None
        if isinstance(self.executor, CommandExecutor):
            self.health = HealthChecks(bus, self.executor, config.work_dir, config.agent_id, self._health_changed,
                                       self._kill_task)
        self.journal = StatusJournal(checkpoint.meta_dir(config.work_dir) / "status") if config.checkpoint else None
        self._checkpoint_tasks = config.checkpoint and config.executor != "noop"
        self._keep_tasks_on_stop = self._checkpoint_tasks and not config.kill_on_stop
        self._updates: list[TaskStatus] = []
        self._pending: list[tuple[Delivery, str | None]] = []  # (delivery, dead-letter reason or None)
        self._flush_scheduled = False
        self._registered = False
        self._stop_requested = False
        self._shutdown_deadline: float | None = None
        self._finished = False
        self._refusals = LogLimiter(burst=1, period=60.0)
        self._usage = UsageSampler(self.executor, config.work_dir)  # sampled for each HEARTBEAT
        self._disk_due: collections.deque[TaskKey] = collections.deque()  # this disk round's tasks left
        self._disk_limited: dict[TaskKey, Limitation] = {}  # killed for their disk; reported when reaped
        self.sandbox_gc = SandboxGC(config.work_dir, config.sandbox_gc_delay, config.sandbox_gc_min_free)
        # SEND_LOG: chunks of a sandbox's stdout / stderr to whoever the master names (agent.logs)
        self.logs = LogServer(bus, config.work_dir, config.agent_id,
                              lambda fw, task: self.tasks.get((fw, task)) is not None)
        # connected as a principal (agent.<id>): only the master principal's task messages count
        who = security.parse(bus.user, config.master_principal)
        self._secure = who is not None and who.kind is security.Kind.AGENT
        if who is not None and not self._secure:
            raise ConfigError(f"agent {config.agent_id} connects as {bus.user}, which is no agent principal")
        if self._secure and who is not None and who.name != config.agent_id:
            raise ConfigError(f"agent id {config.agent_id} but principal {bus.user}: they must match")

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Recover from the checkpoint, then consume the tasks queue, register on every connect, start timers."""
        if self.journal is not None:
            recovery.recover(self)
        if self.executors is not None:
            self.executors.start()
        self.bus.consume(topology.agent_tasks_queue(self.agent_id), self._on_delivery)
        self.bus.on_ready(self._register)
        self.bus.call_every(self.config.heartbeat_interval, self._heartbeat)
        self.bus.call_every(REAP_INTERVAL, self._tick)
        if self._checkpoint_tasks:
            self.sandbox_gc.seed()
            self.bus.call_every(min(GC_INTERVAL, max(1.0, self.config.sandbox_gc_delay)), self._gc)
        if self.config.executor != "noop" and self.config.disk_check_interval > 0:
            self.bus.call_every(self.config.disk_check_interval, self._disk_round)

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
        """Leave checkpointed tasks running (a restart re-attaches them), or kill them (they report
        TASK_KILLED); flush pending updates, then stop the bus."""
        if self._shutdown_deadline is not None:
            return
        if self.health is not None:
            self.health.close()
        if self._keep_tasks_on_stop:
            log.info("agent %s stopping; leaving %d task(s) running (checkpointed in %s)", self.agent_id,
                     len(self.tasks), self.config.work_dir)
            self._shutdown_deadline = time.monotonic()
        else:
            log.info("agent %s stopping; killing %d running task(s)", self.agent_id, len(self.tasks))
            self._shutdown_deadline = time.monotonic() + self.config.kill_grace + SHUTDOWN_EXTRA
            for entry in self.tasks.active():
                if entry.task.executor is None or self.executors is None:
                    self._kill_task(entry)
            if self.executors is not None:  # their tasks end TASK_KILLED once they are reaped
                self.executors.shutdown_all(min(self.config.kill_grace, self.config.executor_shutdown_grace))
        self._maybe_finish_shutdown()

    def kill(self) -> None:
        """Last resort when the loop is gone: SIGKILL every task still running, unless they are
        checkpointed (then the next agent process re-attaches them). Never raises."""
        if self.health is not None:
            self.health.close()
        if self._keep_tasks_on_stop:
            return
        for entry in self.tasks.active():
            try:
                self.executor.force_kill(entry.key)
            except Exception:  # kill must not raise
                log.exception("agent %s: could not kill task=%s", self.agent_id, entry.task_id)
        if self.executors is not None:
            try:
                self.executors.force_kill_all()
            except Exception:  # kill must not raise
                log.exception("agent %s: could not kill its executors", self.agent_id)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.request_stop()

    def _gc(self) -> None:
        removed = self.sandbox_gc.collect()
        if removed:
            log.info("agent %s: removed %d finished task sandbox(es)", self.agent_id, len(removed))

    # -- disk limits (Mesos' posix/disk isolator) ---------------------------------------------
    def _disk_round(self) -> None:
        """Every --disk-check-interval: queue the running tasks with a disk resource for measuring (unless
        the previous round is not over: rounds never overlap); ``_disk_tick`` measures them."""
        if self._disk_due or self._shutdown_deadline is not None:
            return
        self._disk_due.extend(e.key for e in self.tasks.active()
                              if e.task.resources.scalar("disk") > 0 and e.key not in self._disk_limited
                              and e.task.executor is None)

    def _disk_tick(self) -> None:
        """Measure queued sandboxes for at most DISK_TICK_BUDGET seconds (at least one): thousands of
        tasks are spread over several 50 ms ticks instead of blocking the loop for the whole round."""
        deadline = time.monotonic() + DISK_TICK_BUDGET
        while self._disk_due:
            entry = self.tasks.get(self._disk_due.popleft())
            if entry is not None and not entry.kill_requested and entry.key not in self._disk_limited:
                self._check_disk(entry)
            if time.monotonic() >= deadline:
                return

    def _check_disk(self, entry: TaskEntry) -> None:
        limit_mb = entry.task.resources.scalar("disk")
        used = disk_usage(sandbox_dir(self.config.work_dir, entry.framework_id, entry.task_id))
        if used <= limit_mb * 2**20:
            return
        limitation = disk_limitation(limit_mb, used)
        log.warning("agent %s: task=%s framework=%s: %s; killing it", self.agent_id, entry.task_id,
                    entry.framework_id, limitation.message)
        self._disk_limited[entry.key] = limitation
        self.executor.force_kill(entry.key)

    # -- registration and heartbeats -----------------------------------------------------------
    def _info(self, cls: type[Register] | type[Heartbeat]) -> Register | Heartbeat:
        c = self.config
        tasks = self.tasks.agent_tasks()
        return cls(agent_id=self.agent_id, hostname=c.hostname, resources=c.resources, attributes=c.attributes,
                   tasks=tasks, heartbeat_interval=c.heartbeat_interval,
                   usage=self._sample_usage(tasks) if cls is Heartbeat else None,
                   executors=self.executors.agent_executors() if self.executors is not None else [])

    def _sample_usage(self, tasks: list[AgentTask]) -> Usage | None:
        """Each task's usage for a HEARTBEAT (``agent.usage``); None (absent) if sampling failed: a
        heartbeat goes out whatever happens to the sampler."""
        try:
            return self._usage.sample(tasks)
        except Exception:
            if self._refusals.allow("usage", time.monotonic())[0]:
                log.exception("agent %s: sampling the tasks' usage failed; heartbeat sent without it", self.agent_id)
            return None

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
            envelope = decode_delivery(delivery)
            if self._secure and delivery.properties.user_id != self.config.master_principal:
                raise ProtocolError(f"task messages come from the master principal {self.config.master_principal!r}, "
                                    f"not from user {str(delivery.properties.user_id)[:128]!r}")
            if delivery.exchange != topology.TASKS or delivery.routing_key != self.agent_id:
                raise ProtocolError(f"task messages come through exchange {topology.TASKS} with key {self.agent_id}, "
                                    f"not {delivery.exchange[:128]!r} / {delivery.routing_key[:128]!r}")
            body = envelope.body
            if isinstance(body, RunTasks):
                elsewhere = [t.task_id for t in body.tasks if t.agent_id != self.agent_id]
                if elsewhere:
                    raise ProtocolError(f"RUN_TASKS names tasks for another agent: {elsewhere[:5]}")
            elif not isinstance(body, KillTasks | Error | ToExecutor | ShutdownExecutors | SendLog):
                raise ProtocolError(f"unexpected message type {envelope.type} on {delivery.queue}")
        except ProtocolError as exc:
            self._reject(delivery, exc.reason)
            return
        if isinstance(body, Error):  # the master refused what this agent sent (more than it admits)
            if self._refusals.allow(body.call_type, time.monotonic())[0]:
                log.error("agent %s: the master refused %s: %s", self.agent_id, body.call_type, body.message)
        elif isinstance(body, RunTasks):
            self._run_tasks(body)
        elif isinstance(body, KillTasks):
            self._kill_tasks(body)
        elif isinstance(body, ToExecutor):
            if self.executors is not None:
                self.executors.to_executor(body)
        elif isinstance(body, SendLog):
            self.logs.serve(body, delivery.properties.correlation_id)
        elif self.executors is not None:
            self.executors.shutdown(body.framework_id, body.executor_ids)
        self._pending.append((delivery, None))
        self._schedule_flush()

    def _reject(self, delivery: Delivery, reason: str) -> None:
        """Dead-lettered (and logged, rate-limited, by the bus) once the updates before it are out."""
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
        if task.executor is not None and self.executors is not None:
            self._launch_in_executor(entry, task)
            return
        self._update(entry, TaskState.STARTING)
        try:
            if self._checkpoint_tasks:
                checkpoint.record_task(self.config.work_dir, entry.framework_id, task)
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
        else:
            self.start_health_checks(entry)

    def start_health_checks(self, entry: TaskEntry) -> None:
        """Check a RUNNING command task's health, if it has a health check (also once re-attached)."""
        if self.health is not None and not entry.kill_requested:
            self.health.start(entry)

    def _health_changed(self, entry: TaskEntry, healthy: bool, message: str) -> None:
        """Its health checks changed a task's health: a TASK_RUNNING update says so (``_update``'s path)."""
        status = make_status(entry, self.agent_id, TaskState.RUNNING, uuid.uuid4().hex, time.time(), message,
                             reason=REASON_TASK_HEALTH_CHECK_STATUS_UPDATED)
        self._updates.append(dataclasses.replace(status, healthy=healthy))
        self._schedule_flush()

    def _launch_in_executor(self, entry: TaskEntry, task: TaskInfo) -> None:
        """Checkpointed (in its executor's task log), then handed to its executor; nothing is published
        until the executor reports."""
        assert self.executors is not None
        self.executors.launch(entry)  # checkpointed in its executor's task log

    def _kill_tasks(self, msg: KillTasks) -> None:
        for task_id in msg.task_ids:
            entry = self.tasks.get((msg.framework_id, task_id))
            if entry is None:
                log.info("agent %s: kill of unknown or finished task=%s framework=%s ignored", self.agent_id,
                         task_id, msg.framework_id)
                continue
            self._kill_task(entry, msg.quiet)

    def _kill_task(self, entry: TaskEntry, quiet: bool = False) -> None:
        if entry.kill_requested:
            entry.quiet = entry.quiet or quiet
            return
        self.tasks.request_kill(entry.key, quiet)
        if self._checkpoint_tasks:
            if entry.task.executor is not None and self.executors is not None:
                self.executors.record_kill(entry)
            else:
                checkpoint.record_kill(self._meta(entry))
        if entry.task.executor is not None and self.executors is not None:
            self.executors.kill(entry)
        else:
            self.terminate(entry)

    def terminate(self, entry: TaskEntry) -> None:
        """SIGTERM the task now, SIGKILL it after the kill grace."""
        log.info("agent %s: killing task=%s framework=%s", self.agent_id, entry.task_id, entry.framework_id)
        self.executor.terminate(entry.key)
        self.bus.call_later(self.config.kill_grace, lambda: self._force_kill(entry.key))

    def _force_kill(self, key: TaskKey) -> None:
        if self.tasks.get(key) is not None:
            log.warning("agent %s: task=%s framework=%s outlived its kill grace; SIGKILL", self.agent_id, key[1],
                        key[0])
            self.executor.force_kill(key)

    def _meta(self, entry: TaskEntry) -> Path:
        return checkpoint.task_meta_dir(self.config.work_dir, entry.framework_id, entry.task_id)

    # -- exits ----------------------------------------------------------------------------------
    def _tick(self) -> None:
        if self._stop_requested and self._shutdown_deadline is None:
            self.stop()
        for key, returncode in self.executor.reap():
            entry = self.tasks.get(key)
            if entry is not None:
                self._exited(entry, returncode)
            elif self.executors is not None and self.executors.owns(key):
                self.executors.exited(key, returncode)
            else:
                self.executor.release(key)
        if self.executors is not None:
            self.executors.tick()
        if self._disk_due:
            self._disk_tick()
        if self._shutdown_deadline is not None:
            self._maybe_finish_shutdown()

    def _exited(self, entry: TaskEntry, returncode: int | None) -> None:
        outcome = unknown_exit(entry.kill_requested) if returncode is None else exit_outcome(
            returncode, entry.kill_requested)
        self.report(entry, outcome)

    def report(self, entry: TaskEntry, outcome: Outcome) -> None:
        """Release what the task held and publish how it ended (with the limit it reached, if any)."""
        limitation = self.executor.release(entry.key)
        limitation = self._disk_limited.pop(entry.key, None) or limitation
        if limitation is not None:
            outcome = limited(outcome, limitation)
        level = logging.DEBUG if outcome.state is TaskState.FINISHED else logging.INFO
        log.log(level, "agent %s: task=%s framework=%s %s (%s)", self.agent_id, entry.task_id, entry.framework_id,
                outcome.state.value, outcome.message)
        self._update(entry, outcome.state, message=outcome.message, exit_code=outcome.exit_code,
                     reason=outcome.reason)

    def _maybe_finish_shutdown(self) -> None:
        assert self._shutdown_deadline is not None
        if self._finished:
            return
        running = len(self.tasks) + (len(self.executors) if self.executors is not None else 0)
        if not self._keep_tasks_on_stop and running and time.monotonic() < self._shutdown_deadline:
            return
        self._finished = True
        self.logs.close()
        if running and not self._keep_tasks_on_stop:
            log.warning("agent %s: %d task(s) or executor(s) not reaped before shutdown", self.agent_id, running)
        self._flush()
        if self.executors is not None:
            self.executors.stop()
        log.info("agent %s stopped", self.agent_id)
        self.bus.stop()

    # -- status updates -------------------------------------------------------------------------
    def _update(self, entry: TaskEntry, state: TaskState, message: str = "", exit_code: int | None = None,
                reason: str = "") -> None:
        """Publish a state change of a task the agent runs itself; it carries the task's health, if
        checked, and a task its health checks killed says so (reason and message)."""
        self.tasks.set_state(entry.key, state)
        healthy = None
        if self.health is not None:
            ended = self.health.stop(entry.key) if state.terminal else None
            healthy = ended.healthy if ended is not None else self.health.healthy(entry.key)
            if ended is not None and ended.kill_message and state is TaskState.KILLED:
                message, reason = ended.kill_message, REASON_TASK_HEALTH_CHECK_STATUS_UPDATED
        if entry.quiet and state.terminal:  # the master published its end already (a quiet kill)
            if self._checkpoint_tasks:
                executor = entry.task.executor
                self._record_done(entry.framework_id, entry.task_id, executor.executor_id if executor else "")
            return
        status = make_status(entry, self.agent_id, state, uuid.uuid4().hex, time.time(), message, exit_code, reason)
        self._updates.append(status if healthy is None else dataclasses.replace(status, healthy=healthy))
        self._schedule_flush()

    def publish_update(self, entry: TaskEntry, status: TaskStatus) -> None:
        """An executor's update of ``entry``, taken as it is (its uuid, data, message): like ``_update``."""
        self.tasks.set_state(entry.key, status.state)
        if entry.quiet and status.state.terminal:
            if self._checkpoint_tasks:
                self._record_done(entry.framework_id, entry.task_id, status.executor_id)
            self._schedule_flush()
            return
        self._updates.append(status)
        self._schedule_flush()

    def schedule_flush(self) -> None:
        self._schedule_flush()

    def executor_finished(self, key: TaskKey) -> None:
        if self._checkpoint_tasks:
            self.sandbox_gc.finished(*key)

    def _record_done(self, framework_id: str, task_id: str, executor_id: str) -> None:
        """The task's last update is journaled: its checkpoint says so (its executor's task log, or its
        own ``done`` mark and then its sandbox is collectable)."""
        if executor_id and self.executors is not None:
            self.executors.record_done(framework_id, executor_id, task_id)
            return
        checkpoint.record_done(checkpoint.task_meta_dir(self.config.work_dir, framework_id, task_id))
        self.sandbox_gc.finished(framework_id, task_id)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.bus.call_later(0, self._flush)

    def _flush(self) -> None:
        """Journal buffered updates, publish them (one STATUS per routing key), then settle the
        deliveries they answer. The journal entry goes once the broker confirmed every message."""
        self._flush_scheduled = False
        updates, self._updates = self._updates, []
        if updates:
            now = time.time()
            messages = [(topology.status_key(*key), codec.encode(Status(group), now))
                        for key, group in group_updates(updates)]
            self.publish_status(messages)
            if self._checkpoint_tasks:
                for update in updates:
                    if update.state.terminal:
                        self._record_done(update.framework_id, update.task_id, update.executor_id)
        if self.executors is not None:
            self.executors.flushed()  # what they sent is journaled (and on its way) now
        pending, self._pending = self._pending, []
        for delivery, reason in pending:
            if reason is None:
                self.bus.ack(delivery)
            else:
                self.bus.dead_letter(delivery, reason)

    def publish_status(self, messages: list[Message], batch: int | None = None) -> None:
        """Publish STATUS messages, journaled first (as ``batch`` when they already are)."""
        on_confirm = None
        if self.journal is not None:
            if batch is None:
                batch = self.journal.append(messages)
            on_confirm = _countdown(len(messages), functools.partial(self.journal.confirm, batch))
        for key, body in messages:
            self.bus.publish(topology.STATUS, key, body, on_confirm=on_confirm)


def _countdown(n: int, done: Callable[[], None]) -> Callable[[], None]:
    """A callback that calls ``done`` on its ``n``-th call."""
    left = [n]

    def tick() -> None:
        left[0] -= 1
        if left[0] == 0:
            done()

    return tick
