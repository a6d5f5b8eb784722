"""What an agent keeps on disk so that a restart (same ``--id``, same ``--work-dir``) loses nothing.

Layout, under ``<work_dir>/meta/`` (task sandboxes stay where users look for them)::

    status/<seq>.pending             STATUS messages of one flush, kept until the broker confirmed them all
    frameworks/<fw>/tasks/<task>/
        task                         RUN_TASKS envelope holding this one task (written before the spawn)
        task_env                     the task's environment, for the switch to its user (root agents;
                                     deleted by the task's supervisor as it reads it)
        pid                          "<pid> <start time>" of the task's supervisor (written after the spawn)
        exit_status                  the task's exit status, written by its supervisor when it ends
        kill                         present once a kill was asked for
        done                         present once the task's final update is in the status journal; its
                                     time is when the task ended: the sandbox GC removes the sandbox and
                                     this directory --sandbox-gc-delay later (or sooner, when space is short)
    frameworks/<fw>/executors/<executor>/
        executor                     its ExecutorInfo, token, user and uid (written before the spawn)
        pid, exit_status, cgroup,    as for a task (the executor runs as the pseudo task
        task_env, done               executor.<executor>; its sandbox is frameworks/<fw>/tasks/executor.<executor>)
        subscribed                   present once it subscribed (so it had been sent its tasks)
        shutdown                     present once the agent asked it to shut down

An executor's tasks are not checkpointed one directory each but in one append-only file of their
executor, ``tasks.log`` in its meta directory (``ExecutorTaskLog``): a task launched, a kill asked, a
task done are one record each (an append costs about 1.5 µs on this machine's ext4, a directory and
two files per task about 400 µs, which capped a warm executor near 1,400 tasks/s).

Files are replaced atomically (write a temporary file, then rename), so a crash never leaves a
half-written one behind. Nothing is fsynced: the fault model is a process dying, not the machine
(the page cache survives a SIGKILL).

The checkpoint holds tasks' environments, i.e. their secrets: ``meta`` and everything in it belong to
the agent, directories mode 0700 and files 0600, whatever the umask (``prepare_work_dir`` sets the
modes of the work dir, 0711 — tasks pass through to their sandboxes — and of ``meta``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import msgpack

from broker_mesos.core import codec
from broker_mesos.core.agent_executors import executor_id_of, executor_key
from broker_mesos.core.errors import ProtocolError
from broker_mesos.core.framing import FrameReader, frame
from broker_mesos.core.protocol import ExecutorInfo, RunTasks, Status, TaskInfo, TaskStatus

log = logging.getLogger(__name__)

META = "meta"
PENDING_SUFFIX = ".pending"
TASK_FILE = "task"
TASK_ENV_FILE = "task_env"
PID_FILE = "pid"
EXIT_STATUS_FILE = "exit_status"
KILL_FILE = "kill"
DONE_FILE = "done"
EXECUTORS_DIR = "executors"
EXECUTOR_FILE = "executor"
EXECUTOR_TASKS_LOG = "tasks.log"
EXECUTOR_LOG_COMPACT_BYTES = 8 * 1024 * 1024
"""An executor's task log is rewritten with only its live tasks (and its latest finished ids) once it
has grown past this many bytes since it was last written whole."""
EXECUTOR_LOG_FINISHED_KEPT = 10_000
"""How many finished task ids a compacted log keeps (so a redelivered RUN_TASKS after a restart is
still recognised)."""
SHUTDOWN_FILE = "shutdown"
SUBSCRIBED_FILE = "subscribed"
WORK_DIR_MODE = 0o711
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600

Message = tuple[str, bytes]
"""(routing key, encoded STATUS envelope): one message exactly as it is published."""


def meta_dir(work_dir: Path) -> Path:
    return work_dir / META


def task_meta_dir(work_dir: Path, framework_id: str, task_id: str) -> Path:
    """Ids are protocol identifiers (``[A-Za-z0-9_-]``), so they are safe as path components. An
    executor's pseudo task id (``core.agent_executors.executor_key``) maps to its executor's directory."""
    executor_id = executor_id_of(task_id)
    if executor_id is not None:
        return executor_meta_dir(work_dir, framework_id, executor_id)
    return work_dir / META / "frameworks" / framework_id / "tasks" / task_id


def executor_meta_dir(work_dir: Path, framework_id: str, executor_id: str) -> Path:
    return work_dir / META / "frameworks" / framework_id / EXECUTORS_DIR / executor_id


def prepare_work_dir(work_dir: Path) -> None:
    """Create the work dir (mode 0711) and ``meta`` (0700), and set those modes if they exist; warn when
    someone else owns them (they could tamper with the checkpoint)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    make_private_dirs(meta_dir(work_dir))
    for path, mode in ((work_dir, WORK_DIR_MODE), (meta_dir(work_dir), PRIVATE_DIR_MODE)):
        try:
            st = path.stat()
            if st.st_uid != os.geteuid():
                log.warning("%s belongs to uid %d, not to the agent (uid %d)", path, st.st_uid, os.geteuid())
            if st.st_mode & 0o7777 != mode:
                os.chmod(path, mode)
        except OSError as exc:
            log.warning("cannot set the mode of %s to %o: %s", path, mode, exc)


