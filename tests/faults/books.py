"""Helpers shared by the fault tests: the cluster they start, an auditor, and the books check.

The books, checked on a quiet cluster after the fault (the workload stops its churn first):
* every task the workload launched has at most one terminal update, and no update (uuid) twice;
* the tasks the master reports live (implicit RECONCILE, answered to the auditor), the tasks the
  agents report in their heartbeats, and the tasks the workload believes live are the same set;
* a task that never got a status is not live anywhere (its ACCEPT was refused);
* the free resources offered to a fresh framework (the auditor) are, per agent, exactly the agent's
  total minus its live tasks: nothing counted twice, nothing leaked.
"""

from __future__ import annotations

import collections
import signal
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pika

from broker_mesos.bus import topology
from broker_mesos.core import codec, protocol
from broker_mesos.core.resources import Resources
from broker_mesos.testing.processes import Proc, ProcessGroup
from broker_mesos.testing.wait import wait_for

WORKLOAD = str(Path(__file__).with_name("workload.py"))
AGENT_RESOURCES = "cpus:2;mem:1024"
HEARTBEAT = "0.3"
TASK = Resources.of(cpus=0.1, mem=16)


def start_master(procs: ProcessGroup, url: str, name: str = "master", *extra: str, wait: bool = True) -> Proc:
    master = procs.bmesos(name, "master", "--broker", url, "--master-id", name, "--allocation-interval", "0.1",
                          "--max-missed-heartbeats", "5", *extra)
    if wait:
        master.wait_output(rf"master {name} (serving|standing by)", 60)
    return master


def start_agent(procs: ProcessGroup, url: str, agent_id: str, work: Path, *extra: str) -> Proc:
    agent = procs.bmesos(agent_id, "agent", "--broker", url, "--id", agent_id, "--resources", AGENT_RESOURCES,
                         "--work-dir", str(work / agent_id), "--heartbeat-interval", HEARTBEAT, *extra)
    agent.wait_output(rf"agent {agent_id} registered", 60)
    return agent


def start_workload(procs: ProcessGroup, url: str, framework_id: str = "wl", *extra: str,
                   name: str = "workload") -> Proc:
    workload = procs.python(name, WORKLOAD, "--broker", url, "--framework-id", framework_id, *extra)
    workload.wait_output(r"^registered$", 60)
    return workload


@dataclass
class WorkloadView:
    """What the workload printed: launches, updates per task, refusals."""

    launched: dict[str, str] = field(default_factory=dict)  # task -> agent
    updates: dict[str, list[tuple[str, str, str, str]]] = field(default_factory=lambda: defaultdict(list))
    refused: set[str] = field(default_factory=set)
    reregistered: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, output: str) -> WorkloadView:
        view = cls()
        for line in output.splitlines():
            words = line.split()
            if not words:
                continue
            if words[0] == "launch" and len(words) >= 3:
                view.launched[words[1]] = words[2]
            elif words[0] == "status" and len(words) >= 6:
                view.updates[words[1]].append((words[2], words[3], words[4], words[5]))
            elif words[0] == "refused" and len(words) >= 3 and words[2] != "-":
                view.refused.update(words[2].split(","))
            elif words[0] == "reregistered":
                view.reregistered.append(words[1])
        return view

    def terminal(self, task_id: str) -> list[str]:
        return [s for s, *_ in self.updates.get(task_id, []) if protocol.TaskState(s).terminal]

    def live(self) -> set[str]:
        return {t for t, ups in self.updates.items() if ups and not self.terminal(t)}


