"""The built-in frameworks on a provisioned cluster: the service scheduler runs as framework.services,
operators command it, monitors may only read, and another framework principal can neither command it
(the broker refuses the publish) nor listen to its commands (the broker refuses the binding)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest

from broker_mesos.bus import topology
from broker_mesos.bus.provision import read_url_file
from broker_mesos.cli.control import ControlClient, Refused
from broker_mesos.core.errors import BrokerMesosError
from broker_mesos.testing.processes import ProcessGroup
from broker_mesos.testing.pytest_plugin import provisioned
from broker_mesos.testing.rabbit import RabbitNode
from broker_mesos.testing.wait import wait_for

VHOST = "builtin"
SECURE = {"BMESOS_INSECURE": "0"}


@pytest.fixture
def secrets(secure_rabbit: RabbitNode, tmp_path: Path) -> Iterator[Path]:
    with provisioned(secure_rabbit, VHOST, tmp_path / "secrets", ("agent", "b1"), ("framework", "services"),
                     ("framework", "other"), ("monitor", "mon")) as out:
        yield out


def url(secrets: Path, user: str) -> str:
    found = read_url_file(secrets, user)
    assert found is not None, user
    return found


def test_operators_command_monitors_read_and_other_frameworks_are_fenced_off(
        secrets: Path, procs: ProcessGroup, tmp_path: Path) -> None:
    master = procs.bmesos("master", "master", "--broker-file", str(secrets / "master.url"), "--master-id", "m1",
                          "--allocation-interval", "0.1", env=SECURE)
    master.wait_output(r"master m1 serving")
    agent = procs.bmesos("b1", "agent", "--broker-file", str(secrets / "agent.b1.url"), "--id", "b1",
                         "--resources", "cpus:2;mem:1024", "--work-dir", str(tmp_path / "b1"), "--kill-on-stop",
                         env=SECURE)
    agent.wait_output(r"agent b1 registered")
    scheduler = procs.bmesos("services", "service", "scheduler", "--broker-file",
                             str(secrets / "framework.services.url"), "--log-level", "info", env=SECURE)
    scheduler.wait_output(r"service scheduler services active", 60)

    operator = ControlClient(url(secrets, "operator.admin"), "services", timeout=15)
    operator.call("deploy", spec={"name": "idle", "command": "exec sleep 600", "cpus": 0.1, "mem": 32})
    wait_for(lambda: operator.call("status", name="idle")["running"] == 1, 60, "the instance running")

    monitor = ControlClient(url(secrets, "monitor.mon"), "services", timeout=15)
    assert [s["name"] for s in monitor.call("list")["items"]] == ["idle"]
    with pytest.raises(Refused, match=r"monitor\.mon may not use this command"):
        monitor.call("stop", name="idle")

    other_url = url(secrets, "framework.other")
    with pytest.raises(BrokerMesosError):  # the broker refuses its publish to services.calls: no answer
        ControlClient(other_url, "services", timeout=3).call("stop", name="idle")
    connection = pika.BlockingConnection(pika.URLParameters(other_url))
    try:
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="ACCESS_REFUSED"):
            channel.queue_bind(queue, topology.BUILTIN, routing_key=topology.builtin_calls_key("services"))
    finally:
        connection.close()

    assert operator.call("status", name="idle")["running"] == 1  # nothing of the above stopped it
    out = scheduler.output()
    assert "Traceback" not in out and "ACCESS_REFUSED" not in out, out[-2000:]
