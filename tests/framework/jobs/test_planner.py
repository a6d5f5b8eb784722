"""The job planner on a virtual clock: fires, policies, deadlines, retries, restarts, history."""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import itertools
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import broker_mesos.framework.jobs as jobs_package
from broker_mesos.core.codec import ID_PATTERN
from broker_mesos.core.protocol import Offer, TaskInfo, TaskState, TaskStatus
from broker_mesos.core.resources import Resources
from broker_mesos.framework.jobs.planner import (
    DEADLINE_MESSAGE,
    FIT_REFUSE_SECONDS,
    KILL_RETRY_SECONDS,
    LONG_REFUSE_SECONDS,
    JobPlanner,
)
from broker_mesos.framework.jobs.spec import parse_job
from broker_mesos.framework.planning import (
    CommandError,
    Decline,
    Effect,
    KillTask,
    Launch,
    Reconcile,
    Revive,
    Suppress,
)

FW = "jobs"
T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC).timestamp()  # an hour boundary
_uuids = itertools.count()
_offers = itertools.count()


def job(**fields: Any) -> Any:
    return parse_job({"name": "job", "schedule": "0 * * * *", "command": "echo hi", **fields})


def offer(cpus: float = 4, mem: float = 4096, agent: str = "a1") -> Offer:
    return Offer(offer_id=f"o{next(_offers)}", framework_id=FW, agent_id=agent,
                 resources=Resources.of(cpus=cpus, mem=mem, disk=1000))


def status(task_id: str, state: TaskState, agent: str = "a1", exit_code: int | None = None,
           message: str = "") -> TaskStatus:
    return TaskStatus(task_id=task_id, framework_id=FW, agent_id=agent, state=state, uuid=f"u{next(_uuids)}",
                      timestamp=1.0, exit_code=exit_code, message=message)


def place(planner: JobPlanner, now: float, *offers: Offer) -> tuple[list[TaskInfo], list[Effect]]:
    """Send offers; check each is answered exactly once; return the launched tasks and the effects."""
    offers = offers or (offer(),)
    effects = planner.offers(offers, now)
    answered = [o for e in effects if isinstance(e, Launch) for o in [e.offer_id]]
    answered += [o for e in effects if isinstance(e, Decline) for o in e.offer_ids]
    assert sorted(answered) == sorted(o.offer_id for o in offers)
    return [t for e in effects if isinstance(e, Launch) for t in e.tasks], effects


def history(planner: JobPlanner, name: str = "job", limit: int = 1000) -> list[dict[str, Any]]:
    return planner.history(name, limit)


def jobs_by_name(planner: JobPlanner, now: float) -> dict[str, dict[str, Any]]:
    return {j["name"]: j for j in planner.list_jobs(now)}


def started(planner: JobPlanner, spec: Any, now: float = T0 - 30) -> JobPlanner:
    planner.add(spec, now)
    return planner


def run_to_running(planner: JobPlanner, now: float) -> TaskInfo:
    (task,), _ = place(planner, now)
    planner.status_update(status(task.task_id, TaskState.RUNNING), now)
    return task


# -- firing and placing ---------------------------------------------------------------------------


def test_fires_at_the_instant_and_launches_with_the_job_environment() -> None:
    planner = started(JobPlanner(FW), job(env={"A": "1"}, cpus=0.5, mem=128, disk=10))
    assert planner.tick(T0 - 1) == [] and jobs_by_name(planner, T0)["job"]["active_runs"] == []
    planner.dirty = False
    assert planner.tick(T0) == []  # never suppressed yet: no Revive needed
    assert planner.dirty
    assert jobs_by_name(planner, T0)["job"]["active_runs"] == ["job-20260302T100000Z"]
    (task,), effects = place(planner, T0 + 1)
    assert ID_PATTERN.fullmatch(task.task_id) and task.task_id.startswith("job_20260302T100000Z_1_")
    assert task.name == "job-20260302T100000Z" and task.agent_id == "a1"
    assert task.resources == Resources.of(cpus=0.5, mem=128, disk=10)
    assert task.command.shell and task.command.value == "echo hi"
    assert task.command.environment == {"A": "1", "BMESOS_JOB": "job", "BMESOS_RUN_ID": "job-20260302T100000Z"}
    assert effects[-1] == Suppress()
    # write-ahead: the launched task is in the state returned with its Launch
    assert task.task_id in str(planner.to_wire())
    (run,) = history(planner)
    assert (run["state"], run["attempt"], run["task_id"]) == ("STAGING", 1, task.task_id)


