"""Task usage in heartbeats (``HEARTBEAT.usage``): the wire form, and what the master keeps of it."""

from __future__ import annotations

import math

import msgpack
import pytest

from broker_mesos.core import codec, protocol
from broker_mesos.core.errors import ProtocolError
from broker_mesos.core.master_model import TaskUsage
from broker_mesos.core.protocol import AgentTask, Heartbeat, TaskState, Usage
from broker_mesos.core.resources import Resources
from tests.core.test_master_state import Cluster

RES = Resources.parse("cpus:4;mem:4096")


def _beat(tasks: list[AgentTask], usage: Usage | None) -> Heartbeat:
    return Heartbeat("a", "a", RES, tasks=tasks, heartbeat_interval=1.0, usage=usage)


def test_usage_round_trips_and_costs_27_bytes_per_task() -> None:
    tasks = [AgentTask(f"t{i}", "fw1") for i in range(100)]
    usage = Usage([i * 1.5 for i in range(100)], [100.25] * 100, [0.0] * 100)
    beat = _beat(tasks, usage)
    raw = codec.encode(beat, 1.0, "m1")
    assert codec.decode(raw).body == beat
    without = codec.encode(_beat(tasks, None), 1.0, "m1")
    assert len(raw) - len(without) <= 27 * 100 + 49
    one_more = codec.encode(_beat([*tasks, AgentTask("x", "fw1")], Usage([*usage.cpu_seconds, 1.0],
                                                                        [*usage.mem_mb, 1.0],
                                                                        [*usage.disk_mb, 1.0])), 1.0, "m1")
    one_more_without = codec.encode(_beat([*tasks, AgentTask("x", "fw1")], None), 1.0, "m1")
    assert (len(one_more) - len(one_more_without)) - (len(raw) - len(without)) == 27
    register = protocol.Register("a", "a", RES, tasks=tasks)  # a REGISTER carries none
    assert "usage" not in codec.to_wire(register) and codec.decode(codec.encode(register, 1.0)).body.usage is None


def _wire(beat: Heartbeat) -> dict[str, object]:
    return {"v": 1, "type": "HEARTBEAT", "id": "m1", "ts": 1.0, "body": codec.to_wire(beat)}


@pytest.mark.parametrize("column", ["cpu_seconds", "mem_mb", "disk_mb"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -1.0, 1e13, "1", True])
def test_non_finite_negative_huge_or_non_numbers_are_refused(column: str, bad: object) -> None:
    env = _wire(_beat([AgentTask("t", "fw1")], Usage([1.0], [2.0], [3.0])))
    env["body"]["usage"][column] = [bad]  # type: ignore[index]
    with pytest.raises(ProtocolError):
        codec.decode(msgpack.packb(env))


@pytest.mark.parametrize("lengths", [(0, 1, 1), (1, 1, 2), (2, 2, 2), (0, 0, 0)])
def test_columns_must_have_one_value_per_task(lengths: tuple[int, int, int]) -> None:
    env = _wire(_beat([AgentTask("t", "fw1")], Usage([1.0], [2.0], [3.0])))
    for column, n in zip(["cpu_seconds", "mem_mb", "disk_mb"], lengths, strict=True):
        env["body"]["usage"][column] = [1.0] * n  # type: ignore[index]
    with pytest.raises(ProtocolError, match="one per task"):
        codec.decode(msgpack.packb(env))
    with pytest.raises(ProtocolError):
        _beat([AgentTask("t", "fw1")], Usage(*([1.0] * n for n in lengths)))


def test_an_empty_usage_for_no_tasks_is_fine() -> None:
    beat = _beat([], Usage())
    assert codec.decode(codec.encode(beat, 1.0)).body == beat


def _launched(c: Cluster, *task_ids: str) -> None:
    c.framework("fw1")
    c.agent("a", "cpus:4;mem:4096")
    (offer,) = c.round()["fw1"]
    c.accept("fw1", [offer], *(c.task(t, "a", "cpus:1;mem:1024") for t in task_ids))
    for t in task_ids:
        c.status("fw1", t, "a", TaskState.RUNNING)


def test_the_master_keeps_each_tasks_latest_usage_and_sums_it_per_agent() -> None:
    c = Cluster()
    _launched(c, "t1", "t2")
    free_before = c.state.agents["a"].free
    tasks = [AgentTask("t1", "fw1", Resources.parse("cpus:1;mem:1024")),
             AgentTask("t2", "fw1", Resources.parse("cpus:1;mem:1024"))]
    c.state.agent_info(_beat(tasks, Usage([1.0, 2.0], [100.0, 3000.0], [1.0, 5.0])), c.now)
    assert c.state.tasks[("fw1", "t1")].usage == TaskUsage(1.0, 100.0, 1.0)
    assert c.state.tasks[("fw1", "t2")].usage == TaskUsage(2.0, 3000.0, 5.0)
    assert c.state.agents["a"].usage == TaskUsage(3.0, 3100.0, 6.0)
    # never trusted for allocation: using more than it was given changes nothing in the books
    assert c.state.agents["a"].free == free_before
    c.state.check_invariants()

    c.state.agent_info(_beat(tasks, Usage([1.5, 4.0], [120.0, 10.0], [1.0, 5.0])), c.now)  # the latest counts
    assert c.state.agents["a"].usage == TaskUsage(5.5, 130.0, 6.0)

    c.state.agent_info(protocol.Register("a", "a", RES, tasks=tasks), c.now)  # no usage: what was known stays
    assert c.state.tasks[("fw1", "t1")].usage == TaskUsage(1.5, 120.0, 1.0)
    assert c.state.agents["a"].usage == TaskUsage(5.5, 130.0, 6.0)

    c.status("fw1", "t2", "a", TaskState.FINISHED)  # an ended task leaves the agent's sum at once
    assert c.state.agents["a"].usage == TaskUsage(1.5, 120.0, 1.0)
    c.state.agent_info(_beat(tasks[:1], Usage([2.0], [121.0], [1.0])), c.now)
    assert c.state.agents["a"].usage == TaskUsage(2.0, 121.0, 1.0)
    c.state.check_invariants()


def test_usage_of_tasks_the_master_does_not_hold_is_ignored() -> None:
    c = Cluster()
    _launched(c, "t1")
    c.agent("b", "cpus:4;mem:4096")
    tasks = [AgentTask("t1", "fw1", Resources.parse("cpus:1;mem:1024")),
             AgentTask("phantom", "fw1", Resources.of(cpus=1))]
    # another agent claiming t1, and a phantom task: neither is booked nor counted
    c.state.agent_info(Heartbeat("b", "b", RES, tasks=tasks, usage=Usage([9.0, 9.0], [9.0, 9.0], [9.0, 9.0])),
                       c.now)
    assert c.state.tasks[("fw1", "t1")].usage is None
    assert c.state.agents["b"].usage == TaskUsage() and c.state.agents["a"].usage == TaskUsage()
    c.state.agent_info(_beat(tasks, Usage([1.0, 9.0], [2.0, 9.0], [3.0, 9.0])), c.now)
    assert c.state.agents["a"].usage == TaskUsage(1.0, 2.0, 3.0)
    assert ("fw1", "phantom") not in c.state.tasks
    c.state.check_invariants()
