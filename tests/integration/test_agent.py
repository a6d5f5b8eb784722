"""A real ``bmesos agent`` process against a real broker; the test plays the master with plain pika."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pika
import pytest

from broker_mesos.bus import topology
from broker_mesos.core import codec
from broker_mesos.core.protocol import (
    CommandInfo,
    Heartbeat,
    KillTasks,
    Register,
    RunTasks,
    TaskInfo,
    TaskState,
    TaskStatus,
)
from broker_mesos.core.resources import Resources
from broker_mesos.testing.processes import Proc, ProcessGroup
from broker_mesos.testing.rabbit import RabbitNode, free_port
from broker_mesos.testing.wait import wait_for

RESOURCES = "cpus:2;mem:512;disk:100;ports:[31000-31010]"
FW = "fw1"


@dataclass
class Received:
    routing_key: str
    update: TaskStatus


class FakeMaster:
    """What the master would see and send, over a blocking pika connection of the test's own."""

    def __init__(self, url: str) -> None:
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.ch = self.conn.channel()
        for ex in topology.EXCHANGES:
            self.ch.exchange_declare(ex.name, ex.type, durable=True)
        self.agents_q = self.ch.queue_declare("", exclusive=True).method.queue
        for key in (topology.KEY_REGISTER, topology.KEY_HEARTBEAT):
            self.ch.queue_bind(self.agents_q, topology.AGENT_REGISTER, routing_key=key)
        self.status_q = self.ch.queue_declare("", exclusive=True).method.queue
        self.ch.queue_bind(self.status_q, topology.STATUS, routing_key="#")
        self.agent_msgs: list[tuple[str, Any]] = []
        self.statuses: list[Received] = []
        self.status_messages: list[str] = []

    def close(self) -> None:
        self.conn.close()

    def poll(self) -> None:
        while True:
            method, _props, body = self.ch.basic_get(self.agents_q, auto_ack=True)
            if method is None:
                break
            self.agent_msgs.append((method.routing_key, codec.decode(body).body))
        while True:
            method, _props, body = self.ch.basic_get(self.status_q, auto_ack=True)
            if method is None:
                break
            self.status_messages.append(method.routing_key)
            for update in codec.decode(body).body.updates:
                self.statuses.append(Received(method.routing_key, update))

    def wait_agent_message(self, cls: type, pred: Any = lambda _b: True, timeout: float = 15.0) -> Any:
        def found() -> Any:
            self.poll()
            return next((b for _k, b in self.agent_msgs if isinstance(b, cls) and pred(b)), None)

        return wait_for(found, timeout, f"a {cls.__name__} message")

    def states(self, task_id: str) -> list[TaskState]:
        self.poll()
        return [r.update.state for r in self.statuses if r.update.task_id == task_id]

    def wait_state(self, task_id: str, state: TaskState, timeout: float = 15.0) -> Received:
        def found() -> Received | None:
            self.poll()
            return next((r for r in self.statuses if r.update.task_id == task_id and r.update.state is state), None)

        return wait_for(found, timeout, f"{task_id} to reach {state.value} (seen: {self.states(task_id)})")

    def send(self, agent_id: str, body: Any) -> None:
        self.send_raw(agent_id, codec.encode(body, 0.0))

    def send_raw(self, agent_id: str, raw: bytes) -> None:
        self.ch.basic_publish(topology.TASKS, agent_id, raw, pika.BasicProperties(delivery_mode=2))


@pytest.fixture
def master(broker_url: str) -> Iterator[FakeMaster]:
    m = FakeMaster(broker_url)
    yield m
    m.close()


def start_agent(procs: ProcessGroup, broker_url: str, work_dir: Path, agent_id: str, *args: str) -> Proc:
    proc = procs.bmesos(f"agent-{agent_id}", "agent", "--broker", broker_url, "--id", agent_id,
                        "--resources", RESOURCES, "--work-dir", str(work_dir), *args)
    proc.wait_output(rf"agent {agent_id} registered with", timeout=20)
    return proc


