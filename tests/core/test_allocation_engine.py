"""The allocation engine driven through the pure MasterState: the DRF paper's example, each policy's
ordering rule, roles' weights, quota guarantees and limits, and incremental rounds."""

from __future__ import annotations

from fractions import Fraction

import pytest

from broker_mesos.core import protocol
from broker_mesos.core.allocation import Allocator, PolicyRegistry, RoleConfig
from broker_mesos.core.allocation.binpack import used_fraction
from broker_mesos.core.allocation.engine import allocatable
from broker_mesos.core.allocation.policy import dominant_share
from broker_mesos.core.errors import PolicyError
from broker_mesos.core.master import MasterConfig, MasterState, ToFramework
from broker_mesos.core.resources import Resources

CMD = protocol.CommandInfo("true")


class Cluster:
    """A MasterState on a virtual clock; ``round()`` returns {framework: [offers]}."""

    def __init__(self, policy: str = "drf", **params: str) -> None:
        self.now = 1000.0
        self.state = MasterState(MasterConfig("m", allocator=policy, allocator_params=tuple(params.items())))
        self.task_ids = 0

    def agent(self, agent_id: str, resources: str) -> None:
        self.state.agent_info(protocol.Register(agent_id, agent_id, Resources.parse(resources)), self.now)

    def framework(self, framework_id: str, role: str = "*", weight: float = 1.0) -> None:
        self.state.subscribe(protocol.Subscribe(framework_id, framework_id, role, weight), None, "c", self.now)

    def role(self, role: str, weight: float | None = None, guarantee: str | None = None,
             limit: str | None = None) -> None:
        self.state.admin(protocol.SetRole(role, weight, None if guarantee is None else Resources.parse(guarantee),
                                          None if limit is None else Resources.parse(limit)), None, "c", self.now)

    def round(self) -> dict[str, list[protocol.Offer]]:
        self.now += 1
        effects = self.state.allocation_round(self.now)
        self.state.check_invariants()
        return {e.framework_id: e.body.offers for e in effects
                if isinstance(e, ToFramework) and isinstance(e.body, protocol.Offers)}

    def launch(self, framework_id: str, offer: protocol.Offer, demand: Resources, count: int = 1) -> None:
        tasks = []
        for _ in range(count):
            self.task_ids += 1
            tasks.append(protocol.TaskInfo(f"t{self.task_ids}", offer.agent_id, demand, CMD))
        self.state.accept(protocol.Accept(framework_id, [offer.offer_id], tasks), self.now)
        self.state.check_invariants()

    def decline(self, framework_id: str, offers: list[protocol.Offer], refuse: float = 1e6) -> None:
        self.state.decline(protocol.Decline(framework_id, [o.offer_id for o in offers], refuse), self.now)


def share(c: Cluster, framework_id: str) -> Fraction:
    fw = c.state.frameworks[framework_id]
    return Fraction(dominant_share(fw.allocated.quantities(), c.state.total.quantities())).limit_denominator(1000)


def run_whole_tasks(c: Cluster, demand: dict[str, Resources], max_rounds: int = 200) -> dict[str, int]:
    """Frameworks accept one whole task per offer when it fits, else decline for good; until quiet."""
    launched = dict.fromkeys(demand, 0)
    for _ in range(max_rounds):
        offers = c.round()
        if not offers:
            return launched
        for fw, batch in offers.items():
            for offer in batch:
                if demand[fw] <= offer.resources:
                    c.launch(fw, offer, demand[fw])
                    launched[fw] += 1
                else:
                    c.decline(fw, [offer])
    raise AssertionError("allocation did not settle")


def test_drf_paper_example_through_the_engine() -> None:
    """Ghodsi et al. 2011: 9 CPUs, 18 GB; A <1 CPU, 4 GB>, B <3 CPU, 1 GB>: A 3 tasks, B 2, both 2/3."""
    c = Cluster("drf")
    c.agent("a1", "cpus:9;mem:18432")
    c.framework("A")
    c.framework("B")
    demand = {"A": Resources.of(cpus=1, mem=4096), "B": Resources.of(cpus=3, mem=1024)}
    assert run_whole_tasks(c, demand) == {"A": 3, "B": 2}
    assert share(c, "A") == share(c, "B") == Fraction(2, 3)


