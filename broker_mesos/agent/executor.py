"""Executors: how an agent runs a task. ``command`` spawns a process; ``noop`` runs nothing.

Both are driven by the agent's single I/O loop thread: ``launch`` starts a task, ``adopt`` watches one
an earlier agent process started, ``reap`` (polled) returns the tasks that have exited, ``terminate`` /
``force_kill`` signal one. No executor publishes anything; the agent turns what they return into
status updates.

Tasks never run with the agent's powers (``TaskUsers``): each runs as an OS user, Mesos-style — the
task's ``TaskInfo.user``, else the agent's ``--task-user`` (default ``nobody`` for an agent running as
root, else the agent's own user) — never as root (uid 0, or gid 0 among its groups) unless the agent
was started with ``--allow-root-tasks``; with a clean environment (``task_environment``: nothing of the
agent's own, so no broker URL or credentials) and no file descriptor but 0, 1 and 2.

Each task also runs in a container of its agent's isolator (``agent.isolation``: its own cgroups,
limited to its resources), which it joins before it execs; when it ends, whatever is left in the
container is killed and the container removed (``release``).
"""

from __future__ import annotations

import errno
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from broker_mesos.agent import checkpoint
from broker_mesos.agent.isolation import Isolator
from broker_mesos.agent.isolation.containers import Containers
from broker_mesos.agent.isolation.none import NoIsolation
from broker_mesos.agent.sandbox import open_sandbox, sandbox_dir
from broker_mesos.core.agent_state import Limitation, TaskKey, returncode_from_exit_status
from broker_mesos.core.protocol import TaskInfo

log = logging.getLogger(__name__)

ENV_TASK_ID = "BMESOS_TASK_ID"
ENV_FRAMEWORK_ID = "BMESOS_FRAMEWORK_ID"
ENV_AGENT_ID = "BMESOS_AGENT_ID"
ENV_SANDBOX = "BMESOS_SANDBOX"

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""Every task's ``PATH`` (sudo's ``secure_path``) unless its ``CommandInfo.environment`` sets one."""

INHERITED = ("LANG",)
"""The only variables a task gets from the agent's own environment (when they are set)."""

DEFAULT_ROOT_TASK_USER = "nobody"

SUPERVISOR = 'f=$1; shift; trap : TERM INT HUP; "$@"; s=$?; umask 077; echo "$s" > "$f"; exit "$s"'
"""The task supervisor, a ``/bin/sh`` script (one small process per task): run the task, wait for it,
write its exit status to its checkpoint directory, exit with it. It outlives a signal sent to the
whole group (the trap defers it until the task has ended) and does not pass its trap on to the task,
so whichever agent process comes next can learn how the task ended.

On an agent running as root the supervisor keeps the agent's uid (it writes into ``<work-dir>/meta``,
which tasks cannot reach, and the task's user cannot signal or trace it) but gets an environment of
the agent's choosing, never the task's (a root process must not see the task's ``LD_PRELOAD``); the
task itself is started by ``SWITCH_USER``, which drops to the task's user first."""