def test_offers_answered_exactly_once_long_decline_and_suppress_when_nothing_waits() -> None:
    planner = started(JobPlanner(FW), job())
    tasks, effects = place(planner, T0 - 10, offer(), offer())
    assert tasks == [] and effects[0] == Decline(effects[0].offer_ids, LONG_REFUSE_SECONDS)
    assert effects[-1] == Suppress()
    # the fire comes: something waits, so the suppressed framework revives
    assert planner.tick(T0) == [Revive()]
    assert planner.tick(T0 + 0.2) == []


def test_runs_that_do_not_fit_decline_short_and_argv_commands() -> None:
    planner = started(JobPlanner(FW), job(cpus=8, command=["/bin/echo", "a b"]))
    planner.tick(T0)
    tasks, effects = place(planner, T0, offer(cpus=4), offer(cpus=2))
    assert tasks == [] and effects == [Decline(effects[0].offer_ids, FIT_REFUSE_SECONDS)]
    (task,), _ = place(planner, T0 + 1, offer(cpus=4), offer(cpus=8, agent="big"))
    assert task.agent_id == "big" and not task.command.shell
    assert (task.command.value, task.command.arguments) == ("/bin/echo", ["/bin/echo", "a b"])


def test_oldest_scheduled_first_and_several_tasks_per_offer() -> None:
    planner = JobPlanner(FW)
    planner.add(job(name="late", schedule="0 * * * *", cpus=2), T0 - 30)
    planner.add(job(name="early", schedule="59 * * * *", cpus=2, starting_deadline=300), T0 - 120)
    planner.tick(T0 + 1)  # early fired at T0 - 60, late at T0
    (task,), effects = place(planner, T0 + 1, offer(cpus=2))
    assert task.name == "early-20260302T095900Z" and Suppress() not in effects
    (task,), _ = place(planner, T0 + 1, offer(cpus=3))
    assert task.name == "late-20260302T100000Z"
    with pytest.raises(CommandError, match="late-20260302T100000Z is STAGING and concurrency_policy is forbid"):
        planner.run_now("late", T0 + 2)
    planner.add(job(name="late", schedule="0 * * * *", cpus=2, concurrency_policy="allow"), T0 + 2)
    planner.run_now("late", T0 + 2)
    planner.run_now("late", T0 + 2)
    planner.run_now("late", T0 + 2)
    full = offer(cpus=4)
    tasks, effects = place(planner, T0 + 3, full)
    assert [t.name for t in tasks] == ["late-manual-1", "late-manual-2"]
    assert effects == [Launch(full.offer_id, tuple(tasks))]  # the third waits: no Suppress, no empty Decline


def test_seconds_schedule_fires_every_two_seconds() -> None:
    planner = started(JobPlanner(FW), job(schedule="*/2 * * * * *", concurrency_policy="allow"), T0 - 0.5)
    for step in range(21):
        planner.tick(T0 + step * 0.5)
    assert [r["scheduled_for"] for r in reversed(history(planner))] == [
        f"2026-03-02T10:00:{s:02d}+00:00" for s in (0, 2, 4, 6, 8, 10)]


# -- concurrency policies -------------------------------------------------------------------------


def test_forbid_skips_a_fire_while_a_run_is_active() -> None:
    planner = started(JobPlanner(FW), job())
    planner.tick(T0)
    run_to_running(planner, T0 + 1)
    assert planner.tick(T0 + 3600) == []
    listed = jobs_by_name(planner, T0 + 3600)["job"]
    assert (listed["skipped"], listed["active_runs"]) == (1, ["job-20260302T100000Z"])
    skipped = history(planner)[0]
    assert (skipped["run_id"], skipped["state"]) == ("job-20260302T110000Z", "SKIPPED")
    assert "job-20260302T100000Z is still RUNNING" in skipped["message"]


