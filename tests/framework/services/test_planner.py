"""ServicePlanner: placement, pending reasons, replacement with backoff, scaling, stop, recovery."""

from __future__ import annotations

import msgpack
import pytest

from broker_mesos.core.protocol import TaskState
from broker_mesos.framework.planning import CommandError, Decline, KillTask, Launch, Reconcile, Revive, Suppress
from broker_mesos.framework.services.planner import LONG_REFUSE_SECONDS, SHORT_REFUSE_SECONDS, ServicePlanner

from .harness import FW, Cluster, agents, spec


def started(n_agents: int = 3, **fields: object) -> Cluster:
    planner = ServicePlanner(FW)
    cluster = Cluster(planner, agents(n_agents))
    planner.deploy(spec(**fields), cluster.now)
    cluster.tick()
    return cluster


def launched(effects: list) -> list:
    return [t for e in effects if isinstance(e, Launch) for t in e.tasks]


def test_places_lowest_slots_first_records_them_and_suppresses() -> None:
    c = started(instances=3, ports=2, env={"MODE": "x"})
    c.planner.dirty = False
    effects = c.offer()
    tasks = launched(effects)
    assert [t.task_id for t in tasks] == ["web_0_1", "web_1_2", "web_2_3"]
    assert [t.name for t in tasks] == ["web.0", "web.1", "web.2"]
    assert c.planner.dirty, "the task ids are recorded before the Launch leaves (write-ahead)"
    first = tasks[0].command.environment
    assert first == {"MODE": "x", "BMESOS_SERVICE": "web", "BMESOS_INSTANCE": "0", "BMESOS_SERVICE_VERSION": "1",
                     "PORT0": "31000", "PORT1": "31001", "PORT": "31000"}
    ports = [p for t in tasks for p in (int(t.command.environment["PORT0"]), int(t.command.environment["PORT1"]))]
    assert len(set(ports)) == 6, "ports taken on one agent never overlap"
    assert tasks[1].resources.ranges["ports"] == ((31002, 31003),)
    assert effects[-2:] == [Decline(("o2", "o3"), LONG_REFUSE_SECONDS), Suppress()]
    states = [i["state"] for i in c.planner.status("web", c.now)["instances"]]
    assert states == ["LAUNCHING"] * 3


def test_nothing_to_place_declines_long_and_suppresses_once() -> None:
    c = started(instances=1)
    c.offer()
    again = c.offer()
    assert again == [Decline(("o4", "o5", "o6"), LONG_REFUSE_SECONDS)]


def test_unique_hostname_reason_and_short_decline() -> None:
    c = started(n_agents=2, instances=3, constraints={"hostname": "UNIQUE"})
    effects = c.offer()
    assert len(launched(effects)) == 2
    c.run_all()
    effects = c.offer()
    assert effects == [Decline(("o3", "o4"), SHORT_REFUSE_SECONDS)]
    pending = c.planner.status("web", c.now)["pending"]
    assert pending == [{"slot": 2, "reason": "UNIQUE hostname: 2 agents for 3 instances"}]


def test_cluster_and_resource_reasons() -> None:
    c = started(instances=1, constraints={"rack": "CLUSTER:a"})
    c.offer()
    assert c.planner.status("web", c.now)["pending"][0]["reason"] == "CLUSTER rack:a: no offered agent has rack=a"
    big = started(instances=1, cpus=8, mem=512, ports=1)
    big.offer()
    reason = big.planner.status("web", big.now)["pending"][0]["reason"]
    assert reason == "no offer fits cpus:8;mem:512;ports:1 (largest seen: cpus:4;mem:4096;ports:10)"


def test_pending_before_any_offer_waits_for_offers() -> None:
    c = started(instances=1)
    assert c.planner.status("web", c.now)["pending"] == [{"slot": 0, "reason": "waiting for offers"}]


def test_constraints_count_instances_placed_in_the_same_round() -> None:
    c = started(n_agents=3, instances=3, constraints={"hostname": "UNIQUE"})
    tasks = launched(c.offer())
    assert sorted(t.agent_id for t in tasks) == ["a0", "a1", "a2"]


def test_failures_back_off_1_2_4_8_up_to_max_then_revive() -> None:
    c = started(instances=1, backoff={"initial": 1, "factor": 2, "max": 10})
    waits = []
    for _ in range(6):
        c.tick()
        [task] = launched(c.offer())
        c.run(task.task_id)
        c.fail(task.task_id, exit_code=1)
        status = c.planner.status("web", c.now)
        waits.append(status["backoff"]["next_launch_at"] - c.now)
        assert launched(c.offer()) == [], "no launch during backoff"
        assert status["pending"][0]["reason"].startswith("backoff: next launch in")
        assert "(last: failed: exit code 1)" in status["pending"][0]["reason"]
        c.now = status["backoff"]["next_launch_at"] - 0.01
        assert not any(isinstance(e, Revive) for e in c.tick())
        c.now += 0.01
        assert c.suppressed and c.tick() == [Revive()]
    assert waits == [1, 2, 4, 8, 10, 10]


