"""Health checks run by the agent: the scheduling of ``agent.health.HealthChecks`` on a fake loop,
then a real agent process (driven by the fake master over a real broker) with HTTP, TCP and COMMAND
checks, their TASK_RUNNING updates with ``healthy``, and the kill after the consecutive failures. The
agent runs as root and its tasks (and command checks) as user nobody."""

from __future__ import annotations

import os
import queue
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from broker_mesos.agent.health import Ended, HealthChecks, Probe
from broker_mesos.core.agent_state import TaskEntry
from broker_mesos.core.health import REASON_TASK_HEALTH_CHECK_STATUS_UPDATED
from broker_mesos.core.protocol import CommandInfo, HealthCheck, HealthCheckType, TaskInfo, TaskState, TaskStatus
from broker_mesos.core.resources import Resources
from broker_mesos.testing.fake_master import FakeMaster
from broker_mesos.testing.processes import Proc, ProcessGroup
from broker_mesos.testing.wait import wait_for

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="checks run as the task's user: the agent must be root")

RESOURCES = "cpus:4;mem:2048;disk:1000;ports:[31000-31099]"
FAST = {"delay_seconds": 0.0, "interval_seconds": 0.3, "timeout_seconds": 2.0}


def start_agent(procs: ProcessGroup, broker_url: str, work: Path, agent_id: str) -> Proc:
    proc = procs.bmesos(f"agent-{agent_id}-{len(procs.procs)}", "agent", "--broker", broker_url, "--id", agent_id,
                        "--resources", RESOURCES, "--work-dir", str(work), "--heartbeat-interval", "0.5",
                        "--kill-grace", "1", "--kill-on-stop")
    proc.wait_output(rf"agent {agent_id} registered with", timeout=20)
    return proc


def task(task_id: str, command: str, check: HealthCheck, ports: str = "") -> TaskInfo:
    resources = Resources.parse("cpus:0.1;mem:64" + (f";ports:[{ports}]" if ports else ""))
    return TaskInfo(task_id=task_id, agent_id="x", resources=resources, command=CommandInfo(command),
                    health_check=check)


def wait_update(master: FakeMaster, task_id: str, pred: Callable[[TaskStatus], bool], what: str,
                timeout: float = 20.0) -> TaskStatus:
    def found() -> TaskStatus | None:
        master.poll()
        return next((u for u in master.statuses if u.task_id == task_id and pred(u)), None)

    return wait_for(found, timeout, f"{task_id}: {what} (seen: {updates(master, task_id)})")


def updates(master: FakeMaster, task_id: str) -> list[tuple[str, bool | None, str]]:
    master.poll()
    return [(u.state.value, u.healthy, u.message) for u in master.statuses if u.task_id == task_id]


def health_updates(master: FakeMaster, task_id: str) -> list[TaskStatus]:
    master.poll()
    return [u for u in master.statuses if u.task_id == task_id and u.reason == REASON_TASK_HEALTH_CHECK_STATUS_UPDATED
            and u.state is TaskState.RUNNING]


def processes_with(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if marker in line and "ps -eo" not in line]


class FakeLoop:
    """The bus calls HealthChecks makes: timers fire when the test says, results wait in a queue."""

    def __init__(self) -> None:
        self.timers: list[tuple[float, Callable[[], None]]] = []
        self.posted: queue.Queue[Callable[[], None]] = queue.Queue()

    def call_later(self, delay: float, fn: Callable[[], None]) -> object:
        handle = (delay, fn)
        self.timers.append(handle)
        return handle

    def cancel(self, handle: object) -> None:
        if handle in self.timers:
            self.timers.remove(handle)  # type: ignore[arg-type]

    def call_threadsafe(self, fn: Callable[[], None]) -> None:
        self.posted.put(fn)

    def fire(self) -> list[float]:
        """Run every timer set so far; their delays."""
        due, self.timers = self.timers, []
        for _delay, fn in due:
            fn()
        return [delay for delay, _fn in due]

    def run_posted(self) -> None:
        """Wait for one result handed back by a check's thread and run it, as the loop would."""
        self.posted.get(timeout=10)()


class ScriptedChecks(HealthChecks):
    """Checks whose results the test scripts; each waits for ``gate`` (set by default)."""

    def __init__(self, loop: FakeLoop, results: list[tuple[bool, str]]) -> None:
        self.published: list[tuple[str, bool, str]] = []
        self.killed: list[str] = []
        super().__init__(loop, None, Path("/nonexistent"), "a1",  # type: ignore[arg-type]
                         lambda e, healthy, msg: self.published.append((e.task_id, healthy, msg)),
                         lambda e: self.killed.append(e.task_id), clock=lambda: self.now)
        self.now = 0.0
        self.results = results
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()

    def run_check(self, framework_id: str, task: TaskInfo, check: HealthCheck, probe: Probe) -> tuple[bool, str]:
        self.calls += 1
        assert self.gate.wait(10)
        return self.results.pop(0)

    def idle(self) -> None:
        """Wait until every check submitted so far has run."""
        assert self._pool is not None
        self._pool.shutdown(wait=True)
        self._pool = None


