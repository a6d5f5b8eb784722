"""A framework whose tasks prefer some agents: delay scheduling with the SDK's ``DelayScheduler``.

Every task prefers the agents whose attributes match ``--prefer`` (same syntax as ``bmesos agent
--attributes``) and/or the agents named by ``--prefer-agents``. Offers from other agents are declined
with a short ``refuse_seconds`` while the tasks wait for a local one; after ``--wait`` seconds of
waiting they take any offer. When every task has ended, the framework tears itself down and exits
(status 0 when all finished, 1 otherwise).

    python -m broker_mesos.framework.examples.locality --broker URL --tasks 4 --prefer rack:r1 --wait 5

Output (one flushed line each): ``launch <task> on <agent> local|non-local waited=<s>``,
``status <task> <STATE>``, and at the end ``task <task> ran local|non-local on <agent>`` per task and
``done local=<n> non-local=<m> failed=<f>``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

from broker_mesos.core.errors import ResourceError
from broker_mesos.core.protocol import Error, Offer, TaskInfo, TaskState, TaskStatus
from broker_mesos.core.resources import Resources, parse_attributes
from broker_mesos.framework.driver import SchedulerDriver, identifier, task
from broker_mesos.framework.examples import broker_settings, common_arguments, emit, serve, setup_logging
from broker_mesos.framework.locality import DelayScheduler, LocalityTask, Placement, Preference
from broker_mesos.framework.scheduler import Scheduler


class LocalityScheduler(Scheduler):
    """Runs ``count`` copies of ``command`` once each, placed with delay scheduling.

    ``clock`` gives the time the waits are measured on (the simulator passes its virtual clock);
    ``on_done`` is called once every task has ended (``main`` stops the driver there).
    """

    def __init__(self, name: str, count: int, preference: Preference, max_wait: float, command: Sequence[str], *,
                 cpus: float = 0.1, mem: float = 32.0, refuse_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, on_done: Callable[[], None] | None = None) -> None:
        self.command = list(command)
        self.clock = clock
        self.on_done = on_done
        self.delay = DelayScheduler(max_wait, refuse_seconds=refuse_seconds)
        self.placed: dict[str, Placement] = {}
        self.finals: dict[str, TaskStatus] = {}
        self.in_flight: dict[str, list[LocalityTask]] = {}
        self.suppressed = False
        prefix = identifier(name, "locality")
        resources = Resources.of(cpus=cpus, mem=mem)
        self.task_ids = [f"{prefix}-{i}" for i in range(count)]
        for task_id in self.task_ids:
            self.delay.add(LocalityTask(task_id, resources, preference), clock())

    @property
    def done(self) -> bool:
        return len(self.finals) == len(self.task_ids)

    @property
    def all_finished(self) -> bool:
        return self.done and all(s.state is TaskState.FINISHED for s in self.finals.values())

    def resource_offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        now = self.clock()
        declined: dict[float, list[str]] = {}
        for decision in self.delay.decide_all(offers, now):
            if not decision.accepted:
                declined.setdefault(decision.refuse_seconds, []).append(decision.offer.offer_id)
                continue
            tasks: list[TaskInfo] = []
            for placement in decision.placements:
                self.placed[placement.task.task_id] = placement
                tasks.append(task(placement.task.task_id, placement.agent_id, self.command,
                                  resources=placement.task.resources))
                emit(f"launch {placement.task.task_id} on {placement.agent_id} "
                     f"{'local' if placement.local else 'non-local'} waited={placement.waited:.1f}")
            call_id = driver.launch(decision.offer, tasks, refuse_seconds=decision.refuse_seconds)
            self.in_flight[call_id] = [p.task for p in decision.placements]
        for refuse, offer_ids in declined.items():
            driver.decline(offer_ids, refuse)
        if not self.delay.pending and not self.suppressed:
            driver.suppress()
            self.suppressed = True

    def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
        if status.task_id not in self.placed or status.task_id in self.finals:
            return
        emit(f"status {status.task_id} {status.state.value}")
        if not status.state.terminal:
            return
        self.finals[status.task_id] = status
        if self.done:
            local = sum(1 for p in self.placed.values() if p.local)
            for task_id in self.task_ids:
                placement = self.placed[task_id]
                emit(f"task {task_id} ran {'local' if placement.local else 'non-local'} on {placement.agent_id}")
            failed = sum(1 for s in self.finals.values() if s.state is not TaskState.FINISHED)
            emit(f"done local={local} non-local={len(self.placed) - local} failed={failed}")
            driver.teardown()
            if self.on_done is not None:
                self.on_done()

    def call_refused(self, driver: SchedulerDriver, error: Error) -> None:
        back = self.in_flight.pop(error.call_id, [])
        emit(f"refused {error.call_type} {error.message}")
        now = self.clock()
        for waiting in back:
            self.placed.pop(waiting.task_id, None)
            self.delay.add(waiting, now)
        if back and self.suppressed:
            driver.revive()
            self.suppressed = False


def _preference(args: argparse.Namespace) -> Preference:
    try:
        attributes = parse_attributes(args.prefer)
    except ResourceError as exc:
        raise SystemExit(f"error: --prefer: {exc}") from None
    agents = [a.strip() for a in args.prefer_agents.split(",") if a.strip()]
    return Preference.of(agents=agents, attributes=attributes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m broker_mesos.framework.examples.locality",
                                     description=__doc__.splitlines()[0])
    common_arguments(parser, "locality")
    parser.add_argument("--tasks", type=int, default=4, help="how many tasks to run")
    parser.add_argument("--prefer", default="", help="attributes a local agent has, e.g. 'rack:r1'")
    parser.add_argument("--prefer-agents", default="", help="comma-separated ids of local agents")
    parser.add_argument("--wait", type=float, default=5.0, help="seconds to wait for a local offer (default 5)")
    parser.add_argument("--seconds", type=float, default=2.0, help="how long each task sleeps")
    parser.add_argument("--cpus", type=float, default=0.1, help="CPUs per task")
    parser.add_argument("--mem", type=float, default=32.0, help="memory (MB) per task")
    parser.add_argument("--refuse-seconds", type=float, default=1.0,
                        help="at most this long a declined agent stays away while tasks wait (default 1)")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.wait < 0 or args.refuse_seconds < 0:
        parser.error("--tasks must be at least 1; --wait and --refuse-seconds must not be negative")
    setup_logging(args.log_level)
    scheduler = LocalityScheduler(args.name, args.tasks, _preference(args), args.wait,
                                  ["sleep", f"{args.seconds:g}"], cpus=args.cpus, mem=args.mem,
                                  refuse_seconds=args.refuse_seconds)
    broker, tls = broker_settings(args)
    driver = SchedulerDriver(scheduler, broker, args.name, framework_id=args.framework_id, role=args.role,
                             connect_timeout=args.connect_timeout, tls=tls)
    scheduler.on_done = driver.stop
    status = serve(driver, teardown_on_exit=not args.no_teardown)
    return status or (0 if scheduler.all_finished else 1)


if __name__ == "__main__":
    sys.exit(main())

