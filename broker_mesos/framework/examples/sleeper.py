"""A long-running service framework: keeps N ``sleep`` tasks running, replacing each one that ends.

Offers it does not need are declined with ``--refuse-seconds`` so the master offers those agents to
other frameworks meanwhile; when a task ends and a replacement is needed it REVIVEs, which clears
those filters.

    python -m broker_mesos.framework.examples.sleeper --broker URL --count 5 --seconds 30

Output: ``launch <task> on <agent>`` and ``status <task> <STATE>``, one flushed line each.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence

from broker_mesos.core.protocol import Error, Offer, TaskStatus
from broker_mesos.core.resources import Resources
from broker_mesos.framework.driver import SchedulerDriver, identifier, task
from broker_mesos.framework.examples import broker_settings, common_arguments, emit, serve, setup_logging
from broker_mesos.framework.scheduler import Scheduler


class SleeperScheduler(Scheduler):
    """Holds ``count`` tasks alive (launched and not yet in a final state)."""

    def __init__(self, name: str, count: int, seconds: float, cpus: float, mem: float,
                 refuse_seconds: float) -> None:
        self.prefix = identifier(name, "sleeper")
        self.count = count
        self.command = ["sleep", f"{seconds:g}"]
        self.cpus = cpus
        self.mem = mem
        self.refuse_seconds = refuse_seconds
        self.alive: set[str] = set()
        self.in_flight: dict[str, list[str]] = {}
        self._numbers = itertools.count()

    @property
    def wanted(self) -> int:
        return self.count - len(self.alive)

    def resource_offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        need = Resources.of(cpus=self.cpus, mem=self.mem)
        unused = []
        for offer in offers:
            free, tasks = offer.resources, []
            while self.wanted - len(tasks) > 0 and need <= free:
                free = free - need
                task_id = f"{self.prefix}-{next(self._numbers)}"
                tasks.append(task(task_id, offer.agent_id, self.command, cpus=self.cpus, mem=self.mem))
            if not tasks:
                unused.append(offer.offer_id)
                continue
            self.alive.update(t.task_id for t in tasks)
            self.in_flight[driver.launch(offer, tasks, refuse_seconds=self.refuse_seconds)] = [
                t.task_id for t in tasks]
            for t in tasks:
                emit(f"launch {t.task_id} on {offer.agent_id}")
        if unused:
            driver.decline(unused, self.refuse_seconds)

    def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
        emit(f"status {status.task_id} {status.state.value}")
        if status.state.terminal and status.task_id in self.alive:
            self.alive.discard(status.task_id)
            driver.revive()

    def call_refused(self, driver: SchedulerDriver, error: Error) -> None:
        lost = self.in_flight.pop(error.call_id, [])
        emit(f"refused {error.call_type} {error.message}")
        if lost:
            self.alive.difference_update(lost)
            driver.revive()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m broker_mesos.framework.examples.sleeper",
                                     description=__doc__.splitlines()[0])
    common_arguments(parser, "sleeper")
    parser.add_argument("--count", type=int, default=3, help="tasks to keep running")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each task sleeps")
    parser.add_argument("--cpus", type=float, default=0.1, help="CPUs per task")
    parser.add_argument("--mem", type=float, default=32.0, help="memory (MB) per task")
    parser.add_argument("--refuse-seconds", type=float, default=5.0, help="how long declined agents stay away")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    scheduler = SleeperScheduler(args.name, args.count, args.seconds, args.cpus, args.mem, args.refuse_seconds)
    broker, tls = broker_settings(args)
    driver = SchedulerDriver(scheduler, broker, args.name, framework_id=args.framework_id, role=args.role,
                             connect_timeout=args.connect_timeout, tls=tls)
    return serve(driver, teardown_on_exit=not args.no_teardown)


if __name__ == "__main__":
    sys.exit(main())
