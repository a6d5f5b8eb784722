"""The master's fence: every message's user_id against what it claims. Every principal here has FULL
broker permissions (as if the broker fence were misconfigured), so what is refused is refused by the
master alone — the authority — and afterwards the victim's task still runs and its books are whole."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from broker_mesos.bus import topology
from broker_mesos.core import codec, protocol
from broker_mesos.core.protocol import CommandInfo, TaskInfo, TaskState
from broker_mesos.core.resources import Resources
from broker_mesos.testing.client import RawFramework
from broker_mesos.testing.processes import Proc, ProcessGroup
from broker_mesos.testing.rabbit import RabbitNode
from broker_mesos.testing.wait import wait_for

SECURE = {"BMESOS_INSECURE": "0"}
USERS = ("master", "agent.a1", "agent.a2", "framework.alice", "framework.mallory", "operator.ops")


@pytest.fixture(scope="module")
def passwords(rabbit_node: RabbitNode) -> dict[str, str]:
    """Our principals as users of the test node (users are node-wide, permissions per vhost)."""
    made = {}
    for user in USERS:
        made[user] = secrets.token_hex(12)  # rabbitmqctl would read a leading "-" as an option
        rabbit_node.ctl("add_user", user, made[user])
    return made


@pytest.fixture
def cluster_urls(rabbit_node: RabbitNode, passwords: dict[str, str]) -> dict[str, str]:
    """A fresh vhost in which each principal is allowed everything at the broker."""
    vhost = rabbit_node.fresh_vhost()
    urls = {}
    for user, password in passwords.items():
        rabbit_node.ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        urls[user] = f"amqp://{user}:{password}@127.0.0.1:{rabbit_node.port}/{vhost}"
    urls["guest"] = rabbit_node.url(vhost)
    return urls


@pytest.fixture
def secured(cluster_urls: dict[str, str], procs: ProcessGroup, tmp_path: Path) -> Iterator[dict[str, object]]:
    """A secure master, agent a1 and framework alice with a task running on a1."""
    master = procs.bmesos("master", "master", "--broker", cluster_urls["master"], "--master-id", "m1",
                          "--allocation-interval", "0.1", env=SECURE)
    master.wait_output(r"master m1 serving")
    assert "INSECURE" not in master.output()
    agent = procs.bmesos("a1", "agent", "--broker", cluster_urls["agent.a1"], "--id", "a1", "--resources",
                         "cpus:4;mem:4096", "--work-dir", str(tmp_path / "a1"), "--kill-on-stop", env=SECURE)
    agent.wait_output(r"agent a1 registered")
    alice = RawFramework(cluster_urls["framework.alice"], "alice")
    alice.subscribe()
    (offer,) = alice.offers()
    alice.accept([offer], [TaskInfo("job", "a1", Resources.parse("cpus:1;mem:64"), CommandInfo("sleep 60"))])
    alice.wait_status("job", TaskState.RUNNING)
    made = {"master": master, "agent": agent, "alice": alice}
    yield made
    alice.close()
    for extra in made.get("extra", []):  # type: ignore[attr-defined]
        extra.close()


def denied_event(master: Proc, what: str) -> None:
    master.wait_output(rf"event security\.denied .*{what}", 15)


def still_running(alice: RawFramework) -> None:
    alice.call(protocol.Reconcile("alice", ["job"]))
    (update,) = alice.expect(protocol.Update, skip=(protocol.Offers, protocol.Rescind)).updates
    assert (update.task_id, update.state, update.agent_id) == ("job", TaskState.RUNNING, "a1")


def test_a_framework_cannot_act_for_another(secured: dict[str, object], cluster_urls: dict[str, str]) -> None:
    master, alice = secured["master"], secured["alice"]
    mallory = RawFramework(cluster_urls["framework.mallory"], "mallory")
    secured["extra"] = [mallory]
    for call in (protocol.Kill("alice", ["job"]), protocol.Teardown("alice"), protocol.Suppress("alice"),
                 protocol.Subscribe("alice", "pwned", weight=1000.0), protocol.Reconcile("alice", []),
                 protocol.Decline("alice", ["m1-O1-x"], refuse_seconds=3e7)):
        call_id = mallory.call(call)
        error = mallory.expect(protocol.Error)  # told why, on its own queue only
        assert error.call_id == call_id and "framework.mallory may not act for framework alice" in error.message
    denied_event(master, "user=framework.mallory type=DECLINE")  # type: ignore[arg-type]
    still_running(alice)  # type: ignore[arg-type]


def test_agents_and_strangers_cannot_speak_for_others(secured: dict[str, object], cluster_urls: dict[str, str]) -> None:
    master, alice = secured["master"], secured["alice"]
    impostor = pika.BlockingConnection(pika.URLParameters(cluster_urls["agent.a2"])).channel()
    props = pika.BasicProperties(content_type="application/msgpack", user_id="agent.a2", delivery_mode=2)
    big = protocol.Register("a1", "h", Resources.of(cpus=1000, mem=4096))
    impostor.basic_publish(topology.AGENT_REGISTER, "register", codec.encode(big, time.time()), props)
    denied_event(master, "user=agent.a2 type=REGISTER")  # type: ignore[arg-type]
    finished = protocol.TaskStatus("job", "alice", "a1", TaskState.FINISHED, "u-forged", time.time())
    impostor.basic_publish(topology.STATUS, "alice.a1.TASK_FINISHED", codec.encode(protocol.Status([finished]), 1.0),
                           props)
    denied_event(master, "user=agent.a2 type=STATUS")  # type: ignore[arg-type]
    elsewhere = protocol.TaskStatus("job", "alice", "a2", TaskState.FINISHED, "u-forged-2", time.time())
    impostor.basic_publish(topology.STATUS, "alice.a2.TASK_FINISHED", codec.encode(protocol.Status([elsewhere]), 1.0),
                           props)  # its own agent id, but the task is on a1
    master.wait_output(r"security: denied STATUS from user 'agent.a2': task job of alice is on agent a1, "  # type: ignore[attr-defined]
                       r"not on a2", 15)
    impostor.connection.close()
    guest = pika.BlockingConnection(pika.URLParameters(cluster_urls["guest"])).channel()
    guest.basic_publish(topology.MASTER, "SUBSCRIBE", codec.encode(protocol.Subscribe("guest-fw"), 1.0),
                        pika.BasicProperties(content_type="application/msgpack"))  # no user_id at all
    denied_event(master, "user= type=SUBSCRIBE")  # type: ignore[arg-type]
    guest.connection.close()
    still_running(alice)  # type: ignore[arg-type]
    for status in alice.statuses:  # type: ignore[attr-defined]
        assert status.state != TaskState.FINISHED


def test_agents_obey_only_the_master(secured: dict[str, object], cluster_urls: dict[str, str]) -> None:
    agent, alice = secured["agent"], secured["alice"]
    mallory = pika.BlockingConnection(pika.URLParameters(cluster_urls["framework.mallory"])).channel()
    run = protocol.RunTasks("mallory", [TaskInfo("evil", "a1", Resources.of(cpus=1), CommandInfo("id"))])
    props = pika.BasicProperties(content_type="application/msgpack", user_id="framework.mallory", delivery_mode=2)
    mallory.basic_publish(topology.TASKS, "a1", codec.encode(run, 1.0), props)
    mallory.basic_publish(topology.TASKS, "a1", codec.encode(protocol.KillTasks("alice", ["job"]), 1.0), props)
    agent.wait_output(r"task messages come from the master principal 'master', not from user "  # type: ignore[attr-defined]
                      r"'framework.mallory'", 15)
    mallory.connection.close()
    still_running(alice)  # type: ignore[arg-type]
    assert "task=evil" not in agent.output()  # type: ignore[attr-defined]


def test_admin_calls_are_for_operators_and_roles_for_whom_they_allow(
        secured: dict[str, object], cluster_urls: dict[str, str]) -> None:
    master = secured["master"]
    mallory = RawFramework(cluster_urls["framework.mallory"], "mallory", role="prod")
    secured["extra"] = [mallory]
    mallory.call(protocol.Subscribe("mallory", "m", "prod"))
    assert "may not use role prod" in mallory.expect(protocol.Error).message
    ops = pika.BlockingConnection(pika.URLParameters(cluster_urls["operator.ops"])).channel()
    replies = ops.queue_declare("", exclusive=True).method.queue
    props = pika.BasicProperties(content_type="application/msgpack", user_id="operator.ops", reply_to=replies)
    ops.basic_publish(topology.MASTER, "SET_ACL",
                      codec.encode(protocol.SetAcl("framework.mallory", ["prod", "*"], []), 1.0), props)
    wait_for(lambda: ops.basic_get(replies, auto_ack=True)[0], 15, "the operator's answer")
    assert mallory.subscribe().framework_id == "mallory"
    forged = pika.BasicProperties(content_type="application/msgpack", user_id="framework.mallory")
    fw = pika.BlockingConnection(pika.URLParameters(cluster_urls["framework.mallory"])).channel()
    fw.basic_publish(topology.MASTER, "SET_ROLE", codec.encode(protocol.SetRole("*", limit=Resources.of(cpus=0.001)),
                                                              1.0), forged)
    denied_event(master, "user=framework.mallory type=SET_ROLE")  # type: ignore[arg-type]
    ops.connection.close()
    fw.connection.close()
