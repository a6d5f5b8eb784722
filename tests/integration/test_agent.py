"""A real ``bmesos agent`` process against a real broker; the test plays the master with plain pika."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pika
import pytest

from broker_mesos.agent.checkpoint import kill_checkpointed_tasks
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
from broker_mesos.testing.fake_master import FakeMaster
from broker_mesos.testing.processes import Proc, ProcessGroup
from broker_mesos.testing.rabbit import RabbitNode, free_port
from broker_mesos.testing.wait import wait_for

MSGPACK = pika.BasicProperties(content_type="application/msgpack", delivery_mode=2)

RESOURCES = "cpus:2;mem:512;disk:100;ports:[31000-31010]"
FW = "fw1"


def start_agent(procs: ProcessGroup, broker_url: str, work_dir: Path, agent_id: str, *args: str,
                kill_on_stop: bool = True) -> Proc:
    """An agent that kills its tasks when the test's teardown stops it (unless ``kill_on_stop=False``:
    then the test must clean up with ``kill_checkpointed_tasks``)."""
    extra = ("--kill-on-stop",) if kill_on_stop else ()
    proc = procs.bmesos(f"agent-{agent_id}-{len(procs.procs)}", "agent", "--broker", broker_url, "--id", agent_id,
                        "--resources", RESOURCES, "--work-dir", str(work_dir), *extra, *args)
    proc.wait_output(rf"agent {agent_id} registered with", timeout=20)
    return proc


def shell(task_id: str, value: str, agent_id: str = "x") -> TaskInfo:
    return TaskInfo(task_id=task_id, agent_id=agent_id, resources=Resources.of(cpus=0.1), command=CommandInfo(value))


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
    assert master.routing_key(ok) == "fw1.a1.TASK_FINISHED"
    assert ok.exit_code == 0 and ok.source == "SOURCE_AGENT" and ok.agent_id == "a1"

    failed = master.wait_state("t-fail", TaskState.FAILED)
    assert failed.exit_code == 3 and failed.message == "exited with 3"

    missing = master.wait_state("t-missing", TaskState.FAILED)
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

    uuids = [u.uuid for u in master.statuses]
    assert len(uuids) == len(set(uuids))
    for u in master.statuses:
        assert master.routing_key(u) == topology.status_key(u.framework_id, u.agent_id, u.state)

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
    killed = master.wait_state("t-sleep", TaskState.KILLED, timeout=10)
    assert killed.message.startswith("killed on request")
    proc.wait_output(r"kill of unknown or finished task=t-unknown")
    assert master.states("t-stubborn") == [TaskState.STARTING, TaskState.RUNNING]

    wait_for(lambda: (work / "frameworks" / FW / "tasks" / "t-stubborn" / "trapped").exists(), 10,
             "t-stubborn to ignore SIGTERM")
    master.send("a2", KillTasks(FW, ["t-stubborn"]))
    stubborn = master.wait_state("t-stubborn", TaskState.KILLED, timeout=10)
    assert stubborn.exit_code == 128 + signal.SIGKILL
    proc.wait_output(r"task=t-stubborn framework=fw1 outlived its kill grace")


def test_noop_executor_batches_and_ignores_redelivery(procs: ProcessGroup, broker_url: str, master: FakeMaster,
                                                      tmp_path: Path) -> None:
    work = tmp_path / "work"
    start_agent(procs, broker_url, work, "a3", "--executor", "noop")
    batch = RunTasks(FW, [shell(f"n{i}", "exit 1") for i in range(200)])
    master.send("a3", batch)

    def finished() -> int:
        master.poll()
        return sum(u.state is TaskState.FINISHED for u in master.statuses)

    wait_for(lambda: finished() == 200, 15, "200 noop tasks to finish")
    assert master.status_keys.count("fw1.a3.TASK_FINISHED") == 1  # one STATUS for all 200
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
    proc.wait_output(r"dead-lettered a message from tasks.a4 \(key a4\): not a msgpack message")

    master.send("a4", RunTasks(FW, [shell("after", "true")]))
    master.wait_state("after", TaskState.FINISHED)


def test_sigterm_with_kill_on_stop_kills_tasks_and_exits_zero(procs: ProcessGroup, broker_url: str,
                                                              master: FakeMaster, tmp_path: Path) -> None:
    proc = start_agent(procs, broker_url, tmp_path / "work", "a5", kill_on_stop=True)
    master.send("a5", RunTasks(FW, [shell("t-long", "sleep 30")]))
    master.wait_state("t-long", TaskState.RUNNING)
    proc.signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert master.wait_state("t-long", TaskState.KILLED).exit_code == 128 + signal.SIGTERM
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
    ch.basic_publish(topology.TASKS, "a8", codec.encode(RunTasks(FW, [shell("t-during", "sleep 2", "a8")]), 0.0),
                     MSGPACK)
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


def test_same_task_id_in_two_frameworks(procs: ProcessGroup, broker_url: str, master: FakeMaster,
                                        tmp_path: Path) -> None:
    """Task ids are unique per framework only: two ``bmesos run``s both launch ``run-0``."""
    work = tmp_path / "work"
    start_agent(procs, broker_url, work, "a9", "--heartbeat-interval", "0.2")
    master.send("a9", RunTasks("fw-a", [shell("run-0", "echo $BMESOS_FRAMEWORK_ID"), shell("svc", "sleep 30")]))
    master.send("a9", RunTasks("fw-b", [shell("run-0", "echo $BMESOS_FRAMEWORK_ID; exit 4"),
                                        shell("svc", "sleep 30")]))

    def final(fw: str, task_id: str) -> TaskStatus:
        def found() -> TaskStatus | None:
            master.poll()
            return next((u for u in master.statuses if u.framework_id == fw
                         and u.task_id == task_id and u.state.terminal), None)

        return wait_for(found, 15, f"{fw}/{task_id} to end")

    assert final("fw-a", "run-0").state is TaskState.FINISHED
    b = final("fw-b", "run-0")
    assert (b.state, b.exit_code) == (TaskState.FAILED, 4)
    for fw in ("fw-a", "fw-b"):
        assert (work / "frameworks" / fw / "tasks" / "run-0" / "stdout").read_text() == f"{fw}\n"

    hb = master.wait_agent_message(Heartbeat, lambda b: len(b.tasks) == 2)
    assert sorted((t.framework_id, t.task_id) for t in hb.tasks) == [("fw-a", "svc"), ("fw-b", "svc")]
    master.send("a9", KillTasks("fw-b", ["svc"]))
    assert final("fw-b", "svc").state is TaskState.KILLED
    hb = master.wait_agent_message(Heartbeat, lambda b: len(b.tasks) == 1)
    assert [(t.framework_id, t.task_id) for t in hb.tasks] == [("fw-a", "svc")]


def until_go(code: int) -> str:
    """A task that runs until the file ``go`` appears in its sandbox, then exits with ``code``."""
    return f"while [ ! -e go ]; do sleep 0.05; done; exit {code}"


def test_stopped_agent_leaves_tasks_running_and_its_restart_takes_them_back(
        procs: ProcessGroup, broker_url: str, master: FakeMaster, tmp_path: Path) -> None:
    work = tmp_path / "work"
    sandbox = work / "frameworks" / FW / "tasks"
    try:
        first = start_agent(procs, broker_url, work, "a10", "--heartbeat-interval", "0.2", kill_on_stop=False)
        master.send("a10", RunTasks(FW, [shell("t-long", until_go(7)), shell("t-gone", until_go(5)),
                                         shell("t-killed", "sleep 300")]))
        for task_id in ("t-long", "t-gone", "t-killed"):
            master.wait_state(task_id, TaskState.RUNNING)
        first.signal(signal.SIGTERM)
        assert first.wait(timeout=15) == 0
        first.wait_output(r"agent a10 stopping; leaving 3 task\(s\) running")

        # while it is down: one task ends on its own, another dies with its supervisor (SIGKILL to the group)
        (sandbox / "t-gone" / "go").touch()
        meta = work / "meta" / "frameworks" / FW / "tasks"
        wait_for(lambda: (meta / "t-gone" / "exit_status").exists(), 10, "t-gone's supervisor to record its exit")
        os.killpg(int((meta / "t-killed" / "pid").read_text().split()[0]), signal.SIGKILL)
        assert master.states("t-gone") == [TaskState.STARTING, TaskState.RUNNING]

        second = start_agent(procs, broker_url, work, "a10", "--heartbeat-interval", "0.2", kill_on_stop=False)
        second.wait_output(r"1 task\(s\) re-attached, 2 ended while it was down")
        master.wait_agent_message(Register, lambda b: len(b.tasks) == 1)
        registers = [b for _k, b in master.agent_msgs if isinstance(b, Register)]
        assert [sorted(t.task_id for t in r.tasks) for r in registers] == [[], ["t-long"]]
        assert registers[1].tasks[0].state is TaskState.RUNNING
        gone = master.wait_state("t-gone", TaskState.FAILED)
        assert (gone.exit_code, gone.message) == (5, "exited with 5")
        killed = master.wait_state("t-killed", TaskState.FAILED)
        assert killed.exit_code is None and killed.reason == "REASON_EXECUTOR_TERMINATED"

        master.send("a10", RunTasks(FW, [shell("t-long", "true"), shell("t-gone", "true")]))  # redeliveries
        second.wait_output(r"task=t-gone framework=fw1 already known; ignored")
        (sandbox / "t-long" / "go").touch()
        long_ = master.wait_state("t-long", TaskState.FAILED)
        assert long_.exit_code == 7
        for task_id in ("t-long", "t-gone", "t-killed"):
            states = master.states(task_id)
            assert states[:2] == [TaskState.STARTING, TaskState.RUNNING] and len(states) == 3, states
        uuids = [u.uuid for u in master.statuses]
        assert len(uuids) == len(set(uuids))
    finally:
        kill_checkpointed_tasks(work)


def test_updates_journaled_while_the_broker_is_down_survive_an_agent_crash(
        procs: ProcessGroup, rabbit_node_factory: Callable[..., RabbitNode], tmp_path: Path) -> None:
    """A FINISHED the broker never confirmed (it was down) and whose agent was then SIGKILLed is
    published by the restarted agent."""
    node = rabbit_node_factory(vhosts=1)
    url = node.url("t0")
    work = tmp_path / "work"

    def test_queue() -> Any:
        ch = pika.BlockingConnection(pika.URLParameters(url)).channel()
        for ex in topology.EXCHANGES:
            ch.exchange_declare(ex.name, ex.type, durable=True)
        ch.queue_declare("test.status", durable=True, arguments=dict(topology.QUORUM))
        ch.queue_bind("test.status", topology.STATUS, routing_key="#")
        return ch

    def drain(ch: Any, into: list[TaskStatus]) -> list[TaskStatus]:
        while True:
            method, _props, body = ch.basic_get("test.status", auto_ack=True)
            if method is None:
                return into
            into.extend(codec.decode(body).body.updates)

    ch = test_queue()
    seen: list[TaskStatus] = []
    try:
        first = start_agent(procs, url, work, "a11", kill_on_stop=False)
        ch.basic_publish(topology.TASKS, "a11", codec.encode(RunTasks(FW, [shell("t-j", until_go(0), "a11")]), 0.0),
                         MSGPACK)
        wait_for(lambda: any(u.state is TaskState.RUNNING for u in drain(ch, seen)), 15, "t-j to run")

        node.stop()
        (work / "frameworks" / FW / "tasks" / "t-j" / "go").touch()
        first.wait_output(r"agent a11: task=t-j framework=fw1 TASK_FINISHED|connection lost", timeout=15)
        wait_for(lambda: any((work / "meta" / "frameworks" / FW / "tasks" / "t-j").glob("done")), 15,
                 "t-j's FINISHED to be journaled")
        assert list((work / "meta" / "status").glob("*.pending"))
        first.kill()

        node.start()
        ch = test_queue()
        second = start_agent(procs, url, work, "a11", kill_on_stop=False)
        second.wait_output(r"re-publishing 1 unconfirmed status update\(s\)")
        wait_for(lambda: any(u.state is TaskState.FINISHED for u in drain(ch, seen)), 30,
                 "t-j's FINISHED, re-published by the restarted agent")
        finished = [u for u in seen if u.state is TaskState.FINISHED]
        assert len(finished) == 1 and finished[0].task_id == "t-j" and finished[0].exit_code == 0
        wait_for(lambda: not list((work / "meta" / "status").glob("*.pending")), 15, "the journal to empty")
    finally:
        kill_checkpointed_tasks(work)


def test_a_quiet_kill_ends_the_task_with_no_status_update(procs: ProcessGroup, broker_url: str,
                                                          master: FakeMaster, tmp_path: Path) -> None:
    """The master already published the task's end (TASK_LOST): the agent kills it and says nothing
    on `status`; the task just leaves its heartbeats."""
    start_agent(procs, broker_url, tmp_path / "work", "a12", "--heartbeat-interval", "0.2")
    master.send("a12", RunTasks(FW, [shell("quiet", "sleep 30"), shell("barrier", "sleep 30")]))
    master.wait_state("quiet", TaskState.RUNNING)
    master.wait_state("barrier", TaskState.RUNNING)
    master.send("a12", KillTasks(FW, ["quiet"], quiet=True))
    master.wait_agent_message(Heartbeat, lambda b: {t.task_id for t in b.tasks} == {"barrier"})
    master.send("a12", KillTasks(FW, ["barrier"]))  # its KILLED comes after anything the quiet kill caused
    master.wait_state("barrier", TaskState.KILLED)
    assert master.states("quiet") == [TaskState.STARTING, TaskState.RUNNING]