def shell(task_id: str, value: str) -> TaskInfo:
    return TaskInfo(task_id=task_id, agent_id="x", resources=Resources.of(cpus=0.1), command=CommandInfo(value))


def test_registers_and_runs_command_tasks(procs: ProcessGroup, broker_url: str, master: FakeMaster,
                                          tmp_path: Path) -> None:
    work = tmp_path / "work"
    start_agent(procs, broker_url, work, "a1", "--attributes", "rack:a;zone:1", "--heartbeat-interval", "0.2")

    reg = master.wait_agent_message(Register)
    assert reg.agent_id == "a1"
    assert reg.resources == Resources.parse(RESOURCES)
    assert reg.attributes == {"rack": "a", "zone": "1"}
    assert reg.heartbeat_interval == 0.2
    assert reg.tasks == []

    tasks = [
        shell("t-ok", "true"),
        shell("t-fail", "exit 3"),
        shell("t-echo", 'echo "hello from $BMESOS_TASK_ID on $BMESOS_AGENT_ID"; echo oops >&2'),
        TaskInfo(task_id="t-argv", agent_id="a1", command=CommandInfo(shell=False, arguments=["/bin/echo", "argv"])),
        TaskInfo(task_id="t-missing", agent_id="a1",
                 command=CommandInfo(shell=False, arguments=["/nonexistent/program"])),
        TaskInfo(task_id="t-env", agent_id="a1", command=CommandInfo('test "$GREETING" = hi && pwd',
                                                                     environment={"GREETING": "hi"})),
    ]
    master.send("a1", RunTasks(FW, tasks))

    ok = master.wait_state("t-ok", TaskState.FINISHED)
    assert master.states("t-ok") == [TaskState.STARTING, TaskState.RUNNING, TaskState.FINISHED]
    assert ok.routing_key == "fw1.a1.TASK_FINISHED"
    assert ok.update.exit_code == 0 and ok.update.source == "SOURCE_AGENT" and ok.update.agent_id == "a1"

    failed = master.wait_state("t-fail", TaskState.FAILED).update
    assert failed.exit_code == 3 and failed.message == "exited with 3"

    missing = master.wait_state("t-missing", TaskState.FAILED).update
    assert "No such file" in missing.message
    assert master.states("t-missing") == [TaskState.STARTING, TaskState.FAILED]

    master.wait_state("t-echo", TaskState.FINISHED)
    master.wait_state("t-argv", TaskState.FINISHED)
    master.wait_state("t-env", TaskState.FINISHED)
    sandbox = work / "frameworks" / FW / "tasks"
    assert (sandbox / "t-echo" / "stdout").read_text() == "hello from t-echo on a1\n"
    assert (sandbox / "t-echo" / "stderr").read_text() == "oops\n"
    assert (sandbox / "t-argv" / "stdout").read_text() == "argv\n"
    assert (sandbox / "t-env" / "stdout").read_text().strip() == str(sandbox / "t-env")

    uuids = [r.update.uuid for r in master.statuses]
    assert len(uuids) == len(set(uuids))
    for r in master.statuses:
        assert r.routing_key == topology.status_key(r.update.framework_id, r.update.agent_id, r.update.state)

    master.wait_agent_message(Heartbeat, lambda b: b.agent_id == "a1" and b.heartbeat_interval == 0.2)


