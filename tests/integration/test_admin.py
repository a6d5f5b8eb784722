"""``bmesos admin`` against a real master: switch the allocator policy and set roles while it runs."""

from __future__ import annotations

import json
from pathlib import Path

import pika

from broker_mesos.bus import topology
from broker_mesos.core import codec, protocol
from broker_mesos.testing.client import RawFramework
from broker_mesos.testing.processes import Proc, ProcessGroup
from broker_mesos.testing.wait import wait_for


def admin(procs: ProcessGroup, url: str, name: str, *args: str, expect: int = 0) -> str:
    proc = procs.bmesos(name, "admin", *args, "--broker", url, "--timeout", "30")
    code = proc.wait(60)
    assert code == expect, proc.output()
    return proc.output()


def start(procs: ProcessGroup, url: str, tmp_path: Path) -> Proc:
    master = procs.bmesos("master", "master", "--broker", url, "--allocation-interval", "0.1")
    master.wait_output(r"master \S+ serving")
    agent = procs.bmesos("agent1", "agent", "--broker", url, "--id", "agent1", "--resources",
                         "cpus:4;mem:4096", "--work-dir", str(tmp_path / "agent1"))
    agent.wait_output(r"agent agent1 registered")
    return master


def test_switch_policy_while_offers_flow(broker_url: str, procs: ProcessGroup, tmp_path: Path) -> None:
    monitor = pika.BlockingConnection(pika.URLParameters(broker_url))
    channel = monitor.channel()
    channel.exchange_declare(topology.EVENTS, "topic", durable=True)
    events = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(events, topology.EVENTS, routing_key="allocator.#")
    start(procs, broker_url, tmp_path)
    fw = RawFramework(broker_url, "fw1", role="web")
    try:
        fw.subscribe()
        (offer,) = fw.offers()
        assert "policy drf (available: binpack, drf, fair, priority)" in admin(procs, broker_url, "show1",
                                                                               "allocator", "show")
        out = admin(procs, broker_url, "set", "allocator", "set", "priority", "--param", "priorities=web:5,batch:1")
        assert out.strip().splitlines()[-1] == \
            "policy priority priorities=web:5,batch:1 (available: binpack, drf, fair, priority)"

        def changed() -> protocol.ClusterEvent | None:
            method, _props, body = channel.basic_get(events, auto_ack=True)
            return codec.decode(body).body if method else None

        event = wait_for(changed, 20, "an allocator.changed event")
        assert event.kind == "allocator.changed"
        assert event.detail["policy"] == "priority" and event.detail["previous"] == "drf"
        shown = json.loads(admin(procs, broker_url, "show2", "allocator", "show", "--json").strip().splitlines()[-1])
        assert shown["policy"] == "priority" and shown["params"] == {"priorities": "web:5,batch:1"}
        # the offer made under drf is still valid; declined, its resources are offered again under priority
        fw.decline([offer], refuse_seconds=0)
        (again,) = fw.offers()
        assert again.agent_id == "agent1" and again.offer_id != offer.offer_id
        assert again.resources == offer.resources
    finally:
        fw.close()
        monitor.close()


def test_bad_policy_and_roles(broker_url: str, procs: ProcessGroup, tmp_path: Path) -> None:
    start(procs, broker_url, tmp_path)
    out = admin(procs, broker_url, "bad", "allocator", "set", "lottery", expect=1)
    (line,) = [li for li in out.splitlines() if li.strip()]
    assert line.startswith("Error: the master refused SET_ALLOCATOR: unknown allocator policy 'lottery'")
    out = admin(procs, broker_url, "badparam", "allocator", "set", "fair", "--param", "colour=red", expect=1)
    assert "fair has no parameter 'colour'" in out and len(out.strip().splitlines()) == 1
    out = admin(procs, broker_url, "role", "role", "set", "web", "--weight", "2", "--guarantee", "cpus:1;mem:128",
                "--limit", "cpus:3")
    assert out.strip() == "web weight=2 guarantee=cpus:1;mem:128 limit=cpus:3 allocated=(none) frameworks=-"
    out = admin(procs, broker_url, "role2", "role", "set", "web", "--limit", "cpus:2")
    assert "guarantee=cpus:1;mem:128 limit=cpus:2" in out  # what was left out is kept
    fw = RawFramework(broker_url, "fw1", role="web")
    try:
        fw.subscribe()
        (offer,) = fw.offers()
        assert offer.resources.scalar("cpus") == 2  # chopped to the role's limit
        shown = admin(procs, broker_url, "roles", "role", "show")
        assert "web weight=2 guarantee=cpus:1;mem:128 limit=cpus:2 allocated=cpus:2;mem:4096 frameworks=fw1" in shown
    finally:
        fw.close()


def test_master_starts_with_the_policy_named_on_its_command_line(broker_url: str, procs: ProcessGroup) -> None:
    master = procs.bmesos("master", "master", "--broker", broker_url, "--allocator", "fair",
                          "--allocator-param", "resource=mem")
    master.wait_output(r"master \S+ serving")
    shown = json.loads(admin(procs, broker_url, "show", "allocator", "show", "--json").strip().splitlines()[-1])
    assert shown["policy"] == "fair" and shown["params"] == {"resource": "mem"}
