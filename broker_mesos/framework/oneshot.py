"""The built-in one-shot framework behind ``bmesos run``: launch N copies of a command, wait for them.

``RunPlan`` is the pure bookkeeping (which tasks wait, which ACCEPT carried which tasks, final states);
``OneShotScheduler`` wires it to the driver and reports progress through a ``RunReporter``.
Offers are packed: as many waiting tasks as fit go into one ACCEPT per offer; what cannot be used is
declined for a short while, and once every task is launched the framework suppresses offers.
"""

from __future__ import annotations

import collections
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from broker_mesos.core.protocol import CommandInfo, Error, Offer, TaskInfo, TaskState, TaskStatus
from broker_mesos.core.resources import Resources
from broker_mesos.framework.driver import SchedulerDriver, identifier
from broker_mesos.framework.scheduler import Scheduler

log = logging.getLogger(__name__)

SHORT_REFUSE_SECONDS = 1.0
DONE_REFUSE_SECONDS = 3600.0
_SHELL_SYNTAX = re.compile(r"[\s|&;<>()$`\\\"'*?\[\]#~={}!]")
_KILLED_OR_LOST = frozenset({TaskState.KILLED, TaskState.LOST, TaskState.DROPPED})


def command_for(argv: Sequence[str]) -> CommandInfo:
    """The argv runs as is (no shell), except one single argument with spaces or shell syntax,
    which runs through ``/bin/sh -c`` (``bmesos run -- 'echo a | wc -c'``)."""
    if not argv:
        raise ValueError("no command given")
    if len(argv) == 1 and _SHELL_SYNTAX.search(argv[0]):
        return CommandInfo(value=argv[0], shell=True)
    return CommandInfo(value=argv[0], shell=False, arguments=list(argv))


@dataclass
class RunPlan:
    """Which of the ``count`` tasks still wait for an offer, which are in flight, how each ended."""

    name: str
    count: int
    resources: Resources
    command: CommandInfo
    pending: collections.deque[str] = field(default_factory=collections.deque)
    in_flight: dict[str, list[str]] = field(default_factory=dict)  # ACCEPT call id -> its task ids
    last: dict[str, TaskStatus] = field(default_factory=dict)  # task id -> latest status
    finals: dict[str, TaskStatus] = field(default_factory=dict)  # task id -> terminal status

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("count must be at least 1")
        prefix = identifier(self.name, "run")
        self.task_ids = [f"{prefix}-{i}" for i in range(self.count)]
        self.pending.extend(self.task_ids)
        self._known = set(self.task_ids)

    # -- launching ----------------------------------------------------------------------------
    def pack(self, offer: Offer) -> list[TaskInfo]:
        """Take as many waiting tasks as fit in ``offer`` (they leave ``pending``)."""
        tasks: list[TaskInfo] = []
        free = offer.resources
        while self.pending and self.resources <= free:
            task_id = self.pending.popleft()
            free = free - self.resources
            tasks.append(TaskInfo(task_id=task_id, agent_id=offer.agent_id, resources=self.resources,
                                  command=self.command, name=task_id))
        return tasks

    def sent(self, call_id: str, tasks: Sequence[TaskInfo]) -> None:
        self.in_flight[call_id] = [t.task_id for t in tasks]

    def refused(self, call_id: str) -> list[str]:
        """The ACCEPT ``call_id`` was refused whole: its tasks wait again. Returns them."""
        back = [t for t in self.in_flight.pop(call_id, []) if t not in self.last]
        self.pending.extendleft(reversed(back))
        return back

    # -- progress -----------------------------------------------------------------------------
    def record(self, status: TaskStatus) -> bool:
        """Note ``status``; True when it is the first terminal state of one of our tasks."""
        if status.task_id not in self._known or status.task_id in self.finals:
            return False
        self.last[status.task_id] = status
        if not status.state.terminal:
            return False
        self.finals[status.task_id] = status
        return True

    @property
    def all_launched(self) -> bool:
        return not self.pending

    @property
    def done(self) -> bool:
        return len(self.finals) == self.count

    @property
    def running(self) -> int:
        return sum(1 for t, s in self.last.items() if s.state == TaskState.RUNNING and t not in self.finals)

    @property
    def finished(self) -> int:
        return sum(1 for s in self.finals.values() if s.state == TaskState.FINISHED)

    @property
    def killed_or_lost(self) -> int:
        return sum(1 for s in self.finals.values() if s.state in _KILLED_OR_LOST)

    @property
    def failed(self) -> int:
        return len(self.finals) - self.finished - self.killed_or_lost

    def unsuccessful(self) -> list[TaskStatus]:
        return [s for t in self.task_ids if (s := self.finals.get(t)) is not None and s.state != TaskState.FINISHED]

    def summary(self) -> str:
        return f"{self.finished} finished, {self.failed} failed, {self.killed_or_lost} killed/lost"

    @property
    def exit_code(self) -> int:
        return 0 if self.done and self.finished == self.count else 1


def describe(status: TaskStatus) -> str:
    """One greppable line: ``task <id> <STATE> on <agent>[ exit N]``."""
    line = f"task {status.task_id} {status.state.value} on {status.agent_id}"
    if status.exit_code is not None:
        line += f" exit {status.exit_code}"
    return line


class RunReporter(Protocol):
    """What the CLI shows; called on the driver thread."""

    def launched(self, plan: RunPlan, tasks: Sequence[TaskInfo]) -> None: ...

    def updated(self, plan: RunPlan, status: TaskStatus, final: bool) -> None: ...

    def problem(self, message: str) -> None: ...

    def finished(self, plan: RunPlan) -> None: ...


class OneShotScheduler(Scheduler):
    """Launch every task of ``plan`` once, then TEARDOWN when all reached a final state."""

    def __init__(self, plan: RunPlan, reporter: RunReporter) -> None:
        self.plan = plan
        self.reporter = reporter
        self._suppressed = False
        self._torn_down = False

    def registered(self, driver: SchedulerDriver, framework_id: str) -> None:
        if not self.plan.all_launched and self._suppressed:
            driver.revive()
            self._suppressed = False

    def resource_offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        unused: list[str] = []
        for offer in offers:
            tasks = self.plan.pack(offer)
            if not tasks:
                unused.append(offer.offer_id)
                continue
            refuse = DONE_REFUSE_SECONDS if self.plan.all_launched else SHORT_REFUSE_SECONDS
            call_id = driver.launch(offer, tasks, refuse_seconds=refuse)
            self.plan.sent(call_id, tasks)
            log.info("framework=%s offer=%s agent=%s launching %d task(s)", driver.framework_id, offer.offer_id,
                     offer.agent_id, len(tasks))
            self.reporter.launched(self.plan, tasks)
        if unused:
            driver.decline(unused, DONE_REFUSE_SECONDS if self.plan.all_launched else SHORT_REFUSE_SECONDS)
        if self.plan.all_launched and not self._suppressed:
            driver.suppress()
            self._suppressed = True

    def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
        final = self.plan.record(status)
        self.reporter.updated(self.plan, status, final)
        if final and self.plan.done and not self._torn_down:
            self._torn_down = True
            driver.teardown()
            self.reporter.finished(self.plan)

    def call_refused(self, driver: SchedulerDriver, error: Error) -> None:
        back = self.plan.refused(error.call_id)
        if back:
            log.warning("framework=%s ACCEPT refused (%s); %d task(s) wait for another offer",
                        driver.framework_id, error.message, len(back))
            if self._suppressed:
                driver.revive()
                self._suppressed = False
            return
        self.reporter.problem(f"{error.call_type or 'call'} refused by the master: {error.message}")
