"""The built-in frameworks' planners in the simulator: the real master core and the real planners on a
virtual clock, driven by the same ``PlannerScheduler`` the scheduler process uses."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from broker_mesos.core.master import MasterConfig
from broker_mesos.core.protocol import TaskInfo, TaskState, TaskStatus
from broker_mesos.framework.jobs.planner import JobPlanner
from broker_mesos.framework.jobs.spec import parse_job
from broker_mesos.framework.planned import PlannerScheduler
from broker_mesos.framework.services.planner import ServicePlanner
from broker_mesos.framework.services.spec import parse_service
from broker_mesos.sim.engine import Simulation

TICK = 0.1


def simulation(agents: int, duration: float, start: float = 0.0) -> tuple[Simulation, PlannerScheduler]:
    sim = Simulation(MasterConfig(master_id="sim", allocation_interval=0.1, offer_timeout=5.0))
    sim.now = start  # the virtual clock may start at any instant (a date, for the cron tests)
    for i in range(agents):
        sim.add_agent(f"agent-{i}", "cpus:4;mem:4096;ports:[31000-31010]")
    scheduler = PlannerScheduler(lambda: sim.now)
    scheduler.calls = sim.add_framework("builtin", scheduler, lambda task: duration)

    def tick() -> None:
        scheduler.tick()
        sim.after(TICK, tick)

    sim.after(TICK, tick)
    return sim, scheduler


def test_services_place_with_constraints_and_roll_without_dropping_below_min_healthy() -> None:
    sim, scheduler = simulation(agents=4, duration=1e9)
    planner = ServicePlanner("builtin")
    scheduler.planner = planner
    planner.deploy(parse_service({"name": "web", "command": "serve", "instances": 5, "cpus": 1, "mem": 64,
                                  "ports": 1, "constraints": {"hostname": "UNIQUE"},
                                  "upgrade": {"max_parallel": 1, "min_healthy": 3}}), sim.now)
    sim.run(until=10)
    status = planner.status("web", sim.now)
    assert status["running"] == 4 and {i["hostname"] for i in status["instances"]} == {f"agent-{i}" for i in range(4)}
    assert status["pending"][0]["reason"].startswith("UNIQUE hostname: 4 agents for 5 instances")

    planner.scale("web", 4, sim.now)
    sim.run(until=15)
    healthy_floor: list[int] = []
    seen = scheduler.status_update

    def watched(driver: object, update: TaskStatus) -> None:
        seen(driver, update)
        healthy_floor.append(planner.status("web", sim.now)["healthy"])

    scheduler.status_update = watched  # type: ignore[method-assign]
    planner.restart("web", sim.now)
    sim.run(until=120, stop=lambda: planner.status("web", sim.now)["deployment"] is None and sim.now > 16)
    status = planner.status("web", sim.now)
    assert status["deployment"] is None and status["healthy"] == 4
    assert {i["version"] for i in status["instances"]} == {status["version"]}
    assert healthy_floor and min(healthy_floor) >= 3, healthy_floor
    master_live = {key[1] for key, task in sim.master.tasks.items() if key[0] == "builtin"}
    assert master_live == {i["task_id"] for i in status["instances"]}


def test_an_hourly_job_in_berlin_fires_once_an_hour_across_the_spring_forward_night() -> None:
    start = dt.datetime(2026, 3, 29, 0, 30, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()  # spring forward at 2:00
    sim, scheduler = simulation(agents=1, duration=1.0, start=start)
    planner = JobPlanner("builtin")
    scheduler.planner = planner
    planner.add(parse_job({"name": "hourly", "schedule": "0 * * * *", "timezone": "Europe/Berlin",
                           "command": "true", "starting_deadline": 30}), sim.now)
    launched: list[TaskInfo] = []
    original = sim.deliver_call

    def deliver(framework_id: str, body: object, call_id: str) -> None:
        launched.extend(getattr(body, "tasks", []))
        original(framework_id, body, call_id)

    sim.deliver_call = deliver  # type: ignore[method-assign]
    sim.run(until=start + 3 * 3600)
    runs = planner.history("hourly", 100)
    assert [r["state"] for r in runs] == ["SUCCEEDED"] * 3
    berlin = [dt.datetime.fromisoformat(r["scheduled_for"]) for r in reversed(runs)]
    # 01:00 CET, then 03:00 CEST (02:00 does not exist that night), then 04:00 CEST: hourly in elapsed time
    assert [(t.hour, t.utcoffset()) for t in berlin] == [(1, dt.timedelta(hours=1)), (3, dt.timedelta(hours=2)),
                                                          (4, dt.timedelta(hours=2))]
    assert len(launched) == 3 and len({t.task_id for t in launched}) == 3
    finished = [k for k, t in sim.master.completed.items() if t.state is TaskState.FINISHED]
    assert len(finished) == 3
