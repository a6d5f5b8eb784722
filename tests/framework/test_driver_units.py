"""The broker-free parts of the scheduler SDK and of ``bmesos run``: task building, deduplication,
call encoding and batching (read back from the driver's not-yet-connected outbox), and the one-shot
framework's bookkeeping."""

from __future__ import annotations

import logging
import uuid

import pytest

from broker_mesos.bus import topology
from broker_mesos.cli.run import failure_report
from broker_mesos.core import codec, protocol
from broker_mesos.core.protocol import CommandInfo, Offer, TaskState, TaskStatus
from broker_mesos.core.resources import Resources
from broker_mesos.framework.driver import RecentIds, SchedulerDriver, default_framework_id, identifier, task
from broker_mesos.framework.examples.reference import ReferenceScheduler, offer_line
from broker_mesos.framework.examples.sleeper import SleeperScheduler
from broker_mesos.framework.oneshot import OneShotScheduler, RunPlan, command_for, describe
from broker_mesos.framework.scheduler import Scheduler

UNREACHABLE = "amqp://guest:guest@127.0.0.1:1/%2F"


def _offer(offer_id: str = "o1", agent_id: str = "a1", res: str = "cpus:4;mem:4096") -> Offer:
    return Offer(offer_id=offer_id, framework_id="fw", agent_id=agent_id, resources=Resources.parse(res))


def _status(task_id: str, state: TaskState, agent_id: str = "a1", exit_code: int | None = None,
            source: str = "SOURCE_AGENT", message: str = "") -> TaskStatus:
    return TaskStatus(task_id=task_id, framework_id="fw", agent_id=agent_id, state=state, uuid=uuid.uuid4().hex,
                      timestamp=1.0, exit_code=exit_code, source=source, message=message)


def _sent(driver: SchedulerDriver) -> list[tuple[str, codec.Envelope, str | None, str | None]]:
    """The calls a driver has queued before connecting: (routing key, envelope, reply_to, correlation_id)."""
    out = []
    for item in driver.bus._outbox:
        assert item.exchange == topology.MASTER
        assert item.properties.delivery_mode == 2
        out.append((item.routing_key, codec.decode(item.body), item.properties.reply_to,
                    item.properties.correlation_id))
    return out


# -- task building ------------------------------------------------------------------------------


def test_task_from_a_string_runs_through_the_shell() -> None:
    info = task("t1", "a1", "echo $HOME | wc -c", cpus=0.5, mem=64, env={"X": "1"})
    assert info.command == CommandInfo(value="echo $HOME | wc -c", shell=True, arguments=[], environment={"X": "1"})
    assert info.resources == Resources.of(cpus=0.5, mem=64)
    assert (info.task_id, info.agent_id, info.name) == ("t1", "a1", "t1")


def test_task_from_a_list_is_argv_without_shell() -> None:
    info = task("t1", "a1", ["sleep", "5"])
    assert info.command == CommandInfo(value="sleep", shell=False, arguments=["sleep", "5"])
    with pytest.raises(ValueError):
        task("t1", "a1", ["sleep", "5"], shell=True)
    with pytest.raises(ValueError):
        task("t1", "a1", [])


def test_task_resources_text_replaces_cpus_and_mem() -> None:
    info = task("t1", "a1", "true", cpus=8, resources="cpus:1;mem:10;ports:[31000-31001]")
    assert info.resources == Resources.parse("cpus:1;mem:10;ports:[31000-31001]")
    program = task("t2", "a1", "/bin/true", shell=False)
    assert program.command.arguments == ["/bin/true"] and not program.command.shell


def test_built_tasks_survive_the_codec() -> None:
    accept = protocol.Accept("fw", ["o1"], [task("t1", "a1", ["echo", "hi"]), task("t2", "a1", "exit 3")])
    assert codec.decode(codec.encode(accept, 1.0)).body == accept


# -- ids and dedup ------------------------------------------------------------------------------


def test_identifier_and_default_framework_id() -> None:
    assert identifier("my app/v2") == "my-app-v2"
    assert identifier("***") == "framework"
    fw = default_framework_id("my app")
    assert fw.startswith("my-app-") and len(fw) == len("my-app-") + 8 and codec.ID_PATTERN.match(fw)
    assert default_framework_id("x") != default_framework_id("x")


def test_recent_ids_remembers_a_bounded_window() -> None:
    seen = RecentIds(capacity=3)
    assert [seen.seen(x) for x in "abca"] == [False, False, False, True]
    seen.seen("d")  # evicts the least recently seen: b ("a" was just touched)
    assert len(seen) == 3
    assert seen.seen("a") and not seen.seen("b")


