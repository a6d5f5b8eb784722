"""The job scheduler on a real cluster: a seconds schedule fires on time, and a SIGKILLed scheduler's
standby neither repeats nor loses a run (the rest of the job rules run on a virtual clock:
tests/framework/jobs/)."""

from __future__ import annotations

import datetime as dt
import itertools
import signal
from pathlib import Path

from broker_mesos.cli.control import ControlClient
from broker_mesos.cli.query import Client
from broker_mesos.core.protocol import TaskState
from broker_mesos.testing.processes import ProcessGroup
from broker_mesos.testing.wait import wait_for
from tests.integration.builtin_cluster import StatusRecorder, start_cluster, start_scheduler

FID = "jobs"


def instant(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def finished_runs(client: ControlClient, name: str) -> list[dict]:
    runs = client.call("history", name=name, limit=100)["items"]
    return [r for r in runs if r["state"] not in ("PENDING", "STAGING", "RUNNING")]


def test_a_job_every_two_seconds_fires_within_half_a_second_of_each_instant(
        broker_url: str, procs: ProcessGroup, work_root: Path) -> None:
    start_cluster(procs, broker_url, work_root, agents=("a",))
    start_scheduler(procs, broker_url, "job", "jobs-1")
    client = ControlClient(broker_url, FID, timeout=15)
    recorder = StatusRecorder(broker_url, FID)
    try:
        client.call("add", spec={"name": "tick", "schedule": "*/2 * * * * *", "timezone": "Europe/Berlin",
                                 "command": "true", "cpus": 0.1, "mem": 32, "starting_deadline": 5})
        wait_for(lambda: len([r for r in finished_runs(client, "tick") if r["state"] == "SUCCEEDED"]) >= 5, 60,
                 "five runs")
        runs = sorted(finished_runs(client, "tick"), key=lambda r: r["scheduled_for"])
        first_update: dict[str, float] = {}
        for seen in recorder.updates():
            first_update.setdefault(seen.status.task_id, seen.status.timestamp)
    finally:
        recorder.close()
    instants = [instant(r["scheduled_for"]) for r in runs]
    assert all(b - a == 2 for a, b in itertools.pairwise(instants)), instants  # none skipped or missed
    assert all(int(t) % 2 == 0 for t in instants)
    lateness = [first_update[r["task_id"]] - instant(r["scheduled_for"]) for r in runs if r["state"] == "SUCCEEDED"]
    assert len(lateness) >= 5 and all(0 <= late < 0.5 for late in lateness), lateness


def test_a_sigkilled_job_scheduler_repeats_and_loses_no_run(broker_url: str, procs: ProcessGroup,
                                                           work_root: Path) -> None:
    start_cluster(procs, broker_url, work_root, agents=("a",))
    first = start_scheduler(procs, broker_url, "job", "jobs-1")
    standby = procs.bmesos("jobs-2", "job", "scheduler", "--broker", broker_url, "--log-level", "info",
                           "--scheduler-id", "jobs-2")
    standby.wait_output(r"standing by", timeout=60)
    client = ControlClient(broker_url, FID, timeout=15)
    client.call("add", spec={"name": "beat", "schedule": "*/2 * * * * *", "command": "sleep 1", "cpus": 0.1,
                             "mem": 32, "starting_deadline": 10, "concurrency_policy": "allow"})
    wait_for(lambda: any(r["state"] == "RUNNING" for r in client.call("history", name="beat")["items"]), 60,
             "a run running")
    first.signal(signal.SIGKILL)  # with a run in flight
    standby.wait_output(r"scheduler \S+ active \(scheduler jobs-2\)", timeout=60)
    wait_for(lambda: len([r for r in finished_runs(client, "beat") if r["state"] == "SUCCEEDED"]) >= 6, 90,
             "six runs done")
    runs = sorted(finished_runs(client, "beat"), key=lambda r: r["scheduled_for"])
    instants = [instant(r["scheduled_for"]) for r in runs]
    assert len(set(instants)) == len(instants), instants  # no instant ran twice
    assert all(b - a == 2 for a, b in itertools.pairwise(instants)), instants  # and none was lost
    assert {r["state"] for r in runs} == {"SUCCEEDED"}, runs
    ran: dict[str, int] = {}  # per run and attempt (task id <job>_<run>_<attempt>_<n>), the tasks that ran
    for task in Client(broker_url, 15, 10).all_items("tasks", framework_id=FID, completed=True):
        if task.state in (TaskState.RUNNING, TaskState.FINISHED):
            attempt = task.task_id.rsplit("_", 1)[0]
            ran[attempt] = ran.get(attempt, 0) + 1
    assert ran and set(ran.values()) == {1}, ran  # no attempt of any run was launched twice
    assert {r["task_id"].rsplit("_", 1)[0] for r in runs} <= set(ran)
