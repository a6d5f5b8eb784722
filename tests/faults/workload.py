"""The steady workload the fault tests run: a framework on the SDK that keeps ``--count`` long tasks
alive and a churn of ``--churn`` short tasks (each replaced when it ends), so something is always
launching while a fault is injected.

    python tests/faults/workload.py --broker URL --framework-id wl --count 4 --churn 2

SIGUSR1 stops the churn (no new short tasks), so the books can be checked on a quiet cluster.
Output (one flushed line each, what the tests parse): ``launch <task> <agent> <cpus> <mem>``,
``status <task> <STATE> <source> <uuid> <reason>``, ``offers <n> <master>``, ``registered``,
``reregistered <master>``, ``rescinded <offer>``, ``refused <call> <message>``.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import signal
import sys
from types import FrameType

from broker_mesos.core.protocol import Error, Offer, TaskStatus
from broker_mesos.core.resources import Resources
from broker_mesos.framework.driver import SchedulerDriver, task
from broker_mesos.framework.scheduler import Scheduler

CPUS, MEM = 0.1, 16.0


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Workload(Scheduler):
    def __init__(self, count: int, churn: int, churn_seconds: float) -> None:
        self.count = count
        self.churn = churn
        self.churn_seconds = churn_seconds
        self.long_alive: set[str] = set()
        self.short_alive: set[str] = set()
        self.in_flight: dict[str, list[str]] = {}
        self.numbers = itertools.count()
        self.churning = True

    def registered(self, driver: SchedulerDriver, framework_id: str) -> None:
        emit("registered")
        driver.reconcile()  # a restarted scheduler learns the tasks it already has

    def reregistered(self, driver: SchedulerDriver, master_id: str) -> None:
        emit(f"reregistered {master_id}")
        driver.revive()

    def resource_offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        emit(f"offers {len(offers)} {offers[0].offer_id.rsplit('-O', 1)[0] if offers else '-'}")
        need = Resources.of(cpus=CPUS, mem=MEM)
        unused = []
        for offer in offers:
            free, tasks = offer.resources, []
            while need <= free:
                if len(self.long_alive) < self.count:
                    kind, command, alive = "long", ["sleep", "3600"], self.long_alive
                elif self.churning and len(self.short_alive) < self.churn:
                    kind, command, alive = "short", ["sleep", f"{self.churn_seconds:g}"], self.short_alive
                else:
                    break
                task_id = f"{kind}-{os.getpid()}-{next(self.numbers)}"
                alive.add(task_id)
                tasks.append(task(task_id, offer.agent_id, command, cpus=CPUS, mem=MEM))
                free = free - need
            if not tasks:
                unused.append(offer.offer_id)
                continue
            call_id = driver.launch(offer, tasks)
            self.in_flight[call_id] = [t.task_id for t in tasks]
            for t in tasks:
                emit(f"launch {t.task_id} {offer.agent_id} {CPUS:g} {MEM:g}")
        if unused:
            driver.decline(unused, 1.0)

    def offer_rescinded(self, driver: SchedulerDriver, offer_id: str) -> None:
        emit(f"rescinded {offer_id}")

    def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
        emit(f"status {status.task_id} {status.state.value} {status.source} {status.uuid} {status.reason or '-'}")
        if not status.state.terminal and status.task_id not in self.long_alive | self.short_alive:
            (self.long_alive if status.task_id.startswith("long-") else self.short_alive).add(status.task_id)
        if status.state.terminal:
            self.long_alive.discard(status.task_id)
            self.short_alive.discard(status.task_id)
            driver.revive()

    def call_refused(self, driver: SchedulerDriver, error: Error) -> None:
        refused = self.in_flight.pop(error.call_id, [])
        emit(f"refused {error.call_type} {','.join(refused) or '-'} {error.message}")
        for task_id in refused:
            self.long_alive.discard(task_id)
            self.short_alive.discard(task_id)
        driver.revive()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--framework-id", required=True)
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--churn", type=int, default=2)
    parser.add_argument("--churn-seconds", type=float, default=1.0)
    parser.add_argument("--failover-timeout", type=float, default=3600.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    workload = Workload(args.count, args.churn, args.churn_seconds)
    driver = SchedulerDriver(workload, args.broker, "workload", framework_id=args.framework_id,
                             failover_timeout=args.failover_timeout)

    def quiet(_sig: int, _frame: FrameType | None) -> None:
        workload.churning = False
        emit("churn stopped")

    def stop(_sig: int, _frame: FrameType | None) -> None:
        driver.stop()

    signal.signal(signal.SIGUSR1, quiet)
    signal.signal(signal.SIGTERM, stop)
    driver.start()
    driver.join()  # interruptible: SIGUSR1 / SIGTERM handlers run in this thread meanwhile
    return 0


if __name__ == "__main__":
    sys.exit(main())
