"""The root agent's switch to a task's user without Python (``executor.SWITCH_USER``: ``/bin/sh`` sources the
task's environment, ``setpriv`` drops privileges): the environment file round-trips any value, loader settings
never reach a root process and still reach the task, and the task runs as exactly its user, unable to regain
root. Without a broker (``tests/security`` runs real agents)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker_mesos.agent import checkpoint
from broker_mesos.agent.executor import (
    SAFE_PATH,
    SETPRIV,
    SWITCH_USER,
    CommandExecutor,
    TaskUser,
    TaskUsers,
    environment_script,
    split_environment,
    switch_argv,
)
from broker_mesos.core.protocol import CommandInfo, TaskInfo

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT or not os.path.exists(SETPRIV), reason="needs root and setpriv")

NASTY = {
    "SINGLE": "it's 'quoted'",
    "DOUBLE": 'say "hi" \\ and \\"',
    "NEWLINES": "line1\nline2\n\nexport EVIL=1\n",
    "SUBST": "$(touch /tmp/bmesos-pwned) ${HOME} $HOME $$",
    "BACKTICKS": "`touch /tmp/bmesos-pwned` `id`",
    "UNICODE": "héllo wörld ✓ 日本語 🚀",
    "EMPTY": "",
    "SPACES": "  leading and trailing  ",
    "GLOB": "* ? [a-z] ~ ~root",
    "SEMI": "; rm -rf / ; && || | & > < #",
    "EQUALS": "a=b=c",
    "DASH": "-n",
    "IFS": " \t\nx",
    "PS4": "+$(id)",
    "ENV": "/tmp/bmesos-pwned-env",
    "_under": "x",
    "PATH": SAFE_PATH,
}
"""Names and values the root shell must take literally (nothing evaluated, nothing split)."""

LOADER = {"LD_PRELOAD": "/nonexistent/bmesos-preload.so", "LD_LIBRARY_PATH": "/nonexistent/lib",
          "GCONV_PATH": "/nonexistent/gconv", "TMPDIR": "/nonexistent/tmp", "LC_ALL": "C",
          "MALLOC_ARENA_MAX": "2", "GLIBC_TUNABLES": "glibc.malloc.check=0", "NLSPATH": "/nonexistent/%N"}


def read_env0(data: bytes) -> dict[str, str]:
    return dict(item.decode().split("=", 1) for item in data.split(b"\0") if item)


def source(tmp_path: Path, env: dict[str, str], exec_argv: list[str],
           cgroups: tuple[str, ...] = ()) -> subprocess.CompletedProcess[bytes]:
    """Run ``SWITCH_USER`` exactly as the supervisor does: environment file as stdin, ``PATH`` alone."""
    env_file = tmp_path / "task_env"
    env_file.write_bytes(environment_script(env))
    env_file.chmod(0o600)
    with open(env_file, "rb") as stdin:
        return subprocess.run(["/bin/sh", "-c", SWITCH_USER, "bmesos-switch", *cgroups, "--", *exec_argv],
                              stdin=stdin, env={"PATH": SAFE_PATH}, cwd=tmp_path, capture_output=True, timeout=30)


def test_the_environment_file_round_trips_any_value(tmp_path: Path) -> None:
    Path("/tmp/bmesos-pwned").unlink(missing_ok=True)
    done = source(tmp_path, NASTY, ["/usr/bin/env", "-0"])
    assert done.returncode == 0, done.stderr
    got = read_env0(done.stdout)
    assert got.pop("PWD") == str(tmp_path)  # what /bin/sh itself exports
    assert got == NASTY
    assert not Path("/tmp/bmesos-pwned").exists()
    assert b"EVIL" not in done.stdout.replace(b"export EVIL=1", b"")


def test_the_root_step_sources_only_and_stdin_becomes_dev_null(tmp_path: Path) -> None:
    done = source(tmp_path, {"PATH": SAFE_PATH}, ["/bin/readlink", "/proc/self/fd/0"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == "/dev/null"
    script = environment_script({"A": "x'y", "B": "$(id)"}).decode()
    assert script == "export A='x'\"'\"'y'\nexport B='$(id)'\n"


def test_names_the_shell_cannot_export_are_refused() -> None:
    for name in ("A-B", "1A", "A B", "É", "A.B"):
        with pytest.raises(ValueError, match="not a valid name"):
            split_environment({"PATH": SAFE_PATH, name: "1"})


def test_loader_settings_stay_out_of_the_root_step(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LANG", "C.UTF-8")
    env = {"PATH": SAFE_PATH, "SECRET": "tok", "LANG": "C.UTF-8", **LOADER, "LANGUAGE": "xx", "LD_AUDIT": "/a.so"}
    before, after = split_environment(env)
    assert before == {"PATH": SAFE_PATH, "SECRET": "tok", "LANG": "C.UTF-8"}  # the agent's own LANG may stay
    assert after == {name: env[name] for name in env if name not in before}
    # what the root step execs (setpriv, here env -0 in its place) gets none of them
    done = source(tmp_path, before, ["/usr/bin/env", "-0"])
    got = read_env0(done.stdout)
    assert not set(got) & set(after) and got["SECRET"] == "tok"
    monkeypatch.setenv("LANG", "fr_FR.UTF-8")
    assert "LANG" in split_environment({"LANG": "C.UTF-8"})[1]  # a task's own locale: only after the switch


def test_the_argv_carries_loader_settings_only() -> None:
    bob = TaskUser("bob", 1234, 1235, (1235, 27), switch=True)
    assert switch_argv(bob, {}, ["/bin/true", "x"]) == [
        SETPRIV, "--reuid=1234", "--regid=1235", "--groups=1235,27", "--inh-caps=-all", "--", "/bin/true", "x"]
    lonely = TaskUser("lonely", 1234, 1235, (), switch=True)
    assert "--clear-groups" in switch_argv(lonely, {}, ["/bin/true"])
    assert switch_argv(bob, {"LD_PRELOAD": "/x.so"}, ["a=b", "c"])[6:] == [
        "/usr/bin/env", "--", "LD_PRELOAD=/x.so", "/bin/sh", "-c", 'exec "$@"', "bmesos-exec", "a=b", "c"]


PROBE = r"""
import json, os, sys
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
try:
    os.setuid(0)
    regained = True
