"""The executor SDK against a fake agent: a real Unix socket server in the test that speaks the frames of
docs/protocol.md section 17 (SUBSCRIBE handshake, LAUNCH/KILL/MESSAGE/SHUTDOWN, ACKNOWLEDGED, reconnect
with the unacknowledged updates); the pymap example's executor as a real process on that socket; and
the pymap scheduler's bookkeeping, read back from a not-yet-connected driver's outbox."""

from __future__ import annotations

import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker_mesos.core import codec
from broker_mesos.core.errors import ConfigError
from broker_mesos.core.framing import MAX_FRAME_BYTES, FrameReader, frame
from broker_mesos.core.protocol import (
    Accept,
    CommandInfo,
    Decline,
    Error,
    ExecutorAcknowledged,
    ExecutorData,
    ExecutorError,
    ExecutorInfo,
    ExecutorKill,
    ExecutorLaunch,
    ExecutorShutdown,
    ExecutorSubscribe,
    ExecutorSubscribed,
    ExecutorUpdate,
    Offer,
    Revive,
    Suppress,
    TaskInfo,
    TaskState,
    TaskStatus,
)
from broker_mesos.core.resources import Resources
from broker_mesos.framework.driver import SchedulerDriver, executor_info
from broker_mesos.framework.examples import pymap
from broker_mesos.framework.executor import Executor, ExecutorDriver
from broker_mesos.testing.wait import wait_for

TOKEN = "0123456789abcdef0123456789abcdef"
FRAMEWORK = "fw-1"
EXECUTOR = "py-0"
AGENT = "agent-1"


class AgentConnection:
    """The fake agent's end of one executor connection (blocking, with a deadline on every read)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = FrameReader()
        self.frames: list[Any] = []

    def send(self, body: Any) -> None:
        self.sock.sendall(frame(codec.encode(body, time.time())))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next(self, timeout: float = 5.0) -> Any:
        """The next message the executor sent (its body), waiting at most ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self.frames:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("the executor sent nothing in time")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not data:
                raise AssertionError("the executor closed the connection")
            self.frames.extend(codec.decode(raw).body for raw in self.reader.feed(data))
        return self.frames.pop(0)

    def closed(self, timeout: float = 5.0) -> bool:
        """True once the executor closed its end (anything it sent meanwhile is kept in ``frames``)."""
        self.sock.settimeout(timeout)
        try:
            while data := self.sock.recv(1 << 20):
                self.frames.extend(codec.decode(raw).body for raw in self.reader.feed(data))
        except (TimeoutError, ConnectionResetError):
            return False
        return True

    def subscribe(self, agent_id: str = AGENT) -> ExecutorSubscribe:
        """Take the SUBSCRIBE and answer SUBSCRIBED."""
        sub = self.next()
        assert isinstance(sub, ExecutorSubscribe)
        self.send(ExecutorSubscribed(agent_id, FRAMEWORK, EXECUTOR, "host-1"))
        return sub

    def close(self) -> None:
        self.sock.close()


class FakeAgent:
    """Listens on a Unix socket like an agent's ``run/executor.sock``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connections: list[AgentConnection] = []
        self.listen()

    def listen(self) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(self.path))
        self.server.listen(8)

    def go_away(self) -> None:
        """Stop listening and drop every connection, as a stopped agent process does."""
        self.server.close()
        self.path.unlink()
        for conn in self.connections:
            conn.close()

    def accept(self, timeout: float = 5.0) -> AgentConnection:
        self.server.settimeout(timeout)
        sock, _ = self.server.accept()
        conn = AgentConnection(sock)
        self.connections.append(conn)
        return conn

    def close(self) -> None:
        self.server.close()
        for conn in self.connections:
            conn.close()


class Recorder(Executor):
    """Records every callback; answers LAUNCH with TASK_RUNNING and ``ping`` messages with ``pong``."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def registered(self, driver: ExecutorDriver, agent_id: str, framework_id: str, executor_id: str) -> None:
        self.calls.append(("registered", agent_id, framework_id, executor_id))

    def reregistered(self, driver: ExecutorDriver, agent_id: str) -> None:
        self.calls.append(("reregistered", agent_id))

    def disconnected(self, driver: ExecutorDriver) -> None:
        self.calls.append(("disconnected",))

    def launch_task(self, driver: ExecutorDriver, task: TaskInfo) -> None:
        self.calls.append(("launch_task", task))
        driver.send_status_update(task.task_id, TaskState.RUNNING)

    def kill_task(self, driver: ExecutorDriver, task_id: str) -> None:
        self.calls.append(("kill_task", task_id))
        driver.send_status_update(task_id, TaskState.KILLED, message="killed on request")

    def framework_message(self, driver: ExecutorDriver, data: bytes) -> None:
        self.calls.append(("framework_message", data))
        if data.startswith(b"ping"):
            driver.send_framework_message(b"pong" + data[4:])

    def shutdown(self, driver: ExecutorDriver) -> None:
        self.calls.append(("shutdown",))
        super().shutdown(driver)

    def error(self, driver: ExecutorDriver, message: str) -> None:
        self.calls.append(("error", message))


