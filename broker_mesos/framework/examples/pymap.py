"""``map`` over a list in warm Python executors, one per agent: what a Celery user tries first.

    python -m broker_mesos.framework.examples.pymap --broker URL --items 1000

maps ``where`` (``x * x`` and which executor process computed it) over ``range(1000)`` on the agents
of the cluster and prints where the calls ran and a framework-message round trip per agent
(``map <n> items in <s>s``, ``agent <id> executor <ex> pid <pid> calls <n>``, ``ping <agent> <ms> ms``,
``done ok`` / ``done FAILED``). The API::

    from broker_mesos.framework.examples.pymap import PyMap, pmap, square
    pmap(square, range(100), broker_url)          # [0, 1, 4, 9, ...], in input order
    with PyMap(broker_url) as pm:                 # keep the executors warm between maps
        pm.map(square, range(100)); pm.ping("agent-1")

How it works: the scheduler keeps ONE Python executor per agent (``executors_per_agent``): an
``ExecutorInfo`` whose command is ``python -m broker_mesos.framework.examples.pymap --executor`` (the
executor side is ``pymap_executor.py``) with its own small resources. Each call ``fn(item)`` is one
task of ``cpus_per_task``/``mem_per_task`` naming that executor, whose ``data`` is
``pickle.dumps((fn, item))``; up to ``batch`` tasks go into the ACCEPT of one offer (what is left of
an offer is declined with ``refuse_seconds=0``, so it comes back in the next round). The agent starts
the executor with the first task and hands it the later ones over its local socket; the executor
sends TASK_RUNNING, runs the call in a worker thread and returns ``pickle.dumps(result)`` as the
TASK_FINISHED update's ``data`` (or the exception as the TASK_FAILED update's message, its traceback
as ``data``). A call whose task was lost or dropped (its agent went away, or the task never reached
it) is launched again, ``retries`` times at most, so a call runs at least once and maybe more. Results
come back in input order. ``PyMap.ping`` sends a framework message the executor answers with one of
its own. ``close`` (and the end of ``pmap``) tears the framework down, so the agents shut its
executors down.

Trust model (pickle): unpickling runs code, so both sides unpickle only what their own framework
produced. The executor unpickles only task ``data``, which reaches it from its agent, which took it from
the master, which accepts an ACCEPT only from the framework's principal (secure mode), and it runs as
the framework's task user, never as root or as the agent: a call can do nothing the framework could
not do with a command task. The scheduler unpickles only status ``data`` that the driver accepted from
the agent its task ran on (the agent forces the framework and executor ids of an executor's update), so
it trusts its own executors' results as much as the code it sent them. (In the master's development
mode, without principals, whoever may publish on the broker could forge either: use principals when
the broker is shared.) ``fn`` travels by reference
(module and name): it must be a module-level function importable where the executor runs (this module's
``square``, ``where`` and ``nap`` are), not a lambda or a function of ``__main__``.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import itertools
import logging
import os
import pickle
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from broker_mesos.bus.tls import TlsOptions
from broker_mesos.core import codec
from broker_mesos.core.protocol import Error, ExecutorInfo, Offer, TaskInfo, TaskState, TaskStatus
from broker_mesos.core.resources import Resources
from broker_mesos.framework.driver import SchedulerDriver, executor_info, task
from broker_mesos.framework.examples import broker_settings, common_arguments, emit, setup_logging
from broker_mesos.framework.examples.pymap_executor import DEFAULT_THREADS, PING, PONG, PyExecutor
from broker_mesos.framework.executor import run_executor
from broker_mesos.framework.scheduler import Scheduler

log = logging.getLogger(__name__)

MODULE = "broker_mesos.framework.examples.pymap"
DEFAULT_BATCH = 100  # tasks launched on one agent per offer
CPUS_PER_TASK = 0.01
MEM_PER_TASK = 1.0
EXECUTOR_CPUS = 0.1
EXECUTOR_MEM = 128.0
DEFAULT_RETRIES = 2  # launches again of a call whose task was lost or dropped (never ran to an end)
RETRIED_STATES = frozenset({TaskState.LOST, TaskState.DROPPED})
IDLE_REFUSE_SECONDS = 30.0  # offers declined while no call waits stay away this long (REVIVE clears it)
LATENCY_SAMPLES = 100_000  # offer-to-RUNNING latencies kept (the most recent ones)
POLL = 0.2


# -- functions the demo (and tests) map: importable wherever the executor runs --------------------


def square(x: int) -> int:
    return x * x


def where(x: int) -> tuple[int, int, str, str]:
    """``(x * x, pid, agent id, executor id)``: which executor process ran the call."""
    return x * x, os.getpid(), os.environ.get("BMESOS_AGENT_ID", ""), os.environ.get("BMESOS_EXECUTOR_ID", "")


def nap(seconds: float) -> int:
    """Sleep ``seconds``, then return the pid of the executor that ran the call (a slow call)."""
    time.sleep(seconds)
    return os.getpid()


# -- the scheduler side -------------------------------------------------------------------------


class TaskFailed(Exception):
    """Item ``index`` of a map did not produce a result: ``message`` says why (the exception's text),
    ``reason`` is the update's Mesos reason when the agent or master ended the task (e.g.
    ``REASON_EXECUTOR_TERMINATED``), ``remote_traceback`` the executor's traceback when the call raised."""

    def __init__(self, index: int, state: TaskState, message: str, remote_traceback: str = "",
                 reason: str = "") -> None:
        super().__init__(f"item {index}: {state.value}: {message}")
        self.index = index
        self.state = state
        self.message = message
        self.remote_traceback = remote_traceback
        self.reason = reason


