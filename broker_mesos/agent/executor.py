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
import re
import shlex
import shutil
import signal
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from broker_mesos.agent import checkpoint
from broker_mesos.agent.isolation import Isolator
from broker_mesos.agent.isolation.containers import Containers
from broker_mesos.agent.isolation.none import NoIsolation
from broker_mesos.agent.sandbox import open_sandbox, sandbox_dir
from broker_mesos.core.agent_executors import executor_id_of
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

_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

SUPERVISOR = 'f=$1; shift; trap : TERM INT HUP; "$@"; s=$?; umask 077; echo "$s" > "$f"; exit "$s"'
"""The task supervisor, a ``/bin/sh`` script (one small process per task): run the task, wait for it,
write its exit status to its checkpoint directory, exit with it. It outlives a signal sent to the
whole group (the trap defers it until the task has ended) and does not pass its trap on to the task,
so whichever agent process comes next can learn how the task ended.

On an agent running as root the supervisor keeps the agent's uid (it writes into ``<work-dir>/meta``,
which tasks cannot reach, and the task's user cannot signal or trace it) but gets an environment of
the agent's choosing, never the task's (a root process must not see the task's ``LD_PRELOAD``); the
task itself is started by ``SWITCH_USER``, which drops to the task's user first. Its stdin is then the
task's (unlinked, root-only) environment file, which ``SWITCH_USER`` reads and replaces by ``/dev/null``
for the task; only root can reach it through the supervisor's ``/proc/PID/fd/0``, as it can the task's
``/proc/PID/environ``."""

SETPRIV = "/usr/bin/setpriv"
"""util-linux ``setpriv`` (Essential on Debian): sets the task's groups, gid and uid, then execs it."""

ENV = "/usr/bin/env"
"""Applies the task's loader settings (``after_switch``) once ``setpriv`` has dropped to its user."""

SWITCH_USER = ('while [ "$1" != -- ]; do echo $$ > "$1" || { echo "bmesos: cannot join cgroup $1" >&2; exit 1; }; '
               'shift; done; shift; . /dev/stdin; exec "$@" </dev/null')
"""Run (``/bin/sh -c``, as root) by the supervisor of a root agent's task, with arguments
``[CGROUP_PROCS...] -- SETPRIV_ARGV`` (``switch_argv``) and as stdin the task's environment file
(``environment_script``: written 0600 in the task's checkpoint directory, which only root can enter, and
unlinked before the spawn, so nothing of it is left on disk and no one else can ever open it).

Its ``$$`` is the pid that becomes the task: it writes it into each cgroup's ``cgroup.procs`` (still as
root, so nothing of the task runs outside its cgroups; the supervisor stays outside), sources the
environment (``export NAME='value'`` lines, shell-quoted: nothing in them is ever evaluated), replaces
stdin by ``/dev/null`` and execs ``setpriv`` (absolute path: the task's ``PATH`` is already in force),
which takes the user's groups, gid and uid (real, effective and saved; with no inheritable capability)
and execs the task — through ``env`` first when the task has loader settings (``after_switch``), so those
are applied only after the drop. Those ride in ``env``'s argv (visible in ``ps``: loader settings, not
secrets); every other variable reaches the task through the environment, never through any argv. A task
without loader settings costs one ``/bin/sh`` and one ``setpriv`` exec, the latter becoming the task."""

AFTER_SWITCH_NAMES = frozenset({
    # glibc's unsecure-envvars (elf/unsecvars.h, 2.36), which it ignores for setuid programs
    "GCONV_PATH", "GETCONF_DIR", "GLIBC_TUNABLES", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH", "MALLOC_TRACE",
    "NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TMPDIR", "TZDIR",
    # what else makes a C program load or parse files of the caller's choosing: locales (a locale name may
    # be an absolute path to locale data) and message catalogs (setpriv calls setlocale and gettext), the
    # time zone, and getopt's parsing of setpriv's own arguments
    "LANG", "LANGUAGE", "TZ", "POSIXLY_CORRECT",
})
AFTER_SWITCH_PREFIXES = ("LD_", "MALLOC_", "LC_", "GLIBC_")
"""Variables a root agent's task gets only after the switch to its user (``after_switch``): what would
make ``setpriv`` (a root process) load code or data of the task's choosing."""

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
    if executor_id_of(task.task_id) is None:  # a framework executor runs many tasks: it has no task id
        env[ENV_TASK_ID] = task.task_id
    env.update({ENV_FRAMEWORK_ID: framework_id, ENV_AGENT_ID: agent_id, ENV_SANDBOX: str(sandbox)})
    env.update(task.command.environment)
    for name, value in env.items():
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise ValueError(f"environment variable {name[:64]!r} is not valid")
    return env


