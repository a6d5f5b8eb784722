"""The master's metrics without a broker: the cluster sample read from ``MasterState``, the hooks'
counters, and the exposition text as Prometheus' own parser reads it."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from broker_mesos import exporter
from broker_mesos.core import codec, protocol
from broker_mesos.core.master import MasterConfig, MasterState, ToFramework
from broker_mesos.core.protocol import TaskState, TaskStatus
from broker_mesos.core.resources import Resources
from broker_mesos.master.metrics import MAX_ROLE_LABELS, OTHER_ROLES, MasterMetrics, Rejection, sample_cluster

MB = 2.0**20
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Cluster:
    """A master state with a virtual clock; metrics read it as the master's loop would."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.state = MasterState(MasterConfig("m"))
        self.active = True
        self.dropped: dict[str, int] = {}
        self.metrics = MasterMetrics(lambda: self.state, "m", active=lambda: self.active, clock=lambda: self.now,
                                     call_on_loop=lambda fn: fn(), dropped=lambda: self.dropped)

    def agent(self, agent_id: str, resources: str) -> None:
        self.state.agent_info(protocol.Register(agent_id, agent_id, Resources.parse(resources),
                                                heartbeat_interval=5.0), self.now)

    def framework(self, framework_id: str, role: str = "*") -> None:
        self.state.subscribe(protocol.Subscribe(framework_id, framework_id, role), None, "c", self.now)

    def round(self) -> dict[str, list[protocol.Offer]]:
        self.now += 1.5  # past the allocation interval
        effects = self.state.tick(self.now)
        self.metrics.performed(effects)
        return {e.framework_id: e.body.offers for e in effects
                if isinstance(e, ToFramework) and isinstance(e.body, protocol.Offers)}

    def launch(self, framework_id: str, offer: protocol.Offer, task_id: str, resources: str) -> None:
        task = protocol.TaskInfo(task_id, offer.agent_id, Resources.parse(resources), protocol.CommandInfo("true"))
        self.state.accept(protocol.Accept(framework_id, [offer.offer_id], [task], 0.0), self.now)

    def status(self, *updates: tuple[str, str, str, TaskState]) -> None:
        """A STATUS message from an agent, through the hook, then applied."""
        body = protocol.Status([TaskStatus(task, fw, agent, state, f"u{i}", self.now)
                                for i, (fw, task, agent, state) in enumerate(updates)])
        self.metrics.received(envelope(body))
        for update in body.updates:
            self.state.status_update(update, self.now)

    def scrape(self) -> Samples:
        return parse(generate_latest(self.metrics.registry).decode())


def envelope(body: object) -> codec.Envelope:
    return codec.decode(codec.encode(body, 0.0))


