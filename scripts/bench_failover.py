"""Fault-tolerance figures: master failover time, agent loss detection, reconnect after a broker restart.

    python scripts/bench_failover.py [--runs 10] [--append docs/benchmarks.md]

Starts a private RabbitMQ node, two masters, agents and an in-process SDK framework that holds every
offer it gets (so a new offer only comes from a new master, or after a reconnect), then:
* master failover: SIGKILL the active master, time until the first offer made by the standby; the
  killed master is restarted as the next standby; ``--runs`` times (median, max);
* agent loss: SIGKILL an agent (heartbeat 0.5 s, master --max-missed-heartbeats 3: bound 1.5 s), time
  until the master publishes ``agent.removed`` (seen on the ``events`` exchange);
* broker restart: stop and start the node, time from the node accepting connections again to the
  first offer.
"""

from __future__ import annotations

import argparse
import datetime
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import pika

from broker_mesos.bus import topology
from broker_mesos.core import codec
from broker_mesos.core.protocol import Offer
from broker_mesos.framework.driver import SchedulerDriver
from broker_mesos.framework.scheduler import Scheduler
from broker_mesos.testing.processes import Proc, ProcessGroup
from broker_mesos.testing.rabbit import RabbitNode
from broker_mesos.testing.wait import wait_for

HEARTBEAT = 0.5
MAX_MISSED = 3


class Holder(Scheduler):
    """Keeps every offer (never answers): records when offers arrive and which master made them."""

    def __init__(self) -> None:
        self.offers: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    def resource_offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        with self.lock:
            self.offers.extend((time.monotonic(), o.offer_id.rsplit("-O", 1)[0]) for o in offers)

    def first_after(self, since: float, master: str | None = None) -> float | None:
        with self.lock:
            return next((t for t, m in self.offers if t >= since and (master is None or m == master)), None)


def serving(masters: list[Proc]) -> Proc | None:
    live = [m for m in masters if m.alive() and m.output().count("serving") > m.output().count("lost its lease")]
    return live[0] if len(live) == 1 else None


def start_master(procs: ProcessGroup, url: str, name: str) -> Proc:
    return procs.bmesos(name, "master", "--broker", url, "--master-id", name, "--allocation-interval", "0.1",
                        "--max-missed-heartbeats", str(MAX_MISSED))


def master_failover(procs: ProcessGroup, url: str, holder: Holder, runs: int) -> list[float]:
    masters = [start_master(procs, url, f"m{i}") for i in range(2)]
    wait_for(lambda: serving(masters) is not None, 60, "a master serving")
    times = []
    for run in range(runs):
        active = serving(masters)
        assert active is not None
        standby = next(m for m in masters if m is not active)
        standby.wait_output(r"standing by", 30)
        killed = time.monotonic()
        active.kill()
        name = re.search(r"master (\S+) standing by", standby.output())[1]  # type: ignore[index]
        first = wait_for(lambda name=name, killed=killed: holder.first_after(killed, name), 30,
                         "an offer from the new master")
        times.append(first - killed)
        replacement = start_master(procs, url, f"m{run + 2}")
        masters = [standby, replacement]
    return times


def agent_loss(procs: ProcessGroup, url: str, work: Path, runs: int) -> list[float]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    events = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(events, topology.EVENTS, routing_key="agent.removed")
    times = []
    for run in range(runs):
        agent_id = f"lossy{run}"
        agent = procs.bmesos(agent_id, "agent", "--broker", url, "--id", agent_id, "--resources", "cpus:1;mem:256",
                             "--work-dir", str(work / agent_id), "--heartbeat-interval", str(HEARTBEAT))
        agent.wait_output(rf"agent {agent_id} registered", 60)
        time.sleep(2 * HEARTBEAT)  # let it heartbeat normally first: the bound counts from its last heartbeat
        killed = time.monotonic()
        agent.kill()

        def removed(agent_id: str = agent_id) -> bool:
            method, _props, body = channel.basic_get(events, auto_ack=True)
            return method is not None and codec.decode(body).body.detail.get("agent_id") == agent_id

        wait_for(removed, 30, f"agent.removed for {agent_id}", interval=0.01)
        times.append(time.monotonic() - killed)
    connection.close()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--append", type=Path, default=None, help="append the figures to this markdown file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        node = RabbitNode(Path(tmp) / "rabbit", vhosts=1).start()
        procs = ProcessGroup(Path(tmp) / "logs")
        driver = None
        try:
            url = node.url(node.fresh_vhost())
            procs.bmesos("agent", "agent", "--broker", url, "--id", "a1", "--resources", "cpus:4;mem:4096",
                         "--work-dir", str(Path(tmp) / "a1")).wait_output(r"agent a1 registered", 60)
            holder = Holder()
            driver = SchedulerDriver(holder, url, "bench-failover")
            driver.start()
            failover = master_failover(procs, url, holder, args.runs)
            loss = agent_loss(procs, url, Path(tmp), max(3, args.runs // 2))
            node.stop()
            node.start()
            back = time.monotonic()
            reconnect = wait_for(lambda: holder.first_after(back), 60, "an offer after the broker restart") - back
        finally:
            if driver is not None:
                driver.stop()
            procs.stop_all()
            node.stop()
    bound = HEARTBEAT * MAX_MISSED
    lines = [
        f"- master failover, SIGKILL of the active master to the first offer from the standby "
        f"({len(failover)} runs): median {statistics.median(failover):.2f} s, max {max(failover):.2f} s",
        f"- agent loss detection (heartbeat {HEARTBEAT:g} s x {MAX_MISSED} missed = bound {bound:.1f} s, "
        f"{len(loss)} runs): median {statistics.median(loss):.2f} s, max {max(loss):.2f} s",
        f"- broker restart, node accepting connections again to the first offer: {reconnect:.2f} s",
    ]
    print("\n".join(lines))
    if args.append is not None:
        today = datetime.date.today().isoformat()
        with args.append.open("a") as out:
            out.write(f"\n## Fault tolerance\n\n`python scripts/bench_failover.py --runs {args.runs}` ({today}, one "
                      "private RabbitMQ node, 2 cores shared with other work):\n\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
