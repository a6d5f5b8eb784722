"""Framework executors on one agent (Mesos' executors): started, fed tasks, heard and stopped here.

An executor is started the first time a task names its ``ExecutorInfo`` on this agent, through the
command executor's own machinery (the task user switch, sandbox, cgroup, supervisor, checkpoint,
adoption after an agent restart), as the pseudo task ``executor.<executor_id>``
(``core.agent_executors.executor_key``), with the variables of ``executor_environment``. It connects to
the agent's executor socket (``agent.executor_channel``) and subscribes with its token; its tasks are
queued until then, then sent as ``executor.LAUNCH``. Its updates go through the agent's own update path
(task table, status journal, grouped STATUS) and are acknowledged (``executor.ACKNOWLEDGED``) once the
flush that journaled them is done (without checkpointing: once handed to the bus, which keeps them until
the broker confirms them, but not across an agent crash). Its container is sized to its own resources
plus its live tasks'.

It is stopped (``executor.SHUTDOWN``, SIGKILL after the shutdown grace) when it has had no live task
for the idle timeout or when SHUTDOWN_EXECUTORS names it; killed when it does not subscribe within the
registration timeout, or again within the re-registration timeout after an agent restart. Whatever the
cause, once its process is reaped its tasks that had not ended end as ``core.agent_executors`` says.
"""

from __future__ import annotations

import collections
import dataclasses
import hmac
import logging
import secrets
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from broker_mesos.agent import checkpoint
from broker_mesos.agent.checkpoint import CheckpointedExecutor, CheckpointedTask
from broker_mesos.agent.executor import CommandExecutor
from broker_mesos.agent.executor_channel import ChannelServer, Connection, socket_path
from broker_mesos.agent.executor_runs import ExecutorHost, ExecutorRun, ExecutorTimeouts, executor_environment
from broker_mesos.bus import topology
from broker_mesos.bus.connection import Bus
from broker_mesos.core import codec
from broker_mesos.core.agent_executors import (
    SOURCE_EXECUTOR,
    ExecutorEnd,
    Verdict,
    classify_update,
    container_resources,
    executor_end_outcome,
    executor_key,
    failed_to_start,
    kill_not_honoured,
    killed_before_launch,
    lost_tasks,
    mismatch,
    unknown_after_restart,
)
from broker_mesos.core.agent_state import (
    Outcome,
    TaskEntry,
    TaskKey,
    limited,
    returncode_from_exit_status,
)
from broker_mesos.core.errors import ProtocolError
from broker_mesos.core.protocol import (
    AgentExecutor,
    ExecutorAcknowledged,
    ExecutorData,
    ExecutorInfo,
    ExecutorKill,
    ExecutorLaunch,
    ExecutorShutdown,
    ExecutorSubscribe,
    ExecutorSubscribed,
    ExecutorUpdate,
    FromExecutor,
    TaskInfo,
    TaskState,
    TaskStatus,
    ToExecutor,
)
from broker_mesos.core.ratelimit import LogLimiter

log = logging.getLogger(__name__)

MAX_SEEN_UUIDS = 100_000  # update uuids remembered to drop duplicates (oldest forgotten first)
REASON_TASK_INVALID = "REASON_TASK_INVALID"
MAX_UNCONFIRMED = 10_000  # messages waiting for the broker beyond which executors' framework messages are dropped


