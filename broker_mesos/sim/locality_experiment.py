"""The data-locality experiment of the Mesos paper (Hindman et al., NSDI 2011, section 6.3, Figure 7).

Several Hadoop-like frameworks share a cluster. Each runs jobs one after another; a job is a set of
map tasks, each reading one input block stored on ``replicas`` random nodes. A task is *local* when it
runs on a node holding its block; a non-local task reads its block over the network and takes
``remote_factor`` times as long (our model of the paper's remote reads; the factor is an assumption,
not a figure from the paper). The frameworks use ``DelayScheduler`` with a wait of 0, 1 or 5 seconds
on the real master core (DRF allocator, DECLINE filters) in ``Simulation``; the baseline is static
partitioning: each framework alone on its own share of the nodes, as if on its own cluster.

Reported per variant: the share of local tasks and the mean job completion time (submission to last
task finished). Everything is seeded, so a workload and a seed always give the same table.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from broker_mesos.core.master import MasterConfig
from broker_mesos.core.protocol import CommandInfo, Error, Offer, TaskInfo, TaskStatus
from broker_mesos.core.resources import Resources
from broker_mesos.framework.locality import DelayScheduler, LocalityTask, Preference
from broker_mesos.framework.scheduler import Scheduler
from broker_mesos.sim.engine import Duration, SimDriver, Simulation

SLOT = Resources.of(cpus=1, mem=1024)
COMMAND = CommandInfo("map")
TIME_LIMIT = 1e6


@dataclass(frozen=True, slots=True)
class Workload:
    """The experiment's shape; the defaults follow the paper's cluster (93 nodes x 4 slots, 16 Hadoops)."""

    nodes: int = 93
    slots_per_node: int = 4
    frameworks: int = 16
    jobs_per_framework: int = 4
    tasks_per_job: int = 50
    replicas: int = 3
    task_seconds: float = 10.0
    jitter: float = 0.1
    remote_factor: float = 2.0
    refuse_seconds: float = 1.0
    allocation_interval: float = 0.1
    seed: int = 1

    def node_ids(self) -> list[str]:
        return [f"node{i:03d}" for i in range(self.nodes)]

    def framework_ids(self) -> list[str]:
        return [f"hadoop{i:02d}" for i in range(self.frameworks)]


Blocks = dict[str, list[list[frozenset[str]]]]
"""framework id -> job -> task -> the nodes holding that task's input block."""


def place_blocks(workload: Workload) -> Blocks:
    """Random block placement: each block on ``replicas`` distinct nodes (seeded)."""
    rng = random.Random(workload.seed)
    nodes = workload.node_ids()
    return {fw: [[frozenset(rng.sample(nodes, workload.replicas)) for _ in range(workload.tasks_per_job)]
                 for _ in range(workload.jobs_per_framework)]
            for fw in workload.framework_ids()}


@dataclass
class FrameworkResult:
    local: int = 0
    tasks: int = 0
    job_seconds: list[float] = field(default_factory=list)
    finished_at: float = 0.0


class HadoopLike(Scheduler):
    """Runs its jobs one after another; places map tasks with delay scheduling (``max_wait``)."""

    def __init__(self, framework_id: str, jobs: list[list[frozenset[str]]], max_wait: float,
                 refuse_seconds: float) -> None:
        self.framework_id = framework_id
        self.jobs = jobs
        self.delay = DelayScheduler(max_wait, refuse_seconds=refuse_seconds)
        self.result = FrameworkResult()
        self.job = -1
        self.job_started = 0.0
        self.outstanding = 0
        self.suppressed = False
        self.in_flight: dict[str, list[LocalityTask]] = {}

    @property
    def done(self) -> bool:
        return self.job >= len(self.jobs)

    def registered(self, driver: SimDriver, framework_id: str) -> None:  # type: ignore[override]
        if self.job < 0:
            self._next_job(driver)

    def _next_job(self, driver: SimDriver) -> None:
        self.job += 1
        if self.done:
            self.result.finished_at = driver.now
            driver.suppress()
            return
        self.job_started = driver.now
        blocks = self.jobs[self.job]
        self.outstanding = len(blocks)
        for i, replicas in enumerate(blocks):
            task_id = f"{self.framework_id}-j{self.job}-m{i}"
            self.delay.add(LocalityTask(task_id, SLOT, Preference.of(agents=replicas), f"j{self.job}", replicas),
                           driver.now)
        if self.suppressed:
            driver.revive()
            self.suppressed = False

    def resource_offers(self, driver: SimDriver, offers: list[Offer]) -> None:  # type: ignore[override]
        declined: dict[float, list[str]] = {}
        for decision in self.delay.decide_all(offers, driver.now):
            if not decision.accepted:
                declined.setdefault(decision.refuse_seconds, []).append(decision.offer.offer_id)
                continue
            tasks = [TaskInfo(p.task.task_id, p.agent_id, p.task.resources, COMMAND, p.task.task_id)
                     for p in decision.placements]
            call_id = driver.launch(decision.offer, tasks, decision.refuse_seconds)
            self.in_flight[call_id] = [p.task for p in decision.placements]
        for refuse, offer_ids in declined.items():
            driver.decline(offer_ids, refuse)
        if not self.delay.pending and not self.suppressed:
            driver.suppress()
            self.suppressed = True

    def status_update(self, driver: SimDriver, status: TaskStatus) -> None:  # type: ignore[override]
        if not status.state.terminal or not status.task_id.startswith(f"{self.framework_id}-j{self.job}-"):
            return
        self.outstanding -= 1
        if self.outstanding == 0:
            self.result.job_seconds.append(driver.now - self.job_started)
            self._next_job(driver)

    def call_refused(self, driver: SimDriver, error: Error) -> None:  # type: ignore[override]
        for task in self.in_flight.pop(error.call_id, []):
            self.delay.add(task, driver.now)
        if self.suppressed:
            driver.revive()
            self.suppressed = False


