"""Launch throughput and offer-to-RUNNING latency, next to the broker's raw rate in the same run.

    .venv/bin/python scripts/bench_launch.py [--tasks 20000] [--agents 10] [--executor noop|command|both]

Starts a private RabbitMQ node (unless --broker), measures the raw publish/consume rate with plain pika,
then a master, N agents and a benchmark framework (our SDK) that launches every task as soon as an offer
has room for it. Reports tasks/s (first ACCEPT to last FINISHED) and offer-to-RUNNING latency.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pika

from broker_mesos.bus import provision
from broker_mesos.core.protocol import Offer, TaskState, TaskStatus
from broker_mesos.core.resources import Resources
from broker_mesos.framework.driver import SchedulerDriver, task
from broker_mesos.framework.scheduler import Scheduler
from broker_mesos.testing.processes import ProcessGroup
from broker_mesos.testing.rabbit import RabbitNode

TASK_RESOURCES = Resources.of(cpus=0.1, mem=10)
AGENT_RESOURCES = "cpus:100;mem:100000"


# -- raw broker rate ---------------------------------------------------------------------------


def _raw_consumer(url: str, queue: str, count: int, ready: multiprocessing.Event, out: multiprocessing.Queue) -> None:
    channel = pika.BlockingConnection(pika.URLParameters(url)).channel()
    channel.basic_qos(prefetch_count=1000)
    first = 0.0
    ready.set()
    for got, (method, _props, _body) in enumerate(channel.consume(queue), start=1):
        if got == 1:
            first = time.perf_counter()
        if got % 100 == 0 or got == count:
            channel.basic_ack(method.delivery_tag, multiple=True)
        if got == count:
            break
    out.put((first, time.perf_counter()))


def raw_rate(url: str, count: int) -> float:
    """Messages/s of plain pika: one process publishes 200-byte messages, another consumes them."""
    channel = pika.BlockingConnection(pika.URLParameters(url)).channel()
    queue = "bench.raw"
    channel.queue_delete(queue)
    channel.queue_declare(queue)
    ready, out = multiprocessing.Event(), multiprocessing.Queue()
    consumer = multiprocessing.Process(target=_raw_consumer, args=(url, queue, count, ready, out))
    consumer.start()
    ready.wait(30)
    body = b"x" * 200
    start = time.perf_counter()
    for _ in range(count):
        channel.basic_publish("", queue, body)
    _first, end = out.get(timeout=300)
    consumer.join()
    channel.queue_delete(queue)
    channel.connection.close()
    return count / (end - start)


# -- the benchmark framework -------------------------------------------------------------------


class LaunchAll(Scheduler):
    """Launches ``total`` tiny tasks, as many per offer as fit, all offers of a batch in one ACCEPT."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.next_task = 0
        self.offered_at: dict[str, float] = {}
        self.latencies: list[float] = []
        self.finished = 0
        self.failed = 0
        self.first_accept = 0.0
        self.last_finish = 0.0
        self.accepts = 0

    def resource_offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        now = time.perf_counter()
        tasks = []
        for offer in offers:
            room = offer.resources
            while self.next_task < self.total and room.contains(TASK_RESOURCES):
                room = room - TASK_RESOURCES
                task_id = f"t{self.next_task}"
                self.next_task += 1
                self.offered_at[task_id] = now
                tasks.append(task(task_id, offer.agent_id, "true", resources=TASK_RESOURCES, shell=False,
                                  arguments=["true"]))
        if not tasks:
            driver.decline([o.offer_id for o in offers], refuse_seconds=60)
            return
        if not self.first_accept:
            self.first_accept = now
        self.accepts += 1
        driver.accept([o.offer_id for o in offers], tasks)

    def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
        if status.state == TaskState.RUNNING:
            started = self.offered_at.pop(status.task_id, None)
            if started is not None:
                self.latencies.append(time.perf_counter() - started)
        elif status.state.terminal:
            self.finished += status.state == TaskState.FINISHED
            self.failed += status.state != TaskState.FINISHED
            if self.finished + self.failed == self.total:
                self.last_finish = time.perf_counter()
                driver.stop()


class Principals:
    """Security on: every process as its own least-privilege principal, provisioned on a private node
    with the management plugin (what `bmesos principals` does), the master checking every user_id."""

    def __init__(self, node: RabbitNode, vhost: str) -> None:
        api = provision.ManagementApi(node.management_url())
        self.provisioner = provision.Provisioner(api, vhost, f"amqp://127.0.0.1:{node.port}")
        issued, _ = self.provisioner.init()
        self.urls = {i.user: i.url for i in issued if i.url}

    def url(self, kind: str, name: str) -> str:
        user = "master" if kind == "master" else f"{kind}.{name}"
        if user not in self.urls:
            self.urls[user] = self.provisioner.add(kind, name).url  # type: ignore[assignment]
        return self.urls[user]


