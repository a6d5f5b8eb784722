"""An agent's Prometheus metrics (``bmesos agent --metrics-port``).

Everything is read at scrape time on the agent's loop, from what the ``Agent`` already keeps: its
tasks by state, its framework executors, its resources (total, and used by its tasks and executors),
what its tasks use (sampled then by a ``UsageSampler`` of this exporter's own, so a scrape never
disturbs the heartbeats' samples: bounded work, and no more than one sample per
``usage.MIN_SAMPLE_INTERVAL``), its status journal (updates not yet confirmed by the broker) and its
connection. No hook in the agent: the exporter only needs the ``Agent`` object.

CPU is exported as a counter of the CPU seconds its tasks used, summed over each task's increase
between scrapes (what a task used after the last scrape before it ended is not counted), so that
``rate()`` gives the cores in use. No label names a task or a framework.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric

from broker_mesos import exporter
from broker_mesos.agent.process import Agent
from broker_mesos.agent.usage import MB, UsageSampler
from broker_mesos.core.agent_state import TaskKey
from broker_mesos.core.protocol import TaskState


@dataclass(frozen=True, slots=True)
class _Sample:
    tasks: dict[str, int]  # by TaskState value, every state present
    executors: int
    total: dict[str, float]
    used: dict[str, float]
    cpu_seconds: float  # cumulative (this exporter's counter)
    memory_bytes: float  # the live tasks' now
    disk_bytes: float
    journal_batches: int | None  # None: no checkpointing
    connected: bool
    unconfirmed: int


class AgentMetrics:
    """The metrics of one ``Agent`` (build it before ``agent.run()``; ``serve`` starts the endpoint)."""

    def __init__(self, agent: Agent, registry: CollectorRegistry | None = None) -> None:
        self.agent = agent
        self._usage = UsageSampler(agent.executor, agent.config.work_dir)
        self._cpu_seen: dict[TaskKey, float] = {}  # each live task's CPU seconds at the last scrape
        self._cpu_total = 0.0
        self.registry = registry if registry is not None else exporter.new_registry()
        self.registry.register(exporter.SampledCollector(self._collect))

    def serve(self, host: str, port: int) -> exporter.MetricsServer:
        return exporter.serve(self.registry, host, port)

    def _sample(self) -> _Sample:
        agent = self.agent
        tasks = agent.tasks.agent_tasks()
        executors = agent.executors.agent_executors() if agent.executors is not None else []
        used: dict[str, float] = {}
        for task in tasks:
            exporter.add_amounts(used, task.resources.quantities())
        for executor in executors:
            exporter.add_amounts(used, executor.resources.quantities())
        usage = self._usage.sample(tasks)
        seen: dict[TaskKey, float] = {}
        for task, cpu in zip(tasks, usage.cpu_seconds, strict=True):
            key = (task.framework_id, task.task_id)
            self._cpu_total += max(0.0, cpu - self._cpu_seen.get(key, 0.0))
            seen[key] = cpu
        self._cpu_seen = seen
        by_state = collections.Counter(task.state.value for task in tasks)
        journal = agent.journal.pending() if agent.journal is not None else None
        return _Sample({s.value: by_state.get(s.value, 0) for s in TaskState}, len(executors),
                       agent.config.resources.quantities(), used, self._cpu_total,
                       sum(usage.mem_mb) * MB, sum(usage.disk_mb) * MB, journal, agent.bus.ready,
                       agent.bus.unconfirmed)

    def _collect(self) -> Iterable[Metric]:
        yield exporter.build_info()
        yield exporter.info("bmesos_agent", "This agent.", agent_id=self.agent.agent_id,
                            hostname=self.agent.config.hostname)
        sample = exporter.sample_on_loop(self.agent.bus.call_threadsafe, self._sample)
        if sample is None:
            return
        yield exporter.labelled_gauge("bmesos_agent_tasks", "Tasks this agent runs and has not reported ended, "
                                      "by state.", "state", sample.tasks)
        yield exporter.gauge("bmesos_agent_executors", "Framework executors running on this agent.", sample.executors)
        yield from exporter.resource_families(
            "bmesos_agent", "this agent (total: what it offers; used: by its tasks and executors)",
            {(): {"total": sample.total, "used": sample.used}})
        cpu = CounterMetricFamily("bmesos_agent_task_cpu_seconds", "CPU seconds used by this agent's tasks (sampled "
                                  "at scrape time).")
        cpu.add_metric([], sample.cpu_seconds)
        yield cpu
        yield exporter.gauge("bmesos_agent_task_memory_bytes", "Memory this agent's live tasks use (cgroup usage, "
                             "else their processes' resident sets).", sample.memory_bytes)
        yield exporter.gauge("bmesos_agent_task_disk_bytes", "Disk this agent's live tasks' sandboxes hold.",
                             sample.disk_bytes)
        if sample.journal_batches is not None:
            yield exporter.gauge("bmesos_agent_status_journal_batches", "Batches of status updates journaled and "
                                 "not yet confirmed by the broker.", sample.journal_batches)
        yield exporter.gauge("bmesos_agent_connected", "1 while the agent's broker connection is up and ready.",
                             1.0 if sample.connected else 0.0)
        yield exporter.gauge("bmesos_agent_unconfirmed_messages", "Messages published and not yet confirmed by the "
                             "broker (or waiting for a connection).", sample.unconfirmed)