def test_allow_runs_two_at_once() -> None:
    planner = started(JobPlanner(FW), job(concurrency_policy="allow"))
    planner.tick(T0)
    run_to_running(planner, T0 + 1)
    planner.tick(T0 + 3600)
    run_to_running(planner, T0 + 3601)
    listed = jobs_by_name(planner, T0 + 3601)["job"]
    assert listed["active_runs"] == ["job-20260302T100000Z", "job-20260302T110000Z"] and listed["skipped"] == 0


def test_replace_kills_the_active_run_and_escalates_until_it_is_gone() -> None:
    planner = started(JobPlanner(FW), job(concurrency_policy="replace"))
    planner.tick(T0)
    old = run_to_running(planner, T0 + 1)
    assert planner.tick(T0 + 3600) == [KillTask(old.task_id), Revive()]  # suppressed since the launch
    runs = {r["run_id"]: r for r in history(planner)}
    assert runs["job-20260302T100000Z"]["state"] == "KILLED"
    assert runs["job-20260302T100000Z"]["message"] == "replaced by job-20260302T110000Z"
    assert runs["job-20260302T110000Z"]["state"] == "PENDING"
    # the old task still reports running: killed again; the kill is also repeated until it ends
    assert planner.status_update(status(old.task_id, TaskState.RUNNING), T0 + 3601) == [KillTask(old.task_id)]
    place(planner, T0 + 3601)
    assert KillTask(old.task_id) in planner.tick(T0 + 3600 + KILL_RETRY_SECONDS)
    assert planner.status_update(status(old.task_id, TaskState.KILLED), T0 + 3620) == []
    assert KillTask(old.task_id) not in planner.tick(T0 + 3600 + 3 * KILL_RETRY_SECONDS)
    listed = jobs_by_name(planner, T0 + 3700)["job"]
    assert (listed["killed"], listed["failed"], listed["active_runs"]) == (1, 0, ["job-20260302T110000Z"])


# -- deadlines and restarts -----------------------------------------------------------------------


def test_a_run_without_offers_past_its_deadline_is_missed_and_never_launched() -> None:
    planner = started(JobPlanner(FW), job(starting_deadline=60))
    planner.tick(T0)
    planner.tick(T0 + 60)
    assert history(planner)[0]["state"] == "PENDING"  # exactly at the deadline it may still start
    planner.tick(T0 + 60.2)
    (run,) = history(planner)
    assert (run["state"], run["message"]) == ("MISSED", DEADLINE_MESSAGE)
    tasks, effects = place(planner, T0 + 61)
    assert tasks == [] and effects[-1] == Suppress()
    assert jobs_by_name(planner, T0 + 61)["job"]["missed"] == 1


def test_offers_after_the_deadline_do_not_launch_even_without_a_tick() -> None:
    planner = started(JobPlanner(FW), job(starting_deadline=10))
    planner.tick(T0)
    tasks, _ = place(planner, T0 + 11)
    assert tasks == [] and history(planner)[0]["state"] == "MISSED"


def restored(planner: JobPlanner) -> JobPlanner:
    return JobPlanner.from_wire(msgpack.unpackb(msgpack.packb(planner.to_wire())), FW)