def make_private_dirs(path: Path) -> None:
    """``mkdir -p`` with mode 0700 for every directory it creates (whatever the umask)."""
    try:
        os.mkdir(path, PRIVATE_DIR_MODE)
    except FileExistsError:
        return
    except FileNotFoundError:
        make_private_dirs(path.parent)
        try:
            os.mkdir(path, PRIVATE_DIR_MODE)
        except FileExistsError:
            return
    os.chmod(path, PRIVATE_DIR_MODE)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` (mode 0600) through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    with open(fd, "wb") as f:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        f.write(data)
    os.replace(tmp, path)


class StatusJournal:
    """Status updates not yet confirmed by the broker, one file per flush.

    ``append`` is called once per flush (not per update) and ``confirm`` once all of that flush's
    messages are confirmed, so the cost is two file operations per flush whatever the batch size.
    ``load`` returns what a previous agent process left unconfirmed, to be published again (receivers
    deduplicate by ``TaskStatus.uuid``).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._next = 1

    def load(self) -> list[tuple[int, list[Message]]]:
        """Open the journal: the batches left by an earlier process, oldest first. Unreadable ones are
        set aside as ``.corrupt`` (and logged) rather than stopping the agent."""
        make_private_dirs(self.directory)
        batches: list[tuple[int, list[Message]]] = []
        for path in sorted(self.directory.iterdir()):
            if path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)  # a flush interrupted before its rename: never published
                continue
            if not path.name.endswith(PENDING_SUFFIX):
                continue
            try:
                seq = int(path.name[:-len(PENDING_SUFFIX)])
                batches.append((seq, decode_batch(path.read_bytes())))
            except (ValueError, ProtocolError) as exc:
                log.error("status journal: %s is unreadable (%s); set aside", path, exc)
                path.rename(path.with_name(path.name + ".corrupt"))
        batches.sort()
        self._next = batches[-1][0] + 1 if batches else 1
        return batches

    def append(self, messages: list[Message]) -> int:
        seq = self._next
        self._next += 1
        write_atomically(self._path(seq), encode_batch(messages))
        return seq

    def confirm(self, seq: int) -> None:
        self._path(seq).unlink(missing_ok=True)

    def pending(self) -> int:
        return sum(1 for p in self.directory.iterdir() if p.name.endswith(PENDING_SUFFIX))

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:016d}{PENDING_SUFFIX}"


def encode_batch(messages: list[Message]) -> bytes:
    return msgpack.packb([[key, body] for key, body in messages], use_bin_type=True)


def decode_batch(data: bytes) -> list[Message]:
    """The messages of one journal file; ``ProtocolError`` when it is not one (each body is decoded)."""
    try:
        items = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"not a journal batch: {exc}") from None
    if not isinstance(items, list):
        raise ProtocolError("not a journal batch: not a list")
    out: list[Message] = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], bytes)):
            raise ProtocolError("not a journal batch: bad entry")
        if not isinstance(codec.decode(item[1]).body, Status):
            raise ProtocolError("not a journal batch: an entry is not a STATUS message")
        out.append((item[0], item[1]))
    return out


def batch_updates(messages: list[Message]) -> Iterator[TaskStatus]:
    for _key, body in messages:
        yield from codec.decode(body).body.updates


# -- task checkpoints ------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointedTask:
    """One task found in the checkpoint by a starting agent."""

    framework_id: str
    task: TaskInfo
    meta: Path
    pid: int | None
    start_time: str | None
    kill_requested: bool
    done: bool


def record_task(work_dir: Path, framework_id: str, task: TaskInfo) -> Path:
    """Checkpoint a task before it is spawned; returns its meta directory."""
    meta = task_meta_dir(work_dir, framework_id, task.task_id)
    make_private_dirs(meta)
    write_atomically(meta / TASK_FILE, codec.encode(RunTasks(framework_id, [task]), 0.0))
    return meta


def record_pid(meta: Path, pid: int, start_time: str | None) -> None:
    write_atomically(meta / PID_FILE, f"{pid} {start_time or '-'}\n".encode())


def record_kill(meta: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (meta / KILL_FILE).touch(mode=PRIVATE_FILE_MODE)


def record_done(meta: Path) -> None:
    with contextlib.suppress(FileNotFoundError):  # os.open, not Path.touch: half the cost (no utime first)
        os.close(os.open(meta / DONE_FILE, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                         PRIVATE_FILE_MODE))


@dataclass(frozen=True)
class CheckpointedExecutor:
    """One executor found in the checkpoint by a starting agent."""

    framework_id: str
    info: ExecutorInfo
    token: str
    user: str
    uid: int
    meta: Path
    pid: int | None
    start_time: str | None
    shutdown: bool
    done: bool
    subscribed: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return executor_key(self.framework_id, self.info.executor_id)


def record_executor(work_dir: Path, framework_id: str, info: ExecutorInfo, token: str, user: str, uid: int) -> Path:
    """Checkpoint an executor before it is spawned (root-only, like everything in ``meta``); its meta dir."""
    meta = executor_meta_dir(work_dir, framework_id, info.executor_id)
    make_private_dirs(meta)
    for name in (DONE_FILE, SHUTDOWN_FILE, PID_FILE, SUBSCRIBED_FILE, EXECUTOR_TASKS_LOG):
        (meta / name).unlink(missing_ok=True)
    data = {"framework_id": framework_id, "info": codec.to_wire(info), "token": token, "user": user, "uid": uid}
    write_atomically(meta / EXECUTOR_FILE, msgpack.packb(data, use_bin_type=True))
    return meta


def record_shutdown(meta: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (meta / SHUTDOWN_FILE).touch(mode=PRIVATE_FILE_MODE)


def record_subscribed(meta: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (meta / SUBSCRIBED_FILE).touch(mode=PRIVATE_FILE_MODE)


def scan_executors(work_dir: Path) -> list[CheckpointedExecutor]:
    """Every checkpointed executor; unreadable records are logged and skipped."""
    root = meta_dir(work_dir) / "frameworks"
    found: list[CheckpointedExecutor] = []
    for meta in sorted(root.glob(f"*/{EXECUTORS_DIR}/*")) if root.is_dir() else ():
        try:
            data = msgpack.unpackb((meta / EXECUTOR_FILE).read_bytes(), raw=False)
            info = codec.decode_body(ExecutorInfo, data["info"], "executor")
            framework_id, token, user, uid = data["framework_id"], data["token"], data["user"], data["uid"]
            if not (isinstance(framework_id, str) and isinstance(token, str) and isinstance(user, str)
                    and isinstance(uid, int)):
                raise ProtocolError("bad field types")
        except (OSError, ValueError, TypeError, KeyError, ProtocolError, msgpack.UnpackException) as exc:
            log.error("executor checkpoint %s is unreadable (%s); ignored", meta, exc)
            continue
        pid, start_time = _read_pid(meta)
        found.append(CheckpointedExecutor(framework_id, info, token, user, uid, meta, pid, start_time,
                                          (meta / SHUTDOWN_FILE).exists(), (meta / DONE_FILE).exists(),
                                          (meta / SUBSCRIBED_FILE).exists()))
    return found


def read_exit_status(meta: Path) -> str | None:
    try:
        return (meta / EXIT_STATUS_FILE).read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def scan(work_dir: Path) -> list[CheckpointedTask]:
    """Every checkpointed task; unreadable checkpoints are logged and skipped."""
    root = meta_dir(work_dir) / "frameworks"
    found: list[CheckpointedTask] = []
    if not root.is_dir():
        return found
    for meta in sorted(root.glob("*/tasks/*")):
        try:
            envelope = codec.decode((meta / TASK_FILE).read_bytes())
            body = envelope.body
            if not isinstance(body, RunTasks) or len(body.tasks) != 1:
                raise ProtocolError("not a one-task RUN_TASKS")
        except (OSError, ProtocolError) as exc:
            log.error("checkpoint %s is unreadable (%s); ignored", meta, exc)
            continue
        pid, start_time = _read_pid(meta)
        found.append(CheckpointedTask(body.framework_id, body.tasks[0], meta, pid, start_time,
                                      (meta / KILL_FILE).exists(), (meta / DONE_FILE).exists()))
    return found


def _read_pid(meta: Path) -> tuple[int | None, str | None]:
    try:
        pid_text, start = (meta / PID_FILE).read_text().split()
        return int(pid_text), None if start == "-" else start
    except (OSError, ValueError):
        return None, None


def remove_done(work_dir: Path, older_than: float) -> int:
    """Forget finished tasks whose ``done`` mark is older than ``older_than`` (unix time)."""
    root = meta_dir(work_dir) / "frameworks"
    removed = 0
    for done in root.glob(f"*/tasks/*/{DONE_FILE}") if root.is_dir() else ():
        try:
            if done.stat().st_mtime < older_than:
                shutil.rmtree(done.parent)
                removed += 1
        except OSError:
            continue
    return removed


def finished_tasks(work_dir: Path) -> list[tuple[float, str, str]]:
    """(time of its ``done`` mark, framework_id, task_id) of every finished task in the checkpoint, in
    no particular order: what the sandbox GC starts from (one scan at agent start)."""
    root = meta_dir(work_dir) / "frameworks"
    found: list[tuple[float, str, str]] = []
    for done in root.glob(f"*/tasks/*/{DONE_FILE}") if root.is_dir() else ():
        try:
            found.append((done.stat().st_mtime, done.parent.parent.parent.name, done.parent.name))
        except OSError:
            continue
    for done in root.glob(f"*/{EXECUTORS_DIR}/*/{DONE_FILE}") if root.is_dir() else ():
        try:
            found.append((done.stat().st_mtime, *executor_key(done.parent.parent.parent.name, done.parent.name)))
        except OSError:
            continue
    return found


def forget_task(work_dir: Path, framework_id: str, task_id: str) -> None:
    """Remove a task's checkpoint directory (and its framework's, once empty)."""
    meta = task_meta_dir(work_dir, framework_id, task_id)
    shutil.rmtree(meta, ignore_errors=True)
    for directory in (meta.parent, meta.parent.parent):
        try:
            os.rmdir(directory)
        except OSError:
            return


def lock_work_dir(work_dir: Path) -> int | None:
    """Take ``<work_dir>/meta/lock`` for the life of this process (the kernel drops it when the process
    dies, even by SIGKILL); None when another live agent holds it. Two agents on one checkpoint would
    adopt each other's tasks and confirm each other's journal."""
    prepare_work_dir(work_dir)
    fd = os.open(meta_dir(work_dir) / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def kill_checkpointed_tasks(work_dir: Path) -> int:
    """SIGKILL the process group of every checkpointed task and executor still running (operators' and
    tests' cleanup after stopping an agent for good); returns how many were killed."""
    killed = 0
    for found in [*scan(work_dir), *scan_executors(work_dir)]:
        if found.pid is not None and process_alive(found.pid, found.start_time):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(found.pid, signal.SIGKILL)
                killed += 1
    return killed


# -- processes -------------------------------------------------------------------------------


def process_start_time(pid: int) -> str | None:
    """The process' start time since boot (``/proc/<pid>/stat`` field 22); None without procfs."""
    fields = _proc_stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def process_alive(pid: int, start_time: str | None) -> bool:
    """Is ``pid`` still the process we started (not a zombie, not a newer process reusing the pid)?"""
    fields = _proc_stat(pid)
    if fields is None:
        if Path("/proc/self/stat").exists():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if fields[0] in ("Z", "X"):
        return False
    return start_time is None or (len(fields) > 19 and fields[19] == start_time)


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (so index 0 is the state)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


class ExecutorTaskLog:
    """The checkpoint of one executor's tasks: records appended to ``<meta>/tasks.log``, each a frame
    (``core.framing``) holding a msgpack list: ``["launch", <RUN_TASKS envelope of the one task>]``,
    ``["kill", task_id]``, ``["done", task_id]``. Nothing is fsynced (the fault model is a process dying,
    as for every checkpoint); a record cut short by a crash is the last one and is ignored on reading.
    ``compact`` rewrites it whole (atomically) with what is still live."""

    def __init__(self, meta: Path) -> None:
        self.path = meta / EXECUTOR_TASKS_LOG
        self._fd: int | None = None
        self.appended = 0  # bytes since it was last written whole

    def launched(self, framework_id: str, task: TaskInfo) -> None:
        self._append(_launch_record(framework_id, task))

    def killed(self, task_id: str) -> None:
        self._append(frame(msgpack.packb(["kill", task_id])))

    def done(self, task_id: str) -> None:
        self._append(frame(msgpack.packb(["done", task_id])))

    def needs_compaction(self) -> bool:
        return self.appended > EXECUTOR_LOG_COMPACT_BYTES

    def compact(self, framework_id: str, live: list[tuple[TaskInfo, bool]], finished: list[str]) -> None:
        """Rewrite the log: ``live`` tasks (with their kill flag), then the ``finished`` ids (the latest
        ``EXECUTOR_LOG_FINISHED_KEPT``)."""
        records = []
        for task, kill_requested in live:
            records.append(_launch_record(framework_id, task))
            if kill_requested:
                records.append(frame(msgpack.packb(["kill", task.task_id])))
        records.extend(frame(msgpack.packb(["done", t])) for t in finished[-EXECUTOR_LOG_FINISHED_KEPT:])
        self.close()
        write_atomically(self.path, b"".join(records))
        self.appended = 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _append(self, data: bytes) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                               PRIVATE_FILE_MODE)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        self.appended += len(data)


def _launch_record(framework_id: str, task: TaskInfo) -> bytes:
    return frame(msgpack.packb(["launch", codec.encode(RunTasks(framework_id, [task]), 0.0)], use_bin_type=True))


def read_executor_tasks(meta: Path) -> tuple[list[CheckpointedTask], list[str]]:
    """(live tasks, finished task ids) of an executor's task log, in launch order; an unreadable record
    ends the reading (what follows a torn write cannot be trusted), logged."""
    try:
        raw = (meta / EXECUTOR_TASKS_LOG).read_bytes()
    except FileNotFoundError:
        return [], []
    tasks: dict[str, CheckpointedTask] = {}
    finished: dict[str, None] = {}
    try:
        for record in FrameReader(max_frame=len(raw) + 1).feed(raw):
            kind, value = msgpack.unpackb(record, raw=False)
            if kind == "launch":
                body = codec.decode(value).body
                if not isinstance(body, RunTasks) or len(body.tasks) != 1:
                    raise ProtocolError("not a one-task RUN_TASKS")
                task = body.tasks[0]
                tasks[task.task_id] = CheckpointedTask(body.framework_id, task, meta, None, None, False, False)
                finished.pop(task.task_id, None)
            elif kind == "kill" and value in tasks:
                tasks[value] = replace(tasks[value], kill_requested=True)
            elif kind == "done":
                tasks.pop(value, None)
                finished[value] = None
    except (ValueError, TypeError, ProtocolError, msgpack.UnpackException) as exc:
        log.error("executor task log %s is unreadable past a point (%s); the rest is ignored", meta, exc)
    return list(tasks.values()), list(finished)
