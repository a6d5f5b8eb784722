"""History: status updates and events land in the ``history`` stream, and ``bmesos watch --since`` /
``--from-offset`` replays them and then follows live (docs/protocol.md §10), against a real broker,
master, agent and ``bmesos run``."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pika
import pika.exceptions
import pytest

from broker_mesos.bus import topology
from broker_mesos.bus.provision import ManagementApi
from broker_mesos.cli.watch import parse_offset, parse_since
from broker_mesos.core import codec, protocol
from broker_mesos.core.protocol import TaskState
from broker_mesos.testing.processes import Proc, ProcessGroup
from broker_mesos.testing.pytest_plugin import provisioned
from broker_mesos.testing.rabbit import RabbitNode
from broker_mesos.testing.wait import wait_for

RUN_TIMEOUT = 60.0
# time, framework, agent, task, state[, exit N] (the format of `bmesos watch`)
LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:.]+ (\S+) (\S+) (\S+) (TASK_[A-Z]+)", re.MULTILINE)


# -- pure parts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "key", "expected"), [
    ("#", "fw.a1.TASK_RUNNING", True),
    ("fw.#", "fw.a1.TASK_RUNNING", True),
    ("fw.#", "fw2.a1.TASK_RUNNING", False),
    ("*.*.TASK_FAILED", "fw.a1.TASK_FAILED", True),
    ("*.*.TASK_FAILED", "fw.a1.TASK_FINISHED", False),
    ("*.a1.*", "fw.a1.TASK_LOST", True),
    ("*.a1", "fw.a1.TASK_LOST", False),
    ("#.TASK_LOST", "fw.a1.TASK_LOST", True),
    ("fw.#.TASK_LOST", "fw.TASK_LOST", True),
    ("#.#", "fw.a1.TASK_LOST", True),
    ("fw.a1.TASK_LOST.#", "fw.a1.TASK_LOST", True),
    ("fw.a1.TASK_LOST", "fw.a1.TASK_LOST", True),
    ("fw.*", "fw.a1.TASK_LOST", False),
])
def test_topic_matching_is_the_brokers(pattern: str, key: str, expected: bool) -> None:
    assert topology.topic_matches(pattern, key) is expected


def test_since_takes_durations_and_iso_times() -> None:
    now = datetime.datetime(2026, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
    assert parse_since("30s", now) == now - datetime.timedelta(seconds=30)
    assert parse_since("10m", now) == now - datetime.timedelta(minutes=10)
    assert parse_since("2h", now) == now - datetime.timedelta(hours=2)
    assert parse_since("7d", now) == now - datetime.timedelta(days=7)
    assert parse_since("2026-05-01T10:00:00Z", now) == datetime.datetime(2026, 5, 1, 10, tzinfo=datetime.UTC)
    assert parse_since("2026-05-01T12:30:00+02:00", now) == datetime.datetime(2026, 5, 1, 10, 30,
                                                                             tzinfo=datetime.UTC)
    local = datetime.datetime(2026, 5, 1, 9, 0).astimezone()  # a naive time is local time
    assert parse_since("2026-05-01 09:00", now) == local.astimezone(datetime.UTC)
    for bad in ("10", "10x", "-5m", "m", "yesterday", "", "1.5h"):
        with pytest.raises(ValueError):
            parse_since(bad, now)


def test_offsets_are_numbers_or_names() -> None:
    assert parse_offset("0") == 0 and parse_offset("42") == 42
    assert [parse_offset(n) for n in ("first", "last", "next")] == ["first", "last", "next"]
    for bad in ("-1", "1e3", "FIRST", "", "99999999999999999999"):
        with pytest.raises(ValueError):
            parse_offset(bad)


# -- against a real cluster -----------------------------------------------------------------------


def cluster(procs: ProcessGroup, url: str, work: Path) -> None:
    master = procs.bmesos("master", "master", "--broker", url, "--allocation-interval", "0.1")
    master.wait_output(r"master \S+ serving")
    agent = procs.bmesos("a1", "agent", "--broker", url, "--resources", "cpus:4;mem:4096", "--id", "a1",
                         "--work-dir", str(work), "--heartbeat-interval", "1")
    agent.wait_output(r"agent a1 registered")


def run(procs: ProcessGroup, url: str, name: str, count: int, command: str) -> Proc:
    return procs.bmesos(f"run-{name}", "run", "--broker", url, "--name", name, "--count", str(count), "--", command)


def finished(proc: Proc) -> str:
    code = proc.wait(RUN_TIMEOUT)
    out = proc.output()
    assert code == 0, out
    return out


def lines_of(watch: Proc) -> list[tuple[str, str]]:
    """(task, state) of every status line the watch printed, in order."""
    return [(m.group(3), m.group(4)) for m in LINE.finditer(watch.output())]


def wait_lines(watch: Proc, tasks: list[str], states: tuple[str, ...] = ("TASK_RUNNING", "TASK_FINISHED")) -> None:
    wanted = {(t, s) for t in tasks for s in states}
    wait_for(lambda: wanted <= set(lines_of(watch)), 20, f"{watch.name} to print {sorted(wanted)}")


def test_watch_since_replays_what_finished_before_it_started_then_follows(
        broker_url: str, procs: ProcessGroup, work_root: Path) -> None:
    cluster(procs, broker_url, work_root / "since")
    finished(run(procs, broker_url, "old", 3, "true"))
    # a job still running while the watch starts: its updates are split between history and live
    mid = run(procs, broker_url, "mid", 8, "sleep 0.3")
    mid.wait_output(r"^task mid-\d TASK_FINISHED")
    watch = procs.bmesos("watch", "watch", "--broker", broker_url, "--since", "10m")
    watch.wait_output(r"^watching status '#' since \d{4}-")
    old = [f"old-{i}" for i in range(3)]
    wait_lines(watch, old)
    finished(mid)
    wait_lines(watch, [f"mid-{i}" for i in range(8)])
    finished(run(procs, broker_url, "late", 2, "true"))  # after the replay: live
    wait_lines(watch, ["late-0", "late-1"])
    watch.signal(15)
    assert watch.wait(10) == 0

    seen = lines_of(watch)
    counts = Counter(seen)
    assert all(n == 1 for n in counts.values()), [k for k, n in counts.items() if n > 1]  # no duplicate
    tasks = {t for t, _ in seen}
    for task in [*old, *(f"mid-{i}" for i in range(8)), "late-0", "late-1"]:  # no gap
        assert (task, "TASK_RUNNING") in counts and (task, "TASK_FINISHED") in counts, task
    assert tasks == {*old, *(f"mid-{i}" for i in range(8)), "late-0", "late-1"}
    # history first, in the order it happened
    assert max(seen.index((t, "TASK_FINISHED")) for t in old) < seen.index(("late-0", "TASK_RUNNING"))
    for task in tasks:
        assert seen.index((task, "TASK_RUNNING")) < seen.index((task, "TASK_FINISHED"))


def test_watch_from_offset_zero_and_from_a_later_offset(broker_url: str, procs: ProcessGroup,
                                                        work_root: Path) -> None:
    cluster(procs, broker_url, work_root / "offsets")
    finished(run(procs, broker_url, "job", 2, "true"))
    watch = procs.bmesos("watch0", "watch", "--broker", broker_url, "--from-offset", "0", "--json", "--events")
    watch.wait_output(r"^watching status '#' and events from offset 0 ")

    def records(proc: Proc) -> list[dict[str, object]]:
        return [json.loads(line) for line in proc.output().splitlines() if line.startswith("{")]

    def job_finished(proc: Proc) -> bool:
        done = {r.get("task_id") for r in records(proc) if r.get("state") == "TASK_FINISHED"}
        return {"job-0", "job-1"} <= done

    wait_for(lambda: job_finished(watch), 20, "watch --from-offset 0 to replay both tasks")
    got = records(watch)
    offsets = [r["offset"] for r in got]
    assert offsets[0] == 0  # the first message of the stream (the cluster's first event)
    assert offsets == sorted(offsets)  # in stream order (one STATUS may carry several updates: one offset)
    assert got[0]["kind"] == "event" and {r["kind"] for r in got} == {"event", "status"}
    kinds = {r["event"] for r in got if r["kind"] == "event"}
    assert {"master.elected", "agent.added", "framework.added"} <= kinds

    # from an offset in the middle: that message first, nothing before it
    later = next(r["offset"] for r in got if r.get("task_id") == "job-1" and r.get("state") == "TASK_FINISHED")
    expected = [r for r in got if r["offset"] >= later]  # type: ignore[operator]
    again = procs.bmesos("watchN", "watch", "--broker", broker_url, "--from", str(later), "--json", "--events")
    wait_for(lambda: len(records(again)) >= len(expected), 20, "watch --from N to replay")
    assert records(again)[: len(expected)] == expected
    first = procs.bmesos("watch-first", "watch", "--broker", broker_url, "--from", "first", "--json", "--events")
    wait_for(lambda: job_finished(first), 20, "watch --from first to replay both tasks")
    assert records(first)[: len(got)] == got
    for proc in (watch, again, first):
        proc.signal(15)
        assert proc.wait(10) == 0


def test_history_stream_is_declared_with_its_retention(rabbit_node: RabbitNode, procs: ProcessGroup,
                                                      work_root: Path) -> None:
    vhost = rabbit_node.fresh_vhost()
    url = rabbit_node.url(vhost)
    cluster(procs, url, work_root / "retention")
    listed = rabbit_node.ctl("list_queues", "-p", vhost, "--formatter", "json", "name", "type", "arguments")
    queues = {q["name"]: q for q in json.loads(listed[listed.index("["):])}
    history = queues[topology.HISTORY_QUEUE]
    assert history["type"] == "stream"
    assert {name: value for name, _type, value in history["arguments"]} == {
        "x-queue-type": "stream", "x-max-age": "7D", "x-max-length-bytes": 1024 ** 3,
        "x-stream-max-segment-size-bytes": 64 * 1024 ** 2}
    bindings = rabbit_node.ctl("list_bindings", "-p", vhost, "--formatter", "json", "source_name",
                               "destination_name", "routing_key")
    bound = {(b["source_name"], b["routing_key"]) for b in json.loads(bindings[bindings.index("["):])
             if b["destination_name"] == topology.HISTORY_QUEUE and b["source_name"]}  # "": the default exchange
    assert bound == {(topology.STATUS, "#"), (topology.EVENTS, "#")}
    # exactly these arguments: the broker refuses a declare with other ones
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = conn.channel()
        channel.queue_declare(topology.HISTORY_QUEUE, durable=True, arguments=topology.HISTORY_STREAM.arguments)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.queue_declare(topology.HISTORY_QUEUE, durable=True,
                                  arguments={**topology.HISTORY_STREAM.arguments, "x-max-age": "1D"})
        assert refused.value.reply_code == 406
    finally:
        conn.close()


def test_watch_resumes_after_a_lost_connection_without_a_gap(rabbit_node: RabbitNode, procs: ProcessGroup) -> None:
    """What is published while the watch's connection is gone is printed once it is back, and nothing
    twice: it consumes again from the offset after the last one it printed."""
    vhost = rabbit_node.fresh_vhost()
    url = rabbit_node.url(vhost)
    watch = procs.bmesos("watch", "watch", "--broker", url, "--json", "--log-level", "info")
    watch.wait_output(r"^watching status '#' \(")
    publish_status(url, "fw", "a1", "a1", "before")
    watch.wait_output(r'"task_id": "before"')
    rabbit_node.ctl("close_all_connections", "-p", vhost, "test: the watch loses its connection")
    for task in ("while-0", "while-1", "while-2"):  # published at once, while the watch reconnects
        publish_status(url, "fw", "a1", "a1", task)
    watch.wait_output(r"connection lost .*reconnecting(.*\n)*.*connected to amqp://")
    publish_status(url, "fw", "a1", "a1", "after")
    watch.wait_output(r'"task_id": "after"')
    records = [json.loads(line) for line in watch.output().splitlines() if line.startswith("{")]
    assert [r["task_id"] for r in records] == ["before", "while-0", "while-1", "while-2", "after"]
    assert [r["offset"] for r in records] == sorted({r["offset"] for r in records})  # each once


def test_bad_since_or_offset_is_a_usage_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BMESOS_")}
    for args in (["--since", "10 minutes"], ["--since", "soon"], ["--from-offset", "-3"],
                 ["--since", "10m", "--from-offset", "0"]):
        done = subprocess.run([sys.executable, "-m", "broker_mesos.cli.main", "watch", *args, "--broker",
                               "amqp://guest:guest@127.0.0.1:1/", "--connect-timeout", "0.5"],
                              capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr and "Error:" in done.stderr, done.stderr


# -- as principals ----------------------------------------------------------------------------------

VHOST = "bmesos"
SECURE = {"BMESOS_INSECURE": "0"}


@pytest.fixture
def secrets_dir(secure_rabbit: RabbitNode, tmp_path: Path) -> Iterator[Path]:
    with provisioned(secure_rabbit, VHOST, tmp_path / "secrets",
                     ("agent", "a1"), ("monitor", "mon"), ("framework", "fw1")) as out:
        yield out


def url_of(secrets: Path, user: str) -> str:
    return (secrets / f"{user}.url").read_text().strip()


def publish_status(url: str, framework_id: str, agent_in_key: str, agent_in_body: str, task_id: str) -> None:
    """A STATUS published as ``url``'s user (the broker checks ``user_id``), about ``agent_in_body``."""
    user = pika.URLParameters(url).credentials.username
    update = protocol.TaskStatus(task_id=task_id, framework_id=framework_id, agent_id=agent_in_body,
                                 state=TaskState.FAILED, uuid=f"u-{task_id}", timestamp=time.time())
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        channel.basic_publish(topology.STATUS, f"{framework_id}.{agent_in_key}.TASK_FAILED",
                              codec.encode(protocol.Status([update]), time.time()),
                              pika.BasicProperties(content_type="application/msgpack", user_id=user,
                                                   delivery_mode=2))
    finally:
        conn.close()