def entry(task_id: str, **check: Any) -> TaskEntry:
    hc = HealthCheck(HealthCheckType.TCP, port=1, **{**FAST, "grace_period_seconds": 0.0, **check})
    return TaskEntry(task_id, "fw1", task(task_id, "sleep 60", hc), TaskState.RUNNING)


def test_checks_follow_delay_then_interval_and_the_kill_ends_them() -> None:
    loop = FakeLoop()
    checks = ScriptedChecks(loop, [(False, "refused"), (True, "accepted"), (False, "boom"), (False, "boom")])
    t = entry("t1", delay_seconds=1.5, interval_seconds=0.3, consecutive_failures=2)
    checks.start(t)
    checks.start(t)  # twice: still one schedule
    assert loop.fire() == [1.5]  # the first check, after the delay; the next is due an interval later
    loop.run_posted()
    assert checks.published == [("t1", False, "health check failed: refused")] and checks.healthy(t.key) is False
    for _ in range(3):
        assert loop.fire() == [0.3]
        loop.run_posted()
    assert checks.published[1:] == [("t1", True, "health check passed: accepted"),
                                    ("t1", False, "health check failed: boom")]
    assert checks.killed == ["t1"] and loop.timers == []  # killed: no more checks
    assert checks.stop(t.key) == Ended(False, "killed after 2 consecutive failed health checks: boom")
    assert checks.stop(t.key) is None
    checks.close()


def test_a_check_still_running_is_not_started_again() -> None:
    loop = FakeLoop()
    checks = ScriptedChecks(loop, [(True, "ok"), (True, "ok")])
    checks.gate.clear()
    t = entry("t2")
    checks.start(t)
    loop.fire()  # started; it hangs on the gate
    wait_for(lambda: checks.calls == 1, 10, "the check to start")
    loop.fire()
    loop.fire()  # due twice more while it runs: skipped
    checks.gate.set()
    checks.idle()
    assert checks.calls == 1
    loop.run_posted()
    assert checks.published == [("t2", True, "health check passed: ok")]
    assert loop.posted.empty()
    checks.close()


def test_a_task_that_ends_drops_its_check_in_flight() -> None:
    loop = FakeLoop()
    checks = ScriptedChecks(loop, [(False, "late")])
    checks.gate.clear()
    t = entry("t3")
    checks.start(t)
    loop.fire()
    wait_for(lambda: checks.calls == 1, 10, "the check to start")
    assert checks.stop(t.key) == Ended(None, "")
    assert loop.timers == []
    checks.gate.set()
    loop.run_posted()  # the late result is ignored
    assert checks.published == [] and checks.killed == []
    checks.close()


def test_failures_in_the_grace_period_publish_nothing() -> None:
    loop = FakeLoop()
    checks = ScriptedChecks(loop, [(False, "starting"), (False, "still starting"), (True, "up")])
    t = entry("t4", grace_period_seconds=10.0, consecutive_failures=1)
    checks.start(t)
    for now in (1.0, 2.0, 3.0):
        checks.now = now
        loop.fire()
        loop.run_posted()
    assert checks.published == [("t4", True, "health check passed: up")] and checks.killed == []
    checks.close()


@needs_root
def test_http_check_turns_the_task_healthy(procs: ProcessGroup, broker_url: str, master: FakeMaster,
                                           work_root: Path) -> None:
    start_agent(procs, broker_url, work_root / "http", "hc1")
    check = HealthCheck(HealthCheckType.HTTP, port_index=1, path="/health.txt", grace_period_seconds=30.0, **FAST)
    master.run("hc1", task("web", "echo ok > health.txt; exec python3 -m http.server 31011 --bind 127.0.0.1",
                           check, ports="31010-31011"))
    healthy = wait_update(master, "web", lambda u: u.healthy is True, "a healthy update")
    assert healthy.state is TaskState.RUNNING and healthy.reason == REASON_TASK_HEALTH_CHECK_STATUS_UPDATED
    assert healthy.message == "health check passed: HTTP 200 from 127.0.0.1:31011/health.txt"
    assert all(u.healthy is not False for u in master.statuses if u.task_id == "web")  # start-up failures: grace
    master.kill("hc1", "web")
    killed = master.wait_state("web", TaskState.KILLED)
    assert killed.healthy is True and killed.message.startswith("killed on request")  # carries the last health
    assert len(health_updates(master, "web")) == 1  # healthy once: later successes change nothing


