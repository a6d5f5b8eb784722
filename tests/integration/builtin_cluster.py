"""Helpers of the built-in frameworks' cluster tests: a master, agents with their own hostnames and
ports, a scheduler process, and a recorder of every status update of one framework."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pika

from broker_mesos.bus import topology
from broker_mesos.cli.control import ControlClient
from broker_mesos.core import codec, protocol
from broker_mesos.core.protocol import TaskState, TaskStatus
from broker_mesos.testing.processes import Proc, ProcessGroup
from broker_mesos.testing.wait import wait_for

AGENT_RESOURCES = "cpus:4;mem:4096;disk:1000;ports:[31000-31099]"


def start_cluster(procs: ProcessGroup, url: str, work_root: Path, agents: tuple[str, ...] = ("a", "b"),
                  resources: str = AGENT_RESOURCES) -> None:
    """A master and one agent per name, each reporting hostname ``host-<name>``."""
    master = procs.bmesos("master", "master", "--broker", url, "--allocation-interval", "0.05")
    master.wait_output(r"master \S+ serving")
    vhost = url.rsplit("/", 1)[-1]
    started = [procs.bmesos(f"agent-{name}", "agent", "--broker", url, "--id", f"agent-{name}", "--hostname",
                            f"host-{name}", "--resources", resources, "--kill-grace", "1",
                            "--work-dir", str(work_root / f"agent-{name}-{vhost}")) for name in agents]
    for name, agent in zip(agents, started, strict=True):
        agent.wait_output(rf"agent agent-{name} registered", timeout=60)


def start_scheduler(procs: ProcessGroup, url: str, group: str, name: str) -> Proc:
    """``bmesos <group> scheduler`` (group: service or job) as process ``name``, waited until active."""
    proc = procs.bmesos(name, group, "scheduler", "--broker", url, "--log-level", "info", "--scheduler-id", name)
    proc.wait_output(rf"scheduler \S+ active \(scheduler {name}\)", timeout=60)
    return proc


@dataclass(frozen=True, slots=True)
class Seen:
    status: TaskStatus
    at: float  # time.monotonic() when it arrived here


class StatusRecorder:
    """Every status update of ``framework_id`` in arrival order (its own queue on exchange ``status``),
    with ``on_update`` called for each from the recorder's thread."""

    def __init__(self, url: str, framework_id: str, on_update: Callable[[StatusRecorder], None] | None = None) -> None:
        self.seen: list[Seen] = []
        self.on_update = on_update
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connection = pika.BlockingConnection(pika.URLParameters(url))
        channel = self._connection.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, topology.STATUS, routing_key=f"{framework_id}.#")
        channel.basic_consume(queue, self._on_message, auto_ack=True)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._connection.process_data_events(time_limit=0.1)
        self._connection.close()

    def _on_message(self, _ch: object, _method: object, _props: object, body: bytes) -> None:
        envelope = codec.decode(body)
        if not isinstance(envelope.body, protocol.Status):
            return
        with self._lock:
            for status in envelope.body.updates:
                self.seen.append(Seen(status, time.monotonic()))
                if self.on_update is not None:
                    try:
                        self.on_update(self)
                    except AssertionError as exc:
                        self.errors.append(str(exc))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def updates(self) -> list[Seen]:
        with self._lock:
            return list(self.seen)

    def latest(self) -> dict[str, TaskStatus]:
        """Each task's latest update (a task's updates arrive in order: one agent publishes them)."""
        out: dict[str, TaskStatus] = {}
        for seen in self.updates():
            out[seen.status.task_id] = seen.status
        return out

    def with_state(self, state: TaskState) -> list[TaskStatus]:
        return [s.status for s in self.updates() if s.status.state is state]


def healthy_count(latest: dict[str, TaskStatus]) -> int:
    return sum(1 for s in latest.values() if s.state is TaskState.RUNNING and s.healthy)


def wait_status(client: ControlClient, name: str, condition: Callable[[dict], bool], timeout: float, what: str) -> dict:
    """Poll ``status NAME`` until ``condition`` holds; the last answer."""
    last: list[dict] = []

    def check() -> bool:
        answer = client.call("status", name=name)
        last[:] = [answer]
        return condition(answer)

    try:
        wait_for(check, timeout, what, interval=0.2)
    except Exception as exc:
        raise AssertionError(f"{exc}; last status: {last[0] if last else None}") from None
    return last[0]


def running(answer: dict) -> list[dict]:
    return [i for i in answer["instances"] if i["state"] == TaskState.RUNNING.value]