def test_a_stable_run_resets_the_failures() -> None:
    c = started(instances=1, backoff={"initial": 1, "reset_after": 30})
    [task] = launched(c.offer())
    c.fail(task.task_id)
    c.tick(1)
    [task] = launched(c.offer())
    c.run(task.task_id)
    c.tick(29.9)
    assert c.planner.status("web", c.now)["backoff"]["failures"] == 1
    assert c.planner.next_wakeup(c.now) == pytest.approx(c.now + 0.1)
    c.tick(0.1)
    assert c.planner.status("web", c.now)["backoff"]["failures"] == 0


def test_finished_and_health_kills_are_failures_and_get_replaced() -> None:
    c = started(instances=1, ports=1, health_check={"type": "tcp"})
    [task] = launched(c.offer())
    c.run(task.task_id, healthy=False)
    view = c.planner.status("web", c.now)
    assert view["instances"][0]["healthy"] is False and view["healthy"] == 0
    c.update(task.task_id, TaskState.KILLED, healthy=False)
    assert c.planner.status("web", c.now)["backoff"]["last_failure"] == "killed after failing its health checks"
    c.tick(5)
    [task] = launched(c.offer())
    c.update(task.task_id, TaskState.FINISHED, exit_code=0)
    assert c.planner.status("web", c.now)["backoff"]["failures"] == 2


def test_lost_before_launch_is_retried_without_penalty() -> None:
    c = started(instances=1)
    [task] = launched(c.offer())
    c.update(task.task_id, TaskState.LOST, agent_id="")
    status = c.planner.status("web", c.now)
    assert status["backoff"]["failures"] == 0 and status["pending"][0]["reason"] == "waiting for offers"
    assert c.tick() == [Revive()]
    assert len(launched(c.offer())) == 1


def test_orphans_are_killed_and_unknown_terminal_updates_ignored() -> None:
    c = started(instances=1)
    assert c.update("web_9_99", TaskState.RUNNING) == [KillTask("web_9_99")]
    assert c.update("other_0_1", TaskState.STARTING) == [KillTask("other_0_1")]
    assert c.update("web_9_99", TaskState.KILLED) == []


def test_the_same_update_twice_changes_nothing() -> None:
    c = started(instances=1)
    [task] = launched(c.offer())
    c.run(task.task_id)
    c.planner.dirty = False
    before = c.planner.to_wire()
    assert c.run(task.task_id) == []
    assert not c.planner.dirty and c.planner.to_wire() == before


def test_scale_down_kills_highest_slots_and_scale_up_adds() -> None:
    c = started(instances=4)
    c.settle()
    assert c.planner.scale("web", 4, c.now)["result"] == "unchanged"
    assert c.planner.scale("web", 2, c.now)["result"] == "scaled to 2 (version 2)"
    kills = [e for e in c.tick() if isinstance(e, KillTask)]
    assert [k.task_id for k in kills] == ["web_3_4", "web_2_3"]
    c.finish_kills()
    assert c.summary()["running"] == 2
    c.planner.scale("web", 3, c.now)
    c.settle()
    assert sorted(i["slot"] for i in c.planner.status("web", c.now)["instances"]) == [0, 1, 2]
    assert c.summary()["healthy"] == 3 and c.summary()["version"] == 3


def test_deploy_unchanged_and_count_only_changes_restart_nothing() -> None:
    c = started(instances=2)
    c.settle()
    assert c.planner.deploy(spec(instances=2), c.now)["result"] == "unchanged"
    assert c.planner.deploy(spec(instances=2, backoff={"max": 5}), c.now)["result"] == "updated to version 2"
    c.settle()
    assert not any(isinstance(e, KillTask) for e in c.effects)
    assert [i["version"] for i in c.planner.status("web", c.now)["instances"]] == [2, 2]


def test_stop_kills_everything_and_the_service_goes() -> None:
    c = started(instances=2)
    c.settle()
    kills = c.planner.stop("web", c.now)
    assert sorted(k.task_id for k in kills if isinstance(k, KillTask)) == ["web_0_1", "web_1_2"]
    with pytest.raises(CommandError, match="stopping"):
        c.planner.deploy(spec(), c.now)
    c.update("web_0_1", TaskState.KILLED)
    assert [s["status"] for s in c.planner.list_services(c.now)] == ["stopping"]
    c.update("web_1_2", TaskState.KILLED)
    assert c.planner.list_services(c.now) == []
    assert c.planner.deploy(spec(), c.now)["result"] == "created"


