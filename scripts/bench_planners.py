"""How fast the built-in frameworks' pure planners decide (no broker: the planners alone, on a virtual
clock), so a scheduler's loop stays responsive at a thousand instances or jobs.

    .venv/bin/python scripts/bench_planners.py [--instances 1000] [--agents 50] [--jobs 1000]

Reports, per constraint kind, the time of one ``offers()`` call placing every instance of a service
over one offer per agent, then the time per RUNNING status update of those instances; and for
``--jobs`` jobs firing every second, the time of one ``tick()`` that starts them all and of one
``offers()`` placing their runs. Figures go to docs/benchmarks.md with this command.
"""

from __future__ import annotations

import argparse
import time
import uuid

from broker_mesos.core.protocol import Offer, TaskState, TaskStatus
from broker_mesos.core.resources import Resources
from broker_mesos.framework.jobs.planner import JobPlanner
from broker_mesos.framework.jobs.spec import parse_job
from broker_mesos.framework.planning import Launch
from broker_mesos.framework.services.planner import ServicePlanner
from broker_mesos.framework.services.spec import parse_service

START = 1_800_000_000.0


def offers(agents: int, round_no: int) -> list[Offer]:
    return [Offer(f"o{round_no}-{i}", "fw", f"agent-{i}", f"host-{i}",
                  Resources.parse("cpus:1000;mem:1000000;ports:[31000-32999]"), {"rack": f"r{i % 5}"})
            for i in range(agents)]


def bench_service(instances: int, agents: int, constraints: dict[str, str]) -> tuple[float, float, int]:
    planner = ServicePlanner("fw")
    planner.deploy(parse_service({"name": "web", "command": "serve", "instances": instances, "cpus": 0.1,
                                  "mem": 16, "ports": 1, "constraints": constraints}), START)
    planner.tick(START)
    started = time.perf_counter()
    effects = planner.offers(offers(agents, 0), START + 1)
    place = time.perf_counter() - started
    tasks = [t for e in effects if isinstance(e, Launch) for t in e.tasks]
    started = time.perf_counter()
    for task in tasks:
        planner.status_update(TaskStatus(task.task_id, "fw", task.agent_id, TaskState.RUNNING, uuid.uuid4().hex,
                                         START + 2), START + 2)
    per_update = (time.perf_counter() - started) / max(1, len(tasks))
    return place, per_update, len(tasks)


def bench_jobs(jobs: int, agents: int) -> tuple[float, float, int]:
    planner = JobPlanner("fw")
    for i in range(jobs):
        planner.add(parse_job({"name": f"job-{i}", "schedule": "* * * * * *", "command": "true", "cpus": 0.01,
                               "mem": 1, "starting_deadline": 30}), START)
    started = time.perf_counter()
    planner.tick(START + 1)
    tick = time.perf_counter() - started
    started = time.perf_counter()
    effects = planner.offers(offers(agents, 1), START + 1)
    place = time.perf_counter() - started
    return tick, place, sum(len(e.tasks) for e in effects if isinstance(e, Launch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    print(f"| service of {args.instances} instances, {args.agents} agents | placed | one offers() call | "
          f"per status update |")
    print("| --- | --- | --- | --- |")
    kinds = (("no constraint", {}), ("rack: GROUP_BY", {"rack": "GROUP_BY"}),
             ("hostname: UNIQUE", {"hostname": "UNIQUE"}), ("rack: LIKE:r[0-2]", {"rack": "LIKE:r[0-2]"}))
    for label, constraints in kinds:
        place, per_update, placed = bench_service(args.instances, args.agents, constraints)
        print(f"| {label} | {placed} | {place * 1000:.1f} ms | {per_update * 1e6:.0f} µs |")
    tick, place, launched = bench_jobs(args.jobs, args.agents)
    print(f"\n| {args.jobs} jobs firing each second | one tick() | one offers() ({args.agents} agents) | runs placed |")
    print("| --- | --- | --- | --- |")
    print(f"| | {tick * 1000:.1f} ms | {place * 1000:.1f} ms | {launched} |")


if __name__ == "__main__":
    main()