class ExecutorManager:
    """The executors of one agent, driven by its I/O loop (``start``, calls from the agent, ``tick``)."""

    def __init__(self, host: ExecutorHost, bus: Bus, command: CommandExecutor, work_dir: Path, hostname: str,
                 timeouts: ExecutorTimeouts, checkpointing: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self.bus = bus
        self.command = command
        self.work_dir = work_dir
        self.hostname = hostname
        self.timeouts = timeouts
        self.checkpointing = checkpointing
        self.clock = clock
        self.endpoint = socket_path(work_dir)
        self.server = ChannelServer(bus, self.endpoint, self._on_call, self._on_close, clock)
        self.unavailable: str | None = "the executor socket is not started"
        self._runs: dict[TaskKey, ExecutorRun] = {}  # by executor key
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._acks: list[tuple[Connection, str, str]] = []  # sent after the next flush
        self._limiter = LogLimiter(burst=5, period=60.0)
        self._resize_due: set[TaskKey] = set()
        self._resize_scheduled = False
        self._ended: dict[TaskKey, ExecutorRun] = {}  # reaped; their task log open until the next flush

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Open the executor socket. Without it the agent still runs command tasks; tasks naming an
        executor then fail with the reason (logged once here)."""
        try:
            self.server.start()
        except (OSError, ValueError) as exc:
            self.unavailable = f"the agent's executor socket {self.endpoint} could not be opened: {exc}"
            log.warning("agent %s: %s; tasks naming an executor will fail", self.host.agent_id, self.unavailable)
            return
        self.unavailable = None
        log.info("agent %s: executors connect to %s", self.host.agent_id, self.endpoint)

    def stop(self) -> None:
        self.server.stop()

    def __len__(self) -> int:
        return len(self._runs)

    def owns(self, key: TaskKey) -> bool:
        return key in self._runs

    def agent_executors(self) -> list[AgentExecutor]:
        """The running executors, as REGISTER / HEARTBEAT report them."""
        return [AgentExecutor(r.framework_id, r.executor_id, r.info.resources) for r in self._runs.values()]

    def force_kill_all(self) -> None:
        for run in list(self._runs.values()):
            self.command.force_kill(run.key)

    # -- tasks ---------------------------------------------------------------------------------------
    def launch(self, entry: TaskEntry) -> None:
        """Hand a new task naming an executor to it, starting it first if it does not run here yet."""
        info = entry.task.executor
        assert info is not None
        if self.unavailable is not None:
            self.host.report(entry, failed_to_start(info.executor_id, self.unavailable))
            return
        run = self._runs.get(executor_key(entry.framework_id, info.executor_id))
        if run is None:
            run = self._start(entry, info)
            if run is None:
                return
        else:
            refusal = self._refusal(run, entry)
            if refusal is not None:
                log.warning("agent %s: task=%s framework=%s refused: %s", self.host.agent_id, entry.task_id,
                            entry.framework_id, refusal)
                self.host.report(entry, Outcome(TaskState.FAILED, None, refusal, REASON_TASK_INVALID))
                return
        if run.log is not None:
            try:
                run.log.launched(entry.framework_id, entry.task)
            except OSError as exc:
                log.warning("agent %s: task=%s framework=%s cannot be checkpointed: %s", self.host.agent_id,
                            entry.task_id, entry.framework_id, exc)
                self.host.report(entry, Outcome(TaskState.FAILED, None, f"failed to start: {exc}", ""))
                return
        run.tasks[entry.task_id] = entry.task
        run.idle_since = None
        self._schedule_resize(run)
        if run.subscribed and run.conn is not None:
            self._send_launch(run, entry.task)
        else:
            run.queued.append(entry.task_id)

    def _refusal(self, run: ExecutorRun, entry: TaskEntry) -> str | None:
        assert entry.task.executor is not None
        if run.shutting_down:
            return f"executor {run.executor_id} is shutting down"
        why = mismatch(run.info, entry.task.executor)
        if why is not None:
            return why
        user = entry.task.user or self.command.users.default
        if user != run.user:
            return f"executor {run.executor_id} runs as user {run.user!r}, not {user!r}"
        return None

    def _start(self, entry: TaskEntry, info: ExecutorInfo) -> ExecutorRun | None:
        fw = entry.framework_id
        key = executor_key(fw, info.executor_id)
        try:
            user = self.command.users.resolve(entry.task.user or self.command.users.default)
            token = secrets.token_hex(16)
            meta = checkpoint.executor_meta_dir(self.work_dir, fw, info.executor_id)
            if self.checkpointing:
                checkpoint.record_executor(self.work_dir, fw, info, token, user.name, user.uid)
            env = executor_environment(info, fw, self.host.agent_id, self.endpoint, token)
            pseudo = TaskInfo(task_id=key[1], agent_id=self.host.agent_id, name=info.name, user=user.name,
                              resources=container_resources(info.resources, [entry.task.resources]),
                              command=dataclasses.replace(info.command, environment=env))
            self.command.launch(fw, pseudo)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            log.warning("agent %s: executor=%s framework=%s failed to start: %s", self.host.agent_id,
                        info.executor_id, fw, exc)
            self._forget(fw, key)
            self.host.report(entry, failed_to_start(info.executor_id, str(exc)))
            return None
        run = ExecutorRun(fw, info, token, user.name, user.uid, meta,
                          log=checkpoint.ExecutorTaskLog(meta) if self.checkpointing else None)
        self._runs[key] = run
        log.info("agent %s: started %r as user %s", self.host.agent_id, run, user.name)
        self.bus.call_later(self.timeouts.register, lambda: self._registration_timeout(run))
        return run

    def _forget(self, framework_id: str, key: TaskKey) -> None:
        """A start that failed: its checkpoint is done, its sandbox collectable."""
        if self.checkpointing:
            checkpoint.record_done(checkpoint.task_meta_dir(self.work_dir, *key))
        self.host.executor_finished(key)

    def kill(self, entry: TaskEntry) -> None:
        """Kill a task of an executor: ``executor.KILL``, and TASK_KILLED from the agent itself if the
        executor does not end it within the kill grace (at once if it never received the task)."""
        run = self._run_of(entry)
        if run is None or entry.task_id not in run.tasks:
            self.host.report(entry, killed_before_launch(entry.task.executor.executor_id
                                                         if entry.task.executor else "?"))
            return
        if entry.task_id in run.queued:
            run.queued.remove(entry.task_id)
            self._end_task(run, entry, killed_before_launch(run.executor_id))
            return
        if run.conn is not None and run.subscribed:
            self._send(run, ExecutorKill(entry.task_id))
        key = entry.key
        self.bus.call_later(self.timeouts.kill_grace, lambda: self._kill_expired(run, key))

    def _kill_expired(self, run: ExecutorRun, key: TaskKey) -> None:
        entry = self.host.tasks.get(key)
        if entry is not None and entry.task_id in run.tasks:
            log.warning("agent %s: task=%s framework=%s: %r did not end it within the kill grace; reported killed",
                        self.host.agent_id, key[1], key[0], run)
            self._end_task(run, entry, kill_not_honoured(run.executor_id, self.timeouts.kill_grace))

    def _end_task(self, run: ExecutorRun, entry: TaskEntry, outcome: Outcome) -> None:
        self._task_gone(run, entry.task_id)
        self.host.report(entry, outcome)

    def _task_gone(self, run: ExecutorRun, task_id: str) -> None:
        if run.tasks.pop(task_id, None) is not None:
            self._schedule_resize(run)
        if not run.tasks and run.idle_since is None:
            run.idle_since = self.clock()

    def _schedule_resize(self, run: ExecutorRun) -> None:
        """Size the executor's container to it and its live tasks at the end of this loop turn: once per
        turn, however many of its tasks came or went in it (a RUN_TASKS of 1,000 tasks costs one O(n)
        sum and one write of the limits, not 1,000). A task's LAUNCH frame leaves in the same turn."""
        self._resize_due.add(run.key)
        if not self._resize_scheduled:
            self._resize_scheduled = True
            self.bus.call_later(0, self._apply_resizes)

    def _apply_resizes(self) -> None:
        self._resize_scheduled = False
        due, self._resize_due = self._resize_due, set()
        for key in due:
            run = self._runs.get(key)
            if run is not None:
                self.command.containers.resize(run.key, container_resources(
                    run.info.resources, (t.resources for t in run.tasks.values())))

    # -- the checkpoint of executors' tasks (their ExecutorTaskLog) -----------------------------------
    def record_kill(self, entry: TaskEntry) -> None:
        run = self._run_of(entry)
        if run is not None and run.log is not None:
            self._logged(run, lambda log_: log_.killed(entry.task_id))

    def record_done(self, framework_id: str, executor_id: str, task_id: str) -> None:
        """A task's last update is journaled: mark it done in its executor's log (compacted when due)."""
        key = executor_key(framework_id, executor_id)
        run = self._runs.get(key) or self._ended.get(key)
        if run is None or run.log is None:
            return
        run.finished.append(task_id)
        if len(run.finished) > 2 * checkpoint.EXECUTOR_LOG_FINISHED_KEPT:
            del run.finished[:-checkpoint.EXECUTOR_LOG_FINISHED_KEPT]
        self._logged(run, lambda log_: log_.done(task_id))
        if run.log.needs_compaction():
            live = []
            for task in run.tasks.values():
                entry = self.host.tasks.get((framework_id, task.task_id))
                live.append((task, entry is not None and entry.kill_requested))
            self._logged(run, lambda log_: log_.compact(framework_id, live, run.finished))

    def _logged(self, run: ExecutorRun, write: Callable[[checkpoint.ExecutorTaskLog], None]) -> None:
        assert run.log is not None
        try:
            write(run.log)
        except OSError as exc:
            self._log(f"log:{run.key}", f"agent {self.host.agent_id}: cannot write the task log of {run!r}: {exc}")

    def _run_of(self, entry: TaskEntry) -> ExecutorRun | None:
        info = entry.task.executor
        return self._runs.get(executor_key(entry.framework_id, info.executor_id)) if info is not None else None

    # -- framework messages and shutdowns from the master --------------------------------------------
    def to_executor(self, msg: ToExecutor) -> None:
        run = self._runs.get(executor_key(msg.framework_id, msg.executor_id))
        if run is None or run.conn is None or not run.subscribed:
            self._log(f"drop:{msg.framework_id}", f"agent {self.host.agent_id}: framework message for executor="
                      f"{msg.executor_id} framework={msg.framework_id} dropped: it is not connected to this agent")
            return
        self._send(run, ExecutorData(msg.data))

    def shutdown(self, framework_id: str, executor_ids: Iterable[str]) -> None:
        """Shut these executors of the framework down (all of them when ``executor_ids`` is empty)."""
        wanted = set(executor_ids)
        for run in list(self._runs.values()):
            if run.framework_id == framework_id and (not wanted or run.executor_id in wanted):
                self._shutdown(run, "on request of the master", self.timeouts.shutdown_grace)

    def shutdown_all(self, grace: float) -> None:
        for run in list(self._runs.values()):
            self._shutdown(run, "the agent stops", grace)

    def _shutdown(self, run: ExecutorRun, why: str, grace: float) -> None:
        if run.shutting_down:
            return
        run.shutting_down = True
        run.end = ExecutorEnd.SHUTDOWN
        log.info("agent %s: shutting down %r (%s)", self.host.agent_id, run, why)
        if self.checkpointing:
            checkpoint.record_shutdown(run.meta)
        if run.conn is not None and run.subscribed:
            self._send(run, ExecutorShutdown(grace))
            self.bus.call_later(grace, lambda: self._force_kill(run))
        else:
            self._force_kill(run)

    def _force_kill(self, run: ExecutorRun) -> None:
        if self._runs.get(run.key) is run:
            log.info("agent %s: SIGKILL %r", self.host.agent_id, run)
            self.command.force_kill(run.key)

    def _registration_timeout(self, run: ExecutorRun) -> None:
        if self._runs.get(run.key) is run and not run.subscribed and not run.shutting_down:
            log.warning("agent %s: %r did not subscribe within %gs; killing it", self.host.agent_id, run,
                        self.timeouts.register)
            run.end = ExecutorEnd.REGISTRATION_TIMEOUT
            self._force_kill(run)

    def _reregistration_timeout(self, run: ExecutorRun) -> None:
        if self._runs.get(run.key) is run and run.recovering and not run.shutting_down:
            log.warning("agent %s: %r did not subscribe again within %gs of the agent's restart; killing it",
                        self.host.agent_id, run, self.timeouts.reregister)
            run.end = ExecutorEnd.REREGISTRATION_TIMEOUT
            self._force_kill(run)

    # -- the loop ----------------------------------------------------------------------------------------
    def tick(self) -> None:
        """Every agent tick: pending writes and subscribe deadlines; idle executors are shut down."""
        self.server.tick()
        now = self.clock()
        for run in list(self._runs.values()):
            if (run.idle_since is not None and not run.tasks and not run.shutting_down
                    and now - run.idle_since >= self.timeouts.idle):
                self._shutdown(run, f"no task for {self.timeouts.idle:g}s", self.timeouts.shutdown_grace)

    def flushed(self) -> None:
        """The agent flushed (journaled and published) its updates: acknowledge the executors' ones."""
        ended, self._ended = self._ended, {}
        for run in ended.values():
            if run.log is not None:
                run.log.close()
        acks, self._acks = self._acks, []
        for conn, task_id, uuid in acks:
            if not conn.closed:
                self.server.send(conn, ExecutorAcknowledged(task_id, uuid))

    def exited(self, key: TaskKey, returncode: int | None) -> None:
        """An executor's process was reaped: release its container, end its tasks that had not ended."""
        run = self._runs.pop(key)
        if run.log is not None:  # the updates ending its tasks are journaled at the next flush: then done
            self._ended[key] = run
        limitation = self.command.release(key)
        if run.conn is not None:
            conn, run.conn = run.conn, None
            self.server.close(conn)
        outcome = executor_end_outcome(run.end, returncode, run.executor_id)
        if limitation is not None and run.end is not ExecutorEnd.SHUTDOWN:
            outcome = limited(outcome, limitation)
        level = logging.INFO if run.end is ExecutorEnd.SHUTDOWN else logging.WARNING
        log.log(level, "agent %s: %r ended (%s); %d task(s) left: %s", self.host.agent_id, run, outcome.message,
                len(run.tasks), outcome.state.value)
        for task_id in list(run.tasks):
            entry = self.host.tasks.get((run.framework_id, task_id))
            if entry is not None:
                self.host.report(entry, outcome)
        run.tasks.clear()
        if self.checkpointing:
            checkpoint.record_done(run.meta)
        self.host.executor_finished(key)

    # -- the socket -----------------------------------------------------------------------------------
    def _on_call(self, conn: Connection, body: object) -> None:
        if isinstance(body, ExecutorSubscribe):
            self._subscribe(conn, body)
            return
        run = conn.owner
        if not isinstance(run, ExecutorRun):
            raise ProtocolError("not subscribed")
        if isinstance(body, ExecutorUpdate):
            self._update(run, conn, body.status, resent=False)
        elif isinstance(body, ExecutorData):
            if self.bus.unconfirmed > MAX_UNCONFIRMED:
                self._log(f"flood:{run.framework_id}", f"agent {self.host.agent_id}: {run!r}: framework message "
                          f"dropped, {self.bus.unconfirmed} messages wait for the broker")
                return
            message = FromExecutor(self.host.agent_id, run.framework_id, run.executor_id, body.data)
            self.bus.publish(topology.AGENT_REGISTER, topology.KEY_MESSAGE, codec.encode(message, time.time()),
                             persistent=False)

    def _subscribe(self, conn: Connection, sub: ExecutorSubscribe) -> None:
        if conn.owner is not None:
            raise ProtocolError("already subscribed on this connection")
        run = self._runs.get(executor_key(sub.framework_id, sub.executor_id))
        if run is None:
            raise ProtocolError(f"no executor {sub.executor_id} of framework {sub.framework_id} runs on this agent")
        if not hmac.compare_digest(sub.token.encode(), run.token.encode()):
            raise ProtocolError(f"wrong token for executor {sub.executor_id}")
        if self.command.users.is_root and conn.peer_uid != run.uid:
            raise ProtocolError(f"executor {sub.executor_id} runs as uid {run.uid}, this connection is uid "
                                f"{conn.peer_uid}")
        if run.conn is not None:
            old, run.conn = run.conn, None
            old.owner = None
            self.server.fail(old, "a newer connection of this executor subscribed")
        conn.deadline = None
        conn.owner = run
        run.conn = conn
        run.disconnected_at = None
        if not run.subscribed and self.checkpointing:
            checkpoint.record_subscribed(run.meta)  # from now on it has been sent its tasks
        recovering, run.recovering, run.subscribed = run.recovering, False, True
        log.info("agent %s: %r subscribed (pid %d)%s", self.host.agent_id, run, conn.peer_pid,
                 " again after the agent restarted" if recovering else "")
        self._send(run, ExecutorSubscribed(self.host.agent_id, run.framework_id, run.executor_id, self.hostname))
        for status in sub.unacknowledged_updates:
            self._update(run, conn, status, resent=True)
        if recovering:
            for task_id in lost_tasks([t for t in run.tasks if t not in run.queued], sub.task_ids):
                entry = self.host.tasks.get((run.framework_id, task_id))
                if entry is not None:
                    self._end_task(run, entry, unknown_after_restart(run.executor_id))
        queued, run.queued = run.queued, []
        for task_id in queued:
            task = run.tasks.get(task_id)
            if task is not None:
                self._send_launch(run, task)
        for task_id in list(run.tasks):
            entry = self.host.tasks.get((run.framework_id, task_id))
            if recovering and entry is not None and entry.kill_requested:
                self.kill(entry)
        if run.shutting_down:
            self._send(run, ExecutorShutdown(self.timeouts.shutdown_grace))
        if not run.tasks and run.idle_since is None:
            run.idle_since = self.clock()

    def _update(self, run: ExecutorRun, conn: Connection, status: TaskStatus, resent: bool) -> None:
        key = (run.framework_id, status.task_id)
        entry = self.host.tasks.get(key)
        decision = classify_update(duplicate=status.uuid in self._seen, live=entry is not None,
                                   ended=entry is None and key in self.host.tasks,
                                   task_executor=entry.task.executor.executor_id
                                   if entry is not None and entry.task.executor is not None else None,
                                   executor_id=run.executor_id, resent=resent)
        if decision.verdict is Verdict.REFUSE:
            self.server.error(conn, f"update {status.state.value} (uuid {status.uuid}) of task {status.task_id} "
                                    f"refused: {decision.reason}")
            return
        self._acks.append((conn, status.task_id, status.uuid))
        if decision.verdict is Verdict.ACK:
            self.host.schedule_flush()
            return
        assert entry is not None
        self.remember(status.uuid)
        status = dataclasses.replace(status, framework_id=run.framework_id, agent_id=self.host.agent_id,
                                     executor_id=run.executor_id, source=SOURCE_EXECUTOR,
                                     timestamp=status.timestamp or time.time())
        if status.state.terminal:
            self._task_gone(run, status.task_id)
        self.host.publish_update(entry, status)

    def remember(self, uuid: str) -> None:
        """An update uuid already taken (also those a restarted agent finds in its journal)."""
        self._seen[uuid] = None
        while len(self._seen) > MAX_SEEN_UUIDS:
            self._seen.popitem(last=False)

    def _on_close(self, conn: Connection) -> None:
        run = conn.owner
        if isinstance(run, ExecutorRun) and run.conn is conn:
            run.conn = None
            run.disconnected_at = self.clock()
            log.info("agent %s: %r disconnected", self.host.agent_id, run)
            self.bus.call_later(self.timeouts.reregister, lambda: self._reconnect_timeout(run))

    def _reconnect_timeout(self, run: ExecutorRun) -> None:
        """An executor that lost its connection (not through an agent restart) and did not come back."""
        gone = run.disconnected_at
        if (self._runs.get(run.key) is run and run.conn is None and gone is not None and not run.shutting_down
                and self.clock() - gone >= self.timeouts.reregister):
            log.warning("agent %s: %r did not reconnect within %gs; killing it", self.host.agent_id, run,
                        self.timeouts.reregister)
            run.end = ExecutorEnd.REREGISTRATION_TIMEOUT
            self._force_kill(run)

    def _send(self, run: ExecutorRun, body: object) -> None:
        if run.conn is not None:
            self.server.send(run.conn, body)

    def _send_launch(self, run: ExecutorRun, task: TaskInfo) -> None:
        try:
            self._send(run, ExecutorLaunch(task))
        except ValueError as exc:  # more than a frame holds
            entry = self.host.tasks.get((run.framework_id, task.task_id))
            if entry is not None:
                self._end_task(run, entry, Outcome(TaskState.FAILED, None, f"cannot be sent to its executor: {exc}",
                                                   REASON_TASK_INVALID))

    def _log(self, key: str, line: str) -> None:
        allowed, held = self._limiter.allow(key, self.clock())
        if allowed:
            log.warning("%s%s", line, f" ({held} similar line(s) suppressed)" if held else "")

    # -- agent restart --------------------------------------------------------------------------------
    def recover(self, executors: list[CheckpointedExecutor], tasks: list[CheckpointedTask]) -> None:
        """Re-attach the executors an earlier agent process left running (they get the re-registration
        timeout to subscribe again) and their checkpointed live tasks; the tasks of executors that died
        meanwhile end TASK_FAILED."""
        dead: dict[TaskKey, Outcome] = {}
        unsent: set[TaskKey] = set()
        for found in executors:
            if found.done:
                continue
            alive = found.pid is not None and checkpoint.process_alive(found.pid, found.start_time)
            if not alive:
                dead[found.key] = self._recover_dead(found)
                continue
            assert found.pid is not None
            self.command.adopt(found.key, found.pid, found.start_time)
            run = ExecutorRun(found.framework_id, found.info, found.token, found.user, found.uid, found.meta,
                              recovering=True, subscribed=False,
                              log=checkpoint.ExecutorTaskLog(found.meta) if self.checkpointing else None)
            if not found.subscribed:
                unsent.add(found.key)
            self._runs[found.key] = run
            log.info("agent %s: re-attached %r pid=%d; waiting %gs for it to subscribe again", self.host.agent_id,
                     run, found.pid, self.timeouts.reregister)
            self.bus.call_later(self.timeouts.reregister, lambda r=run: self._reregistration_timeout(r))
            if found.shutdown:
                run.shutting_down, run.end = True, ExecutorEnd.SHUTDOWN
                self.bus.call_later(self.timeouts.shutdown_grace, lambda r=run: self._force_kill(r))
        for found_task in tasks:
            info = found_task.task.executor
            assert info is not None
            key = executor_key(found_task.framework_id, info.executor_id)
            entry = self.host.tasks.launch(found_task.framework_id, found_task.task, TaskState.RUNNING)
            if entry is None:
                continue
            entry.kill_requested = found_task.kill_requested
            run = self._runs.get(key)
            if run is not None:
                run.tasks[entry.task_id] = entry.task
                if key in unsent:  # it never subscribed: it was never sent this task
                    run.queued.append(entry.task_id)
            else:
                self.host.report(entry, dead.get(key) or executor_end_outcome(ExecutorEnd.EXITED, None,
                                                                              info.executor_id))
        for run in self._runs.values():
            self._schedule_resize(run)

    def _recover_dead(self, found: CheckpointedExecutor) -> Outcome:
        """An executor that ended while no agent ran: release its container, say how it ended."""
        limitation = self.command.release(found.key)
        text = checkpoint.read_exit_status(found.meta) if found.pid is not None else None
        returncode = returncode_from_exit_status(text) if text is not None else None
        end = ExecutorEnd.SHUTDOWN if found.shutdown else ExecutorEnd.EXITED
        outcome = executor_end_outcome(end, returncode, found.info.executor_id)
        if limitation is not None and end is not ExecutorEnd.SHUTDOWN:
            outcome = limited(outcome, limitation)
        if self.checkpointing:
            checkpoint.record_done(found.meta)
        self.host.executor_finished(found.key)
        log.warning("agent %s: executor=%s framework=%s ended while the agent was down (%s)", self.host.agent_id,
                    found.info.executor_id, found.framework_id, outcome.message)
        return outcome