def after_switch(name: str, value: str) -> bool:
    """Whether ``name=value`` must stay out of every root process's environment: a loader-sensitive
    variable (``AFTER_SWITCH_NAMES``/``_PREFIXES``), unless it is exactly what the agent itself runs with
    (its own ``LANG``, which ``task_environment`` passes on: no risk the agent does not take already)."""
    return (name in AFTER_SWITCH_NAMES or name.startswith(AFTER_SWITCH_PREFIXES)) and os.environ.get(name) != value


def split_environment(env: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(variables ``SWITCH_USER`` sources as root, variables ``env`` applies after the switch). Raises
    ``ValueError`` for a name the shell cannot export."""
    before: dict[str, str] = {}
    after: dict[str, str] = {}
    for name, value in env.items():
        if not _SHELL_NAME.fullmatch(name):
            raise ValueError(f"environment variable {name[:64]!r} is not a valid name for a task run as another "
                             "user (letters, digits and '_', not starting with a digit)")
        (after if after_switch(name, value) else before)[name] = value
    return before, after


def environment_script(env: dict[str, str]) -> bytes:
    """``export NAME='value'`` lines (``shlex.quote``), what ``SWITCH_USER`` sources as root: values are
    only ever single-quoted literals, whatever they hold (quotes, newlines, ``$(...)``, backticks)."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items()).encode(
        "utf-8", "surrogateescape")


def switch_argv(user: TaskUser, after: dict[str, str], argv: list[str]) -> list[str]:
    """What ``SWITCH_USER`` execs: ``setpriv`` to the user, then ``env`` with the loader settings, if any,
    then the task."""
    groups = ["--groups=" + ",".join(map(str, user.groups))] if user.groups else ["--clear-groups"]
    run = [SETPRIV, f"--reuid={user.uid}", f"--regid={user.gid}", *groups, "--inh-caps=-all", "--"]
    if after:
        if "=" in argv[0]:  # env would take the program for one more NAME=VALUE
            argv = ["/bin/sh", "-c", 'exec "$@"', "bmesos-exec", *argv]
        run += [ENV, "--", *(f"{name}={value}" for name, value in after.items())]
    return run + argv


def run_as(user: TaskUser, env: dict[str, str], argv: list[str], cgroups: tuple[str, ...] = ()
           ) -> tuple[list[str], dict[str, str], bytes | None]:
    """How to start ``argv`` as ``user`` with environment ``env`` (a task, or a health check of one):
    (the argv to spawn, the environment to spawn it with, what its stdin must read). Switching users,
    that is ``SWITCH_USER`` with only ``PATH`` and, as stdin, the ``environment_script`` of ``env``,
    which the caller passes through a descriptor no one else can open; otherwise ``argv`` itself with
    ``env`` and no script (None). Raises ``ValueError`` for a variable name the shell cannot export."""
    if user.switch:
        before, after = split_environment(env)
        return (["/bin/sh", "-c", SWITCH_USER, "bmesos-switch", *cgroups, "--", *switch_argv(user, after, argv)],
                {"PATH": SAFE_PATH}, environment_script(before))
    return argv, env, None


def encode_environment(env: dict[str, str]) -> bytes:
    """``NAME=value`` entries separated by NUL."""
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
        if self.users.is_root and not os.access(SETPRIV, os.X_OK):
            raise ValueError(f"an agent running as root starts its tasks through {SETPRIV} (util-linux), which is "
                             "missing")
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
        stdin: int = subprocess.DEVNULL
        run, supervisor_env, script = run_as(user, env, argv, cgroups)
        if script is not None:  # the task's environment goes through a root-only file, never the supervisor's
            stdin = _private_tempfile(meta / checkpoint.TASK_ENV_FILE, script)
        try:
            sandbox = open_sandbox(self.work_dir, *key, owner=(user.uid, user.gid) if user.switch else None)
        except BaseException:
            if stdin != subprocess.DEVNULL:
                os.close(stdin)
            raise
        supervised = ["/bin/sh", "-c", SUPERVISOR, "bmesos-supervise", str(meta / checkpoint.EXIT_STATUS_FILE),
                      *run]
        try:
            return subprocess.Popen(supervised, cwd=sandbox.path, env=supervisor_env, stdin=stdin,
                                    stdout=sandbox.stdout, stderr=sandbox.stderr, close_fds=True,
                                    start_new_session=True)
        finally:
            sandbox.close()
            if stdin != subprocess.DEVNULL:
                os.close(stdin)

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


def _private_tempfile(path: Path, data: bytes) -> int:
    """``data`` in a new file at ``path`` (mode 0600), unlinked at once: a descriptor on it, at its start."""
    path.unlink(missing_ok=True)  # a leftover of an agent killed mid-launch
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 checkpoint.PRIVATE_FILE_MODE)
    try:
        os.unlink(path)
    except BaseException:
        os.close(fd)
        raise
    return filled(fd, data)


def filled(fd: int, data: bytes) -> int:
    """``fd`` with all of ``data`` written and its offset back at the start (closed if that fails)."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


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