def parse(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def names(samples: Samples, prefix: str) -> set[str]:
    return {name for name, _ in samples if name.startswith(prefix)}


def test_sample_counts_agents_frameworks_tasks_and_balances_resources() -> None:
    c = Cluster()
    c.framework("fw1", role="web")
    c.framework("fw2", role="batch")
    c.agent("a1", "cpus:4;mem:4096;ports:[31000-31999]")
    c.agent("a2", "cpus:2;mem:1024;disk:100")
    offers = c.round()
    ((fw, offer),) = [(fw, o) for fw, made in offers.items() for o in made if o.agent_id == "a1"]
    role, other_role = ("web", "batch") if fw == "fw1" else ("batch", "web")
    c.launch(fw, offer, "t1", "cpus:1;mem:512;ports:[31000-31009]")
    c.status((fw, "t1", "a1", TaskState.RUNNING))
    c.round()
    sample = sample_cluster(c.state, c.now)
    assert sample.agents == {"active": 2, "silent": 0, "removed": 0}
    assert sample.frameworks == {"active": 2, "suppressed": 0, "disconnected": 0}
    assert sample.tasks["TASK_RUNNING"] == 1 and sum(sample.tasks.values()) == 1
    assert set(sample.tasks) == {s.value for s in TaskState}
    assert sample.total == {"cpus": 6, "mem": 5120, "disk": 100, "ports": 1000}
    assert sample.used == {"cpus": 1, "mem": 512, "disk": 0, "ports": 10}
    free = {n: sum(a.free.quantities().get(n, 0.0) for a in c.state.agents.values()) for n in sample.total}
    for name, amount in sample.total.items():
        assert sample.used[name] + sample.offered.get(name, 0.0) + free[name] == amount, name
    assert sample.offers == len(c.state.offers) > 0
    assert sample.role_used[role] == {"cpus": 1, "mem": 512, "ports": 10}
    assert not any(sample.role_used.get(other_role, {}).values())
    offered_by_role = {n: sum(r.get(n, 0.0) for r in sample.role_offered.values()) for n in sample.offered}
    assert offered_by_role == sample.offered

    c.state.suppress(protocol.Suppress("fw2"), c.now)
    c.state.framework_disconnected("fw1", c.now)
    c.now += 10.5  # a2 and a1 silent for more than two heartbeat intervals of 5 s
    c.agent("a1", "cpus:4;mem:4096;ports:[31000-31999]")  # a heartbeat of a1: active again
    c.state.remove_agent("a2", "test", c.now)
    sample = sample_cluster(c.state, c.now)
    assert sample.frameworks == {"active": 0, "suppressed": 1, "disconnected": 1}
    assert sample.agents == {"active": 1, "silent": 0, "removed": 1}
    c.now += 10.5
    assert sample_cluster(c.state, c.now).agents == {"active": 0, "silent": 1, "removed": 1}


def test_roles_beyond_the_cap_are_summed_as_other() -> None:
    c = Cluster()
    c.agent("a", f"cpus:{MAX_ROLE_LABELS + 5};mem:100000")
    for i in range(MAX_ROLE_LABELS + 5):
        c.framework(f"fw{i:03d}", role=f"r{i:03d}")
    c.round()
    sample = sample_cluster(c.state, c.now)
    roles = sample.role_used.keys() | sample.role_offered.keys()
    assert len(roles) == MAX_ROLE_LABELS + 1 and OTHER_ROLES in roles
    assert sum(r.get("cpus", 0.0) for r in sample.role_offered.values()) == MAX_ROLE_LABELS + 5


def test_endpoint_text_parses_and_counts_what_happened() -> None:
    c = Cluster()
    c.framework("fw1", role="web")
    c.agent("a1", "cpus:4;mem:4096")
    c.agent("a2", "cpus:2;mem:2048")
    offers = c.round()["fw1"]
    by_agent = {o.agent_id: o for o in offers}
    c.metrics.received(envelope(protocol.Decline("fw1", [by_agent["a2"].offer_id, "no-such-offer"])))
    c.state.decline(protocol.Decline("fw1", [by_agent["a2"].offer_id]), c.now)
    c.launch("fw1", by_agent["a1"], "t1", "cpus:1;mem:256")
    c.launch("fw1", c.round()["fw1"][0], "t2", "cpus:1;mem:256")
    # a terminal update counts once, whatever the duplicates in the message and after it
    c.status(("fw1", "t1", "a1", TaskState.RUNNING), ("fw1", "t1", "a1", TaskState.FINISHED),
             ("fw1", "t1", "a1", TaskState.FINISHED))
    c.status(("fw1", "t1", "a1", TaskState.FINISHED))
    c.status(("fw1", "t2", "a2", TaskState.FAILED))  # not t2's agent: ignored by the books, so not counted
    c.status(("fw1", "t2", "a1", TaskState.RUNNING))
    c.round()  # re-offers t1's resources, then the agent is removed: its offer rescinded, t2 LOST
    c.metrics.performed(c.state.remove_agent("a1", "test", c.now))
    c.metrics.rejected(None, Rejection.INVALID)
    c.metrics.rejected("ACCEPT", Rejection.REFUSED)
    c.metrics.rejected("NO SUCH TYPE", Rejection.DENIED)
    c.metrics.allocation_round(0.002)
    c.metrics.allocation_round(0.2)
    c.metrics.elected()
    c.dropped.update({"maxlen": 3, "evil-reason": 2})

    s = c.scrape()
    assert value(s, "bmesos_master_messages_handled_total", type="STATUS") == 4
    assert value(s, "bmesos_master_messages_handled_total", type="DECLINE") == 1
    assert value(s, "bmesos_master_messages_rejected_total", type="unknown", reason="invalid") == 1
    assert value(s, "bmesos_master_messages_rejected_total", type="ACCEPT", reason="refused") == 1
    assert value(s, "bmesos_master_messages_rejected_total", type="unknown", reason="denied") == 1
    assert value(s, "bmesos_master_offers_declined_total") == 1
    assert value(s, "bmesos_master_offers_made_total") == 4  # a1 and a2, then a1's remainder twice
    assert value(s, "bmesos_master_offers_rescinded_total") == 1
    assert value(s, "bmesos_master_task_terminal_transitions_total", state="TASK_FINISHED") == 1
    assert value(s, "bmesos_master_task_terminal_transitions_total", state="TASK_LOST") == 1
    assert value(s, "bmesos_master_task_terminal_transitions_total", state="TASK_FAILED") == 0
    assert value(s, "bmesos_master_allocation_rounds_total") == 2
    assert value(s, "bmesos_master_allocation_round_duration_seconds_count") == 2
    assert value(s, "bmesos_master_allocation_round_duration_seconds_bucket", le="0.0025") == 1
    assert value(s, "bmesos_master_elections_total") == 1
    assert value(s, "bmesos_master_elected") == 1
    assert value(s, "bmesos_master_dead_letters_dropped_total", reason="maxlen") == 3
    assert value(s, "bmesos_master_dead_letters_dropped_total", reason="other") == 2
    assert value(s, "bmesos_master_agents", state="active") == 1
    assert value(s, "bmesos_master_agents", state="removed") == 1
    assert value(s, "bmesos_master_tasks", state="TASK_RUNNING") == 0
    assert value(s, "bmesos_master_cpus", kind="total") == 2
    assert value(s, "bmesos_master_memory_bytes", kind="total") == 2048 * MB
    # a2's offer was declined (refused for 5 s): nothing on offer, nothing used
    assert value(s, "bmesos_master_offers_outstanding") == 0
    assert value(s, "bmesos_master_role_cpus", role="web", kind="offered") == 0
    assert value(s, "bmesos_master_role_memory_bytes", role="web", kind="used") == 0
    (build,) = [dict(labels) for name, labels in s if name == "bmesos_build_info"]
    assert build["version"] == exporter.version() and s[("bmesos_build_info", tuple(sorted(build.items())))] == 1
    assert value(s, "bmesos_master_info", master_id="m") == 1
    # no label names a task, an agent or a framework
    ids = {"t1", "t2", "a1", "a2", "fw1"}
    assert not {v for _, labels in s for _, v in labels} & ids


def test_a_standby_exports_counters_but_no_cluster_state() -> None:
    c = Cluster()
    c.agent("a1", "cpus:4;mem:4096")
    c.active = False
    s = c.scrape()
    assert value(s, "bmesos_master_elected") == 0
    assert not names(s, "bmesos_master_agents") | names(s, "bmesos_master_cpus")
    assert ("bmesos_master_elections_total", ()) in s


def test_a_loop_that_does_not_answer_leaves_the_state_out() -> None:
    queued: list[Callable[[], None]] = []
    c = Cluster()
    c.metrics = MasterMetrics(lambda: c.state, "m", active=lambda: True, clock=lambda: c.now,
                              call_on_loop=queued.append, sample_timeout=0.05)
    s = c.scrape()
    assert len(queued) == 1
    assert ("bmesos_master_elections_total", ()) in s and not names(s, "bmesos_master_elected")


def test_resource_names_are_capped() -> None:
    amounts = {f"r{i:02d}": float(i) for i in range(exporter.MAX_RESOURCE_LABELS + 8)}
    families = exporter.resource_families("x", "test", {(): {"total": {**amounts, "cpus": 1.0, "mem": 2.0}}})
    by_name = {f.name: f for f in families}
    assert by_name["x_cpus"].samples[0].value == 1.0
    assert by_name["x_memory_bytes"].samples[0].value == 2.0 * MB
    others = {s.labels["resource"] for s in by_name["x_resource"].samples}
    assert others == {f"r{i:02d}" for i in range(exporter.MAX_RESOURCE_LABELS)}