class _Recorder(Scheduler):
    def __init__(self) -> None:
        self.updates: list[TaskStatus] = []
        self.errors: list[str] = []

    def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
        if status.task_id == "boom":
            raise RuntimeError("user bug")
        self.updates.append(status)

    def error(self, driver: SchedulerDriver, message: str) -> None:
        self.errors.append(message)


def test_driver_drops_duplicate_updates_and_survives_callback_errors(caplog: pytest.LogCaptureFixture) -> None:
    recorder = _Recorder()
    driver = SchedulerDriver(recorder, UNREACHABLE, "dedup")
    first = _status("t1", TaskState.RUNNING)
    with caplog.at_level(logging.ERROR):
        driver._deliver_updates([first, _status("boom", TaskState.RUNNING), first])
        driver._deliver_updates([first, _status("t1", TaskState.FINISHED)])
    assert [(s.task_id, s.state) for s in recorder.updates] == [("t1", TaskState.RUNNING), ("t1", TaskState.FINISHED)]
    assert "status_update raised" in caplog.text and "user bug" in caplog.text


def test_default_call_refused_reaches_error() -> None:
    recorder = _Recorder()
    driver = SchedulerDriver(recorder, UNREACHABLE, "err")
    recorder.call_refused(driver, protocol.Error("offer o9 is unknown", "ACCEPT", "c1"))
    assert recorder.errors == ["ACCEPT refused: offer o9 is unknown"]


def test_calls_go_to_the_master_with_reply_to_and_correlation_id() -> None:
    driver = SchedulerDriver(Scheduler(), UNREACHABLE, "calls", framework_id="fw1")
    ids = [driver.accept(["o1"], [task("t1", "a1", "true")], refuse_seconds=2), driver.decline(["o2"]),
           driver.kill("t1"), driver.revive(), driver.suppress(), driver.reconcile(), driver.teardown()]
    sent = _sent(driver)
    assert [key for key, *_ in sent] == ["ACCEPT", "DECLINE", "KILL", "REVIVE", "SUPPRESS", "RECONCILE", "TEARDOWN"]
    for (_key, env, reply_to, correlation_id), call_id in zip(sent, ids, strict=True):
        assert env.id == correlation_id == call_id
        assert reply_to == "offers.fw1"
        assert env.body.framework_id == "fw1"
    assert sent[1][1].body.refuse_seconds == protocol.DEFAULT_REFUSE_SECONDS


def test_bad_framework_id_is_refused_early() -> None:
    with pytest.raises(ValueError):
        SchedulerDriver(Scheduler(), UNREACHABLE, "x", framework_id="has space")


# -- bmesos run: command and bookkeeping ------------------------------------------------------------


@pytest.mark.parametrize(("argv", "expected"), [
    (["true"], CommandInfo("true", shell=False, arguments=["true"])),
    (["echo", "a b"], CommandInfo("echo", shell=False, arguments=["echo", "a b"])),
    (["echo a | wc -c"], CommandInfo("echo a | wc -c", shell=True)),
    (["exit 3"], CommandInfo("exit 3", shell=True)),
    (["$HOME"], CommandInfo("$HOME", shell=True)),
])
def test_command_for(argv: list[str], expected: CommandInfo) -> None:
    assert command_for(argv) == expected


def _plan(count: int = 5, res: str = "cpus:1;mem:100") -> RunPlan:
    return RunPlan("job", count, Resources.parse(res), command_for(["true"]))


def test_plan_packs_as_many_tasks_as_fit_each_offer() -> None:
    plan = _plan(5)
    first = plan.pack(_offer("o1", "a1", "cpus:2.5;mem:1000"))
    assert [t.task_id for t in first] == ["job-0", "job-1"]
    assert {t.agent_id for t in first} == {"a1"}
    assert plan.pack(_offer("o2", "a2", "cpus:0.5;mem:1000")) == []
    rest = plan.pack(_offer("o3", "a3", "cpus:16;mem:16000"))
    assert [t.task_id for t in rest] == ["job-2", "job-3", "job-4"]
    assert plan.all_launched and plan.pack(_offer("o4")) == []


def test_refused_accept_puts_its_tasks_back_first() -> None:
    plan = _plan(3)
    tasks = plan.pack(_offer("o1", "a1", "cpus:2;mem:1000"))
    plan.sent("call-1", tasks)
    assert plan.refused("call-1") == ["job-0", "job-1"]
    assert list(plan.pending) == ["job-0", "job-1", "job-2"]
    assert plan.refused("call-1") == []


