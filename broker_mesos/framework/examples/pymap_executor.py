"""The executor side of the pymap example (``examples/pymap.py``): runs pickled calls in a warm process.

The agent starts it as ``python -m broker_mesos.framework.examples.pymap --executor [--threads N]``.
Each task's ``data`` is ``pickle.dumps((fn, item))``; the executor sends TASK_RUNNING, calls
``fn(item)`` in one of its worker threads (or inline, ``--threads 0``) and reports TASK_FINISHED with
``pickle.dumps(result)`` as the update's ``data``, or TASK_FAILED with the exception's text as its
message and the traceback as its ``data``. A framework message ``ping <nonce>`` is answered with
``pong <nonce>``. See pymap.py for the pickle trust model: this process unpickles only the task data its
own framework sent, and runs as that framework's task user.
"""

from __future__ import annotations

import collections
import logging
import pickle
import threading
import traceback
from collections.abc import Callable
from typing import Any

from broker_mesos.core import codec
from broker_mesos.core.protocol import TaskInfo, TaskState
from broker_mesos.framework.executor import Executor, ExecutorDriver

log = logging.getLogger(__name__)

DEFAULT_THREADS = 4  # worker threads per executor (I/O-bound calls overlap; CPU-bound ones share the GIL)
MAX_FAILURE_TEXT = 4096  # characters of an exception's text in a TASK_FAILED message
PING = b"ping "
PONG = b"pong "


def run_call(payload: bytes) -> tuple[TaskState, str, bytes]:
    """Unpickle ``(fn, item)``, call ``fn(item)``; the terminal state, message and data to report."""
    try:
        fn, item = pickle.loads(payload)
    except Exception as exc:
        return TaskState.FAILED, _text(f"cannot unpickle the call: {type(exc).__name__}: {exc}"), b""
    try:
        result = fn(item)
    except (Exception, SystemExit) as exc:
        trace = traceback.format_exc().encode(errors="replace")[-codec.MAX_DATA_BYTES:]
        return TaskState.FAILED, _text(f"{type(exc).__name__}: {exc}"), trace
    try:
        data = pickle.dumps(result)
    except Exception as exc:
        return TaskState.FAILED, _text(f"the result cannot be pickled: {type(exc).__name__}: {exc}"), b""
    if len(data) > codec.MAX_DATA_BYTES:
        return TaskState.FAILED, f"the pickled result has {len(data)} bytes, over the {codec.MAX_DATA_BYTES} limit", b""
    return TaskState.FINISHED, "", data


def _text(message: str) -> str:
    return message if len(message) <= MAX_FAILURE_TEXT else message[:MAX_FAILURE_TEXT] + "..."


class Workers:
    """``count`` daemon threads that run queued items (started in order). Cheaper per item than a
    ``ThreadPoolExecutor`` (no future per call; a burst wakes only idle threads), and, being daemons,
    they never hold the process once the executor has stopped."""

    def __init__(self, count: int, run: Callable[[Any], None]) -> None:
        self.count = count
        self.run = run
        self._queue: collections.deque[Any] = collections.deque()
        self._ready = threading.Condition()
        self._idle = 0
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, item: Any) -> None:
        with self._ready:
            if self._closed:
                return
            self._queue.append(item)
            if self._idle:
                self._ready.notify()
            elif len(self._threads) < self.count:
                thread = threading.Thread(target=self._work, name=f"pymap-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()

    def close(self) -> None:
        """Drop the items not started; the running ones finish (their threads then end)."""
        with self._ready:
            self._closed = True
            self._queue.clear()
            self._ready.notify_all()

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closed:
                    self._idle += 1
                    self._ready.wait()
                    self._idle -= 1
                if not self._queue:
                    return
                item = self._queue.popleft()
            try:
                self.run(item)
            except Exception:
                log.exception("a pymap worker failed")


class PyExecutor(Executor):
    """Runs each task's pickled call in a pool of ``threads`` worker threads (0: inline, on the driver's
    thread). A kill cannot interrupt a running call: the task is reported KILLED and its result dropped."""

    def __init__(self, threads: int = DEFAULT_THREADS) -> None:
        self.threads = threads
        self._workers: Workers | None = None
        self._lock = threading.Lock()
        self._active: set[str] = set()  # launched, not yet reported terminal

    def launch_task(self, driver: ExecutorDriver, task: TaskInfo) -> None:
        with self._lock:
            self._active.add(task.task_id)
        driver.send_status_update(task.task_id, TaskState.RUNNING)
        if self.threads == 0:
            self._run(driver, task)
            return
        if self._workers is None:
            self._workers = Workers(self.threads, lambda item: self._run(*item))
        self._workers.submit((driver, task))

    def _run(self, driver: ExecutorDriver, task: TaskInfo) -> None:
        with self._lock:
            if task.task_id not in self._active:  # killed before it started
                return
        state, message, data = run_call(task.data)
        with self._lock:
            if task.task_id not in self._active:  # killed while it ran
                return
            self._active.discard(task.task_id)
        driver.send_status_update(task.task_id, state, message, data)

    def kill_task(self, driver: ExecutorDriver, task_id: str) -> None:
        with self._lock:
            active = task_id in self._active
            self._active.discard(task_id)
        if active:
            driver.send_status_update(task_id, TaskState.KILLED, "killed: its result, if any, is dropped")

    def framework_message(self, driver: ExecutorDriver, data: bytes) -> None:
        if data.startswith(PING):
            driver.send_framework_message(PONG + data[len(PING):])
        else:
            log.warning("executor=%s ignored a framework message of %d bytes", driver.executor_id, len(data))

    def shutdown(self, driver: ExecutorDriver) -> None:
        with self._lock:
            left, self._active = sorted(self._active), set()
        for task_id in left:
            driver.send_status_update(task_id, TaskState.KILLED, "the executor was shut down")
        if self._workers is not None:
            self._workers.close()
        driver.stop()
