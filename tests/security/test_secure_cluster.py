"""From nothing to a secured cluster: `bmesos principals` provisions a fresh broker, every process runs
as its own least-privilege principal from a URL file (no password on a command line), and Mesos'
reference flow runs — with nothing denied on the way and every monitor line where it should be."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker_mesos.testing.processes import ProcessGroup
from broker_mesos.testing.pytest_plugin import provisioned
from broker_mesos.testing.rabbit import RabbitNode

VHOST = "bmesos"
SECURE = {"BMESOS_INSECURE": "0"}


@pytest.fixture
def secrets_dir(secure_rabbit: RabbitNode, tmp_path: Path) -> Iterator[Path]:
    with provisioned(secure_rabbit, VHOST, tmp_path / "secrets",
                     ("agent", "a1"), ("framework", "fw1"), ("framework", "fw2"), ("monitor", "mon")) as out:
        yield out


def test_a_provisioned_cluster_runs_the_reference_flow(secrets_dir: Path, procs: ProcessGroup,
                                                      tmp_path: Path) -> None:
    def url(user: str) -> str:
        return str(secrets_dir / f"{user}.url")

    master = procs.bmesos("master", "master", "--broker-file", url("master"), "--master-id", "m1",
                          "--allocation-interval", "0.1", env=SECURE)
    master.wait_output(r"master m1 serving")
    watch = procs.bmesos("watch", "watch", "--broker-file", url("monitor.mon"), "#", env=SECURE)
    agent = procs.bmesos("a1", "agent", "--broker-file", url("agent.a1"), "--id", "a1",
                         "--resources", "cpus:4;mem:4096", "--work-dir", str(tmp_path / "a1"), "--kill-on-stop",
                         env=SECURE)
    agent.wait_output(r"agent a1 registered")
    watch.wait_output(r"watching", 30)
    fw1 = procs.python("fw1", "-m", "broker_mesos.framework.examples.reference", "--framework-id", "fw1",
                       env={**SECURE, "BMESOS_BROKER_FILE": url("framework.fw1")})
    fw1.wait_output(r"offer \S+ agent=a1 cpus=4 mem=4096", 30)
    fw1.wait_output(r"status task-1 TASK_RUNNING", 30)
    fw1.wait_output(r"status task-2 TASK_RUNNING", 30)
    fw2 = procs.python("fw2", "-m", "broker_mesos.framework.examples.reference", "--framework-id", "fw2",
                       "--observe", env={**SECURE, "BMESOS_BROKER_FILE": url("framework.fw2")})
    fw2.wait_output(r"offer \S+ agent=a1 cpus=1 mem=1024", 30)
    watch.wait_output(r"task-2 .*TASK_RUNNING", 15)

    assert "INSECURE" not in master.output()
    for proc in (master, agent, watch, fw1, fw2):
        out = proc.output()
        assert "denied" not in out and "ACCESS_REFUSED" not in out and "Traceback" not in out, proc.name
        assert "reconnecting" not in out and out.count(": connected to amqp://") <= 1, f"{proc.name}:\n{out[-2000:]}"
