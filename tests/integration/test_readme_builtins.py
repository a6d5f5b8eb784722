"""README's "Services and scheduled jobs" commands, run as written (plus --broker) on the quick start's
cluster: a master and the two agents of the README, then every line of that section in order."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from broker_mesos.cli.control import ControlClient
from broker_mesos.testing.processes import ProcessGroup
from broker_mesos.testing.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]


def readme_lines(section: str) -> list[str]:
    """The indented command lines of README section ``section`` (its code block)."""
    text = (ROOT / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in body.splitlines() if line.startswith("    bmesos ")]


def quick_start_agents() -> list[list[str]]:
    return [shlex.split(line, comments=True) for line in readme_lines("Quick start by hand")
            if line.startswith("bmesos agent")]


def test_the_readme_services_and_jobs_commands_work_as_written(
        broker_url: str, procs: ProcessGroup, work_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the README's paths (examples/...) are relative to the checkout
    master = procs.bmesos("master", "master", "--broker", broker_url, "--allocation-interval", "0.1")
    master.wait_output(r"master \S+ serving")
    vhost = broker_url.rsplit("/", 1)[-1]
    agents = quick_start_agents()
    assert len(agents) == 2
    for i, argv in enumerate(agents):
        args = [a for a in argv[1:] if a != "&"]
        if "--id" not in args:
            args += ["--id", "first"]  # README: the hostname; unique per test here
        agent = procs.bmesos(f"agent{i}", *args, "--broker", broker_url, "--work-dir",
                             str(work_root / f"readme-{vhost}-{i}"))
        agent.wait_output(r"agent \S+ registered", timeout=60)
    services = ControlClient(broker_url, "services", timeout=15)
    jobs = ControlClient(broker_url, "jobs", timeout=15)

    lines = readme_lines("Services and scheduled jobs")
    assert len(lines) >= 8, lines
    for n, line in enumerate(lines):
        argv = shlex.split(line, comments=True)
        background = argv[-1] == "&"
        args = [*(argv[1:-1] if background else argv[1:]), "--broker", broker_url]
        proc = procs.bmesos(f"readme-{n}-{argv[1]}-{argv[2]}", *args)
        if background:
            expected = re.search(r'logs "(.+)"', line)
            assert expected, line
            proc.wait_output(re.escape(expected[1]), timeout=60)
            continue
        assert proc.wait(60) == 0, proc.output()
        out = proc.output()
        if argv[1:3] == ["service", "deploy"]:
            wait_for(lambda: services.call("status", name="web")["healthy"] == 2, 90, "web healthy twice")
        elif argv[1:3] == ["service", "status"]:
            assert re.search(r"^name: web$", out, re.MULTILINE), out
        elif argv[1:3] == ["service", "list"]:
            assert re.search(r"^web\s+\d+\s+2\s+2\s+2\s", out, re.MULTILINE), out
        elif argv[1:3] == ["job", "run"]:
            wait_for(lambda: any(r["trigger"] == "manual" and r["state"] == "SUCCEEDED"
                                 for r in jobs.call("history", name="hello")["items"]), 60, "the manual run done")
        elif argv[1:3] == ["job", "history"]:
            assert re.search(r"hello-manual-\S+\s+manual\s+SUCCEEDED", out), out
        elif argv[1:3] == ["service", "stop"]:
            wait_for(lambda: services.call("list")["items"] == [], 60, "web gone")
