"""``bmesos logs`` against a real master and agent: the CLI asks the master, the task's agent streams
the sandbox file back in chunks (docs/protocol.md §19)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest

from broker_mesos.bus import topology
from broker_mesos.cli.logs import LogPrinter
from broker_mesos.testing.processes import DEVELOPMENT_ENV, Proc, ProcessGroup
from broker_mesos.testing.pytest_plugin import provisioned
from broker_mesos.testing.rabbit import RabbitNode
from broker_mesos.testing.wait import wait_for

TIMEOUT = 60.0


@pytest.fixture
def work(work_root: Path) -> Path:
    """A short directory (the agent's executor socket path must stay under 108 bytes) tasks pass through."""
    path = Path(tempfile.mkdtemp(dir=work_root, prefix="logs-"))
    path.chmod(0o711)
    return path


def cluster(procs: ProcessGroup, url: str, work: Path, *agent_args: str) -> Proc:
    """A master and agent a1 (tasks as nobody on an agent running as root), registered; the agent."""
    master = procs.bmesos("master", "master", "--broker", url, "--allocation-interval", "0.1")
    master.wait_output(r"master \S+ serving")
    agent = procs.bmesos("a1", "agent", "--broker", url, "--resources", "cpus:4;mem:4096", "--id", "a1",
                         "--work-dir", str(work / "a1"), "--heartbeat-interval", "1", *agent_args)
    agent.wait_output(r"agent a1 registered")
    return agent


def run_task(procs: ProcessGroup, url: str, name: str, script: str) -> Proc:
    """``bmesos run`` of one shell task ``<name>-0``; returns the run process (it exits once it ended)."""
    return procs.bmesos(f"run-{name}", "run", "--broker", url, "--name", name, "--", script)


def finished(run: Proc) -> None:
    assert run.wait(TIMEOUT) == 0, run.output()


def sandbox_file(work: Path, task_id: str, name: str = "stdout") -> Path:
    found = wait_for(lambda: next((work / "a1" / "frameworks").glob(f"*/tasks/{task_id}/{name}"), None), 30,
                     f"the sandbox of {task_id}")
    return found  # type: ignore[no-any-return]


def logs(url: str, *args: str, timeout: float = TIMEOUT) -> tuple[int, bytes, str]:
    """``bmesos logs ARGS`` as a subprocess: exit status, stdout bytes (a pipe: raw), stderr text."""
    done = subprocess.run([sys.executable, "-m", "broker_mesos.cli.main", "logs", "--broker", url, *args],
                          capture_output=True, timeout=timeout, env={**os.environ, **DEVELOPMENT_ENV})
    return done.returncode, done.stdout, done.stderr.decode(errors="replace")


def start_logs(tmp_path: Path, url: str, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    out = tmp_path / f"logs-{len(list(tmp_path.glob('logs-*')))}.out"
    with open(out, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "broker_mesos.cli.main", "logs", "--broker", url, *args],
                                stdout=sink, stderr=subprocess.PIPE, env={**os.environ, **DEVELOPMENT_ENV})
    return proc, out


def test_a_terminal_gets_control_characters_escaped_and_a_pipe_the_bytes() -> None:
    raw = "\x1b]0;pwned\x07red \u202e\n\té".encode()
    for escape, expected in ((True, b"\\x1b]0;pwned\\x07red \\u202e\n\t\xc3\xa9"), (False, raw)):
        out = io.BytesIO()
        printer = LogPrinter(out, escape)
        for i in range(len(raw)):  # one byte per chunk: a character split between chunks stays whole
            printer.write(raw[i:i + 1])
        printer.write(b"", final=True)
        assert out.getvalue() == expected

def test_follow_tail_stderr_ended_and_unknown_tasks(broker_url: str, procs: ProcessGroup, work: Path,
                                                    tmp_path: Path) -> None:
    cluster(procs, broker_url, work)

    # logs -f of `echo a; sleep 1; echo b` prints both lines and exits 0 at TASK_FINISHED
    run = run_task(procs, broker_url, "ab", "echo a; sleep 1; echo b")
    stdout = sandbox_file(work, "ab-0")
    follower, out = start_logs(tmp_path, broker_url, "-f", "ab-0")
    assert follower.wait(TIMEOUT) == 0, follower.stderr.read() if follower.stderr else ""
    assert out.read_bytes() == b"a\nb\n"
    finished(run)
    assert stdout.read_bytes() == b"a\nb\n"

    # the task has ended: its whole log, its last line, and by a unique prefix
    assert logs(broker_url, "ab-0")[:2] == (0, b"a\nb\n")
    assert logs(broker_url, "--tail", "1", "ab-0")[:2] == (0, b"b\n")
    assert logs(broker_url, "--tail", "5", "ab")[:2] == (0, b"a\nb\n")

    # --stderr, with and without --tail; stdout stays apart
    finished(run_task(procs, broker_url, "err", "echo out; echo err1 >&2; printf err2 >&2"))
    assert logs(broker_url, "--stderr", "err-0")[:2] == (0, b"err1\nerr2")
    assert logs(broker_url, "--stderr", "--tail", "1", "err-0")[:2] == (0, b"err2")
    assert logs(broker_url, "err-0")[:2] == (0, b"out\n")

    # following really waits for new bytes: the task writes its second line only when told to
    run = run_task(procs, broker_url, "gate", 'echo first; while [ ! -e "$BMESOS_SANDBOX/go" ]; do sleep 0.05; '
                                              'done; echo second')
    stdout = sandbox_file(work, "gate-0")
    wait_for(lambda: stdout.read_bytes() == b"first\n", 30, "the task's first line")
    follower, out = start_logs(tmp_path, broker_url, "--follow", "gate-0")
    wait_for(lambda: out.read_bytes() == b"first\n", 30, "logs -f to print the first line")
    assert follower.poll() is None  # still following: the task has not ended
    (stdout.parent / "go").touch()
    assert follower.wait(TIMEOUT) == 0
    assert out.read_bytes() == b"first\nsecond\n"
    finished(run)

    # a task id two frameworks use: refused with both, then read with --framework
    finished(run_task(procs, broker_url, "ab", "echo again"))
    master = next(p for p in procs.procs if p.name == "master")

    def both() -> list[str]:
        found = re.findall(r"framework.added framework_id=(ab-\w+)", master.output())
        return found if len(found) == 2 else []

    first, second = wait_for(both, 10, "both ab frameworks")
    code, data, err = logs(broker_url, "ab-0")
    assert (code, data) == (1, b"")
    assert err.strip() == (f"Error: ab-0 matches 2 tasks ({', '.join(sorted([f'{first}/ab-0', f'{second}/ab-0']))}): "
                           "give the full id, or --framework")
    assert logs(broker_url, "--framework", first, "ab-0")[:2] == (0, b"a\nb\n")
    assert logs(broker_url, "--framework", second, "ab-0")[:2] == (0, b"again\n")

    # an unknown task: one clear line, exit 1
    code, data, err = logs(broker_url, "nosuch-task")
    assert (code, data) == (1, b"")
    assert err.strip().splitlines() == ["Error: no task nosuch-task (the master knows live tasks and the last "
                                        "ended ones it remembers)"]


def test_a_10_mb_log_arrives_byte_identical(broker_url: str, procs: ProcessGroup, work: Path) -> None:
    cluster(procs, broker_url, work)
    finished(run_task(procs, broker_url, "big", "head -c 10485760 /dev/urandom"))
    on_disk = sandbox_file(work, "big-0").read_bytes()
    assert len(on_disk) == 10 * 2**20
    code, data, err = logs(broker_url, "big-0")
    assert code == 0, err
    assert len(data) == len(on_disk)
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(on_disk).hexdigest()


def test_removed_sandbox_and_dead_agent_are_one_line_and_exit_1(broker_url: str, procs: ProcessGroup,
                                                                work: Path) -> None:
    agent = cluster(procs, broker_url, work, "--sandbox-gc-delay", "1")
    finished(run_task(procs, broker_url, "gone", "echo bye"))
    sandbox = sandbox_file(work, "gone-0").parent
    wait_for(lambda: not sandbox.exists(), 30, "the sandbox GC to remove the sandbox")
    code, data, err = logs(broker_url, "gone-0")
    assert (code, data) == (1, b"")
    assert err.strip().splitlines() == ["Error: the sandbox of task gone-0 was removed from agent a1 "
                                        "(garbage-collected), or never made"]

    agent.kill()
    # at once the master still counts on the agent: nobody answers within --timeout
    code, data, err = logs(broker_url, "--timeout", "2", "gone-0")
    assert (code, data) == (1, b"")
    assert err.strip().splitlines() == ["Error: no answer within 2s about task gone-0: its agent (or the master) "
                                        "is down or unreachable"]
    # a few missed heartbeats later the master says so itself (silent, then removed), without asking it
    def master_knows() -> str | None:
        code, _, err = logs(broker_url, "--timeout", "10", "gone-0")
        return err if code == 1 and err.startswith("Error: agent a1, where task gone-0 ran, ") else None

    err = wait_for(master_knows, 30, "the master to report the silent agent")
    assert len(err.strip().splitlines()) == 1
    assert "has not been heard from for " in err or "is gone (removed from the cluster)" in err
    def removed() -> str | None:
        err = logs(broker_url, "gone-0")[2]
        return err if "is gone" in err else None

    err = wait_for(removed, 30, "the master to remove the agent")
    assert err.strip().splitlines() == ["Error: agent a1, where task gone-0 ran, is gone (removed from the "
                                        "cluster): its sandbox cannot be read"]


# -- a provisioned cluster: who may read what ----------------------------------------------------------

SECURE = {"BMESOS_INSECURE": "0"}
VHOST = "logs"


@pytest.fixture
def secrets_dir(secure_rabbit: RabbitNode, tmp_path: Path) -> Iterator[Path]:
    """`bmesos principals` made master, operator.admin, agent a1, frameworks alice and mallory, monitor mon."""
    with provisioned(secure_rabbit, VHOST, tmp_path / "secrets",
                     ("agent", "a1"), ("framework", "alice"), ("framework", "mallory"), ("monitor", "mon")) as out:
        yield out


def logs_as(secrets: Path, user: str, *args: str) -> tuple[int, bytes, str]:
    env = {**os.environ, **SECURE, "BMESOS_BROKER_FILE": str(secrets / f"{user}.url")}
    env.pop("BMESOS_BROKER", None)
    done = subprocess.run([sys.executable, "-m", "broker_mesos.cli.main", "logs", *args], capture_output=True,
                          timeout=TIMEOUT, env=env)
    return done.returncode, done.stdout, done.stderr.decode(errors="replace")


def test_who_may_read_whose_logs(secrets_dir: Path, procs: ProcessGroup, work: Path) -> None:
    def url(user: str) -> str:
        return str(secrets_dir / f"{user}.url")

    master = procs.bmesos("master", "master", "--broker-file", url("master"), "--master-id", "m1",
                          "--allocation-interval", "0.1", env=SECURE)
    master.wait_output(r"master m1 serving")
    agent = procs.bmesos("a1", "agent", "--broker-file", url("agent.a1"), "--id", "a1", "--resources",
                         "cpus:4;mem:4096", "--work-dir", str(work / "a1"), env=SECURE)
    agent.wait_output(r"agent a1 registered")
    run = procs.bmesos("run", "run", "--broker-file", url("framework.alice"), "--name", "job", "--", "echo secret",
                       env=SECURE)
    finished(run)
    framework_id = master.wait_output(r"framework.added framework_id=(alice-job-\w+)")[1]

    assert logs_as(secrets_dir, "framework.alice", "job-0")[:2] == (0, b"secret\n")  # its own task
    assert logs_as(secrets_dir, "monitor.mon", "job-0")[:2] == (0, b"secret\n")  # monitors read any task
    assert logs_as(secrets_dir, "operator.admin", "--tail", "1", "job-0")[:2] == (0, b"secret\n")
    # another owner neither finds it nor may read it by its full name
    code, data, err = logs_as(secrets_dir, "framework.mallory", "job-0")
    assert (code, data, err.strip()) == (1, b"", "Error: no task job-0 (the master knows live tasks and the last "
                                                 "ended ones it remembers)")
    code, data, err = logs_as(secrets_dir, "framework.mallory", "--framework", framework_id, "job-0")
    assert (code, data) == (1, b"")
    assert err.strip() == (f"Error: denied: framework.mallory may not read the logs of framework {framework_id}'s "
                           "tasks")
    master.wait_output(r"security: denied READ_LOG from user 'framework.mallory'")

    # the broker fence: mallory cannot bind a queue to alice's answers, only to its own
    conn = pika.BlockingConnection(pika.URLParameters(Path(url("framework.mallory")).read_text().strip()))
    try:
        channel = conn.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, topology.LOGS, "framework.mallory.tok")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.queue_bind(queue, topology.LOGS, "framework.alice.tok")
        assert refused.value.reply_code == 403
        for key in ("#", "*.*.*", "framework.alice.#"):
            channel = conn.channel()
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
                channel.queue_bind(channel.queue_declare("", exclusive=True).method.queue, topology.LOGS, key)
            assert refused.value.reply_code == 403, key
    finally:
        conn.close()
    for proc in (master, agent):
        assert "Traceback" not in proc.output() and "ACCESS_REFUSED" not in proc.output(), proc.name