SWITCH_USER = r"""
import os, sys, warnings  # everything imported before the switch: the user may not read the stdlib's dir
args = sys.argv[1:]
env_file, uid, gid, groups, *cgroups = args[:args.index("--")]
argv = args[args.index("--") + 1:]
uid, gid, groups = int(uid), int(gid), [int(g) for g in groups.split(",") if g]
for procs in cgroups:
    try:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
    except OSError as exc:
        sys.exit("bmesos: cannot join cgroup %s: %s" % (procs, exc.strerror))
with open(env_file, "rb") as f:
    data = f.read()
os.unlink(env_file)
env = dict(item.partition(b"=")[::2] for item in data.split(b"\0") if item)
os.setgroups(groups)
os.setresgid(gid, gid, gid)
os.setresuid(uid, uid, uid)
if os.getresuid() != (uid,) * 3 or os.getresgid() != (gid,) * 3 or set(os.getgroups()) != set(groups):
    sys.exit("bmesos: could not switch to uid %d gid %d" % (uid, gid))
if uid != 0:
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        sys.exit("bmesos: could regain root after switching to uid %d" % uid)
try:
    os.execvpe(argv[0], argv, env)
except OSError as exc:
    sys.stderr.write("bmesos: cannot run %s: %s\n" % (argv[0], exc.strerror))
    sys.exit(127 if isinstance(exc, FileNotFoundError) else 126)
"""
"""Run by the supervisor of a root agent's task (``python -I -S``: no site, no ``PYTHON*`` variables, no
module from the sandbox), with arguments ``ENV_FILE UID GID GROUPS [CGROUP_PROCS...] -- ARGV``: join the
task's cgroups (its own pid into each ``cgroup.procs``, still as root, so nothing of the task runs
outside them; the supervisor stays outside), read the task's environment from its checkpoint
(root-only) and delete it, take the user's groups, gid and uid (real, effective and saved; checked, and
checked that root cannot be regained), then exec the task with exactly that environment."""

ADOPTED_POLL_TICKS = 10


@dataclass(frozen=True, slots=True)
class TaskUser:
    """Who one task runs as. ``switch``: the agent (root) switches to it; otherwise the task runs as
    the agent's own uid."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    switch: bool


class TaskUsers:
    """Which OS user each task runs as, Mesos-style: ``TaskInfo.user``, else ``default``.

    An agent running as root switches to that user, with exactly the user's own groups (its primary
    group and the groups ``/etc/group`` lists it in, as ``initgroups`` gives a login: the operator
    grants a task user access through group membership, and nothing of root's groups is kept). It
    refuses a user that does not exist, and root — uid 0, or gid 0 among the groups — unless
    ``allow_root``. An agent not running as root cannot switch users: it runs every task as itself and
    refuses any other user. ``ValueError`` says why (the task's failure message, or the agent's).
    """

    def __init__(self, default: str | None = None, allow_root: bool = False) -> None:
        self.euid = os.geteuid()
        self.is_root = self.euid == 0
        self.allow_root = allow_root
        try:
            self.own = pwd.getpwuid(self.euid).pw_name
        except KeyError:  # a container's arbitrary uid with no passwd entry
            self.own = str(self.euid)
        self.default = default or (DEFAULT_ROOT_TASK_USER if self.is_root else self.own)
        self.default_user = self.resolve(self.default)

    def resolve(self, name: str) -> TaskUser:
        if not self.is_root:
            if name == self.own:
                return self._own(name)
            try:
                uid = pwd.getpwnam(name).pw_uid
            except KeyError:
                raise ValueError(f"user {name!r} does not exist on this agent") from None
            if uid != self.euid:
                raise ValueError(f"this agent runs as uid {self.euid}, not root: it cannot run tasks as user {name!r} "
                                 f"(uid {uid})")
            return self._own(name)
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise ValueError(f"user {name!r} does not exist on this agent") from None
        groups = tuple(sorted(set(os.getgrouplist(name, entry.pw_gid))))
        if not self.allow_root:
            if entry.pw_uid == 0:
                raise ValueError(f"refusing to run a task as root (user {name!r}, uid 0): this agent was not started "
                                 "with --allow-root-tasks")
            if 0 in groups:
                raise ValueError(f"refusing to run a task as user {name!r}: it is in group root (gid 0), and this "
                                 "agent was not started with --allow-root-tasks")
        return TaskUser(name, entry.pw_uid, entry.pw_gid, groups, switch=True)

    def _own(self, name: str) -> TaskUser:
        return TaskUser(name, self.euid, os.getegid(), tuple(os.getgroups()), switch=False)

    def log_policy(self, agent_id: str) -> None:
        """Say at start who tasks run as, and warn when they run with (some of) the agent's powers."""
        u = self.default_user
        if self.is_root:
            log.info("agent %s: tasks run as user %s (uid %d) unless they name another user", agent_id, u.name, u.uid)
            if self.allow_root:
                log.warning("agent %s: --allow-root-tasks: tasks may run as root (uid 0)", agent_id)
        else:
            log.warning("agent %s runs as uid %d, not root: every task runs as that same uid, so tasks can signal "
                        "the agent and read its work dir (checkpoints included); run it as root to run tasks as "
                        "other users", agent_id, self.euid)


