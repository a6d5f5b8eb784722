"""Task launch into a warm framework executor, beside the command executor and the no-op executor, in one run.

    .venv/bin/python scripts/bench_executor.py [--tasks 20000] [--command-tasks N] [--agents 4] [--batch 500]

Starts a private RabbitMQ node, then for each mode its own master and N agents (broker_mesos.testing
processes) and one framework:

* ``executor``: the pymap example (``PyMap``), a trivial call (``pymap.square``) per task, run in one
  warm Python executor per agent (started by a warm-up map before the clock runs; calls inline on the
  executor's driver thread unless ``--threads N``);
* ``command``: ``true`` tasks, each a process the agent starts (``bmesos agent --executor command``);
* ``noop``: the agent's no-op executor (``--executor noop``): nothing runs, the ceiling of the path.

For each: throughput (``--tasks`` tasks, at most ``--batch`` per offer and agent, and for pymap at most
``2 * --batch`` unfinished per agent, its default back-pressure; tasks/s from handing
the work to the framework to the last terminal update, i.e. executed tasks for the first two) and
offer-to-RUNNING latency p50/p99 over ``--waves`` waves of ``--wave-size`` tasks (small batches, one
wave at a time, so no queue inflates it). "failed" counts the tasks of both runs that did not finish
(the three commonest reasons are printed). Prints a table; ``--json`` adds one JSON object.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from broker_mesos.core.protocol import Offer, TaskInfo, TaskState, TaskStatus
from broker_mesos.core.resources import Resources
from broker_mesos.framework.driver import SchedulerDriver, task
from broker_mesos.framework.examples import pymap
from broker_mesos.framework.examples.pymap import PyMap, TaskFailed
from broker_mesos.framework.scheduler import Scheduler
from broker_mesos.testing.processes import ProcessGroup
from broker_mesos.testing.rabbit import RabbitNode

AGENT_RESOURCES = "cpus:1000;mem:1000000"
CPUS_PER_TASK = 0.1
MEM_PER_TASK = 10.0
TASK_RESOURCES = Resources.of(cpus=CPUS_PER_TASK, mem=MEM_PER_TASK)
IDLE_REFUSE_SECONDS = 30.0
WAVE_TIMEOUT = 600.0


class Waves(Scheduler):
    """Launches each wave of tasks as offers come (at most ``batch`` per offer); ``wave`` blocks until
    every task of it ended. Records offer-to-RUNNING latencies."""

    def __init__(self, make: Callable[[str, str], TaskInfo], batch: int) -> None:
        self.make = make
        self.batch = batch
        self.lock = threading.Lock()
        self.pending = 0
        self.remaining = 0
        self.failed = 0
        self.failures: collections.Counter[str] = collections.Counter()  # why, for the report
        self.done = threading.Event()
        self.registered_event = threading.Event()
        self.offered_at: dict[str, float] = {}
        self.latencies: list[float] = []
        self._ids = itertools.count()

    def wave(self, driver: SchedulerDriver, count: int) -> float:
        """Run ``count`` tasks; seconds from now to the last one's terminal update."""
        started = time.perf_counter()
        with self.lock:
            self.pending, self.remaining = count, count
            self.done.clear()
        driver.revive()
        if not self.done.wait(WAVE_TIMEOUT):
            raise TimeoutError(f"{self.remaining} of {count} tasks unfinished after {WAVE_TIMEOUT:g}s")
        return time.perf_counter() - started

    def registered(self, driver: SchedulerDriver, framework_id: str) -> None:
        self.registered_event.set()

    def resource_offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        now = time.perf_counter()
        unused = []
        with self.lock:
            for offer in offers:
                tasks = []
                free = offer.resources
                while self.pending and len(tasks) < self.batch and free >= TASK_RESOURCES:
                    free = free - TASK_RESOURCES
                    self.pending -= 1
                    task_id = f"t{next(self._ids)}"
                    self.offered_at[task_id] = now
                    tasks.append(self.make(task_id, offer.agent_id))
                if tasks:
                    driver.launch(offer, tasks)
                else:
                    unused.append(offer.offer_id)
            idle = not self.pending
        if unused:
            driver.decline(unused, IDLE_REFUSE_SECONDS if idle else 0.0)

    def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
        with self.lock:
            if status.state is TaskState.RUNNING:
                offered = self.offered_at.pop(status.task_id, None)
                if offered is not None:
                    self.latencies.append(time.perf_counter() - offered)
                return
            if not status.state.terminal:
                return
            self.offered_at.pop(status.task_id, None)
            if status.state is not TaskState.FINISHED:
                self.failed += 1
                self.failures[f"{status.state.value} {status.reason} {status.message[:100]}".strip()] += 1
            self.remaining -= 1
            if self.remaining == 0:
                self.done.set()


