"""The simulator: the real master core on a virtual clock, and the Mesos paper's data-locality result on it."""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from pathlib import Path

import pytest

import broker_mesos
from broker_mesos.core.master import MasterConfig
from broker_mesos.core.protocol import CommandInfo, Error, Offer, TaskInfo, TaskState, TaskStatus
from broker_mesos.core.resources import Resources
from broker_mesos.framework.examples.locality import LocalityScheduler
from broker_mesos.framework.locality import Preference
from broker_mesos.framework.scheduler import Scheduler
from broker_mesos.sim.engine import SimDriver, Simulation
from broker_mesos.sim.locality_experiment import Workload, run_experiment, run_shared, run_static

SIM = Path(broker_mesos.__file__).parent / "sim"
ONE = Resources.of(cpus=1, mem=64)


class Recorder(Scheduler):
    """Launches ``count`` one-CPU tasks wherever offered; records what happens, with virtual times."""

    def __init__(self, count: int, decline_agents: dict[str, float] | None = None) -> None:
        self.waiting = [f"t{i}" for i in range(count)]
        self.decline_agents = decline_agents or {}
        self.offers: list[tuple[float, str]] = []
        self.statuses: list[tuple[float, str, TaskState, str]] = []
        self.refused: list[Error] = []

    def resource_offers(self, driver: SimDriver, offers: list[Offer]) -> None:  # type: ignore[override]
        for offer in offers:
            self.offers.append((driver.now, offer.agent_id))
            if offer.agent_id in self.decline_agents or not self.waiting:
                driver.decline([offer.offer_id], self.decline_agents.get(offer.agent_id, 60.0))
                continue
            free, tasks, need = offer.resources, [], ONE
            while self.waiting and need <= free:
                free = free - need
                task_id = self.waiting.pop(0)
                tasks.append(TaskInfo(task_id, offer.agent_id, ONE, CommandInfo("x"), task_id))
            driver.launch(offer, tasks)

    def status_update(self, driver: SimDriver, status: TaskStatus) -> None:  # type: ignore[override]
        self.statuses.append((driver.now, status.task_id, status.state, status.agent_id))

    def call_refused(self, driver: SimDriver, error: Error) -> None:  # type: ignore[override]
        self.refused.append(error)


def test_tasks_run_for_their_virtual_duration_and_the_books_balance() -> None:
    sim = Simulation(MasterConfig(master_id="sim", allocation_interval=0.5))
    sim.add_agent("a1", "cpus:2;mem:1024")
    sim.add_agent("a2", "cpus:2;mem:1024")
    fw = Recorder(6)
    sim.add_framework("fw", fw, lambda task: 10.0 + int(task.task_id[1:]))
    sim.run(until=200.0, stop=lambda: sum(s[2] is TaskState.FINISHED for s in fw.statuses) == 6)
    sim.master.check_invariants()
    running = {task: t for t, task, state, _ in fw.statuses if state is TaskState.RUNNING}
    finished = {task: t for t, task, state, _ in fw.statuses if state is TaskState.FINISHED}
    assert set(finished) == {f"t{i}" for i in range(6)}
    for task, started in running.items():
        assert finished[task] - started == pytest.approx(10.0 + int(task[1:]))
    assert running["t0"] == 0.0 and min(running[t] for t in ("t4", "t5")) >= 10.0  # 4 slots: t4, t5 wait
    assert sim.counters.launched == sim.counters.finished == 6
    assert all(a.free == a.total for a in sim.master.agents.values())  # everything back in the pool
    assert sim.now < 200.0


def test_decline_filters_and_refused_calls_follow_the_master_core() -> None:
    sim = Simulation(MasterConfig(master_id="sim", allocation_interval=0.1))
    sim.add_agent("a1", "cpus:1;mem:64")
    fw = Recorder(0, decline_agents={"a1": 3.0})
    driver = sim.add_framework("fw", fw, lambda task: 1.0)
    sim.run(until=10.0)
    times = [t for t, agent in fw.offers if agent == "a1"]
    assert len(times) >= 3 and all(b - a >= 3.0 for a, b in itertools.pairwise(times))
    call_id = driver.accept(["no-such-offer"], [TaskInfo("x", "a1", ONE, CommandInfo("x"), "x")])
    sim.run(until=11.0)
    assert [e.call_id for e in fw.refused] == [call_id] and fw.refused[0].call_type == "ACCEPT"


