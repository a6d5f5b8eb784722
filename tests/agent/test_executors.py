"""Framework executors on real agent processes, driven by the fake master: the executor is
``raw_executor.py`` (the socket protocol spoken by hand, no SDK), run with this interpreter as root
(``--task-user root --allow-root-tasks``: the test interpreter lives under /root, which user nobody
cannot reach)."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest

from broker_mesos.agent.executor_channel import socket_path
from broker_mesos.core import codec
from broker_mesos.core.agent_executors import (
    REASON_EXECUTOR_REGISTRATION_TIMEOUT,
    REASON_EXECUTOR_REREGISTRATION_TIMEOUT,
    SOURCE_EXECUTOR,
)
from broker_mesos.core.agent_state import REASON_EXECUTOR_TERMINATED
from broker_mesos.core.framing import FrameReader, frame
from broker_mesos.core.protocol import (
    AgentExecutor,
    CommandInfo,
    ExecutorAcknowledged,
    ExecutorData,
    ExecutorError,
    ExecutorInfo,
    ExecutorSubscribe,
    ExecutorSubscribed,
    ExecutorUpdate,
    FromExecutor,
    Heartbeat,
    RunTasks,
    TaskInfo,
    TaskState,
    TaskStatus,
)
from broker_mesos.core.resources import Resources
from broker_mesos.testing.fake_master import FakeMaster
from broker_mesos.testing.processes import Proc, ProcessGroup
from broker_mesos.testing.wait import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="executors are started as root here (see the docstring)")

RAW = Path(__file__).with_name("raw_executor.py")
RESOURCES = "cpus:4;mem:2048;disk:1000;ports:[31000-31010]"
FW = "fw1"
EXECUTOR_RESOURCES = Resources.of(cpus=0.5, mem=64)


def start_agent(procs: ProcessGroup, broker_url: str, work: Path, agent_id: str, *args: str,
                kill_on_stop: bool = True) -> Proc:
    extra = ("--kill-on-stop",) if kill_on_stop else ()
    proc = procs.bmesos(f"agent-{agent_id}-{len(procs.procs)}", "agent", "--broker", broker_url, "--id", agent_id,
                        "--resources", RESOURCES, "--work-dir", str(work), "--task-user", "root",
                        "--allow-root-tasks", "--heartbeat-interval", "0.2", "--kill-grace", "1", *extra, *args)
    proc.wait_output(rf"agent {agent_id} registered with", timeout=20)
    return proc


def raw_executor(executor_id: str = "e1", **env: str) -> ExecutorInfo:
    return ExecutorInfo(executor_id, CommandInfo(shell=False, arguments=[sys.executable, str(RAW)],
                                                 environment=env), EXECUTOR_RESOURCES, name="raw")


def task(task_id: str, mode: bytes = b"finish", executor: ExecutorInfo | None = None) -> TaskInfo:
    return TaskInfo(task_id=task_id, agent_id="x", resources=Resources.of(cpus=0.1, mem=32),
                    executor=executor or raw_executor(), data=mode)


def executor_pid(status: TaskStatus) -> int:
    return int(status.data)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def cgroup_dirs(work: Path, executor_id: str = "e1") -> list[Path]:
    record = work / "meta" / "frameworks" / FW / "executors" / executor_id / "cgroup"
    return [Path(p) for p in json.loads(record.read_text())["cgroups"].values()]


def memory_limit(cgroups: list[Path]) -> int:
    for d in cgroups:
        for name in ("memory.limit_in_bytes", "memory.max"):
            if (d / name).exists():
                return int((d / name).read_text())
    raise AssertionError(f"no memory limit in {cgroups}")


def executor_token(work: Path, executor_id: str = "e1") -> str:
    data = msgpack.unpackb((work / "meta" / "frameworks" / FW / "executors" / executor_id / "executor").read_bytes())
    return str(data["token"])


class Impostor:
    """A client of the executor socket that reads events as they come (the connection stays open)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.settimeout(0.05)
        self.reader = FrameReader()
        self.events: list[object] = []
        self.closed = False

    def send(self, body: object) -> None:
        self.sock.sendall(frame(codec.encode(body, time.time())))

    def poll(self) -> list[object]:
        try:
            data = self.sock.recv(65536)
            if not data:
                self.closed = True
            self.events.extend(codec.decode(f).body for f in self.reader.feed(data))
        except TimeoutError:
            pass
        return self.events

    def wait(self, pred: object, what: str) -> list[object]:
        return wait_for(lambda: [e for e in self.poll() if pred(e)], 10, what)  # type: ignore[operator]

    def close(self) -> None:
        self.sock.close()


