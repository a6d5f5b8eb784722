"""Every command explains itself, and a user's mistake costs one clear line, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from broker_mesos.cli.main import COMMANDS
from broker_mesos.testing.rabbit import free_port


def bmesos(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "broker_mesos.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_top_level_help_lists_every_command() -> None:
    result = bmesos("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command: str) -> None:
    result = bmesos(command, "--help")
    assert result.returncode == 0, result.stderr
    assert f"Usage: python -m broker_mesos.cli.main {command}" in result.stdout or "Usage:" in result.stdout
    assert "--broker" in result.stdout
    assert len(result.stdout.splitlines()) > 5  # says what the command does, not just its usage line


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_wrong_flag_is_one_line(command: str) -> None:
    result = bmesos(command, "--no-such-flag")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: No such option '--no-such-flag'. (see 'python -m broker_mesos.cli.main {command} --help')"]


@pytest.mark.parametrize("args", [["master"], ["watch"], ["run", "--", "true"]])
def test_an_unreachable_broker_is_one_line(args: list[str]) -> None:
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    result = bmesos(*args[:1], "--broker", url, "--connect-timeout", "0.5", *args[1:])
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: cannot connect to the broker at amqp://127.0.0.1:{url.split(':')[3].split('/')[0]}/: "
                      "connection refused"]
    assert "Traceback" not in result.stderr + result.stdout