class _Job:
    """One ``map``: its results by index, filled in by the driver thread."""

    def __init__(self, count: int) -> None:
        self.results: list[Any] = [None] * count
        self.remaining = count
        self.done = threading.Event()
        if count == 0:
            self.done.set()

    def set(self, index: int, value: Any) -> None:
        self.results[index] = value
        self.remaining -= 1
        if self.remaining == 0:
            self.done.set()


class _Ping:
    def __init__(self) -> None:
        self.answered = threading.Event()
        self.at = 0.0
        self.refused = ""


@dataclass(slots=True)
class _Call:
    """One call of a job, as the task that runs it now (``attempt`` 0, or its retries)."""

    job: _Job
    index: int
    payload: bytes
    base_id: str
    attempt: int = 0
    agent_id: str = ""  # where it was launched ("": waiting)


class PyMapScheduler(Scheduler):
    """Launches the calls waiting in ``submit``-ed jobs into this framework's executors, one per agent
    (round robin over ``executors`` there), and collects their results. A call whose task ended
    TASK_LOST or TASK_DROPPED (its agent went away, or the task never reached it) is launched again,
    as a new task, up to ``retries`` times: a call may then run more than once (at least once, as with
    Celery's late acknowledgement). At most ``max_in_flight`` calls (default ``2 * batch``) are
    launched and unfinished per agent at a time, so a slow agent is not handed a backlog it cannot
    start before the master gives its tasks up. Thread-safe: ``submit`` and ``ping`` are called from
    the user's thread, callbacks from the driver's."""

    def __init__(self, executors: Sequence[ExecutorInfo], task_resources: Resources, batch: int,
                 retries: int = DEFAULT_RETRIES, max_in_flight: int | None = None) -> None:
        if not executors:
            raise ValueError("at least one executor per agent")
        if batch < 1 or retries < 0 or (max_in_flight is not None and max_in_flight < 1):
            raise ValueError("batch and max_in_flight must be at least 1, retries not negative")
        self.retries = retries
        self.max_in_flight = max_in_flight or 2 * batch
        self.in_flight: collections.Counter[str] = collections.Counter()  # agent id -> its unfinished calls
        self.retried = 0
        self.executors = list(executors)
        self.task_resources = task_resources
        self.headroom = sum((e.resources for e in self.executors), Resources())  # their own, on first use
        self.batch = batch
        self.lock = threading.Lock()
        self.pending: collections.deque[tuple[str, bytes]] = collections.deque()  # (task id, payload)
        self.tasks: dict[str, _Call] = {}  # task id -> the call it runs
        self.launched_by: dict[str, str] = {}  # task id -> its ACCEPT's call id, until the task runs or ends
        self.running: set[str] = set()  # tasks whose TASK_RUNNING arrived and whose end has not
        self.offered_at: dict[str, float] = {}
        self.latencies: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLES)
        self.seen: dict[str, set[str]] = {}  # agent id -> executors that ran our tasks there
        self.pings: dict[str, _Ping] = {}  # nonce (or MESSAGE call id) -> its waiter
        self.registered_event = threading.Event()
        self.suppressed = False
        self.accepts = 0
        self._round_robin: dict[str, itertools.cycle[ExecutorInfo]] = {}
        self._jobs = itertools.count()

    # -- from the user's thread ---------------------------------------------------------------
    def submit(self, driver: SchedulerDriver, payloads: list[bytes]) -> _Job:
        job = _Job(len(payloads))
        prefix = f"m{next(self._jobs)}"
        with self.lock:
            for index, payload in enumerate(payloads):
                task_id = f"{prefix}-{index}"
                self.tasks[task_id] = _Call(job, index, payload, task_id)
                self.pending.append((task_id, payload))
            if payloads and self.suppressed:
                self.suppressed = False
                driver.revive()
        return job

    def abandon(self, driver: SchedulerDriver, job: _Job) -> None:
        """Stop waiting for ``job``: its waiting calls are dropped, its running tasks killed."""
        with self.lock:
            mine = {t for t, call in self.tasks.items() if call.job is job}
            self.pending = collections.deque(p for p in self.pending if p[0] not in mine)
            for task_id in mine:
                self._forget(task_id)
        for task_id in sorted(mine):
            driver.kill(task_id)

    def ping(self, driver: SchedulerDriver, agent_id: str, executor_id: str, timeout: float) -> float:
        nonce = uuid.uuid4().hex
        waiter = _Ping()
        with self.lock:
            self.pings[nonce] = waiter
        started = time.perf_counter()
        call_id = driver.send_framework_message(agent_id, executor_id, PING + nonce.encode())
        with self.lock:
            self.pings[call_id] = waiter
        try:
            if not waiter.answered.wait(timeout):
                raise TimeoutError(f"no answer from executor {executor_id} on agent {agent_id} within {timeout:g}s")
            if waiter.refused:
                raise RuntimeError(f"ping refused: {waiter.refused}")
            return waiter.at - started
        finally:
            with self.lock:
                self.pings.pop(nonce, None)
                self.pings.pop(call_id, None)

    # -- callbacks (the driver's thread) ------------------------------------------------------
    def registered(self, driver: SchedulerDriver, framework_id: str) -> None:
        self.registered_event.set()
        with self.lock:
            if self.pending and self.suppressed:
                self.suppressed = False
                driver.revive()

    def resource_offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        now = time.perf_counter()
        unused: list[str] = []
        with self.lock:
            for offer in offers:
                tasks = self._pack(offer, now)
                if not tasks:
                    unused.append(offer.offer_id)
                    continue
                call_id = driver.launch(offer, tasks, refuse_seconds=0.0)
                self.launched_by.update((t.task_id, call_id) for t in tasks)
                self.accepts += 1
            idle = not self.pending
            if unused:
                driver.decline(unused, IDLE_REFUSE_SECONDS if idle else 0.0)
            if idle and not self.suppressed:
                self.suppressed = True
                driver.suppress()

    def _pack(self, offer: Offer, now: float) -> list[TaskInfo]:
        """Up to ``batch`` waiting calls that fit in ``offer`` besides room for the executors (under lock)."""
        room = min(self.batch, self.max_in_flight - self.in_flight[offer.agent_id])
        if not self.pending or room <= 0 or not self.headroom <= offer.resources:
            return []
        free = offer.resources - self.headroom
        executors = self._round_robin.setdefault(offer.agent_id, itertools.cycle(self.executors))
        tasks: list[TaskInfo] = []
        while self.pending and len(tasks) < room and self.task_resources <= free:
            task_id, payload = self.pending.popleft()
            free = free - self.task_resources
            tasks.append(task(task_id, offer.agent_id, "", resources=self.task_resources, executor=next(executors),
                              data=payload))
            self.offered_at[task_id] = now
            self.tasks[task_id].agent_id = offer.agent_id
        self.in_flight[offer.agent_id] += len(tasks)
        return tasks

    def _forget(self, task_id: str) -> _Call:
        """``task_id`` ended (or is given up): drop what is kept about it (under lock)."""
        call = self.tasks.pop(task_id)
        self._unlaunch(task_id, call)
        self.running.discard(task_id)
        return call

    def _unlaunch(self, task_id: str, call: _Call) -> None:
        self.offered_at.pop(task_id, None)
        self.launched_by.pop(task_id, None)
        if call.agent_id:
            self.in_flight[call.agent_id] -= 1
            if not self.in_flight[call.agent_id]:
                del self.in_flight[call.agent_id]
            call.agent_id = ""

    def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
        with self.lock:
            entry = self.tasks.get(status.task_id)
            if entry is None:
                return
            if status.executor_id:
                self.seen.setdefault(status.agent_id, set()).add(status.executor_id)
            self.launched_by.pop(status.task_id, None)
            if status.state is TaskState.RUNNING:
                self.running.add(status.task_id)
                offered = self.offered_at.pop(status.task_id, None)
                if offered is not None:
                    self.latencies.append(time.perf_counter() - offered)
                return
            if not status.state.terminal:
                return
            self._forget(status.task_id)
            if status.state in RETRIED_STATES and entry.attempt < self.retries:
                self._retry(driver, entry, status)
                return
        entry.job.set(entry.index, _outcome(entry.index, status))

    def _retry(self, driver: SchedulerDriver, call: _Call, status: TaskStatus) -> None:
        """Launch ``call`` again as a new task (under lock)."""
        call.attempt += 1
        task_id = f"{call.base_id}-r{call.attempt}"
        self.tasks[task_id] = call
        self.pending.appendleft((task_id, call.payload))
        self.retried += 1
        log.info("framework=%s task=%s ended %s (%s): call %d launched again as %s", driver.framework_id,
                 status.task_id, status.state.value, status.reason or status.message, call.index, task_id)
        if self.suppressed:
            self.suppressed = False
            driver.revive()

    def call_refused(self, driver: SchedulerDriver, error: Error) -> None:
        with self.lock:
            ping = self.pings.get(error.call_id)
            if ping is not None:
                ping.refused = error.message
                ping.answered.set()
                return
            back = [t for t, call_id in self.launched_by.items() if call_id == error.call_id and t in self.tasks]
            for task_id in back:
                self._unlaunch(task_id, self.tasks[task_id])
            for task_id in reversed(back):
                self.pending.appendleft((task_id, self.tasks[task_id].payload))
            if back and self.suppressed:
                self.suppressed = False
                driver.revive()
        if back:
            log.warning("framework=%s ACCEPT refused (%s): %d call(s) wait for another offer", driver.framework_id,
                        error.message, len(back))
        else:
            log.warning("framework=%s %s refused: %s", driver.framework_id, error.call_type, error.message)

    def framework_message(self, driver: SchedulerDriver, agent_id: str, executor_id: str, data: bytes) -> None:
        if not data.startswith(PONG):
            log.warning("framework=%s ignored a message of %d bytes from executor %s on %s", driver.framework_id,
                        len(data), executor_id, agent_id)
            return
        with self.lock:
            waiter = self.pings.get(data[len(PONG):].decode(errors="replace"))
        if waiter is not None:
            waiter.at = time.perf_counter()
            waiter.answered.set()