def test_drf_orders_roles_first_then_frameworks_within_them() -> None:
    """Role ``big`` has two frameworks, ``small`` one: DRF over roles gives ``small`` half the agents."""
    c = Cluster("drf")
    for i in range(8):
        c.agent(f"a{i}", "cpus:1;mem:1024")
    c.framework("b1", role="big")
    c.framework("b2", role="big")
    c.framework("s1", role="small")
    offers = c.round()
    assert {fw: len(o) for fw, o in offers.items()} == {"b1": 2, "b2": 2, "s1": 4}


def test_role_weight_scales_the_share() -> None:
    c = Cluster("drf")
    for i in range(9):
        c.agent(f"a{i}", "cpus:1;mem:1024")
    c.role("gold", weight=2)
    c.framework("g", role="gold")
    c.framework("s", role="silver")
    offers = c.round()
    assert {fw: len(o) for fw, o in offers.items()} == {"g": 6, "s": 3}


def test_priority_is_strict_and_fifo_inside_a_level() -> None:
    c = Cluster("priority", priorities="prod:10,batch:1")
    for i in range(4):
        c.agent(f"a{i}", "cpus:1;mem:1024")
    c.framework("batch1", role="batch")
    c.framework("prod1", role="prod")
    c.framework("prod2", role="prod")
    offers = c.round()
    assert list(offers) == ["prod1"] and len(offers["prod1"]) == 4  # strict: the first prod takes all
    c.decline("prod1", offers["prod1"])
    offers = c.round()
    assert list(offers) == ["prod2"]  # then the next in the same level, FIFO
    c.decline("prod2", offers["prod2"])
    assert list(c.round()) == ["batch1"]  # a lower level only gets what every higher one refused


def test_priority_by_framework() -> None:
    c = Cluster("priority", by="framework", priorities="late:5")
    c.agent("a0", "cpus:1;mem:1024")
    c.framework("early")
    c.framework("late")
    assert list(c.round()) == ["late"]


def test_fair_equalises_one_resource_and_ignores_the_others() -> None:
    c = Cluster("fair", resource="cpus")
    c.agent("a0", "cpus:4;mem:65536")
    c.framework("memhog")
    c.framework("cpu")
    (offer,) = c.round()["memhog"]
    c.launch("memhog", offer, Resources.of(cpus=1, mem=60000))
    (offer,) = c.round()["cpu"]
    c.launch("cpu", offer, Resources.of(cpus=2, mem=100))
    # memhog holds 1 cpu (and 92% of memory), cpu holds 2 cpus: fair looks at cpus only
    assert list(c.round()) == ["memhog"]


def test_binpack_offers_the_most_used_agents_first() -> None:
    c = Cluster("binpack")
    for i in range(3):
        c.agent(f"a{i}", "cpus:4;mem:4096")
    c.framework("fw")
    offers = c.round()["fw"]
    by_agent = {o.agent_id: o for o in offers}
    c.launch("fw", by_agent["a2"], Resources.of(cpus=3, mem=100))
    c.launch("fw", by_agent["a1"], Resources.of(cpus=1, mem=100))
    c.decline("fw", [by_agent["a0"]], refuse=0)
    assert [o.agent_id for o in c.round()["fw"]] == ["a2", "a1", "a0"]
    assert used_fraction(c.state.agents["a2"]) == 1.0  # offered now: nothing free


def test_quota_guarantee_is_honoured_while_other_roles_are_hungry() -> None:
    c = Cluster("priority", priorities="hungry:100")
    for i in range(4):
        c.agent(f"a{i}", "cpus:4;mem:4096")
    c.role("service", guarantee="cpus:6;mem:2048")
    for i in range(3):
        c.framework(f"h{i}", role="hungry")
    offers = c.round()
    held_back = c.state.total.scalar("cpus") - sum(o.resources.scalar("cpus") for v in offers.values() for o in v)
    assert held_back >= 6  # headroom for the guarantee, though service has no framework yet
    c.framework("svc", role="service")
    offers = c.round()
    got = sum(o.resources.scalar("cpus") for o in offers["svc"])
    assert got >= 6 and "svc" in offers


def test_limit_is_never_exceeded_offers_are_chopped() -> None:
    c = Cluster("drf")
    c.agent("a0", "cpus:8;mem:8192;ports:[31000-31010]")
    c.role("capped", limit="cpus:3")
    c.framework("cap", role="capped")
    c.framework("other", role="free")
    offers = c.round()
    (capped,) = offers["cap"]
    assert capped.resources.scalar("cpus") == 3 and capped.resources.scalar("mem") == 8192
    (rest,) = offers["other"]
    assert rest.resources.scalar("cpus") == 5  # the remainder goes to the next in line
    c.launch("cap", capped, Resources.of(cpus=3, mem=10))
    c.decline("other", [rest], refuse=0)
    offers = c.round()
    assert "cap" not in offers  # at its limit