class Auditor:
    """A plain-pika observer: agents' heartbeats, RECONCILE on the workload's behalf, and free offers."""

    def __init__(self, url: str, framework_id: str = "auditor") -> None:
        self.framework_id = framework_id
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        for ex in topology.EXCHANGES:
            self.channel.exchange_declare(ex.name, ex.type, durable=ex.durable)
        self.heartbeats = self.channel.queue_declare("", exclusive=True).method.queue
        self.channel.queue_bind(self.heartbeats, topology.AGENT_REGISTER, routing_key=topology.KEY_HEARTBEAT)
        self.replies = self.channel.queue_declare("", exclusive=True).method.queue
        self.agents: dict[str, protocol.Heartbeat] = {}

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()

    def _call(self, body: object, reply_to: str) -> None:
        call_id = uuid.uuid4().hex
        self.channel.basic_publish(topology.MASTER, topology.call_type(type(body)),
                                   codec.encode(body, time.time(), call_id),
                                   pika.BasicProperties(content_type="application/msgpack", reply_to=reply_to,
                                                        correlation_id=call_id, delivery_mode=2))

    def agent_tasks(self) -> dict[str, set[str]]:
        """Live tasks per agent as the latest heartbeats say (drains what arrived)."""
        while True:
            method, _props, body = self.channel.basic_get(self.heartbeats, auto_ack=True)
            if method is None:
                break
            beat = codec.decode(body).body
            self.agents[beat.agent_id] = beat
        return {a: {t.task_id for t in beat.tasks if not t.state.terminal} for a, beat in self.agents.items()}

    def reconcile(self, framework_id: str, task_ids: list[str] | None = None,
                  timeout: float = 20.0) -> list[protocol.TaskStatus]:
        self._call(protocol.Reconcile(framework_id, task_ids or []), self.replies)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            method, _props, body = self.channel.basic_get(self.replies, auto_ack=True)
            if method is None:
                self.connection.sleep(0.05)
                continue
            reply = codec.decode(body).body
            if isinstance(reply, protocol.Update):
                return reply.updates
        raise AssertionError(f"no UPDATE for RECONCILE of {framework_id} within {timeout}s")

    def master_live(self, framework_id: str) -> dict[str, str]:
        return {u.task_id: u.agent_id for u in self.reconcile(framework_id) if not u.state.terminal}

    def free_offers(self, expected: dict[str, Resources], timeout: float = 40.0) -> dict[str, Resources]:
        """Subscribe as a fresh framework and collect offers until they add up to ``expected`` per agent;
        fails if an agent is ever offered more than expected (counted twice) or never reaches it (leak)."""
        queues = topology.framework_queues(self.framework_id)
        for q in queues:
            self.channel.queue_declare(q.name, durable=True, arguments=q.arguments or None)
            for exchange, key in q.bindings:
                self.channel.queue_bind(q.name, exchange, routing_key=key)
        arrived: collections.deque[bytes] = collections.deque()  # offers go only to a consuming framework
        self.channel.basic_consume(queues[0].name, lambda _ch, _m, _p, body: arrived.append(body), auto_ack=True)
        self._call(protocol.Subscribe(self.framework_id, self.framework_id), queues[0].name)
        held: dict[str, Resources] = defaultdict(Resources)
        offers: dict[str, protocol.Offer] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.connection.process_data_events(0)
            body = arrived.popleft() if arrived else None
            if body is None:
                if {a: held.get(a, Resources()) for a in expected} == expected:
                    self._call(protocol.Teardown(self.framework_id), queues[0].name)  # leave the pool to others
                    return dict(held)
                self.connection.sleep(0.05)
                continue
            event = codec.decode(body).body
            if isinstance(event, protocol.Offers):
                for offer in event.offers:
                    offers[offer.offer_id] = offer
                    held[offer.agent_id] = held[offer.agent_id] + offer.resources
                    assert held[offer.agent_id] <= expected.get(offer.agent_id, Resources()), (
                        f"agent {offer.agent_id} offered {held[offer.agent_id]}, more than its free "
                        f"{expected.get(offer.agent_id)}: resources counted twice")
            elif isinstance(event, protocol.Rescind):
                for offer_id in event.offer_ids:
                    gone = offers.pop(offer_id, None)
                    if gone is not None:
                        held[gone.agent_id] = held[gone.agent_id] - gone.resources
        raise AssertionError(f"free offers never added up: held {dict(held)}, expected {expected}")


def check_books(workload: Proc, auditor: Auditor, framework_id: str, agents: list[str],
                timeout: float = 60.0) -> WorkloadView:
    """Quiet the workload, then check the books (module docstring). Returns the workload's view."""
    workload.signal(signal.SIGUSR1)
    workload.wait_output(r"^churn stopped$", 20)

    def settled() -> tuple[WorkloadView, dict[str, str], dict[str, set[str]]] | None:
        view = WorkloadView.parse(workload.output())
        if any(t.startswith("short-") for t in view.live()):
            return None
        master = auditor.master_live(framework_id)
        on_agents = auditor.agent_tasks()
        reported = {t for a in agents for t in on_agents.get(a, set())}
        if set(master) == view.live() == reported:
            return view, master, on_agents
        return None

    view, master, on_agents = wait_for(settled, timeout, "master, agents and workload to agree on live tasks",
                                       interval=0.5)
    for task_id in view.launched:
        terminal = view.terminal(task_id)
        assert len(terminal) <= 1, f"task {task_id} ended twice: {terminal}"
        uuids = [u for _s, _src, u, _r in view.updates.get(task_id, [])]
        assert len(uuids) == len(set(uuids)), f"task {task_id}: an update was delivered twice"
        if not view.updates.get(task_id):
            assert task_id not in master, f"task {task_id} never reported yet live at the master"
    for task_id, agent_id in master.items():
        assert task_id in on_agents.get(agent_id, set()), f"master places {task_id} on {agent_id}; that agent disagrees"
    expected = {}
    for agent_id in agents:
        used = Resources()
        for _ in on_agents.get(agent_id, set()):
            used = used + TASK
        expected[agent_id] = Resources.parse(AGENT_RESOURCES) - used
    auditor.free_offers(expected)
    return view


def churn(workload: Proc, more: int = 3, timeout: float = 60.0) -> None:
    """Wait until the workload has launched ``more`` further tasks: the cluster is really serving."""
    start = len(WorkloadView.parse(workload.output()).launched)
    wait_for(lambda: len(WorkloadView.parse(workload.output()).launched) >= start + more, timeout,
             f"{more} more launches by the workload")


def report(what: str, seconds: float) -> None:
    """The bound a fault test measured, printed (pytest -s shows it; the summary keeps it in the log)."""
    sys.stdout.write(f"\n[fault] {what}: {seconds:.2f}s\n")
    sys.stdout.flush()