def test_kill_task_and_kill_grace(procs: ProcessGroup, broker_url: str, master: FakeMaster, tmp_path: Path) -> None:
    work = tmp_path / "work"
    proc = start_agent(procs, broker_url, work, "a2", "--heartbeat-interval", "0.2", "--kill-grace", "0.5")
    master.send("a2", RunTasks(FW, [shell("t-sleep", "sleep 30"),
                                    shell("t-stubborn", "trap '' TERM; touch trapped; sleep 30")]))
    master.wait_state("t-sleep", TaskState.RUNNING)
    master.wait_state("t-stubborn", TaskState.RUNNING)

    hb = master.wait_agent_message(Heartbeat, lambda b: {t.task_id for t in b.tasks} == {"t-sleep", "t-stubborn"})
    assert {t.state for t in hb.tasks} == {TaskState.RUNNING}
    assert all(t.framework_id == FW for t in hb.tasks)

    master.send("a2", KillTasks(FW, ["t-sleep", "t-unknown"]))
    killed = master.wait_state("t-sleep", TaskState.KILLED, timeout=10).update
    assert killed.message.startswith("killed on request")
    proc.wait_output(r"kill of unknown or finished task=t-unknown")
    assert master.states("t-stubborn") == [TaskState.STARTING, TaskState.RUNNING]

    wait_for(lambda: (work / "frameworks" / FW / "tasks" / "t-stubborn" / "trapped").exists(), 10,
             "t-stubborn to ignore SIGTERM")
    master.send("a2", KillTasks(FW, ["t-stubborn"]))
    stubborn = master.wait_state("t-stubborn", TaskState.KILLED, timeout=10).update
    assert stubborn.exit_code == 128 + signal.SIGKILL
    proc.wait_output(r"task=t-stubborn outlived its kill grace")


def test_noop_executor_batches_and_ignores_redelivery(procs: ProcessGroup, broker_url: str, master: FakeMaster,
                                                      tmp_path: Path) -> None:
    work = tmp_path / "work"
    start_agent(procs, broker_url, work, "a3", "--executor", "noop")
    batch = RunTasks(FW, [shell(f"n{i}", "exit 1") for i in range(200)])
    master.send("a3", batch)

    def finished() -> int:
        master.poll()
        return sum(r.update.state is TaskState.FINISHED for r in master.statuses)

    wait_for(lambda: finished() == 200, 15, "200 noop tasks to finish")
    assert master.status_messages.count("fw1.a3.TASK_FINISHED") == 1  # one STATUS for all 200
    assert master.states("n7") == [TaskState.STARTING, TaskState.RUNNING, TaskState.FINISHED]
    assert not (work / "frameworks").exists()  # noop never touches the disk

    master.send("a3", batch)  # a redelivery: every id is known
    master.send("a3", RunTasks(FW, [shell("marker", "")]))
    master.wait_state("marker", TaskState.FINISHED)
    assert finished() == 201


def test_malformed_messages_are_dead_lettered(procs: ProcessGroup, broker_url: str, master: FakeMaster,
                                              tmp_path: Path) -> None:
    proc = start_agent(procs, broker_url, tmp_path / "work", "a4")
    master.send_raw("a4", b"\xc1garbage")
    master.send("a4", Register(agent_id="a4"))
    bad_field = codec.to_wire(RunTasks(FW, []))
    bad_field["tasks"] = "not a list"
    master.send_raw("a4", msgpack.packb({"v": 1, "type": "RUN_TASKS", "id": "x1", "ts": 0.0, "body": bad_field}))

    reasons: list[str] = []

    def three_dead() -> bool:
        method, props, _body = master.ch.basic_get(topology.DEAD_LETTER_QUEUE, auto_ack=True)
        if method is not None:
            reasons.append(props.headers[topology.HEADER_REASON])
            assert props.headers[topology.HEADER_QUEUE] == "tasks.a4"
        return len(reasons) == 3

    wait_for(three_dead, 15, "three dead letters")
    assert reasons[0].startswith("not a msgpack message")
    assert reasons[1] == "unexpected message type REGISTER on tasks.a4"
    assert "body.tasks must be a list" in reasons[2]
    proc.wait_output(r"dead-lettering a message from tasks.a4: not a msgpack message")

    master.send("a4", RunTasks(FW, [shell("after", "true")]))
    master.wait_state("after", TaskState.FINISHED)


def test_sigterm_kills_tasks_and_exits_zero(procs: ProcessGroup, broker_url: str, master: FakeMaster,
                                            tmp_path: Path) -> None:
    proc = start_agent(procs, broker_url, tmp_path / "work", "a5")
    master.send("a5", RunTasks(FW, [shell("t-long", "sleep 30")]))
    master.wait_state("t-long", TaskState.RUNNING)
    proc.signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert master.wait_state("t-long", TaskState.KILLED).update.exit_code == 128 + signal.SIGTERM
    assert "agent a5 stopped" in proc.output()


