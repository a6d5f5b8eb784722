"""Hostile commands at the built-in frameworks' schedulers: every one gets a clear refusal naming what
is wrong (undecodable ones are also dead-lettered), nothing stops a scheduler, and a good command
works afterwards on the same processes."""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

import msgpack
import pika
import pytest

from broker_mesos.bus import topology
from broker_mesos.bus.connection import CONTENT_TYPE
from broker_mesos.cli.control import ControlClient, Refused
from broker_mesos.core import codec
from broker_mesos.testing.processes import ProcessGroup
from tests.integration.builtin_cluster import start_scheduler

SERVICE_SPECS: list[tuple[Any, str]] = [
    ({"name": "x", "command": "true", "cpus": math.inf}, "cpus"),
    ({"name": "x", "command": "true", "instances": 2**62}, "instances"),
    ({"name": "x", "command": "true", "instances": True}, "instances"),
    ({"name": "Bad_Name", "command": "true"}, "name"),
    ({"name": "x", "command": ""}, "command"),
    ({"name": "x", "command": "true", "surprise": 1}, "surprise"),
    ({"name": "x", "command": "true", "constraints": {"rack": "LIKE:("}}, "regex"),
    ({"name": "x", "command": "true", "constraints": {"rack": "NEAR:a"}}, "operator"),
    ({"name": "x", "command": "true", "env": {"BMESOS_SERVICE": "forged"}}, "env"),
    ({"name": "x", "command": "true", "health_check": {"type": "smoke"}}, "health_check"),
    ({"name": "x", "command": "true", "upgrade": {"min_healthy": -1}}, "min_healthy"),
    ({"name": "x", "command": ["a"] * 100_000}, "command"),
    ("not a mapping", "spec"),
]
JOB_SPECS: list[tuple[Any, str]] = [
    ({"name": "j", "schedule": "61 * * * *", "command": "true"}, "schedule"),
    ({"name": "j", "schedule": "* * * * *", "timezone": "../../etc/passwd", "command": "true"}, "timezone"),
    ({"name": "j", "schedule": "* * * * *", "timezone": "Mars/Olympus", "command": "true"}, "timezone"),
    ({"name": "j", "schedule": "* * * * *", "command": "true", "retries": 2**63 - 1}, "retries"),
    ({"name": "j", "schedule": "* * * * *", "command": "true", "concurrency_policy": "sometimes"},
     "concurrency_policy"),
    ({"name": "j", "schedule": "* * * * *", "command": "true", "starting_deadline": -math.inf}, "starting_deadline"),
    ({"name": "j", "schedule": "", "command": "true"}, "schedule"),
]


def raw_call(url: str, framework_id: str, body: bytes) -> dict[str, Any]:
    """Publish ``body`` as a CONTROL (anything at all) and return the decoded answer's body."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, topology.BUILTIN, routing_key=queue)
        call_id = uuid.uuid4().hex
        channel.basic_publish(topology.BUILTIN, topology.builtin_calls_key(framework_id), body,
                              pika.BasicProperties(reply_to=queue, correlation_id=call_id,
                                                   content_type=CONTENT_TYPE))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            method, props, answer = channel.basic_get(queue, auto_ack=True)
            if method is not None and props.correlation_id == call_id:
                return msgpack.unpackb(answer)["body"]
            connection.process_data_events(time_limit=0.05)
        raise AssertionError("no answer")
    finally:
        connection.close()


@pytest.fixture
def schedulers(broker_url: str, procs: ProcessGroup) -> tuple[ControlClient, ControlClient]:
    start_scheduler(procs, broker_url, "service", "services-1")
    start_scheduler(procs, broker_url, "job", "jobs-1")
    return ControlClient(broker_url, "services", timeout=15), ControlClient(broker_url, "jobs", timeout=15)


def test_hostile_specs_are_refused_with_the_field_and_the_schedulers_keep_serving(
        broker_url: str, schedulers: tuple[ControlClient, ControlClient]) -> None:
    services, jobs = schedulers
    for spec, field in SERVICE_SPECS:
        with pytest.raises(Refused) as refused:
            services.call("deploy", spec=spec)
        assert field in str(refused.value), (spec if not isinstance(spec, dict) else list(spec), refused.value)
    for spec, field in JOB_SPECS:
        with pytest.raises(Refused) as refused:
            jobs.call("add", spec=spec)
        assert field in str(refused.value), (spec, refused.value)
    for client, command, args in ((services, "scale", {"name": "ghost", "instances": 2}),
                                  (services, "scale", {"name": "x", "instances": "two"}),
                                  (jobs, "history", {"name": "ghost", "limit": 10**9}),
                                  (jobs, "run", {"name": 7})):
        with pytest.raises(Refused):
            client.call(command, **args)

    nan = codec.encode(codec.registered_types()["CONTROL"]("deploy", {}), 1.0)  # then made hostile by hand
    envelope = msgpack.unpackb(nan)
    envelope["body"]["args"] = {"spec": {"name": "x", "command": "true", "cpus": math.nan}}
    answer = raw_call(broker_url, "services", msgpack.packb(envelope))
    assert answer["error"].startswith("refused: ") and "finite" in answer["error"], answer
    answer = raw_call(broker_url, "services", b"\x92\xc1\xc1 not msgpack")
    assert answer["error"].startswith("refused: "), answer
    envelope["type"] = "QUERY"
    envelope["body"] = {"what": "summary"}
    answer = raw_call(broker_url, "jobs", msgpack.packb(envelope))
    assert "only CONTROL" in answer["error"], answer

    assert services.call("deploy", spec={"name": "fine", "command": "exec sleep 600"})["result"] == "created"
    assert jobs.call("add", spec={"name": "fine", "schedule": "0 3 * * *", "command": "true"})["result"] == "created"
    assert [s["name"] for s in services.call("list")["items"]] == ["fine"]
