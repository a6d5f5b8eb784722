"""Agent restart and reliable status updates, under a steady workload with a real master.

* SIGKILL an agent while it runs tasks and restart it (same id, same work dir) well within the
  master's agent timeout: its still-running tasks are re-attached and later end with their real exit
  codes, a task that ended while it was down is reported with its exit code, nothing goes LOST, no
  update is applied twice, and the books balance.
* A framework that is away (SIGKILLed) finds the updates of its tasks that ended meanwhile waiting in
  its durable ``status.<fw>`` queue when it comes back with the same framework id.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from books import (
    AGENT_RESOURCES,
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

from broker_mesos.core.protocol import Offer, TaskState, TaskStatus
from broker_mesos.core.resources import Resources
from broker_mesos.framework.driver import SchedulerDriver, task
from broker_mesos.framework.scheduler import Scheduler
from broker_mesos.testing.processes import Proc, ProcessGroup
from broker_mesos.testing.wait import wait_for

MAX_MISSED = 40  # x 0.3 s heartbeats: a 12 s agent timeout, far above the restart's downtime
GATED = {"gate-stay": 7, "gate-down": 5, "gate-zero": 0}  # task -> exit code



class Gated(Scheduler):
    """A second framework: launches the ``GATED`` tasks on one agent; each runs until the file ``go``
    appears in its sandbox, then exits with its code. Collects every status update it is given."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self.launched = False
        self.updates: list[TaskStatus] = []
        self.lock = threading.Lock()

    def resource_offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        need = Resources.of(cpus=0.1, mem=16)
        for offer in offers:
            if not self.launched and offer.agent_id == self.agent_id and need + need + need <= offer.resources:
                tasks = [task(t, offer.agent_id, f"while [ ! -e go ]; do sleep 0.05; done; exit {code}", cpus=0.1,
                              mem=16) for t, code in GATED.items()]
                driver.launch(offer, tasks)
                self.launched = True
                driver.suppress()
            else:
                driver.decline([offer.offer_id], 3600.0)

    def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
        with self.lock:
            self.updates.append(status)

    def states(self, task_id: str) -> list[TaskState]:
        with self.lock:
            return [u.state for u in self.updates if u.task_id == task_id]

    def final(self, task_id: str) -> TaskStatus | None:
        with self.lock:
            return next((u for u in self.updates if u.task_id == task_id and u.state.terminal), None)


def restart_agent(procs: ProcessGroup, url: str, agent_id: str, work: Path) -> Proc:
    """``books.start_agent`` again, under a new log name (a reused log still holds the old
    "registered" line)."""
    agent = procs.bmesos(f"{agent_id}-restarted", "agent", "--broker", url, "--id", agent_id, "--resources",
                         AGENT_RESOURCES, "--work-dir", str(work / agent_id), "--heartbeat-interval", HEARTBEAT)
    agent.wait_output(rf"agent {agent_id} registered", 60)
    return agent