class Running:
    """An ``ExecutorDriver`` run in a thread; ``code`` is what ``run()`` returned."""

    def __init__(self, driver: ExecutorDriver) -> None:
        self.driver = driver
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.code = self.driver.run()

    def returned(self, timeout: float = 5.0) -> int:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "run() did not return"
        assert self.code is not None
        return self.code


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for the socket (a Unix socket path has at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="bmx-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def agent(sock_dir: Path) -> Iterator[FakeAgent]:
    fake = FakeAgent(sock_dir / "executor.sock")
    yield fake
    fake.close()


def env_for(path: Path, recovery_timeout: float = 10.0) -> dict[str, str]:
    return {"BMESOS_AGENT_ENDPOINT": str(path), "BMESOS_EXECUTOR_TOKEN": TOKEN, "BMESOS_FRAMEWORK_ID": FRAMEWORK,
            "BMESOS_EXECUTOR_ID": EXECUTOR, "BMESOS_AGENT_ID": AGENT,
            "BMESOS_RECOVERY_TIMEOUT": str(recovery_timeout)}


def start(agent: FakeAgent, executor: Executor | None = None, recovery_timeout: float = 10.0,
          ) -> tuple[Recorder, Running, AgentConnection]:
    recorder = executor if isinstance(executor, Recorder) else Recorder()
    running = Running(ExecutorDriver(executor or recorder, env_for(agent.path, recovery_timeout)))
    return recorder, running, agent.accept()


def launch(task_id: str, data: bytes = b"") -> ExecutorLaunch:
    info = ExecutorInfo(EXECUTOR, CommandInfo("run-me"), Resources.of(cpus=0.1, mem=32))
    return ExecutorLaunch(TaskInfo(task_id=task_id, agent_id=AGENT, resources=Resources.of(cpus=0.1, mem=8),
                                   executor=info, data=data))


def called(recorder: Recorder, name: str, count: int = 1) -> list[tuple[Any, ...]]:
    return wait_for(lambda: (found := [c for c in recorder.calls if c[0] == name]) and len(found) >= count and found,
                    5.0, f"{count} {name} callback(s)")


# -- handshake ---------------------------------------------------------------------------------


def test_subscribe_carries_the_token_and_ids_and_subscribed_calls_registered(agent: FakeAgent) -> None:
    recorder, running, conn = start(agent)
    sub = conn.next()
    assert sub == ExecutorSubscribe(FRAMEWORK, EXECUTOR, TOKEN, [], [])
    assert recorder.calls == []
    conn.send(ExecutorSubscribed("agent-7", FRAMEWORK, EXECUTOR, "host-1"))
    assert called(recorder, "registered") == [("registered", "agent-7", FRAMEWORK, EXECUTOR)]
    assert running.driver.hostname == "host-1"
    assert TOKEN not in repr(running.driver.settings)  # a secret stays out of logs
    running.driver.stop()
    assert running.returned() == 0


def test_an_error_in_answer_to_subscribe_ends_the_run_without_reconnecting(agent: FakeAgent) -> None:
    recorder, running, conn = start(agent)
    conn.next()
    conn.send(ExecutorError("bad token"))
    conn.close()
    assert running.returned() == 1
    assert recorder.calls == [("error", "bad token")]
    assert len(agent.connections) == 1


def test_a_process_not_started_by_an_agent_exits_2_with_one_line() -> None:
    proc = subprocess.run([sys.executable, "-c", "from broker_mesos.framework.executor import Executor, "
                           "run_executor; run_executor(Executor())"], capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ.get("PATH", "")})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: not started by a broker-mesos agent: BMESOS_AGENT_ENDPOINT, BMESOS_EXECUTOR_TOKEN, "
        "BMESOS_FRAMEWORK_ID, BMESOS_EXECUTOR_ID not set"]


