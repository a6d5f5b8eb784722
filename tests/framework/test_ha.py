"""framework.ha against a real broker: one active scheduler per framework id (the lease), commands
answered by the active one only, its state persisted and taken over by a standby, bad calls refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from broker_mesos.bus import topology
from broker_mesos.bus.connection import Bus
from broker_mesos.cli.control import ControlClient, NoAnswer, Refused
from broker_mesos.core.protocol import Offer, TaskStatus
from broker_mesos.framework.ha import BuiltinScheduler, Command, Kind
from broker_mesos.framework.planning import CommandError, Effect
from broker_mesos.testing.wait import wait_for


class Counter:
    """The smallest planner: a number operators add to."""

    def __init__(self, count: int = 0) -> None:
        self.count = count
        self.dirty = False

    def offers(self, offers: list[Offer], now: float) -> list[Effect]:
        return []

    def offer_rescinded(self, offer_id: str) -> None:
        pass

    def status_update(self, status: TaskStatus, now: float) -> list[Effect]:
        return []

    def tick(self, now: float) -> list[Effect]:
        return []

    def recovered(self, now: float) -> list[Effect]:
        return []

    def to_wire(self) -> dict[str, Any]:
        return {"count": self.count}


def _add(planner: Counter, args: dict[str, Any], now: float) -> tuple[Any, list[Effect]]:
    by = args.get("by")
    if not isinstance(by, int) or by < 0:
        raise CommandError("by must be a non-negative integer")
    planner.count += by
    planner.dirty = True
    return {"count": planner.count}, []


def _load(data: dict[str, Any], framework_id: str, role: str) -> Counter:
    return Counter(int(data["count"]))


KIND = Kind("counter", lambda fid, role: Counter(), _load, {
    "add": Command(_add),
    "get": Command(lambda p, a, now: ({"count": p.count}, []), read_only=True),
})


@pytest.fixture
def schedulers(broker_url: str) -> Iterator[list[BuiltinScheduler]]:
    started: list[BuiltinScheduler] = []
    yield started
    for scheduler in started:
        scheduler.stop()
    for scheduler in started:
        scheduler.join(10)


def start(started: list[BuiltinScheduler], url: str, name: str) -> BuiltinScheduler:
    scheduler = BuiltinScheduler(KIND, url, framework_id="counter", scheduler_id=name)
    scheduler.start()
    started.append(scheduler)
    return scheduler


def test_one_active_scheduler_answers_and_a_standby_takes_over_with_the_state(
        broker_url: str, schedulers: list[BuiltinScheduler]) -> None:
    first = start(schedulers, broker_url, "first")
    wait_for(lambda: first.active, 30, "the first scheduler active")
    second = start(schedulers, broker_url, "second")
    client = ControlClient(broker_url, "counter", timeout=10)
    for _ in range(3):
        client.call("add", by=2)
    assert client.call("get") == {"count": 6}
    wait_for(lambda: second.lease.standing_by, 30, "the second scheduler standing by")
    assert not second.active and first.active

    first.stop()
    first.join(10)
    wait_for(lambda: second.active, 30, "the standby active")
    assert client.call("get") == {"count": 6}
    assert client.call("add", by=1) == {"count": 7}


def test_refusals_are_answered_and_a_late_command_expires(broker_url: str,
                                                          schedulers: list[BuiltinScheduler]) -> None:
    client = ControlClient(broker_url, "counter", timeout=1.0)
    with pytest.raises(NoAnswer):  # nobody runs yet: the call expires in the queue...
        client.call("add", by=5)
    scheduler = start(schedulers, broker_url, "only")
    wait_for(lambda: scheduler.active, 30, "the scheduler active")
    client = ControlClient(broker_url, "counter", timeout=10)
    assert client.call("get") == {"count": 0}  # ...and is never carried out later
    with pytest.raises(Refused, match="unknown command 'nope'"):
        client.call("nope")
    with pytest.raises(Refused, match="non-negative"):
        client.call("add", by=-1)


def test_garbage_on_the_calls_queue_is_dead_lettered_and_the_scheduler_keeps_answering(
        broker_url: str, schedulers: list[BuiltinScheduler]) -> None:
    scheduler = start(schedulers, broker_url, "only")
    wait_for(lambda: scheduler.active, 30, "the scheduler active")
    bus = Bus(broker_url, "poison")
    calls = topology.builtin_queues("counter")[0]
    bus.on_ready(lambda: (bus.publish(topology.BUILTIN, topology.builtin_calls_key("counter"), b"\xc1garbage"),
                          bus.call_later(0.5, bus.stop)))
    bus.run()
    wait_for(lambda: scheduler.bus.dead_lettered == 1, 30, "the garbage dead-lettered")
    assert ControlClient(broker_url, "counter", timeout=10).call("get") == {"count": 0}
    assert calls.name == "builtin.counter.calls"


def test_a_service_spec_for_another_role_is_refused_with_what_to_run() -> None:
    from broker_mesos.framework.services.planner import ServicePlanner
    from broker_mesos.framework.services.scheduler import KIND as SERVICES

    planner = ServicePlanner("services", role="*")
    with pytest.raises(CommandError, match="runs as role \\*, not batch; run one with --role batch"):
        SERVICES.commands["deploy"].run(planner, {"spec": {"name": "a", "command": "x", "role": "batch"}}, 0.0)
    result, _ = SERVICES.commands["deploy"].run(planner, {"spec": {"name": "a", "command": "x", "role": "*"}}, 0.0)
    assert result["result"] == "created"