def run_launch(url: str, tasks: int, agents: int, executor: str, work: Path, interval: float,
               agent_resources: str = AGENT_RESOURCES, agent_args: tuple[str, ...] = (),
               principals: Principals | None = None) -> dict[str, float]:
    procs = ProcessGroup(work / f"logs-{executor}-{'secure' if principals else 'insecure'}")

    def as_(kind: str, name: str) -> str:
        return principals.url(kind, name) if principals is not None else url

    env = {"BMESOS_INSECURE": "0"} if principals is not None else None
    try:
        master = procs.bmesos("master", "master", "--allocation-interval", str(interval), "--log-level", "warning",
                              env={**(env or {}), "BMESOS_BROKER": as_("master", "")})
        for i in range(agents):
            agent_id = f"bench-{executor}-{i}"
            procs.bmesos(f"agent{i}", "agent", "--id", agent_id,
                         "--resources", agent_resources, "--executor", executor, "--log-level", "info",
                         "--work-dir", str(work / f"agent-{executor}-{i}-{bool(principals)}"), *agent_args,
                         env={**(env or {}), "BMESOS_BROKER": as_("agent", agent_id)})
        for proc in procs.procs[1:]:
            proc.wait_output(r"agent \S+ registered", timeout=60)
        scheduler = LaunchAll(tasks)
        driver = SchedulerDriver(scheduler, as_("framework", "bench"), f"bench-{executor}")
        wall = time.perf_counter()
        driver.run()
        wall = time.perf_counter() - wall
        assert master.alive(), master.output()[-2000:]
        lat = sorted(scheduler.latencies)
        elapsed = scheduler.last_finish - scheduler.first_accept
        return {"tasks": tasks, "finished": scheduler.finished, "failed": scheduler.failed,
                "seconds": round(elapsed, 3), "tasks_per_s": round(tasks / elapsed, 1),
                "accepts": scheduler.accepts, "wall_s": round(wall, 3),
                "latency_median_ms": round(statistics.median(lat) * 1000, 1),
                "latency_p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 1)}
    finally:
        procs.stop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--command-tasks", type=int, default=None,
                        help="tasks for the run with real `true` subprocesses (default: --tasks)")
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--executor", choices=["noop", "command", "both"], default="both")
    parser.add_argument("--allocation-interval", type=float, default=0.05)
    parser.add_argument("--agent-resources", default=AGENT_RESOURCES,
                        help="each agent's resources; tasks take cpus:0.1;mem:10, so this sets the batch size "
                             "per offer (smaller batches: lower latency, more messages)")
    parser.add_argument("--agent-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for every `bmesos agent` (repeat), e.g. --agent-arg=--checkpoint")
    parser.add_argument("--raw-messages", type=int, default=50_000)
    parser.add_argument("--broker", help="use this broker instead of starting a private node")
    parser.add_argument("--security", choices=["off", "on", "both"], default="off",
                        help="off: the master's development mode (guest, nothing checked); on: every process its "
                             "own principal, user_id checked; both: the two in one run, for their ratio")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bmesos-bench-") as tmp:
        work = Path(tmp)
        node = None
        if args.broker:
            url = args.broker
        else:
            node = RabbitNode(work / "rabbit", vhosts=3, management=args.security != "off").start()
            url = node.url("t0")
        try:
            results: dict[str, object] = {"raw_msgs_per_s": round(raw_rate(url, args.raw_messages), 1)}
            print(f"raw pika publish->consume: {results['raw_msgs_per_s']:,.0f} msgs/s", flush=True)
            executors = ["noop", "command"] if args.executor == "both" else [args.executor]
            modes = ["off", "on"] if args.security == "both" else [args.security]
            if "on" in modes and node is None:
                parser.error("--security on needs the private node (no --broker)")
            principals = Principals(node, "bench") if "on" in modes and node is not None else None
            for executor, mode in [(e, m) for e in executors for m in modes]:
                count = args.tasks if executor == "noop" else (args.command_tasks or args.tasks)
                result = run_launch(url, count, args.agents, executor, work, args.allocation_interval,
                                    args.agent_resources, tuple(args.agent_arg), principals if mode == "on" else None)
                result["ratio_to_raw"] = round(result["tasks_per_s"] / results["raw_msgs_per_s"], 3)
                results[f"{executor}-security-{mode}" if len(modes) > 1 else executor] = result
                label = f"{executor}, security {mode}" if len(modes) > 1 else executor
                print(f"{label:>7}: {result['tasks']} tasks on {args.agents} agents in {result['seconds']}s = "
                      f"{result['tasks_per_s']:,.0f} tasks/s ({result['ratio_to_raw']:.2f}x raw); offer->RUNNING "
                      f"median {result['latency_median_ms']} ms, p99 {result['latency_p99_ms']} ms; "
                      f"{result['accepts']} ACCEPTs, {result['failed']} failed", flush=True)
            if args.json:
                print(json.dumps(results))
        finally:
            if node is not None:
                node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
