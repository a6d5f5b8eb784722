"""``bmesos status | agents | tasks | describe | kill`` and ``run``'s placement check against a real cluster."""

from __future__ import annotations

import itertools
import json
import secrets
from pathlib import Path

import pytest

from broker_mesos.testing.processes import Proc, ProcessGroup
from broker_mesos.testing.rabbit import RabbitNode, free_port
from broker_mesos.testing.wait import wait_for

TIMEOUT = 60.0
CALLS = itertools.count()


def cluster(procs: ProcessGroup, url: str, work: Path, agents: int = 2) -> None:
    master = procs.bmesos("master", "master", "--broker", url, "--allocation-interval", "0.1", "--offer-timeout", "5")
    master.wait_output(r"master \S+ serving")
    for i in range(1, agents + 1):
        agent = procs.bmesos(f"a{i}", "agent", "--broker", url, "--resources", "cpus:2;mem:1024", "--id", f"agent-{i}",
                             "--work-dir", str(work / f"a{i}"), "--heartbeat-interval", "1")
        agent.wait_output(rf"agent agent-{i} registered")


def cli(procs: ProcessGroup, name: str, *args: str, expect: int = 0) -> str:
    proc = procs.bmesos(f"{name}-{next(CALLS)}", *args)  # a log of its own
    code = proc.wait(TIMEOUT)
    assert code == expect, proc.output()
    return proc.output()


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def start_sleepers(procs: ProcessGroup, url: str, name: str, count: int) -> Proc:
    run = procs.bmesos(name, "run", "--broker", url, "--name", name, "--count", str(count), "--cpus", "0.5",
                       "--", "sleep", "600")
    return run


def running_tasks(procs: ProcessGroup, url: str, n: int, name: str = "q") -> list[dict]:
    def ready() -> list[dict] | None:
        items = last_json(cli(procs, name, "tasks", "--broker", url, "-o", "json", "--state", "RUNNING"))["items"]
        return items if len(items) >= n else None

    return wait_for(ready, 30, f"{n} running tasks")


