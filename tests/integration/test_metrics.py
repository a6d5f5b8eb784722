"""The Prometheus endpoints of real master and agent processes (``--metrics-port``) and the compose
file's ``monitoring`` profile (Prometheus, Grafana and the dashboard scraping them).

The endpoints are read with prometheus-client's own parser; their values must move when ``bmesos run``
runs tasks, and their label values must never name a task, an agent or a framework.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pika
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from broker_mesos.bus import topology
from broker_mesos.core import codec, protocol
from broker_mesos.testing.processes import Proc, ProcessGroup
from broker_mesos.testing.rabbit import free_port
from broker_mesos.testing.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
MONITORING = ROOT / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "broker-mesos.json"
MB = 2.0**20
# every label name the two endpoints may use: ours, then prometheus-client's process / platform / GC collectors
LABEL_NAMES = {"type", "reason", "state", "kind", "role", "resource", "le", "version", "python", "master_id",
               "agent_id", "hostname", "implementation", "major", "minor", "patchlevel", "generation"}
# a busy task of about 3 s of CPU (the shell's own loop: nothing to install)
BUSY = "end=$(( $(date +%s) + 3 )); while [ $(date +%s) -lt $end ]; do :; done"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def wait_scrape(port: int, what: str, condition: Any, proc: Proc, timeout: float = 30.0) -> Samples:
    """Scrape ``port`` until ``condition(samples)`` holds (the process must stay alive)."""
    def attempt() -> Samples | None:
        try:
            samples = scrape(port)
        except OSError:
            return None
        return samples if condition(samples) else None

    return wait_for(attempt, timeout, what, interval=0.2,
                    abort=lambda: None if proc.alive() else f"{proc.name} exited:\n{proc.output()}")


def metrics_args(port: int) -> list[str]:
    return ["--metrics-port", str(port), "--metrics-host", "127.0.0.1"]


def test_master_and_agent_metrics_parse_and_move_after_bmesos_run(broker_url: str, procs: ProcessGroup,
                                                                  work_root: Path) -> None:
    master_port, agent_port, standby_port = free_port(), free_port(), free_port()
    master = procs.bmesos("master", "master", "--broker", broker_url, "--allocation-interval", "0.1",
                          *metrics_args(master_port))
    master.wait_output(r"master \S+ serving")
    assert re.search(rf"metrics on http://127\.0\.0\.1:{master_port}/metrics", master.output())
    agent = procs.bmesos("agent", "agent", "--broker", broker_url, "--id", "mx1", "--work-dir",
                         str(work_root / "mx1"), "--resources", "cpus:2;mem:1024;disk:512;ports:[31000-31099]",
                         "--heartbeat-interval", "0.5", *metrics_args(agent_port))
    agent.wait_output(r"agent mx1 registered")

    before = wait_scrape(master_port, "the agent in the master's metrics",
                         lambda s: value(s, "bmesos_master_agents", state="active") == 1, master)
    assert value(before, "bmesos_master_elected") == 1 and value(before, "bmesos_master_elections_total") == 1
    assert value(before, "bmesos_master_cpus", kind="total") == 2
    assert value(before, "bmesos_master_memory_bytes", kind="total") == 1024 * MB
    assert value(before, "bmesos_master_disk_bytes", kind="total") == 512 * MB
    assert value(before, "bmesos_master_resource", resource="ports", kind="total") == 100
    assert value(before, "bmesos_master_tasks", state="TASK_RUNNING") == 0
    assert value(before, "bmesos_master_task_terminal_transitions_total", state="TASK_FINISHED") == 0
    agent_before = scrape(agent_port)
    assert value(agent_before, "bmesos_agent_tasks", state="TASK_RUNNING") == 0
    assert value(agent_before, "bmesos_agent_cpus", kind="total") == 2
    assert value(agent_before, "bmesos_agent_cpus", kind="used") == 0
    assert value(agent_before, "bmesos_agent_connected") == 1
    assert value(agent_before, "bmesos_agent_status_journal_batches") == 0
    assert value(agent_before, "bmesos_agent_info", agent_id="mx1", hostname=socket.gethostname()) == 1

    busy = procs.bmesos("busy", "run", "--broker", broker_url, "--name", "busy", "--cpus", "1", "--mem", "64",
                        "--", "sh", "-c", BUSY)
    running = wait_scrape(agent_port, "the busy task using CPU and memory on the agent", lambda s: (
        value(s, "bmesos_agent_tasks", state="TASK_RUNNING") == 1
        and (value(s, "bmesos_agent_task_cpu_seconds_total") or 0) > 0.2
        and (value(s, "bmesos_agent_task_memory_bytes") or 0) > 0), agent)
    assert value(running, "bmesos_agent_cpus", kind="used") == 1
    assert value(running, "bmesos_agent_memory_bytes", kind="used") == 64 * MB
    during = scrape(master_port)
    assert value(during, "bmesos_master_tasks", state="TASK_RUNNING") == 1
    assert value(during, "bmesos_master_cpus", kind="used") == 1
    assert value(during, "bmesos_master_role_cpus", role="*", kind="used") == 1
    assert busy.wait(60) == 0, busy.output()

    job = procs.bmesos("job", "run", "--broker", broker_url, "--name", "job", "--count", "3", "--", "true")
    assert job.wait(60) == 0, job.output()
    refused = procs.bmesos("admin", "admin", "allocator", "set", "no-such-policy", "--broker", broker_url)
    assert refused.wait(30) != 0, refused.output()
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:  # garbage, and a SUBSCRIBE sent with another call's routing key
        channel = connection.channel()
        msgpack = pika.BasicProperties(content_type="application/msgpack")
        channel.basic_publish(topology.MASTER, "SUBSCRIBE", b"not a message", msgpack)
        channel.basic_publish(topology.MASTER, "KILL", codec.encode(protocol.Subscribe("fw-x", "x"), 0.0), msgpack)
    finally:
        connection.close()

    after = wait_scrape(master_port, "4 finished tasks and the rejected messages in the master's metrics", lambda s: (
        value(s, "bmesos_master_task_terminal_transitions_total", state="TASK_FINISHED") == 4
        and value(s, "bmesos_master_messages_rejected_total", type="SET_ALLOCATOR", reason="refused") == 1
        and value(s, "bmesos_master_messages_rejected_total", type="unknown", reason="invalid") == 1
        and value(s, "bmesos_master_messages_rejected_total", type="SUBSCRIBE", reason="invalid") == 1), master)
    assert value(after, "bmesos_master_tasks", state="TASK_RUNNING") == 0
    assert value(after, "bmesos_master_cpus", kind="used") == 0
    assert (value(after, "bmesos_master_messages_handled_total", type="SUBSCRIBE") or 0) >= 2
    assert (value(after, "bmesos_master_messages_handled_total", type="ACCEPT") or 0) >= 2
    assert (value(after, "bmesos_master_messages_handled_total", type="STATUS") or 0) >= 4
    assert (value(after, "bmesos_master_offers_made_total") or 0) >= 2
    rounds = value(after, "bmesos_master_allocation_rounds_total") or 0
    assert rounds >= 2
    assert value(after, "bmesos_master_allocation_round_duration_seconds_count") == rounds
    assert value(after, "bmesos_master_elections_total") == 1
    agent_after = scrape(agent_port)
    assert value(agent_after, "bmesos_agent_tasks", state="TASK_RUNNING") == 0
    assert (value(agent_after, "bmesos_agent_task_cpu_seconds_total") or 0) >= (
        value(running, "bmesos_agent_task_cpu_seconds_total") or 0)

    # bounded labels: none names a task, an agent or a framework
    for samples in (after, agent_after):
        assert {name for _, labels in samples for name, _ in labels} <= LABEL_NAMES
        values = {v for _, labels in samples for _, v in labels}
        assert not [v for v in values if v.startswith(("busy-", "job-"))], values
    assert not [v for _, labels in after for _, v in labels if v == "mx1"]

    # a standby exports its counters, but not the cluster (the active master does)
    standby = procs.bmesos("standby", "master", "--broker", broker_url, *metrics_args(standby_port))
    standby.wait_output(r"standing by")
    standby_samples = wait_scrape(standby_port, "the standby's endpoint",
                                  lambda s: value(s, "bmesos_master_elected") == 0, standby)
    assert not [name for name, _ in standby_samples if name.startswith(("bmesos_master_agents", "bmesos_master_cpus"))]

    # every bmesos metric the Grafana dashboard plots is one these endpoints export
    exported = {name for samples in (during, after, agent_after) for name, _ in samples}
    plotted = set(re.findall(r"\b(bmesos_[a-z_]+)", DASHBOARD.read_text()))
    assert plotted and plotted <= exported, plotted - exported


def test_a_metrics_port_in_use_is_one_clear_line(broker_url: str, procs: ProcessGroup, work_root: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        master = procs.bmesos("master", "master", "--broker", broker_url, *metrics_args(port))
        agent = procs.bmesos("agent", "agent", "--broker", broker_url, "--id", "mx2", "--work-dir",
                             str(work_root / "mx2"), *metrics_args(port))
        for proc in (master, agent):
            assert proc.wait(30) == 1, proc.output()
            assert f"cannot serve metrics on 127.0.0.1:{port}" in proc.output()
            assert "Traceback" not in proc.output()


def test_an_agent_without_checkpointing_has_no_journal_depth(broker_url: str, procs: ProcessGroup,
                                                             work_root: Path) -> None:
    port = free_port()
    agent = procs.bmesos("agent", "agent", "--broker", broker_url, "--id", "mx3", "--work-dir", str(work_root / "mx3"),
                         "--executor", "noop", "--resources", "cpus:8;mem:100", *metrics_args(port))
    samples = wait_scrape(port, "the noop agent connected", lambda s: value(s, "bmesos_agent_connected") == 1, agent)
    assert value(samples, "bmesos_agent_cpus", kind="total") == 8
    assert value(samples, "bmesos_agent_task_cpu_seconds_total") == 0
    assert not [name for name, _ in samples if name == "bmesos_agent_status_journal_batches"]


# -- the compose file's monitoring profile ----------------------------------------------------------


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is not installed: scripts/test installs it (apt-get install docker-compose)"
    return subprocess.run([exe, "-f", str(COMPOSE_FILE), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture(scope="module")
def monitoring() -> dict[str, Any]:
    """The services as ``docker-compose config`` resolves them with the monitoring profile on."""
    result = compose("--profile", "monitoring", "config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def binds(service: dict[str, Any]) -> dict[str, Path]:
    """A service's bind mounts, container path -> host path (as Debian's docker-compose prints them)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("/"):
            mounts[target] = Path(source)
    return mounts


