"""docker-compose.yml is valid, secure by default, and its commands work: the cluster it describes runs
as plain processes.

No Docker engine is needed: Debian's ``docker-compose config`` validates the file, and the services'
commands, exactly as the file spells them, are run as child processes against a private RabbitMQ node
with the management plugin (``secure_rabbit``). What only Docker would provide is mapped: the
``rabbitmq`` host in the services' environment becomes the test node, the paths under ``/run/bmesos``
and ``/var/lib/bmesos`` become temporary directories, ``bmesos`` on the ``PATH`` runs this checkout's
code, each agent replica gets its own ``$HOSTNAME`` (which Docker sets to the container's hostname) and
each process its own ``--metrics-port`` (each container has its own ports; these processes share one host).

The framework sketched in docs/protocol.md (plain pika, no broker_mesos imports) is run too, against a
master in development mode: the sketch publishes without ``user_id`` and declares the shared topology,
which a secure cluster refuses.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker_mesos.bus import provision
from broker_mesos.testing.processes import Proc, ProcessGroup
from broker_mesos.testing.pytest_plugin import remove_principals
from broker_mesos.testing.rabbit import RabbitNode, free_port, rabbitmq_available

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ADMIN_URL_IN_COMPOSE = "http://guest:guest@rabbitmq:15672"
AMQP_BASE_IN_COMPOSE = "amqp://rabbitmq:5672"
VHOST = provision.DEFAULT_VHOST  # what `bmesos principals init` makes when given no --vhost
BMESOS_SERVICES = ("init", "master", "agent", "demo", "services", "jobs")


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


def command(service: dict[str, Any]) -> list[str]:
    """The service's command as the container runs it (``config`` prints a literal ``$`` as ``$$``)."""
    cmd = service["command"]
    args = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
    return [a.replace("$$", "$") for a in args]


def script(service: dict[str, Any]) -> str:
    """The shell script of a ``sh -ec SCRIPT`` command."""
    args = command(service)
    assert args[:2] == ["sh", "-ec"] and len(args) == 3, f"expected sh -ec SCRIPT, got {args}"
    return args[2]


def test_compose_file_is_valid() -> None:
    result = compose("config", "-q")
    assert result.returncode == 0, f"docker-compose config -q failed:\n{result.stderr}"