def test_the_example_framework_runs_unchanged_in_the_simulator() -> None:
    """examples/locality.py's scheduler on the virtual clock: local when the rack frees up within the
    wait, non-local once the wait is over."""
    for wait, task_seconds, expect in ((30.0, 5.0, ["r1-agent", "r1-agent"]), (2.0, 20.0, ["r1-agent", "r2-agent"])):
        sim = Simulation()
        sim.add_agent("r1-agent", "cpus:1;mem:1024", {"rack": "r1"})
        sim.add_agent("r2-agent", "cpus:4;mem:4096", {"rack": "r2"})
        scheduler = LocalityScheduler("ex", 2, Preference.of(attributes={"rack": "r1"}), wait, ["sleep", "1"],
                                      cpus=1.0, mem=64.0, clock=lambda sim=sim: sim.now)
        sim.add_framework("ex", scheduler, lambda task, s=task_seconds: s)
        sim.run(until=500.0, stop=lambda s=scheduler: s.done)
        assert scheduler.all_finished
        assert [scheduler.placed[t].agent_id for t in scheduler.task_ids] == expect
        second = scheduler.placed[scheduler.task_ids[1]]
        assert second.waited >= (task_seconds if second.local else wait)


def test_small_locality_experiment_delay_scheduling_raises_locality() -> None:
    """The paper's qualitative result: a longer wait gives more local tasks (5 s > 1 s > 0 s), and
    sharing the cluster beats static partitioning; summed over three seeds to be robust."""
    local = {0.0: 0, 1.0: 0, 5.0: 0}
    tasks = 0
    static_local = 0
    static_time = delayed_time = 0.0
    for seed in (1, 2, 3):
        workload = Workload(nodes=20, frameworks=4, jobs_per_framework=2, tasks_per_job=30, replicas=1,
                            task_seconds=20.0, seed=seed)
        for wait in local:
            result = run_shared(workload, wait)
            local[wait] += round(result.local_share * result.tasks)
            if wait == 5.0:
                delayed_time += result.mean_job_seconds
        tasks += result.tasks
        static = run_static(workload)
        static_local += round(static.local_share * static.tasks)
        static_time += static.mean_job_seconds
    assert local[5.0] > local[1.0] > local[0.0] > static_local
    assert local[5.0] / tasks > 0.8 and static_local / tasks < 0.4
    assert delayed_time < static_time


def test_the_experiment_is_deterministic() -> None:
    workload = Workload(nodes=12, frameworks=3, jobs_per_framework=1, tasks_per_job=20, seed=7)
    assert run_experiment(workload, (0.0, 1.0)) == run_experiment(workload, (0.0, 1.0))


def test_the_simulator_stays_pure() -> None:
    forbidden = ("pika", "broker_mesos.bus", "broker_mesos.master", "broker_mesos.agent", "broker_mesos.cli",
                 "broker_mesos.framework.driver", "threading", "time", "socket", "subprocess")
    for path in sorted(SIM.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not any(name == f or name.startswith(f + ".") for f in forbidden), f"{path.name} imports {name}"
    probe = ("import sys, broker_mesos.sim.locality_experiment; "
             "print(sorted(m for m in sys.modules if m == 'pika' or m.startswith('broker_mesos.bus')))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_reconcile_answers_in_the_simulator_as_from_the_real_master() -> None:
    class Asker(Scheduler):
        def __init__(self) -> None:
            self.updates: list[TaskStatus] = []

        def registered(self, driver: object, framework_id: str) -> None:
            driver.reconcile(["never-launched"])  # type: ignore[attr-defined]

        def status_update(self, driver: object, status: TaskStatus) -> None:
            self.updates.append(status)

    sim = Simulation()
    asker = Asker()
    sim.add_framework("asker", asker, lambda task: 1.0)
    sim.run(until=1.0)
    assert [(u.task_id, u.state) for u in asker.updates] == [("never-launched", TaskState.LOST)]