except PermissionError:
    regained = False
try:
    os.setresuid(0, 0, 0)
    regained = True
except PermissionError:
    pass
json.dump({"resuid": os.getresuid(), "resgid": os.getresgid(), "groups": sorted(os.getgroups()),
           "caps": {k: status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapAmb")},
           "regained": regained, "env": dict(os.environ), "fds": sorted(int(f) for f in os.listdir("/proc/self/fd")),
           "argv": sys.argv[1:]}, sys.stdout)
"""


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory below /tmp that the task's user may pass through (pytest's tmp_path is 0700)."""
    root = Path(tempfile.mkdtemp(prefix="bmesos-fast-switch-"))
    os.chmod(root, 0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@needs_root
def test_the_task_runs_as_its_user_and_cannot_regain_root(public_dir: Path) -> None:
    nobody = TaskUsers().resolve("nobody")
    env = {"PATH": SAFE_PATH, "HOME": str(public_dir), "SECRET": "it's $(id)\n`x`", **LOADER}
    before, after = split_environment(env)
    done = source(public_dir, before, switch_argv(nobody, after, ["/usr/bin/python3", "-I", "-c", PROBE, "arg 1"]))
    assert done.returncode == 0, done.stderr
    probe = json.loads(done.stdout)
    assert probe["resuid"] == [nobody.uid] * 3 and probe["resgid"] == [nobody.gid] * 3
    assert set(probe["groups"]) == set(nobody.groups) and 0 not in probe["groups"]
    assert not probe["regained"]
    assert probe["caps"] == dict.fromkeys(("CapInh", "CapPrm", "CapEff", "CapAmb"), "0000000000000000")
    assert probe["fds"] == [0, 1, 2, 3]  # 3: the directory listdir reads
    assert probe["argv"] == ["arg 1"]
    task_env = probe["env"]
    assert task_env.pop("PWD") == str(public_dir)
    assert task_env == env  # the loader settings reach the task, and nothing else comes along
    # only the task loaded LD_PRELOAD: not setpriv (root), not env
    assert done.stderr.decode().count("bmesos-preload.so") == 1, done.stderr


@needs_root
def test_a_task_without_loader_settings_is_execd_by_setpriv_directly(public_dir: Path) -> None:
    nobody = TaskUsers().resolve("nobody")
    done = source(public_dir, {"PATH": SAFE_PATH},
                  switch_argv(nobody, {}, ["/bin/sh", "-c", "echo $PPID; id -u"]))
    assert done.returncode == 0, done.stderr
    parent, uid = done.stdout.decode().split()
    assert int(parent) == os.getpid()  # the pid subprocess started became the task: no process in between
    assert int(uid) == nobody.uid


@needs_root
def test_a_cgroup_that_cannot_be_joined_stops_the_task_before_it_runs(public_dir: Path) -> None:
    nobody = TaskUsers().resolve("nobody")
    marker = public_dir / "ran"
    done = source(public_dir, {"PATH": SAFE_PATH}, switch_argv(nobody, {}, ["/usr/bin/touch", str(marker)]),
                  cgroups=(str(public_dir / "no" / "cgroup.procs"),))
    assert done.returncode == 1
    assert b"bmesos: cannot join cgroup" in done.stderr
    assert not marker.exists()


@needs_root
def test_a_root_agent_launches_through_the_fast_switch(public_dir: Path) -> None:
    work = public_dir / "work"
    executor = CommandExecutor(work, "a1")
    task = TaskInfo(task_id="t1", agent_id="a1", command=CommandInfo(
        'echo "$SECRET|$LD_LIBRARY_PATH|$(id -u)|$(readlink /proc/self/fd/0)"; ls /proc/self/fd | wc -l',
        environment={"SECRET": "s'3\"c`r`et", "LD_LIBRARY_PATH": "/nonexistent/lib"}))
    assert executor.launch("fw", task) is None
    meta = checkpoint.task_meta_dir(work, "fw", "t1")
    assert not (meta / checkpoint.TASK_ENV_FILE).exists()  # unlinked before the spawn
    deadline = time.monotonic() + 15
    ended: list = []
    while not ended and time.monotonic() < deadline:
        ended = executor.reap()
        time.sleep(0.02)
    assert ended == [(("fw", "t1"), 0)]
    stdout = (work / "frameworks" / "fw" / "tasks" / "t1" / "stdout").read_text().splitlines()
    assert stdout[0] == f"s'3\"c`r`et|/nonexistent/lib|{pwd.getpwnam('nobody').pw_uid}|/dev/null"
    assert stdout[1].strip() == "4"  # ls's fds: 0, 1, 2 and the directory it reads
    with pytest.raises(ValueError, match="not a valid name"):
        executor.launch("fw", TaskInfo(task_id="t2", agent_id="a1",
                                       command=CommandInfo("true", environment={"A-B": "1"})))
    executor.release(("fw", "t1"))


@needs_root
def test_the_secret_is_in_no_argv_and_loader_settings_in_no_root_environment(public_dir: Path) -> None:
    work = public_dir / "work"
    executor = CommandExecutor(work, "a1")
    secret = "sekrit-4f1d9a"
    task = TaskInfo(task_id="t1", agent_id="a1", command=CommandInfo(
        "touch started; while [ ! -e go ]; do sleep 0.02; done",
        environment={"SECRET": secret, "LD_LIBRARY_PATH": "/nonexistent/lib"}))
    executor.launch("fw", task)
    box = work / "frameworks" / "fw" / "tasks" / "t1"
    deadline = time.monotonic() + 15
    while not (box / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    seen_task = False
    try:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline, environ = (proc / "cmdline").read_bytes(), (proc / "environ").read_bytes()
                uid = (proc / "status").read_text().split("\nUid:")[1].split()[0]
            except (OSError, IndexError):
                continue
            assert secret.encode() not in cmdline, cmdline
            if uid == "0":
                assert b"LD_LIBRARY_PATH=/nonexistent" not in environ and secret.encode() not in environ, cmdline
            elif secret.encode() in environ:  # the task itself: as nobody, with both
                assert b"LD_LIBRARY_PATH=/nonexistent/lib" in environ and uid == str(pwd.getpwnam("nobody").pw_uid)
                seen_task = True
    finally:
        (box / "go").touch()
        ended: list = []
        while not ended and time.monotonic() < deadline + 15:
            ended = executor.reap()
            time.sleep(0.02)
        executor.release(("fw", "t1"))
    assert ended == [(("fw", "t1"), 0)]
    assert seen_task