def test_agent_sigkilled_and_restarted_keeps_its_tasks(broker_url: str, procs: ProcessGroup, tmp_path: Path,
                                                       auditor: Auditor) -> None:
    start_master(procs, broker_url, "m1", "--max-missed-heartbeats", str(MAX_MISSED))
    victim, survivor = "a1", "a2"
    agents = {a: start_agent(procs, broker_url, a, tmp_path) for a in (victim, survivor)}
    workload = start_workload(procs, broker_url, "wl", "--churn-seconds", "0.5")
    gated = Gated(victim)
    driver = SchedulerDriver(gated, broker_url, "gated", framework_id="gated", failover_timeout=3600.0)
    driver.start()
    try:
        for task_id in GATED:
            wait_for(lambda t=task_id: TaskState.RUNNING in gated.states(t), 60, f"{task_id} to run")
        wait_for(lambda: len(WorkloadView.parse(workload.output()).live()) >= 4, 60, "workload tasks running")
        churn(workload)
        view = WorkloadView.parse(workload.output())
        on_victim = {t for t in view.live() if view.launched.get(t) == victim}

        killed_at = time.monotonic()
        agents[victim].kill()  # SIGKILL: its tasks, in their own sessions, keep running
        sandbox = tmp_path / victim / "frameworks" / "gated" / "tasks"
        meta = tmp_path / victim / "meta" / "frameworks" / "gated" / "tasks"
        (sandbox / "gate-down" / "go").touch()
        wait_for(lambda: (meta / "gate-down" / "exit_status").exists(), 10, "gate-down to end while the agent is down")
        assert gated.final("gate-down") is None  # nobody could report it yet

        agents[victim] = restart_agent(procs, broker_url, victim, tmp_path)
        downtime = time.monotonic() - killed_at
        bound = MAX_MISSED * float(HEARTBEAT)
        report(f"agent restart downtime (master's agent timeout {bound:.1f}s)", downtime)
        assert downtime < bound, "the restart took longer than the master's agent timeout: inconclusive"
        recovered = agents[victim].wait_output(r"(\d+) task\(s\) re-attached, (\d+) ended while it was down", 30)
        assert int(recovered.group(1)) >= 2  # gate-stay and gate-zero at least, plus the workload's long tasks

        down = wait_for(lambda: gated.final("gate-down"), 30, "gate-down's final update after the restart")
        assert (down.state, down.exit_code, down.source) == (TaskState.FAILED, 5, "SOURCE_AGENT")
        churn(workload)  # the cluster serves offers again, including the restarted agent's
        (sandbox / "gate-stay" / "go").touch()
        (sandbox / "gate-zero" / "go").touch()
        stay = wait_for(lambda: gated.final("gate-stay"), 30, "gate-stay to end after being re-attached")
        zero = wait_for(lambda: gated.final("gate-zero"), 30, "gate-zero to end after being re-attached")
        assert (stay.state, stay.exit_code) == (TaskState.FAILED, 7)
        assert (zero.state, zero.exit_code) == (TaskState.FINISHED, 0)
        for task_id in GATED:
            assert gated.states(task_id) == [TaskState.STARTING, TaskState.RUNNING, gated.final(task_id).state]
        uuids = [u.uuid for u in gated.updates]
        assert len(uuids) == len(set(uuids))

        view = check_books(workload, auditor, "wl", [victim, survivor])
        lost = [t for t, ups in view.updates.items() if any(s == "TASK_LOST" for s, *_ in ups)]
        assert lost == [], f"tasks reported LOST across an agent restart: {lost}"
        long_survivors = {t for t in on_victim if t.startswith("long-")}
        assert long_survivors and long_survivors <= view.live(), "long tasks did not survive the agent restart"
        assert not re.search(r"agent.removed", procs.procs[0].output())
    finally:
        driver.stop()
        driver.join(10)


def test_updates_wait_for_a_framework_that_is_away(broker_url: str, procs: ProcessGroup, tmp_path: Path,
                                                   auditor: Auditor) -> None:
    start_master(procs, broker_url, "m1")
    start_agent(procs, broker_url, "a1", tmp_path)
    first = start_workload(procs, broker_url, "away", "--count", "0", "--churn", "3", "--churn-seconds", "4",
                           name="workload-1")
    wait_for(lambda: len(WorkloadView.parse(first.output()).live()) == 3, 60, "three short tasks running")
    first.kill()  # SIGKILL: the framework is away, its failover timeout (1 h) keeps its tasks
    view = WorkloadView.parse(first.output())
    away = set(view.live())
    assert len(away) == 3 and not any(view.terminal(t) for t in away)
    wait_for(lambda: not auditor.agent_tasks().get("a1", {"?"}) & away, 30, "the tasks to end while it is away")

    second = start_workload(procs, broker_url, "away", "--count", "0", "--churn", "0", name="workload-2")

    def delivered() -> WorkloadView | None:
        v = WorkloadView.parse(second.output())
        return v if all(v.terminal(t) for t in away) else None

    back = wait_for(delivered, 30, "the updates kept for the framework while it was away")
    seen_by_first = {u for t in away for _s, _src, u, _r in view.updates[t]}
    for task_id in away:
        finals = [(s, src, u) for s, src, u, _r in back.updates[task_id] if TaskState(s).terminal]
        assert [(s, src) for s, src, _u in finals] == [("TASK_FINISHED", "SOURCE_AGENT")], back.updates[task_id]
        assert finals[0][2] not in seen_by_first