def test_plan_counts_outcomes_once_and_decides_the_exit_code() -> None:
    plan = _plan(4)
    assert not plan.record(_status("job-0", TaskState.RUNNING))
    assert plan.running == 1
    assert plan.record(_status("job-0", TaskState.FINISHED, exit_code=0))
    assert not plan.record(_status("job-0", TaskState.FAILED, exit_code=1))  # a late contradiction is ignored
    assert not plan.record(_status("other-9", TaskState.FINISHED))  # not ours
    assert plan.record(_status("job-1", TaskState.FAILED, exit_code=3))
    assert plan.record(_status("job-2", TaskState.LOST, source="SOURCE_MASTER"))
    assert not plan.done and plan.exit_code == 1
    assert plan.record(_status("job-3", TaskState.KILLED))
    assert plan.done
    assert plan.summary() == "1 finished, 1 failed, 2 killed/lost"
    assert plan.exit_code == 1
    assert [s.task_id for s in plan.unsuccessful()] == ["job-1", "job-2", "job-3"]


def test_all_finished_exits_zero() -> None:
    plan = _plan(2)
    for task_id in plan.task_ids:
        plan.record(_status(task_id, TaskState.FINISHED, exit_code=0))
    assert plan.done and plan.exit_code == 0 and plan.summary() == "2 finished, 0 failed, 0 killed/lost"


def test_describe_and_failure_report_name_the_task_and_its_stderr() -> None:
    failed = _status("job-1", TaskState.FAILED, agent_id="a2", exit_code=3, message="exited with 3")
    assert describe(failed) == "task job-1 TASK_FAILED on a2 exit 3"
    assert describe(_status("job-2", TaskState.LOST)) == "task job-2 TASK_LOST on a1"
    plan = _plan(1)
    plan.record(_status("job-0", TaskState.FAILED, agent_id="a2", exit_code=3, message="exited with 3"))
    report = "\n".join(failure_report(plan, "job-abc"))
    assert "task job-0 TASK_FAILED on a2 exit 3: exited with 3" in report
    assert "frameworks/job-abc/tasks/job-0/stderr on agent a2" in report


class _Lines:
    def __init__(self) -> None:
        self.launched_ids: list[str] = []
        self.finals: list[str] = []
        self.problems: list[str] = []
        self.done = False

    def launched(self, plan: RunPlan, tasks: list[protocol.TaskInfo]) -> None:
        self.launched_ids.extend(t.task_id for t in tasks)

    def updated(self, plan: RunPlan, status: TaskStatus, final: bool) -> None:
        if final:
            self.finals.append(status.task_id)

    def problem(self, message: str) -> None:
        self.problems.append(message)

    def finished(self, plan: RunPlan) -> None:
        self.done = True


def test_oneshot_batches_per_offer_declines_leftovers_and_tears_down() -> None:
    plan = _plan(50, "cpus:0.1;mem:10")
    lines = _Lines()
    scheduler = OneShotScheduler(plan, lines)  # type: ignore[arg-type]
    driver = SchedulerDriver(scheduler, UNREACHABLE, "job", framework_id="fw")
    scheduler.resource_offers(driver, [_offer("o1", "a1", "cpus:4;mem:4096"), _offer("o2", "a2", "cpus:4;mem:4096"),
                                       _offer("o3", "a3", "cpus:4;mem:4096")])
    sent = _sent(driver)
    assert [key for key, *_ in sent] == ["ACCEPT", "ACCEPT", "DECLINE", "SUPPRESS"]
    assert [len(env.body.tasks) for _, env, *_ in sent[:2]] == [40, 10]
    assert sent[2][1].body.offer_ids == ["o3"]
    assert len(lines.launched_ids) == 50
    for task_id in plan.task_ids:
        scheduler.status_update(driver, _status(task_id, TaskState.FINISHED, exit_code=0))
    assert lines.done and len(lines.finals) == 50
    assert [key for key, *_ in _sent(driver)][-1] == "TEARDOWN"


def test_oneshot_relaunches_tasks_of_a_refused_accept() -> None:
    plan = _plan(2)
    scheduler = OneShotScheduler(plan, _Lines())  # type: ignore[arg-type]
    driver = SchedulerDriver(scheduler, UNREACHABLE, "job", framework_id="fw")
    scheduler.resource_offers(driver, [_offer("o1")])
    accept_id = _sent(driver)[0][1].id
    scheduler.call_refused(driver, protocol.Error("offer o1 was rescinded", "ACCEPT", accept_id))
    assert [key for key, *_ in _sent(driver)][-1] == "REVIVE"
    assert len(plan.pending) == 2
    scheduler.resource_offers(driver, [_offer("o2", "a2")])
    assert [t.agent_id for t in _sent(driver)[-2][1].body.tasks] == ["a2", "a2"]


