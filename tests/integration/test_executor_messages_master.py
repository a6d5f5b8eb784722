"""Framework messages through a real master: a framework speaking the wire protocol (RawFramework) and a
hand-made agent (raw pika), so what is checked is the master against docs/protocol.md."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from broker_mesos.bus import topology
from broker_mesos.bus.connection import CONTENT_TYPE
from broker_mesos.core import codec, protocol
from broker_mesos.core.protocol import TaskState
from broker_mesos.core.resources import Resources
from broker_mesos.framework import Scheduler, SchedulerDriver, executor_info
from broker_mesos.framework import task as sdk_task
from broker_mesos.testing.client import RawFramework
from broker_mesos.testing.processes import ProcessGroup
from broker_mesos.testing.rabbit import RabbitNode
from broker_mesos.testing.wait import wait_for

AGENT = "a1"
TOTAL = Resources.of(cpus=4, mem=1024)
EXECUTOR = protocol.ExecutorInfo("ex", protocol.CommandInfo("python -m my_executor"), Resources.of(cpus=0.5, mem=64),
                                 name="ex")  # as executor_info() builds it
RUNS_EX = [protocol.AgentExecutor("fw1", "ex", EXECUTOR.resources)]


class HandAgent:
    """An agent made by hand: registers, reports, reads its task queue and relays for an executor."""

    def __init__(self, broker_url: str, agent_id: str) -> None:
        self.agent_id = agent_id
        params = pika.URLParameters(broker_url)
        self.user = params.credentials.username  # every publish carries it as user_id (RabbitMQ checks it)
        self.connection = pika.BlockingConnection(params)
        self.channel = self.connection.channel()
        for ex in topology.EXCHANGES:
            self.channel.exchange_declare(ex.name, ex.type, durable=ex.durable)
        queue = topology.agent_tasks_queue(agent_id)
        self.channel.queue_declare(queue.name, durable=queue.durable, arguments=queue.arguments or None)
        for exchange, key in queue.bindings:
            self.channel.queue_bind(queue.name, exchange, routing_key=key)
        self.queue = queue.name

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()

    def publish(self, exchange: str, key: str, body: Any) -> None:
        self.channel.basic_publish(exchange, key, codec.encode(body, time.time()), pika.BasicProperties(
            content_type=CONTENT_TYPE, user_id=self.user, delivery_mode=2))

    def register(self) -> None:  # a long heartbeat interval: the master never removes it during the test
        self.publish(topology.AGENT_REGISTER, topology.KEY_REGISTER,
                     protocol.Register(self.agent_id, self.agent_id, TOTAL, heartbeat_interval=60.0))

    def heartbeat(self, tasks: list[protocol.AgentTask], executors: list[protocol.AgentExecutor]) -> None:
        self.publish(topology.AGENT_REGISTER, topology.KEY_HEARTBEAT,
                     protocol.Heartbeat(self.agent_id, self.agent_id, TOTAL, tasks=tasks, heartbeat_interval=60.0,
                                        executors=executors))

    def from_executor(self, framework_id: str, executor_id: str, data: bytes) -> None:
        self.publish(topology.AGENT_REGISTER, topology.KEY_MESSAGE,
                     protocol.FromExecutor(self.agent_id, framework_id, executor_id, data))

    def status(self, update: protocol.TaskStatus) -> None:
        self.publish(topology.STATUS, topology.status_key(update.framework_id, update.agent_id, update.state),
                     protocol.Status([update]))

    def expect(self, kind: type, timeout: float = 15.0) -> Any:
        def got() -> Any:
            method, _props, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                return None
            message = codec.decode(body).body
            return message if isinstance(message, kind) else None

        return wait_for(got, timeout, f"a {kind.__name__} on {self.queue}")


@pytest.fixture
def clients(broker_url: str) -> Iterator[list[RawFramework | HandAgent]]:
    made: list[RawFramework | HandAgent] = []
    yield made
    for client in made:
        client.close()


def dead_letter(fw: RawFramework) -> tuple[Any, bytes] | None:
    method, props, body = fw.channel.basic_get(topology.DEAD_LETTER_QUEUE, auto_ack=True)
    return (props, body) if method is not None else None


def test_framework_messages_go_both_ways_only_through_a_booked_executor(
        broker_url: str, procs: ProcessGroup, clients: list[RawFramework | HandAgent]) -> None:
    # offers the test skips while it waits for other events expire soon and are made again
    master = procs.bmesos("master", "master", "--broker", broker_url, "--allocation-interval", "0.1",
                          "--offer-timeout", "2")
    master.wait_output(r"master \S+ serving")
    fw = RawFramework(broker_url, "fw1")
    agent = HandAgent(broker_url, AGENT)
    clients += [fw, agent]
    fw.subscribe()
    agent.register()
    (offer,) = fw.offers()
    task = protocol.TaskInfo("t1", AGENT, Resources.of(cpus=1, mem=128), executor=EXECUTOR, data=b"input")
    fw.accept([offer], [task])
    (launched,) = agent.expect(protocol.RunTasks).tasks
    assert (launched.executor, launched.data) == (EXECUTOR, b"input")
    agent.heartbeat([protocol.AgentTask("fw1", "t1", task.resources, TaskState.STAGING)], RUNS_EX)

    # scheduler -> executor
    fw.call(protocol.Message("fw1", AGENT, "ex", b"ping"))
    assert agent.expect(protocol.ToExecutor) == protocol.ToExecutor("fw1", "ex", b"ping")
    refused = fw.call(protocol.Message("fw1", AGENT, "nobody", b"ping"))
    error = fw.expect(protocol.Error, skip=(protocol.Offers, protocol.Rescind))
    assert (error.call_type, error.call_id) == ("MESSAGE", refused)
    assert "not running on agent a1" in error.message

    # executor -> scheduler: one for an executor not booked there is dead-lettered, the next goes through
    agent.from_executor("fw1", "nobody", b"forged")
    agent.from_executor("fw1", "ex", b"pong")
    message = fw.expect(protocol.ExecutorMessage, skip=(protocol.Offers, protocol.Rescind))
    assert message == protocol.ExecutorMessage(AGENT, "ex", b"pong")
    props, _body = wait_for(lambda: dead_letter(fw), 15, "the forged FROM_EXECUTOR dead-lettered")
    assert "executor nobody of framework fw1 is not running on agent a1" in props.headers[topology.HEADER_REASON]

    # the executor's own updates flow through unchanged; the idle executor keeps its own resources booked
    done = protocol.TaskStatus("t1", "fw1", AGENT, TaskState.FINISHED, "u-done", time.time(), data=b"result",
                               source="SOURCE_EXECUTOR", executor_id="ex")
    agent.status(done)
    assert fw.wait_status("t1", TaskState.FINISHED) == done
    agent.heartbeat([], RUNS_EX)

    def offered_all_but_the_executor() -> bool:
        offers = fw.expect(protocol.Offers, 5, skip=(protocol.Rescind,)).offers
        if any(o.resources == TOTAL - EXECUTOR.resources for o in offers):
            return True
        fw.decline(offers, 0.0)
        return False

    wait_for(offered_all_but_the_executor, 20, "an offer of a1 without the executor's resources")


class MessagingScheduler(Scheduler):
    """Launches one task on the hand agent with EXECUTOR, and records the executor's messages."""

    def __init__(self) -> None:
        self.launched = threading.Event()
        self.messages: list[tuple[str, str, bytes]] = []

    def resource_offers(self, driver: SchedulerDriver, offers: list[protocol.Offer]) -> None:
        if self.launched.is_set():
            driver.decline([o.offer_id for o in offers], 60)
            return
        info = executor_info("ex", "python -m my_executor", cpus=0.5, mem=64)
        driver.launch(offers[0], [sdk_task("t1", offers[0].agent_id, "", cpus=1, mem=128, executor=info,
                                           data=b"input")])
        self.launched.set()

    def framework_message(self, driver: SchedulerDriver, agent_id: str, executor_id: str, data: bytes) -> None:
        self.messages.append((agent_id, executor_id, data))