@pytest.mark.parametrize(("down_until", "missed", "pending"), [
    (T0 + 3 * 3600 + 120, 3, []),  # back 2 min after the 13:00 fire: all three missed
    (T0 + 3 * 3600 + 30, 2, ["job-20260302T130000Z"]),  # 13:00 is within its deadline: started
])
def test_scheduler_down_three_hours_follows_the_deadline_rule(down_until: float, missed: int,
                                                              pending: list[str]) -> None:
    planner = started(JobPlanner(FW), job(starting_deadline=60))
    planner.tick(T0)
    task = run_to_running(planner, T0 + 1)
    planner.status_update(status(task.task_id, TaskState.FINISHED, exit_code=0), T0 + 5)
    back = restored(planner)
    effects = back.recovered(down_until)
    assert effects[0] == Reconcile(())
    back.tick(down_until)
    listed = jobs_by_name(back, down_until)["job"]
    assert (listed["missed"], listed["active_runs"], listed["succeeded"]) == (missed, pending, 1)
    states = [(r["run_id"], r["state"]) for r in history(back)]
    missed_runs = [(f"job-20260302T{h}0000Z", "MISSED") for h in (13, 12, 11)][3 - missed:]
    assert states[len(pending):] == [*missed_runs, ("job-20260302T100000Z", "SUCCEEDED")]
    tasks, _ = place(back, down_until + 1)
    assert [t.name for t in tasks] == pending
    # the same instants are never considered again
    back.tick(down_until + 5)
    assert jobs_by_name(back, down_until + 5)["job"]["missed"] == missed


def test_round_trip_mid_run_no_duplicate_launch_orphans_killed_unseen_launch_replaced() -> None:
    planner = started(JobPlanner(FW), job(concurrency_policy="allow"))
    planner.tick(T0)
    running = run_to_running(planner, T0 + 1)
    planner.run_now("job", T0 + 2)
    (staging,), _ = place(planner, T0 + 2)
    back = restored(planner)
    assert back.to_wire() == planner.to_wire()
    effects = back.recovered(T0 + 10)
    assert effects == [Reconcile(()), Reconcile(tuple(sorted((running.task_id, staging.task_id)))), Suppress()]
    assert back.tick(T0 + 10) == []
    assert place(back, T0 + 10)[0] == []
    # reconcile answers: the running task is known, an unknown live one is an orphan
    assert back.status_update(status(running.task_id, TaskState.RUNNING), T0 + 11) == []
    assert back.status_update(status("job_lost-elsewhere_1_ffffffff", TaskState.RUNNING), T0 + 11) == [
        KillTask("job_lost-elsewhere_1_ffffffff")]
    # the master never saw the manual run's launch: it is placed again, same attempt, new task id
    assert back.status_update(status(staging.task_id, TaskState.LOST, agent=""), T0 + 11) == [Revive()]
    (again,), _ = place(back, T0 + 12)
    assert again.name == "job-manual-1" and again.task_id != staging.task_id
    assert again.task_id.startswith("job_manual-1_1_")
    run = {r["run_id"]: r for r in history(back)}["job-manual-1"]
    assert (run["state"], run["attempt"], run["task_id"]) == ("STAGING", 1, again.task_id)
    assert jobs_by_name(back, T0 + 12)["job"]["failed"] == 0


def test_a_launch_nobody_reports_on_is_reconciled() -> None:
    planner = started(JobPlanner(FW), job())
    planner.tick(T0)
    (task,), _ = place(planner, T0)
    assert planner.next_wakeup(T0) == T0 + 30
    assert planner.tick(T0 + 29) == []
    assert planner.tick(T0 + 30) == [Reconcile((task.task_id,))]
    assert planner.tick(T0 + 31) == []


# -- retries ---------------------------------------------------------------------------------------


def fail(planner: JobPlanner, task: TaskInfo, now: float) -> list[Effect]:
    return planner.status_update(status(task.task_id, TaskState.FAILED, exit_code=3, message="boom"), now)


def test_retries_stop_after_n_with_the_backoff_delays() -> None:
    planner = started(JobPlanner(FW), job(retries=2))
    planner.tick(T0)
    launched = []
    now = T0
    for delay in (1, 2):
        (task,), _ = place(planner, now)
        launched.append(task)
        fail(planner, task, now + 5)
        now += 5
        assert place(planner, now + delay - 0.1)[0] == []  # backing off: nothing launched yet
        assert planner.next_wakeup(now) == now + delay
        assert planner.tick(now + delay) == [Revive()]
        now += delay
    (task,), _ = place(planner, now)
    launched.append(task)
    assert [t.task_id.split("_")[2] for t in launched] == ["1", "2", "3"]
    assert len({t.task_id for t in launched}) == 3
    fail(planner, task, now + 1)
    (run,) = history(planner)
    assert (run["state"], run["attempt"], run["exit_code"]) == ("FAILED", 3, 3)
    assert run["message"] == "attempt 3 ended TASK_FAILED: boom"
    assert place(planner, now + 100)[0] == []
    assert jobs_by_name(planner, now)["job"]["failed"] == 1


