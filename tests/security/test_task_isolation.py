"""Tasks never run with the agent's powers: real ``bmesos agent`` processes (running as root) against a
private broker, the test playing the master with plain pika (a minimal copy of the FakeMaster of
``tests/integration/test_agent.py``), and two OS users created for the module and removed after it.

What a task sees is inspected from inside the task: it writes ``env``, ``ls /proc/self/fd``, ``id`` into
its sandbox.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker_mesos.agent.checkpoint import kill_checkpointed_tasks
from broker_mesos.core.protocol import CommandInfo, TaskInfo, TaskState
from broker_mesos.core.resources import Resources
from broker_mesos.testing.fake_master import FakeMaster
from broker_mesos.testing.processes import Proc, ProcessGroup
from broker_mesos.testing.wait import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None,
                                reason="needs root and useradd (tasks switch users)")

RESOURCES = "cpus:2;mem:512;disk:100;ports:[31000-31010]"
FW = "fw1"
USERS = ("bmtest1", "bmtest2")
CREDENTIAL = "hunter2-not-for-tasks"
SHELL_VARIABLES = {"PWD", "OLDPWD", "SHLVL", "_"}  # what /bin/sh itself may export


@pytest.fixture(scope="module")
def users() -> Iterator[dict[str, pwd.struct_passwd]]:
    """bmtest1 and bmtest2, each with its own group and no home; removed after the module."""
    def remove(name: str) -> None:
        subprocess.run(["userdel", "-f", name], capture_output=True, check=False)

    try:
        for name in USERS:
            remove(name)  # a leftover of an interrupted run
            subprocess.run(["useradd", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", name],
                           check=True, capture_output=True)
        yield {name: pwd.getpwnam(name) for name in USERS}
    finally:
        for name in USERS:
            remove(name)


def start_agent(procs: ProcessGroup, broker_url: str, work_dir: Path, agent_id: str, *args: str,
                kill_on_stop: bool = True) -> Proc:
    extra = ("--kill-on-stop",) if kill_on_stop else ()
    proc = procs.bmesos(f"agent-{agent_id}-{len(procs.procs)}", "agent", "--broker", broker_url, "--id", agent_id,
                        "--resources", RESOURCES, "--work-dir", str(work_dir), *extra, *args,
                        env={"BMESOS_BROKER": broker_url, "BMESOS_TEST_CREDENTIAL": CREDENTIAL})
    proc.wait_output(rf"agent {agent_id} registered with", timeout=20)
    return proc


def shell(task_id: str, value: str, user: str = "", environment: dict[str, str] | None = None) -> TaskInfo:
    return TaskInfo(task_id=task_id, agent_id="x", resources=Resources.of(cpus=0.1), user=user,
                    command=CommandInfo(value, environment=environment or {}))


def until_go(code: int) -> str:
    """Run until the file ``go`` appears in the sandbox, then exit with ``code``."""
    return f"while [ ! -e go ]; do sleep 0.05; done; exit {code}"


def sandbox(work: Path, task_id: str) -> Path:
    return work / "frameworks" / FW / "tasks" / task_id


INSPECT = ('env > "$BMESOS_SANDBOX/env"; ls /proc/self/fd > "$BMESOS_SANDBOX/fds"; '
           'readlink /proc/self/fd/0 > "$BMESOS_SANDBOX/stdin"; id -u > "$BMESOS_SANDBOX/uid"; '
           'id -G > "$BMESOS_SANDBOX/groups"; id -un > "$BMESOS_SANDBOX/name"; touch "$BMESOS_SANDBOX/written"; ')


def test_a_task_runs_as_its_user_with_a_clean_environment_and_only_fds_0_1_2(
        procs: ProcessGroup, broker_url: str, master: FakeMaster, users: dict[str, Any], work_root: Path) -> None:
    work = work_root / "env"
    proc = start_agent(procs, broker_url, work, "iso-env")
    proc.wait_output(r"tasks run as user nobody \(uid \d+\) unless they name another user")
    master.run("iso-env", shell("t-one", INSPECT + until_go(0), user="bmtest1", environment={"TASK_SECRET": "tok"}),
               shell("t-default", INSPECT))

    master.wait_state("t-one", TaskState.RUNNING)
    box = sandbox(work, "t-one")
    wait_for(lambda: (box / "written").exists(), 10, "t-one to inspect itself")

    env = dict(line.split("=", 1) for line in (box / "env").read_text().splitlines() if "=" in line)
    assert "BMESOS_BROKER" not in env and "BMESOS_TEST_CREDENTIAL" not in env
    text = (box / "env").read_text()
    assert CREDENTIAL not in text and broker_url not in text
    assert set(env) - SHELL_VARIABLES <= {"PATH", "HOME", "USER", "LOGNAME", "LANG", "BMESOS_TASK_ID",
                                          "BMESOS_FRAMEWORK_ID", "BMESOS_AGENT_ID", "BMESOS_SANDBOX", "TASK_SECRET"}
    assert env["USER"] == env["LOGNAME"] == "bmtest1"
    assert env["HOME"] == env["BMESOS_SANDBOX"] == str(box)
    assert env["TASK_SECRET"] == "tok" and env["BMESOS_TASK_ID"] == "t-one" and env["BMESOS_AGENT_ID"] == "iso-env"
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert (box / "fds").read_text().split() == ["0", "1", "2", "3"]  # 3: the directory ls itself reads
    assert (box / "stdin").read_text().strip() == "/dev/null"
    bmtest1 = users["bmtest1"]
    assert int((box / "uid").read_text()) == bmtest1.pw_uid
    groups = {int(g) for g in (box / "groups").read_text().split()}
    assert groups == set(os.getgrouplist("bmtest1", bmtest1.pw_gid)) and 0 not in groups  # its own, none of root's

    # its supervisor (root) has an environment of the agent's choosing: none of the task's, none of the agent's
    supervisor = int((work / "meta" / "frameworks" / FW / "tasks" / "t-one" / "pid").read_text().split()[0])
    assert Path(f"/proc/{supervisor}/environ").read_bytes().split(b"\0")[:-1] == [
        b"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert not (work / "meta" / "frameworks" / FW / "tasks" / "t-one" / "task_env").exists()  # read and deleted

    # modes: the sandbox is the user's, 0700; the work dir 0711; meta the agent's, 0700 / 0600
    st = box.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (bmtest1.pw_uid, bmtest1.pw_gid, 0o700)
    assert {p.name: p.stat().st_uid for p in box.iterdir()}["stdout"] == bmtest1.pw_uid
    assert stat.S_IMODE(work.stat().st_mode) == 0o711
    for path in [work / "meta", *(work / "meta").rglob("*")]:
        st = path.stat()
        assert st.st_uid == 0, path
        assert stat.S_IMODE(st.st_mode) == (0o700 if path.is_dir() else 0o600), path

    (box / "go").touch()
    master.wait_state("t-one", TaskState.FINISHED)

    master.wait_state("t-default", TaskState.FINISHED)
    default = sandbox(work, "t-default")
    assert (default / "name").read_text().strip() == "nobody"
    assert int((default / "uid").read_text()) == pwd.getpwnam("nobody").pw_uid
    assert default.stat().st_uid == pwd.getpwnam("nobody").pw_uid


def test_a_task_cannot_read_another_users_sandbox_nor_the_agents_checkpoint_nor_signal_it(
        procs: ProcessGroup, broker_url: str, master: FakeMaster, users: dict[str, Any], work_root: Path) -> None:
    work = work_root / "peek"
    proc = start_agent(procs, broker_url, work, "iso-peek")
    secret = sandbox(work, "t-secret") / "secret"
    meta = work / "meta"
    master.run("iso-peek", shell("t-secret", "echo s3cret > secret; chmod 644 secret", user="bmtest1"))
    master.wait_state("t-secret", TaskState.FINISHED)
    assert secret.read_text() == "s3cret\n"

    master.run("iso-peek",
               shell("t-own", f"cat {secret}", user="bmtest1"),  # the control: its own user reads it
               shell("t-peek", f"cat {secret}", user="bmtest2"),
               shell("t-list", f"ls {secret.parent}", user="bmtest2"),
               shell("t-meta", f"ls {meta}", user="bmtest2"),
               shell("t-checkpoint", f"cat {meta}/frameworks/{FW}/tasks/t-secret/task", user="bmtest2"),
               shell("t-tasks", f"ls {work}/frameworks/{FW}/tasks", user="bmtest2"),
               shell("t-signal", f"kill -0 {proc.popen.pid}", user="bmtest2"),
               shell("t-signal-nobody", f"kill -TERM {proc.popen.pid}"))
    master.wait_state("t-own", TaskState.FINISHED)
    assert (sandbox(work, "t-own") / "stdout").read_text() == "s3cret\n"
    for task_id in ("t-peek", "t-list", "t-meta", "t-checkpoint", "t-tasks", "t-signal", "t-signal-nobody"):
        failed = master.wait_state(task_id, TaskState.FAILED)
        assert failed.exit_code not in (None, 0), task_id
        stderr = (sandbox(work, task_id) / "stderr").read_text()
        assert "ermission denied" in stderr or "not permitted" in stderr, (task_id, stderr)
        assert "s3cret" not in (sandbox(work, task_id) / "stdout").read_text()
    assert proc.alive()


def test_root_and_unknown_users_are_refused_unless_allowed(
        procs: ProcessGroup, broker_url: str, master: FakeMaster, users: dict[str, Any], work_root: Path) -> None:
    work = work_root / "refuse"
    start_agent(procs, broker_url, work, "iso-refuse")
    master.run("iso-refuse", shell("t-root", "touch ran", user="root"),
               shell("t-ghost", "touch ran", user="bmnosuchuser"))
    root = master.wait_state("t-root", TaskState.FAILED)
    assert "refusing to run a task as root" in root.message and "--allow-root-tasks" in root.message
    ghost = master.wait_state("t-ghost", TaskState.FAILED)
    assert "user 'bmnosuchuser' does not exist" in ghost.message
    for task_id in ("t-root", "t-ghost"):
        assert master.states(task_id) == [TaskState.STARTING, TaskState.FAILED]
        assert not sandbox(work, task_id).exists()  # refused before anything was made for it

    allowed = work_root / "allowed"
    proc = start_agent(procs, broker_url, allowed, "iso-allow", "--allow-root-tasks", "--task-user", "bmtest2")
    proc.wait_output(r"--allow-root-tasks: tasks may run as root")
    proc.wait_output(r"tasks run as user bmtest2")
    master.run("iso-allow", shell("t-root", INSPECT, user="root"), shell("t-default", INSPECT))
    master.wait_state("t-root", TaskState.FINISHED)
    assert (sandbox(allowed, "t-root") / "uid").read_text().strip() == "0"
    master.wait_state("t-default", TaskState.FINISHED)
    assert (sandbox(allowed, "t-default") / "name").read_text().strip() == "bmtest2"


@pytest.mark.parametrize(("args", "complaint"), [
    (["--task-user", "root"], "refusing to run a task as root"),
    (["--task-user", "bmnosuchuser"], "user 'bmnosuchuser' does not exist"),
])
def test_a_bad_task_user_stops_the_agent_at_start(procs: ProcessGroup, broker_url: str, work_root: Path,
                                                  args: list[str], complaint: str) -> None:
    proc = procs.bmesos("agent-bad-user", "agent", "--broker", broker_url, "--id", "iso-bad", "--resources",
                        RESOURCES, "--work-dir", str(work_root / "bad"), *args)
    assert proc.wait(timeout=30) != 0
    out = proc.output()
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "'--task-user'" in errors[0] and complaint in errors[0], out
    assert "Traceback" not in out


def test_a_restarted_agent_takes_back_tasks_of_other_users(
        procs: ProcessGroup, broker_url: str, master: FakeMaster, users: dict[str, Any], work_root: Path) -> None:
    work = work_root / "restart"
    try:
        first = start_agent(procs, broker_url, work, "iso-restart", kill_on_stop=False)
        master.run("iso-restart", shell("t-1", "id -u > uid; " + until_go(7), user="bmtest1"),
                   shell("t-2", "id -u > uid; " + until_go(0), user="bmtest2"),
                   shell("t-gone", until_go(5), user="bmtest2"))
        for task_id in ("t-1", "t-2", "t-gone"):
            master.wait_state(task_id, TaskState.RUNNING)
        first.signal(signal.SIGTERM)
        assert first.wait(timeout=15) == 0

        (sandbox(work, "t-gone") / "go").touch()  # ends while no agent runs: its supervisor records it
        wait_for(lambda: (work / "meta" / "frameworks" / FW / "tasks" / "t-gone" / "exit_status").exists(), 10,
                 "t-gone's exit status")
        second = start_agent(procs, broker_url, work, "iso-restart", kill_on_stop=False)
        second.wait_output(r"2 task\(s\) re-attached, 1 ended while it was down")
        gone = master.wait_state("t-gone", TaskState.FAILED)
        assert gone.exit_code == 5

        for task_id in ("t-1", "t-2"):
            (sandbox(work, task_id) / "go").touch()
        assert master.wait_state("t-1", TaskState.FAILED).exit_code == 7
        assert master.wait_state("t-2", TaskState.FINISHED).exit_code == 0
        for task_id, user in (("t-1", "bmtest1"), ("t-2", "bmtest2")):
            assert int((sandbox(work, task_id) / "uid").read_text()) == users[user].pw_uid
    finally:
        kill_checkpointed_tasks(work)

