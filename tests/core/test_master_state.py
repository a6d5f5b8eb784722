"""The master's rules, driven without a broker: each step's effects and the books after it."""

from __future__ import annotations

import pytest

from broker_mesos.core import codec, protocol
from broker_mesos.core.errors import CallRefused
from broker_mesos.core.master import MasterConfig, MasterState, PublishStatus, ToAgent, ToFramework
from broker_mesos.core.protocol import TaskState
from broker_mesos.core.resources import MAX_RANGES, Resources


class Cluster:
    """A master state with a virtual clock and helpers that read like the reference flow."""

    def __init__(self, **config: float) -> None:
        self.now = 1000.0
        self.state = MasterState(MasterConfig("m", **config))  # type: ignore[arg-type]

    def agent(self, agent_id: str, resources: str) -> None:
        self.state.agent_info(protocol.Register(agent_id, agent_id, Resources.parse(resources)), self.now)
        self.state.check_invariants()

    def framework(self, framework_id: str) -> None:
        self.state.subscribe(protocol.Subscribe(framework_id, framework_id), None, "c", self.now)

    def round(self) -> dict[str, list[protocol.Offer]]:
        self.now += 10
        effects = self.state.tick(self.now)
        self.state.check_invariants()
        return {e.framework_id: e.body.offers for e in effects
                if isinstance(e, ToFramework) and isinstance(e.body, protocol.Offers)}

    def task(self, task_id: str, agent_id: str, resources: str) -> protocol.TaskInfo:
        return protocol.TaskInfo(task_id, agent_id, Resources.parse(resources), protocol.CommandInfo("sleep 60"))

    def accept(self, framework_id: str, offers: list[protocol.Offer], *tasks: protocol.TaskInfo,
               refuse_seconds: float = 0.0) -> list[object]:
        effects = self.state.accept(protocol.Accept(framework_id, [o.offer_id for o in offers], list(tasks),
                                                    refuse_seconds), self.now)
        self.state.check_invariants()
        return effects

    def status(self, framework_id: str, task_id: str, agent_id: str, state: TaskState) -> None:
        self.state.status_update(protocol.TaskStatus(task_id, framework_id, agent_id, state, f"u-{task_id}-{state}",
                                                     self.now), self.now)
        self.state.check_invariants()


def test_reference_flow() -> None:
    c = Cluster()
    c.framework("fw1")
    c.framework("fw2")
    c.agent("agent1", "cpus:4;mem:4096")
    offers = c.round()
    assert list(offers) == ["fw1"]
    (offer,) = offers["fw1"]
    assert offer.resources == Resources.of(cpus=4, mem=4096)
    effects = c.accept("fw1", [offer], c.task("t1", "agent1", "cpus:2;mem:1024"),
                       c.task("t2", "agent1", "cpus:1;mem:2048"))
    (launch,) = effects
    assert isinstance(launch, ToAgent) and launch.agent_id == "agent1"
    assert [t.task_id for t in launch.body.tasks] == ["t1", "t2"]
    offers = c.round()
    assert list(offers) == ["fw2"]
    assert offers["fw2"][0].resources == Resources.of(cpus=1, mem=1024)


def test_finished_tasks_are_offered_again() -> None:
    c = Cluster()
    c.framework("fw1")
    c.agent("a", "cpus:2;mem:1024")
    (offer,) = c.round()["fw1"]
    c.accept("fw1", [offer], c.task("t", "a", "cpus:2;mem:1024"))
    assert c.round() == {}
    c.status("fw1", "t", "a", TaskState.RUNNING)
    assert c.round() == {}
    c.status("fw1", "t", "a", TaskState.FINISHED)
    assert c.round()["fw1"][0].resources == Resources.of(cpus=2, mem=1024)


def test_decline_filter_holds_for_refuse_seconds_and_others_get_the_agent() -> None:
    c = Cluster()
    c.framework("fw1")
    c.agent("a", "cpus:2;mem:1024")
    (offer,) = c.round()["fw1"]
    c.state.decline(protocol.Decline("fw1", [offer.offer_id], refuse_seconds=25), c.now)
    assert c.round() == {}  # +10 s: still filtered, nobody else there
    c.framework("fw2")
    assert list(c.round()) == ["fw2"]  # +20 s: the other framework gets it
    c.state.decline(protocol.Decline("fw2", [o.offer_id for o in c.state.offers.values()], 100), c.now)
    assert list(c.round()) == ["fw1"]  # +30 s: fw1's filter has expired