def test_restarted_agent_registers_again(procs: ProcessGroup, broker_url: str, master: FakeMaster,
                                         tmp_path: Path) -> None:
    """A second agent process with the same id (a restart) registers again and runs tasks."""
    first = start_agent(procs, broker_url, tmp_path / "work", "a6")
    first.signal(signal.SIGTERM)
    assert first.wait(timeout=15) == 0
    start_agent(procs, broker_url, tmp_path / "work", "a6")
    master.send("a6", RunTasks(FW, [shell("t-again", "true")]))
    master.wait_state("t-again", TaskState.FINISHED)
    registers = [b for _k, b in master.agent_msgs if isinstance(b, Register)]
    assert [r.agent_id for r in registers] == ["a6", "a6"]


@pytest.mark.parametrize(("args", "complaint"), [
    (["--resources", "cpus:lots"], "'--resources'"),
    (["--attributes", "rack"], "'--attributes'"),
    (["--id", "bad id!"], "'--id'"),
])
def test_bad_options_exit_with_one_line(procs: ProcessGroup, broker_url: str, args: list[str],
                                        complaint: str) -> None:
    proc = procs.bmesos("agent-bad", "agent", "--broker", broker_url, *args)
    assert proc.wait(timeout=30) != 0
    out = proc.output()
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and complaint in errors[0], out
    assert "Traceback" not in out


def test_unreachable_broker_exits_with_one_line(procs: ProcessGroup, tmp_path: Path) -> None:
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    proc = procs.bmesos("agent-nobroker", "agent", "--broker", url, "--id", "a7", "--connect-timeout", "1",
                        "--resources", RESOURCES, "--work-dir", str(tmp_path / "work"))
    assert proc.wait(timeout=30) != 0
    out = proc.output()
    assert "Error: cannot connect to the broker" in out
    assert "Traceback" not in out


def test_reregisters_and_reports_across_a_broker_restart(
        procs: ProcessGroup, rabbit_node_factory: Callable[..., RabbitNode], tmp_path: Path) -> None:
    node = rabbit_node_factory(vhosts=1)
    url = node.url("t0")

    def durable_master() -> pika.adapters.blocking_connection.BlockingChannel:
        ch = pika.BlockingConnection(pika.URLParameters(url)).channel()
        for ex in topology.EXCHANGES:
            ch.exchange_declare(ex.name, ex.type, durable=True)
        ch.queue_declare("test.agents", durable=True)
        ch.queue_bind("test.agents", topology.AGENT_REGISTER, routing_key=topology.KEY_REGISTER)
        ch.queue_declare("test.status", durable=True)
        ch.queue_bind("test.status", topology.STATUS, routing_key="#")
        return ch

    def drain(ch: Any, queue: str, into: list[Any]) -> None:
        while True:
            method, _props, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                return
            into.extend(getattr(codec.decode(body).body, "updates", None) or [codec.decode(body).body])

    ch = durable_master()
    proc = start_agent(procs, url, tmp_path / "work", "a8")
    ch.basic_publish(topology.TASKS, "a8", codec.encode(RunTasks(FW, [shell("t-during", "sleep 2")]), 0.0))
    seen: list[Any] = []
    wait_for(lambda: drain(ch, "test.status", seen) or any(u.state is TaskState.RUNNING for u in seen), 15,
             "t-during to run")

    node.stop()  # a clean stop keeps the test's own durable queues and messages; the agent just sees a loss
    node.start()
    ch = durable_master()
    registers: list[Any] = []
    wait_for(lambda: drain(ch, "test.agents", registers) or len(registers) >= 2, 60,
             "the agent to register again after the broker restart")
    assert {r.agent_id for r in registers} == {"a8"}
    wait_for(lambda: drain(ch, "test.status", seen) or any(u.state is TaskState.FINISHED for u in seen), 30,
             "t-during's FINISHED, published after the reconnect")
    assert proc.alive()