def test_success_on_the_second_attempt_stops_retrying() -> None:
    planner = started(JobPlanner(FW), job(retries=5, starting_deadline=1))
    planner.tick(T0)
    (first,), _ = place(planner, T0)
    planner.status_update(status(first.task_id, TaskState.LOST, message="agent gone"), T0 + 2)
    # a retry is not subject to the starting deadline
    planner.tick(T0 + 100)
    (second,), _ = place(planner, T0 + 100)
    planner.status_update(status(second.task_id, TaskState.RUNNING), T0 + 101)
    planner.status_update(status(second.task_id, TaskState.FINISHED, exit_code=0), T0 + 102)
    (run,) = history(planner)
    assert (run["state"], run["attempt"], run["task_id"]) == ("SUCCEEDED", 2, second.task_id)
    assert run["started_at"] == "2026-03-02T10:01:41+00:00" and run["ended_at"] == "2026-03-02T10:01:42+00:00"
    assert place(planner, T0 + 200)[0] == []
    listed = jobs_by_name(planner, T0 + 200)["job"]
    assert (listed["succeeded"], listed["failed"], listed["last_run_state"]) == (1, 0, "SUCCEEDED")


def test_finished_with_a_non_zero_exit_code_counts_as_a_failure() -> None:
    planner = started(JobPlanner(FW), job())
    planner.tick(T0)
    (task,), _ = place(planner, T0)
    planner.status_update(status(task.task_id, TaskState.FINISHED, exit_code=1), T0 + 1)
    assert history(planner)[0]["state"] == "FAILED"


def test_status_updates_are_idempotent() -> None:
    planner = started(JobPlanner(FW), job())
    planner.tick(T0)
    task = run_to_running(planner, T0)
    planner.dirty = False
    assert planner.status_update(status(task.task_id, TaskState.RUNNING), T0 + 1) == [] and not planner.dirty
    for _ in range(2):
        assert planner.status_update(status(task.task_id, TaskState.FINISHED, exit_code=0), T0 + 2) == []
    listed = jobs_by_name(planner, T0 + 3)["job"]
    assert (listed["succeeded"], listed["active_runs"]) == (1, [])
    # an external kill ends the run KILLED, without retry
    planner.add(job(retries=3), T0 + 3)
    planner.run_now("job", T0 + 3)
    killed = run_to_running(planner, T0 + 4)
    planner.status_update(status(killed.task_id, TaskState.KILLED), T0 + 5)
    assert history(planner)[0]["state"] == "KILLED" and place(planner, T0 + 60)[0] == []


# -- commands and views ----------------------------------------------------------------------------


def test_add_reports_created_unchanged_updated_and_counts_from_now() -> None:
    planner = JobPlanner(FW)
    assert planner.add(job(), T0 - 30) == {"name": "job", "result": "created", "version": 1,
                                           "next_run": "2026-03-02T10:00:00+00:00"}
    planner.dirty = False
    assert planner.add(job(), T0 - 20)["result"] == "unchanged" and not planner.dirty
    updated = planner.add(job(schedule="30 * * * *", timezone="Europe/Berlin"), T0 + 1)
    assert updated == {"name": "job", "result": "updated", "version": 2, "next_run": "2026-03-02T11:30:00+01:00"}
    assert planner.tick(T0 + 100) == [] and history(planner) == []


def test_suspended_jobs_do_not_fire_but_run_by_hand() -> None:
    planner = started(JobPlanner(FW), job(suspended=True))
    planner.tick(T0 + 7200)
    assert history(planner) == [] and jobs_by_name(planner, T0)["job"]["next_run"] is None
    planner.run_now("job", T0 + 7200)
    (task,), _ = place(planner, T0 + 7200)
    assert task.name == "job-manual-1"
    # resuming does not catch up what fired while suspended
    planner.add(job(), T0 + 7201)
    planner.tick(T0 + 7300)
    assert [r["run_id"] for r in history(planner)] == ["job-manual-1"]


