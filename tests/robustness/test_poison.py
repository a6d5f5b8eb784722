"""No message can stop, wedge or mislead the cluster: poison sent to a real master, agent and SDK
frameworks (real processes, a private RabbitMQ node), after which the same processes serve Mesos'
reference flow and the books balance."""

from __future__ import annotations

import collections
import re
from pathlib import Path

import pika
import pytest
from poison import Hand, envelope, float_specials, range_bomb, start_agent, start_master, start_reference

from broker_mesos.bus import topology
from broker_mesos.core import codec, protocol
from broker_mesos.core.resources import Resources
from broker_mesos.testing.processes import Proc, ProcessGroup
from broker_mesos.testing.wait import wait_for

MASTER_INPUTS = (topology.MASTER_CALLS_QUEUE, topology.MASTER_AGENTS_QUEUE, topology.MASTER_STATUS_QUEUE)
TO_FRAMEWORK = {"OFFERS", "RESCIND", "SUBSCRIBED", "UPDATE", "ERROR", "ALLOCATOR", "ROLES", "ACLS", "EVENT",
                "QUERY_RESULT", "EXECUTOR_MESSAGE", "AGENT_ADMIN_RESULT"}
CALLS = {topology.call_type(c) for c in (*protocol.FRAMEWORK_CALLS, *protocol.ADMIN_CALLS, *protocol.LOG_CALLS)}


def connects(proc: Proc) -> int:
    """How many times the process connected: more than once means it lost its connection."""
    return len(re.findall(r": connected to amqp://", proc.output()))


def dead_letters_by_queue(hand: Hand) -> collections.Counter[str]:
    return collections.Counter(props.headers[topology.HEADER_QUEUE] for props, _ in
                               hand.drain(topology.DEAD_LETTER_QUEUE))


def route(type_name: str, agent_id: str, framework_id: str) -> list[tuple[str, str]]:
    """Where a message of ``type_name`` goes in: (exchange, routing key)."""
    if type_name in CALLS:
        return [(topology.MASTER, type_name)]
    if type_name in ("REGISTER", "HEARTBEAT"):
        return [(topology.AGENT_REGISTER, type_name.lower())]
    if type_name == "FROM_EXECUTOR":
        return [(topology.AGENT_REGISTER, topology.KEY_MESSAGE)]
    if type_name == "STATUS":  # reaches master.status and the framework's status queue
        return [(topology.STATUS, f"{framework_id}.{agent_id}.TASK_RUNNING")]
    if type_name in ("RUN_TASKS", "KILL_TASKS", "TO_EXECUTOR", "SHUTDOWN_EXECUTORS", "SEND_LOG"):
        return [(topology.TASKS, agent_id)]
    if type_name.startswith("executor.") or type_name == "LOG_DATA":
        # never on the broker (the agent's local socket; an agent's answer to a CLI): an agent must refuse them
        return [(topology.TASKS, agent_id)]
    if type_name in ("CONTROL", "CONTROL_RESULT"):  # stray built-in framework commands: a framework refuses them
        return [(topology.OFFERS, framework_id)]
    assert type_name in TO_FRAMEWORK, type_name
    return [(topology.OFFERS, framework_id)]