def test_compose_file_is_secure_by_default(services: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text()
    assert "BMESOS_INSECURE" not in text and "--insecure" not in text
    for name in BMESOS_SERVICES:
        env = services[name].get("environment") or {}
        assert not {"BMESOS_BROKER", "BMESOS_INSECURE"} & env.keys(), name
        assert "guest" not in " ".join(command(services[name])), name
    # each long-running process reads its own principal's URL file; only init and agents get the admin
    assert command(services["master"]) == ["bmesos", "master", "--broker-file", "/run/bmesos/secrets/master.url",
                                           "--metrics-port", "9110"]
    assert command(services["demo"]) == ["bmesos", "run", "--broker-file", "/run/bmesos/demo/framework.demo.url",
                                         "--count", "10", "--", "echo", "hello"]
    assert {n for n in services if "BMESOS_ADMIN_URL" in (services[n].get("environment") or {})} == {"init", "agent"}
    for name in ("init", "agent"):
        assert services[name]["environment"] == {"BMESOS_ADMIN_URL": ADMIN_URL_IN_COMPOSE,
                                                 "BMESOS_AMQP_URL_BASE": AMQP_BASE_IN_COMPOSE}, name
    agent = script(services["agent"])
    assert "unset BMESOS_ADMIN_URL\nexec bmesos agent " in agent, "the agent process must not keep the admin URL"
    # the URL files: written by init, read-only for their readers; the demo framework sees its own only
    assert services["init"]["volumes"] == ["bmesos-secrets:/run/bmesos/secrets:rw", "bmesos-demo:/run/bmesos/demo:rw",
                                           "bmesos-builtin:/run/bmesos/builtin:rw"]
    for name, fw in (("services", "service"), ("jobs", "job")):  # each as its framework principal, nothing more
        assert services[name]["volumes"] == ["bmesos-builtin:/run/bmesos/builtin:ro"]
        assert command(services[name]) == ["bmesos", fw, "scheduler", "--broker-file",
                                           f"/run/bmesos/builtin/framework.{name}.url"]
    assert services["master"]["volumes"] == ["bmesos-secrets:/run/bmesos/secrets:ro"]
    assert services["demo"]["volumes"] == ["bmesos-demo:/run/bmesos/demo:ro"]
    assert "volumes" not in services["agent"]
    # non-root but the agent (tasks run as other users); the image's user is bmesos
    assert re.search(r"^USER bmesos$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert {n: services[n].get("user") for n in BMESOS_SERVICES} == {
        "init": None, "master": None, "agent": "root", "demo": None, "services": None, "jobs": None}
    # the management API (the broker's administrator) is published on the host's loopback only
    ports = services["rabbitmq"]["ports"]
    assert [p for p in ports if isinstance(p, str) and ":15672" in p] == ["127.0.0.1:15672:15672/tcp"]


def test_compose_services_are_ordered_and_shaped_for_scaling(services: dict[str, Any]) -> None:
    rabbit = services["rabbitmq"]
    assert rabbit["image"] == "rabbitmq:3-management"
    # init talks to the management API at once: healthy must mean it listens (and AMQP too)
    assert rabbit["healthcheck"]["test"] == ["CMD-SHELL", "rabbitmq-diagnostics -q check_port_listener 5672 && "
                                             "rabbitmq-diagnostics -q check_port_listener 15672"]
    for name in BMESOS_SERVICES:
        assert "build" in services[name], name
    init = services["init"]
    assert init["depends_on"] == {"rabbitmq": {"condition": "service_healthy"}}
    assert init["restart"] == "no"
    for name in ("master", "agent", "demo", "services", "jobs"):
        assert services[name]["depends_on"]["init"] == {"condition": "service_completed_successfully"}, name
    assert services["master"]["restart"] == services["agent"]["restart"] == "unless-stopped"
    agent = services["agent"]
    assert "container_name" not in agent and "ports" not in agent and "hostname" not in agent, (
        "agent replicas must differ: no fixed container name, hostname or host ports")
    # each replica's id and principal both come from its hostname, the same string
    body = script(agent)
    assert 'bmesos principals add agent "$HOSTNAME" --rotate ' in body
    assert 'exec bmesos agent --id "$HOSTNAME" --broker-file "/run/bmesos/agent/agent.$HOSTNAME.url" ' in body
    # each replica is limited and advertises its own limits (not the host's), so scaling never over-commits
    assert (agent.get("cpus"), agent.get("mem_limit")) == (1.0, "1g"), "the agent service needs cpus and mem_limit"
    assert services["demo"]["profiles"] == ["demo"]


# -- the services' commands, run ----------------------------------------------------------------


class Stack:
    """Runs the compose services' commands as processes, with Docker's names mapped to this machine."""

    def __init__(self, services: dict[str, Any], node: RabbitNode, procs: ProcessGroup, tmp: Path,
                 work_root: Path) -> None:
        self.services, self.procs, self.work_root = services, procs, work_root
        self.run_dir = tmp / "run"
        for sub in ("secrets", "demo", "builtin"):  # the image's mount points: owned by the image's user, 0700
            (self.run_dir / sub).mkdir(parents=True, mode=0o700)
        bin_dir = tmp / "bin"  # `bmesos` is this checkout's code
        bin_dir.mkdir()
        wrapper = bin_dir / "bmesos"
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m broker_mesos.cli.main "$@"\n')
        wrapper.chmod(0o755)
        self.values = {ADMIN_URL_IN_COMPOSE: node.management_url(),
                       AMQP_BASE_IN_COMPOSE: f"amqp://127.0.0.1:{node.port}"}
        self.env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "BMESOS_INSECURE": "0"}

    def paths(self, replica: str) -> dict[str, str]:
        return {"/run/bmesos/": f"{self.run_dir}/", "/run/bmesos/agent": str(self.run_dir / f"agent-{replica}"),
                "/var/lib/bmesos": str(self.work_root / replica)}

    def start(self, name: str, replica: str = "", env: dict[str, str] | None = None) -> Proc:
        service = self.services[name]
        args = command(service)
        for compose_path, local in sorted(self.paths(replica).items(), key=lambda kv: -len(kv[0])):
            args = [a.replace(compose_path, local) for a in args]
        if args[0] == "bmesos":
            args = [shutil.which("bmesos", path=self.env["PATH"]) or "bmesos", *args[1:]]
        port = str(free_port())
        args = [re.sub(r"(--metrics-port )\d+", rf"\g<1>{port}", a) for a in args]
        args = [port if before == "--metrics-port" else a for before, a in zip(["", *args[:-1]], args, strict=True)]
        environment = {k: self.values.get(v, v) for k, v in (service.get("environment") or {}).items()}
        assert all("rabbitmq" not in v for v in environment.values()), environment
        return self.procs.start(f"{name}{replica and '-' + replica}", args,
                                env={**self.env, **environment, **(env or {})})