def task_environment(task: TaskInfo, framework_id: str, agent_id: str, sandbox: Path, user: str) -> dict[str, str]:
    """A task's whole environment: a fixed ``PATH``, ``HOME`` = its sandbox, ``USER``/``LOGNAME``,
    ``LANG`` if the agent has it, the ``BMESOS_*`` variables, then its ``CommandInfo.environment``.
    Nothing else of the agent's environment (its broker URL, credentials) ever reaches a task."""
    env = {"PATH": SAFE_PATH, "HOME": str(sandbox), "USER": user, "LOGNAME": user}
    env.update({name: os.environ[name] for name in INHERITED if name in os.environ})
    env.update({ENV_TASK_ID: task.task_id, ENV_FRAMEWORK_ID: framework_id, ENV_AGENT_ID: agent_id,
                ENV_SANDBOX: str(sandbox)})
    env.update(task.command.environment)
    for name, value in env.items():
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise ValueError(f"environment variable {name[:64]!r} is not valid")
    return env


def encode_environment(env: dict[str, str]) -> bytes:
    """``NAME=value`` entries separated by NUL (what ``SWITCH_USER`` reads)."""
    return b"\0".join(os.fsencode(f"{name}={value}") for name, value in env.items())


class Executor(Protocol):
    name: str

    def launch(self, framework_id: str, task: TaskInfo) -> int | None:
        """Start ``task``. Return its exit code if it is already over, None while it runs.
        Raise ``OSError`` or ``ValueError`` (the text is the failure message) if it cannot start."""

    def adopt(self, key: TaskKey, pid: int, start_time: str | None) -> None:
        """Watch a task started by an earlier agent process (its supervisor is ``pid``)."""

    def reap(self) -> list[tuple[TaskKey, int | None]]:
        """(task, returncode) of every task that exited since the last call; negative = signal,
        None = unknown (the task and its supervisor were killed together)."""

    def terminate(self, key: TaskKey) -> None:
        """Ask the task to stop (SIGTERM to its process group)."""

    def force_kill(self, key: TaskKey) -> None:
        """Stop the task now (SIGKILL to its process group and its container); nothing happens if it is gone."""

    def release(self, key: TaskKey) -> Limitation | None:
        """Give back what an ended task held: kill what is left in its container and remove it. Returns
        the limit the task reached, if any (the OOM killer struck in it). Called once a task's end is
        known, also for a task that ended while no agent ran; nothing happens for an unknown task."""


class NoopExecutor:
    """Runs nothing: every task finishes at once with exit code 0 (benchmarks, many simulated agents)."""

    name = "noop"

    def launch(self, framework_id: str, task: TaskInfo) -> int | None:
        return 0

    def adopt(self, key: TaskKey, pid: int, start_time: str | None) -> None:
        return None

    def reap(self) -> list[tuple[TaskKey, int | None]]:
        return []

    def terminate(self, key: TaskKey) -> None:
        return None

    def force_kill(self, key: TaskKey) -> None:
        return None

    def release(self, key: TaskKey) -> Limitation | None:
        return None


@dataclass(slots=True)
class _Adopted:
    pid: int
    start_time: str | None
    meta: Path