def test_poison_leaves_every_process_serving_the_reference_flow(broker_url: str, procs: ProcessGroup,
                                                                tmp_path: Path) -> None:
    """Float specials in every numeric field of every message type, range bombs, ghost frameworks,
    a phantom task and replies aimed at other queues, at the master, an agent and two SDK frameworks;
    then the same processes (no reconnect) run the reference flow and the books balance."""
    master = start_master(procs, broker_url)
    agent = start_agent(procs, broker_url, tmp_path)
    hand = Hand(broker_url)
    hand.declare(*topology.framework_queues("fw1"), *topology.framework_queues("fw2"),
                 *topology.framework_queues("ghost-1"), *topology.framework_queues("ghost-2"),
                 topology.Queue("victim"))
    sent: collections.Counter[str] = collections.Counter()

    def send(exchange: str, key: str, raw: bytes, queues: tuple[str, ...], **props: str) -> None:
        hand.publish(exchange, key, raw, **props)
        sent.update(queues)

    # ghosts: subscribed, never consuming their offers queue (they used to win every tie)
    for ghost in ("ghost-1", "ghost-2"):
        hand.publish(topology.MASTER, "SUBSCRIBE", codec.encode(protocol.Subscribe(ghost, ghost), 1.0),
                     reply_to=topology.offers_queue_name(ghost))
    # float specials, each to the process that reads that type; bad calls ask for replies elsewhere
    for i, (type_name, _path, raw) in enumerate(float_specials("a1", "fw1")):
        for exchange, key in route(type_name, "a1", "fw1"):
            if exchange == topology.MASTER:
                send(exchange, key, raw, (topology.MASTER_CALLS_QUEUE,), reply_to=("victim", "tasks.a1")[i % 2])
            elif exchange == topology.AGENT_REGISTER:
                send(exchange, key, raw, (topology.MASTER_AGENTS_QUEUE,))
            elif exchange == topology.STATUS:
                send(exchange, key, raw, (topology.MASTER_STATUS_QUEUE, "status.fw1"))
            elif exchange == topology.TASKS:
                send(exchange, key, raw, ("tasks.a1",))
            else:
                send(exchange, key, raw, ("offers.fw1",))
    # range bombs: 500,000 one-port ranges in a REGISTER (then a DECLINE with a filter), a RUN_TASKS, an OFFERS
    bomb = range_bomb()
    send(topology.AGENT_REGISTER, "register", envelope("REGISTER", {"agent_id": "bomb", "resources": bomb}),
         (topology.MASTER_AGENTS_QUEUE,))
    send(topology.MASTER, "DECLINE", envelope("DECLINE", {"framework_id": "fw1", "offer_ids": ["m1-O1"],
                                                          "refuse_seconds": 60.0}), ())
    task = {"task_id": "t-bomb", "agent_id": "a1", "resources": bomb, "command": {"value": "true"}}
    send(topology.TASKS, "a1", envelope("RUN_TASKS", {"framework_id": "fw1", "tasks": [task]}), ("tasks.a1",))
    offer = {"offer_id": "o-bomb", "framework_id": "fw1", "agent_id": "a1", "resources": bomb}
    send(topology.OFFERS, "fw1", envelope("OFFERS", {"offers": [offer]}), ("offers.fw1",))
    # a phantom: a heartbeat naming a task no master launched (it used to be adopted, its cpus never freed)
    phantom = protocol.Heartbeat("a1", "h", Resources.parse("cpus:4;mem:4096"),
                                 tasks=[protocol.AgentTask("phantom", "fw-x", Resources.of(cpus=3))])
    hand.publish(topology.AGENT_REGISTER, "heartbeat", codec.encode(phantom, 1.0))

    wait_for(lambda: all(hand.depth(q) == 0 for q in (*MASTER_INPUTS, "tasks.a1")), 30,
             "the master's and the agent's inputs to drain")
    agent.wait_output(r"kill of unknown or finished task=phantom framework=fw-x ignored", 15)

    # the SDK frameworks start now and first meet the poison waiting in their queues
    fw1 = start_reference(procs, broker_url, "fw1")
    fw1.wait_output(r"offer \S+ agent=a1 cpus=4 mem=4096", 30)  # all of a1: the phantom holds nothing
    fw1.wait_output(r"status task-1 TASK_RUNNING", 30)
    fw1.wait_output(r"status task-2 TASK_RUNNING", 30)
    fw2 = start_reference(procs, broker_url, "fw2", "--observe")
    fw2.wait_output(r"offer \S+ agent=a1 cpus=1 mem=1024", 30)  # the reference flow's leftover
    wait_for(lambda: all(hand.depth(q) == 0 for q in ("offers.fw1", "status.fw1")), 15, "fw1's queues to drain")

    dead = dead_letters_by_queue(hand)
    for queue, count in sent.items():
        assert dead[queue] >= count, f"{queue}: {count} poison message(s) sent, {dead[queue]} dead-lettered"
    assert hand.depth("victim") == 0, "the master replied to a queue the call named but does not own"
    assert "(key tasks.a1)" not in agent.output(), "an ERROR reached the agent's task queue"
    for ghost in ("ghost-1", "ghost-2"):
        kinds = [type(codec.decode(body).body) for _props, body in hand.drain(topology.offers_queue_name(ghost))]
        assert protocol.Offers not in kinds, f"{ghost} never consumed its offers queue yet was offered"
    for proc in (master, agent, fw1, fw2):
        assert proc.alive() and connects(proc) == 1, f"{proc.name} died or reconnected:\n{proc.output()[-3000:]}"
    hand.close()