def test_status_agents_tasks_describe_kill(broker_url: str, procs: ProcessGroup, work_root: Path) -> None:
    cluster(procs, broker_url, work_root / "t1")
    run = start_sleepers(procs, broker_url, "sleepy", 2)
    tasks = running_tasks(procs, broker_url, 2)
    assert {t["task_id"] for t in tasks} == {"sleepy-0", "sleepy-1"}
    assert all(t["agent_id"] in ("agent-1", "agent-2") and t["resources"]["scalars"]["cpus"] == 0.5 for t in tasks)

    summary = last_json(cli(procs, "status-json", "status", "--broker", broker_url, "-o", "json"))
    assert summary["agents"]["ACTIVE"] == 2 and summary["tasks"]["TASK_RUNNING"] == 2
    assert summary["total"]["scalars"]["cpus"] == 4 and summary["used"]["scalars"]["cpus"] == 1
    out = cli(procs, "status", "status", "--broker", broker_url)
    assert "agents     2 active" in out and "2 running" in out and "cpus" in out

    agents = last_json(cli(procs, "agents", "agents", "--broker", broker_url, "-o", "json"))
    assert agents["total"] == 2 and [a["agent_id"] for a in agents["items"]] == ["agent-1", "agent-2"]
    assert sum(a["tasks"] for a in agents["items"]) == 2
    assert all(a["total"] == {"scalars": {"cpus": 2, "mem": 1024}} for a in agents["items"])
    page = last_json(cli(procs, "agents-page", "agents", "--broker", broker_url, "-o", "json", "--limit", "1",
                         "--offset", "1"))
    assert page["total"] == 2 and page["offset"] == 1 and [a["agent_id"] for a in page["items"]] == ["agent-2"]
    table = cli(procs, "agents-table", "agents", "--broker", broker_url, "-o", "wide")
    assert "agent-1" in table and "agent-2" in table and "ACTIVE" in table

    # unique prefix: "sleepy-1" is the only task starting so (task ids are per framework: exact wins)
    described = last_json(cli(procs, "describe", "describe", "task", "sleepy-1", "--broker", broker_url, "-o",
                              "json"))
    assert described["task_id"] == "sleepy-1" and described["state"] == "TASK_RUNNING"
    assert [s["state"] for s in described["history"]][-2:] == ["TASK_STARTING", "TASK_RUNNING"]
    text = cli(procs, "describe-text", "describe", "task", "sleepy-1", "--broker", broker_url)
    assert "history:" in text and "TASK_RUNNING" in text
    out = cli(procs, "ambiguous", "describe", "task", "sleepy", "--broker", broker_url, expect=2)
    lines = [li for li in out.splitlines() if li.strip()]
    assert len(lines) == 1 and "matches 2 tasks" in lines[0] and "sleepy-0" in lines[0] and "sleepy-1" in lines[0]
    out = cli(procs, "nomatch", "describe", "task", "nosuch", "--broker", broker_url, expect=1)
    assert "no task with an id starting with nosuch" in out and "Traceback" not in out
    described = last_json(cli(procs, "describe-agent", "describe", "agent", "agent-2", "--broker", broker_url, "-o",
                              "json"))
    assert described["agent_id"] == "agent-2" and len(described["task_list"]) == described["tasks"]

    frame = cli(procs, "top", "top", "--once", "--broker", broker_url)
    assert "agents 2 active" in frame and "2 running" in frame, frame
    assert "agent-1" in frame and "agent-2" in frame  # the agents table
    wait_for(lambda: "sleepy-1" in cli(procs, "top-tasks", "top", "--once", "--broker", broker_url), 30,
             "top to list the tasks (once they reported usage)")

    fw = last_json(cli(procs, "describe-fw", "describe", "framework", "sleepy", "--broker", broker_url, "-o",
                       "json"))
    assert fw["framework_id"].startswith("sleepy-") and fw["tasks"] == 2 and len(fw["task_list"]) == 2
    by_fw = last_json(cli(procs, "tasks-fw", "tasks", "--framework", "sleepy", "--agent", tasks[0]["agent_id"],
                          "--broker", broker_url, "-o", "json"))
    assert {t["task_id"] for t in by_fw["items"]} == {t["task_id"] for t in tasks
                                                       if t["agent_id"] == tasks[0]["agent_id"]}

    out = cli(procs, "kill", "kill", "sleepy-0", "--broker", broker_url)
    assert "killing task sleepy-0" in out and "(was TASK_RUNNING)" in out

    def killed() -> dict | None:
        task = last_json(cli(procs, "after", "describe", "task", "sleepy-0", "--broker", broker_url, "-o", "json"))
        return task if task["state"] == "TASK_KILLED" else None

    task = wait_for(killed, 30, "sleepy-0 killed")
    assert task["history"][-1]["state"] == "TASK_KILLED"
    out = cli(procs, "kill-again", "kill", "sleepy-0", "--broker", broker_url, expect=1)
    assert len([li for li in out.splitlines() if li.strip()]) == 1
    cli(procs, "kill-last", "kill", "sleepy-1", "--broker", broker_url)
    assert run.wait(TIMEOUT) == 1  # two tasks killed: not every task finished


def test_run_exits_2_when_no_agent_can_ever_fit(broker_url: str, procs: ProcessGroup, work_root: Path) -> None:
    cluster(procs, broker_url, work_root / "t2")
    out = cli(procs, "big", "run", "--broker", broker_url, "--cpus", "8", "--", "true", expect=2)
    lines = [li for li in out.splitlines() if li.strip()]
    assert len(lines) == 1, out
    assert "no agent can ever run a task of cpus:8;mem:32" in lines[0]
    assert "largest agent (by cpus) is agent-" in lines[0] and "cpus:2;mem:1024" in lines[0]


def test_run_says_what_it_waits_for(broker_url: str, procs: ProcessGroup, work_root: Path) -> None:
    cluster(procs, broker_url, work_root / "t3", agents=1)
    hog = procs.bmesos("hog", "run", "--broker", broker_url, "--name", "hog", "--cpus", "2", "--", "sleep", "600")
    running_tasks(procs, broker_url, 1)
    waiter = procs.bmesos("waiter", "run", "--broker", broker_url, "--name", "waiter", "--cpus", "1", "--", "true")
    waiter.wait_output(r"waiting for offers: 1 task\(s\) need cpus:1;mem:32 each, largest free: agent-1", timeout=30)
    assert waiter.alive()
    hog.signal(2)
    assert waiter.wait(TIMEOUT) == 0


def test_master_not_answering_is_one_line(broker_url: str, procs: ProcessGroup) -> None:
    out = cli(procs, "nomaster", "status", "--broker", broker_url, "--timeout", "1", expect=1)
    lines = [li for li in out.splitlines() if li.strip()]
    assert lines == ["Error: no answer from the master within 1s (is `bmesos master` running?)"], out
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    out = cli(procs, "nobroker", "agents", "--broker", url, "--connect-timeout", "1", expect=1)
    lines = [li for li in out.splitlines() if li.strip()]
    assert len(lines) == 1 and "cannot connect to the broker" in lines[0], out


