"""The master's executor rules, driven without a broker: what executors cost, when they are released,
how messages are relayed, and that the registry keeps them."""

from __future__ import annotations

import pytest

from broker_mesos.core import protocol
from broker_mesos.core.errors import CallRefused
from broker_mesos.core.master import (
    MasterConfig,
    MasterState,
    PublishEvent,
    PublishStatus,
    ToAgent,
    ToFramework,
)
from broker_mesos.core.master_agents import STAGING_GRACE
from broker_mesos.core.protocol import TaskState
from broker_mesos.core.resources import Resources
from broker_mesos.master import registry

EXECUTOR = protocol.ExecutorInfo("ex", protocol.CommandInfo("python -m my_executor"), Resources.of(cpus=0.5, mem=64))
HEARTBEAT = 1.0


class Cluster:
    """A master state with a virtual clock; every step checks the books."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.state = MasterState(MasterConfig("m"))

    def agent(self, agent_id: str, resources: str,
              executors: list[protocol.AgentExecutor] | None = None) -> list[object]:
        effects = self.state.agent_info(protocol.Register(agent_id, agent_id, Resources.parse(resources),
                                                          heartbeat_interval=HEARTBEAT,
                                                          executors=executors or []), self.now)
        self.state.check_invariants()
        return list(effects)

    def heartbeat(self, agent_id: str, tasks: list[protocol.AgentTask],
                  executors: list[protocol.AgentExecutor]) -> list[object]:
        agent = self.state.agents[agent_id]
        effects = self.state.agent_info(protocol.Heartbeat(agent_id, agent_id, agent.total, tasks=tasks,
                                                           heartbeat_interval=HEARTBEAT, executors=executors),
                                        self.now)
        self.state.check_invariants()
        return list(effects)

    def framework(self, framework_id: str) -> None:
        self.state.subscribe(protocol.Subscribe(framework_id, framework_id), None, "c", self.now)

    def offers(self) -> dict[str, list[protocol.Offer]]:
        self.now += 10
        effects = self.state.tick(self.now)
        self.state.check_invariants()
        return {e.framework_id: e.body.offers for e in effects
                if isinstance(e, ToFramework) and isinstance(e.body, protocol.Offers)}

    def accept(self, framework_id: str, offers: list[protocol.Offer], *tasks: protocol.TaskInfo) -> list[object]:
        effects = self.state.accept(protocol.Accept(framework_id, [o.offer_id for o in offers], list(tasks)),
                                    self.now)
        self.state.check_invariants()
        return list(effects)


def executor_task(task_id: str, agent_id: str, resources: str = "cpus:1;mem:128",
                  executor: protocol.ExecutorInfo = EXECUTOR) -> protocol.TaskInfo:
    return protocol.TaskInfo(task_id, agent_id, Resources.parse(resources), executor=executor, data=b"job")


def running(c: Cluster) -> tuple[protocol.Offer, list[object]]:
    """fw1 launches t1 on a (cpus:4;mem:1024) naming EXECUTOR."""
    c.framework("fw1")
    c.agent("a", "cpus:4;mem:1024")
    (offer,) = c.offers()["fw1"]
    return offer, c.accept("fw1", [offer], executor_task("t1", "a"))


def reported(*task_ids: str) -> list[protocol.AgentTask]:
    return [protocol.AgentTask("fw1", t, Resources.of(cpus=1, mem=128)) for t in task_ids]


RUNS_EX = [protocol.AgentExecutor("fw1", "ex", EXECUTOR.resources)]


def test_a_new_executor_is_charged_with_its_first_task_and_only_once() -> None:
    c = Cluster()
    _offer, effects = running(c)
    launch = next(e for e in effects if isinstance(e, ToAgent))
    assert launch.body.tasks[0].executor == EXECUTOR and launch.body.tasks[0].data == b"job"
    added = [e for e in effects if isinstance(e, PublishEvent) and e.kind == "executor.added"]
    assert [e.detail["executor_id"] for e in added] == ["ex"]
    agent = c.state.agents["a"]
    assert agent.free == Resources.of(cpus=2.5, mem=832)  # task 1/128 + executor 0.5/64
    assert c.state.frameworks["fw1"].allocated == Resources.of(cpus=1.5, mem=192)
    (offer,) = c.offers()["fw1"]
    assert offer.resources == Resources.of(cpus=2.5, mem=832)
    effects = c.accept("fw1", [offer], executor_task("t2", "a"))  # the same executor: only the task is charged
    assert not [e for e in effects if isinstance(e, PublishEvent)]
    assert agent.free == Resources.of(cpus=1.5, mem=704)
    assert c.state.frameworks["fw1"].allocated == Resources.of(cpus=2.5, mem=320)
    assert len(c.state.executors) == 1


def test_two_tasks_of_one_new_executor_in_one_accept_charge_it_once() -> None:
    c = Cluster()
    c.framework("fw1")
    c.agent("a", "cpus:2.5;mem:1024")
    (offer,) = c.offers()["fw1"]
    effects = c.accept("fw1", [offer], executor_task("t1", "a"), executor_task("t2", "a"))
    (launch,) = [e for e in effects if isinstance(e, ToAgent)]
    assert [t.task_id for t in launch.body.tasks] == ["t1", "t2"]
    assert c.state.agents["a"].free == Resources.of(mem=704)


def test_an_accept_whose_tasks_fit_but_not_with_their_executor_is_refused() -> None:
    c = Cluster()
    c.framework("fw1")
    c.agent("a", "cpus:1;mem:128")
    (offer,) = c.offers()["fw1"]
    with pytest.raises(CallRefused, match="need"):
        c.accept("fw1", [offer], executor_task("t1", "a"))
    assert not c.state.executors and c.state.agents["a"].free == Resources.of(cpus=1, mem=128)


def test_a_task_whose_executor_info_differs_from_the_booked_one_ends_task_error() -> None:
    c = Cluster()
    running(c)
    (offer,) = c.offers()["fw1"]
    other = protocol.ExecutorInfo("ex", protocol.CommandInfo("python -m other"), EXECUTOR.resources)
    effects = c.accept("fw1", [offer], executor_task("bad", "a", executor=other), executor_task("good", "a"))
    (error,) = [e.status for e in effects if isinstance(e, PublishStatus)]
    assert (error.task_id, error.state, error.reason) == ("bad", TaskState.ERROR, "REASON_TASK_INVALID")
    assert "differs" in error.message
    (launch,) = [e for e in effects if isinstance(e, ToAgent)]
    assert [t.task_id for t in launch.body.tasks] == ["good"]
    assert ("fw1", "bad") not in c.state.tasks
    answer = c.state.reconcile(protocol.Reconcile("fw1", ["bad"]), None, "r", c.now)[0]
    assert isinstance(answer, ToFramework) and answer.body.updates[0].state == TaskState.ERROR


def test_conflicting_executor_infos_within_one_accept_fail_the_later_task() -> None:
    c = Cluster()
    c.framework("fw1")
    c.agent("a", "cpus:4;mem:1024")
    (offer,) = c.offers()["fw1"]
    other = protocol.ExecutorInfo("ex", EXECUTOR.command, Resources.of(cpus=1, mem=64))
    effects = c.accept("fw1", [offer], executor_task("t1", "a"), executor_task("t2", "a", executor=other))
    assert [e.status.task_id for e in effects if isinstance(e, PublishStatus)] == ["t2"]
    assert c.state.executors[("a", "fw1", "ex")].info == EXECUTOR


def test_an_executor_task_needs_an_executor_command() -> None:
    c = Cluster()
    c.framework("fw1")
    c.agent("a", "cpus:4;mem:1024")
    (offer,) = c.offers()["fw1"]
    empty = protocol.ExecutorInfo("ex", protocol.CommandInfo(""), Resources.of(cpus=0.1))
    with pytest.raises(CallRefused, match="executor of task t1 has no command"):
        c.accept("fw1", [offer], executor_task("t1", "a", executor=empty))


def test_an_executor_not_reported_is_released_after_the_grace_and_a_reported_one_stays() -> None:
    c = Cluster()
    running(c)
    c.now += 1
    assert c.heartbeat("a", [], []) == []  # within the grace: it may not have started yet
    assert ("a", "fw1", "ex") in c.state.executors
    c.now += STAGING_GRACE
    c.heartbeat("a", reported("t1"), RUNS_EX)
    assert ("a", "fw1", "ex") in c.state.executors
    c.state.status_update(protocol.TaskStatus(
        "t1", "fw1", "a", TaskState.FINISHED, "u1", c.now, source="SOURCE_EXECUTOR", executor_id="ex",
        data=b"result"), c.now)
    c.state.check_invariants()
    assert c.state.agents["a"].free == Resources.of(cpus=3.5, mem=960)  # the idle executor still holds its own
    c.now += 1
    effects = c.heartbeat("a", [], [])
    removed = [e for e in effects if isinstance(e, PublishEvent) and e.kind == "executor.removed"]
    assert [e.detail["executor_id"] for e in removed] == ["ex"]
    assert not c.state.executors
    assert c.state.agents["a"].free == Resources.of(cpus=4, mem=1024)
    assert c.state.frameworks["fw1"].allocated == Resources()


def test_a_reported_executor_not_booked_is_adopted_if_it_fits() -> None:
    c = Cluster()
    c.framework("fw1")
    effects = c.agent("a", "cpus:4;mem:1024", RUNS_EX)
    added = [e for e in effects if isinstance(e, PublishEvent) and e.kind == "executor.added"]
    assert added and added[0].detail["adopted"] is True
    assert c.state.agents["a"].free == Resources.of(cpus=3.5, mem=960)
    (offer,) = c.offers()["fw1"]
    c.accept("fw1", [offer], executor_task("t1", "a"))  # charged the task only; the executor learns its info
    assert c.state.agents["a"].free == Resources.of(cpus=2.5, mem=832)
    assert c.state.executors[("a", "fw1", "ex")].info == EXECUTOR
    too_big = [protocol.AgentExecutor("fw1", "huge", Resources.of(cpus=100))]
    c.heartbeat("a", reported("t1"), RUNS_EX + too_big)
    assert ("a", "fw1", "huge") not in c.state.executors


def test_an_executor_of_an_unknown_framework_is_shut_down_not_adopted() -> None:
    c = Cluster()
    effects = c.agent("a", "cpus:4;mem:1024", [protocol.AgentExecutor("ghost", "ex", Resources.of(cpus=1))])
    (shutdown,) = [e for e in effects if isinstance(e, ToAgent)]
    assert shutdown.body == protocol.ShutdownExecutors("ghost", ["ex"])
    assert not c.state.executors


def test_agent_removal_drops_its_executors() -> None:
    c = Cluster()
    running(c)
    effects = c.state.remove_agent("a", "gone", c.now)
    c.state.check_invariants()
    assert not c.state.executors
    assert any(isinstance(e, PublishEvent) and e.kind == "executor.removed" for e in effects)
    assert c.state.frameworks["fw1"].allocated == Resources()


def test_teardown_shuts_down_executors_on_the_agents_that_run_them() -> None:
    c = Cluster()
    c.framework("fw1")
    for agent_id in ("a", "b", "c"):
        c.agent(agent_id, "cpus:4;mem:1024")
    mine = [o for o in c.offers()["fw1"] if o.agent_id in ("a", "b")]
    assert len(mine) == 2
    c.accept("fw1", mine, *(executor_task(f"t-{o.agent_id}", o.agent_id) for o in mine))
    effects = c.state.teardown(protocol.Teardown("fw1"), c.now)
    c.state.check_invariants()
    shutdowns = sorted((e.agent_id, e.body) for e in effects if isinstance(e, ToAgent)
                       and isinstance(e.body, protocol.ShutdownExecutors))
    assert shutdowns == [("a", protocol.ShutdownExecutors("fw1", [])), ("b", protocol.ShutdownExecutors("fw1", []))]
    assert len(c.state.executors) == 2  # booked until their agents stop reporting them
    c.now += 10
    c.heartbeat("a", [], [])
    assert [k[0] for k in c.state.executors] == ["b"]


def test_message_to_a_booked_executor_goes_to_its_agent_and_to_an_unknown_one_is_refused() -> None:
    c = Cluster()
    running(c)
    (relay,) = c.state.message(protocol.Message("fw1", "a", "ex", b"hi"), c.now)
    assert relay == ToAgent("a", protocol.ToExecutor("fw1", "ex", b"hi"))
    with pytest.raises(CallRefused, match="not running on agent a"):
        c.state.message(protocol.Message("fw1", "a", "nope", b"hi"), c.now)
    c.agent("b", "cpus:1;mem:64")
    with pytest.raises(CallRefused, match="not running on agent b"):
        c.state.message(protocol.Message("fw1", "b", "ex", b"hi"), c.now)


def test_from_executor_reaches_the_framework_only_from_where_the_executor_is_booked() -> None:
    c = Cluster()
    running(c)
    c.framework("fw2")
    (relay,) = c.state.from_executor(protocol.FromExecutor("a", "fw1", "ex", b"done"), c.now)
    assert relay == ToFramework("fw1", protocol.ExecutorMessage("a", "ex", b"done"))
    c.agent("b", "cpus:1;mem:64")
    with pytest.raises(CallRefused):
        c.state.from_executor(protocol.FromExecutor("b", "fw1", "ex", b"forged"), c.now)
    with pytest.raises(CallRefused):
        c.state.from_executor(protocol.FromExecutor("a", "fw2", "ex", b"forged"), c.now)
    c.state.framework_disconnected("fw1", c.now)
    assert c.state.from_executor(protocol.FromExecutor("a", "fw1", "ex", b"late"), c.now) == []


def test_registry_snapshot_keeps_executors_and_their_charge() -> None:
    c = Cluster()
    running(c)
    adopted = protocol.AgentExecutor("fw1", "adopted", Resources.of(cpus=0.25, mem=16))
    c.heartbeat("a", reported("t1"), [*RUNS_EX, adopted])
    raw = registry.snapshot(c.state, "m", set())
    restored = MasterState(MasterConfig("m2"))
    registry.restore(restored, raw, c.now + 1)
    restored.check_invariants()
    assert restored.executors[("a", "fw1", "ex")].info == EXECUTOR
    assert restored.executors[("a", "fw1", "adopted")].info is None
    assert restored.agents["a"].free == c.state.agents["a"].free
    assert restored.frameworks["fw1"].allocated == c.state.frameworks["fw1"].allocated
    # a restored executor gets the full grace again before it must be reported
    restored.agent_info(protocol.Heartbeat("a", "a", Resources.parse("cpus:4;mem:1024"), tasks=reported("t1"),
                                           heartbeat_interval=HEARTBEAT), c.now + 2)
    assert len(restored.executors) == 2