def _outcome(index: int, status: TaskStatus) -> Any:
    """The call's result (unpickled from a TASK_FINISHED's data), else a ``TaskFailed``."""
    if status.state is TaskState.FINISHED:
        try:
            return _Result(pickle.loads(status.data))
        except Exception as exc:
            return TaskFailed(index, status.state, f"the result cannot be unpickled: {type(exc).__name__}: {exc}")
    message = status.message or status.reason or "no message"
    return TaskFailed(index, status.state, message, status.data.decode(errors="replace"), status.reason)


class _Result:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class PyMap:
    """A framework that maps Python callables over lists in warm executors (see the module doc).

    ``start()`` (or ``with``) connects and subscribes; ``map`` may be called many times (the executors
    stay warm until they are idle for the agent's ``--executor-idle-timeout``); ``close`` tears down."""

    def __init__(self, broker_url: str, *, name: str = "pymap", executors_per_agent: int = 1,
                 batch: int = DEFAULT_BATCH, cpus_per_task: float = CPUS_PER_TASK, mem_per_task: float = MEM_PER_TASK,
                 executor_cpus: float = EXECUTOR_CPUS, executor_mem: float = EXECUTOR_MEM,
                 threads: int = DEFAULT_THREADS, retries: int = DEFAULT_RETRIES, max_in_flight: int | None = None,
                 framework_id: str | None = None, role: str = "*",
                 tls: TlsOptions | None = None, connect_timeout: float = 15.0, python: str = sys.executable) -> None:
        if executors_per_agent < 1:
            raise ValueError("executors_per_agent must be at least 1")
        if threads < 0:
            raise ValueError("threads must not be negative")
        command = [python, "-m", MODULE, "--executor", "--threads", str(threads)]
        executors = [executor_info(f"py-{k}", command, cpus=executor_cpus, mem=executor_mem, name=f"{name} py-{k}")
                     for k in range(executors_per_agent)]
        self.scheduler = PyMapScheduler(executors, Resources.of(cpus=cpus_per_task, mem=mem_per_task), batch, retries,
                                        max_in_flight)
        self.driver = SchedulerDriver(self.scheduler, broker_url, name, framework_id=framework_id, role=role,
                                      tls=tls, connect_timeout=connect_timeout)
        self._closed = False

    @property
    def framework_id(self) -> str:
        return self.driver.framework_id

    @property
    def executors(self) -> dict[str, set[str]]:
        """Agent id -> the ids of this framework's executors that ran calls there."""
        with self.scheduler.lock:
            return {agent: set(ids) for agent, ids in self.scheduler.seen.items()}

    @property
    def running(self) -> int:
        """How many calls are running now (their TASK_RUNNING arrived, their end not yet)."""
        with self.scheduler.lock:
            return len(self.scheduler.running)

    def start(self, timeout: float = 30.0) -> PyMap:
        """Connect and wait until the master confirmed the SUBSCRIBE (``TimeoutError`` otherwise, and the
        driver is stopped)."""
        self.driver.start()
        deadline = time.monotonic() + timeout
        while not self.scheduler.registered_event.wait(POLL):
            if not self.driver.alive:
                self._closed = True
                self.driver.join(0)
                raise RuntimeError("the scheduler driver stopped before it subscribed")
            if time.monotonic() > deadline:
                self.close(teardown=False)
                raise TimeoutError(f"the master did not confirm SUBSCRIBE within {timeout:g}s")
        return self

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], *, timeout: float | None = None,
            return_exceptions: bool = False) -> list[Any]:
        """``[fn(item) for item in items]``, each call a task in an executor; results in input order.
        A call that failed raises its ``TaskFailed`` (the first by index), or, with
        ``return_exceptions``, stands in the list as one. ``TimeoutError`` after ``timeout`` seconds
        (the calls still running are killed)."""
        module = getattr(fn, "__module__", None)
        if module in (None, "__main__"):
            raise ValueError(f"{fn!r} must be a module-level function of an importable module (it travels by "
                             f"name, and the executor's __main__ is not yours)")
        payloads = [pickle.dumps((fn, item)) for item in items]
        for index, payload in enumerate(payloads):
            if len(payload) > codec.MAX_DATA_BYTES:
                raise ValueError(f"item {index} pickles to {len(payload)} bytes, over the {codec.MAX_DATA_BYTES} "
                                 f"byte limit of task data")
        job = self.scheduler.submit(self.driver, payloads)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not job.done.wait(POLL):
            if not self.driver.alive:
                self.driver.join(0)
                raise RuntimeError("the scheduler driver stopped")
            if deadline is not None and time.monotonic() > deadline:
                self.scheduler.abandon(self.driver, job)
                raise TimeoutError(f"{job.remaining} of {len(payloads)} calls unfinished after {timeout:g}s")
        results = []
        for value in job.results:
            if isinstance(value, _Result):
                results.append(value.value)
            elif return_exceptions:
                results.append(value)
            else:
                raise value
        return results

    def ping(self, agent_id: str, timeout: float = 10.0, executor_id: str | None = None) -> float:
        """Seconds for a framework message to reach this framework's executor on ``agent_id`` and its
        answer to come back (the executor must be running there: run a ``map`` first)."""
        return self.scheduler.ping(self.driver, agent_id, executor_id or self.scheduler.executors[0].executor_id,
                                   timeout)

    def close(self, teardown: bool = True) -> None:
        """TEARDOWN (the master kills the framework's tasks and the agents shut its executors down) and
        disconnect."""
        if self._closed:
            return
        self._closed = True
        if teardown:
            self.driver.teardown()
        self.driver.stop()
        self.driver.join(10.0)

    def __enter__(self) -> PyMap:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def pmap(fn: Callable[[Any], Any], items: Iterable[Any], broker_url: str, *, executors_per_agent: int = 1,
         batch: int = DEFAULT_BATCH, cpus_per_task: float = CPUS_PER_TASK, mem_per_task: float = MEM_PER_TASK,
         timeout: float | None = None, **options: Any) -> list[Any]:
    """``[fn(item) for item in items]`` on the cluster behind ``broker_url``, in a framework of its own
    that is torn down at the end (``options``: the rest of ``PyMap``'s)."""
    with PyMap(broker_url, executors_per_agent=executors_per_agent, batch=batch, cpus_per_task=cpus_per_task,
               mem_per_task=mem_per_task, **options) as pm:
        return pm.map(fn, items, timeout=timeout)


