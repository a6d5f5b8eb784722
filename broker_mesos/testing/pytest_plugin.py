"""pytest fixtures for broker-mesos and for users testing their own frameworks.

* ``rabbit_node`` (session): a private RabbitMQ node started for the test session and stopped after.
* ``broker_url``: an AMQP URL on a vhost of that node that no other test uses.
* ``procs``: a ``ProcessGroup`` whose children are stopped after the test; their output is printed
  when the test fails.
* ``rabbit_node_factory``: start further nodes (fault tests); each is stopped at the end.
* ``rabbit_cluster``: a three-node RabbitMQ cluster on this machine, stopped after the test.
* ``secure_rabbit`` (session): a private node with the management plugin (``management_url()``), for
  ``bmesos principals`` and the security tests. RabbitMQ users are broker-wide, not per vhost: a test
  that provisions principals on it calls ``remove_principals(node, vhost)`` when done, or provisions
  them with ``with provisioned(node, vhost, out_dir, ("agent", "a1"), ...)``, which does.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker_mesos.testing.processes import ProcessGroup
from broker_mesos.testing.rabbit import RabbitCluster, RabbitNode


@pytest.fixture(scope="session")
def rabbit_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    node = RabbitNode(tmp_path_factory.mktemp("rabbit"))
    node.start()
    yield node
    node.stop()


@pytest.fixture(scope="session")
def secure_rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    node = RabbitNode(tmp_path_factory.mktemp("secure-rabbit"), vhosts=1, management=True)
    node.start()
    yield node
    node.stop()


@contextlib.contextmanager
def provisioned(node: RabbitNode, vhost: str, out: Path, *principals: tuple[str, str]) -> Iterator[Path]:
    """``bmesos principals init`` on ``vhost`` of ``node`` (which has the management plugin), then
    ``principals add KIND NAME`` for each (kind, name); yields ``out``, where their URL files are, and
    removes every principal and the vhost afterwards (``remove_principals``)."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BMESOS_")},
           "BMESOS_ADMIN_URL": node.management_url(), "BMESOS_AMQP_URL_BASE": f"amqp://127.0.0.1:{node.port}"}

    def run(*args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "broker_mesos.cli.main", "principals", "--vhost", vhost, *args,
                               "--output-dir", str(out)], capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0, done.stderr

    try:
        run("init")
        for kind, name in principals:
            run("add", kind, name)
        yield out
    finally:
        remove_principals(node, vhost)


def remove_principals(node: RabbitNode, vhost: str) -> None:
    """Delete ``vhost`` and every user of ``node`` but guest (what ``bmesos principals`` made)."""
    from urllib.parse import quote

    from broker_mesos.bus.provision import ManagementApi

    api = ManagementApi(node.management_url())
    api.request("DELETE", f"vhosts/{quote(vhost, safe='')}", missing_ok=True)
    for user in api.request("GET", "users") or []:
        if user["name"] != "guest":
            api.request("DELETE", f"users/{quote(user['name'], safe='')}", missing_ok=True)


@pytest.fixture
def rabbit_node_factory(tmp_path: Path) -> Iterator[Callable[..., RabbitNode]]:
    nodes: list[RabbitNode] = []

    def make(**kwargs: object) -> RabbitNode:
        node = RabbitNode(tmp_path / f"rabbit{len(nodes)}", **kwargs)  # type: ignore[arg-type]
        nodes.append(node)
        return node.start()

    yield make
    for node in nodes:
        node.kill()


@pytest.fixture
def rabbit_cluster(tmp_path: Path) -> Iterator[RabbitCluster]:
    cluster = RabbitCluster(tmp_path / "cluster", size=3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def broker_url(rabbit_node: RabbitNode) -> str:
    return rabbit_node.url(rabbit_node.fresh_vhost())


@pytest.fixture
def procs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ProcessGroup]:
    group = ProcessGroup(tmp_path / "logs")
    yield group
    group.stop_all()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(group.dump())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