@dataclass(frozen=True, slots=True)
class Result:
    variant: str
    local_share: float
    mean_job_seconds: float
    makespan: float
    tasks: int


def _duration_model(workload: Workload, rng: random.Random, replicas_of: dict[str, frozenset[str]],
                    tally: FrameworkResult) -> Duration:
    """Task durations: ``task_seconds`` with jitter, ``remote_factor`` times that off the block's nodes;
    counts local and all tasks into ``tally`` as they start."""

    def duration(task: TaskInfo) -> float:
        local = task.agent_id in replicas_of[task.task_id]
        tally.tasks += 1
        tally.local += local
        base = workload.task_seconds * rng.uniform(1 - workload.jitter, 1 + workload.jitter)
        return base if local else base * workload.remote_factor
    return duration


def _simulate(workload: Workload, blocks: Blocks, framework_ids: Sequence[str], nodes: Sequence[str],
              max_wait: float, rng: random.Random) -> list[HadoopLike]:
    config = MasterConfig(master_id="sim", allocation_interval=workload.allocation_interval,
                          offer_timeout=max(30.0, workload.task_seconds * 10))
    sim = Simulation(config, tick_interval=workload.allocation_interval / 2)
    slots = workload.slots_per_node
    for node in nodes:
        sim.add_agent(node, Resources.of(cpus=slots, mem=1024 * slots))
    schedulers = []
    for fw in framework_ids:
        scheduler = HadoopLike(fw, blocks[fw], max_wait, workload.refuse_seconds)
        replicas_of = {f"{fw}-j{j}-m{i}": replicas
                       for j, job in enumerate(blocks[fw]) for i, replicas in enumerate(job)}
        sim.add_framework(fw, scheduler, _duration_model(workload, rng, replicas_of, scheduler.result))
        schedulers.append(scheduler)
    sim.run(until=TIME_LIMIT, stop=lambda: all(s.done for s in schedulers))
    unfinished = [s.framework_id for s in schedulers if not s.done]
    if unfinished:
        raise RuntimeError(f"simulation hit its time limit with frameworks {unfinished} unfinished")
    return schedulers


def _summarise(variant: str, schedulers: Sequence[HadoopLike]) -> Result:
    local = sum(s.result.local for s in schedulers)
    tasks = sum(s.result.tasks for s in schedulers)
    jobs = [seconds for s in schedulers for seconds in s.result.job_seconds]
    return Result(variant, local / tasks, sum(jobs) / len(jobs), max(s.result.finished_at for s in schedulers), tasks)


def run_static(workload: Workload, blocks: Blocks | None = None) -> Result:
    """Static partitioning: framework i alone on every ``frameworks``-th node (its own small cluster)."""
    blocks = blocks or place_blocks(workload)
    rng = random.Random(workload.seed + 1)
    nodes = workload.node_ids()
    schedulers: list[HadoopLike] = []
    for i, fw in enumerate(workload.framework_ids()):
        schedulers += _simulate(workload, blocks, [fw], nodes[i::workload.frameworks], 0.0, rng)
    return _summarise("static partitioning", schedulers)


def run_shared(workload: Workload, max_wait: float, blocks: Blocks | None = None) -> Result:
    """All frameworks share every node through the master; delay scheduling waits ``max_wait`` seconds."""
    blocks = blocks or place_blocks(workload)
    rng = random.Random(workload.seed + 1)
    schedulers = _simulate(workload, blocks, workload.framework_ids(), workload.node_ids(), max_wait, rng)
    label = "shared, no delay scheduling" if max_wait <= 0 else f"shared, delay scheduling {max_wait:g} s"
    return _summarise(label, schedulers)


def run_experiment(workload: Workload, waits: Sequence[float] = (0.0, 1.0, 5.0)) -> list[Result]:
    """Static partitioning, then the shared cluster with each delay-scheduling wait; same blocks for all."""
    blocks = place_blocks(workload)
    return [run_static(workload, blocks), *(run_shared(workload, wait, blocks) for wait in waits)]