@pytest.fixture
def work_root() -> Iterator[Path]:
    """Agent work dirs below /tmp, which every user may pass through (unlike pytest's 0700 tmp_path):
    the agents run as root here as in their containers, and their tasks as nobody."""
    root = Path(tempfile.mkdtemp(prefix="bmesos-compose-"))
    os.chmod(root, 0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def stack(services: dict[str, Any], secure_rabbit: RabbitNode, procs: ProcessGroup, tmp_path: Path,
          work_root: Path) -> Iterator[Stack]:
    try:
        yield Stack(services, secure_rabbit, procs, tmp_path, work_root)
    finally:
        procs.stop_all()
        remove_principals(secure_rabbit, VHOST)


def url_files(directory: Path) -> dict[str, str]:
    files = {}
    for path in sorted(directory.glob("*.url")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        files[path.name] = path.read_text()
    return files


@pytest.mark.skipif(not rabbitmq_available(), reason="rabbitmq-server is not installed")
def test_compose_commands_form_a_secure_working_cluster(stack: Stack, secure_rabbit: RabbitNode,
                                                        work_root: Path) -> None:
    # init: the vhost, the topology and the principals, their URLs in the volumes
    init = stack.start("init")
    assert init.wait(60) == 0, init.output()
    secrets, demo_dir = stack.run_dir / "secrets", stack.run_dir / "demo"
    first = url_files(secrets), url_files(demo_dir)
    assert list(first[0]) == ["master.url", "monitor.watch.url", "operator.admin.url"]
    assert list(first[1]) == ["framework.demo.url"]
    assert list(url_files(stack.run_dir / "builtin")) == ["framework.jobs.url", "framework.services.url"]
    assert all("guest" not in url and f"@127.0.0.1:{secure_rabbit.port}/{VHOST}" in url
               for files in first for url in files.values())
    # every `docker compose up` runs init again: it succeeds and keeps every password; a principal
    # whose URL file is gone (a removed volume) gets a new one
    (demo_dir / "framework.demo.url").unlink()
    again = stack.start("init", "again")
    assert again.wait(60) == 0, again.output()
    assert url_files(secrets) == first[0]
    assert url_files(demo_dir).keys() == first[1].keys() and url_files(demo_dir) != first[1]

    master = stack.start("master")
    master.wait_output(r"master \S+ serving", timeout=30)
    assert not re.search(r"insecure|development mode", master.output(), re.IGNORECASE), master.output()

    # two replicas: each provisions agent.<its hostname> and runs as it
    agents = {}
    for hostname in ("c0ffee000001", "c0ffee000002"):
        agent = stack.start("agent", hostname, env={"HOSTNAME": hostname})
        assert agent.wait_output(r"agent (\S+) registered", timeout=30)[1] == hostname
        assert list(url_files(stack.run_dir / f"agent-{hostname}")) == [f"agent.{hostname}.url"]
        environ = Path(f"/proc/{agent.popen.pid}/environ").read_bytes().split(b"\0")  # sh exec'd the agent
        assert not [v for v in environ if v.startswith(b"BMESOS_ADMIN_URL=")], "the agent kept the admin URL"
        agents[hostname] = agent

    demo = stack.start("demo")
    assert demo.wait(60) == 0, demo.output()
    assert "10 finished" in demo.output(), demo.output()
    sandboxes = list(work_root.glob("*/frameworks/*/tasks/*"))
    assert len(sandboxes) == 10, sandboxes
    assert {p.parents[1].name.split("-")[0] for p in sandboxes} == {"demo"}, "the demo ran as framework.demo"

    # the operator's URL file works as the compose file's header says
    role = stack.procs.start("admin", [sys.executable, "-m", "broker_mesos.cli.main", "admin", "role", "show",
                                       "--broker-file", str(secrets / "operator.admin.url")], env=stack.env)
    assert role.wait(30) == 0, role.output()

    # the built-in schedulers, each as its framework principal, answer the operator
    stack.start("services").wait_output(r"service scheduler services active", timeout=60)
    stack.start("jobs").wait_output(r"job scheduler jobs active", timeout=60)
    listed_services = stack.procs.start("service-list", [sys.executable, "-m", "broker_mesos.cli.main", "service",
                                                         "list", "--broker-file", str(secrets / "operator.admin.url")],
                                        env=stack.env)
    assert listed_services.wait(30) == 0 and "NAME" in listed_services.output(), listed_services.output()
    jobs = stack.procs.start("jobs-list", [sys.executable, "-m", "broker_mesos.cli.main", "job", "list",
                                           "--broker-file", str(secrets / "operator.admin.url")], env=stack.env)
    assert jobs.wait(30) == 0, jobs.output()

    # the broker knows exactly these users in the vhost, each as provisioned; guest is not among them
    listed = subprocess.run([sys.executable, "-m", "broker_mesos.cli.main", "principals", "list"],
                            env={**os.environ, "BMESOS_ADMIN_URL": secure_rabbit.management_url()},
                            capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    users = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert sorted(users) == ["agent.c0ffee000001", "agent.c0ffee000002", "framework.demo", "framework.jobs",
                             "framework.services", "master", "monitor.watch", "operator.admin"]
    assert all("perms=as-provisioned" in line for line in users.values()), listed.stdout
    for agent in agents.values():
        assert agent.alive(), agent.output()


@pytest.mark.skipif(not rabbitmq_available(), reason="rabbitmq-server is not installed")
def test_protocol_sketch_runs_on_a_development_cluster(broker_url: str, procs: ProcessGroup,
                                                       work_root: Path, tmp_path: Path) -> None:
    """The sketch in docs/protocol.md (plain pika) against the real master and agent, in development mode."""
    env = {"BMESOS_BROKER": broker_url, "BMESOS_INSECURE": "1"}
    master = procs.bmesos("master", "master", env=env)
    master.wait_output(r"master \S+ serving", timeout=30)
    agent = procs.bmesos("agent", "agent", "--id", "sketch-agent", "--work-dir", str(work_root / "agent"), env=env)
    agent.wait_output(r"agent (\S+) registered", timeout=30)

    sketch = re.search(r"```python\n(.*?)```", (ROOT / "docs" / "protocol.md").read_text(), re.DOTALL)
    assert sketch, "docs/protocol.md lost its framework sketch"
    path = tmp_path / "hello_framework.py"
    path.write_text(sketch[1])
    hello = procs.start("hello-framework", [sys.executable, str(path), "3"], env=env)
    assert hello.wait(60) == 0, hello.output()
    finished = re.findall(r"^hello-\w+-\d+ TASK_FINISHED .*$", hello.output(), re.MULTILINE)
    assert len(finished) == 3, hello.output()
    assert list((work_root / "agent").glob("frameworks/hello-*/tasks/*")), "the agent ran no task in its --work-dir"