def update(task_id: str, state: TaskState, uuid: str | None = None) -> TaskStatus:
    return TaskStatus(task_id=task_id, framework_id=FW, agent_id="whatever", state=state,
                      uuid=uuid or os.urandom(16).hex(), timestamp=time.time(), data=b"impostor")


def executors_in(master: FakeMaster, pred: object) -> Heartbeat:
    return master.wait_agent_message(Heartbeat, pred)  # type: ignore[arg-type]


def test_tasks_naming_one_executor_share_its_process(procs: ProcessGroup, broker_url: str, master: FakeMaster,
                                                     work_root: Path) -> None:
    start_agent(procs, broker_url, work_root / "share", "ex1")
    master.send("ex1", RunTasks(FW, [task("t1"), task("t2")]))
    done = [master.wait_state(t, TaskState.FINISHED) for t in ("t1", "t2")]
    assert executor_pid(done[0]) == executor_pid(done[1])
    assert all(u.source == SOURCE_EXECUTOR and u.executor_id == "e1" and u.agent_id == "ex1" for u in done)
    assert master.states("t1") == [TaskState.RUNNING, TaskState.FINISHED]  # nothing from the agent itself
    pid = executor_pid(done[0])
    assert alive(pid)

    master.run("ex1", task("t3"))  # a later task goes to the running executor
    assert executor_pid(master.wait_state("t3", TaskState.FINISHED)) == pid

    other = raw_executor("e1", EXTRA="1")  # same id, another ExecutorInfo
    master.run("ex1", task("t4", executor=other))
    refused = master.wait_state("t4", TaskState.FAILED)
    assert "another ExecutorInfo" in refused.message and "command" in refused.message
    hb = executors_in(master, lambda b: b.executors and not b.tasks)
    assert hb.executors == [AgentExecutor(FW, "e1", EXECUTOR_RESOURCES)]
    assert alive(pid)


def test_framework_message_round_trip(procs: ProcessGroup, broker_url: str, master: FakeMaster,
                                      work_root: Path) -> None:
    start_agent(procs, broker_url, work_root / "messages", "ex2")
    master.run("ex2", task("long", b"run"))
    master.wait_state("long", TaskState.RUNNING)
    hb = executors_in(master, lambda b: b.executors and b.tasks)
    assert [t.task_id for t in hb.tasks] == ["long"] and hb.executors[0].executor_id == "e1"

    master.to_executor("ex2", "e1", b"hello \x00\xff")
    echo = master.wait_agent_message(FromExecutor, lambda b: b.data == b"echo:hello \x00\xff")
    assert (echo.agent_id, echo.framework_id, echo.executor_id) == ("ex2", FW, "e1")
    master.to_executor("ex2", "nope", b"lost")  # no such executor: dropped, nothing breaks
    master.to_executor("ex2", "e1", b"finish long")
    assert master.wait_state("long", TaskState.FINISHED).source == SOURCE_EXECUTOR


def test_kill_a_task_inside_its_executor(procs: ProcessGroup, broker_url: str, master: FakeMaster,
                                         work_root: Path) -> None:
    start_agent(procs, broker_url, work_root / "kill", "ex3")
    master.send("ex3", RunTasks(FW, [task("k1", b"run"), task("k2", b"stubborn")]))
    pid = executor_pid(master.wait_state("k1", TaskState.RUNNING))
    master.wait_state("k2", TaskState.RUNNING)
    master.kill("ex3", "k1", "k2")
    killed = master.wait_state("k1", TaskState.KILLED)
    assert killed.source == SOURCE_EXECUTOR and executor_pid(killed) == pid
    stubborn = master.wait_state("k2", TaskState.KILLED)  # the agent's own, after --kill-grace 1
    assert stubborn.source == "SOURCE_AGENT" and "did not report its end" in stubborn.message
    assert alive(pid)  # the executor keeps running
    master.run("ex3", task("k3"))
    assert executor_pid(master.wait_state("k3", TaskState.FINISHED)) == pid


def test_executor_killed_fails_its_tasks(procs: ProcessGroup, broker_url: str, master: FakeMaster,
                                         work_root: Path) -> None:
    start_agent(procs, broker_url, work_root / "sigkill", "ex4")
    master.send("ex4", RunTasks(FW, [task("s1", b"run"), task("s2", b"run")]))
    pid = executor_pid(master.wait_state("s1", TaskState.RUNNING))
    master.wait_state("s2", TaskState.RUNNING)
    executors_in(master, lambda b: b.executors)
    os.kill(pid, signal.SIGKILL)
    for task_id in ("s1", "s2"):
        failed = master.wait_state(task_id, TaskState.FAILED)
        assert failed.reason == REASON_EXECUTOR_TERMINATED and "SIGKILL" in failed.message
    hb = executors_in(master, lambda b: not b.executors)
    assert hb.tasks == []
    master.run("ex4", task("s3"))  # a new executor process
    assert executor_pid(master.wait_state("s3", TaskState.FINISHED)) != pid


