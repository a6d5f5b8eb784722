"""The offer cycle end to end: a real master and real agents, frameworks speaking the wire protocol."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from broker_mesos.bus import topology
from broker_mesos.core import codec, protocol
from broker_mesos.core.protocol import TaskState
from broker_mesos.core.resources import Resources
from broker_mesos.testing.client import RawFramework
from broker_mesos.testing.processes import Proc, ProcessGroup
from broker_mesos.testing.wait import wait_for


def start_master(procs: ProcessGroup, url: str, *extra: str) -> Proc:
    master = procs.bmesos("master", "master", "--broker", url, "--allocation-interval", "0.1", *extra)
    master.wait_output(r"master \S+ serving")
    return master


def start_agent(procs: ProcessGroup, url: str, agent_id: str, resources: str, work: Path) -> Proc:
    agent = procs.bmesos(agent_id, "agent", "--broker", url, "--id", agent_id, "--resources", resources,
                         "--work-dir", str(work / agent_id))
    agent.wait_output(rf"agent {agent_id} registered")
    return agent


@pytest.fixture
def frameworks(broker_url: str) -> Iterator[list[RawFramework]]:
    made: list[RawFramework] = []
    yield made
    for fw in made:
        fw.close()


def task(task_id: str, agent_id: str, resources: str, command: str = "sleep 30") -> protocol.TaskInfo:
    return protocol.TaskInfo(task_id, agent_id, Resources.parse(resources), protocol.CommandInfo(command))


def test_reference_flow(broker_url: str, procs: ProcessGroup, tmp_path: Path,
                        frameworks: list[RawFramework]) -> None:
    """Mesos' documented example: 4 CPU / 4 GB; fw1 launches <2,1GB> and <1,2GB>; fw2 gets <1,1GB>."""
    start_master(procs, broker_url)
    monitor = pika.BlockingConnection(pika.URLParameters(broker_url)).channel()
    watch = monitor.queue_declare("", exclusive=True).method.queue
    monitor.exchange_declare(topology.STATUS, "topic", durable=True)
    monitor.queue_bind(watch, topology.STATUS, routing_key="#")
    fw1 = RawFramework(broker_url, "fw1")
    fw2 = RawFramework(broker_url, "fw2")
    frameworks += [fw1, fw2]
    fw1.subscribe()
    fw2.subscribe()
    start_agent(procs, broker_url, "agent1", "cpus:4;mem:4096", tmp_path)

    (offer,) = fw1.offers()
    assert (offer.agent_id, offer.resources) == ("agent1", Resources.of(cpus=4, mem=4096))
    fw1.accept([offer], [task("t1", "agent1", "cpus:2;mem:1024"), task("t2", "agent1", "cpus:1;mem:2048")])
    for task_id in ("t1", "t2"):
        assert fw1.wait_status(task_id, TaskState.RUNNING).agent_id == "agent1"

    (leftover,) = fw2.offers()
    assert (leftover.agent_id, leftover.resources) == ("agent1", Resources.of(cpus=1, mem=1024))

    seen = set()

    def monitor_saw_both() -> bool:
        method, _props, body = monitor.basic_get(watch, auto_ack=True)
        if method is not None:
            for update in codec.decode(body).body.updates:
                seen.add((method.routing_key, update.task_id))
        return {("fw1.agent1.TASK_RUNNING", "t1"), ("fw1.agent1.TASK_RUNNING", "t2")} <= seen

    wait_for(monitor_saw_both, 10, "both RUNNING updates on the status exchange", interval=0.01)
    monitor.connection.close()


def test_finished_tasks_resources_are_offered_again(broker_url: str, procs: ProcessGroup, tmp_path: Path,
                                                     frameworks: list[RawFramework]) -> None:
    start_master(procs, broker_url)
    fw = RawFramework(broker_url, "fw")
    frameworks.append(fw)
    fw.subscribe()
    start_agent(procs, broker_url, "a1", "cpus:2;mem:1024", tmp_path)
    (offer,) = fw.offers()
    fw.accept([offer], [task("quick", "a1", "cpus:2;mem:1024", "true")])
    fw.wait_status("quick", TaskState.FINISHED)
    (again,) = fw.offers()
    assert (again.agent_id, again.resources) == ("a1", Resources.of(cpus=2, mem=1024))


