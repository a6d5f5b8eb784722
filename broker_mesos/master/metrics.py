"""The master's Prometheus metrics (``bmesos master --metrics-port``).

Two kinds. What the cluster *is* (agents, frameworks, tasks, executors, offers and resources, in
total and per role) is read from the active master's ``MasterState`` at scrape time, on the master's
loop (``sample_cluster``, pure): nothing is counted twice and nothing costs anything per message.
What *happened* (messages handled and rejected, offers made / declined / rescinded, terminal task
transitions, allocation rounds and their duration, elections) is counted by a few hooks the process
shell calls (``received``, ``rejected``, ``performed``, ``allocation_round``, ``elected``).

No label names a task, an agent or a framework, so a cluster of any size has a bounded set of
series: label values are task states, agent and framework states, reason classes (``Rejection``),
message types (the codec's registry; anything else is ``unknown``), resource names (at most
``exporter.MAX_RESOURCE_LABELS``) and roles (at most ``MAX_ROLE_LABELS``, the others summed as
``OTHER_ROLES``). Only the active master exports the cluster's state: a standby's would be empty,
and would double every sum across masters; every master exports its counters and ``elected``.

Cost of a scrape: one pass over agents, frameworks, tasks and offers on the loop (a few ms per
thousand agents), which the master's own work waits for.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, Metric

from broker_mesos import exporter
from broker_mesos.core import codec, protocol
from broker_mesos.core.master import Effect, MasterState, PublishStatus, ToFramework
from broker_mesos.core.protocol import TERMINAL_STATES, TaskState

if TYPE_CHECKING:
    from broker_mesos.master.process import MasterProcess

MAX_ROLE_LABELS = 100  # roles exported by name, in name order; the rest are summed as OTHER_ROLES
OTHER_ROLES = "_other"
SILENT_AFTER_MISSED = 2  # heartbeats an agent may miss before it counts as `silent`, not `active`
# the x-death reasons RabbitMQ gives for a message `dead-letters` dropped; anything else is `other`
DROP_REASONS = frozenset({"maxlen", "expired", "rejected", "delivery_limit"})
# allocation rounds take ~1 ms per hundred agents (scripts/bench_allocator.py): 100 us .. 10 s
ROUND_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                 5.0, 10.0)
UNKNOWN_TYPE = "unknown"


class Rejection(enum.StrEnum):
    """Why the master turned a message down (the ``reason`` label: classes, never the free text)."""

    INVALID = "invalid"  # undecodable, wrong queue, wrong routing key: dead-lettered
    DENIED = "denied"  # its sender may not send it (docs/security.md): dead-lettered
    REFUSED = "refused"  # a valid call the master's rules refuse (CallRefused): answered with ERROR
    INTERNAL = "internal"  # a bug of the master while applying it: dead-lettered


AGENT_STATES = ("active", "silent", "removed")  # and "draining" (DRAIN_AGENT) while some agent drains
FRAMEWORK_STATES = ("active", "suppressed", "disconnected")


@dataclass(frozen=True, slots=True)
class ClusterSample:
    """What the master's books say at one instant. Resources are amounts per resource name in the
    resource's own unit (mem and disk in MB; range and set resources as counts)."""

    agents: dict[str, int]
    frameworks: dict[str, int]
    tasks: dict[str, int]  # by TaskState value, every state present
    executors: int
    offers: int
    total: dict[str, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)  # by live tasks and booked executors
    offered: dict[str, float] = field(default_factory=dict)
    role_used: dict[str, dict[str, float]] = field(default_factory=dict)
    role_offered: dict[str, dict[str, float]] = field(default_factory=dict)