def test_a_monitor_replays_the_history_and_believes_agents_only_about_themselves(
        secure_rabbit: RabbitNode, secrets_dir: Path, procs: ProcessGroup) -> None:
    # `principals init` declared the stream with its retention (read back through the management API)
    api = ManagementApi(secure_rabbit.management_url())
    queue = api.request("GET", f"queues/{quote(VHOST, safe='')}/{topology.HISTORY_QUEUE}")
    assert queue["type"] == "stream" and queue["arguments"] == topology.HISTORY_STREAM.arguments

    agent = url_of(secrets_dir, "agent.a1")
    publish_status(agent, "fw", "a1", "a1", "true-report")
    publish_status(agent, "fw", "a1", "a2", "forged-report")  # agent a1 speaking for agent a2
    publish_status(agent, "fw", "a1", "a1", "after-forgery")
    monitor_url = secrets_dir / "monitor.mon.url"
    watch = procs.bmesos("watch", "watch", "--broker-file", str(monitor_url), "--from", "first", env=SECURE)
    watch.wait_output(r" fw a1 after-forgery TASK_FAILED")
    out = watch.output()
    assert " fw a1 true-report TASK_FAILED" in out
    assert "forged-report" not in out
    assert re.search(r"skipped the message at offset 1 of history: STATUS from user 'agent.a1', who may not", out)
    # and live: what comes after the replay
    publish_status(agent, "fw", "a1", "a1", "live-report")
    watch.wait_output(r" fw a1 live-report TASK_FAILED")
    watch.signal(15)
    assert watch.wait(10) == 0
    assert "Traceback" not in watch.output() and "ACCESS_REFUSED" not in watch.output()

    # a framework principal may not read it: it holds every framework's updates
    conn = pika.BlockingConnection(pika.URLParameters(url_of(secrets_dir, "framework.fw1")))
    try:
        channel = conn.channel()
        channel.basic_qos(prefetch_count=10)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.basic_consume(topology.HISTORY_QUEUE, lambda *_: None, arguments={"x-stream-offset": "first"})
        assert refused.value.reply_code == 403
    finally:
        conn.close()


def test_the_queue_table_documents_the_stream_as_declared() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    row = re.search(rf"^\| `{topology.HISTORY_QUEUE}` \|(.*)$", doc, re.MULTILINE)
    assert row, "history missing from the queue table of docs/protocol.md §5.2"
    kind, durable, arguments, bindings = (c.strip() for c in row[1].split("|")[:4])
    assert (kind, durable) == ("stream", "yes")
    for name, value in topology.HISTORY_STREAM.arguments.items():
        shown = f'"{value}"' if name == "x-max-age" else str(value)
        assert f"`{name}: {shown}`" in arguments, name
    for exchange, key in topology.HISTORY_STREAM.bindings:
        assert f"`{exchange}` ← `{key}`" in bindings
    assert "### 10.1 History: the `history` stream" in doc
