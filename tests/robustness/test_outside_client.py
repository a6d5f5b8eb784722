"""What an independent client, written from docs/protocol.md alone, found let down, each fixed and
checked here against a real master and agents."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from poison import Hand, start_agent, start_master

from broker_mesos.bus import topology
from broker_mesos.core import codec, protocol
from broker_mesos.core.protocol import CommandInfo, TaskInfo, TaskState
from broker_mesos.core.resources import Resources
from broker_mesos.framework.driver import SchedulerDriver
from broker_mesos.framework.scheduler import Scheduler
from broker_mesos.testing.client import RawFramework
from broker_mesos.testing.processes import ProcessGroup
from broker_mesos.testing.wait import wait_for


@pytest.fixture
def frameworks() -> Iterator[list[RawFramework]]:
    made: list[RawFramework] = []
    yield made
    for fw in made:
        fw.close()


def task(task_id: str, agent_id: str, resources: str, command: str) -> TaskInfo:
    return TaskInfo(task_id, agent_id, Resources.parse(resources), CommandInfo(command))


def test_kill_of_an_ended_task_puts_nothing_on_status_after_its_terminal_update(
        broker_url: str, procs: ProcessGroup, tmp_path: Path, frameworks: list[RawFramework]) -> None:
    """KILL of a finished task used to publish TASK_LOST on `status` while RECONCILE said FINISHED."""
    start_master(procs, broker_url)
    start_agent(procs, broker_url, tmp_path, "a1", "cpus:2;mem:1024")
    hand = Hand(broker_url)
    monitor = hand.channel.queue_declare("", exclusive=True).method.queue
    hand.channel.queue_bind(monitor, topology.STATUS, routing_key="fw1.#")
    fw = RawFramework(broker_url, "fw1")
    frameworks.append(fw)
    fw.subscribe()
    (offer,) = fw.offers()
    fw.accept([offer], [task("done", "a1", "cpus:0.5;mem:64", "true"),
                        task("long", "a1", "cpus:0.5;mem:64", "sleep 60")])
    fw.wait_status("done", TaskState.FINISHED)
    fw.wait_status("long", TaskState.RUNNING)

    fw.call(protocol.Kill("fw1", ["done", "never-launched"]))
    answer = fw.expect(protocol.Update, skip=(protocol.Offers, protocol.Rescind))
    by_task = {u.task_id: u for u in answer.updates}
    assert (by_task["done"].state, by_task["done"].agent_id) == (TaskState.FINISHED, "a1")
    assert (by_task["never-launched"].state, by_task["never-launched"].agent_id) == (TaskState.LOST, "")
    fw.call(protocol.Kill("fw1", ["long"]))  # a barrier: its KILLED comes after anything the first KILL caused
    seen: list[tuple[str, str]] = []

    def killed() -> bool:
        for _props, body in hand.drain(monitor):
            seen.extend((u.task_id, u.state.value) for u in codec.decode(body).body.updates)
        return ("long", "TASK_KILLED") in seen

    wait_for(killed, 20, "the barrier task's TASK_KILLED on status")
    after_done = seen[seen.index(("done", "TASK_FINISHED")) + 1:]
    assert not [s for s in after_done if s[0] in ("done", "never-launched")], seen
    hand.close()


def test_the_sdk_defaults_to_a_failover_timeout_that_survives_a_blip() -> None:
    driver = SchedulerDriver(Scheduler(), "amqp://127.0.0.1:1/", "x")
    assert driver.failover_timeout == protocol.DEFAULT_FAILOVER_TIMEOUT == protocol.Subscribe("fw").failover_timeout
    assert protocol.DEFAULT_FAILOVER_TIMEOUT >= 300  # outlasts a broker restart and a scheduler restart


def run_one_task(procs: ProcessGroup, url: str) -> tuple[str, object]:
    """`bmesos run` of one long task; returns (its framework id, its process) once the task runs."""
    hand = Hand(url)
    monitor = hand.channel.queue_declare("", exclusive=True).method.queue
    hand.channel.queue_bind(monitor, topology.STATUS, routing_key="*.*.TASK_RUNNING")
    run = procs.bmesos("run", "run", "--broker", url, "--count", "1", "--cpus", "0.5", "--mem", "64",
                       "--", "sleep 120")
    props = wait_for(lambda: hand.drain(monitor), 30, "the run's task to be running")
    hand.close()
    return codec.decode(props[0][1]).body.updates[0].framework_id, run


def test_a_killed_bmesos_run_is_noticed_at_once_and_its_tasks_outlive_it_by_its_failover_timeout(
        broker_url: str, procs: ProcessGroup, tmp_path: Path) -> None:
    """`bmesos run` cannot come back (its framework id is new each time): 60 s, and the master notices
    its consumer is gone within about a second (FRAMEWORK_CHECK_INTERVAL)."""
    master = start_master(procs, broker_url)
    start_agent(procs, broker_url, tmp_path, "a1", "cpus:2;mem:1024")
    framework_id, run = run_one_task(procs, broker_url)
    run.kill()  # type: ignore[attr-defined]
    line = master.wait_output(rf"event framework\.disconnected framework_id={framework_id} failover_timeout=(\S+)",
                              10)
    assert float(line[1]) == 60.0


def test_sigterm_of_bmesos_run_tears_its_framework_down(broker_url: str, procs: ProcessGroup,
                                                        tmp_path: Path) -> None:
    master = start_master(procs, broker_url)
    start_agent(procs, broker_url, tmp_path, "a1", "cpus:2;mem:1024")
    framework_id, run = run_one_task(procs, broker_url)
    run.signal(signal.SIGTERM)  # type: ignore[attr-defined]
    master.wait_output(rf"event framework\.removed framework_id={framework_id}", 30)


def test_declines_of_two_offers_on_one_agent_keep_the_whole_of_them_away(
        broker_url: str, procs: ProcessGroup, tmp_path: Path, frameworks: list[RawFramework]) -> None:
    """Each filter covered only its own offer, so the two came back 0.2 s later as one merged offer."""
    start_master(procs, broker_url)
    start_agent(procs, broker_url, tmp_path, "a1", "cpus:2;mem:1024")
    fw = RawFramework(broker_url, "fw1")
    frameworks.append(fw)
    fw.subscribe()
    (whole,) = fw.offers()
    fw.accept([whole], [task("t", "a1", "cpus:1;mem:512", "sleep 0.3")])
    (rest,) = fw.offers()  # cpus:1;mem:512, while t runs
    fw.wait_status("t", TaskState.FINISHED)
    (freed,) = fw.offers()  # what t held: a second offer on the same agent
    fw.decline([rest], refuse_seconds=30)
    fw.decline([freed], refuse_seconds=30)
    assert fw.no_event(within=2.0) is None  # rounds run every 0.1 s: a merged offer would come at once


def test_roles_refused_by_set_role_are_refused_by_subscribe_too(broker_url: str, procs: ProcessGroup) -> None:
    start_master(procs, broker_url)
    hand = Hand(broker_url)
    hand.declare(*topology.framework_queues("fw1"))
    raw = codec.encode(protocol.Subscribe("fw1", "fw1"), 1.0).replace(b"\xa1*", b"\xa2.x")  # role "*" -> ".x"
    hand.publish(topology.MASTER, "SUBSCRIBE", raw, reply_to="offers.fw1")
    props, _body = wait_for(lambda: hand.get(topology.DEAD_LETTER_QUEUE), 15, "the dead letter")
    assert "role" in props.headers[topology.HEADER_REASON]
    hand.close()
