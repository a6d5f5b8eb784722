"""``bmesos admin drain | undrain | gone`` against a real master and agents: a drained agent's task is killed
and no new task lands on it until it is undrained."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pika

from broker_mesos.bus import topology
from broker_mesos.core import codec, protocol
from broker_mesos.testing.processes import Proc, ProcessGroup
from broker_mesos.testing.wait import wait_for

TIMEOUT = 60.0
CALLS = itertools.count(1)


def cli(procs: ProcessGroup, url: str, *args: str, expect: int = 0) -> str:
    cut = args.index("--") if "--" in args else len(args)  # the broker option before a command to run
    proc = procs.bmesos(f"{args[0]}-{next(CALLS)}", *args[:cut], "--broker", url, *args[cut:])  # a log of its own
    code = proc.wait(TIMEOUT)
    assert code == expect, proc.output()
    return proc.output()


def start_agent(procs: ProcessGroup, url: str, work: Path, agent_id: str) -> Proc:
    agent = procs.bmesos(agent_id, "agent", "--broker", url, "--resources", "cpus:2;mem:1024", "--id", agent_id,
                         "--work-dir", str(work / agent_id), "--heartbeat-interval", "1")
    agent.wait_output(rf"agent {agent_id} registered")
    return agent


def lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.strip()]


def ran_on(out: str, name: str) -> set[str]:
    """The agents the tasks of a finished `bmesos run --name NAME` ran on (its summary lines)."""
    return set(re.findall(rf"^task {name}-\d+ TASK_FINISHED on (\S+) exit 0$", out, re.MULTILINE))


def test_drain_kill_keeps_new_tasks_away_until_undrain(broker_url: str, procs: ProcessGroup,
                                                       work_root: Path) -> None:
    monitor = pika.BlockingConnection(pika.URLParameters(broker_url))
    channel = monitor.channel()
    channel.exchange_declare(topology.EVENTS, "topic", durable=True)
    events = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(events, topology.EVENTS, routing_key="agent.#")
    seen: list[protocol.ClusterEvent] = []

    def event(kind: str) -> protocol.ClusterEvent | None:
        while True:
            method, _props, body = channel.basic_get(events, auto_ack=True)
            if method is None:
                break
            seen.append(codec.decode(body).body)
        return next((e for e in seen if e.kind == kind), None)

    work = work_root / "drain"
    try:
        master = procs.bmesos("master", "master", "--broker", broker_url, "--allocation-interval", "0.1",
                              "--offer-timeout", "5")
        master.wait_output(r"master \S+ serving")
        start_agent(procs, broker_url, work, "ag1")
        hog = procs.bmesos("hog", "run", "--broker", broker_url, "--name", "hog", "--cpus", "0.5", "--", "sleep",
                           "600")

        def hog_running() -> bool:
            out = cli(procs, broker_url, "tasks", "-o", "json", "--state", "RUNNING")
            return any(t["task_id"] == "hog-0" for t in json.loads(lines(out)[-1])["items"])

        wait_for(hog_running, 30, "hog-0 running on ag1")
        start_agent(procs, broker_url, work, "ag2")

        out = cli(procs, broker_url, "admin", "drain", "ag1", "--kill")
        assert lines(out)[-1] == "agent ag1 DRAINING: 1 task(s) on it, 1 told to die, no new offers"
        assert hog.wait(TIMEOUT) == 1  # its one task was killed
        assert re.search(r"^task hog-0 TASK_KILLED on ag1", hog.output(), re.MULTILINE), hog.output()
        wait_for(lambda: event("agent.drained"), 30, "an agent.drained event")
        draining = event("agent.draining")
        assert draining is not None and draining.detail["agent_id"] == "ag1" and draining.detail["kill"] is True
        listed = json.loads(lines(cli(procs, broker_url, "agents", "-o", "json"))[-1])["items"]
        agents = {a["agent_id"]: a for a in listed}
        assert agents["ag1"]["state"] == "DRAINED" and agents["ag2"]["state"] == "ACTIVE"

        run = cli(procs, broker_url, "run", "--name", "after", "--count", "6", "--cpus", "0.1", "--", "true")
        assert ran_on(run, "after") == {"ag2"}, run  # nothing lands on the drained agent

        out = cli(procs, broker_url, "admin", "undrain", "ag1")
        assert lines(out)[-1] == "agent ag1 ACTIVE: 0 task(s) on it, offers resume"
        wait_for(lambda: event("agent.undrained"), 30, "an agent.undrained event")
        cli(procs, broker_url, "admin", "drain", "ag2")  # now only ag1 can take tasks
        run = cli(procs, broker_url, "run", "--name", "back", "--count", "3", "--cpus", "0.1", "--", "true")
        assert ran_on(run, "back") == {"ag1"}, run

        out = cli(procs, broker_url, "admin", "drain", "nope", expect=1)
        assert lines(out) == ["Error: the master refused DRAIN_AGENT: agent nope is not registered (unknown agent)"]
        out = cli(procs, broker_url, "admin", "gone", "ag1", expect=1)
        assert lines(out) == ["Error: the master refused MARK_AGENT_GONE: agent ag1 is registered: only an agent "
                              "the master removed can be marked gone"]
    finally:
        monitor.close()


def test_gone_ends_the_lost_task_and_the_agent_may_not_come_back(broker_url: str, procs: ProcessGroup,
                                                                  work_root: Path) -> None:
    monitor = pika.BlockingConnection(pika.URLParameters(broker_url))
    channel = monitor.channel()
    channel.exchange_declare(topology.STATUS, "topic", durable=True)
    statuses = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(statuses, topology.STATUS, routing_key="*.*.TASK_GONE_BY_OPERATOR")

    def gone_update() -> protocol.TaskStatus | None:
        method, _props, body = channel.basic_get(statuses, auto_ack=True)
        return codec.decode(body).body.updates[0] if method else None

    work = work_root / "gone"
    try:
        master = procs.bmesos("master", "master", "--broker", broker_url, "--allocation-interval", "0.1",
                              "--max-missed-heartbeats", "2")
        master.wait_output(r"master \S+ serving")
        agent = start_agent(procs, broker_url, work, "ag3")
        procs.bmesos("lost", "run", "--broker", broker_url, "--name", "lost", "--cpus", "0.5", "--", "sleep", "600")
        wait_for(lambda: json.loads(lines(cli(procs, broker_url, "tasks", "-o", "json", "--state", "RUNNING"))[-1])
                 ["total"] == 1, 30, "lost-0 running")
        out = cli(procs, broker_url, "admin", "gone", "ag3", expect=1)  # still registered
        assert "agent ag3 is registered" in out
        agent.signal(15)  # stops, leaving its task running; the master removes it after 2 missed heartbeats
        assert agent.wait(30) == 0
        master.wait_output(r"event agent\.removed agent_id=ag3", timeout=30)

        out = cli(procs, broker_url, "admin", "gone", "ag3")
        assert lines(out)[-1] == "agent ag3 GONE: 1 task(s) ended TASK_GONE_BY_OPERATOR"
        update = wait_for(gone_update, 20, "a TASK_GONE_BY_OPERATOR update on status")
        assert (update.task_id, update.agent_id, update.reason) == ("lost-0", "ag3", "REASON_AGENT_GONE_BY_OPERATOR")
        summary = json.loads(lines(cli(procs, broker_url, "status", "-o", "json"))[-1])
        assert summary["agents"]["GONE"] == 1 and summary["agents"]["REMOVED"] == 0

        back = procs.bmesos("ag3-again", "agent", "--broker", broker_url, "--resources", "cpus:2;mem:1024", "--id",
                            "ag3", "--work-dir", str(work / "ag3"), "--heartbeat-interval", "1")
        back.wait_output(r"the master refused (REGISTER|HEARTBEAT): agent ag3 was marked gone", timeout=30)
        master.wait_output(r"event agent\.refused agent_id=ag3 reason=agent ag3 was marked gone", timeout=30)
        agents = json.loads(lines(cli(procs, broker_url, "agents", "-o", "json"))[-1])["items"]
        assert [a["agent_id"] for a in agents] == []
    finally:
        monitor.close()
