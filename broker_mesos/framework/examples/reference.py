"""The reference flow of Mesos' architecture documentation, as a runnable framework.

An agent offers 4 CPUs and 4 GB; the framework accepts the offer with two tasks, <2 CPUs, 1024 MB>
and <1 CPU, 2048 MB>; what is left (1 CPU, 1 GB) goes back to the pool for other frameworks.

    python -m broker_mesos.framework.examples.reference --broker URL --framework-id fw1
    python -m broker_mesos.framework.examples.reference --broker URL --framework-id fw2 --observe

Output (stdout, one flushed line each): ``offer <offer_id> agent=<agent> cpus=<c> mem=<m>`` per
offer received and ``status <task> <STATE>`` per status update. With ``--observe`` it launches
nothing and leaves its offers unanswered, so they can be read (they expire after the master's
offer timeout).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from broker_mesos.core.protocol import Error, Offer, TaskInfo, TaskStatus
from broker_mesos.core.resources import Resources
from broker_mesos.framework.driver import SchedulerDriver, task
from broker_mesos.framework.examples import broker_settings, common_arguments, emit, serve, setup_logging
from broker_mesos.framework.scheduler import Scheduler

log = logging.getLogger(__name__)

TASKS = (("task-1", 2.0, 1024.0), ("task-2", 1.0, 2048.0))
DONE_REFUSE_SECONDS = 3600.0


def offer_line(offer: Offer) -> str:
    res = offer.resources
    return f"offer {offer.offer_id} agent={offer.agent_id} cpus={res.scalar('cpus'):g} mem={res.scalar('mem'):g}"


class ReferenceScheduler(Scheduler):
    """Launches the two reference tasks on the first offers they fit in (``observe``: launches nothing)."""

    def __init__(self, command: str, observe: bool) -> None:
        self.command = command
        self.observe = observe
        self.pending: list[tuple[str, float, float]] = [] if observe else list(TASKS)
        self.in_flight: dict[str, list[tuple[str, float, float]]] = {}
        self.suppressed = False

    def resource_offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        for offer in offers:
            emit(offer_line(offer))
        if self.observe:
            return
        unused = []
        for offer in offers:
            chosen, tasks = self._fit(offer)
            if not tasks:
                unused.append(offer.offer_id)
                continue
            refuse = 0.0 if self.pending else DONE_REFUSE_SECONDS
            self.in_flight[driver.launch(offer, tasks, refuse_seconds=refuse)] = chosen
            log.info("offer=%s agent=%s launching %s", offer.offer_id, offer.agent_id,
                     ",".join(t.task_id for t in tasks))
        if unused:
            driver.decline(unused, 1.0 if self.pending else DONE_REFUSE_SECONDS)
        if not self.pending and not self.suppressed:
            driver.suppress()
            self.suppressed = True

    def _fit(self, offer: Offer) -> tuple[list[tuple[str, float, float]], list[TaskInfo]]:
        free = offer.resources
        chosen, tasks = [], []
        for spec in list(self.pending):
            task_id, cpus, mem = spec
            need = Resources.of(cpus=cpus, mem=mem)
            if need <= free:
                free = free - need
                self.pending.remove(spec)
                chosen.append(spec)
                tasks.append(task(task_id, offer.agent_id, self.command, cpus=cpus, mem=mem))
        return chosen, tasks

    def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
        emit(f"status {status.task_id} {status.state.value}")

    def call_refused(self, driver: SchedulerDriver, error: Error) -> None:
        back = self.in_flight.pop(error.call_id, [])
        log.warning("%s refused: %s", error.call_type or "call", error.message)
        if back:
            self.pending.extend(back)
            if self.suppressed:
                driver.revive()
                self.suppressed = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m broker_mesos.framework.examples.reference",
                                     description=__doc__.splitlines()[0])
    common_arguments(parser, "reference")
    parser.add_argument("--command", default="sleep 60", help="shell command of both tasks (default: sleep 60)")
    parser.add_argument("--observe", action="store_true", help="launch nothing; print offers, leave them unanswered")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    scheduler = ReferenceScheduler(args.command, args.observe)
    broker, tls = broker_settings(args)
    driver = SchedulerDriver(scheduler, broker, args.name, framework_id=args.framework_id, role=args.role,
                             connect_timeout=args.connect_timeout, tls=tls)
    return serve(driver, teardown_on_exit=not args.no_teardown)


if __name__ == "__main__":
    sys.exit(main())