def sample_cluster(state: MasterState, now: float) -> ClusterSample:
    """The cluster's numbers from ``state`` (pure; ``now`` classifies silent agents).

    agents: ``active`` (heard from within ``SILENT_AFTER_MISSED`` heartbeat timeouts), ``silent``
    (not since: removed once ``max_missed_heartbeats`` are missed), ``removed`` (removed for silence,
    remembered in case they return). Frameworks: ``active``, ``suppressed`` (wants no offers),
    ``disconnected`` (its scheduler is gone; within its failover timeout). Tasks: those in the books,
    by state (a task declared LOST whose agent returned counts as LOST until it has ended there).
    Used = total - free - offered, per agent; per role, what its frameworks hold beyond their offers.
    """
    agents = dict.fromkeys(AGENT_STATES, 0)
    total: dict[str, float] = {}
    free: dict[str, float] = {}
    for agent in state.agents.values():
        ping = state.config.agent_ping_timeout or agent.heartbeat_interval
        kind = "silent" if now - agent.last_seen > SILENT_AFTER_MISSED * ping else \
            "draining" if agent.drain is not None else "active"
        agents[kind] = agents.get(kind, 0) + 1
        exporter.add_amounts(total, agent.total.quantities())
        exporter.add_amounts(free, agent.free.quantities())
    agents["removed"] = len(state.removed_agents)
    frameworks = dict.fromkeys(FRAMEWORK_STATES, 0)
    for framework in state.frameworks.values():
        kind = ("disconnected" if framework.disconnected_at is not None
                else "suppressed" if framework.suppressed else "active")
        frameworks[kind] += 1
    tasks = collections.Counter(task.state.value for task in state.tasks.values())
    offered: dict[str, float] = {}
    offered_by_framework: dict[str, dict[str, float]] = {}
    for offer in state.offers.values():
        amounts = offer.resources.quantities()
        exporter.add_amounts(offered, amounts)
        exporter.add_amounts(offered_by_framework.setdefault(offer.framework_id, {}), amounts)
    used = {name: _amount(amount - free.get(name, 0.0) - offered.get(name, 0.0)) for name, amount in total.items()}
    roles = sorted({f.role for f in state.frameworks.values()})
    kept = set(roles[:MAX_ROLE_LABELS])
    role_used: dict[str, dict[str, float]] = {}
    role_offered: dict[str, dict[str, float]] = {}
    for framework in state.frameworks.values():
        role = framework.role if framework.role in kept else OTHER_ROLES
        held = framework.allocated.quantities()
        on_offer = offered_by_framework.get(framework.framework_id, {})
        exporter.add_amounts(role_used.setdefault(role, {}),
                             {name: _amount(amount - on_offer.get(name, 0.0)) for name, amount in held.items()})
        exporter.add_amounts(role_offered.setdefault(role, {}), on_offer)
    return ClusterSample(agents, frameworks, {s.value: tasks.get(s.value, 0) for s in TaskState},
                         len(state.executors), len(state.offers), total, used, offered, role_used, role_offered)


def _amount(value: float) -> float:
    """A difference of float sums: never below 0, without the float dust."""
    return max(0.0, round(value, 6))


@dataclass(frozen=True, slots=True)
class _Sample:
    active: bool
    cluster: ClusterSample | None  # None on a standby
    dropped: dict[str, int]


