"""The scheduled-jobs planner: cron fires, concurrency policies, deadlines and retries, as pure code.

It follows framework/planning.py's contract (interface: the shell in framework/ha.py). What it promises:

* every fire instant of a job is considered exactly once, in order, even across restarts (``last_fire``
  is durable and only moves forward); a fire more than ``starting_deadline`` old is recorded MISSED and
  never started late, and a first attempt that found no offer within the deadline becomes MISSED too;
* task ids ``<job>_<stamp or manual-n>_<attempt>_<seq>`` are unique forever (``seq`` is a persisted
  counter) and recorded in the state returned with their Launch (write-ahead);
* status updates are idempotent; a non-terminal update for a task that is not a run's current attempt
  is answered with ``KillTask`` (orphans, replaced or removed runs' tasks).

Tasks killed by the planner (replace, remove) are re-killed every ``KILL_RETRY_SECONDS`` until a
terminal update arrives; that list is kept in memory only, because after a restart the implicit
reconcile reports every live task and the unknown ones are killed then.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker_mesos.core.protocol import CommandInfo, Offer, TaskInfo, TaskState, TaskStatus
from broker_mesos.core.resources import Resources
from broker_mesos.framework.jobs.cron import Schedule
from broker_mesos.framework.jobs.runs import Run, RunState, Trigger, stamp
from broker_mesos.framework.jobs.spec import ConcurrencyPolicy, JobSpec
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

STATE_FORMAT = 1
LONG_REFUSE_SECONDS = 30.0  # offers nothing needs
FIT_REFUSE_SECONDS = 3.0  # offers declined while some run found no fitting offer: let others come
MAX_FIRES_PER_TICK = 1000  # per job: a long outage of a per-second schedule is caught up over ticks
MAX_JOBS = 10_000
MAX_TASK_IDS_KEPT = 16  # per run (retries plus launches the master never saw)
KILL_RETRY_SECONDS = 15.0
MAX_KILLS = 8
STAGING_RECONCILE_SECONDS = 30.0  # a launch with no word from the master for this long is asked about
RECONCILE_BATCH = 1000
DEADLINE_MESSAGE = "no offer fitted within the starting deadline"


@dataclass(slots=True)
class _Job:
    spec: JobSpec
    schedule: Schedule
    version: int
    last_fire: float  # the last scheduled instant considered: fires after it are still to come
    next_fire: float | None = None  # derived from last_fire
    skipped: int = 0
    missed: int = 0
    succeeded: int = 0
    failed: int = 0
    killed: int = 0
    manual_runs: int = 0
    active: list[Run] = field(default_factory=list)
    history: list[Run] = field(default_factory=list)  # finished runs, oldest first

    def advance(self, fire: float) -> None:
        self.last_fire = fire
        self.next_fire = self.schedule.next_after(fire)

    def archive(self, run: Run) -> None:
        if run in self.active:
            self.active.remove(run)
        self.history.append(run)
        del self.history[:-self.spec.history_limit]


@dataclass(slots=True)
class _Doomed:
    """A task the planner killed and has not yet heard the end of."""

    kills: int
    next_kill_at: float


class JobPlanner:
    """Decides which job runs start where and when; the shell persists ``to_wire()`` when ``dirty``."""

    def __init__(self, framework_id: str, *, role: str = "*") -> None:
        self.framework_id = framework_id
        self.role = role
        self.dirty = False
        self._jobs: dict[str, _Job] = {}
        self._task_seq = 0
        self._tasks: dict[str, tuple[_Job, Run]] = {}  # current attempts' launched tasks (derived)
        self._doomed: dict[str, _Doomed] = {}
        self._ask_at: dict[str, float] = {}  # STAGING task -> when to reconcile it if still unheard of
        self._suppressed = False

    # -- operators' commands ----------------------------------------------------------------
    def add(self, spec: JobSpec, now: float) -> dict[str, Any]:
        """Create the job, or update it (a new version) if the name exists; fires count from ``now``."""
        if not isinstance(spec, JobSpec):
            raise CommandError("add needs a JobSpec (see parse_job)")
        job = self._jobs.get(spec.name)
        if job is None:
            if len(self._jobs) >= MAX_JOBS:
                raise CommandError(f"there are already {MAX_JOBS} jobs")
            job = self._jobs[spec.name] = _Job(spec, spec.cron(), 1, now)
            job.advance(now)
            result = "created"
        elif job.spec == spec:
            return self._summary(job, "unchanged")
        else:
            job.spec, job.schedule, job.version = spec, spec.cron(), job.version + 1
            job.advance(max(job.last_fire, now))
            del job.history[:-spec.history_limit]
            result = "updated"
        self.dirty = True
        return self._summary(job, result)

    def remove(self, name: str, now: float) -> list[Effect]:
        """Forget the job and its history; its active runs' tasks are killed."""
        job = self._job(name)
        effects: list[Effect] = []
        for run in list(job.active):
            effects += self._kill_run(job, run, now, "job removed")
        del self._jobs[name]
        self.dirty = True
        return effects

    def run_now(self, name: str, now: float) -> list[Effect]:
        """Start a manual run now (``<job>-manual-<n>``), under the job's concurrency policy."""
        job = self._job(name)
        policy = job.spec.concurrency_policy
        if policy is ConcurrencyPolicy.FORBID and job.active:
            run = job.active[0]
            raise CommandError(f"job {name}: run {run.run_id} is {run.state.value} and concurrency_policy "
                               "is forbid")
        job.manual_runs += 1
        run = Run(f"{name}-manual-{job.manual_runs}", now, Trigger.MANUAL)
        effects: list[Effect] = []
        if policy is ConcurrencyPolicy.REPLACE:
            for old in list(job.active):
                effects += self._kill_run(job, old, now, f"replaced by {run.run_id}")
        job.active.append(run)
        self.dirty = True
        return effects + self._revive(now)

    # -- views --------------------------------------------------------------------------------
    def list_jobs(self, now: float) -> list[dict[str, Any]]:
        out = []
        for name in sorted(self._jobs):
            job = self._jobs[name]
            runs = job.history + job.active
            last = max(runs, key=lambda r: r.scheduled_for) if runs else None
            upcoming = None if job.spec.suspended or job.next_fire is None else job.schedule.iso(job.next_fire)
            out.append({"name": name, "schedule": job.spec.schedule, "timezone": job.spec.timezone,
                        "version": job.version, "suspended": job.spec.suspended,
                        "concurrency_policy": job.spec.concurrency_policy.value, "next_run": upcoming,
                        "last_run": last.run_id if last else None,
                        "last_run_state": last.state.value if last else None,
                        "active_runs": [r.run_id for r in job.active], "skipped": job.skipped,
                        "missed": job.missed, "succeeded": job.succeeded, "failed": job.failed,
                        "killed": job.killed})
        return out

    def history(self, name: str, limit: int) -> list[dict[str, Any]]:
        """The job's runs, active ones included, newest (by scheduled time) first."""
        job = self._job(name)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise CommandError(f"limit must be a positive integer, not {limit!r}")
        runs = list(enumerate(job.history + job.active))
        runs.sort(key=lambda ir: (ir[1].scheduled_for, ir[0]), reverse=True)
        return [run.view(job.schedule) for _, run in runs[:limit]]

    # -- cluster input ------------------------------------------------------------------------
    def offers(self, offers: Sequence[Offer], now: float) -> list[Effect]:
        """Place ready runs, oldest scheduled first, each on the first offer it fits; answer every offer."""
        if not offers:
            return []
        self._expire(now)
        free = {offer.offer_id: offer.resources for offer in offers}
        placed: dict[str, list[TaskInfo]] = {}
        unplaced = False
        for job, run in self._ready(now):
            need = _needs(job.spec)
            for offer in offers:
                if need <= free[offer.offer_id]:
                    free[offer.offer_id] -= need
                    placed.setdefault(offer.offer_id, []).append(self._launch(job, run, offer, need, now))
                    break
            else:
                unplaced = True
        effects: list[Effect] = [Launch(o.offer_id, tuple(placed[o.offer_id])) for o in offers
                                 if o.offer_id in placed]
        unused = tuple(o.offer_id for o in offers if o.offer_id not in placed)
        if unused:
            effects.append(Decline(unused, FIT_REFUSE_SECONDS if unplaced else LONG_REFUSE_SECONDS))
        if unplaced:
            return effects
        effects.append(Suppress())
        self._suppressed = True
        return effects

    def offer_rescinded(self, offer_id: str) -> None:
        """Nothing to do: offers are answered within the call that brought them, never held."""

    def status_update(self, status: TaskStatus, now: float) -> list[Effect]:
        entry = self._tasks.get(status.task_id)
        if entry is None:
            if status.state.terminal:
                self._doomed.pop(status.task_id, None)
                return []
            return [KillTask(status.task_id)]
        job, run = entry
        state = status.state
        if not state.terminal:
            self._ask_at[run.task_id] = now + STAGING_RECONCILE_SECONDS
            if state is TaskState.RUNNING and run.state is not RunState.RUNNING:
                run.state, run.agent_id = RunState.RUNNING, status.agent_id or run.agent_id
                if run.started_at is None:
                    run.started_at = now
                self.dirty = True
            return []
        del self._tasks[run.task_id]
        self._ask_at.pop(run.task_id, None)
        self.dirty = True
        if state is TaskState.LOST and not status.agent_id and run.state is RunState.STAGING:
            run.state, run.task_id, run.agent_id, run.launched_at = RunState.PENDING, "", "", None
            run.message = "the master never saw the launch; placing it again"
            return self._revive(now)
        run.exit_code = status.exit_code
        run.agent_id = status.agent_id or run.agent_id
        if state is TaskState.FINISHED and status.exit_code in (None, 0):
            job.succeeded += 1
            run.finish(RunState.SUCCEEDED, now, status.message)
            job.archive(run)
            return []
        if state is TaskState.KILLED:
            job.killed += 1
            run.finish(RunState.KILLED, now, status.message or "killed outside the job planner")
            job.archive(run)
            return []
        reason = f"attempt {run.attempt} ended {state.value}" + (f": {status.message}" if status.message else "")
        if run.attempt <= job.spec.retries:
            delay = job.spec.retry_backoff.delay(run.attempt)
            run.state, run.task_id, run.next_attempt_at = RunState.PENDING, "", now + delay
            run.attempt += 1
            run.message = f"{reason}; retrying in {delay:g} s"
            return []
        job.failed += 1
        run.finish(RunState.FAILED, now, reason)
        job.archive(run)
        return []

    def tick(self, now: float) -> list[Effect]:
        """Fire due schedules, expire deadlines, re-kill, ask about silent launches; Revive when needed."""
        effects: list[Effect] = []
        for job in list(self._jobs.values()):
            if not job.spec.suspended:
                effects += self._fire(job, now)
        self._expire(now)
        for task_id, doomed in list(self._doomed.items()):
            if doomed.next_kill_at <= now:
                if doomed.kills >= MAX_KILLS:
                    del self._doomed[task_id]  # a reconcile after a restart would find it again
                    continue
                doomed.kills += 1
                doomed.next_kill_at = now + KILL_RETRY_SECONDS
                effects.append(KillTask(task_id))
        silent = sorted(task_id for task_id, (_, run) in self._tasks.items() if run.state is RunState.STAGING
                        and self._ask_at.setdefault(task_id, now + STAGING_RECONCILE_SECONDS) <= now)
        for task_id in silent:
            self._ask_at[task_id] = now + STAGING_RECONCILE_SECONDS
        effects += _reconciles(silent)
        return effects + self._revive(now)

    def recovered(self, now: float) -> list[Effect]:
        """After a (re)start: reconcile every live task (orphans get killed) and each recorded launch
        explicitly (the master answers TASK_LOST without agent for one it never saw: placed again)."""
        for doomed in self._doomed.values():
            doomed.next_kill_at = now
        self._ask_at = {task_id: now + STAGING_RECONCILE_SECONDS for task_id in self._tasks}
        for job in self._jobs.values():
            for run in job.active:
                if run.next_attempt_at is not None:
                    run.next_attempt_at = min(run.next_attempt_at, now + job.spec.retry_backoff.max)
        effects: list[Effect] = [Reconcile(()), *_reconciles(sorted(self._tasks))]
        if any(True for _ in self._ready(now)):
            self._suppressed = False
            return [*effects, Revive()]
        self._suppressed = True
        return [*effects, Suppress()]

    def next_wakeup(self, now: float) -> float | None:
        times = [t for t in self._timers() if t is not None]
        return max(now, min(times)) if times else None

    # -- durable state ------------------------------------------------------------------------
    def to_wire(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "task_seq": self._task_seq, "jobs": [
            {"spec": job.spec.to_wire(), "version": job.version, "last_fire": job.last_fire,
             "skipped": job.skipped, "missed": job.missed, "succeeded": job.succeeded, "failed": job.failed,
             "killed": job.killed, "manual_runs": job.manual_runs,
             "active": [run.to_wire() for run in job.active], "history": [run.to_wire() for run in job.history]}
            for job in self._jobs.values()]}

    @classmethod
    def from_wire(cls, data: dict[str, Any], framework_id: str, *, role: str = "*") -> JobPlanner:
        """Rebuild a planner from ``to_wire()``'s output; ``ValueError`` with a reason on anything else."""
        planner = cls(framework_id, role=role)
        try:
            if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
                raise ValueError(f"not a job planner state of format {STATE_FORMAT}")
            planner._task_seq = _count(data["task_seq"])
            for entry in data["jobs"]:
                spec = JobSpec.from_wire(entry["spec"])
                if spec.name in planner._jobs:
                    raise ValueError(f"job {spec.name} appears twice")
                job = _Job(spec, spec.cron(), _count(entry["version"]), float(entry["last_fire"]),
                           skipped=_count(entry["skipped"]), missed=_count(entry["missed"]),
                           succeeded=_count(entry["succeeded"]), failed=_count(entry["failed"]),
                           killed=_count(entry["killed"]), manual_runs=_count(entry["manual_runs"]),
                           active=[Run.from_wire(r) for r in entry["active"]],
                           history=[Run.from_wire(r) for r in entry["history"]])
                job.advance(job.last_fire)
                planner._jobs[spec.name] = job
                for run in job.active:
                    if not run.state.active:
                        raise ValueError(f"run {run.run_id} is {run.state.value} but listed as active")
                    if run.task_id:
                        if run.task_id in planner._tasks:
                            raise ValueError(f"task {run.task_id} belongs to two runs")
                        planner._tasks[run.task_id] = (job, run)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"cannot read the job planner state: {exc!r}") from None
        return planner

    # -- internals ----------------------------------------------------------------------------
    def _job(self, name: str) -> _Job:
        job = self._jobs.get(name)
        if job is None:
            raise CommandError(f"no job named {name!r}")
        return job

    def _summary(self, job: _Job, result: str) -> dict[str, Any]:
        upcoming = None if job.next_fire is None else job.schedule.iso(job.next_fire)
        return {"name": job.spec.name, "result": result, "version": job.version, "next_run": upcoming}

    def _fire(self, job: _Job, now: float) -> list[Effect]:
        """Consider the job's fire instants up to ``now`` in order (at most MAX_FIRES_PER_TICK)."""
        effects: list[Effect] = []
        recorded_missed = 0
        for _ in range(MAX_FIRES_PER_TICK):
            fire = job.next_fire
            if fire is None or fire > now:
                break
            run = Run(f"{job.spec.name}-{stamp(fire)}", fire, Trigger.SCHEDULE)
            if now - fire > job.spec.starting_deadline:
                job.missed += 1
                if recorded_missed < job.spec.history_limit:
                    recorded_missed += 1
                    run.finish(RunState.MISSED, now, f"not started within the starting deadline "
                               f"({job.spec.starting_deadline:g} s): the scheduler was not running")
                    job.archive(run)
            elif job.spec.concurrency_policy is ConcurrencyPolicy.FORBID and job.active:
                job.skipped += 1
                run.finish(RunState.SKIPPED, now, f"run {job.active[0].run_id} is still "
                           f"{job.active[0].state.value} (concurrency_policy forbid)")
                job.archive(run)
            else:
                if job.spec.concurrency_policy is ConcurrencyPolicy.REPLACE:
                    for old in list(job.active):
                        effects += self._kill_run(job, old, now, f"replaced by {run.run_id}")
                job.active.append(run)
            job.advance(fire)
            self.dirty = True
        return effects

    def _expire(self, now: float) -> None:
        """First attempts still waiting for an offer past their starting deadline become MISSED."""
        for job in self._jobs.values():
            for run in list(job.active):
                if (run.state is RunState.PENDING and run.attempt == 1
                        and now > run.scheduled_for + job.spec.starting_deadline):
                    job.missed += 1
                    run.finish(RunState.MISSED, now, DEADLINE_MESSAGE)
                    job.archive(run)
                    self.dirty = True

    def _ready(self, now: float) -> Iterator[tuple[_Job, Run]]:
        """PENDING runs whose time has come, oldest scheduled first."""
        ready = [(job, run) for job in self._jobs.values() for run in job.active
                 if run.state is RunState.PENDING and (run.next_attempt_at is None or run.next_attempt_at <= now)]
        ready.sort(key=lambda jr: (jr[1].scheduled_for, jr[1].run_id))
        return iter(ready)

    def _revive(self, now: float) -> list[Effect]:
        if self._suppressed and any(True for _ in self._ready(now)):
            self._suppressed = False
            return [Revive()]
        return []

    def _launch(self, job: _Job, run: Run, offer: Offer, need: Resources, now: float) -> TaskInfo:
        """Record the attempt's task (write-ahead: in the same call as its Launch) and build it."""
        self._task_seq += 1
        tag = run.run_id[len(job.spec.name) + 1:]
        task_id = f"{job.spec.name}_{tag}_{run.attempt}_{self._task_seq:08x}"
        run.state, run.task_id, run.agent_id = RunState.STAGING, task_id, offer.agent_id
        run.launched_at, run.next_attempt_at = now, None
        run.task_ids.append(task_id)
        del run.task_ids[:-MAX_TASK_IDS_KEPT]
        self._tasks[task_id] = (job, run)
        self._ask_at[task_id] = now + STAGING_RECONCILE_SECONDS
        self.dirty = True
        env = {**job.spec.environment, "BMESOS_JOB": job.spec.name, "BMESOS_RUN_ID": run.run_id}
        command = job.spec.command
        if isinstance(command, str):
            info = CommandInfo(value=command, shell=True, arguments=[], environment=env)
        else:
            info = CommandInfo(value=command[0], shell=False, arguments=list(command), environment=env)
        return TaskInfo(task_id=task_id, agent_id=offer.agent_id, resources=need, command=info, name=run.run_id,
                        user=job.spec.user)

    def _kill_run(self, job: _Job, run: Run, now: float, message: str) -> list[Effect]:
        """End an active run KILLED now; its launched task, if any, is killed (and re-killed)."""
        effects: list[Effect] = []
        if run.task_id in self._tasks:
            del self._tasks[run.task_id]
            self._ask_at.pop(run.task_id, None)
            self._doomed[run.task_id] = _Doomed(1, now + KILL_RETRY_SECONDS)
            effects.append(KillTask(run.task_id))
        job.killed += 1
        run.finish(RunState.KILLED, now, message)
        job.archive(run)
        self.dirty = True
        return effects

    def _timers(self) -> Iterator[float | None]:
        for job in self._jobs.values():
            if not job.spec.suspended:
                yield job.next_fire
            for run in job.active:
                if run.state is RunState.PENDING:
                    yield run.next_attempt_at
                    if run.attempt == 1:
                        yield run.scheduled_for + job.spec.starting_deadline
        yield from (d.next_kill_at for d in self._doomed.values())
        yield from (self._ask_at.get(task_id) for task_id, (_, run) in self._tasks.items()
                    if run.state is RunState.STAGING)


def _needs(spec: JobSpec) -> Resources:
    return Resources.of(cpus=spec.cpus, mem=spec.mem, disk=spec.disk)


def _reconciles(task_ids: list[str]) -> list[Effect]:
    return [Reconcile(tuple(task_ids[i:i + RECONCILE_BATCH])) for i in range(0, len(task_ids), RECONCILE_BATCH)]


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a count, got {value!r}")
    return value