def test_monitoring_profile_is_valid() -> None:
    result = compose("--profile", "monitoring", "config", "-q")
    assert result.returncode == 0, f"docker-compose --profile monitoring config -q failed:\n{result.stderr}"
    services = compose("config", "--services").stdout.split()
    assert {"prometheus", "grafana"} <= set(services)


def test_prometheus_scrapes_what_the_stack_serves(monitoring: dict[str, Any]) -> None:
    services = monitoring["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"], name
        assert all(str(p).startswith("127.0.0.1:") for p in services[name]["ports"]), "host loopback only"
    for name in ("master", "agent"):
        assert "ports" not in services[name], f"{name}'s metrics stay inside the compose network"
    master_args = shlex.split(services["master"]["command"]) if isinstance(services["master"]["command"], str) \
        else services["master"]["command"]
    agent_script = services["agent"]["command"][-1]
    agent_port = re.search(r"exec bmesos agent .* --metrics-port (\d+)", agent_script)
    assert agent_port, agent_script

    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"bmesos-master", "bmesos-agent", "rabbitmq"}
    for job, service, port in (("bmesos-master", "master", flag(master_args, "--metrics-port")),
                               ("bmesos-agent", "agent", agent_port[1])):
        (sd,) = jobs[job]["dns_sd_configs"]  # every replica of the service, by compose's DNS
        assert (sd["names"], sd["type"], str(sd["port"])) == ([service], "A", port), job
    assert jobs["rabbitmq"]["static_configs"] == [{"targets": ["rabbitmq:15692"]}]
    plugins = binds(services["rabbitmq"])["/etc/rabbitmq/enabled_plugins"].read_text()
    assert re.fullmatch(r"\[rabbitmq_management,rabbitmq_prometheus\]\.\n", plugins)
    assert binds(services["prometheus"])["/etc/prometheus/prometheus.yml"] == MONITORING / "prometheus.yml"


def test_grafana_is_provisioned_with_the_dashboard(monitoring: dict[str, Any]) -> None:
    grafana = monitoring["services"]["grafana"]
    mounted = binds(grafana)
    provisioning, dashboards = mounted["/etc/grafana/provisioning"], mounted["/etc/grafana/dashboards"]
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert (datasource["type"], datasource["url"]) == ("prometheus", "http://prometheus:9090")
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "broker-mesos.yml").read_text())["providers"]
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
    dashboard = json.loads((dashboards / "broker-mesos.json").read_text())
    assert dashboard["uid"] and dashboard["title"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 20
    for panel in panels:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    assert "rabbitmq_" in exprs and "bmesos_agent_" in exprs and "bmesos_master_" in exprs
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == "/etc/grafana/dashboards/broker-mesos.json"
