"""Delay scheduling helper: local first, skip non-local offers until the job's wait is over, then anywhere."""

from __future__ import annotations

import itertools

import pytest

from broker_mesos.core.protocol import Offer
from broker_mesos.core.resources import Resources
from broker_mesos.framework.locality import DelayScheduler, LocalityTask, Preference

SLOT = Resources.of(cpus=1, mem=128)
_offer_ids = itertools.count(1)


def offer(agent_id: str, slots: int = 1, **attributes: str) -> Offer:
    return Offer(f"O{next(_offer_ids)}", "fw", agent_id, agent_id, Resources.of(cpus=slots, mem=128 * slots),
                 dict(attributes), 30.0)


def on(*agents: str, job: str = "default", task_id: str | None = None) -> LocalityTask:
    return LocalityTask(task_id or f"t-{'-'.join(agents)}", SLOT, Preference.of(agents=agents), job)


def test_preference_matching() -> None:
    assert Preference().matches("a1", {})  # no preference: local everywhere
    by_agent = Preference.of(agents=["a1", "a2"])
    assert by_agent.matches("a2", {}) and not by_agent.matches("a3", {"rack": "r1"})
    rack = Preference.of(attributes={"rack": "r1"})
    assert rack.matches("a9", {"rack": "r1", "zone": "z"})
    assert not rack.matches("a9", {"rack": "r2"}) and not rack.matches("a9", {})
    either = Preference.of(attributes={"rack": ["r1", "r3"], "zone": "z"})
    assert either.matches("x", {"rack": "r3", "zone": "z"})
    assert not either.matches("x", {"rack": "r3"})  # every named attribute must match
    assert Preference.of(agents=["a1"], attributes={"rack": "r1"}).matches("a7", {"rack": "r1"})  # either way
    with pytest.raises(ValueError):
        Preference.of(attributes={"rack": []})


def test_local_offer_is_taken_at_once_and_oldest_first() -> None:
    ds = DelayScheduler(max_wait=5)
    ds.add(on("a1", task_id="first"), 0.0)
    ds.add(on("a2", task_id="other"), 0.0)
    ds.add(on("a1", task_id="second"), 1.0)
    decision = ds.decide(offer("a1", slots=1), now=2.0)
    assert [(p.task.task_id, p.local, p.waited) for p in decision.placements] == [("first", True, 2.0)]
    two = ds.decide(offer("a1", slots=2), now=3.0)
    assert [p.task.task_id for p in two.placements] == ["second"]  # "other" is not local and must wait
    assert [t.task_id for t in ds.pending] == ["other"]


def test_non_local_offers_are_declined_until_the_wait_is_over() -> None:
    ds = DelayScheduler(max_wait=5, refuse_seconds=1)
    ds.add(on("a1"), 0.0)
    first = ds.decide(offer("a2"), now=10.0)
    assert not first.accepted and first.refuse_seconds == 1  # the wait starts at the first skip, not at add
    assert ds.skipping_since() == 10.0
    assert not ds.decide(offer("a2"), now=14.0).accepted
    near_end = ds.decide(offer("a3"), now=14.5)
    assert not near_end.accepted and near_end.refuse_seconds == pytest.approx(0.5)  # never refuse past the wait
    late = ds.decide(offer("a2"), now=15.0)
    assert [(p.agent_id, p.local, p.waited) for p in late.placements] == [("a2", False, 15.0)]
    assert len(ds) == 0 and ds.skipping_since() is None


def test_a_local_launch_restarts_the_jobs_wait() -> None:
    ds = DelayScheduler(max_wait=5)
    for i, agent in enumerate(["a1", "a1", "a9"]):
        ds.add(on(agent, task_id=f"t{i}"), 0.0)
    assert not ds.decide(offer("a2"), 0.0).accepted
    assert [p.task.task_id for p in ds.decide(offer("a1"), 4.0).placements] == ["t0"]
    assert ds.skipping_since() is None
    assert not ds.decide(offer("a2"), 6.0).accepted  # would have been over at 5 without the local launch
    assert not ds.decide(offer("a2"), 10.9).accepted
    relaxed = ds.decide(offer("a2", slots=2), 11.0)
    assert [(p.task.task_id, p.local) for p in relaxed.placements] == [("t1", False), ("t2", False)]


def test_a_relaxed_job_stays_relaxed_until_it_launches_locally() -> None:
    ds = DelayScheduler(max_wait=1)
    for i in range(4):
        ds.add(on("a1", task_id=f"t{i}"), 0.0)
    ds.decide(offer("a2"), 0.0)
    assert ds.decide(offer("a2"), 1.0).placements[0].local is False
    assert ds.decide(offer("a3"), 1.1).placements[0].local is False  # no new wait
    assert ds.decide(offer("a1"), 1.2).placements[0].local is True
    assert not ds.decide(offer("a3"), 1.3).accepted  # waiting again


def test_jobs_wait_independently() -> None:
    ds = DelayScheduler(max_wait=2)
    ds.add(on("a1", job="j1", task_id="j1-t"), 0.0)
    ds.add(on("a1", job="j2", task_id="j2-t"), 0.0)
    ds.decide(offer("a2"), 0.0)  # both start waiting
    ds.add(on("a1", job="j3", task_id="j3-t"), 1.0)
    decision = ds.decide(offer("a2", slots=3), 2.0)
    assert sorted(p.task.task_id for p in decision.placements) == ["j1-t", "j2-t"]
    assert ds.skipping_since("j3") == 2.0 and ds.relaxed("j3", 4.0) and not ds.relaxed("j3", 3.9)


def test_zero_wait_is_greedy_but_still_prefers_local() -> None:
    ds = DelayScheduler(max_wait=0)
    ds.add(on("a9", task_id="far"), 0.0)
    ds.add(on("a1", task_id="near"), 0.0)
    decision = ds.decide(offer("a1", slots=1), 0.0)
    assert [(p.task.task_id, p.local) for p in decision.placements] == [("near", True)]
    assert [(p.task.task_id, p.local) for p in ds.decide(offer("a2"), 0.0).placements] == [("far", False)]


def test_tasks_that_do_not_fit_are_not_skips_and_refuse_times_follow_the_queue() -> None:
    ds = DelayScheduler(max_wait=5, idle_refuse_seconds=30)
    big = LocalityTask("big", Resources.of(cpus=8, mem=128), Preference.of(agents=["a1"]))
    ds.add(big, 0.0)
    small_offer = ds.decide(offer("a2"), 0.0)
    assert not small_offer.accepted and small_offer.refuse_seconds == 0.0 and ds.skipping_since() is None
    ds.remove("big")
    assert ds.remove("big") is None
    assert ds.decide(offer("a2"), 1.0).refuse_seconds == 30  # nothing waits: keep the agent away long


def test_attribute_preferences_and_requeue() -> None:
    ds = DelayScheduler(max_wait=3)
    task = LocalityTask("t", SLOT, Preference.of(attributes={"rack": "r1"}), data="sleep 1")
    ds.add(task, 0.0)
    with pytest.raises(ValueError):
        ds.add(task, 0.0)
    assert not ds.decide(offer("a2", rack="r2"), 0.0).accepted
    (placement,) = ds.decide(offer("a7", rack="r1"), 1.0).placements
    assert placement.local and placement.task.data == "sleep 1"
    ds.add(placement.task, 2.0)  # e.g. the ACCEPT was refused: it waits again
    assert ds.pending == [task]
    with pytest.raises(ValueError):
        DelayScheduler(max_wait=-1)
