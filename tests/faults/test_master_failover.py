"""Master failover: SIGKILL the active master (twice in a row); a standby takes over from the registry
and agents' re-registration, no running task is killed, and two masters are never active at once."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pika
from books import Auditor, WorkloadView, check_books, churn, report, start_agent, start_master, start_workload

from broker_mesos.bus import topology
from broker_mesos.core.protocol import TaskState
from broker_mesos.testing.processes import Proc, ProcessGroup
from broker_mesos.testing.wait import wait_for

SERVING = r"master (\S+) serving"



def consumers(url: str) -> dict[str, int]:
    """How many consumers each master input queue has right now."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        return {q.name: channel.queue_declare(q.name, passive=True).method.consumer_count
                for q in topology.master_queues()}
    finally:
        connection.close()


def serving(masters: list[Proc]) -> list[Proc]:
    return [m for m in masters if m.alive() and re.search(SERVING, m.output())]


def test_one_active_master_and_failover_twice(broker_url: str, procs: ProcessGroup, tmp_path: Path,
                                              auditor: Auditor) -> None:
    masters = [start_master(procs, broker_url, f"m{i}", wait=False) for i in range(3)]
    wait_for(lambda: len(serving(masters)) == 1, 60, "one master serving")
    for m in masters:
        m.wait_output(r"master \S+ (serving|standing by)", 30)
    agents = ["a1", "a2"]
    agent_procs = [start_agent(procs, broker_url, a, tmp_path) for a in agents]
    workload = start_workload(procs, broker_url, "wl")
    wait_for(lambda: len(WorkloadView.parse(workload.output()).live()) >= 4, 60, "4 long tasks running")
    assert consumers(broker_url) == {q.name: 1 for q in topology.master_queues()}

    long_before = {t for t in WorkloadView.parse(workload.output()).live() if t.startswith("long-")}
    for round_ in range(2):
        churn(workload)
        (active,) = serving(masters)
        standbys = [m for m in masters if m.alive() and m is not active]
        mark = len(workload.output())
        killed_at = time.monotonic()
        active.kill()
        new = wait_for(lambda standbys=standbys: [m for m in standbys if re.search(SERVING, m.output())], 30,
                       "a standby to take over")
        assert len(new) == 1, "two standbys took over at once"
        new_id = re.search(SERVING, new[0].output())[1]  # type: ignore[index]
        workload.wait_output(rf"^offers \d+ {new_id}$", 30)
        report(f"master failover {round_ + 1}: kill to first offer from {new_id}", time.monotonic() - killed_at)
        assert mark < len(workload.output())
        workload.wait_output(rf"^reregistered {new_id}$", 30)
        assert consumers(broker_url) == {q.name: 1 for q in topology.master_queues()}
        churn(workload)

    view = check_books(workload, auditor, "wl", agents)
    assert long_before <= view.live(), "a failover killed a running task"
    assert not any(s == TaskState.LOST.value for ups in view.updates.values() for s, *_ in ups)
    assert view.reregistered, "the workload never saw a new master"
    assert all(a.alive() for a in agent_procs)


def test_reconciliation_after_failover(broker_url: str, procs: ProcessGroup, tmp_path: Path,
                                       auditor: Auditor) -> None:
    """RECONCILE, explicit and implicit, answers from the latest state after a failover."""
    m1 = start_master(procs, broker_url, "m1")
    m2 = start_master(procs, broker_url, "m2")
    start_agent(procs, broker_url, "a1", tmp_path)
    workload = start_workload(procs, broker_url, "wl", "--count", "3", "--churn", "1")
    wait_for(lambda: len([t for t in WorkloadView.parse(workload.output()).live() if t.startswith("long-")]) == 3,
             60, "3 long tasks running")
    finished = wait_for(lambda: [t for t, ups in WorkloadView.parse(workload.output()).updates.items()
                                 if any(s == TaskState.FINISHED.value for s, *_ in ups)], 60,
                        "a short task to finish")
    active, standby = (m1, m2) if re.search(SERVING, m1.output()) else (m2, m1)
    active.signal(signal.SIGKILL)
    standby.wait_output(SERVING, 30)

    live = {t for t in WorkloadView.parse(workload.output()).live() if t.startswith("long-")}
    implicit = {u.task_id: u.state for u in auditor.reconcile("wl")}
    assert live <= set(implicit) and all(implicit[t] == TaskState.RUNNING for t in live), implicit
    explicit = {u.task_id: u for u in auditor.reconcile("wl", [*sorted(live), finished[0], "never-launched"])}
    assert all(explicit[t].state == TaskState.RUNNING and explicit[t].agent_id == "a1" for t in live)
    assert explicit[finished[0]].state == TaskState.FINISHED
    assert explicit["never-launched"].state == TaskState.LOST
    assert all(u.reason == "REASON_RECONCILIATION" for u in explicit.values())