def test_bad_policy_or_parameter_is_refused_and_changes_nothing() -> None:
    registry = PolicyRegistry()
    with pytest.raises(PolicyError, match="unknown allocator policy 'nope'"):
        registry.create("nope")
    with pytest.raises(PolicyError, match="no parameter 'colour'"):
        registry.create("drf", {"colour": "red"})
    with pytest.raises(PolicyError, match="not a number"):
        registry.create("priority", {"priorities": "a:high"})
    with pytest.raises(PolicyError, match="expected role or framework"):
        registry.create("priority", {"by": "moon"})


def test_a_third_party_policy_registers_by_name() -> None:
    from broker_mesos.core.allocation.policy import AllocatorPolicy

    class Newest(AllocatorPolicy):
        name = "newest"

        def framework_key(self, framework, allocated, total):  # type: ignore[no-untyped-def]
            return (-framework.seq,)

    registry = PolicyRegistry()
    registry.register("newest", Newest)
    state = MasterState(MasterConfig("m", allocator="newest"), registry)
    state.agent_info(protocol.Register("a", "a", Resources.parse("cpus:1;mem:64")), 0.0)
    for fw in ("old", "new"):
        state.subscribe(protocol.Subscribe(fw, fw), None, "c", 0.0)
    effects = state.allocation_round(1.0)
    assert [e.framework_id for e in effects if isinstance(e, ToFramework)] == ["new"]


def test_incremental_round_looks_only_at_changed_agents() -> None:
    c = Cluster("drf")
    for i in range(100):
        c.agent(f"a{i}", "cpus:1;mem:1024")
    c.framework("fw")
    offers = c.round()["fw"]
    assert c.state.allocator.last_round_full and c.state.allocator.last_round_agents == 100
    c.decline("fw", offers[:3], refuse=0)
    again = c.round()["fw"]
    assert not c.state.allocator.last_round_full
    assert c.state.allocator.last_round_agents == 3
    assert sorted(o.agent_id for o in again) == sorted(o.agent_id for o in offers[:3])


def test_idle_agents_are_reconsidered_when_a_framework_arrives_or_a_filter_expires() -> None:
    c = Cluster("drf")
    c.agent("a0", "cpus:1;mem:1024")
    c.framework("fw1")
    c.decline("fw1", c.round()["fw1"], refuse=5)
    assert c.round() == {}
    c.framework("fw2")
    offers = c.round()
    assert list(offers) == ["fw2"]
    c.decline("fw2", offers["fw2"], refuse=3)
    assert c.round() == {}  # filtered for both: the agent sits idle
    c.now += 10
    assert c.state.round_due(c.now)  # the filters expired: that is a change
    assert list(c.round()) == ["fw1"]


def test_full_round_after_a_policy_swap_and_periodically() -> None:
    alloc = Allocator(PolicyRegistry().create("drf"), full_round_interval=30)
    assert alloc.full_round_due(0.0)
    alloc.candidates({}, True, 0.0)
    assert not alloc.full_round_due(10.0) and alloc.full_round_due(31.0)
    alloc.set_policy(PolicyRegistry().create("fair"))
    assert alloc.full_round_due(11.0)


def test_role_config_is_validated() -> None:
    c = Cluster()
    from broker_mesos.core.errors import CallRefused

    for bad in (dict(guarantee="ports:[1-2]"), dict(guarantee="cpus:4", limit="cpus:2")):
        with pytest.raises(CallRefused):
            c.role("r", **bad)  # type: ignore[arg-type]
    with pytest.raises(CallRefused, match="bad role name"):
        c.role("a b")
    assert c.state.allocator.role("r") == RoleConfig()


def test_crumbs_are_not_offered() -> None:
    """Mesos' minimum allocatable resources: too little CPU and too little memory is not an offer."""
    assert not allocatable(Resources.of(cpus=0.001, mem=1))
    assert allocatable(Resources.of(cpus=0.5))
    assert allocatable(Resources.of(mem=64))
    state = MasterState(MasterConfig("m", allocation_interval=0.0))
    state.subscribe(protocol.Subscribe("fw"), None, "c", 0.0)
    state.agent_info(protocol.Register("a", "a", Resources.of(disk=5)), 0.0)
    assert not [e for e in state.tick(1.0) if isinstance(e, ToFramework)]
