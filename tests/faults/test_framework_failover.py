"""Framework failover: SIGKILL the scheduler of a framework with a failover timeout. Re-subscribing
with its id within the timeout gets its tasks back (none killed); after the timeout its tasks are
killed and their resources released."""

from __future__ import annotations

import re
import time
from pathlib import Path

from books import (
    AGENT_RESOURCES,
    Auditor,
    WorkloadView,
    check_books,
    churn,
    report,
    start_agent,
    start_master,
    start_workload,
)

from broker_mesos.core.resources import Resources
from broker_mesos.testing.processes import ProcessGroup
from broker_mesos.testing.wait import wait_for

FAILOVER_TIMEOUT = 6.0



def long_tasks(view: WorkloadView) -> set[str]:
    return {t for t in view.live() if t.startswith("long-")}


def test_framework_failover_within_and_after_timeout(broker_url: str, procs: ProcessGroup, tmp_path: Path,
                                                     auditor: Auditor) -> None:
    master = start_master(procs, broker_url, "m1")
    start_agent(procs, broker_url, "a1", tmp_path)
    args = ("--failover-timeout", str(FAILOVER_TIMEOUT))
    first = start_workload(procs, broker_url, "wl", *args, name="workload1")
    wait_for(lambda: len(long_tasks(WorkloadView.parse(first.output()))) == 4, 60, "4 long tasks")
    churn(first)
    kept = long_tasks(WorkloadView.parse(first.output()))

    # within the timeout: the new scheduler gets the same tasks back, nothing is killed
    first.kill()
    second = start_workload(procs, broker_url, "wl", *args, name="workload2")
    wait_for(lambda: kept <= long_tasks(WorkloadView.parse(second.output())), 30,
             "the re-subscribed scheduler to learn its running tasks")
    churn(second)
    view = check_books(second, auditor, "wl", ["a1"])
    assert kept <= view.live(), "tasks were killed although the framework came back in time"
    assert not re.search(r"event framework.removed framework_id=wl", master.output())

    # past the timeout: its tasks are killed and the resources go back to the pool
    live = auditor.master_live("wl")
    second.kill()
    killed_at = time.monotonic()
    master.wait_output(r"event framework.disconnected framework_id=wl", 60)
    master.wait_output(r"event framework.removed framework_id=wl", 60)
    removed = time.monotonic() - killed_at
    report(f"framework removed after its {FAILOVER_TIMEOUT:g}s failover timeout (kill to removal)", removed)
    assert removed >= FAILOVER_TIMEOUT
    wait_for(lambda: not auditor.agent_tasks().get("a1"), 30, "the agent to have killed every task")
    auditor.free_offers({"a1": Resources.parse(AGENT_RESOURCES)})
    assert set(live), "nothing was running to be killed"

    # re-subscribing after the timeout: a fresh framework, none of the old tasks come back
    third = start_workload(procs, broker_url, "wl", *args, name="workload3")
    wait_for(lambda: len(long_tasks(WorkloadView.parse(third.output()))) == 4, 60, "4 new long tasks")
    assert not long_tasks(WorkloadView.parse(third.output())) & set(live)
