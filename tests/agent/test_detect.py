"""Resource detection, agent ids and option parsing (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

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
    assert res.scalar("cpus") == psutil.cpu_count(logical=True)
    assert res.scalar("mem") == psutil.virtual_memory().total // MB
    assert res.scalar("disk") == psutil.disk_usage(str(tmp_path)).total // MB
    assert res.ranges["ports"] == (DEFAULT_PORTS,)
    assert res.scalar("cpus") >= 1 and res.scalar("mem") > 0 and res.scalar("disk") > 0


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
