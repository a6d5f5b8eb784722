"""Admin calls on the pure master: hot swap of the policy and runtime role changes; the allocation
package stays pure."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker_mesos.core import codec, protocol
from broker_mesos.core.errors import CallRefused
from broker_mesos.core.master import MasterConfig, MasterState, PublishEvent, ToFramework
from broker_mesos.core.resources import Resources
from tests.core.test_layers import FORBIDDEN_IN_CORE, PACKAGE, imports_of


def cluster(agents: int = 10) -> MasterState:
    state = MasterState(MasterConfig("m"))
    for i in range(agents):
        state.agent_info(protocol.Register(f"a{i}", f"a{i}", Resources.parse("cpus:2;mem:2048")), 0.0)
    for fw, role in (("f1", "web"), ("f2", "batch")):
        state.subscribe(protocol.Subscribe(fw, fw, role), None, "c", 0.0)
    return state


def offers_of(effects: list[object]) -> list[protocol.Offer]:
    return [o for e in effects if isinstance(e, ToFramework) and isinstance(e.body, protocol.Offers)
            for o in e.body.offers]


def test_hot_swap_keeps_outstanding_offers_and_makes_none_twice() -> None:
    state = cluster()
    first = offers_of(state.allocation_round(1.0))
    assert len(first) == 10
    # f1 declines half its offers (back to the pool), then the operator swaps the policy
    f1 = [o for o in first if o.framework_id == "f1"]
    state.decline(protocol.Decline("f1", [o.offer_id for o in f1], 0.0), 1.5)
    effects = state.admin(protocol.SetAllocator("priority", {"priorities": "batch:9"}), "reply.q", "call-1", 2.0)
    (reply,) = [e for e in effects if isinstance(e, ToFramework)]
    assert reply.reply_to == "reply.q" and reply.correlation_id == "call-1"
    assert reply.body == protocol.AllocatorInfo("priority", {"priorities": "batch:9"},
                                                ["binpack", "drf", "fair", "priority"])
    (event,) = [e for e in effects if isinstance(e, PublishEvent)]
    assert event.kind == "allocator.changed" and event.detail["previous"] == "drf"
    assert all(o.offer_id in state.offers for o in first if o.framework_id == "f2")  # nothing rescinded
    second = offers_of(state.allocation_round(3.0))
    state.check_invariants()
    assert state.allocator.last_round_full
    assert {o.framework_id for o in second} == {"f2"}  # the new policy decided
    assert {o.agent_id for o in second} == {o.agent_id for o in f1}  # only what was free
    assert not {o.offer_id for o in first} & {o.offer_id for o in second}


def test_unknown_policy_or_bad_param_is_refused_and_the_old_policy_stays() -> None:
    state = cluster()
    with pytest.raises(CallRefused, match=r"unknown allocator policy 'lottery' \(known: binpack, drf"):
        state.admin(protocol.SetAllocator("lottery"), None, "c", 0.0)
    with pytest.raises(CallRefused, match="fair has no parameter 'resources'"):
        state.admin(protocol.SetAllocator("fair", {"resources": "cpus"}), None, "c", 0.0)
    assert state.allocator.policy.name == "drf"
    (reply,) = state.admin(protocol.GetAllocator(), None, "c", 0.0)
    assert isinstance(reply, ToFramework) and reply.body.policy == "drf"


def test_roles_are_set_partially_and_listed_with_their_frameworks() -> None:
    state = cluster()
    state.allocation_round(1.0)
    state.admin(protocol.SetRole("web", 3.0, Resources.parse("cpus:2"), None), None, "c", 0.0)
    effects = state.admin(protocol.SetRole("web", None, None, Resources.parse("cpus:8;mem:8192")), None, "c", 0.0)
    (event,) = [e for e in effects if isinstance(e, PublishEvent)]
    assert event.kind == "role.changed" and event.detail["weight"] == 3.0
    (reply,) = state.admin(protocol.GetRoles(), None, "c", 0.0)
    roles = {r.role: r for r in reply.body.roles}
    assert set(roles) == {"web", "batch"}
    web = roles["web"]
    assert (web.weight, web.guarantee, web.limit) == (3.0, Resources.of(cpus=2), Resources.of(cpus=8, mem=8192))
    assert web.frameworks == ["f1"] and web.allocated == state.frameworks["f1"].allocated
    assert roles["batch"].weight == 1.0 and roles["batch"].limit == Resources()


def test_admin_messages_round_trip_through_the_codec() -> None:
    bodies = [protocol.SetAllocator("priority", {"by": "framework"}), protocol.GetAllocator(),
              protocol.SetRole("web", 2.0, Resources.of(cpus=1), None), protocol.GetRoles(),
              protocol.AllocatorInfo("drf", {}, ["drf"]),
              protocol.Roles([protocol.RoleInfo("web", 2.0, frameworks=["f1"])])]
    for body in bodies:
        assert codec.decode(codec.encode(body, 1.0)).body == body


def test_allocation_package_is_pure() -> None:
    offenders = {}
    for path in sorted((PACKAGE / "core" / "allocation").glob("*.py")):
        bad = {n for n in imports_of(Path(path))
               if any(n == f or n.startswith(f + ".") for f in (*FORBIDDEN_IN_CORE, "importlib"))}
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}