@needs_root
def test_http_error_status_turns_a_healthy_task_unhealthy(procs: ProcessGroup, broker_url: str,
                                                          master: FakeMaster, work_root: Path) -> None:
    work = work_root / "http404"
    start_agent(procs, broker_url, work, "hc5")
    check = HealthCheck(HealthCheckType.HTTP, port=31050, path="/h", grace_period_seconds=30.0,
                        consecutive_failures=1000, **FAST)
    master.run("hc5", task("nf", "echo ok > h; exec python3 -m http.server 31050 --bind 127.0.0.1", check))
    wait_update(master, "nf", lambda u: u.healthy is True, "a healthy update")
    (work / "frameworks" / "fw1" / "tasks" / "nf" / "h").unlink()  # from now on: 404
    unhealthy = wait_update(master, "nf", lambda u: u.healthy is False, "an unhealthy update")
    assert unhealthy.message == "health check failed: HTTP 404 from 127.0.0.1:31050/h"
    assert unhealthy.reason == REASON_TASK_HEALTH_CHECK_STATUS_UPDATED
    assert [u.healthy for u in health_updates(master, "nf")] == [True, False]
    master.kill("hc5", "nf")
    assert master.wait_state("nf", TaskState.KILLED).healthy is False


@needs_root
def test_tcp_check_of_a_closed_port_kills_the_task(procs: ProcessGroup, broker_url: str, master: FakeMaster,
                                                   work_root: Path) -> None:
    start_agent(procs, broker_url, work_root / "tcp", "hc2")
    check = HealthCheck(HealthCheckType.TCP, port=31020, grace_period_seconds=0.0, consecutive_failures=2, **FAST)
    master.run("hc2", task("closed", "exec sleep 60", check))
    killed = master.wait_state("closed", TaskState.KILLED)
    failure = "TCP connection to 127.0.0.1:31020 failed: Connection refused"
    assert killed.healthy is False and killed.reason == REASON_TASK_HEALTH_CHECK_STATUS_UPDATED
    assert killed.message == f"killed after 2 consecutive failed health checks: {failure}"
    (unhealthy,) = health_updates(master, "closed")  # unknown -> unhealthy once, before the kill
    assert unhealthy.healthy is False and unhealthy.message == f"health check failed: {failure}"
    assert [s for s, _h, _m in updates(master, "closed")] == ["TASK_STARTING", "TASK_RUNNING", "TASK_RUNNING",
                                                             "TASK_KILLED"]


@needs_root
def test_command_check_runs_as_the_task_user_in_its_sandbox(procs: ProcessGroup, broker_url: str,
                                                           master: FakeMaster, work_root: Path) -> None:
    start_agent(procs, broker_url, work_root / "command", "hc3")
    probe = CommandInfo('test -f ok && test "$(id -un)" = nobody && test "$PWD" = "$BMESOS_SANDBOX" '
                        '&& test "$CHECK_VAR" = yes && test "$TASK_VAR" = task', environment={"CHECK_VAR": "yes"})
    check = HealthCheck(HealthCheckType.COMMAND, command=probe, grace_period_seconds=60.0, **FAST)
    info = task("file", "sleep 1.5; touch ok; exec sleep 60", check)
    info = TaskInfo(info.task_id, info.agent_id, info.resources,
                    CommandInfo(info.command.value, environment={"TASK_VAR": "task"}), health_check=check)
    master.run("hc3", info)
    healthy = wait_update(master, "file", lambda u: u.healthy is True, "a healthy update")
    assert healthy.message == "health check passed: command exited with 0"
    assert [u.healthy for u in health_updates(master, "file")] == [True]  # failures before `ok`: in the grace
    master.kill("hc3", "file")
    master.wait_state("file", TaskState.KILLED)


@needs_root
def test_a_command_check_past_its_timeout_fails_and_is_killed(procs: ProcessGroup, broker_url: str,
                                                              master: FakeMaster, work_root: Path) -> None:
    start_agent(procs, broker_url, work_root / "timeout", "hc4")
    check = HealthCheck(HealthCheckType.COMMAND, command=CommandInfo("exec sleep 7.77"), delay_seconds=0.0,
                        interval_seconds=0.2, timeout_seconds=0.5, grace_period_seconds=0.0, consecutive_failures=2)
    master.run("hc4", task("slow", "exec sleep 60", check))
    unhealthy = wait_update(master, "slow", lambda u: u.healthy is False, "an unhealthy update")
    assert unhealthy.message == "health check failed: command timed out after 0.5s"
    killed = master.wait_state("slow", TaskState.KILLED)
    assert killed.message == "killed after 2 consecutive failed health checks: command timed out after 0.5s"
    wait_for(lambda: not processes_with("sleep 7.77"), 5, "the timed-out checks to be killed")


@needs_root
def test_a_restarted_agent_checks_its_reattached_tasks_from_scratch(procs: ProcessGroup, broker_url: str,
                                                                    master: FakeMaster, work_root: Path) -> None:
    work = work_root / "restart"
    first = start_agent(procs, broker_url, work, "hc6")
    check = HealthCheck(HealthCheckType.COMMAND, command=CommandInfo("true"), **FAST)
    master.run("hc6", task("kept", "exec sleep 60", check))
    wait_update(master, "kept", lambda u: u.healthy is True, "a healthy update")
    first.kill()  # SIGKILL: the task keeps running, its health state is lost
    start_agent(procs, broker_url, work, "hc6")
    wait_for(lambda: [u.healthy for u in health_updates(master, "kept")] == [True, True], 20,
             "the re-attached task to be reported healthy again")
    master.kill("hc6", "kept")
    assert master.wait_state("kept", TaskState.KILLED).healthy is True
