"""Resource detection, agent ids and option parsing (no broker needed)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner

import broker_mesos.cli.agent as agent_cli
from broker_mesos.agent import detect
from broker_mesos.agent.container_limits import (
    CgroupLimits,
    CpuQuota,
    MemoryLimit,
    advertised_cpus,
    affinity_cpus,
    read_cgroup_limits,
)
from broker_mesos.agent.detect import (
    DEFAULT_PORTS,
    MB,
    check_agent_id,
    default_agent_id,
    detect_resources,
    parse_resources,
)
from broker_mesos.cli.agent import agent
from broker_mesos.core.codec import ID_PATTERN
from broker_mesos.core.errors import ResourceError
from broker_mesos.core.resources import Resources


@pytest.mark.parametrize(("hostname", "expected"), [
    ("node1", "node1"),
    ("node1.example.com", "node1-example-com"),
    ("3f2a9c0b1d4e", "3f2a9c0b1d4e"),  # a docker container id stays as it is
    ("héllo wörld", "h-llo-w-rld"),
    ("", "agent"),
])
def test_default_agent_id_is_a_sanitised_hostname(hostname: str, expected: str) -> None:
    assert default_agent_id(hostname) == expected
    assert ID_PATTERN.match(default_agent_id(hostname))


def test_default_agent_id_is_cut_to_the_identifier_limit() -> None:
    assert default_agent_id("x" * 300) == "x" * 128


def test_default_agent_id_without_argument_uses_this_host() -> None:
    assert ID_PATTERN.match(default_agent_id())


def test_check_agent_id() -> None:
    assert check_agent_id("agent-1_b") == "agent-1_b"
    for bad in ("", "a b", "a.b", "x" * 129):
        with pytest.raises(ValueError, match="not a valid agent id"):
            check_agent_id(bad)


def test_detect_resources_reports_this_machine(tmp_path: Path) -> None:
    res = detect_resources(tmp_path)
    logical, host_mem = psutil.cpu_count(logical=True), psutil.virtual_memory().total // MB
    limits = read_cgroup_limits()  # this machine's own container limits, if any
    assert res.scalar("cpus") == advertised_cpus(logical, affinity_cpus(), limits.cpu)[0] <= logical
    if limits.cpu is None and affinity_cpus() in (None, logical):
        assert res.scalar("cpus") == logical
    if limits.memory is None or limits.memory.limit // MB >= host_mem:
        assert res.scalar("mem") == host_mem
    else:
        assert res.scalar("mem") == limits.memory.limit // MB
    assert res.scalar("disk") == psutil.disk_usage(str(tmp_path)).total // MB
    assert res.ranges["ports"] == (DEFAULT_PORTS,)
    assert res.scalar("cpus") >= 0.1 and res.scalar("mem") > 0 and res.scalar("disk") > 0


def test_detect_resources_advertises_and_logs_container_limits(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    # a fake root: cgroup v2, the agent's container limited to 1.5 cpus and 512 MB (as `cpus: "1.5"`,
    # `mem_limit: 512m` in compose)
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text("0::/\n")
    (tmp_path / "proc/self/mountinfo").write_text(
        "40 30 0:38 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n")
    (tmp_path / "sys/fs/cgroup").mkdir(parents=True)
    (tmp_path / "sys/fs/cgroup/cpu.max").write_text("50000 100000\n")
    (tmp_path / "sys/fs/cgroup/memory.max").write_text(f"{512 * MB}\n")
    caplog.set_level(logging.INFO, logger="broker_mesos.agent.detect")
    res = detect_resources(tmp_path, root=tmp_path)
    assert (res.scalar("cpus"), res.scalar("mem")) == (0.5, 512)
    assert res.scalar("disk") == psutil.disk_usage(str(tmp_path)).total // MB
    assert ("cpus:0.5 (cgroup cpu quota 50000/100000 in /sys/fs/cgroup), "
            f"mem:512 (cgroup memory limit {512 * MB} bytes in /sys/fs/cgroup), disk:") in caplog.text


class _Captured(Exception):
    pass


@pytest.fixture
def agent_config(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Run `bmesos agent` up to its Agent: record the config and stop (no broker, no connection)."""
    configs: list[Any] = []

    class FakeAgent:
        def __init__(self, _bus: object, config: object) -> None:
            configs.append(config)

        def run(self) -> None:
            raise _Captured

    monkeypatch.setattr(agent_cli, "Bus", lambda *a, **k: None)
    monkeypatch.setattr(agent_cli, "Agent", FakeAgent)
    monkeypatch.setattr(detect, "read_cgroup_limits", lambda root="/": CgroupLimits(
        CpuQuota(50000, 100000, "/sys/fs/cgroup/cpu/x"), MemoryLimit(300 * MB, "/sys/fs/cgroup/memory/x")))
    return configs


def test_cli_agent_advertises_and_logs_its_cgroup_limits(agent_config: list[Any], tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="broker_mesos.agent.detect")
    result = CliRunner().invoke(agent, ["--broker", "amqp://guest:guest@127.0.0.1:1/%2F", "--no-checkpoint",
                                        "--work-dir", str(tmp_path / "w")])
    assert isinstance(result.exception, _Captured), result.output
    resources = agent_config[0].resources
    assert (resources.scalar("cpus"), resources.scalar("mem")) == (0.5, 300)
    assert ("cpus:0.5 (cgroup cpu quota 50000/100000 in /sys/fs/cgroup/cpu/x), "
            f"mem:300 (cgroup memory limit {300 * MB} bytes in /sys/fs/cgroup/memory/x)") in caplog.text


def test_cli_resources_option_overrides_detection(agent_config: list[Any], tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="broker_mesos.agent.detect")
    result = CliRunner().invoke(agent, ["--broker", "amqp://guest:guest@127.0.0.1:1/%2F", "--no-checkpoint",
                                        "--work-dir", str(tmp_path / "w"), "--resources", "cpus:4;mem:4096"])
    assert isinstance(result.exception, _Captured), result.output
    assert agent_config[0].resources == Resources(scalars={"cpus": 4, "mem": 4096})
    assert "detected resources" not in caplog.text


def test_parse_resources() -> None:
    assert parse_resources("cpus:4;mem:4096;disk:10000;ports:[31000-32000]") == Resources(
        scalars={"cpus": 4, "mem": 4096, "disk": 10000}, ranges={"ports": ((31000, 32000),)})


@pytest.mark.parametrize("text", ["cpus:lots", "cpus", "", " ; ", "ports:[a-b]", "cpus:-1"])
def test_parse_resources_refuses_bad_text(text: str) -> None:
    with pytest.raises(ResourceError):
        parse_resources(text)


@pytest.mark.parametrize(("args", "complaint"), [
    (["--resources", "cpus:lots"], "Invalid value for '--resources'"),
    (["--resources", ""], "no resources"),
    (["--attributes", "rack"], "Invalid value for '--attributes'"),
    (["--id", "a/b"], "not a valid agent id"),
    (["--heartbeat-interval", "0"], "Invalid value for '--heartbeat-interval'"),
    (["--executor", "docker"], "Invalid value for '--executor'"),
])
def test_cli_refuses_bad_options_before_connecting(args: list[str], complaint: str) -> None:
    result = CliRunner().invoke(agent, ["--broker", "amqp://guest:guest@127.0.0.1:1/%2F", *args])
    assert result.exit_code == 2
    assert complaint in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_help_documents_the_noop_executor() -> None:
    result = CliRunner().invoke(agent, ["--help"])
    assert result.exit_code == 0
    assert "noop" in result.output and "benchmarks" in result.output