def test_run_now_policies_and_remove() -> None:
    planner = started(JobPlanner(FW), job(concurrency_policy="replace"))
    planner.run_now("job", T0)
    first = run_to_running(planner, T0)
    assert planner.run_now("job", T0 + 1) == [KillTask(first.task_id), Revive()]
    assert [(r["run_id"], r["state"], r["message"]) for r in history(planner)] == [
        ("job-manual-2", "PENDING", ""), ("job-manual-1", "KILLED", "replaced by job-manual-2")]
    second = run_to_running(planner, T0 + 2)
    assert planner.remove("job", T0 + 3) == [KillTask(second.task_id)]
    assert planner.list_jobs(T0 + 3) == []
    assert planner.status_update(status(second.task_id, TaskState.RUNNING), T0 + 4) == [KillTask(second.task_id)]
    for command in (lambda: planner.run_now("job", T0), lambda: planner.remove("job", T0),
                    lambda: planner.history("job", 5)):
        with pytest.raises(CommandError, match="no job named 'job'"):
            command()


def test_history_is_bounded_newest_first() -> None:
    planner = started(JobPlanner(FW), job(history_limit=3))
    for hour in range(5):
        now = T0 + hour * 3600
        planner.tick(now)
        task = run_to_running(planner, now + 1)
        planner.status_update(status(task.task_id, TaskState.FINISHED, exit_code=0), now + 2)
    assert [r["run_id"] for r in history(planner)] == [f"job-20260302T{h}0000Z" for h in (14, 13, 12)]
    assert [r["run_id"] for r in planner.history("job", 1)] == ["job-20260302T140000Z"]
    assert jobs_by_name(planner, T0)["job"]["succeeded"] == 5
    with pytest.raises(CommandError, match="limit"):
        planner.history("job", 0)


def test_a_long_outage_of_a_per_second_job_records_a_bounded_number_of_misses() -> None:
    planner = started(JobPlanner(FW), job(schedule="* * * * * *", history_limit=10), T0)
    back = restored(planner)
    back.recovered(T0 + 500)
    back.tick(T0 + 500)
    listed = jobs_by_name(back, T0 + 500)["job"]
    # fires T0+1 .. T0+439 are over 60 s old; T0+440 starts; T0+441 .. T0+500 are skipped (forbid)
    assert (listed["missed"], listed["skipped"], listed["active_runs"]) == (439, 60, ["job-20260302T100720Z"])
    assert len(history(back)) == 11  # 10 finished records + the active run


def test_list_jobs_shows_the_next_run_in_the_job_zone() -> None:
    planner = JobPlanner(FW)
    planner.add(job(name="berlin", schedule="30 2 * * *", timezone="Europe/Berlin"),
                dt.datetime.fromisoformat("2026-03-28T12:00:00+01:00").timestamp())
    planner.tick(dt.datetime.fromisoformat("2026-03-29T00:00:00+01:00").timestamp())
    (listed,) = planner.list_jobs(0.0)
    assert listed["next_run"] == "2026-03-29T03:00:00+02:00"
    assert set(listed) >= {"name", "schedule", "timezone", "next_run", "last_run_state", "active_runs",
                           "skipped", "missed", "succeeded", "failed"}


@pytest.mark.parametrize("data", [None, {}, {"format": 2}, {"format": 1, "task_seq": -1, "jobs": []},
                                  {"format": 1, "task_seq": 0, "jobs": [{"spec": {"name": "x"}}]},
                                  {"format": 1, "task_seq": 0, "jobs": [5]}])
def test_from_wire_refuses_what_it_cannot_read(data: Any) -> None:
    with pytest.raises(ValueError):
        JobPlanner.from_wire(data, FW)