def test_a_message_that_makes_a_handler_raise_is_dead_lettered_not_redelivered(broker_url: str) -> None:
    """The bus' own fence: a handler that raises (a bug) dead-letters the message with the reason,
    and the consumer keeps serving on the same connection."""
    import threading

    from broker_mesos.bus.connection import Bus, Delivery

    bus = Bus(broker_url, "fence")
    queue = topology.Queue("fence.in", ((topology.EVENTS, "fence.#"),), arguments=dict(topology.QUORUM))
    handled: list[bytes] = []

    def handler(delivery: Delivery) -> None:
        if delivery.body == b"boom":
            raise RuntimeError("a bug in a handler")
        handled.append(delivery.body)
        bus.ack(delivery)

    bus.consume(queue, handler)
    thread = threading.Thread(target=bus.run, daemon=True)
    thread.start()
    hand = Hand(broker_url)
    try:
        wait_for(lambda: bus.ready, 15, "the bus to connect")
        for body in (b"boom", b"ok-1", b"boom", b"ok-2"):
            hand.publish(topology.EVENTS, "fence.x", body)
        wait_for(lambda: handled == [b"ok-1", b"ok-2"], 15, "the good messages handled")
        dead = wait_for(lambda: [h for h in [hand.get(topology.DEAD_LETTER_QUEUE)] if h], 15, "a dead letter")
        assert "internal error: RuntimeError: a bug in a handler" in dead[0][0].headers[topology.HEADER_REASON]
        wait_for(lambda: hand.get(topology.DEAD_LETTER_QUEUE), 15, "the second dead letter")
        assert hand.depth("fence.in") == 0 and bus.generation == 1  # no reconnect, nothing redelivered
    finally:
        bus.stop_threadsafe()
        thread.join(10)
        hand.close()


@pytest.mark.parametrize("content_type", [None, "application/json"])
def test_a_message_with_the_wrong_content_type_is_refused(broker_url: str, procs: ProcessGroup,
                                                          content_type: str | None) -> None:
    start_master(procs, broker_url)
    hand = Hand(broker_url)
    hand.declare(*topology.framework_queues("fw1"))
    raw = codec.encode(protocol.Subscribe("fw1", "fw1"), 1.0)
    hand.channel.basic_publish(topology.MASTER, "SUBSCRIBE", raw, pika.BasicProperties(
        content_type=content_type, reply_to="offers.fw1", correlation_id="c1"))
    props, _body = wait_for(lambda: hand.get(topology.DEAD_LETTER_QUEUE), 15, "the dead letter")
    assert "content_type" in props.headers[topology.HEADER_REASON]
    error = codec.decode(wait_for(lambda: hand.get("offers.fw1"), 15, "the ERROR")[1]).body
    assert isinstance(error, protocol.Error) and "application/msgpack" in error.message
    hand.close()


@pytest.mark.parametrize(("key", "body"), [
    ("SUPPRESS", protocol.Revive("fw1")),                            # a call whose key is another call's type
    ("heartbeat", protocol.Register("a9", "h", Resources.of(cpus=1))),  # a REGISTER sent as a heartbeat
])
def test_a_routing_key_that_disagrees_with_the_envelope_type_is_refused(broker_url: str, procs: ProcessGroup,
                                                                        key: str, body: object) -> None:
    start_master(procs, broker_url)
    hand = Hand(broker_url)
    exchange = topology.MASTER if key.isupper() else topology.AGENT_REGISTER
    hand.publish(exchange, key, codec.encode(body, 1.0))
    props, _body = wait_for(lambda: hand.get(topology.DEAD_LETTER_QUEUE), 15, "the dead letter")
    assert f"sent with routing key {key!r}" in props.headers[topology.HEADER_REASON]
    hand.close()


def test_a_status_update_routed_under_another_key_is_refused(broker_url: str, procs: ProcessGroup) -> None:
    """Monitors and frameworks select updates by routing key: the key must say whose update it is."""
    start_master(procs, broker_url)
    hand = Hand(broker_url)
    update = protocol.TaskStatus("t1", "fw1", "a1", protocol.TaskState.FINISHED, "u1", 1.0)
    hand.publish(topology.STATUS, "fw2.a1.TASK_RUNNING", codec.encode(protocol.Status([update]), 1.0))
    props, _body = wait_for(lambda: hand.get(topology.DEAD_LETTER_QUEUE), 15, "the dead letter")
    assert "fw1.a1.TASK_FINISHED" in props.headers[topology.HEADER_REASON]
    hand.close()