# -- examples -----------------------------------------------------------------------------------


def test_reference_launches_both_tasks_on_one_offer(capsys: pytest.CaptureFixture[str]) -> None:
    scheduler = ReferenceScheduler("sleep 60", observe=False)
    driver = SchedulerDriver(scheduler, UNREACHABLE, "reference", framework_id="fw1")
    scheduler.resource_offers(driver, [_offer("o1", "a1", "cpus:4;mem:4096")])
    assert capsys.readouterr().out == "offer o1 agent=a1 cpus=4 mem=4096\n"
    accept = _sent(driver)[0][1].body
    assert [(t.resources.scalar("cpus"), t.resources.scalar("mem")) for t in accept.tasks] == [(2, 1024), (1, 2048)]
    assert offer_line(_offer("o2", "a1", "cpus:1.5;mem:1024")) == "offer o2 agent=a1 cpus=1.5 mem=1024"


def test_reference_observer_leaves_offers_unanswered(capsys: pytest.CaptureFixture[str]) -> None:
    scheduler = ReferenceScheduler("sleep 60", observe=True)
    driver = SchedulerDriver(scheduler, UNREACHABLE, "reference", framework_id="fw2")
    scheduler.resource_offers(driver, [_offer("o1", "a1", "cpus:1;mem:1024")])
    scheduler.status_update(driver, _status("task-1", TaskState.RUNNING))
    assert capsys.readouterr().out == "offer o1 agent=a1 cpus=1 mem=1024\nstatus task-1 TASK_RUNNING\n"
    assert _sent(driver) == []


def test_sleeper_keeps_count_tasks_and_declines_the_rest(capsys: pytest.CaptureFixture[str]) -> None:
    scheduler = SleeperScheduler("sleeper", 3, 30, 1, 64, refuse_seconds=7)
    driver = SchedulerDriver(scheduler, UNREACHABLE, "sleeper", framework_id="fw3")
    scheduler.resource_offers(driver, [_offer("o1", "a1", "cpus:2;mem:4096"), _offer("o2", "a2"),
                                       _offer("o3", "a3")])
    sent = _sent(driver)
    assert [key for key, *_ in sent] == ["ACCEPT", "ACCEPT", "DECLINE"]
    assert [len(env.body.tasks) for _, env, *_ in sent[:2]] == [2, 1]
    assert sent[2][1].body.offer_ids == ["o3"] and sent[2][1].body.refuse_seconds == 7
    scheduler.status_update(driver, _status("sleeper-0", TaskState.FINISHED))
    assert scheduler.wanted == 1 and _sent(driver)[-1][0] == "REVIVE"
    assert "launch sleeper-0 on a1" in capsys.readouterr().out


def test_nothing_after_a_task_ended_until_the_same_id_is_launched_again() -> None:
    """A stale STAGING (a master restored from an older registry) must not bring an ended task back."""
    recorder = _Recorder()
    driver = SchedulerDriver(recorder, UNREACHABLE, "ended")
    driver._deliver_updates([_status("t1", TaskState.FINISHED)])
    driver._deliver_updates([_status("t1", TaskState.STAGING, source="SOURCE_MASTER"),
                             _status("t1", TaskState.DROPPED, source="SOURCE_MASTER")])
    assert [(s.task_id, s.state) for s in recorder.updates] == [("t1", TaskState.FINISHED)]
    driver.accept(["o1"], [task("t1", "a1", "true")])  # same id, launched again: a new task
    driver._deliver_updates([_status("t1", TaskState.RUNNING)])
    assert [s.state for s in recorder.updates] == [TaskState.FINISHED, TaskState.RUNNING]


def test_a_framework_principal_gets_ids_it_owns_and_may_not_use_others() -> None:
    from broker_mesos.core.errors import ConfigError

    url = "amqp://framework.alice:pw@127.0.0.1:1/v"
    driver = SchedulerDriver(Scheduler(), url, "my app")
    assert driver.framework_id.startswith("alice-my-app-")
    assert SchedulerDriver(Scheduler(), url, "x", framework_id="alice").framework_id == "alice"
    with pytest.raises(ConfigError, match=r"is not framework\.alice's"):
        SchedulerDriver(Scheduler(), url, "x", framework_id="bob")
    with pytest.raises(ConfigError, match="framework principal"):
        SchedulerDriver(Scheduler(), "amqp://agent.a1:pw@127.0.0.1:1/v", "x")
    assert SchedulerDriver(Scheduler(), "amqp://guest:guest@127.0.0.1:1/v", "x").principal is None
