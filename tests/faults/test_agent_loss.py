"""Agent failure: SIGKILL an agent under a steady workload. After the configured number of missed
heartbeats its tasks go TASK_LOST (from the master, REASON_AGENT_REMOVED), its resources leave the pool
and the workload replaces them elsewhere; when the agent comes back (same id) the tasks already
declared LOST are killed and it is admitted afresh."""

from __future__ import annotations

import re
import time
from pathlib import Path

from books import (
    HEARTBEAT,
    Auditor,
    WorkloadView,
    check_books,
    churn,
    report,
    start_agent,
    start_master,
    start_workload,
)

from broker_mesos.testing.processes import ProcessGroup
from broker_mesos.testing.wait import wait_for

MAX_MISSED = 5



def test_agent_killed_then_back(broker_url: str, procs: ProcessGroup, tmp_path: Path, auditor: Auditor) -> None:
    master = start_master(procs, broker_url, "m1")
    agents = {a: start_agent(procs, broker_url, a, tmp_path) for a in ("a1", "a2")}
    workload = start_workload(procs, broker_url, "wl")
    wait_for(lambda: len(WorkloadView.parse(workload.output()).live()) >= 4, 60, "tasks running")
    churn(workload)
    view = WorkloadView.parse(workload.output())
    victim = max(agents, key=lambda a: sum(1 for t in view.live() if view.launched.get(t) == a))
    doomed = {t for t in view.live() if view.launched.get(t) == victim}
    assert doomed

    killed_at = time.monotonic()
    agents[victim].kill()
    bound = MAX_MISSED * float(HEARTBEAT)

    def all_lost() -> bool:
        v = WorkloadView.parse(workload.output())
        return all(v.terminal(t) for t in doomed)

    wait_for(all_lost, 60, "the dead agent's tasks to end")
    detected = time.monotonic() - killed_at
    report(f"agent loss detected (bound {bound:.1f}s = {MAX_MISSED} x {HEARTBEAT}s heartbeats)", detected)
    assert detected >= bound - float(HEARTBEAT), "the agent was declared lost before its heartbeats were missed"
    view = WorkloadView.parse(workload.output())
    for task_id in doomed:
        (update,) = [u for u in view.updates[task_id] if u[0] == "TASK_LOST"]
        assert (update[1], update[3]) == ("SOURCE_MASTER", "REASON_AGENT_REMOVED")
    assert re.search(rf"event agent.removed agent_id={victim}", master.output())
    churn(workload)  # replacements launched on the surviving agent
    survivor = next(a for a in agents if a != victim)
    check_books(workload, auditor, "wl", [survivor])

    # the agent comes back with the same id and work dir: admitted afresh, LOST tasks killed
    agents[victim] = start_agent(procs, broker_url, victim, tmp_path)
    check_books(workload, auditor, "wl", [victim, survivor])
