"""examples/pymap.py against a real master and two real agents: calls run in one warm Python executor
process per agent, results come back in input order, a framework message makes the round trip, and
the teardown at the end stops the executors."""

from __future__ import annotations

import os
import re
import sys
import threading
from pathlib import Path

import pytest

from broker_mesos.core.protocol import TaskState
from broker_mesos.framework.examples import pymap
from broker_mesos.framework.examples.pymap import PyMap, TaskFailed
from broker_mesos.testing.processes import ProcessGroup
from broker_mesos.testing.wait import wait_for

AGENTS = ("pymap-a", "pymap-b")


def start_cluster(procs: ProcessGroup, url: str, work_root: Path) -> None:
    """A master and two agents; the work dirs are under ``work_root`` so executors run as nobody can
    reach their sandboxes."""
    master = procs.bmesos("master", "master", "--broker", url, "--allocation-interval", "0.05")
    master.wait_output(r"master \S+ serving")
    agents = [procs.bmesos(agent_id, "agent", "--broker", url, "--id", agent_id, "--resources", "cpus:4;mem:4096",
                           "--work-dir", str(work_root / f"{agent_id}-{url.rsplit('/', 1)[-1]}"))
              for agent_id in AGENTS]
    for agent_id, agent in zip(AGENTS, agents, strict=True):
        agent.wait_output(rf"agent {agent_id} registered", timeout=60)


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text(
        errors="replace").lower()


def test_pmap_runs_in_one_warm_executor_per_agent_in_order_and_ping_round_trips(
        broker_url: str, procs: ProcessGroup, work_root: Path) -> None:
    start_cluster(procs, broker_url, work_root)
    with PyMap(broker_url, name="pymap-test", batch=10) as pm:
        results = pm.map(pymap.where, range(200), timeout=120)
        assert [r[0] for r in results] == [i * i for i in range(200)]
        processes: dict[str, set[int]] = {}
        for _, pid, agent_id, executor_id in results:
            assert executor_id == "py-0"
            processes.setdefault(agent_id, set()).add(pid)
        assert set(processes) == set(AGENTS)  # 200 calls, 10 per offer: both agents took some
        assert all(len(pids) == 1 for pids in processes.values()), processes
        assert pm.executors == {agent_id: {"py-0"} for agent_id in AGENTS}

        again = pm.map(pymap.where, range(20), timeout=60)  # warm: the same processes run the next map
        assert {pid for _, pid, _, _ in again} <= set().union(*processes.values())
        assert pm.map(pymap.square, [3, 4]) == [9, 16]

        with pytest.raises(TaskFailed) as failed:
            pm.map(pymap.square, [1, "two", 3], timeout=60)
        assert failed.value.index == 1 and failed.value.message.startswith("TypeError:")
        assert "Traceback" in failed.value.remote_traceback
        mixed = pm.map(pymap.square, [1, "two", 3], timeout=60, return_exceptions=True)
        assert mixed[0] == 1 and mixed[2] == 9 and isinstance(mixed[1], TaskFailed)

        for agent_id in AGENTS:
            round_trip = pm.ping(agent_id)
            assert 0 < round_trip < 5
        with pytest.raises(RuntimeError, match="ping refused"):
            pm.ping(AGENTS[0], executor_id="py-9")  # no such executor there: the master refuses the MESSAGE

        with pytest.raises(TaskFailed) as died:  # the call ends its executor process
            pm.map(os._exit, [7], timeout=60)
        assert died.value.state is TaskState.FAILED and died.value.reason == "REASON_EXECUTOR_TERMINATED"
        after = pm.map(pymap.where, range(20), timeout=60)  # a new executor replaces it
        assert [r[0] for r in after] == [i * i for i in range(20)]
        processes.setdefault("after", set()).update(pid for _, pid, _, _ in after)
    executor_pids = set().union(*processes.values())
    wait_for(lambda: not any(alive(pid) for pid in executor_pids), 30, "the teardown to stop the executors")


def test_pmap_with_two_executors_per_agent_then_tears_its_framework_down(
        broker_url: str, procs: ProcessGroup, work_root: Path) -> None:
    start_cluster(procs, broker_url, work_root)
    results = pymap.pmap(pymap.where, range(100), broker_url, executors_per_agent=2, batch=10, timeout=120)
    assert [r[0] for r in results] == [i * i for i in range(100)]
    processes: dict[tuple[str, str], set[int]] = {}
    for _, pid, agent_id, executor_id in results:
        processes.setdefault((agent_id, executor_id), set()).add(pid)
    assert {executor_id for _, executor_id in processes} == {"py-0", "py-1"}  # round robin on each agent
    assert all(len(pids) == 1 for pids in processes.values()), processes
    pids = set().union(*processes.values())
    assert len(pids) == len(processes)
    wait_for(lambda: not any(alive(pid) for pid in pids), 30, "the executors to stop after pmap")


def test_calls_running_while_the_agent_restarts_finish_in_the_same_executor(
        broker_url: str, procs: ProcessGroup, work_root: Path) -> None:
    """The agent is SIGKILLed while its executor runs calls; the executor keeps them running, re-subscribes
    with the new agent process and their results still arrive."""
    master = procs.bmesos("master", "master", "--broker", broker_url, "--allocation-interval", "0.05")
    master.wait_output(r"master \S+ serving")
    args = ["agent", "--broker", broker_url, "--id", "pymap-r", "--resources", "cpus:4;mem:4096",
            "--work-dir", str(work_root / f"pymap-r-{broker_url.rsplit('/', 1)[-1]}")]
    first = procs.bmesos("pymap-r", *args)
    first.wait_output(r"agent pymap-r registered", timeout=60)
    with PyMap(broker_url, name="pymap-restart") as pm:
        (pid,) = set(pm.map(pymap.nap, [0.0], timeout=60))
        results: list[object] = []
        mapping = threading.Thread(target=lambda: results.extend(pm.map(pymap.nap, [3.0] * 4, timeout=60)))
        mapping.start()
        wait_for(lambda: pm.running == 4, 30, "the four calls to run")
        first.kill()
        assert alive(pid)
        second = procs.bmesos("pymap-r-again", *args)
        second.wait_output(r"executor=py-0 framework=\S+ subscribed \(pid \d+\) again", timeout=30)
        mapping.join(60)
        assert results == [pid] * 4


def test_the_demo_command_maps_and_pings(broker_url: str, procs: ProcessGroup, work_root: Path) -> None:
    start_cluster(procs, broker_url, work_root)
    demo = procs.start("pymap-demo", [sys.executable, "-m", pymap.MODULE, "--broker", broker_url, "--items", "200",
                                      "--batch", "20"])
    demo.wait_output(r"^done (ok|FAILED)$", timeout=120)
    assert demo.wait(30) == 0
    out = demo.output()
    assert re.search(r"^map 200 items in \S+s", out, re.MULTILINE)
    lines = re.findall(r"^agent (\S+) executor py-0 pid (\d+) calls (\d+)$", out, re.MULTILINE)
    assert sum(int(calls) for _, _, calls in lines) == 200
    assert len({agent for agent, _, _ in lines}) == len(lines)  # one executor process per agent
    for agent, _, _ in lines:
        assert re.search(rf"^ping {agent} \S+ ms$", out, re.MULTILINE)
    assert "done ok" in out
