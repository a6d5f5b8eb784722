"""The broker fence: with principals provisioned by ``bmesos principals``, hostile clients written with
plain pika are refused BY THE BROKER (the channel closed with 403 ACCESS_REFUSED, or 406
PRECONDITION_FAILED for a ``user_id`` that is not the connection's user), while every principal's own
paths work. No master runs: nothing here relies on the master's checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pika.exceptions
import pytest

from broker_mesos.bus import provision, topology
from broker_mesos.core import protocol, security
from broker_mesos.testing.pytest_plugin import remove_principals
from broker_mesos.testing.rabbit import RabbitNode

ACCESS_REFUSED = 403
PRECONDITION_FAILED = 406
VHOST = "fence"


@pytest.fixture(scope="module")
def urls(secure_rabbit: RabbitNode) -> Iterator[dict[str, str]]:
    """user -> AMQP URL: the master, operator.admin, agents a1 and a2, frameworks alice and mallory, a
    monitor."""
    api = provision.ManagementApi(secure_rabbit.management_url())
    p = provision.Provisioner(api, VHOST, f"amqp://127.0.0.1:{secure_rabbit.port}")
    try:
        issued, _notes = p.init()
        issued += [p.add("agent", "a1"), p.add("agent", "a2"), p.add("framework", "alice", ["prod"]),
                   p.add("framework", "mallory"), p.add("monitor", "mon")]
        made = {i.user: i.url for i in issued}
        assert all(made.values())
        yield made  # type: ignore[misc]
    finally:
        remove_principals(secure_rabbit, VHOST)


def connect(url: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(url + "?connection_attempts=1&socket_timeout=5"))


@pytest.fixture
def session(urls: dict[str, str]) -> Iterator[Callable[[str], pika.BlockingConnection]]:
    """``session(user)``: a connection as that principal, closed after the test."""
    opened: list[pika.BlockingConnection] = []

    def open_as(user: str) -> pika.BlockingConnection:
        opened.append(connect(urls[user]))
        return opened[-1]

    yield open_as
    for conn in opened:
        if conn.is_open:
            conn.close()


def refusal(conn: pika.BlockingConnection, action: Callable[[Any], object]) -> int:
    """The AMQP reply code with which the broker closes a fresh channel on which ``action`` runs."""
    channel = conn.channel()
    channel.confirm_delivery()  # a refused publish then raises here, not on some later call
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        action(channel)
        channel.basic_qos(prefetch_count=1)  # a round trip: an asynchronous refusal arrives before it ends
    return int(closed.value.reply_code)


def props(user: str, **kwargs: Any) -> pika.BasicProperties:
    return pika.BasicProperties(user_id=user, content_type="application/msgpack", **kwargs)


def publish(exchange: str, key: str, user: str, body: bytes = b"x", **kwargs: Any) -> Callable[[Any], None]:
    return lambda ch: ch.basic_publish(exchange, key, body, props(user, **kwargs), mandatory=False)


def own_queue(channel: Any) -> str:
    return str(channel.queue_declare("", exclusive=True, auto_delete=True).method.queue)


def get_one(channel: Any, queue: str, timeout: float = 5.0) -> tuple[Any, Any, bytes]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is not None:
            return method, properties, body
        time.sleep(0.05)
    raise AssertionError(f"nothing arrived on {queue} within {timeout}s")


# -- a framework principal that is not the owner -----------------------------------------------------

MALLORY = "framework.mallory"


def test_framework_may_not_publish_tasks(session: Callable[[str], Any]) -> None:
    run_tasks = topology.call_type(protocol.RunTasks)
    assert refusal(session(MALLORY), publish(topology.TASKS, "a1", MALLORY, type=run_tasks)) == ACCESS_REFUSED


def test_framework_may_not_bind_another_owners_offers(session: Callable[[str], Any]) -> None:
    conn = session(MALLORY)

    def bind(channel: Any) -> None:
        channel.queue_bind(own_queue(channel), topology.OFFERS, routing_key="alice")

    assert refusal(conn, bind) == ACCESS_REFUSED
    for key in ("#", "*", "alice-x", "mallory.#"):  # no wildcard, no one else's id
        assert refusal(conn, lambda ch, key=key: ch.queue_bind(own_queue(ch), topology.OFFERS, key)) \
            == ACCESS_REFUSED, key


def test_framework_may_not_consume_another_owners_queues(session: Callable[[str], Any]) -> None:
    conn = session(MALLORY)
    for name in ("offers.alice", "status.alice"):
        assert refusal(conn, lambda ch, name=name: ch.basic_consume(name, lambda *a: None)) == ACCESS_REFUSED
        assert refusal(conn, lambda ch, name=name: ch.basic_get(name)) == ACCESS_REFUSED


def test_framework_may_not_bind_another_owners_status(session: Callable[[str], Any]) -> None:
    conn = session(MALLORY)
    for key in ("alice.#", "#", "*.a1.*", "alice.a1.TASK_RUNNING"):
        assert refusal(conn, lambda ch, key=key: ch.queue_bind(own_queue(ch), topology.STATUS, key)) \
            == ACCESS_REFUSED, key


def test_framework_may_not_touch_the_master_registry(session: Callable[[str], Any]) -> None:
    conn = session(MALLORY)
    registry = topology.MASTER_REGISTRY_QUEUE
    assert refusal(conn, lambda ch: ch.basic_get(registry)) == ACCESS_REFUSED
    assert refusal(conn, lambda ch: ch.basic_consume(registry, lambda *a: None)) == ACCESS_REFUSED
    assert refusal(conn, lambda ch: ch.queue_purge(registry)) == ACCESS_REFUSED
    assert refusal(conn, publish("", registry, MALLORY)) == ACCESS_REFUSED  # the default exchange


def test_framework_may_not_publish_as_the_master(session: Callable[[str], Any]) -> None:
    conn = session(MALLORY)
    # on an exchange it may write: the broker checks user_id against the connection's user
    assert refusal(conn, publish(topology.MASTER, "SUBSCRIBE", security.DEFAULT_MASTER_PRINCIPAL)) \
        == PRECONDITION_FAILED
    assert refusal(conn, publish(topology.MASTER, "SUBSCRIBE", "framework.alice")) == PRECONDITION_FAILED


def test_framework_may_not_declare_shared_queues_but_may_check_them(session: Callable[[str], Any]) -> None:
    conn = session(MALLORY)
    calls = topology.MASTER_CALLS_QUEUE
    args = dict(topology.QUORUM, **topology.DEAD_LETTERED)
    assert refusal(conn, lambda ch: ch.queue_declare(calls, durable=True, arguments=args)) == ACCESS_REFUSED
    assert refusal(conn, lambda ch: ch.queue_delete(calls)) == ACCESS_REFUSED
    assert refusal(conn, lambda ch: ch.exchange_declare(topology.STATUS, "topic", durable=True)) == ACCESS_REFUSED
    assert refusal(conn, lambda ch: ch.exchange_delete(topology.STATUS)) == ACCESS_REFUSED
    channel = conn.channel()
    assert channel.queue_declare(calls, passive=True).method.queue == calls  # passive: no permission needed
    channel.exchange_declare(topology.STATUS, passive=True)
    for queue in topology.base_queues():
        channel.queue_declare(queue.name, passive=True)


def test_framework_may_not_publish_offers_or_status(session: Callable[[str], Any]) -> None:
    conn = session(MALLORY)
    assert refusal(conn, publish(topology.OFFERS, "alice", MALLORY)) == ACCESS_REFUSED
    assert refusal(conn, publish(topology.STATUS, "alice.a1.TASK_FINISHED", MALLORY)) == ACCESS_REFUSED
    assert refusal(conn, publish(topology.EVENTS, "master.elected", MALLORY)) == ACCESS_REFUSED
    assert refusal(conn, publish(topology.AGENT_REGISTER, topology.KEY_REGISTER, MALLORY)) == ACCESS_REFUSED


# -- an agent principal that is not the one it claims --------------------------------------------------


def test_agent_may_not_report_for_another_agent(session: Callable[[str], Any]) -> None:
    conn = session("agent.a2")
    assert refusal(conn, publish(topology.STATUS, "alice.a1.TASK_FINISHED", "agent.a2")) == ACCESS_REFUSED
    assert refusal(conn, lambda ch: ch.basic_consume("tasks.a1", lambda *a: None)) == ACCESS_REFUSED
    assert refusal(conn, lambda ch: ch.queue_bind("tasks.a2", topology.TASKS, "a1")) == ACCESS_REFUSED
    assert refusal(conn, publish(topology.TASKS, "a1", "agent.a2")) == ACCESS_REFUSED
    assert refusal(conn, publish(topology.STATUS, "alice.a2.TASK_RUNNING", "agent.a1")) == PRECONDITION_FAILED


def test_monitor_may_only_read(session: Callable[[str], Any]) -> None:
    """... and ask state queries: it may publish to `master`, where the master's fence denies it all but
    QUERY (tests/integration/test_cli_cluster.py)."""
    conn = session("monitor.mon")
    assert refusal(conn, publish(topology.AGENT_REGISTER, "heartbeat", "monitor.mon")) == ACCESS_REFUSED
    assert refusal(conn, publish(topology.STATUS, "alice.a1.TASK_RUNNING", "monitor.mon")) == ACCESS_REFUSED
    assert refusal(conn, lambda ch: ch.basic_get("offers.alice")) == ACCESS_REFUSED
    assert refusal(conn, lambda ch: ch.queue_bind(own_queue(ch), topology.OFFERS, "#")) == ACCESS_REFUSED


# -- the paths each principal needs work ---------------------------------------------------------------


def test_framework_owner_declares_binds_and_consumes_its_queues(session: Callable[[str], Any]) -> None:
    alice, master = session("framework.alice").channel(), session("master").channel()
    for framework_id in ("alice", "alice-x"):
        for queue in topology.framework_queues(framework_id):  # what the SDK declares, as it declares it
            alice.queue_declare(queue.name, durable=True, arguments=queue.arguments)
            for exchange, key in queue.bindings:
                alice.queue_bind(queue.name, exchange, key)
        master.basic_publish(topology.OFFERS, framework_id, b"offer", props("master"))
        _method, properties, body = get_one(alice, topology.offers_queue_name(framework_id))
        assert (body, properties.user_id) == (b"offer", "master")
    alice.basic_consume("offers.alice", lambda *a: None)
    alice.queue_bind(own_queue(alice), topology.EVENTS, "master.elected")
    alice.basic_publish(topology.MASTER, "SUBSCRIBE", b"call", props("framework.alice"))


def test_agent_consumes_its_queue_and_reports_its_tasks(session: Callable[[str], Any]) -> None:
    a1, master, monitor = (session(u).channel() for u in ("agent.a1", "master", "monitor.mon"))
    master.basic_publish(topology.TASKS, "a1", b"run", props("master"))
    _method, properties, body = get_one(a1, topology.tasks_queue_name("a1"))  # declared by `principals add`
    assert (body, properties.user_id) == (b"run", "master")
    a1.basic_consume("tasks.a1", lambda *a: None)
    watching = own_queue(monitor)
    monitor.queue_bind(watching, topology.STATUS, "#")
    a1.confirm_delivery()
    a1.basic_publish(topology.STATUS, "alice.a1.TASK_RUNNING", b"status", props("agent.a1"))
    a1.basic_publish(topology.AGENT_REGISTER, topology.KEY_HEARTBEAT, b"hb", props("agent.a1"))
    method, properties, _body = get_one(monitor, watching)
    assert (method.routing_key, properties.user_id) == ("alice.a1.TASK_RUNNING", "agent.a1")


def test_every_principal_passively_declares_the_shared_topology(urls: dict[str, str]) -> None:
    """What a non-master ``Bus`` does on every connect (bus/connection.py)."""
    for user, url in urls.items():
        conn = connect(url)
        try:
            channel = conn.channel()
            for exchange in topology.EXCHANGES:
                channel.exchange_declare(exchange.name, exchange.type, durable=True, passive=True)
            for queue in topology.base_queues():
                channel.queue_declare(queue.name, passive=True)
        finally:
            conn.close()
        assert user


def test_readers_may_dead_letter_what_they_cannot_decode(session: Callable[[str], Any]) -> None:
    """``Bus.dead_letter`` publishes to ``bmesos.dlx``: every principal that consumes anything does it."""
    for user in ("agent.a1", "framework.alice", "monitor.mon", "operator.admin"):
        channel = session(user).channel()
        channel.confirm_delivery()
        channel.basic_publish(topology.DEAD_LETTER, "x", b"undecodable", props(user))


def test_cc_headers_are_not_fenced_by_the_broker(session: Callable[[str], Any]) -> None:
    """RabbitMQ 3.x checks the routing key against topic permissions, not the CC/BCC headers: agent a2
    can reach alice's status queue with a key of its own and a CC. The master's user_id check is the
    fence for this (core/security.py says so); this test pins the broker's behaviour it relies on."""
    a2, alice = session("agent.a2").channel(), session("framework.alice").channel()
    for queue in topology.framework_queues("alice"):
        alice.queue_declare(queue.name, durable=True, arguments=queue.arguments)
    alice.queue_purge("status.alice")
    a2.confirm_delivery()
    a2.basic_publish(topology.STATUS, "x.a2.TASK_RUNNING", b"forged",
                     props("agent.a2", headers={"CC": ["alice.a1.TASK_FINISHED"]}))
    method, properties, body = get_one(alice, "status.alice")
    # what tells the forgery apart: the user the broker validated, and the key it was published with
    # (a delivery carries the publish's routing key, not the CC key that routed it)
    assert (body, properties.user_id, method.routing_key) == (b"forged", "agent.a2", "x.a2.TASK_RUNNING")
    assert properties.headers["CC"] == ["alice.a1.TASK_FINISHED"]