def test_declined_offer_is_refused_for_refuse_seconds_and_goes_to_others(
        broker_url: str, procs: ProcessGroup, tmp_path: Path, frameworks: list[RawFramework]) -> None:
    refuse = 3.0
    start_master(procs, broker_url)
    fw1 = RawFramework(broker_url, "fw1")
    fw2 = RawFramework(broker_url, "fw2")
    frameworks += [fw1, fw2]
    fw1.subscribe()
    start_agent(procs, broker_url, "a1", "cpus:1;mem:512", tmp_path)
    (offer,) = fw1.offers()
    fw2.subscribe()
    declined_at = time.monotonic()
    fw1.decline([offer], refuse)
    (to_fw2,) = fw2.offers(timeout=refuse)
    assert to_fw2.agent_id == "a1"
    assert time.monotonic() - declined_at < refuse  # offered to the other framework meanwhile
    fw2.decline([to_fw2], 600)
    (back,) = fw1.offers(timeout=refuse + 10)
    assert back.agent_id == "a1"
    assert time.monotonic() - declined_at >= refuse


def test_bad_accepts_are_refused_with_an_error_and_nothing_launches(
        broker_url: str, procs: ProcessGroup, tmp_path: Path, frameworks: list[RawFramework]) -> None:
    start_master(procs, broker_url, "--offer-timeout", "2")
    fw1 = RawFramework(broker_url, "fw1")
    fw2 = RawFramework(broker_url, "fw2")
    frameworks += [fw1, fw2]
    fw1.subscribe()
    fw2.subscribe()
    start_agent(procs, broker_url, "a1", "cpus:2;mem:1024", tmp_path)
    start_agent(procs, broker_url, "a2", "cpus:2;mem:1024", tmp_path)
    (mine,) = fw1.offers()
    (theirs,) = fw2.offers()

    def refused(offers: list[protocol.Offer], tasks: list[protocol.TaskInfo], reason: str) -> None:
        call_id = fw1.accept(offers, tasks)
        error = fw1.expect(protocol.Error)
        assert (error.call_type, error.call_id) == ("ACCEPT", call_id)
        assert reason in error.message

    refused([mine], [task("big", mine.agent_id, "cpus:3;mem:100")], "need")
    (mine,) = fw1.offers()  # the refused ACCEPT used the offer up; its resources come back
    refused([theirs], [task("steal", theirs.agent_id, "cpus:1")], "another framework")
    refused([protocol.Offer("no-such-offer", "fw1", "a1")], [task("ghost", "a1", "cpus:1")], "unknown")
    expired = mine
    rescind = fw1.expect(protocol.Rescind, timeout=10, skip=(protocol.Offers,))
    assert expired.offer_id in rescind.offer_ids
    refused([expired], [task("late", expired.agent_id, "cpus:1")], "unknown, expired")
    assert not fw1.statuses and fw1._get(fw1.status_queue) is None  # nothing launched

    (fresh,) = fw1.offers()  # the master keeps serving: a good ACCEPT still works
    fw1.accept([fresh], [task("good", fresh.agent_id, "cpus:1;mem:64", "true")])
    fw1.wait_status("good", TaskState.FINISHED)


@pytest.mark.parametrize(("exchange", "key", "payload", "reason"), [
    (topology.AGENT_REGISTER, topology.KEY_REGISTER, b"not msgpack at all", "not a msgpack"),
    (topology.MASTER, "ACCEPT", codec.encode(protocol.Revive("fw"), 1.0).replace(b"REVIVE", b"REVIVX"),
     "unknown message type"),
    (topology.MASTER, "SUBSCRIBE", codec.encode(protocol.Revive("fw"), 1.0).replace(b"framework_id", b"framework_xx"),
     "unknown fields"),
    (topology.STATUS, "fw.a.TASK_RUNNING", codec.encode(protocol.Revive("fw"), 1.0), "not accepted on master.status"),
    (topology.AGENT_REGISTER, topology.KEY_HEARTBEAT, codec.encode(protocol.Heartbeat("a"), 1.0)
     .replace(b"heartbeat_interval", b"heartbeat_intervax"), "unknown fields"),
])
def test_malformed_messages_are_dead_lettered_and_the_master_keeps_serving(
        broker_url: str, procs: ProcessGroup, frameworks: list[RawFramework],
        exchange: str, key: str, payload: bytes, reason: str) -> None:
    start_master(procs, broker_url)
    fw = RawFramework(broker_url, "fw")
    frameworks.append(fw)
    fw.channel.basic_publish(exchange, key, payload, pika.BasicProperties(
        content_type="application/msgpack", reply_to=fw.events_queue, correlation_id="bad-1"))

    def dead_letter() -> tuple[object, bytes] | None:
        method, props, body = fw.channel.basic_get(topology.DEAD_LETTER_QUEUE, auto_ack=True)
        return (props, body) if method is not None else None

    props, body = wait_for(dead_letter, 15, "the message in the dead-letter queue")
    assert body == payload
    assert reason in props.headers[topology.HEADER_REASON]
    assert props.headers[topology.HEADER_ORIGINAL_EXCHANGE] == exchange
    error = fw.expect(protocol.Error)  # the sender left a reply_to, so it is told why
    assert reason in error.message
    assert fw.subscribe().framework_id == "fw"  # still serving