def test_bad_accepts_are_refused_and_change_nothing_else() -> None:
    c = Cluster()
    c.framework("fw1")
    c.framework("fw2")
    c.agent("a", "cpus:4;mem:4096")
    c.agent("b", "cpus:4;mem:4096")
    offers = c.round()
    mine, theirs = offers["fw1"][0], offers["fw2"][0]
    cases = [
        (lambda mine: ([theirs], [c.task("t", theirs.agent_id, "cpus:1")]), "another framework"),
        (lambda mine: ([mine], [c.task("t", mine.agent_id, "cpus:5")]), "need"),
        (lambda mine: ([mine], [c.task("t", "elsewhere", "cpus:1")]), "none of the offers"),
        (lambda mine: ([mine], [c.task("t", mine.agent_id, "cpus:1")] * 2), "twice"),
        (lambda mine: ([mine, mine], []), "same offer twice"),
    ]
    for make, reason in cases:
        offer_list, tasks = make(mine)
        with pytest.raises(CallRefused, match=reason):
            c.accept("fw1", offer_list, *tasks)
        c.state.check_invariants()
        assert not c.state.tasks
        assert theirs.offer_id in c.state.offers  # the other framework's offer is untouched
        c.now -= 9  # keep "theirs" from expiring while the cases run
        mine = c.round().get("fw1", [mine])[0]
    with pytest.raises(CallRefused, match="unknown, expired"):
        c.state.accept(protocol.Accept("fw1", ["nope"], []), c.now)
    with pytest.raises(CallRefused, match="not subscribed"):
        c.state.accept(protocol.Accept("ghost", [mine.offer_id], []), c.now)


def test_offers_expire_with_rescind() -> None:
    c = Cluster(offer_timeout=5.0)
    c.framework("fw1")
    c.agent("a", "cpus:1;mem:512")
    (offer,) = c.round()["fw1"]
    c.now += 6
    effects = c.state.tick(c.now)
    rescinds = [e.body for e in effects if isinstance(e, ToFramework) and isinstance(e.body, protocol.Rescind)]
    assert rescinds == [protocol.Rescind([offer.offer_id])]
    with pytest.raises(CallRefused, match="unknown, expired"):
        c.accept("fw1", [offer], c.task("t", "a", "cpus:1"))


def test_suppress_and_revive() -> None:
    c = Cluster()
    c.framework("fw1")
    c.state.suppress(protocol.Suppress("fw1"), c.now)
    c.agent("a", "cpus:1;mem:512")
    assert c.round() == {}
    c.state.revive(protocol.Revive("fw1"), c.now)
    assert list(c.round()) == ["fw1"]


def test_kill_and_reconcile() -> None:
    c = Cluster()
    c.framework("fw1")
    c.agent("a", "cpus:1;mem:512")
    (offer,) = c.round()["fw1"]
    c.accept("fw1", [offer], c.task("t", "a", "cpus:1"))
    effects = c.state.kill(protocol.Kill("fw1", ["t", "ghost"]), c.now)
    assert any(isinstance(e, ToAgent) and e.body == protocol.KillTasks("fw1", ["t"]) for e in effects)
    assert not [e for e in effects if isinstance(e, PublishStatus)]  # nothing on `status` for a ghost
    (answer,) = [e for e in effects if isinstance(e, ToFramework)]
    assert [(s.task_id, s.state, s.agent_id) for s in answer.body.updates] == [("ghost", TaskState.LOST, "")]
    (reply,) = c.state.reconcile(protocol.Reconcile("fw1", []), "q", "c1", c.now)
    assert [(u.task_id, u.state) for u in reply.body.updates] == [("t", TaskState.STAGING)]


def test_kill_of_an_ended_task_is_answered_privately_with_its_final_state() -> None:
    """Nothing may follow a task's terminal update on `status`: a late KILL gets the known end back."""
    c = Cluster()
    c.framework("fw1")
    c.agent("a", "cpus:1;mem:512")
    (offer,) = c.round()["fw1"]
    c.accept("fw1", [offer], c.task("t", "a", "cpus:1"))
    c.status("fw1", "t", "a", TaskState.FINISHED)
    effects = c.state.kill(protocol.Kill("fw1", ["t"]), c.now)
    assert not [e for e in effects if isinstance(e, PublishStatus | ToAgent)]
    (answer,) = effects
    assert isinstance(answer, ToFramework) and answer.framework_id == "fw1"
    assert [(s.task_id, s.state, s.agent_id) for s in answer.body.updates] == [("t", TaskState.FINISHED, "a")]
    (reply,) = c.state.reconcile(protocol.Reconcile("fw1", ["t", "nobody"]), "q", "c1", c.now)
    assert [(u.task_id, u.state, u.agent_id) for u in reply.body.updates] == [
        ("t", TaskState.FINISHED, "a"), ("nobody", TaskState.LOST, "")]