def test_commands_on_unknown_services_are_refused() -> None:
    planner = ServicePlanner(FW)
    for command in (lambda: planner.scale("x", 1, 0.0), lambda: planner.restart("x", 0.0),
                    lambda: planner.stop("x", 0.0), lambda: planner.status("x", 0.0)):
        with pytest.raises(CommandError, match="no service 'x'"):
            command()


def test_state_survives_a_restart_and_recovery_reconciles() -> None:
    c = started(instances=3)
    c.offer()
    c.run("web_0_1")
    c.planner.scale("web", 2, c.now)
    c.tick()  # kills web_2_3
    wire = c.planner.to_wire()
    assert msgpack.unpackb(msgpack.packb(wire)) == wire
    again = ServicePlanner.from_wire(wire, FW)
    assert again.to_wire() == wire
    effects = again.recovered(c.now)
    assert effects[0] == Reconcile(())
    assert set(effects[1].task_ids) == {"web_0_1", "web_1_2", "web_2_3"}
    assert KillTask("web_2_3") in effects and effects[-1] == Revive()
    # an answer for a recorded task the master never saw: relaunched, and the counter never reuses ids
    c.planner = again
    c.update("web_1_2", TaskState.LOST, agent_id="")
    c.tick()
    assert [t.task_id for t in launched(c.offer())] == ["web_1_4"]


def test_from_wire_refuses_what_it_cannot_read() -> None:
    for bad in ({}, {"format": 1, "counter": -1, "services": {}}, {"format": 1, "counter": 0, "services": {"a": {}}}):
        with pytest.raises(ValueError):
            ServicePlanner.from_wire(bad, FW)
    wire = started(instances=1).planner.to_wire()
    wire["services"]["other"] = wire["services"]["web"]
    with pytest.raises(ValueError, match="holds the spec"):
        ServicePlanner.from_wire(wire, FW)


def test_a_silent_launch_is_reconciled() -> None:
    c = started(instances=1)
    c.offer()
    assert c.tick(59) == []
    assert c.tick(1) == [Reconcile(("web_0_1",))]
    assert c.tick(1) == []


def test_kills_without_an_answer_are_sent_again() -> None:
    c = started(instances=2)
    c.settle()
    c.planner.scale("web", 1, c.now)
    assert KillTask("web_1_2") in c.tick()
    assert c.tick(29) == []
    assert c.tick(1) == [KillTask("web_1_2")]


def test_views() -> None:
    c = started(instances=2, health_check={"type": "command", "command": "true"})
    c.offer()
    c.run("web_0_1", healthy=True)
    c.run("web_1_2", healthy=None)
    assert c.planner.list_services(c.now) == [
        {"name": "web", "version": 1, "status": "running", "wanted": 2, "running": 2, "healthy": 1, "deployment": None}]
    status = c.planner.status("web", c.now)
    assert status["instances"][0] == {"slot": 0, "version": 1, "task_id": "web_0_1", "agent": "a0",
                                      "hostname": "host0", "state": "TASK_RUNNING", "healthy": True, "ports": [],
                                      "since": c.now}
    assert msgpack.unpackb(msgpack.packb(status)) == status


def test_next_wakeup_names_the_earliest_future_timer() -> None:
    c = started(instances=1, backoff={"initial": 4})
    assert c.planner.next_wakeup(c.now) is None, "a slot waiting for offers needs no timer"
    [task] = launched(c.offer())
    assert c.planner.next_wakeup(c.now) == c.now + 60, "a silent launch is reconciled after 60 s"
    c.fail(task.task_id)
    assert c.planner.next_wakeup(c.now) == c.now + 4, "the backoff ends"
    c.tick(4)
    assert c.planner.next_wakeup(c.now) is None


def test_a_command_that_adds_work_revives_on_the_next_tick() -> None:
    c = started(instances=1)
    c.settle()
    assert c.suppressed
    c.planner.scale("web", 2, c.now)
    assert c.tick() == [Revive()]
    assert c.tick() == []


def test_group_by_spreads_instances_over_racks() -> None:
    planner = ServicePlanner(FW)
    c = Cluster(planner, agents(4, rack=["a", "a", "a", "b"]))
    planner.deploy(spec(instances=4, constraints={"rack": "GROUP_BY"}), c.now)
    c.settle()
    racks = sorted(c.agents[c.tasks[t].agent_id].attributes["rack"] for t in c.live())
    assert racks == ["a", "a", "b", "b"]