def test_the_scheduler_sdk_sends_and_receives_framework_messages(
        broker_url: str, procs: ProcessGroup, clients: list[RawFramework | HandAgent]) -> None:
    master = procs.bmesos("master", "master", "--broker", broker_url, "--allocation-interval", "0.1")
    master.wait_output(r"master \S+ serving")
    agent = HandAgent(broker_url, "a2")
    clients.append(agent)
    agent.register()
    scheduler = MessagingScheduler()
    driver = SchedulerDriver(scheduler, broker_url, "messaging", framework_id="fw-sdk")
    driver.start()
    try:
        (launched,) = agent.expect(protocol.RunTasks).tasks
        assert launched.executor == EXECUTOR and launched.command == protocol.CommandInfo()
        assert launched.data == b"input"
        driver.send_framework_message("a2", "ex", b"ping")
        assert agent.expect(protocol.ToExecutor) == protocol.ToExecutor("fw-sdk", "ex", b"ping")
        agent.from_executor("fw-sdk", "ex", b"pong")
        wait_for(lambda: scheduler.messages == [("a2", "ex", b"pong")], 15, "the executor's message in the callback")
    finally:
        driver.stop()
        driver.join(10)


def test_a_from_executor_sent_by_another_agent_principal_is_denied(
        broker_url: str, rabbit_node: RabbitNode, procs: ProcessGroup,
        clients: list[RawFramework | HandAgent]) -> None:
    """Secure mode: only agent.<agent_id> speaks for the executors of <agent_id>."""
    vhost = rabbit_node.fresh_vhost()
    urls = {}
    for user in ("exmaster", "agent.ex1", "agent.ex2", "framework.exfw"):
        password = secrets.token_hex(12)
        rabbit_node.ctl("add_user", user, password)
        rabbit_node.ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        urls[user] = f"amqp://{user}:{password}@127.0.0.1:{rabbit_node.port}/{vhost}"
    master = procs.bmesos("master", "master", "--broker", urls["exmaster"], "--master-principal", "exmaster",
                          "--allocation-interval", "0.1", env={"BMESOS_INSECURE": "0"})
    master.wait_output(r"master \S+ serving")
    fw = RawFramework(urls["framework.exfw"], "exfw")
    agent = HandAgent(urls["agent.ex1"], "ex1")
    impostor = HandAgent(urls["agent.ex2"], "ex2")
    clients += [fw, agent, impostor]
    fw.subscribe()
    agent.register()
    (offer,) = fw.offers()
    fw.accept([offer], [protocol.TaskInfo("t1", "ex1", Resources.of(cpus=1, mem=128), executor=EXECUTOR)])
    agent.expect(protocol.RunTasks)
    impostor.publish(topology.AGENT_REGISTER, topology.KEY_MESSAGE,
                     protocol.FromExecutor("ex1", "exfw", "ex", b"forged"))
    master.wait_output(r"event security\.denied .*user=agent\.ex2 type=FROM_EXECUTOR", 15)
    agent.from_executor("exfw", "ex", b"genuine")
    message = fw.expect(protocol.ExecutorMessage, skip=(protocol.Offers, protocol.Rescind))
    assert message == protocol.ExecutorMessage("ex1", "ex", b"genuine")