class MasterMetrics:
    """One master's metrics: counters fed by the hooks, cluster state read at scrape time.

    ``state`` returns the current ``MasterState`` (the process replaces it when it loses the lease);
    ``active`` whether this master holds the lease; ``dropped`` the messages `dead-letters` dropped by
    x-death reason (cumulative); ``call_on_loop`` runs a function on the master's loop (its
    ``Bus.call_threadsafe``). The hooks run on the loop too.
    """

    def __init__(self, state: Callable[[], MasterState], master_id: str, *, active: Callable[[], bool],
                 clock: Callable[[], float], call_on_loop: Callable[[Callable[[], None]], None],
                 dropped: Callable[[], dict[str, int]] = dict, registry: CollectorRegistry | None = None,
                 sample_timeout: float = exporter.SAMPLE_TIMEOUT) -> None:
        self._state = state
        self._sample_timeout = sample_timeout
        self._active = active
        self._clock = clock
        self._call_on_loop = call_on_loop
        self._dropped = dropped
        self.master_id = master_id
        self._types = frozenset(codec.registered_types())
        self.registry = registry if registry is not None else exporter.new_registry()
        r = self.registry
        self._handled = Counter("bmesos_master_messages_handled", "Messages the master read, decoded and accepted "
                                "from its senders, by message type (refused calls included).", ["type"], registry=r)
        self._rejected = Counter("bmesos_master_messages_rejected", "Messages the master turned down, by message "
                                 "type and reason class (invalid, denied, refused, internal).", ["type", "reason"],
                                 registry=r)
        self._offers_made = Counter("bmesos_master_offers_made", "Offers sent to frameworks.", registry=r)
        self._offers_declined = Counter("bmesos_master_offers_declined", "Outstanding offers their framework "
                                        "declined.", registry=r)
        self._offers_rescinded = Counter("bmesos_master_offers_rescinded", "Offers the master withdrew (expired, "
                                         "their agent removed, their framework disconnected).", registry=r)
        self._transitions = Counter("bmesos_master_task_terminal_transitions", "Tasks in the master's books that "
                                    "reached a terminal state, by that state.", ["state"], registry=r)
        self._rounds = Counter("bmesos_master_allocation_rounds", "Allocation rounds run.", registry=r)
        self._round_seconds = Histogram("bmesos_master_allocation_round_duration_seconds", "How long allocation "
                                        "rounds took.", buckets=ROUND_BUCKETS, registry=r)
        self._elections = Counter("bmesos_master_elections", "Times this master became the active master.",
                                  registry=r)
        for state_ in sorted(TERMINAL_STATES):
            self._transitions.labels(state_.value)
        r.register(exporter.SampledCollector(self._collect))

    @classmethod
    def for_process(cls, process: MasterProcess) -> MasterMetrics:
        """The metrics of ``process``, reading its state through its attributes (call at the end of its
        ``__init__``: its ``state`` is replaced whenever it loses the lease)."""
        return cls(lambda: process.state, process.config.master_id, active=lambda: process.active,
                   clock=process.clock, call_on_loop=process.bus.call_threadsafe,
                   dropped=lambda: process.dropped)

    def serve(self, host: str, port: int) -> exporter.MetricsServer:
        return exporter.serve(self.registry, host, port)

    # -- hooks (on the master's loop) ---------------------------------------------------------
    def received(self, envelope: codec.Envelope) -> None:
        """A message decoded and authorised, before it is applied: counted by type, with what it
        carries (offers declined, tasks its status updates end)."""
        self._handled.labels(envelope.type).inc()
        body = envelope.body
        if isinstance(body, protocol.Decline):
            offers = self._state().offers
            declined = [o for o in set(body.offer_ids) if o in offers and offers[o].framework_id == body.framework_id]
            self._offers_declined.inc(len(declined))
        elif isinstance(body, protocol.Status):
            tasks, ended = self._state().tasks, set()
            for update in body.updates:
                key = (update.framework_id, update.task_id)
                task = tasks.get(key)
                if (update.state.terminal and key not in ended and task is not None
                        and task.agent_id == update.agent_id and not task.state.terminal):
                    ended.add(key)
                    self._transitions.labels(update.state.value).inc()

    def rejected(self, message_type: str | None, reason: Rejection) -> None:
        """A message turned down; ``message_type`` None when it could not even be decoded."""
        label = message_type if message_type in self._types else UNKNOWN_TYPE
        self._rejected.labels(label, Rejection(reason).value).inc()

    def performed(self, effects: Iterable[Effect]) -> None:
        """Effects about to be published: offers made and rescinded, tasks the master itself ended
        (LOST, DROPPED, ERROR, ...)."""
        for effect in effects:
            if isinstance(effect, ToFramework):
                if isinstance(effect.body, protocol.Offers):
                    self._offers_made.inc(len(effect.body.offers))
                elif isinstance(effect.body, protocol.Rescind):
                    self._offers_rescinded.inc(len(effect.body.offer_ids))
            elif isinstance(effect, PublishStatus) and effect.status.state.terminal:
                self._transitions.labels(effect.status.state.value).inc()

    def allocation_round(self, seconds: float) -> None:
        self._rounds.inc()
        self._round_seconds.observe(seconds)

    def elected(self) -> None:
        self._elections.inc()

    # -- scrape time ----------------------------------------------------------------------------
    def _sample(self) -> _Sample:
        active = self._active()
        cluster = sample_cluster(self._state(), self._clock()) if active else None
        return _Sample(active, cluster, dict(self._dropped()))

    def _collect(self) -> Iterable[Metric]:
        yield exporter.build_info()
        yield exporter.info("bmesos_master", "This master.", master_id=self.master_id)
        sample = exporter.sample_on_loop(self._call_on_loop, self._sample, self._sample_timeout)
        if sample is None:
            return
        yield exporter.gauge("bmesos_master_elected", "1 while this master is the active one (holds the "
                             "lease), else 0.", 1.0 if sample.active else 0.0)
        dropped = CounterMetricFamily("bmesos_master_dead_letters_dropped", "Messages the dead-letters queue "
                                      "dropped (full or past their age), by reason.", labels=["reason"])
        by_reason: dict[str, int] = dict.fromkeys(sorted(DROP_REASONS), 0)
        for reason, count in sample.dropped.items():
            key = reason if reason in DROP_REASONS else "other"
            by_reason[key] = by_reason.get(key, 0) + count
        for reason, count in by_reason.items():
            dropped.add_metric([reason], count)
        yield dropped
        cluster = sample.cluster
        if cluster is None:
            return
        yield exporter.labelled_gauge("bmesos_master_agents", "Agents, by state (active, silent: missed "
                                      f"{SILENT_AFTER_MISSED}+ heartbeats, removed: remembered after removal).",
                                      "state", cluster.agents)
        yield exporter.labelled_gauge("bmesos_master_frameworks", "Frameworks, by state (active, suppressed, "
                                      "disconnected: scheduler gone, within its failover timeout).", "state",
                                      cluster.frameworks)
        yield exporter.labelled_gauge("bmesos_master_tasks", "Tasks in the master's books, by state.", "state",
                                      cluster.tasks)
        yield exporter.gauge("bmesos_master_executors", "Framework executors booked on agents.", cluster.executors)
        yield exporter.gauge("bmesos_master_offers_outstanding", "Offers made and not yet accepted, declined or "
                             "rescinded.", cluster.offers)
        yield from exporter.resource_families(
            "bmesos_master", "the cluster's agents (total: registered; used: by tasks and executors; offered)",
            {(): {"total": cluster.total, "used": cluster.used, "offered": cluster.offered}})
        roles = {(role,): {"used": cluster.role_used.get(role, {}), "offered": cluster.role_offered.get(role, {})}
                 for role in cluster.role_used.keys() | cluster.role_offered.keys()}
        yield from exporter.resource_families(
            "bmesos_master_role", "each role's frameworks (used: by tasks and executors; offered)", roles, ("role",))