@pytest.mark.parametrize(("name", "value", "error"), [
    ("BMESOS_RECOVERY_TIMEOUT", "soon", "is not a number of seconds"),
    ("BMESOS_RECOVERY_TIMEOUT", "-1", "must be within"),
    ("BMESOS_EXECUTOR_ID", "py 0", "is not an identifier"),
])
def test_bad_settings_from_the_environment_are_one_clear_error(name: str, value: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        ExecutorDriver(Executor(), {**env_for(Path("/nonexistent")), name: value})


# -- events and calls --------------------------------------------------------------------------


def test_launch_reaches_launch_task_and_acknowledged_clears_the_update(agent: FakeAgent) -> None:
    recorder, running, conn = start(agent)
    conn.subscribe()
    conn.send(launch("t1", data=b"\x00payload"))
    (_, task), = called(recorder, "launch_task")
    assert task.task_id == "t1" and task.data == b"\x00payload" and task.executor.executor_id == EXECUTOR
    update = conn.next()
    assert isinstance(update, ExecutorUpdate)
    status = update.status
    assert (status.task_id, status.state, status.framework_id, status.agent_id, status.executor_id, status.source) \
        == ("t1", TaskState.RUNNING, FRAMEWORK, AGENT, EXECUTOR, "SOURCE_EXECUTOR")
    assert len(status.uuid) == 32 and abs(status.timestamp - time.time()) < 60
    assert [s.uuid for s in running.driver.unacknowledged] == [status.uuid]
    conn.send(ExecutorAcknowledged("t1", "some-other-uuid"))
    conn.send(ExecutorAcknowledged("t1", status.uuid))
    wait_for(lambda: not running.driver.unacknowledged, 5.0, "the update to be acknowledged")
    assert running.driver.live_tasks == {"t1"}  # RUNNING is not terminal
    running.driver.stop()
    assert running.returned() == 0


def test_kill_reaches_kill_task(agent: FakeAgent) -> None:
    recorder, running, conn = start(agent)
    conn.subscribe()
    conn.send(launch("t1"))
    assert conn.next().status.state is TaskState.RUNNING
    conn.send(ExecutorKill("t1"))
    assert called(recorder, "kill_task") == [("kill_task", "t1")]
    killed = conn.next().status
    assert (killed.task_id, killed.state, killed.message) == ("t1", TaskState.KILLED, "killed on request")
    conn.send(ExecutorAcknowledged("t1", killed.uuid))
    wait_for(lambda: "t1" not in running.driver.live_tasks, 5.0, "the terminal update to end the task")
    running.driver.stop()
    assert running.returned() == 0


def test_framework_messages_go_both_ways(agent: FakeAgent) -> None:
    recorder, running, conn = start(agent)
    conn.subscribe()
    conn.send(ExecutorData(b"ping-42\xff"))
    assert called(recorder, "framework_message") == [("framework_message", b"ping-42\xff")]
    assert conn.next() == ExecutorData(b"pong-42\xff")
    assert running.driver.send_framework_message(b"from another thread") is True
    assert conn.next() == ExecutorData(b"from another thread")
    with pytest.raises(ValueError, match="at most"):
        running.driver.send_framework_message(b"x" * (codec.MAX_DATA_BYTES + 1))
    running.driver.stop()
    assert running.returned() == 0


def test_updates_from_many_threads_all_arrive_in_each_threads_order(agent: FakeAgent) -> None:
    _, running, conn = start(agent)
    conn.subscribe()
    threads_count, per_thread = 4, 1000

    def report(n: int) -> None:
        for i in range(per_thread):
            running.driver.send_status_update(f"w{n}-{i}", TaskState.FINISHED, data=str(i).encode())

    workers = [threading.Thread(target=report, args=(n,)) for n in range(threads_count)]
    for worker in workers:
        worker.start()
    got = [conn.next().status for _ in range(threads_count * per_thread)]
    for worker in workers:
        worker.join()
    for n in range(threads_count):
        mine = [s for s in got if s.task_id.startswith(f"w{n}-")]
        assert [s.data for s in mine] == [str(i).encode() for i in range(per_thread)]
    assert len({s.uuid for s in got}) == len(got)
    for status in got:
        conn.send(ExecutorAcknowledged(status.task_id, status.uuid))
    wait_for(lambda: not running.driver.unacknowledged and not running.driver.live_tasks, 5.0, "every ack")
    running.driver.stop()
    assert running.returned() == 0


def test_an_update_the_agent_refuses_is_dropped_and_the_connection_stays(agent: FakeAgent) -> None:
    recorder, running, conn = start(agent)
    conn.subscribe()
    refused = running.driver.send_status_update("t9", TaskState.FINISHED)
    kept = running.driver.send_status_update("t8", TaskState.RUNNING)
    assert [conn.next().status.uuid for _ in range(2)] == [refused.uuid, kept.uuid]
    conn.send(ExecutorError(f"update TASK_FINISHED (uuid {refused.uuid}) of task t9 refused: unknown task"))
    called(recorder, "error")
    wait_for(lambda: [s.uuid for s in running.driver.unacknowledged] == [kept.uuid], 5.0, "the refused update gone")
    assert running.driver.live_tasks == {"t8"}
    assert running.driver.send_framework_message(b"still connected")
    assert conn.next() == ExecutorData(b"still connected")
    running.driver.stop()
    conn.send(ExecutorAcknowledged("t8", kept.uuid))
    assert running.returned() == 0


def test_bad_updates_are_refused_in_the_callers_thread(agent: FakeAgent) -> None:
    _, running, conn = start(agent)
    conn.subscribe()
    with pytest.raises(ValueError, match="over the"):
        running.driver.send_status_update("t1", TaskState.FINISHED, data=b"x" * (codec.MAX_DATA_BYTES + 1))
    with pytest.raises(ValueError, match="not an identifier"):
        running.driver.send_status_update("t 1", TaskState.FINISHED)
    assert running.driver.unacknowledged == []
    running.driver.stop()
    assert running.returned() == 0


# -- reconnect ---------------------------------------------------------------------------------


def test_after_the_agent_goes_away_and_comes_back_the_resubscribe_carries_unacknowledged_updates_and_tasks(
        agent: FakeAgent) -> None:
    recorder, running, conn = start(agent)
    conn.subscribe()
    for task_id in ("t1", "t2", "t3"):
        conn.send(launch(task_id))
    first, second, third = (conn.next().status for _ in range(3))
    conn.send(ExecutorAcknowledged(first.task_id, first.uuid))
    wait_for(lambda: len(running.driver.unacknowledged) == 2, 5.0, "the first ack")
    done = running.driver.send_status_update("t3", TaskState.FINISHED, data=b"result")
    assert conn.next().status.uuid == done.uuid
    conn.send(ExecutorAcknowledged("t3", done.uuid))  # t3's terminal update is in: it no longer runs
    wait_for(lambda: "t3" not in running.driver.live_tasks, 5.0, "t3's terminal ack")
    agent.go_away()
    called(recorder, "disconnected")
    later = running.driver.send_status_update("t2", TaskState.FINISHED, data=b"sent while away")

    agent.listen()  # a new agent process
    again = agent.accept()
    sub = again.next()
    assert isinstance(sub, ExecutorSubscribe) and sub.token == TOKEN
    assert [s.uuid for s in sub.unacknowledged_updates] == [second.uuid, third.uuid, later.uuid]
    assert sub.unacknowledged_updates[2].data == b"sent while away"
    assert sorted(sub.task_ids) == ["t1", "t2"]
    again.send(ExecutorSubscribed(AGENT, FRAMEWORK, EXECUTOR, "host-1"))
    assert called(recorder, "reregistered") == [("reregistered", AGENT)]
    assert recorder.names().count("registered") == 1
    for status in sub.unacknowledged_updates:
        again.send(ExecutorAcknowledged(status.task_id, status.uuid))
    wait_for(lambda: not running.driver.unacknowledged, 5.0, "the re-sent updates to be acknowledged")
    assert running.driver.live_tasks == {"t1"}
    running.driver.stop()
    assert running.returned() == 0


def test_when_only_the_connection_closes_the_driver_reconnects_at_once_and_resends(agent: FakeAgent) -> None:
    recorder, running, conn = start(agent)
    conn.subscribe()
    conn.send(launch("t1"))
    running_update = conn.next().status
    conn.close()
    again = agent.accept()
    sub = again.next()
    assert [s.uuid for s in sub.unacknowledged_updates] == [running_update.uuid]
    assert sub.task_ids == ["t1"]
    again.send(ExecutorSubscribed(AGENT, FRAMEWORK, EXECUTOR, "host-1"))
    called(recorder, "reregistered")
    assert recorder.names() == ["registered", "launch_task", "disconnected", "reregistered"]
    running.driver.stop()
    assert running.returned() == 0


def test_updates_the_subscribe_cannot_carry_follow_once_subscribed(agent: FakeAgent) -> None:
    """Five 250 kB results do not fit in one 1 MiB frame: the SUBSCRIBE carries the oldest, the rest
    arrive as UPDATEs after SUBSCRIBED, and nothing is sent before the agent answered."""
    recorder, running, conn = start(agent)
    conn.subscribe()
    agent.go_away()
    called(recorder, "disconnected")
    sent = [running.driver.send_status_update(f"t{i}", TaskState.FINISHED, data=bytes([i]) * 250_000)
            for i in range(5)]
    agent.listen()
    again = agent.accept()
    sub = again.next()
    carried = [s.uuid for s in sub.unacknowledged_updates]
    assert 0 < len(carried) < 5 and carried == [s.uuid for s in sent[:len(carried)]]
    assert not again.closed(timeout=0.2) and not again.frames  # nothing else before SUBSCRIBED
    again.send(ExecutorSubscribed(AGENT, FRAMEWORK, EXECUTOR, "host-1"))
    rest = [again.next() for _ in range(5 - len(carried))]
    assert [u.status.uuid for u in rest] == [s.uuid for s in sent[len(carried):]]
    running.driver.stop()
    assert running.returned() == 0


def test_an_agent_that_does_not_come_back_within_the_recovery_timeout_ends_the_run(agent: FakeAgent) -> None:
    recorder, running, conn = start(agent, recovery_timeout=0.5)
    conn.subscribe()
    agent.go_away()
    assert running.returned(timeout=10) == 1
    assert recorder.names() == ["registered", "disconnected", "error"]
    assert "could not subscribe with the agent" in recorder.calls[-1][1]


def test_an_agent_that_never_answers_subscribe_ends_the_run_after_the_recovery_timeout(agent: FakeAgent) -> None:
    recorder, running, conn = start(agent, recovery_timeout=0.5)
    assert isinstance(conn.next(), ExecutorSubscribe)
    assert running.returned(timeout=10) == 1  # after SUBSCRIBE_MIN_WAIT, not the 10 s SUBSCRIBE_TIMEOUT
    assert recorder.names() == ["error"]


# -- shutdown and bad input --------------------------------------------------------------------


def test_shutdown_calls_shutdown_and_run_returns(agent: FakeAgent) -> None:
    recorder, running, conn = start(agent)
    conn.subscribe()
    conn.send(ExecutorShutdown(grace_seconds=3))
    assert running.returned() == 0
    assert recorder.names() == ["registered", "shutdown"]
    assert conn.closed()


def test_stop_flushes_the_last_updates_before_returning(agent: FakeAgent) -> None:
    _, running, conn = start(agent)
    conn.subscribe()
    status = running.driver.send_status_update("t1", TaskState.KILLED)
    running.driver.stop()
    assert conn.next().status.uuid == status.uuid
    conn.send(ExecutorAcknowledged("t1", status.uuid))
    assert running.returned() == 0
    assert running.driver.unacknowledged == []


def test_a_frame_over_the_limit_calls_error_and_ends_the_run(agent: FakeAgent) -> None:
    recorder, running, conn = start(agent)
    conn.subscribe()
    called(recorder, "registered")
    conn.send_raw((MAX_FRAME_BYTES + 1).to_bytes(4, "big") + b"x" * 1000)
    assert running.returned() == 1
    assert recorder.names() == ["registered", "error"]
    assert "cannot trust" in recorder.calls[-1][1]
    assert conn.closed()
    assert len(agent.connections) == 1


def test_an_undecodable_frame_is_dropped_and_the_executor_goes_on(agent: FakeAgent) -> None:
    recorder, running, conn = start(agent)
    conn.subscribe()
    conn.send_raw(frame(b"\xc1 not msgpack"))
    conn.send(ExecutorSubscribe(FRAMEWORK, EXECUTOR, TOKEN))  # a call, not an event: dropped too
    conn.send(launch("t1"))
    called(recorder, "launch_task")
    assert conn.next().status.task_id == "t1"
    assert recorder.names() == ["registered", "launch_task"]
    running.driver.stop()
    assert running.returned() == 0


def test_a_callback_that_raises_does_not_stop_the_driver(agent: FakeAgent) -> None:
    class Faulty(Recorder):
        def kill_task(self, driver: ExecutorDriver, task_id: str) -> None:
            raise RuntimeError("boom")

    _, running, conn = start(agent, Faulty())
    conn.subscribe()
    conn.send(ExecutorKill("t1"))
    conn.send(launch("t2"))
    assert conn.next().status.task_id == "t2"
    running.driver.stop()
    assert running.returned() == 0


# -- the pymap example's executor, a real process on the fake agent's socket ---------------------


def test_the_pymap_executor_runs_pickled_calls_and_answers_ping(agent: FakeAgent) -> None:
    env = {**env_for(agent.path), "PATH": os.environ.get("PATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", pymap.MODULE, "--executor"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        conn = agent.accept(timeout=30)
        conn.subscribe()
        conn.send(launch("ok", pickle.dumps((pymap.square, 7))))
        conn.send(launch("bad", pickle.dumps((pymap.square, "seven"))))
        conn.send(launch("junk", b"not a pickle"))
        conn.send(ExecutorData(b"ping abc"))
        got: dict[str, list[TaskStatus]] = {}
        messages = []
        while sum(s.state.terminal for ss in got.values() for s in ss) < 3 or not messages:
            body = conn.next(timeout=10)
            if isinstance(body, ExecutorData):
                messages.append(body.data)
                continue
            got.setdefault(body.status.task_id, []).append(body.status)
            conn.send(ExecutorAcknowledged(body.status.task_id, body.status.uuid))
        assert messages == [b"pong abc"]
        assert [s.state for s in got["ok"]] == [TaskState.RUNNING, TaskState.FINISHED]
        assert pickle.loads(got["ok"][1].data) == 49
        bad = got["bad"][-1]
        assert bad.state is TaskState.FAILED and bad.message.startswith("TypeError:")
        assert b"Traceback" in bad.data
        assert got["junk"][-1].state is TaskState.FAILED
        conn.send(ExecutorShutdown(grace_seconds=5))
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_pymap_executor_reports_kills_and_exits_on_shutdown_while_a_call_runs(agent: FakeAgent) -> None:
    env = {**env_for(agent.path), "PATH": os.environ.get("PATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", pymap.MODULE, "--executor", "--threads", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        conn = agent.accept(timeout=30)
        conn.subscribe()
        conn.send(launch("slow-1", pickle.dumps((time.sleep, 60))))
        conn.send(launch("slow-2", pickle.dumps((time.sleep, 60))))
        assert {conn.next(timeout=10).status.task_id for _ in range(2)} == {"slow-1", "slow-2"}  # RUNNING
        conn.send(ExecutorKill("slow-1"))
        killed = conn.next(timeout=10).status
        assert (killed.task_id, killed.state) == ("slow-1", TaskState.KILLED)
        conn.send(ExecutorAcknowledged("slow-1", killed.uuid))
        conn.send(ExecutorShutdown(grace_seconds=5))
        last = conn.next(timeout=10).status
        assert (last.task_id, last.state, last.message) == ("slow-2", TaskState.KILLED, "the executor was shut down")
        conn.send(ExecutorAcknowledged("slow-2", last.uuid))
        assert proc.wait(5) == 0  # the sleeping worker threads do not hold it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- the pymap scheduler's bookkeeping (calls read back from an unconnected driver) --------------

UNREACHABLE = "amqp://guest:guest@127.0.0.1:1/%2F"


def sent_calls(driver: SchedulerDriver) -> list[Any]:
    """The bodies of the calls the driver queued, oldest first; the queue is emptied."""
    bodies = [codec.decode(item.body).body for item in driver.bus._outbox]
    driver.bus._outbox.clear()
    return bodies


def offer(offer_id: str, agent_id: str, resources: str = "cpus:8;mem:8192") -> Offer:
    return Offer(offer_id=offer_id, framework_id="fw", agent_id=agent_id, resources=Resources.parse(resources))


def pymap_scheduler(batch: int = 3, executors: int = 2) -> tuple[pymap.PyMapScheduler, SchedulerDriver]:
    infos = [executor_info(f"py-{k}", ["python3"], cpus=0.5, mem=100) for k in range(executors)]
    scheduler = pymap.PyMapScheduler(infos, Resources.of(cpus=1, mem=10), batch)
    return scheduler, SchedulerDriver(scheduler, UNREACHABLE, "pymap-units", framework_id="fw")


def test_pymap_packs_at_most_batch_calls_per_offer_round_robin_and_leaves_room_for_its_executors() -> None:
    scheduler, driver = pymap_scheduler(batch=3)
    job = scheduler.submit(driver, [pickle.dumps((pymap.square, i)) for i in range(5)])
    scheduler.resource_offers(driver, [offer("o1", "a1"), offer("o2", "a2", "cpus:2;mem:8192"),
                                       offer("o3", "a3", "cpus:0.9;mem:8192")])
    accepts = [c for c in sent_calls(driver) if isinstance(c, Accept)]
    assert [a.offer_ids for a in accepts] == [["o1"], ["o2"]]  # o3 has no room for the executors' 1 cpu
    first, second = (a.tasks for a in accepts)
    assert [t.task_id for t in first] == ["m0-0", "m0-1", "m0-2"]  # batch 3 of an offer with room for 7
    assert [t.task_id for t in second] == ["m0-3"]  # cpus 2 - executors 1 = one call
    assert [t.executor.executor_id for t in first] == ["py-0", "py-1", "py-0"]
    assert all(t.agent_id == "a1" and t.resources == Resources.of(cpus=1, mem=10) for t in first)
    assert pickle.loads(first[1].data) == (pymap.square, 1)
    assert list(scheduler.pending) == [("m0-4", pickle.dumps((pymap.square, 4)))]
    assert not job.done.is_set()


def test_pymap_declines_what_it_does_not_need_and_suppresses_when_idle_then_revives() -> None:
    scheduler, driver = pymap_scheduler()
    scheduler.resource_offers(driver, [offer("o1", "a1")])
    decline, suppress = sent_calls(driver)
    assert isinstance(decline, Decline) and decline.offer_ids == ["o1"]
    assert decline.refuse_seconds == pymap.IDLE_REFUSE_SECONDS and isinstance(suppress, Suppress)
    scheduler.submit(driver, [pickle.dumps((pymap.square, 1))])
    assert [type(c) for c in sent_calls(driver)] == [Revive]
    scheduler.resource_offers(driver, [offer("o2", "a1"), offer("o3", "a2")])
    accept, decline, suppress = sent_calls(driver)
    assert accept.offer_ids == ["o2"] and len(accept.tasks) == 1
    assert decline.offer_ids == ["o3"] and isinstance(suppress, Suppress)


def test_pymap_results_come_back_in_input_order_and_failures_say_why() -> None:
    scheduler, driver = pymap_scheduler(batch=10)
    job = scheduler.submit(driver, [pickle.dumps((pymap.square, i)) for i in range(3)])
    scheduler.resource_offers(driver, [offer("o1", "a1")])

    def update(task_id: str, state: TaskState, **fields: Any) -> None:
        scheduler.status_update(driver, TaskStatus(task_id=task_id, framework_id="fw", agent_id="a1", state=state,
                                                   uuid=uuid.uuid4().hex, timestamp=1.0, executor_id="py-0",
                                                   **fields))

    for i in (2, 0, 1):
        update(f"m0-{i}", TaskState.RUNNING)
    assert len(scheduler.latencies) == 3 and scheduler.running == {"m0-0", "m0-1", "m0-2"}
    update("m0-2", TaskState.FINISHED, data=pickle.dumps(4))
    update("m0-0", TaskState.FINISHED, data=pickle.dumps(0))
    assert not job.done.is_set()
    update("m0-1", TaskState.FAILED, message="executor py-0 exited with 7", reason="REASON_EXECUTOR_TERMINATED")
    assert job.done.is_set() and scheduler.tasks == {} and scheduler.running == set()
    assert job.results[0].value == 0 and job.results[2].value == 4
    failed = job.results[1]
    assert isinstance(failed, pymap.TaskFailed) and failed.index == 1 and failed.reason == "REASON_EXECUTOR_TERMINATED"
    assert scheduler.seen == {"a1": {"py-0"}}


def test_pymap_puts_the_calls_of_a_refused_accept_back_first() -> None:
    scheduler, driver = pymap_scheduler(batch=2)
    scheduler.submit(driver, [pickle.dumps((pymap.square, i)) for i in range(3)])
    scheduler.resource_offers(driver, [offer("o1", "a1")])
    call_id = driver.bus._outbox[0].properties.correlation_id  # the ACCEPT's id, which an ERROR echoes
    sent_calls(driver)
    scheduler.call_refused(driver, Error(message="offer o1 is gone", call_type="ACCEPT", call_id=call_id))
    assert [task_id for task_id, _ in scheduler.pending] == ["m0-0", "m0-1", "m0-2"]
    assert scheduler.launched_by == {} and scheduler.in_flight == {}


def test_pymap_launches_a_lost_or_dropped_call_again_up_to_its_retries() -> None:
    scheduler, driver = pymap_scheduler(batch=10)
    scheduler.retries = 1
    job = scheduler.submit(driver, [pickle.dumps((pymap.square, i)) for i in range(2)])
    scheduler.resource_offers(driver, [offer("o1", "a1")])
    sent_calls(driver)

    def end(task_id: str, state: TaskState, **fields: Any) -> None:
        scheduler.status_update(driver, TaskStatus(task_id=task_id, framework_id="fw", agent_id="a1", state=state,
                                                   uuid=uuid.uuid4().hex, timestamp=1.0, **fields))

    end("m0-0", TaskState.DROPPED, reason="REASON_TASK_UNKNOWN")
    end("m0-1", TaskState.FAILED, message="ValueError: no")  # the call's own failure: not retried
    assert [task_id for task_id, _ in scheduler.pending] == ["m0-0-r1"] and scheduler.retried == 1
    assert [type(c) for c in sent_calls(driver)] == [Revive]  # it had suppressed offers: all were launched
    scheduler.resource_offers(driver, [offer("o2", "a2")])
    (accept, *_) = sent_calls(driver)
    assert [t.task_id for t in accept.tasks] == ["m0-0-r1"] and pickle.loads(accept.tasks[0].data)[1] == 0
    end("m0-0-r1", TaskState.LOST, reason="REASON_AGENT_REMOVED")  # out of retries
    assert job.done.is_set() and scheduler.tasks == {}
    assert [(r.state, r.reason) for r in job.results] == [(TaskState.LOST, "REASON_AGENT_REMOVED"),
                                                         (TaskState.FAILED, "")]


def test_pymap_keeps_at_most_max_in_flight_unfinished_calls_per_agent() -> None:
    scheduler, driver = pymap_scheduler(batch=3)
    scheduler.max_in_flight = 4
    scheduler.submit(driver, [pickle.dumps((pymap.square, i)) for i in range(10)])
    scheduler.resource_offers(driver, [offer("o1", "a1")])
    scheduler.resource_offers(driver, [offer("o2", "a1"), offer("o3", "a2")])
    scheduler.resource_offers(driver, [offer("o4", "a1")])  # a1 has its 4 unfinished calls: declined
    accepts = {c.offer_ids[0]: [t.task_id for t in c.tasks] for c in sent_calls(driver) if isinstance(c, Accept)}
    assert accepts == {"o1": ["m0-0", "m0-1", "m0-2"], "o2": ["m0-3"], "o3": ["m0-4", "m0-5", "m0-6"]}
    assert scheduler.in_flight == {"a1": 4, "a2": 3}
    scheduler.status_update(driver, TaskStatus(task_id="m0-1", framework_id="fw", agent_id="a1",
                                               state=TaskState.FINISHED, uuid=uuid.uuid4().hex, timestamp=1.0,
                                               data=pickle.dumps(1)))
    scheduler.resource_offers(driver, [offer("o5", "a1")])
    (accept,) = [c for c in sent_calls(driver) if isinstance(c, Accept)]
    assert [t.task_id for t in accept.tasks] == ["m0-7"] and scheduler.in_flight["a1"] == 4
