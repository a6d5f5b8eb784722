"""Rolling deployments: pacing by max_parallel and min_healthy, surge slots, failure and revert, and
randomized runs checking that no kill the planner chooses takes healthy instances below min_healthy."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker_mesos.core.protocol import TaskState
from broker_mesos.framework.planning import KillTask, Launch
from broker_mesos.framework.services.planner import ServicePlanner

from .harness import FW, Cluster, agents, spec

CHECKED = {"health_check": {"type": "command", "command": "true"}}


def running(n: int = 3, n_agents: int = 3, **fields: Any) -> Cluster:
    planner = ServicePlanner(FW)
    cluster = Cluster(planner, agents(n_agents))
    planner.deploy(spec(instances=n, **CHECKED, **fields), cluster.now)
    cluster.settle()
    assert cluster.summary()["healthy"] == n
    return cluster


def kills(effects: list) -> list[str]:
    return [e.task_id for e in effects if isinstance(e, KillTask)]


def versions(c: Cluster) -> dict[int, int]:
    return {i["slot"]: i["version"] for i in c.planner.status("web", c.now)["instances"]}


def test_one_at_a_time_highest_slot_first() -> None:
    c = running(3)
    assert c.planner.deploy(spec(instances=3, command="v2", **CHECKED), c.now)["result"] == "updated to version 2"
    assert kills(c.tick()) == ["web_2_3"], "min_healthy 2 of 3: one old instance may go"
    assert kills(c.tick(1)) == [], "the next waits until the new one is healthy"
    c.finish_kills()
    [task] = [t for e in c.offer() if isinstance(e, Launch) for t in e.tasks]
    assert task.name == "web.2" and task.command.environment["BMESOS_SERVICE_VERSION"] == "2"
    assert task.command.value == "v2"
    assert kills(c.run(task.task_id, healthy=None)) == [], "running is not healthy yet"
    assert kills(c.run(task.task_id, healthy=True)) == ["web_1_2"]
    c.settle()
    assert versions(c) == {0: 2, 1: 2, 2: 2}
    assert c.summary()["deployment"] is None and c.summary()["status"] == "running"


def test_max_parallel_two() -> None:
    c = running(4, n_agents=4, upgrade={"max_parallel": 2})
    c.planner.deploy(spec(instances=4, command="v2", upgrade={"max_parallel": 2}, **CHECKED), c.now)
    assert sorted(kills(c.tick())) == ["web_2_3", "web_3_4"]
    c.settle()
    assert versions(c) == {0: 2, 1: 2, 2: 2, 3: 2}


def test_min_healthy_equal_to_instances_surges_then_takes_over_the_slot() -> None:
    c = running(1, upgrade={"min_healthy": 1})
    c.planner.restart("web", c.now)
    assert kills(c.tick()) == []
    status = c.planner.status("web", c.now)
    assert [p["slot"] for p in status["pending"]] == [1] and status["deployment"]["phase"] == "rolling"
    [task] = [t for e in c.offer() if isinstance(e, Launch) for t in e.tasks]
    assert task.name == "web.1"
    assert kills(c.run(task.task_id)) == ["web_0_1"]
    status = c.planner.status("web", c.now)
    assert [(i["slot"], i["task_id"]) for i in status["instances"]] == [(0, task.task_id)]
    assert status["deployment"] is None and status["version"] == 2


def test_a_failing_new_version_is_reverted() -> None:
    c = running(3)
    c.planner.deploy(spec(instances=3, command="broken", **CHECKED), c.now)
    c.tick()
    c.finish_kills()
    [task] = [t for e in c.offer() if isinstance(e, Launch) for t in e.tasks]
    c.fail(task.task_id, exit_code=3)
    status = c.planner.status("web", c.now)
    assert status["version"] == 3 and status["deployment"]["phase"] == "reverting"
    assert status["deployment"]["message"] == ("version 2 failed: instance 2 failed: exit code 3; "
                                               "reverting to the spec of version 1")
    assert versions(c) == {0: 3, 1: 3}, "the old version's instances are the revert's: they keep running"
    c.settle()
    assert c.summary()["deployment"] is None and c.summary()["healthy"] == 3
    assert {t.command.value for tid, t in c.tasks.items() if not c.states[tid].terminal} == {"serve"}


def test_missing_the_healthy_deadline_without_revert_stops_the_deployment() -> None:
    policy = {"healthy_deadline": 30, "auto_revert": False}
    c = running(3, upgrade=policy)
    c.planner.deploy(spec(instances=3, command="slow", upgrade=policy, **CHECKED), c.now)
    c.tick()
    c.finish_kills()
    [task] = [t for e in c.offer() if isinstance(e, Launch) for t in e.tasks]
    c.run(task.task_id, healthy=None)
    c.tick(29)
    assert c.planner.status("web", c.now)["deployment"]["phase"] == "rolling"
    c.tick(1)
    deployment = c.planner.status("web", c.now)["deployment"]
    assert deployment["phase"] == "failed"
    assert deployment["message"] == "version 2 failed: instance 2 not healthy within 30s"
    c.run(task.task_id, healthy=True)
    assert kills(c.tick(1)) == [], "a failed deployment replaces no more old instances"
    assert c.summary()["status"] == "running"


def test_a_deploy_during_a_deployment_retargets_it() -> None:
    c = running(3)
    c.planner.deploy(spec(instances=3, command="v2", **CHECKED), c.now)
    c.tick()
    c.finish_kills()
    c.planner.deploy(spec(instances=3, command="v3", **CHECKED), c.now)
    c.settle()
    assert set(versions(c).values()) == {3}
    assert {t.command.value for tid, t in c.tasks.items() if not c.states[tid].terminal} == {"v3"}


# -- randomized runs ------------------------------------------------------------------------

STEPS = st.lists(st.tuples(st.sampled_from(["offer", "run", "run_unhealthy", "fail", "kills", "tick", "deploy",
                                             "restart", "flap", "lost"]),
                           st.integers(0, 1000)), min_size=1, max_size=60)


def _live(c: Cluster, *states: TaskState) -> list[str]:
    return sorted(t for t in c.live() if c.states[t] in states)


def _step(c: Cluster, action: str, pick: int, n: int, policy: dict[str, Any]) -> None:
    staging = [t for t in _live(c, TaskState.STAGING) if t not in c.kill_requested]
    running_ = _live(c, TaskState.RUNNING)
    if action == "offer":
        c.offer()
    elif action in ("run", "run_unhealthy") and staging:
        c.run(staging[pick % len(staging)], healthy=action == "run")
    elif action == "fail" and running_ + staging:
        c.fail((running_ + staging)[pick % len(running_ + staging)])
    elif action == "flap" and running_:
        c.run(running_[pick % len(running_)], healthy=pick % 2 == 0)
    elif action == "lost" and running_:
        c.update(running_[pick % len(running_)], TaskState.LOST)
    elif action == "kills":
        c.finish_kills()
    elif action == "tick":
        c.tick(pick / 10)
    elif action == "deploy":
        c.planner.deploy(spec(instances=n, command=f"v{pick % 3}", upgrade=policy, **CHECKED), c.now)
    elif action == "restart":
        c.planner.restart("web", c.now)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 5), max_parallel=st.integers(1, 3), min_healthy=st.one_of(st.none(), st.integers(0, 5)),
       auto_revert=st.booleans(), steps=STEPS)
def test_kills_never_take_healthy_below_min_healthy(n: int, max_parallel: int, min_healthy: int | None,
                                                    auto_revert: bool, steps: list[tuple[str, int]]) -> None:
    policy: dict[str, Any] = {"max_parallel": max_parallel, "auto_revert": auto_revert, "healthy_deadline": 50}
    if min_healthy is not None:
        policy["min_healthy"] = min(min_healthy, n)
    c = running(n, n_agents=3, upgrade=policy)  # the harness checks the invariant on every call
    for action, pick in steps:
        _step(c, action, pick, n, policy)
        wire = c.planner.to_wire()
        assert ServicePlanner.from_wire(wire, FW).to_wire() == wire
    # then everything behaves: the service converges to n healthy instances of one version
    c.planner.deploy(spec(instances=n, command="final", upgrade=policy, **CHECKED), c.now)
    c.tick(100)  # backoff from the chaos ends
    c.settle(rounds=12 * n + 20)
    status = c.planner.status("web", c.now)
    assert status["healthy"] == n, status
    assert len({i["version"] for i in status["instances"]}) == 1
    assert status["deployment"] is None or status["deployment"]["phase"] == "failed"
    assert len(c.live()) == n


def test_unique_hosts_wait_for_the_old_task_to_end_before_reusing_its_host() -> None:
    c = running(3, n_agents=3, constraints={"hostname": "UNIQUE"})
    c.planner.deploy(spec(instances=3, command="v2", constraints={"hostname": "UNIQUE"}, **CHECKED), c.now)
    [victim] = kills(c.tick())
    assert [e for e in c.offer() if isinstance(e, Launch)] == [], "its host still runs the dying task"
    c.finish_kills()
    [task] = [t for e in c.offer() if isinstance(e, Launch) for t in e.tasks]
    assert task.agent_id == c.tasks[victim].agent_id
    c.settle()
    assert set(versions(c).values()) == {2} and c.summary()["healthy"] == 3


def test_after_a_recovery_deadlines_wait_for_the_reconcile_answers() -> None:
    c = running(1, upgrade={"healthy_deadline": 30})
    c.planner.restart("web", c.now)
    c.tick()
    c.finish_kills()
    [task] = [t for e in c.offer() if isinstance(e, Launch) for t in e.tasks]
    c.run(task.task_id, healthy=None)
    c.now += 100  # the scheduler was away; the task became healthy meanwhile
    c.planner = ServicePlanner.from_wire(c.planner.to_wire(), FW)
    c.planner.recovered(c.now)
    assert c.planner.status("web", c.now)["deployment"]["phase"] == "rolling"
    c.run(task.task_id, healthy=True)  # the reconcile answer
    assert c.planner.status("web", c.now)["deployment"] is None
