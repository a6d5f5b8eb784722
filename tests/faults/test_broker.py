"""The broker dies: restart the single RabbitMQ node, or kill one node of a three-node cluster, under a
steady workload. Every process reconnects and carries on; no task is lost; the books balance."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from books import Auditor, WorkloadView, check_books, churn, report, start_agent, start_master, start_workload

from broker_mesos.testing.processes import ProcessGroup
from broker_mesos.testing.rabbit import RabbitCluster, RabbitNode
from broker_mesos.testing.wait import wait_for


def offers_since(workload_output: Callable[[], str], mark: int) -> bool:
    return any(line.startswith("offers ") for line in workload_output()[mark:].splitlines())


def test_broker_restart(rabbit_node_factory: Callable[..., RabbitNode], procs: ProcessGroup,
                        tmp_path: Path) -> None:
    node = rabbit_node_factory(vhosts=2)
    url = node.url(node.fresh_vhost())
    masters = [start_master(procs, url, "m1"), start_master(procs, url, "m2")]
    agents = [start_agent(procs, url, a, tmp_path) for a in ("a1", "a2")]
    workload = start_workload(procs, url, "wl")
    wait_for(lambda: len(WorkloadView.parse(workload.output()).live()) >= 4, 60, "tasks running")
    churn(workload)
    long_before = {t for t in WorkloadView.parse(workload.output()).live() if t.startswith("long-")}

    node.stop()
    mark = len(workload.output())
    node.start()
    back = time.monotonic()
    wait_for(lambda: offers_since(workload.output, mark), 60, "offers after the broker restart")
    report("broker restart: node back to first offer", time.monotonic() - back)
    churn(workload)
    assert all(p.alive() for p in [*masters, *agents, workload])

    auditor = Auditor(url)
    try:
        view = check_books(workload, auditor, "wl", ["a1", "a2"])
    finally:
        auditor.close()
    assert long_before <= view.live(), "a running task was lost across the broker restart"


def test_cluster_node_killed(rabbit_cluster: RabbitCluster, procs: ProcessGroup, tmp_path: Path) -> None:
    vhost = rabbit_cluster.fresh_vhost()
    url = rabbit_cluster.url(vhost)
    # quorum queues whose leader was on the dead node elect a new one within seconds, and publishes to
    # them are nacked meanwhile (heartbeats too): the agent timeout must be longer than that (10 s)
    slack = ("--agent-ping-timeout", "2")
    masters = [start_master(procs, url, "m1", *slack), start_master(procs, url, "m2", *slack)]
    agents = [start_agent(procs, url, a, tmp_path) for a in ("a1", "a2")]
    workload = start_workload(procs, url, "wl")
    wait_for(lambda: len(WorkloadView.parse(workload.output()).live()) >= 4, 60, "tasks running")
    churn(workload)
    long_before = {t for t in WorkloadView.parse(workload.output()).live() if t.startswith("long-")}

    victim, *survivors = rabbit_cluster.nodes  # the first URL: where every process connected first
    mark = len(workload.output())
    killed_at = time.monotonic()
    victim.kill()
    wait_for(lambda: offers_since(workload.output, mark), 60, "offers after a cluster node died")
    report("cluster node killed: kill to first offer", time.monotonic() - killed_at)
    churn(workload)
    assert all(p.alive() for p in [*masters, *agents, workload])

    auditor = Auditor(survivors[0].url(vhost))
    try:
        view = check_books(workload, auditor, "wl", ["a1", "a2"])
    finally:
        auditor.close()
    assert long_before <= view.live(), "a running task was lost when a cluster node died"
