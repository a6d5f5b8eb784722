"""Who tasks run as, their environment and their sandboxes, without a broker (``tests/security`` runs
real agents)."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest

from broker_mesos.agent import checkpoint
from broker_mesos.agent.executor import SAFE_PATH, TaskUsers, encode_environment, task_environment
from broker_mesos.agent.sandbox import open_sandbox, sandbox_dir
from broker_mesos.core.protocol import CommandInfo, TaskInfo

ROOT = os.geteuid() == 0
NOBODY = pwd.getpwnam("nobody")


def test_a_task_gets_a_clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BMESOS_BROKER", "amqp://user:secret@host/")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("LD_PRELOAD", "/agent/lib.so")
    monkeypatch.setenv("LANG", "C.UTF-8")
    task = TaskInfo(task_id="t1", agent_id="a1", command=CommandInfo("true", environment={"K": "v", "PATH": "/opt"}))
    env = task_environment(task, "fw", "a1", tmp_path, "someone")
    assert env == {"PATH": "/opt", "HOME": str(tmp_path), "USER": "someone", "LOGNAME": "someone", "LANG": "C.UTF-8",
                   "BMESOS_TASK_ID": "t1", "BMESOS_FRAMEWORK_ID": "fw", "BMESOS_AGENT_ID": "a1",
                   "BMESOS_SANDBOX": str(tmp_path), "K": "v"}
    plain = TaskInfo(task_id="t1", agent_id="a1", command=CommandInfo("true"))
    assert task_environment(plain, "fw", "a1", tmp_path, "u")["PATH"] == SAFE_PATH
    assert encode_environment({"A": "1", "B": "x=y"}) == b"A=1\0B=x=y"
    with pytest.raises(ValueError, match="not valid"):
        task_environment(TaskInfo(task_id="t1", agent_id="a1", command=CommandInfo("true", environment={"A=B": "1"})),
                         "fw", "a1", tmp_path, "u")


@pytest.mark.skipif(not ROOT, reason="an agent running as root")
def test_a_root_agent_switches_users_and_refuses_root_and_unknown_ones() -> None:
    users = TaskUsers()
    assert users.default == "nobody"
    nobody = users.resolve("nobody")
    assert (nobody.uid, nobody.gid, nobody.switch) == (NOBODY.pw_uid, NOBODY.pw_gid, True)
    assert set(nobody.groups) == set(os.getgrouplist("nobody", NOBODY.pw_gid)) and 0 not in nobody.groups
    with pytest.raises(ValueError, match=r"refusing to run a task as root .*--allow-root-tasks"):
        users.resolve("root")
    with pytest.raises(ValueError, match="user 'bmnosuchuser' does not exist"):
        users.resolve("bmnosuchuser")
    with pytest.raises(ValueError, match="refusing to run a task as root"):
        TaskUsers("root")  # as the default: the agent does not start
    assert TaskUsers(allow_root=True).resolve("root").uid == 0
    assert TaskUsers("daemon").default_user.name == "daemon"


def test_an_agent_that_is_not_root_runs_tasks_as_itself_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: NOBODY.pw_uid)
    users = TaskUsers(allow_root=True)
    assert users.default == "nobody"
    own = users.resolve("nobody")
    assert (own.uid, own.switch) == (NOBODY.pw_uid, False)
    for name in ("root", "daemon"):
        with pytest.raises(ValueError, match=f"not root: it cannot run tasks as user '{name}'"):
            users.resolve(name)
    with pytest.raises(ValueError, match="cannot run tasks as user 'daemon'"):
        TaskUsers("daemon")


def test_work_dir_and_checkpoint_modes(tmp_path: Path) -> None:
    work = tmp_path / "work"
    old = os.umask(0)
    try:
        checkpoint.prepare_work_dir(work)
        checkpoint.record_task(work, "fw", TaskInfo(task_id="t1", agent_id="a1"))
        checkpoint.record_done(checkpoint.task_meta_dir(work, "fw", "t1"))
        fd = checkpoint.lock_work_dir(work)
        assert fd is not None
        os.close(fd)
    finally:
        os.umask(old)
    assert stat.S_IMODE(work.stat().st_mode) == 0o711
    for path in [work / "meta", *(work / "meta").rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path


def test_sandbox_modes_and_no_link_is_followed(tmp_path: Path) -> None:
    owner = (NOBODY.pw_uid, NOBODY.pw_gid) if ROOT else None
    uid = NOBODY.pw_uid if ROOT else os.geteuid()
    box = open_sandbox(tmp_path, "fw", "t1", owner)
    box.close()
    path = sandbox_dir(tmp_path, "fw", "t1")
    assert (path.stat().st_uid, stat.S_IMODE(path.stat().st_mode)) == (uid, 0o700)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o711
    assert (path / "stdout").stat().st_uid == uid
    open_sandbox(tmp_path, "fw", "t1", owner).close()  # a relaunch appends

    (path / "stdout").unlink()
    (path / "stdout").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        open_sandbox(tmp_path, "fw", "t1", owner)
    assert not (tmp_path / "elsewhere").exists()
    (path / "stdout").unlink()
    os.mkfifo(path / "stdout")
    with pytest.raises(OSError):  # ENXIO: no reader, and the agent never blocks on it
        open_sandbox(tmp_path, "fw", "t1", owner)
    (path / "stdout").unlink()
    (tmp_path / "target").write_text("")
    os.link(tmp_path / "target", path / "stdout")
    with pytest.raises(ValueError, match="not a plain file"):
        open_sandbox(tmp_path, "fw", "t1", owner)


@pytest.mark.skipif(not ROOT, reason="an agent running as root")
def test_a_sandbox_left_to_another_user_is_refused(tmp_path: Path) -> None:
    open_sandbox(tmp_path, "fw", "t1", (NOBODY.pw_uid, NOBODY.pw_gid)).close()
    daemon = pwd.getpwnam("daemon")
    with pytest.raises(ValueError, match="an earlier run of this task id as another user"):
        open_sandbox(tmp_path, "fw", "t1", (daemon.pw_uid, daemon.pw_gid))