# -- command line -------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    broker, tls = broker_settings(args)
    pm = PyMap(broker, name=args.name, executors_per_agent=args.executors_per_agent, batch=args.batch,
               threads=args.threads, framework_id=args.framework_id, role=args.role, tls=tls,
               connect_timeout=args.connect_timeout)
    try:
        pm.start(args.connect_timeout + 15)
        emit(f"registered {pm.framework_id}")
        started = time.perf_counter()
        fn = importlib.import_module(MODULE).where  # by its importable name, not as __main__.where
        results = pm.map(fn, range(args.items), timeout=args.timeout, return_exceptions=True)
        elapsed = time.perf_counter() - started
        emit(f"map {args.items} items in {elapsed:.3f}s ({args.items / elapsed:,.0f} calls/s)")
        failed = [r for r in results if isinstance(r, TaskFailed)]
        for failure in failed[:10]:
            emit(f"failed {failure}")
        calls = collections.Counter((agent, executor, pid) for (_, pid, agent, executor) in
                                    (r for r in results if not isinstance(r, TaskFailed)))
        for (agent, executor, pid), count in sorted(calls.items()):
            emit(f"agent {agent} executor {executor} pid {pid} calls {count}")
        wrong = [i for i, r in enumerate(results) if not isinstance(r, TaskFailed) and r[0] != i * i]
        for agent in sorted({agent for agent, _, _ in calls}):
            emit(f"ping {agent} {pm.ping(agent) * 1000:.1f} ms")
        ok = not failed and not wrong
        emit(f"done {'ok' if ok else 'FAILED'}")
        return 0 if ok else 1
    finally:
        pm.close(teardown=not args.no_teardown)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    common_arguments(parser, "pymap")
    parser.add_argument("--executor", action="store_true",
                        help="run as the framework's executor (what the agent starts; not for people)")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help=f"worker threads per executor; 0 runs calls on the driver's thread (default "
                             f"{DEFAULT_THREADS})")
    parser.add_argument("--items", type=int, default=1000, help="how many calls to map (default 1000)")
    parser.add_argument("--executors-per-agent", type=int, default=1, help="warm executors per agent (default 1)")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                        help=f"most calls launched on one agent per offer (default {DEFAULT_BATCH})")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds the map may take (default 120)")
    args = parser.parse_args(argv)
    if args.threads < 0 or args.items < 0 or args.executors_per_agent < 1 or args.batch < 1:
        parser.error("--threads and --items must not be negative; --executors-per-agent and --batch at least 1")
    if args.executor:
        logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        run_executor(PyExecutor(args.threads))
    setup_logging(args.log_level)
    return _demo(args)


if __name__ == "__main__":
    sys.exit(main())