def test_declines_of_two_offers_on_one_agent_keep_their_union_away() -> None:
    """Each DECLINE filters its own offer; the two come back merged and must still be refused."""
    c = Cluster()
    c.framework("fw1")
    c.agent("a", "cpus:2;mem:1024")
    (first,) = c.round()["fw1"]
    c.accept("fw1", [first], c.task("t", "a", "cpus:1;mem:512"))
    (second,) = c.round()["fw1"]  # the rest: cpus:1;mem:512
    c.status("fw1", "t", "a", TaskState.FINISHED)
    (third,) = c.round()["fw1"]  # what t held, offered apart
    c.state.decline(protocol.Decline("fw1", [second.offer_id], refuse_seconds=60), c.now)
    c.state.decline(protocol.Decline("fw1", [third.offer_id], refuse_seconds=60), c.now)
    c.now += 0.2
    assert c.round() == {}  # the merged <2 cpus, 1024 mem> is the union of what was declined
    c.state.check_invariants()
    c.now += 60
    assert c.round()["fw1"][0].resources == Resources.of(cpus=2, mem=1024)


def test_repeated_declines_of_the_same_resources_do_not_pile_up_filters() -> None:
    c = Cluster()
    c.framework("fw1")
    c.agent("a", "cpus:2;mem:1024")
    for i in range(50):
        (offer,) = c.round()["fw1"]
        c.state.decline(protocol.Decline("fw1", [offer.offer_id], refuse_seconds=0.5), c.now)
        c.now += 1.0 + i * 0.001
    assert len(c.state.frameworks["fw1"].filters["a"]) == 1


def test_a_framework_not_consuming_its_offers_queue_gets_no_offers_and_its_clock_runs() -> None:
    c = Cluster()
    c.agent("a", "cpus:2;mem:1024")
    c.state.subscribe(protocol.Subscribe("ghost", "ghost", failover_timeout=5.0), None, "c", c.now, consuming=False)
    c.framework("real")
    assert set(c.round()) == {"real"}
    c.state.check_invariants()
    c.now += 6
    c.state.tick(c.now)
    assert "ghost" not in c.state.frameworks  # never seen consuming: removed after its failover timeout
    late = protocol.Subscribe("late", "late", failover_timeout=5.0)
    c.state.subscribe(late, None, "c", c.now, consuming=False)
    c.state.framework_connected("late", c.now)  # the shell saw a consumer
    c.now += 6
    c.state.tick(c.now)
    assert "late" in c.state.frameworks


def test_tasks_an_agent_reports_that_the_master_never_launched_are_killed_not_adopted() -> None:
    c = Cluster()
    c.agent("a", "cpus:4;mem:1024")
    phantom = protocol.Heartbeat("a", "a", Resources.parse("cpus:4;mem:1024"), tasks=[
        protocol.AgentTask("phantom", "fw1", Resources.of(cpus=3))])
    effects = c.state.agent_info(phantom, c.now)
    assert [e.body for e in effects if isinstance(e, ToAgent)] == [protocol.KillTasks("fw1", ["phantom"])]
    assert ("fw1", "phantom") not in c.state.tasks and c.state.agents["a"].free == c.state.agents["a"].total
    c.state.check_invariants()


def test_an_agent_claiming_more_than_the_maximum_is_refused_and_changes_nothing() -> None:
    c = Cluster()
    c.agent("a", "cpus:4;mem:1024")
    total = c.state.total
    with pytest.raises(CallRefused, match="more than the master admits"):
        c.state.agent_info(protocol.Register("big", "big", Resources.of(cpus=1e9)), c.now)
    with pytest.raises(CallRefused):
        c.state.agent_info(protocol.Heartbeat("a", "a", Resources.of(cpus=1e9)), c.now)
    assert "big" not in c.state.agents and c.state.total == total
    assert c.state.agents["a"].total == Resources.parse("cpus:4;mem:1024")


