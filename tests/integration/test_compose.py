"""docker-compose.yml is valid and its commands work: the cluster it describes runs as plain processes.

No Docker engine is needed: Debian's ``docker-compose config`` validates the file, and the ``master``,
``agent`` and ``demo`` services' commands are run as child processes against the test broker (the
broker URL the compose file points at the ``rabbitmq`` service is replaced by the test's vhost). The
framework sketched in docs/protocol.md (plain pika, no broker_mesos imports) is run against that cluster
too, so the normative document is checked against the real master and agent.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker_mesos.testing.processes import Proc, ProcessGroup

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
BROKER_IN_COMPOSE = "amqp://guest:guest@rabbitmq:5672/%2F"


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is not installed: scripts/test installs it (apt-get install docker-compose)"
    return subprocess.run([exe, "-f", str(COMPOSE_FILE), "--profile", "demo", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    """The services as ``docker-compose config`` resolves them (anchors merged, demo profile on)."""
    result = compose("config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def argv(service: dict[str, Any]) -> list[str]:
    """The service's command as argv, with ``bmesos`` run as this interpreter's module (the tested code)."""
    command = service["command"]
    args = shlex.split(command) if isinstance(command, str) else list(command)
    assert args[0] == "bmesos", f"expected a bmesos command, got {args}"
    return [sys.executable, "-m", "broker_mesos.cli.main", *args[1:]]


def start(procs: ProcessGroup, name: str, service: dict[str, Any], broker_url: str,
          replace: dict[str, str] | None = None) -> Proc:
    args = [(replace or {}).get(a, a) for a in argv(service)]
    return procs.start(name, args, env={"BMESOS_BROKER": broker_url})


def test_compose_file_is_valid() -> None:
    result = compose("config", "-q")
    assert result.returncode == 0, f"docker-compose config -q failed:\n{result.stderr}"


def test_compose_services_are_shaped_for_scaling(services: dict[str, Any]) -> None:
    rabbit = services["rabbitmq"]
    assert rabbit["image"] == "rabbitmq:3-management"
    assert rabbit["healthcheck"]["test"][-3:] == ["rabbitmq-diagnostics", "-q", "ping"]
    assert {p["target"] for p in rabbit["ports"]} == {5672, 15672}
    for name in ("master", "agent", "demo"):
        svc = services[name]
        assert "build" in svc, name
        assert svc["environment"]["BMESOS_BROKER"] == BROKER_IN_COMPOSE, name
        assert svc["depends_on"]["rabbitmq"]["condition"] == "service_healthy", name
    assert services["master"]["restart"] == services["agent"]["restart"] == "unless-stopped"
    agent = services["agent"]
    assert "container_name" not in agent and "ports" not in agent and "hostname" not in agent, (
        "agent replicas must differ: no fixed container name, hostname or host ports")
    assert "--id" not in argv(agent), "each replica must derive its agent id from its hostname"
    assert services["demo"]["profiles"] == ["demo"]
    assert argv(services["demo"])[3:] == ["run", "--count", "10", "--", "echo", "hello"]


def test_compose_commands_form_a_working_cluster(services: dict[str, Any], broker_url: str,
                                                 procs: ProcessGroup, tmp_path: Path) -> None:
    master = start(procs, "master", services["master"], broker_url)
    master.wait_output(r"master \S+ serving", timeout=30)
    work_dir = tmp_path / "agent-work"
    agent = start(procs, "agent", services["agent"], broker_url, {"/var/lib/bmesos": str(work_dir)})
    registered = agent.wait_output(r"agent (\S+) registered", timeout=30)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,128}", registered[1]), "the derived agent id is not an identifier"

    # The master knows the agent once a framework gets offers for it: the sketch in the protocol
    # document (plain pika) runs 3 tasks there, which also holds the document to the real cluster.
    sketch = re.search(r"```python\n(.*?)```", (ROOT / "docs" / "protocol.md").read_text(), re.DOTALL)
    assert sketch, "docs/protocol.md lost its framework sketch"
    script = tmp_path / "hello_framework.py"
    script.write_text(sketch[1])
    hello = procs.start("hello-framework", [sys.executable, str(script), "3"], env={"BMESOS_BROKER": broker_url})
    assert hello.wait(60) == 0, hello.output()
    finished = re.findall(r"^hello-\w+-\d+ TASK_FINISHED .*$", hello.output(), re.MULTILINE)
    assert len(finished) == 3, hello.output()
    assert list(work_dir.glob("frameworks/hello-*/tasks/*")), "the agent ran no task in its --work-dir"

    demo = start(procs, "demo", services["demo"], broker_url)
    assert demo.wait(60) == 0, demo.output()
    assert "10 finished" in demo.output(), demo.output()