def test_agent_restart_executor_subscribes_again(procs: ProcessGroup, broker_url: str, master: FakeMaster,
                                                work_root: Path) -> None:
    work = work_root / "restart"
    first = start_agent(procs, broker_url, work, "ex5")
    master.send("ex5", RunTasks(FW, [task("r1", b"run"), task("r2", b"run")]))
    pid = executor_pid(master.wait_state("r1", TaskState.RUNNING))
    master.wait_state("r2", TaskState.RUNNING)
    first.kill()  # SIGKILL: the executor keeps running, alone
    assert alive(pid)
    second = start_agent(procs, broker_url, work, "ex5")
    second.wait_output(r"executor=e1 framework=fw1 subscribed \(pid \d+\) again")
    master.to_executor("ex5", "e1", b"finish r1")
    done = master.wait_state("r1", TaskState.FINISHED)
    assert executor_pid(done) == pid
    master.kill("ex5", "r2")
    master.wait_state("r2", TaskState.KILLED)
    assert master.states("r1").count(TaskState.FINISHED) == 1
    assert master.states("r2") == [TaskState.RUNNING, TaskState.KILLED]


def test_executor_that_does_not_subscribe_again_is_killed(procs: ProcessGroup, broker_url: str,
                                                         master: FakeMaster, work_root: Path) -> None:
    work = work_root / "reregister"
    first = start_agent(procs, broker_url, work, "ex6")
    master.run("ex6", task("q1", b"run", raw_executor(RAW_NO_RECONNECT="1")))
    pid = executor_pid(master.wait_state("q1", TaskState.RUNNING))
    first.kill()
    start_agent(procs, broker_url, work, "ex6", "--executor-reregister-timeout", "0.5")
    failed = master.wait_state("q1", TaskState.FAILED)
    assert failed.reason == REASON_EXECUTOR_REREGISTRATION_TIMEOUT
    wait_for(lambda: not alive(pid), 5, "the executor to be killed")


def test_executor_that_never_subscribes_is_killed(procs: ProcessGroup, broker_url: str, master: FakeMaster,
                                                  work_root: Path) -> None:
    start_agent(procs, broker_url, work_root / "register", "ex7", "--executor-register-timeout", "0.5")
    silent = ExecutorInfo("mute", CommandInfo("exec sleep 30"), EXECUTOR_RESOURCES)
    master.run("ex7", task("m1", executor=silent))
    failed = master.wait_state("m1", TaskState.FAILED)
    assert failed.reason == REASON_EXECUTOR_REGISTRATION_TIMEOUT and "SIGKILL" in failed.message
    assert master.states("m1") == [TaskState.FAILED]
    missing = ExecutorInfo("missing", CommandInfo(shell=False, arguments=["/nonexistent/executor"]))
    master.run("ex7", task("m2", executor=missing))
    failed = master.wait_state("m2", TaskState.FAILED)
    assert failed.reason == REASON_EXECUTOR_TERMINATED
    assert "executor missing failed to start" in failed.message and "No such file" in failed.message


def test_shutdown_executors_stops_it_and_kills_its_tasks(procs: ProcessGroup, broker_url: str, master: FakeMaster,
                                                        work_root: Path) -> None:
    work = work_root / "shutdown"
    proc = start_agent(procs, broker_url, work, "ex8", "--executor-shutdown-grace", "1")
    master.run("ex8", task("d1", b"run"))
    pid = executor_pid(master.wait_state("d1", TaskState.RUNNING))
    cgroups: list[Path] = []
    if "tasks run in cgroups" in proc.output():  # sized to the executor's 64 MB + 32 MB per live task
        cgroups = cgroup_dirs(work)
        assert cgroups and all(d.is_dir() for d in cgroups)
        assert memory_limit(cgroups) == 96 * 2**20
        master.run("ex8", task("d2", b"run"))
        master.wait_state("d2", TaskState.RUNNING)
        assert memory_limit(cgroups) == 128 * 2**20
        master.to_executor("ex8", "e1", b"finish d2")
        master.wait_state("d2", TaskState.FINISHED)
        wait_for(lambda: memory_limit(cgroups) == 96 * 2**20, 5, "the executor's cgroup to shrink")
    master.shutdown_executors("ex8")
    assert master.wait_state("d1", TaskState.KILLED).source == SOURCE_EXECUTOR
    wait_for(lambda: not alive(pid), 5, "the executor to exit")
    wait_for(lambda: not any(d.exists() for d in cgroups), 5, "its cgroups to be removed")
    executors_in(master, lambda b: not b.executors)