def test_teardown_releases_offers_and_kills_tasks() -> None:
    c = Cluster()
    c.framework("fw1")
    c.agent("a", "cpus:2;mem:512")
    (offer,) = c.round()["fw1"]
    c.accept("fw1", [offer], c.task("t", "a", "cpus:1"))
    c.round()
    effects = c.state.teardown(protocol.Teardown("fw1"), c.now)
    assert any(isinstance(e, ToAgent) for e in effects)
    assert "fw1" not in c.state.frameworks and not c.state.offers
    c.status("fw1", "t", "a", TaskState.KILLED)
    assert c.state.agents["a"].free == Resources.of(cpus=2, mem=512)


def test_restarted_master_adopts_running_tasks_reported_by_agents() -> None:
    c = Cluster()
    c.state.adopt_until = c.now + 10  # what the process shell sets on taking over
    c.state.agent_info(protocol.Heartbeat("a", "a", Resources.of(cpus=4), tasks=[
        protocol.AgentTask("t", "fw1", Resources.of(cpus=3))]), c.now)
    c.framework("fw1")
    c.state.check_invariants()
    assert c.round()["fw1"][0].resources == Resources.of(cpus=1)


def test_a_filter_only_refuses_what_was_declined() -> None:
    """Mesos' semantics: declining <mem> leftovers does not hide CPU freed later on that agent."""
    c = Cluster()
    c.framework("fw1")
    c.agent("a", "cpus:2;mem:2048")
    (offer,) = c.round()["fw1"]
    c.accept("fw1", [offer], c.task("t", "a", "cpus:2;mem:1024"))
    (leftover,) = c.round()["fw1"]
    assert leftover.resources == Resources.of(mem=1024)
    c.state.decline(protocol.Decline("fw1", [leftover.offer_id], refuse_seconds=600), c.now)
    assert c.round() == {}  # the same memory is still refused
    c.status("fw1", "t", "a", TaskState.FINISHED)
    assert c.round()["fw1"][0].resources == Resources.of(cpus=2, mem=2048)


def test_accept_filter_covers_only_the_unused_part() -> None:
    c = Cluster()
    c.framework("fw1")
    c.agent("a", "cpus:2;mem:2048")
    (offer,) = c.round()["fw1"]
    c.accept("fw1", [offer], c.task("t", "a", "cpus:1;mem:1024"), refuse_seconds=600)
    assert c.round() == {}  # <1 cpu, 1024 mem> unused and refused
    c.status("fw1", "t", "a", TaskState.FINISHED)
    assert c.round()["fw1"][0].resources == Resources.of(cpus=2, mem=2048)


def test_a_framework_can_hold_the_same_port_range_on_two_agents() -> None:
    """Holdings are amounts: two agents' ports:[31000-32000] must not merge into one range."""
    c = Cluster()
    c.framework("fw1")
    c.agent("a", "cpus:1;mem:512;ports:[31000-32000]")
    c.agent("b", "cpus:1;mem:512;ports:[31000-32000]")
    offers = c.round()["fw1"]
    assert len(offers) == 2
    assert c.state.frameworks["fw1"].allocated.scalar("ports") == 2002
    c.accept("fw1", [offers[0]], c.task("t", offers[0].agent_id, "cpus:1;ports:[31000-31000]"))
    c.state.decline(protocol.Decline("fw1", [offers[1].offer_id], 0), c.now)
    c.state.check_invariants()
    assert c.state.frameworks["fw1"].allocated == Resources.of(cpus=1, ports=1)


def test_an_offer_never_holds_more_port_ranges_than_a_message_may_carry() -> None:
    """Tasks taking single ports fragment an agent's free ranges past MAX_RANGES: the offer is cut."""
    c = Cluster()
    c.framework("fw1")
    c.agent("a", "cpus:100;mem:100000;ports:[1-3000]")
    (offer,) = c.round()["fw1"]
    every_other = [c.task(f"t{i}", "a", f"cpus:0.01;ports:[{p}-{p}]") for i, p in enumerate(range(2, 2400, 2))]
    c.accept("fw1", [offer], *every_other)
    (rest,) = c.round()["fw1"]
    assert len(rest.resources.ranges["ports"]) == MAX_RANGES
    assert codec.decode(codec.encode(protocol.Offers([rest]), 1.0)).body.offers[0] == rest
    c.state.decline(protocol.Decline("fw1", [rest.offer_id], refuse_seconds=0), c.now)
    offers = c.round()["fw1"]
    assert sum(len(o.resources.ranges["ports"]) for o in offers) == MAX_RANGES  # still cut, books balanced
