"""``bmesos run`` and ``bmesos watch`` (and the example frameworks) against a real master and agents."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from broker_mesos.core.errors import BrokerUnreachable
from broker_mesos.core.protocol import Offer, TaskState, TaskStatus
from broker_mesos.framework.driver import SchedulerDriver, task
from broker_mesos.framework.scheduler import Scheduler
from broker_mesos.testing.processes import Proc, ProcessGroup
from broker_mesos.testing.rabbit import free_port
from broker_mesos.testing.wait import wait_for

RUN_TIMEOUT = 60.0


def cluster(procs: ProcessGroup, url: str, work: Path, agents: int = 3) -> None:
    """A master and ``agents`` agents of 4 CPUs / 4 GB, each registered before this returns."""
    master = procs.bmesos("master", "master", "--broker", url, "--allocation-interval", "0.1",
                          "--offer-timeout", "5")
    master.wait_output(r"master \S+ serving")
    for i in range(1, agents + 1):
        agent = procs.bmesos(f"a{i}", "agent", "--broker", url, "--resources", "cpus:4;mem:4096", "--id", f"a{i}",
                             "--work-dir", str(work / f"a{i}"), "--heartbeat-interval", "1")
        agent.wait_output(rf"agent a{i} registered")


def finish(proc: Proc) -> tuple[int, str]:
    code = proc.wait(RUN_TIMEOUT)
    return code, proc.output()


def start_watch(procs: ProcessGroup, url: str, *args: str, name: str = "watch") -> Proc:
    watch = procs.bmesos(name, "watch", "--broker", url, *args)
    watch.wait_output(r"^watching status")
    return watch


def test_run_twenty_tasks_all_finish_and_watch_sees_them(broker_url: str, procs: ProcessGroup,
                                                          tmp_path: Path) -> None:
    cluster(procs, broker_url, tmp_path)
    watch = start_watch(procs, broker_url)
    watch_json = start_watch(procs, broker_url, "*.*.TASK_FINISHED", "--json", "--events", name="watch-json")
    run = procs.bmesos("run", "run", "--broker", broker_url, "--name", "job", "--count", "20", "--", "true")
    code, out = finish(run)
    assert code == 0, out
    finished = re.findall(r"^task (job-\d+) TASK_FINISHED on (a[123]) exit 0$", out, re.MULTILINE)
    assert sorted(t for t, _ in finished) == sorted(f"job-{i}" for i in range(20))
    assert "20 finished, 0 failed, 0 killed/lost" in out

    agent_of = dict((t, a) for t, a in finished)
    for i in range(20):  # time, framework, agent, task, state[, exit code]
        line = rf"^\d{{4}}-\d\d-\d\d [\d:.]+ job-[0-9a-f]{{8}} {agent_of[f'job-{i}']} job-{i} "
        watch.wait_output(line + "TASK_RUNNING$", timeout=10)
        watch.wait_output(line + "TASK_FINISHED exit 0$", timeout=10)

    def finished_json() -> list[dict[str, object]]:
        records = [json.loads(line) for line in watch_json.output().splitlines() if line.startswith("{")]
        return [r for r in records if r.get("kind") == "status"]

    watch_json.wait_output(r'"task_id": "job-19"', timeout=10)
    records = finished_json()
    assert len(records) == 20 and {r["state"] for r in records} == {"TASK_FINISHED"}
    assert all(str(r["framework_id"]).startswith("job-") for r in records)
    watch_json.wait_output(r'"kind": "event"', timeout=10)

    watch.signal(15)
    assert watch.wait(10) == 0


def test_failing_command_exits_nonzero_and_names_the_task(broker_url: str, procs: ProcessGroup,
                                                          tmp_path: Path) -> None:
    cluster(procs, broker_url, tmp_path, agents=1)
    code, out = finish(procs.bmesos("run", "run", "--broker", broker_url, "--", "false"))
    assert code == 1, out
    assert re.search(r"^task run-0 TASK_FAILED on a1 exit 1$", out, re.MULTILINE), out
    assert "0 finished, 1 failed, 0 killed/lost" in out
    stderr_hint = re.search(r"stderr: <work-dir>/(frameworks/run-\w+/tasks/run-0/stderr) on agent a1", out)
    assert stderr_hint, out
    assert (tmp_path / "a1" / stderr_hint.group(1)).exists()

    shell = procs.bmesos("shell", "run", "--broker", broker_url, "--name", "sh", "--count", "2", "--",
                         "echo oops >&2; exit 3")
    code, out = finish(shell)
    assert code == 1, out
    assert len(re.findall(r"^task sh-\d TASK_FAILED on a1 exit 3$", out, re.MULTILINE)) == 2, out
    hint = re.search(r"stderr: <work-dir>/(frameworks/sh-\w+/tasks/sh-0/stderr)", out)
    assert hint and (tmp_path / "a1" / hint.group(1)).read_text() == "oops\n"


def test_timeout_gives_up_with_exit_2(broker_url: str, procs: ProcessGroup, tmp_path: Path) -> None:
    cluster(procs, broker_url, tmp_path, agents=1)
    procs.bmesos("hog", "run", "--broker", broker_url, "--name", "hog", "--cpus", "4", "--", "sleep", "600")
    polls = iter(range(1000))

    def hog_running() -> bool:  # the cluster is busy, not too small: run waits, then gives up
        query = procs.bmesos(f"tasks-{next(polls)}", "tasks", "--broker", broker_url, "--state", "RUNNING")
        return query.wait(30) == 0 and "hog-0" in query.output()

    wait_for(hog_running, 30, "the hog task running")
    run = procs.bmesos("run", "run", "--broker", broker_url, "--timeout", "2", "--cpus", "4", "--", "true")
    code, out = finish(run)
    assert code == 2, out
    assert "timed out after 2s" in out


def test_unreachable_broker_is_one_line(procs: ProcessGroup) -> None:
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    for command in ("run", "watch"):
        args = ["--", "true"] if command == "run" else []
        code, out = finish(procs.bmesos(command, command, "--broker", url, "--connect-timeout", "1", *args))
        lines = [line for line in out.splitlines() if line.strip()]
        assert code != 0
        assert len(lines) == 1 and "cannot connect to the broker" in lines[0], out


def test_reference_flow_with_the_example_frameworks(broker_url: str, procs: ProcessGroup, tmp_path: Path) -> None:
    """Mesos' documented flow: fw1 launches <2 CPU, 1 GB> and <1 CPU, 2 GB> on a 4 CPU / 4 GB agent, and an
    observing fw2 is then offered the rest, <1 CPU, 1 GB>."""
    cluster(procs, broker_url, tmp_path, agents=1)
    watch = start_watch(procs, broker_url, "fw1.#")
    module = "broker_mesos.framework.examples.reference"
    fw1 = procs.python("fw1", "-m", module, "--broker", broker_url, "--framework-id", "fw1")
    fw1.wait_output(r"^offer \S+ agent=a1 cpus=4 mem=4096$")
    fw1.wait_output(r"^status task-1 TASK_RUNNING$")
    fw1.wait_output(r"^status task-2 TASK_RUNNING$")
    fw2 = procs.python("fw2", "-m", module, "--broker", broker_url, "--framework-id", "fw2", "--observe")
    fw2.wait_output(r"^offer \S+ agent=a1 cpus=1 mem=1024$", timeout=15)
    fw1.signal(15)
    assert fw1.wait(15) == 0
    watch.wait_output(r" fw1 a1 task-1 TASK_KILLED", timeout=15)  # TEARDOWN on exit killed its tasks
    watch.wait_output(r" fw1 a1 task-2 TASK_KILLED", timeout=15)


class Recorder(Scheduler):
    """Keeps what the driver delivers; the test thread reads it (list appends are atomic)."""

    def __init__(self) -> None:
        self.registered_ids: list[str] = []
        self.offers: list[Offer] = []
        self.updates: list[TaskStatus] = []

    def registered(self, driver: SchedulerDriver, framework_id: str) -> None:
        self.registered_ids.append(framework_id)

    def resource_offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        self.offers.extend(offers)

    def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
        self.updates.append(status)


def test_sdk_calls_from_another_thread(broker_url: str, procs: ProcessGroup, tmp_path: Path) -> None:
    """A driver started in the background; the test thread launches, kills and reconciles through it."""
    cluster(procs, broker_url, tmp_path, agents=1)
    recorder = Recorder()
    driver = SchedulerDriver(recorder, broker_url, "sdk", framework_id="sdk1")
    driver.start()
    try:
        wait_for(lambda: recorder.registered_ids == ["sdk1"], 10, "SUBSCRIBED")
        offer = wait_for(lambda: recorder.offers and recorder.offers[0], 10, "an offer")
        driver.launch(offer, [task("quick", offer.agent_id, ["true"], cpus=1, mem=64),
                              task("slow", offer.agent_id, "sleep 60", cpus=1, mem=64)])

        def states(task_id: str) -> list[TaskState]:
            return [s.state for s in recorder.updates if s.task_id == task_id]

        wait_for(lambda: TaskState.FINISHED in states("quick"), 15, "quick to finish")
        wait_for(lambda: TaskState.RUNNING in states("slow"), 15, "slow to run")
        driver.kill("slow")
        wait_for(lambda: TaskState.KILLED in states("slow"), 15, "slow to be killed")
        seen = len(recorder.updates)
        driver.reconcile(["quick", "never-launched"])
        wait_for(lambda: {s.task_id for s in recorder.updates[seen:]} >= {"quick", "never-launched"}, 10,
                 "reconciliation answers")
        answers = {s.task_id: s.state for s in recorder.updates[seen:]}
        assert answers["quick"] == TaskState.FINISHED and answers["never-launched"] == TaskState.LOST
        assert len({s.uuid for s in recorder.updates[:seen]}) == seen  # no duplicates delivered
    finally:
        driver.teardown()
        driver.stop()
        driver.join(10)


def test_driver_run_raises_broker_unreachable() -> None:
    driver = SchedulerDriver(Scheduler(), f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F", "x",
                             connect_timeout=0.5)
    with pytest.raises(BrokerUnreachable):
        driver.run()
