"""The agent's pure decisions about framework executors (``core.agent_executors``), its executor checkpoint,
and the resizing of an executor's container over a fake cgroup tree (no processes, no root, no broker)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from broker_mesos.agent import checkpoint
from broker_mesos.agent.executor_runs import executor_environment
from broker_mesos.agent.isolation.containers import Containers
from broker_mesos.agent.isolation.limits import Policy
from broker_mesos.agent.isolation.v1 import CgroupsV1
from broker_mesos.agent.isolation.v2 import CgroupsV2
from broker_mesos.core.agent_executors import (
    REASON_EXECUTOR_REGISTRATION_TIMEOUT,
    REASON_EXECUTOR_REREGISTRATION_TIMEOUT,
    ExecutorEnd,
    Verdict,
    classify_update,
    container_resources,
    executor_end_outcome,
    executor_id_of,
    executor_key,
    lost_tasks,
    mismatch,
    unknown_after_restart,
)
from broker_mesos.core.agent_state import REASON_EXECUTOR_TERMINATED
from broker_mesos.core.protocol import CommandInfo, ExecutorInfo, TaskState
from broker_mesos.core.resources import Resources

INFO = ExecutorInfo("e1", CommandInfo("run-executor", environment={"A": "1"}), Resources.of(cpus=0.5, mem=64))


def test_an_executor_key_never_meets_a_task_key() -> None:
    key = executor_key("fw", "e1")
    assert key == ("fw", "executor.e1") and executor_id_of(key[1]) == "e1"
    assert executor_id_of("executor-e1") is None and executor_id_of("e1") is None


@pytest.mark.parametrize(("end", "returncode", "state", "reason", "words"), [
    (ExecutorEnd.EXITED, -9, TaskState.FAILED, REASON_EXECUTOR_TERMINATED, "terminated: killed by signal SIGKILL"),
    (ExecutorEnd.EXITED, 3, TaskState.FAILED, REASON_EXECUTOR_TERMINATED, "terminated: exited with 3"),
    (ExecutorEnd.EXITED, None, TaskState.FAILED, REASON_EXECUTOR_TERMINATED, "exit status was not recorded"),
    (ExecutorEnd.SHUTDOWN, 0, TaskState.KILLED, REASON_EXECUTOR_TERMINATED, "was shut down (exited with 0)"),
    (ExecutorEnd.REGISTRATION_TIMEOUT, -9, TaskState.FAILED, REASON_EXECUTOR_REGISTRATION_TIMEOUT,
     "did not subscribe in time"),
    (ExecutorEnd.REREGISTRATION_TIMEOUT, -9, TaskState.FAILED, REASON_EXECUTOR_REREGISTRATION_TIMEOUT,
     "did not subscribe again after the agent restarted"),
])
def test_how_the_tasks_of_an_ended_executor_end(end: ExecutorEnd, returncode: int | None, state: TaskState,
                                                reason: str, words: str) -> None:
    outcome = executor_end_outcome(end, returncode, "e1")
    assert (outcome.state, outcome.reason) == (state, reason)
    assert words in outcome.message and "e1" in outcome.message


def test_tasks_a_resubscribing_executor_does_not_list_are_lost() -> None:
    assert lost_tasks(["a", "b", "c"], ["c", "a", "zzz"]) == ["b"]
    assert lost_tasks(["a"], []) == ["a"]
    outcome = unknown_after_restart("e1")
    assert outcome.state is TaskState.FAILED and outcome.reason == REASON_EXECUTOR_TERMINATED
    assert outcome.message == "unknown to its executor e1 after the agent restarted"


def test_every_task_of_one_executor_carries_the_same_info() -> None:
    assert mismatch(INFO, INFO) is None
    other = ExecutorInfo("e1", INFO.command, Resources.of(cpus=1, mem=64), name="x")
    why = mismatch(INFO, other)
    assert why is not None and "resources, name" in why and "e1" in why


def test_an_executor_container_holds_its_own_and_its_live_tasks_resources() -> None:
    tasks = [Resources.of(cpus=0.1, mem=32), Resources.of(cpus=0.2, mem=16)]
    total = container_resources(INFO.resources, tasks)
    assert total.scalar("mem") == 112 and total.scalar("cpus") == pytest.approx(0.8)
    assert container_resources(INFO.resources, []) == INFO.resources


@pytest.mark.parametrize(("facts", "verdict", "reason"), [
    ({"duplicate": True, "live": False, "ended": True, "resent": False}, Verdict.ACK, ""),
    ({"duplicate": False, "live": True, "ended": False, "resent": False}, Verdict.PUBLISH, ""),
    ({"duplicate": False, "live": True, "ended": False, "resent": False, "task_executor": "e2"}, Verdict.REFUSE,
     "run by executor e2, not by executor e1"),
    ({"duplicate": False, "live": True, "ended": False, "resent": False, "task_executor": None}, Verdict.REFUSE,
     "run by the command executor"),
    ({"duplicate": False, "live": False, "ended": True, "resent": False}, Verdict.REFUSE, "already ended"),
    ({"duplicate": False, "live": False, "ended": True, "resent": True}, Verdict.ACK, ""),
    ({"duplicate": False, "live": False, "ended": False, "resent": True}, Verdict.REFUSE, "unknown task"),
])
def test_what_becomes_of_an_update_from_an_executor(facts: dict[str, object], verdict: Verdict, reason: str) -> None:
    decision = classify_update(executor_id="e1", **{"task_executor": "e1", **facts})  # type: ignore[arg-type]
    assert decision.verdict is verdict and reason in decision.reason


def test_the_agent_s_variables_win_over_the_executor_s_own() -> None:
    info = ExecutorInfo("e1", CommandInfo("x", environment={"BMESOS_EXECUTOR_TOKEN": "forged", "MINE": "1"}))
    env = executor_environment(info, "fw", "a1", Path("/w/run/executor.sock"), "t" * 32)
    assert env["BMESOS_EXECUTOR_TOKEN"] == "t" * 32 and env["MINE"] == "1"
    assert env["BMESOS_AGENT_ENDPOINT"] == "/w/run/executor.sock" and env["BMESOS_EXECUTOR_ID"] == "e1"
    assert env["BMESOS_RECOVERY_TIMEOUT"] == "60"


def test_executor_checkpoint_round_trip(tmp_path: Path) -> None:
    meta = checkpoint.record_executor(tmp_path, "fw", INFO, "ab" * 16, "nobody", 65534)
    assert meta == checkpoint.task_meta_dir(tmp_path, *executor_key("fw", "e1"))
    assert oct((meta / checkpoint.EXECUTOR_FILE).stat().st_mode & 0o777) == "0o600"
    checkpoint.record_pid(meta, os.getpid(), checkpoint.process_start_time(os.getpid()))
    checkpoint.record_shutdown(meta)
    (found,) = checkpoint.scan_executors(tmp_path)
    assert (found.framework_id, found.info, found.token, found.user, found.uid) == ("fw", INFO, "ab" * 16, "nobody",
                                                                                    65534)
    assert found.pid == os.getpid() and found.shutdown and not found.done
    assert checkpoint.scan(tmp_path) == []  # never taken for a task
    checkpoint.record_done(meta)
    assert checkpoint.scan_executors(tmp_path)[0].done
    assert [(fw, t) for _at, fw, t in checkpoint.finished_tasks(tmp_path)] == [("fw", "executor.e1")]
    (meta / checkpoint.EXECUTOR_FILE).write_bytes(b"\x93garbage")
    assert checkpoint.scan_executors(tmp_path) == []  # unreadable: logged and skipped


def _v2(tmp_path: Path) -> Path:
    base = tmp_path / "unified" / "own"
    (base / "bmesos" / "agent.a1").mkdir(parents=True)
    (base / "cgroup.controllers").write_text("cpu memory pids\n")
    (base / "cgroup.procs").write_text("")
    return base


def test_v2_executor_container_follows_its_tasks(tmp_path: Path) -> None:
    isolator = CgroupsV2.prepare(_v2(tmp_path), "a1", Policy(cpu_limit=True))
    containers = Containers(isolator, "a1")
    key = executor_key("fw", "e1")
    meta = tmp_path / "meta"
    meta.mkdir()
    container = containers.create(key, container_resources(INFO.resources, [Resources.of(cpus=0.5, mem=32)]), meta)
    d = container.dir
    assert d.name == "task.executor.e1"
    assert (d / "memory.max").read_text().strip() == str(96 * 2**20)
    assert containers.resize(key, Resources.of(cpus=2, mem=256))
    assert (d / "memory.max").read_text().strip() == str(256 * 2**20)
    assert (d / "cpu.weight").read_text().strip() == "200"
    assert (d / "cpu.max").read_text().strip() == "200000 100000"
    assert not containers.resize(("fw", "nothing"), Resources.of(mem=1))


def test_v1_executor_container_follows_its_tasks_memory_and_swap_alike(tmp_path: Path) -> None:
    bases = {c: tmp_path / c / "own" for c in ("memory", "cpu")}
    agent = bases["memory"] / "bmesos" / "agent.a1"
    agent.mkdir(parents=True)
    bases["cpu"].mkdir(parents=True)
    (agent / "memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
    isolator = CgroupsV1.prepare(bases, "a1", Policy())
    container = isolator.create(executor_key("fw", "e1"), Resources.of(cpus=1, mem=64))
    memory = container.dirs["memory"]
    for mem in (128, 32):  # growing and shrinking (the kernel wants swap first, resp. last: both end equal)
        isolator.resize(container, Resources.of(cpus=2, mem=mem))
        for name in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
            assert (memory / name).read_text().strip() == str(mem * 2**20)
    assert (container.dirs["cpu"] / "cpu.shares").read_text().strip() == "2048"