def test_common_options_in_either_place(broker_url: str, procs: ProcessGroup, work_root: Path) -> None:
    cluster(procs, broker_url, work_root / "t4", agents=1)
    for i, args in enumerate((["admin", "--broker", broker_url, "acl", "show"],
                              ["admin", "acl", "show", "--broker", broker_url],
                              ["admin", "--broker", broker_url, "--timeout", "20", "allocator", "show"],
                              ["--broker", broker_url, "agents"],
                              ["describe", "--broker", broker_url, "agent", "agent-1"])):
        out = cli(procs, f"either{i}", *args)
        assert "Error" not in out, out
        assert ("agent-1" in out) if args[-1] in ("agents", "agent-1") else ("ACL" in out or "policy drf" in out)
    out = cli(procs, "unknown", "admin", "--no-such-option", "acl", "show", expect=2)
    assert "no such option" in out.lower()
    # a group's option after the leaf: `principals list --admin-url URL` uses URL (nothing listens there)
    port = free_port()
    out = cli(procs, "principals", "principals", "list", "--admin-url", f"http://guest:guest@127.0.0.1:{port}",
              expect=2)
    assert f"cannot reach the RabbitMQ management API at http://127.0.0.1:{port}" in out, out


SECURE = {"BMESOS_INSECURE": "0"}
H4_USERS = ("h4master", "agent.h4a1", "framework.h4alice", "framework.h4bob", "operator.h4ops", "monitor.h4mon")


@pytest.fixture(scope="module")
def principal_urls(rabbit_node: RabbitNode) -> dict[str, str]:
    """Our principals as users of the test node, each with full broker permissions in a fresh vhost (so
    what is refused here is refused by the master's own fence)."""
    vhost = rabbit_node.fresh_vhost()
    urls = {}
    for user in H4_USERS:
        password = secrets.token_hex(12)
        rabbit_node.ctl("add_user", user, password)
        rabbit_node.ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        urls[user] = f"amqp://{user}:{password}@127.0.0.1:{rabbit_node.port}/{vhost}"
    return urls


def test_queries_and_kill_as_principals(principal_urls: dict[str, str], procs: ProcessGroup,
                                        work_root: Path) -> None:
    urls, mp = principal_urls, ("--master-principal", "h4master")
    master = procs.bmesos("master", "master", "--broker", urls["h4master"], *mp, "--allocation-interval", "0.1",
                          env=SECURE)
    master.wait_output(r"master \S+ serving")
    agent = procs.bmesos("a1", "agent", "--broker", urls["agent.h4a1"], *mp, "--id", "h4a1", "--resources",
                         "cpus:2;mem:1024", "--work-dir", str(work_root / "t5"), "--heartbeat-interval", "1",
                         env=SECURE)
    agent.wait_output(r"agent h4a1 registered")
    run = procs.bmesos("run", "run", "--broker", urls["framework.h4alice"], *mp, "--name", "job", "--", "sleep",
                       "600", env=SECURE)

    def tasks_as(user: str) -> list[dict]:
        out = cli(procs, "tasks", "tasks", "--broker", urls[user], "-o", "json", "--state", "RUNNING")
        return last_json(out)["items"]

    wait_for(lambda: tasks_as("operator.h4ops"), 30, "the task running")
    assert [t["task_id"] for t in tasks_as("monitor.h4mon")] == ["job-0"]
    assert [t["task_id"] for t in tasks_as("framework.h4alice")] == ["job-0"]
    assert tasks_as("framework.h4bob") == []  # not its framework
    agents = last_json(cli(procs, "agents-bob", "agents", "--broker", urls["framework.h4bob"], "-o", "json"))
    assert [a["agent_id"] for a in agents["items"]] == ["h4a1"]  # every agent: what offers show anyway
    out = cli(procs, "agent-asks", "status", "--broker", urls["agent.h4a1"], expect=1)
    assert "denied: agent.h4a1 may not query summary" in out
    out = cli(procs, "monitor-kills", "kill", "job-0", "--broker", urls["monitor.h4mon"], expect=1)
    assert "denied: OPERATOR_KILL is an operator's call" in out
    out = cli(procs, "alice-kills", "kill", "job-0", "--broker", urls["framework.h4alice"], expect=1)
    assert "denied" in out
    out = cli(procs, "ops-kills", "kill", "job-0", "--broker", urls["operator.h4ops"])
    assert "killing task job-0" in out
    assert run.wait(TIMEOUT) == 1
    assert "task job-0 TASK_KILLED" in run.output()