def test_idle_executor_is_shut_down_and_leaves_heartbeats(procs: ProcessGroup, broker_url: str, master: FakeMaster,
                                                          work_root: Path) -> None:
    proc = start_agent(procs, broker_url, work_root / "idle", "ex9", "--executor-idle-timeout", "0.5")
    master.run("ex9", task("i1"))
    pid = executor_pid(master.wait_state("i1", TaskState.FINISHED))
    hb = executors_in(master, lambda b: b.executors)
    assert hb.executors == [AgentExecutor(FW, "e1", EXECUTOR_RESOURCES)]
    proc.wait_output(r"shutting down executor=e1 framework=fw1 \(no task for 0.5s\)")
    wait_for(lambda: not alive(pid), 5, "the idle executor to exit")
    executors_in(master, lambda b: not b.executors)


def _frames(sock: socket.socket) -> list[object]:
    """Every event the agent sent before it closed ``sock``."""
    reader, got = FrameReader(), []
    sock.settimeout(10)
    while True:
        data = sock.recv(65536)
        if not data:
            return got
        got.extend(codec.decode(f).body for f in reader.feed(data))


def _client(path: Path, *chunks: bytes) -> list[object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        for chunk in chunks:
            sock.sendall(chunk)
        return _frames(sock)


def test_bad_clients_get_an_error_and_the_agent_goes_on(procs: ProcessGroup, broker_url: str, master: FakeMaster,
                                                        work_root: Path) -> None:
    work = work_root / "bad"
    proc = start_agent(procs, broker_url, work, "ex10")
    path = socket_path(work)
    assert oct(path.stat().st_mode & 0o777) == "0o666" and oct(path.parent.stat().st_mode & 0o777) == "0o755"
    master.run("ex10", task("b1", b"run"))
    master.wait_state("b1", TaskState.RUNNING)
    cases = {
        "garbage": (frame(b"\xc1 not msgpack"), "not a msgpack message"),
        "huge frame": (struct.pack(">I", 2**31), "more than"),
        "wrong token": (frame(codec.encode(ExecutorSubscribe(FW, "e1", "0" * 32), 0.0)), "wrong token"),
        "unknown executor": (frame(codec.encode(ExecutorSubscribe(FW, "zz", "0" * 32), 0.0)), "no executor zz"),
        "update first": (frame(codec.encode(ExecutorUpdate(update("b1", TaskState.FINISHED)), 0.0)),
                         "must be executor.SUBSCRIBE"),
        "wrong type": (frame(codec.encode(RunTasks(FW, []), 0.0)), "no executor call"),
    }
    for name, (data, expected) in cases.items():
        events = _client(path, data)
        assert len(events) == 1 and isinstance(events[0], ExecutorError), (name, events)
        assert expected in events[0].message, (name, events[0].message)
    started = time.monotonic()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:  # connects, never subscribes
        silent.connect(str(path))
        events = _frames(silent)
    assert isinstance(events[0], ExecutorError) and "within 5s" in events[0].message
    assert time.monotonic() - started < 8
    assert "b1" not in [u.task_id for u in master.statuses if u.state.terminal]  # the forged update went nowhere
    master.to_executor("ex10", "e1", b"finish b1")  # the real executor still works
    master.wait_state("b1", TaskState.FINISHED)
    master.run("ex10", task("b2"))
    master.wait_state("b2", TaskState.FINISHED)
    assert proc.alive()


def test_updates_are_acknowledged_once_journaled_and_duplicates_published_once(
        procs: ProcessGroup, broker_url: str, master: FakeMaster, work_root: Path) -> None:
    work = work_root / "dedup"
    proc = start_agent(procs, broker_url, work, "ex11", "--executor-reregister-timeout", "0.5")
    master.run("ex11", task("p1", b"run", raw_executor(RAW_NO_RECONNECT="1")))
    running = master.wait_state("p1", TaskState.RUNNING)
    client = Impostor(socket_path(work))  # the executor's token: a newer connection replaces the executor's
    finished = update("p1", TaskState.FINISHED)
    client.send(ExecutorSubscribe(FW, "e1", executor_token(work), [running, finished], ["p1"]))
    client.wait(lambda e: isinstance(e, ExecutorSubscribed), "SUBSCRIBED")
    acks = wait_for(lambda: [(e.task_id, e.uuid) for e in client.poll() if isinstance(e, ExecutorAcknowledged)][1:]
                    and [(e.task_id, e.uuid) for e in client.events if isinstance(e, ExecutorAcknowledged)],
                    5, "two ACKNOWLEDGED")
    assert acks == [("p1", running.uuid), ("p1", finished.uuid)]  # the duplicate too, but published once
    done = master.wait_state("p1", TaskState.FINISHED)
    assert done.uuid == finished.uuid and done.agent_id == "ex11" and done.executor_id == "e1"
    client.send(ExecutorUpdate(update("p1", TaskState.FAILED)))  # after its end: refused, connection kept
    client.send(ExecutorUpdate(update("ghost", TaskState.RUNNING)))
    errors = wait_for(lambda: [e.message for e in client.poll() if isinstance(e, ExecutorError)][1:] and
                      [e.message for e in client.events if isinstance(e, ExecutorError)], 5, "two errors")
    assert len(errors) == 2
    assert "of task p1 refused: task has already ended" in errors[0]
    assert "of task ghost refused: unknown task" in errors[1]
    client.send(ExecutorData(b"still here"))
    master.wait_agent_message(FromExecutor, lambda b: b.data == b"still here")
    assert master.states("p1") == [TaskState.RUNNING, TaskState.FINISHED]
    assert not client.closed
    client.close()  # the executor's connection is gone and it does not come back: it is killed
    proc.wait_output(r"executor=e1 framework=fw1 did not reconnect within 0.5s; killing it")
    wait_for(lambda: not alive(executor_pid(running)), 5, "the executor to be killed")


def test_tasks_unknown_to_the_executor_after_a_restart_fail(procs: ProcessGroup, broker_url: str,
                                                           master: FakeMaster, work_root: Path) -> None:
    work = work_root / "unknown"
    first = start_agent(procs, broker_url, work, "ex12")
    executor = raw_executor(RAW_NO_RECONNECT="1")
    master.send("ex12", RunTasks(FW, [task("n1", b"run", executor), task("n2", b"run", executor),
                                      task("n3", b"run", executor)]))
    for task_id in ("n1", "n2", "n3"):
        master.wait_state(task_id, TaskState.RUNNING)
    first.kill()
    start_agent(procs, broker_url, work, "ex12")
    client = Impostor(socket_path(work))  # speaks for the executor, which stays silent
    ended = update("n2", TaskState.FINISHED)  # its end, never acknowledged by the killed agent
    client.send(ExecutorSubscribe(FW, "e1", executor_token(work), [ended], ["n1"]))
    client.wait(lambda e: isinstance(e, ExecutorSubscribed), "SUBSCRIBED")
    lost = master.wait_state("n3", TaskState.FAILED)
    assert lost.reason == REASON_EXECUTOR_TERMINATED and "unknown to its executor" in lost.message
    assert master.wait_state("n2", TaskState.FINISHED).uuid == ended.uuid
    client.send(ExecutorUpdate(update("n1", TaskState.FINISHED)))
    master.wait_state("n1", TaskState.FINISHED)
    client.close()


def test_a_connection_from_another_uid_is_refused(procs: ProcessGroup, broker_url: str, master: FakeMaster,
                                                  work_root: Path) -> None:
    """SO_PEERCRED: the token alone is not enough, the peer must run as the executor's user."""
    work = work_root / "peercred"
    start_agent(procs, broker_url, work, "ex13")
    master.run("ex13", task("c1", b"run"))
    master.wait_state("c1", TaskState.RUNNING)
    hello = frame(codec.encode(ExecutorSubscribe(FW, "e1", executor_token(work), [], ["c1"]), 0.0)).hex()
    client = ("import socket, sys\n"
              "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(sys.argv[1])\n"
              "s.sendall(bytes.fromhex(sys.argv[2])); s.settimeout(10); out = b''\n"
              "while (d := s.recv(65536)): out += d\n"
              "print(out.hex())\n")
    done = subprocess.run(["/usr/bin/setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                           "/usr/bin/python3", "-c", client, str(socket_path(work)), hello],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    events = [codec.decode(f).body for f in FrameReader().feed(bytes.fromhex(done.stdout.strip()))]
    assert len(events) == 1 and isinstance(events[0], ExecutorError)
    assert "runs as uid 0, this connection is uid" in events[0].message
    master.to_executor("ex13", "e1", b"finish c1")  # the executor's own connection was not touched
    master.wait_state("c1", TaskState.FINISHED)