def test_an_agent_beyond_the_maximum_is_refused_and_told_on_events(broker_url: str, procs: ProcessGroup,
                                                                   tmp_path: Path) -> None:
    master = start_master(procs, broker_url, "--max-agent-resources", "cpus:64")
    agent = procs.bmesos("big", "agent", "--broker", broker_url, "--id", "big", "--resources", "cpus:65;mem:64",
                         "--work-dir", str(tmp_path / "big"))
    master.wait_output(r"dead-lettered a message from master\.agents \(key register\): agent big reports "
                       r"cpus:65;mem:64, more than the master admits", 30)
    master.wait_output(r"event agent\.refused agent_id=big", 10)
    agent.wait_output(r"agent big: the master refused REGISTER: agent big reports cpus:65;mem:64", 10)
    assert "event agent.added" not in master.output()
    start_agent(procs, broker_url, tmp_path, "small", "cpus:64;mem:64")
    master.wait_output(r"event agent\.added agent_id=small", 15)
    assert agent.alive() and master.alive()


def test_dead_letters_are_bounded_and_drops_are_counted(broker_url: str, procs: ProcessGroup) -> None:
    """`dead-letters` keeps the newest DEAD_LETTER_MAX_LENGTH; the active master counts what it drops."""
    master = start_master(procs, broker_url)
    hand = Hand(broker_url)
    extra = 50
    for i in range(topology.DEAD_LETTER_MAX_LENGTH + extra):
        hand.channel.basic_publish(topology.DEAD_LETTER, "", f"junk-{i}".encode())
    wait_for(lambda: hand.depth(topology.DEAD_LETTER_QUEUE) == topology.DEAD_LETTER_MAX_LENGTH, 30,
             "dead-letters to hold its maximum")
    _props, body = hand.get(topology.DEAD_LETTER_QUEUE)
    assert body == f"junk-{extra}".encode()  # the oldest were dropped first
    master.wait_output(rf"dead-letters dropped {extra} message\(s\) since this master started "
                       r"\(by reason: \{'maxlen': " + str(extra) + r"\}\)", 30)
    assert hand.depth(topology.DEAD_LETTER_DROPPED_QUEUE) == 0
    hand.close()


def test_rejections_are_logged_at_a_bounded_rate_with_counts(broker_url: str, procs: ProcessGroup) -> None:
    master = start_master(procs, broker_url)
    hand = Hand(broker_url)
    for _ in range(500):
        hand.publish(topology.MASTER, "SUBSCRIBE", b"\xc1 not msgpack")
    wait_for(lambda: hand.depth(topology.MASTER_CALLS_QUEUE) == 0 and
             hand.depth(topology.DEAD_LETTER_QUEUE) == 500, 30, "every bad call dead-lettered")

    def accounted() -> tuple[int, int] | None:
        out = master.output()
        lines = len(re.findall(r"dead-lettered a message from master\.calls", out))
        counted = sum(int(n) for n in re.findall(r"dead-lettered (\d+) more message\(s\) from master\.calls", out))
        counted += sum(int(n) for n in re.findall(r"\((\d+) more dead-lettered from this queue meanwhile\)", out))
        return (lines, counted) if lines + counted == 500 else None

    lines, counted = wait_for(accounted, 30, "every rejection logged or counted in a summary")
    assert lines <= 15 and counted >= 485
    hand.close()


@pytest.mark.parametrize(("reply_to", "framework_id", "allowed"), [
    ("amq.gen-Xy12", "fw1", True), ("amq.rabbitmq.reply-to.g1", "", True),  # server-named: the caller's own
    ("offers.fw1", "fw1", True), ("offers.fw2", "fw1", False),               # a framework: its own queue only
    ("tasks.a1", "fw1", False), ("master.calls", "fw1", False),
    ("offers.fw1", "", False), ("victim", "", False),                        # an operator: server-named only
    ("offers.fw1", None, True), ("tasks.a1", None, False), ("offers.a.b", None, False),  # undecodable
])
def test_replies_go_only_to_the_callers_own_queue(reply_to: str, framework_id: str | None, allowed: bool) -> None:
    from broker_mesos.master.process import reply_allowed

    assert reply_allowed(reply_to, framework_id) is allowed