def true_task(task_id: str, agent_id: str) -> TaskInfo:
    return task(task_id, agent_id, ["true"], resources=TASK_RESOURCES)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def summary(count: int, seconds: float, latencies: list[float], failed: int) -> dict[str, float]:
    return {"tasks": count, "seconds": round(seconds, 3), "tasks_per_s": round(count / seconds, 1),
            "failed": failed, "latency_samples": len(latencies),
            "latency_p50_ms": round(statistics.median(latencies) * 1000, 2),
            "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 2)}


def start_cluster(procs: ProcessGroup, url: str, work: Path, mode: str, agents: int, interval: float,
                  agent_args: list[str]) -> list[str]:
    master = procs.bmesos("master", "master", "--broker", url, "--allocation-interval", str(interval))
    master.wait_output(r"master \S+ serving", timeout=60)
    ids = [f"bench-{mode}-{i}" for i in range(agents)]
    started = [procs.bmesos(agent_id, "agent", "--broker", url, "--id", agent_id, "--resources", AGENT_RESOURCES,
                            "--executor", "noop" if mode == "noop" else "command", "--log-level", "info",
                            "--work-dir", str(work / agent_id), *agent_args)
               for agent_id in ids]
    for agent in started:
        agent.wait_output(r"agent \S+ registered", timeout=60)
    return ids


def bench_plain(url: str, mode: str, args: argparse.Namespace) -> dict[str, float]:
    count = (args.command_tasks or args.tasks) if mode == "command" else args.tasks
    scheduler = Waves(true_task, args.batch)
    driver = SchedulerDriver(scheduler, url, f"bench-{mode}")
    driver.start()
    try:
        if not scheduler.registered_event.wait(60):
            raise TimeoutError("the framework did not subscribe")
        seconds = scheduler.wave(driver, count)
        scheduler.latencies.clear()
        scheduler.batch = args.wave_size
        for _ in range(args.waves):
            scheduler.wave(driver, args.wave_size)
        for why, times in scheduler.failures.most_common(3):
            print(f"{mode}: {times} task(s) ended {why}", flush=True)
        return summary(count, seconds, scheduler.latencies, scheduler.failed)
    finally:
        driver.teardown()
        driver.stop()
        driver.join(10)


def bench_executor(url: str, agent_ids: list[str], args: argparse.Namespace) -> dict[str, float]:
    pm = PyMap(url, name="bench-executor", batch=args.batch, cpus_per_task=CPUS_PER_TASK, mem_per_task=MEM_PER_TASK,
               threads=args.threads)
    with pm:
        deadline = time.monotonic() + 120
        while set(pm.executors) != set(agent_ids):  # warm-up: an executor on every agent
            if time.monotonic() > deadline:
                raise TimeoutError(f"executors started only on {sorted(pm.executors)}")
            pm.map(pymap.square, range(args.batch * len(agent_ids)), timeout=120)
        started = time.perf_counter()
        results = pm.map(pymap.square, range(args.tasks), timeout=WAVE_TIMEOUT, return_exceptions=True)
        seconds = time.perf_counter() - started
        pm.scheduler.latencies.clear()
        pm.scheduler.batch = args.wave_size
        for _ in range(args.waves):
            results += pm.map(pymap.square, range(args.wave_size), timeout=WAVE_TIMEOUT, return_exceptions=True)
        failures = collections.Counter(f"{r.state.value} {r.reason} {r.message[:100]}".strip()
                                       for r in results if isinstance(r, TaskFailed))
        for why, times in failures.most_common(3):
            print(f"executor: {times} task(s) ended {why}", flush=True)
        if pm.scheduler.retried:
            print(f"executor: {pm.scheduler.retried} call(s) launched again (their task was lost or dropped)",
                  flush=True)
        return summary(args.tasks, seconds, list(pm.scheduler.latencies), sum(failures.values()))


def run_mode(url: str, work: Path, mode: str, args: argparse.Namespace) -> dict[str, float]:
    procs = ProcessGroup(work / f"logs-{mode}")
    try:
        agent_ids = start_cluster(procs, url, work, mode, args.agents, args.allocation_interval, args.agent_arg)
        result = bench_executor(url, agent_ids, args) if mode == "executor" else bench_plain(url, mode, args)
        for proc in procs.procs:
            assert proc.alive(), f"{proc.name} died:\n{proc.output()[-3000:]}"
        return result
    finally:
        procs.stop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks of the throughput run, per mode")
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--command-tasks", type=int, default=None,
                        help="tasks of the command executor's throughput run (default: --tasks); each is a process")
    parser.add_argument("--batch", type=int, default=500,
                        help="most tasks per offer (and agent) in the throughput run (default 500)")
    parser.add_argument("--waves", type=int, default=50, help="waves of the latency run")
    parser.add_argument("--wave-size", type=int, default=10, help="tasks per wave of the latency run")
    parser.add_argument("--threads", type=int, default=0,
                        help="worker threads per pymap executor (default 0: trivial calls run on the executor "
                             "driver's thread, the cheapest; pymap's own default is "
                             f"{pymap.DEFAULT_THREADS})")
    parser.add_argument("--allocation-interval", type=float, default=0.05)
    parser.add_argument("--agent-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for every `bmesos agent` (repeat), e.g. --agent-arg=--no-checkpoint")
    parser.add_argument("--modes", default="executor,command,noop", help="comma-separated, from executor,command,noop")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"executor", "command", "noop"}:
        parser.error("--modes takes executor, command and/or noop")

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bmesos-bench-exec-") as tmp:
        work = Path(tmp)
        work.chmod(0o711)  # executors and tasks (user nobody, for an agent running as root) pass through
        node = RabbitNode(work / "rabbit", vhosts=len(modes)).start()
        try:
            for i, mode in enumerate(modes):
                results[mode] = run_mode(node.url(f"t{i}"), work, mode, args)
                r = results[mode]
                print(f"{mode}: {r['tasks_per_s']:,.0f} tasks/s; offer->RUNNING p50 {r['latency_p50_ms']} ms, "
                      f"p99 {r['latency_p99_ms']} ms; {r['failed']} failed", flush=True)
        finally:
            node.stop()
    print()
    print(f"{args.agents} agents; throughput runs at most {args.batch} tasks per offer; latency over {args.waves} "
          f"waves of {args.wave_size}")
    print(f"{'mode':<10} {'tasks':>7} {'tasks/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'failed':>7}")
    for mode, r in results.items():
        print(f"{mode:<10} {r['tasks']:>7} {r['tasks_per_s']:>10,.0f} {r['latency_p50_ms']:>8.2f} "
              f"{r['latency_p99_ms']:>8.2f} {r['failed']:>7}")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