class CommandExecutor:
    """Runs each task's command under its supervisor, in its own session, cwd = its sandbox, as its user
    (``TaskUsers``), with its clean environment (``task_environment``), stdin ``/dev/null`` and no other
    file descriptor than 0, 1 and 2 (its sandbox's ``stdout`` and ``stderr``).

    Children are reaped with ``waitpid(-1, WNOHANG)`` so a poll costs O(exited), not O(running).
    Tasks adopted after a restart are not our children: their supervisors are polled (every
    ``ADOPTED_POLL_TICKS`` reaps) and, once gone, their exit status is read from the checkpoint. When a
    task ends, whatever it left in its process group is SIGKILLed, as Mesos tears down a container, and
    once it is released whatever is left in its container too.
    """

    name = "command"

    def __init__(self, work_dir: Path, agent_id: str, task_user: str | None = None,
                 allow_root_tasks: bool = False, isolator: Isolator | None = None) -> None:
        self.work_dir = work_dir
        self.agent_id = agent_id
        self.users = TaskUsers(task_user, allow_root_tasks)
        isolator = isolator or NoIsolation()
        if not self.users.is_root and not isinstance(isolator, NoIsolation):
            raise ValueError("only an agent running as root can put its tasks in containers")
        self.containers = Containers(isolator, agent_id)
        checkpoint.prepare_work_dir(work_dir)
        self.users.log_policy(agent_id)
        if self.users.is_root:
            _warn_unreachable(work_dir)
        self._children: dict[int, tuple[TaskKey, subprocess.Popen[bytes], Path]] = {}
        self._pgid: dict[TaskKey, int] = {}
        self._adopted: dict[TaskKey, _Adopted] = {}
        self._ticks = 0

    def launch(self, framework_id: str, task: TaskInfo) -> int | None:
        user = self.users.resolve(task.user or self.users.default)  # first: a refused task leaves no trace
        command = task.command
        sandbox_path = sandbox_dir(self.work_dir, framework_id, task.task_id)
        env = task_environment(task, framework_id, self.agent_id, sandbox_path, user.name)
        if command.shell:
            argv = ["/bin/sh", "-c", command.value]
        elif command.arguments:
            argv = list(command.arguments)
            _check_program(argv[0], env.get("PATH", os.defpath), sandbox_path)
        else:
            raise ValueError("command has shell=false and no arguments")
        key = (framework_id, task.task_id)
        meta = checkpoint.task_meta_dir(self.work_dir, framework_id, task.task_id)
        checkpoint.make_private_dirs(meta)
        (meta / checkpoint.EXIT_STATUS_FILE).unlink(missing_ok=True)
        container = self.containers.create(key, task.resources, meta)  # recorded before the spawn
        try:
            popen = self._spawn(key, meta, user, env, argv, container.procs_files)
        except BaseException:
            self.containers.discard(key)
            raise
        self._children[popen.pid] = (key, popen, meta)
        self._pgid[key] = popen.pid
        checkpoint.record_pid(meta, popen.pid, checkpoint.process_start_time(popen.pid))
        log.debug("task=%s framework=%s started pid=%d user=%s", task.task_id, framework_id, popen.pid, user.name)
        return None

    def _spawn(self, key: TaskKey, meta: Path, user: TaskUser, env: dict[str, str], argv: list[str],
               cgroups: tuple[str, ...]) -> subprocess.Popen[bytes]:
        if user.switch:  # the task's environment goes through a root-only file, never the supervisor's
            env_file = meta / checkpoint.TASK_ENV_FILE
            checkpoint.write_atomically(env_file, encode_environment(env))
            run = [sys.executable, "-I", "-S", "-c", SWITCH_USER, str(env_file), str(user.uid), str(user.gid),
                   ",".join(map(str, user.groups)), *cgroups, "--", *argv]
            supervisor_env = {"PATH": SAFE_PATH}
        else:
            run, supervisor_env = argv, env
        sandbox = open_sandbox(self.work_dir, *key, owner=(user.uid, user.gid) if user.switch else None)
        supervised = ["/bin/sh", "-c", SUPERVISOR, "bmesos-supervise", str(meta / checkpoint.EXIT_STATUS_FILE),
                      *run]
        try:
            return subprocess.Popen(supervised, cwd=sandbox.path, env=supervisor_env, stdin=subprocess.DEVNULL,
                                    stdout=sandbox.stdout, stderr=sandbox.stderr, close_fds=True,
                                    start_new_session=True)
        finally:
            sandbox.close()

    def adopt(self, key: TaskKey, pid: int, start_time: str | None) -> None:
        self._adopted[key] = _Adopted(pid, start_time, checkpoint.task_meta_dir(self.work_dir, *key))
        self._pgid[key] = pid
        self.containers.adopt(key, self._adopted[key].meta)

    def reap(self) -> list[tuple[TaskKey, int | None]]:
        exited: list[tuple[TaskKey, int | None]] = []
        while True:  # also reaps orphans re-parented to us (an agent running as pid 1 in a container)
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            found = self._children.pop(pid, None)
            if found is None:
                continue
            key, popen, meta = found
            popen.returncode = os.waitstatus_to_exitcode(status)  # so subprocess never waits for it again
            exited.append((key, self._ended(key, pid, meta, popen.returncode)))
        self._ticks += 1
        self.containers.tick()
        if self._adopted and self._ticks % ADOPTED_POLL_TICKS == 0:
            for key, adopted in list(self._adopted.items()):
                if not checkpoint.process_alive(adopted.pid, adopted.start_time):
                    del self._adopted[key]
                    exited.append((key, self._ended(key, adopted.pid, adopted.meta, None)))
        return exited

    def _ended(self, key: TaskKey, pid: int, meta: Path, supervisor_code: int | None) -> int | None:
        """The task's return code: what its supervisor recorded, else how the supervisor itself died."""
        del self._pgid[key]
        _signal_group(pid, signal.SIGKILL)  # leftovers of the task, if any
        text = checkpoint.read_exit_status(meta)
        returncode = returncode_from_exit_status(text) if text is not None else None
        return returncode if returncode is not None else supervisor_code

    def terminate(self, key: TaskKey) -> None:
        pgid = self._pgid.get(key)
        if pgid is not None:
            _signal_group(pgid, signal.SIGTERM)

    def force_kill(self, key: TaskKey) -> None:
        pgid = self._pgid.get(key)
        if pgid is not None:
            _signal_group(pgid, signal.SIGKILL)
        self.containers.kill(key)

    def release(self, key: TaskKey) -> Limitation | None:
        return self.containers.release(key, checkpoint.task_meta_dir(self.work_dir, *key))


