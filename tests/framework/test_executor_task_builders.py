"""The scheduler SDK's builders for tasks run by a framework executor (``task(executor=...)``,
``executor_info``) and its MESSAGE call, without a broker."""

from __future__ import annotations

from typing import Any

import pytest

from broker_mesos.core import codec, protocol
from broker_mesos.core.resources import Resources
from broker_mesos.framework import Scheduler, executor_info, task
from broker_mesos.framework.calls import SchedulerCalls


class Recorder(SchedulerCalls):
    framework_id = "fw"

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def _call(self, body: Any) -> str:
        self.calls.append(body)
        return "id"


def test_executor_info_is_built_like_a_task_and_survives_the_codec() -> None:
    info = executor_info("ex", ["python3", "-m", "my_executor"], cpus=0.25, mem=48, env={"K": "v"})
    assert info == protocol.ExecutorInfo("ex", protocol.CommandInfo("python3", False, ["python3", "-m", "my_executor"],
                                                                    {"K": "v"}), Resources.of(cpus=0.25, mem=48), "ex")
    assert executor_info("ex", "run.sh", resources="cpus:1;mem:8").resources == Resources.of(cpus=1, mem=8)
    with pytest.raises(ValueError, match="not an identifier"):
        executor_info("ex.1", "run.sh")
    built = task("t1", "a1", "", cpus=0.5, mem=16, executor=info, data=b"\x00payload")
    assert built.command == protocol.CommandInfo() and built.executor == info and built.data == b"\x00payload"
    decoded = codec.decode(codec.encode(protocol.RunTasks("fw", [built]), 1.0)).body
    assert decoded.tasks == [built]


def test_task_data_and_framework_messages_are_bounded() -> None:
    info = executor_info("ex", "run.sh")
    with pytest.raises(ValueError, match="more than"):
        task("t1", "a1", "", executor=info, data=b"x" * (codec.MAX_DATA_BYTES + 1))
    calls = Recorder()
    calls.send_framework_message("a1", "ex", b"hi")
    assert calls.calls == [protocol.Message("fw", "a1", "ex", b"hi")]
    with pytest.raises(ValueError, match="at most"):
        calls.send_framework_message("a1", "ex", b"x" * (codec.MAX_DATA_BYTES + 1))
    assert len(calls.calls) == 1


def test_a_task_without_executor_still_needs_a_command() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        task("t1", "a1", [])
    assert Scheduler().framework_message(None, "a1", "ex", b"") is None  # type: ignore[arg-type,func-returns-value]
