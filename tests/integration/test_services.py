"""The service scheduler on a real cluster (a master, two agents host-a and host-b, real tasks): the
acceptance tests of issue 10's services."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker_mesos.cli.control import ControlClient
from broker_mesos.cli.query import Client
from broker_mesos.core.protocol import TaskState
from broker_mesos.testing.processes import ProcessGroup
from broker_mesos.testing.wait import wait_for
from tests.integration.builtin_cluster import (
    StatusRecorder,
    running,
    start_cluster,
    start_scheduler,
    wait_status,
)

FID = "services"


@pytest.fixture
def cluster(broker_url: str, procs: ProcessGroup, work_root: Path) -> ControlClient:
    start_cluster(procs, broker_url, work_root)
    start_scheduler(procs, broker_url, "service", "services-1")
    return ControlClient(broker_url, FID, timeout=15)


@pytest.fixture
def recorder(broker_url: str) -> Iterator[StatusRecorder]:
    rec = StatusRecorder(broker_url, FID)
    yield rec
    rec.close()


def spec(name: str, command: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "command": command, "cpus": 0.1, "mem": 32, **more}


def live_tasks(url: str) -> set[str]:
    items = Client(url, 15, 10).all_items("tasks", framework_id=FID)
    return {t.task_id for t in items if not t.state.terminal}


def test_unique_hostnames_leave_one_pending_with_the_reason_and_a_killed_instance_is_replaced(
        cluster: ControlClient, broker_url: str, procs: ProcessGroup) -> None:
    cluster.call("deploy", spec=spec("uniq", "exec sleep 600", instances=3, constraints={"hostname": "UNIQUE"}))
    answer = wait_status(cluster, "uniq", lambda a: len(running(a)) == 2 and len(a["pending"]) == 1, 60,
                         "2 running, 1 pending")
    assert {i["hostname"] for i in running(answer)} == {"host-a", "host-b"}
    assert "UNIQUE hostname: 2 agents for 3 instances" in answer["pending"][0]["reason"]

    victim = running(answer)[0]
    procs.bmesos("kill", "kill", victim["task_id"], "--broker", broker_url).wait(30)
    answer = wait_status(cluster, "uniq", lambda a: len(running(a)) == 2 and victim["task_id"] not in
                         {i["task_id"] for i in running(a)}, 60, "the killed instance replaced")
    assert {i["hostname"] for i in running(answer)} == {"host-a", "host-b"}

    cluster.call("scale", name="uniq", instances=2)
    answer = wait_status(cluster, "uniq", lambda a: not a["pending"] and len(running(a)) == 2, 30, "scaled to 2")
    assert live_tasks(broker_url) == {i["task_id"] for i in running(answer)}


def test_a_crash_looping_command_is_relaunched_with_delays_growing_to_the_cap(
        cluster: ControlClient, recorder: StatusRecorder) -> None:
    cluster.call("deploy", spec=spec("crash", "exit 3", backoff={"initial": 0.5, "factor": 2, "max": 2,
                                                                 "reset_after": 60}))
    failed = lambda: [s for s in recorder.with_state(TaskState.FAILED) if s.task_id.startswith("crash_")]  # noqa: E731
    wait_status(cluster, "crash", lambda a: len(failed()) >= 6, 90, "six failures")
    first_update: dict[str, float] = {}
    for seen in recorder.updates():
        first_update.setdefault(seen.status.task_id, seen.status.timestamp)
    ends = [(s.timestamp, s.task_id) for s in failed()]
    starts = sorted(first_update.values())
    gaps = []
    for ended_at, _ in ends[:5]:  # from a failure to the next launch's first update (the agent's clock)
        gaps.append(min(t for t in starts if t > ended_at) - ended_at)
    expected = [0.5, 1, 2, 2, 2]
    assert all(gap >= want * 0.95 for gap, want in zip(gaps, expected, strict=True)), gaps
    assert gaps[2] > gaps[0] * 2.5, gaps  # grew: 2 s against 0.5 s
    assert all(gap < want + 3 for gap, want in zip(gaps, expected, strict=True)), gaps  # and no more than that
    answer = cluster.call("status", name="crash")
    assert answer["backoff"]["failures"] >= 6
    assert "exit" in (answer["backoff"]["last_failure"] or "")


def test_a_rolling_update_keeps_min_healthy_and_a_failing_version_reverts_by_itself(
        cluster: ControlClient, broker_url: str) -> None:
    check = {"type": "command", "command": "true", "delay": 0, "interval": 0.3, "timeout": 2,
             "grace_period": 5, "consecutive_failures": 2}
    upgrade = {"max_parallel": 1, "min_healthy": 2, "healthy_deadline": 8}
    base = spec("roll", "exec sleep 600", instances=3, health_check=check, upgrade=upgrade, env={"V": "1"})
    cluster.call("deploy", spec=base)
    wait_status(cluster, "roll", lambda a: a["healthy"] == 3 and a["deployment"] is None, 60, "3 healthy")

    answer = cluster.call("status", name="roll")
    healthy = {i["task_id"] for i in answer["instances"] if i["healthy"]}
    floor: list[int] = []

    def count(rec: StatusRecorder) -> None:  # on every status update, the healthy instances left
        status = rec.seen[-1].status
        if status.state is TaskState.RUNNING and status.healthy:
            healthy.add(status.task_id)
        else:
            healthy.discard(status.task_id)
        floor.append(len(healthy))

    rec = StatusRecorder(broker_url, FID, count)
    try:
        cluster.call("deploy", spec={**base, "env": {"V": "2"}})
        answer = wait_status(cluster, "roll", lambda a: a["deployment"] is None and a["healthy"] == 3
                             and all(i["version"] == a["version"] for i in a["instances"]), 120, "v2 everywhere")
    finally:
        rec.close()
    assert floor and min(floor) >= 2, floor
    assert any(n == 2 for n in floor), floor  # it did take instances down, one at a time
    assert answer["spec"]["env"] == {"V": "2"}

    bad = {**base, "env": {"V": "3"}, "health_check": {**check, "command": "false"}}
    cluster.call("deploy", spec=bad)
    answer = wait_status(cluster, "roll", lambda a: a["deployment"] is None and a["healthy"] == 3
                         and a["spec"]["env"] == {"V": "2"}, 180, "reverted to V=2")
    assert len(running(answer)) == 3


def test_an_instance_failing_its_http_health_check_is_killed_and_replaced(
        cluster: ControlClient, recorder: StatusRecorder) -> None:
    command = ("touch ok; (sleep 4; rm -f ok) & exec python3 -m http.server \"$PORT0\" --bind 127.0.0.1")
    check = {"type": "http", "path": "/ok", "delay": 0, "interval": 0.5, "timeout": 2, "grace_period": 10,
             "consecutive_failures": 2}
    cluster.call("deploy", spec=spec("web", command, ports=1, health_check=check,
                                     backoff={"initial": 0.2, "factor": 2, "max": 1, "reset_after": 60}))
    first = wait_status(cluster, "web", lambda a: a["healthy"] == 1, 60, "healthy")["instances"][0]["task_id"]
    killed = wait_for_update(recorder, lambda s: s.task_id == first and s.state is TaskState.KILLED, 60)
    assert killed.healthy is False and killed.reason == "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED", killed
    states = [(s.status.state, s.status.healthy) for s in recorder.updates() if s.status.task_id == first]
    assert (TaskState.RUNNING, True) in states and (TaskState.RUNNING, False) in states, states
    wait_status(cluster, "web", lambda a: len(running(a)) == 1 and running(a)[0]["task_id"] != first, 60,
                "a new instance")


def wait_for_update(recorder: StatusRecorder, condition: Any, timeout: float) -> Any:
    return wait_for(lambda: next((s.status for s in recorder.updates() if condition(s.status)), None), timeout,
                    "a status update")


def test_a_sigkilled_scheduler_loses_and_duplicates_nothing(
        broker_url: str, procs: ProcessGroup, work_root: Path) -> None:
    start_cluster(procs, broker_url, work_root)
    first = start_scheduler(procs, broker_url, "service", "sched-1")
    standby = procs.bmesos("sched-2", "service", "scheduler", "--broker", broker_url, "--log-level", "info",
                           "--scheduler-id", "sched-2")
    standby.wait_output(r"standing by", timeout=60)
    client = ControlClient(broker_url, FID, timeout=15)
    recorder = StatusRecorder(broker_url, FID)
    try:
        client.call("deploy", spec=spec("steady", "exec sleep 600", instances=6))
        wait_for(lambda: recorder.updates(), 60, "a first status update")
        first.signal(signal.SIGKILL)  # mid-deployment: some launched, maybe some recorded and not yet sent
        standby.wait_output(r"scheduler \S+ active \(scheduler sched-2\)", timeout=60)
        answer = wait_status(client, "steady", lambda a: len(running(a)) == 6 and not a["pending"], 90,
                             "6 running after the takeover")
        ids = {i["task_id"] for i in running(answer)}
        assert live_tasks(broker_url) == ids  # the master runs exactly these: none lost, none twice
        started = {s.status.task_id for s in recorder.updates() if s.status.state is TaskState.RUNNING}
        assert ids <= started
        assert len({i["slot"] for i in running(answer)}) == 6
    finally:
        recorder.close()