def _check_program(program: str, search_path: str, cwd: Path) -> None:
    """Fail the launch as ``exec`` would (the supervisor always starts, so it cannot tell us)."""
    if "/" in program:
        path = program if os.path.isabs(program) else str(cwd / program)
        if not os.path.isfile(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if not os.access(path, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
    elif shutil.which(program, path=search_path) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


def _warn_unreachable(work_dir: Path) -> None:
    """Tasks run as other users start in their sandbox all the same, but reach it by path
    (``$BMESOS_SANDBOX``, ``$HOME``) only if every directory above the work dir lets others through."""
    for parent in work_dir.parents:
        try:
            mode = parent.stat().st_mode
        except OSError:
            continue
        if not mode & stat.S_IXOTH:
            log.warning("%s (mode %o) is closed to other users: tasks start in their sandbox but cannot reach it by "
                        "path ($BMESOS_SANDBOX, $HOME); choose a --work-dir below directories others may pass "
                        "through", parent, stat.S_IMODE(mode))
            return


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        log.warning("cannot signal process group %d: %s", pgid, exc)


EXECUTORS = ("command", "noop")


def make_executor(name: str, work_dir: Path, agent_id: str, task_user: str | None = None,
                  allow_root_tasks: bool = False, isolator: Isolator | None = None) -> Executor:
    if name == "noop":
        return NoopExecutor()
    if name == "command":
        return CommandExecutor(work_dir, agent_id, task_user, allow_root_tasks, isolator)
    raise ValueError(f"unknown executor {name!r} (choose from {', '.join(EXECUTORS)})")