def test_restarts_at_every_step_never_start_an_instant_twice() -> None:
    planner = started(JobPlanner(FW), job(schedule="*/10 * * * * *", starting_deadline=5), T0 - 1)
    steps = [T0 + i * 3.0 for i in range(40)]
    seen: list[str] = []
    for now in steps:
        planner = restored(planner)
        planner.recovered(now)
        planner.tick(now)
        for task in place(planner, now)[0]:
            seen.append(task.name)
            planner.status_update(status(task.task_id, TaskState.FINISHED, exit_code=0), now + 0.1)
    assert len(seen) == len(set(seen)) == 12  # T0, T0+10 … T0+110, each within 5 s of a step


def test_the_jobs_core_imports_nothing_impure() -> None:
    package = Path(jobs_package.__file__).parent
    allowed = ("broker_mesos.core", "broker_mesos.framework.planning", "broker_mesos.framework.jobs",
               "cronsim", "msgpack", "yaml", "__future__", "collections", "dataclasses", "datetime", "enum",
               "math", "re", "typing", "zoneinfo")
    offenders = {}
    for path in sorted(package.glob("*.py")):
        if path.name == "scheduler.py":  # the shell beside the core
            continue
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        bad = {n for n in names if not any(n == a or n.startswith(a + ".") for a in allowed)}
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}


_OPS = st.lists(st.tuples(st.sampled_from(["tick", "offer", "small-offer", "finish", "fail", "lost-unseen",
                                           "run-now", "restart"]),
                          st.floats(min_value=0.1, max_value=40.0), st.integers(min_value=0, max_value=7)),
                max_size=60)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["allow", "forbid", "replace"]), st.integers(min_value=0, max_value=2), _OPS)
def test_random_histories_keep_the_invariants(policy: str, retries: int, ops: list[tuple[str, float, int]]) -> None:
    """Offers answered once, task ids never reused, no first attempt started past its deadline,
    forbid never runs two at once, and every fire instant is considered exactly once."""
    planner = JobPlanner(FW)
    planner.add(job(schedule="*/15 * * * * *", concurrency_policy=policy, retries=retries, starting_deadline=20,
                    history_limit=1000), T0 - 1)
    now, launched, live = T0, set(), []
    scheduled: dict[str, float] = {}
    for op, dt_, pick in ops:
        now += dt_
        if op == "tick":
            planner.tick(now)
        elif op in ("offer", "small-offer"):
            tasks, _ = place(planner, now, offer(cpus=0.1 if op == "small-offer" else 1.0))
            for task in tasks:
                assert task.task_id not in launched
                launched.add(task.task_id)
                run = {r["run_id"]: r for r in history(planner)}[task.name]
                if run["attempt"] == 1 and task.name in scheduled:
                    assert now <= scheduled[task.name] + 20
                live.append(task.task_id)
        elif op == "run-now":
            with contextlib.suppress(CommandError):
                planner.run_now("job", now)
        elif op == "restart":
            planner = restored(planner)
            planner.recovered(now)
        elif live:
            task_id = live.pop(pick % len(live))
            state = {"finish": TaskState.FINISHED, "fail": TaskState.FAILED, "lost-unseen": TaskState.LOST}[op]
            planner.status_update(status(task_id, state, agent="" if op == "lost-unseen" else "a1", exit_code=0
                                         if op == "finish" else None), now)
        runs = history(planner)
        for r in runs:
            if r["trigger"] == "schedule":
                scheduled.setdefault(r["run_id"], dt.datetime.fromisoformat(r["scheduled_for"]).timestamp())
        active = [r for r in runs if r["state"] in ("PENDING", "STAGING", "RUNNING")]
        if policy == "forbid":
            assert len(active) <= 1
        scheduled_ids = [r["run_id"] for r in runs if r["trigger"] == "schedule"]
        assert len(scheduled_ids) == len(set(scheduled_ids))
    # every fire instant up to the last one considered is recorded once, in order, none skipped over
    last_fire = planner.to_wire()["jobs"][0]["last_fire"]
    expected = [T0 + 15 * i for i in range(int((last_fire - T0) // 15) + 1)] if last_fire >= T0 else []
    assert sorted(scheduled.values()) == expected
