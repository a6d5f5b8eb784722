"""The master's state machine: cluster state in, effects out, no I/O and no clock of its own.

Every input is a method taking the decoded message and ``now`` (seconds, from the caller's clock) and
returning a list of effects for the process shell to publish. Calls the master refuses raise
``CallRefused`` *before* changing anything, so a refused call leaves the state as it was.

Resources of an agent are always in exactly one of three places: ``free`` (in the pool), an outstanding
offer, or a live task. ``check_invariants`` asserts that books balance; tests call it after every step.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

from broker_mesos.core import protocol
from broker_mesos.core.allocation import admin as allocation_admin
from broker_mesos.core.allocation.engine import Allocation, Allocator, add_all
from broker_mesos.core.allocation.registry import PolicyRegistry
from broker_mesos.core.errors import CallRefused, PolicyError
from broker_mesos.core.master_acl import AclRules
from broker_mesos.core.master_agents import AgentRules
from broker_mesos.core.master_executors import ExecutorPlan, ExecutorRules
from broker_mesos.core.master_model import (
    AgentRecord,
    Effect,
    ExecutorRecord,
    FrameworkRecord,
    MasterConfig,
    OfferRecord,
    PublishEvent,
    PublishStatus,
    TaskRecord,
    ToAgent,
    ToFramework,
)
from broker_mesos.core.protocol import TaskState, TaskStatus
from broker_mesos.core.resources import EMPTY, MAX_RANGES, Resources
from broker_mesos.core.security import FrameworkAcl

# the data model is imported from here by the process shell, the registry and the tests
__all__ = ["AgentRecord", "Effect", "ExecutorRecord", "FrameworkRecord", "MasterConfig", "MasterState",
           "OfferRecord", "PublishEvent", "PublishStatus", "TaskRecord", "ToAgent", "ToFramework"]

LIVENESS_CHECK_PERIOD = 0.1  # seconds between scans for silent agents and frameworks past failover
MAX_FILTERS_PER_AGENT = 64  # live decline filters one framework keeps on one agent before merging them


# -- the state machine ------------------------------------------------------------------------


class MasterState(ExecutorRules, AgentRules, AclRules):
    """Agents, frameworks, tasks, executors and offers, and the rules that change them."""

    def __init__(self, config: MasterConfig, policies: PolicyRegistry | None = None,
                 offer_token: Callable[[], str] | None = None) -> None:
        self.config = config
        # offer ids end with this: the process shell passes a secret random one, so an offer id cannot
        # be guessed by another client; the default (tests, the simulator) is deterministic
        self.offer_token = offer_token or _counter_token()
        self.policies = policies or PolicyRegistry()
        self.allocator = Allocator(self.policies.create(config.allocator, dict(config.allocator_params)))
        self.agents: dict[str, AgentRecord] = {}
        self.frameworks: dict[str, FrameworkRecord] = {}
        self.tasks: dict[tuple[str, str], TaskRecord] = {}
        self.offers: dict[str, OfferRecord] = {}
        # (agent id, framework id, executor id) -> the executor booked there
        self.executors: dict[tuple[str, str, str], ExecutorRecord] = {}
        self.completed: collections.OrderedDict[tuple[str, str], TaskRecord] = collections.OrderedDict()
        self.total = Resources()
        self.changes = 0
        self.last_round = float("-inf")
        self.rounds = 0
        self._offer_ids = itertools.count(1)
        self._framework_seq = itertools.count(1)
        self._status_ids = itertools.count(1)
        self._next_filter_expiry = float("inf")
        # agents removed for silence -> the tasks declared LOST with them (killed if the agent returns)
        self.removed_agents: collections.OrderedDict[str, set[tuple[str, str]]] = collections.OrderedDict()
        self.draining: set[str] = set()  # agents an operator drains (DRAIN_AGENT): offered nothing
        self.gone_agents: collections.OrderedDict[str, float] = collections.OrderedDict()  # MARK_AGENT_GONE
        self._next_liveness_check = float("-inf")
        # until then, tasks agents report that this master never launched are adopted, not killed: set
        # by the process shell when it takes over (they may be a dead predecessor's unpersisted launches)
        self.adopt_until = float("-inf")
        self.acls: dict[str, FrameworkAcl] = {}  # framework principal -> roles and OS users it may use

    # -- framework calls --------------------------------------------------------------------
    def subscribe(self, call: protocol.Subscribe, reply_to: str | None, call_id: str, now: float,
                  consuming: bool = True) -> list[Effect]:
        """Add or update a framework. ``consuming=False``: nobody is known to consume its offers queue
        yet (the process shell checks, then calls ``framework_connected``): a new framework gets no
        offers meanwhile and its failover clock runs; a known one keeps its connection state."""
        framework = self.frameworks.get(call.framework_id)
        if framework is None:
            framework = FrameworkRecord(call.framework_id, call.name, call.role, call.weight,
                                        next(self._framework_seq), reply_to,
                                        failover_timeout=call.failover_timeout,
                                        partition_aware=call.partition_aware, user=call.user)
            self.frameworks[call.framework_id] = framework
            for key, task in self.tasks.items():
                if key[0] == call.framework_id:
                    framework.tasks.add(task.task_id)
                    framework.allocated = framework.allocated + task.resources.quantity()
            for executor in self.executors.values():  # still booked after a teardown, or adopted
                if executor.framework_id == call.framework_id:
                    framework.executors.add((executor.agent_id, executor.executor_id))
                    framework.allocated = framework.allocated + executor.resources.quantity()
            if not consuming:
                framework.disconnected_at = now
                framework.suppressed = True
            event = "framework.added"
        else:
            framework.name, framework.role, framework.weight = call.name, call.role, call.weight
            framework.reply_to = reply_to
            framework.failover_timeout = call.failover_timeout
            framework.partition_aware = call.partition_aware
            framework.user = call.user
            if consuming:
                self.framework_connected(call.framework_id, now)
            event = "framework.resubscribed"
        self._changed()
        return [ToFramework(call.framework_id, protocol.Subscribed(call.framework_id, self.config.master_id),
                            reply_to, call_id),
                PublishEvent(event, {"framework_id": call.framework_id, "name": call.name, "role": call.role})]

    def framework_disconnected(self, framework_id: str, now: float) -> list[Effect]:
        """Its scheduler is gone: no offers meanwhile (outstanding ones are rescinded); its tasks keep
        running until ``failover_timeout`` passes without it coming back."""
        framework = self.frameworks.get(framework_id)
        if framework is None or framework.disconnected_at is not None:
            return []
        framework.disconnected_at = now
        framework.suppressed_before_disconnect = framework.suppressed
        framework.suppressed = True
        rescinded = sorted(framework.offers)
        for offer_id in rescinded:
            self._release_offer(self.offers[offer_id])
        effects: list[Effect] = [PublishEvent("framework.disconnected", {
            "framework_id": framework_id, "failover_timeout": framework.failover_timeout})]
        if rescinded:
            effects.insert(0, ToFramework(framework_id, protocol.Rescind(rescinded)))
        return effects

    def framework_connected(self, framework_id: str, now: float) -> None:
        """Its scheduler is back (re-SUBSCRIBE or consuming again) within its failover timeout."""
        framework = self.frameworks.get(framework_id)
        if framework is not None and framework.disconnected_at is not None:
            framework.disconnected_at = None
            framework.suppressed = framework.suppressed_before_disconnect
            self._changed()

    def _framework(self, framework_id: str) -> FrameworkRecord:
        framework = self.frameworks.get(framework_id)
        if framework is None:
            raise CallRefused(f"framework {framework_id} is not subscribed: send SUBSCRIBE first")
        return framework

    def accept(self, call: protocol.Accept, now: float) -> list[Effect]:
        """Launch ``call.tasks`` on the named offers, or refuse the whole call (nothing launches).

        A refused ACCEPT still uses up the caller's own offers it names (their resources go back to the
        pool), as in Mesos, so a buggy framework cannot hold resources by sending bad calls. A task whose
        ExecutorInfo conflicts with its executor's (``_plan_executors``) alone ends TASK_ERROR.
        """
        framework = self._framework(call.framework_id)
        try:
            offered, charged, plan = self._validate_accept(framework, call, now)
        except CallRefused:
            for offer_id in set(call.offer_ids):
                offer = self.offers.get(offer_id)
                if offer is not None and offer.framework_id == framework.framework_id:
                    self._release_offer(offer)
            raise
        for offer_id in call.offer_ids:
            self._release_offer(self.offers[offer_id])
        by_agent: dict[str, list[protocol.TaskInfo]] = {}
        side_effects: list[Effect] = []
        for task in call.tasks:
            key = (framework.framework_id, task.task_id)
            self.completed.pop(key, None)
            error = plan.errors.get(task.task_id)
            if error is not None:
                status = self._master_status(framework.framework_id, task.task_id, task.agent_id, TaskState.ERROR,
                                             "REASON_TASK_INVALID", error, now)
                self._complete(key, TaskRecord(task.task_id, framework.framework_id, task.agent_id, task.resources,
                                               TaskState.ERROR, last_status=status, launched_at=now))
                side_effects.append(PublishStatus(status))
                continue
            if not task.user and framework.user:  # the agent runs it as the framework's user
                task = dataclasses.replace(task, user=framework.user)
            side_effects.extend(self._launch_with_executor(framework.framework_id, task, plan, now))
            self._book_task(TaskRecord(task.task_id, framework.framework_id, task.agent_id, task.resources,
                                       TaskState.STAGING, launched_at=now))
            by_agent.setdefault(task.agent_id, []).append(task)
        if call.refuse_seconds > 0:
            for agent_id, resources in offered.items():
                unused = resources - charged.get(agent_id, Resources())
                if unused:
                    self._filter(framework, agent_id, unused, now + call.refuse_seconds)
        effects: list[Effect] = [ToAgent(agent_id, protocol.RunTasks(framework.framework_id, tasks))
                                 for agent_id, tasks in by_agent.items()]
        return effects + side_effects

    def _validate_accept(self, framework: FrameworkRecord, call: protocol.Accept,
                         now: float) -> tuple[dict[str, Resources], dict[str, Resources], ExecutorPlan]:
        """Check an ACCEPT without changing anything; returns the offered resources per agent, what the
        launches take of them per agent (tasks, plus the executors they book), and the executor plan."""
        if not call.offer_ids:
            raise CallRefused("ACCEPT names no offers")
        if len(set(call.offer_ids)) != len(call.offer_ids):
            raise CallRefused("ACCEPT names the same offer twice")
        offered: dict[str, Resources] = {}
        for offer_id in call.offer_ids:
            offer = self.offers.get(offer_id)
            if offer is None:
                raise CallRefused(f"offer {offer_id} is unknown, expired or already used")
            if offer.framework_id != framework.framework_id:
                raise CallRefused(f"offer {offer_id} was made to another framework")
            if offer.expires_at <= now:
                raise CallRefused(f"offer {offer_id} has expired")
            offered[offer.agent_id] = offered.get(offer.agent_id, Resources()) + offer.resources
        wanted: dict[str, Resources] = {}
        seen: set[str] = set()
        for task in call.tasks:
            if task.task_id in seen:
                raise CallRefused(f"task id {task.task_id} appears twice in the ACCEPT")
            seen.add(task.task_id)
            existing = self.tasks.get((framework.framework_id, task.task_id))
            if existing is not None:
                raise CallRefused(f"task id {task.task_id} is already in use by a live task")
            if task.agent_id not in offered:
                raise CallRefused(f"task {task.task_id} names agent {task.agent_id}, which none of the offers is on")
            if not task.resources:
                raise CallRefused(f"task {task.task_id} asks for no resources")
            command = task.command if task.executor is None else task.executor.command
            if not command.value and not command.arguments:
                what = "task" if task.executor is None else "the executor of task"
                raise CallRefused(f"{what} {task.task_id} has no command")
        plan = self._plan_executors(framework.framework_id, call.tasks)
        for task in call.tasks:
            if task.task_id not in plan.errors:
                wanted[task.agent_id] = wanted.get(task.agent_id, Resources()) + plan.charge(task)
        for agent_id, want in wanted.items():
            if not want <= offered[agent_id]:
                raise CallRefused(f"tasks on agent {agent_id} need {want} but the offers hold {offered[agent_id]}")
        return offered, wanted, plan

    def decline(self, call: protocol.Decline, now: float) -> list[Effect]:
        framework = self._framework(call.framework_id)
        for offer_id in call.offer_ids:
            offer = self.offers.get(offer_id)
            if offer is None or offer.framework_id != framework.framework_id:
                continue  # declining an offer that is gone is harmless, as in Mesos
            self._release_offer(offer)
            if call.refuse_seconds > 0:
                self._filter(framework, offer.agent_id, offer.resources, now + call.refuse_seconds)
        return []

    def kill(self, call: protocol.Kill, now: float) -> list[Effect]:
        framework = self._framework(call.framework_id)
        by_agent: dict[str, list[str]] = {}
        effects: list[Effect] = []
        answers: list[TaskStatus] = []
        for task_id in call.task_ids:
            task = self.tasks.get((framework.framework_id, task_id))
            if task is None:  # told to the framework alone: nothing follows a terminal update on `status`
                answers.append(self._known_state(framework.framework_id, task_id, now,
                                                 "kill of a task that is not running"))
                continue
            by_agent.setdefault(task.agent_id, []).append(task_id)
        effects.extend(ToAgent(agent_id, protocol.KillTasks(framework.framework_id, ids))
                       for agent_id, ids in by_agent.items())
        if answers:
            effects.append(ToFramework(framework.framework_id, protocol.Update(answers)))
        return effects

    def _known_state(self, framework_id: str, task_id: str, now: float, unknown: str) -> TaskStatus:
        """What the master knows of a task that is not live: its terminal state if remembered, else
        TASK_LOST with an empty agent id (unknown)."""
        done = self.completed.get((framework_id, task_id))
        if done is None:
            return self._master_status(framework_id, task_id, "", TaskState.LOST, "REASON_RECONCILIATION",
                                       f"{unknown}, unknown to the master", now)
        return self._master_status(framework_id, task_id, done.agent_id, done.state, "REASON_RECONCILIATION",
                                   unknown, now)

    def revive(self, call: protocol.Revive, now: float) -> list[Effect]:
        framework = self._framework(call.framework_id)
        framework.suppressed = False
        framework.filters.clear()
        self.allocator.wake()
        self._changed()
        return []

    def suppress(self, call: protocol.Suppress, now: float) -> list[Effect]:
        self._framework(call.framework_id).suppressed = True
        return []

    def reconcile(self, call: protocol.Reconcile, reply_to: str | None, call_id: str, now: float) -> list[Effect]:
        framework = self._framework(call.framework_id)
        fw = framework.framework_id
        if call.task_ids:
            keys = [(fw, task_id) for task_id in call.task_ids]
        else:
            keys = [(fw, task_id) for task_id in sorted(framework.tasks)]
        updates = []
        for key in keys:
            task = self.tasks.get(key)
            if task is None:
                updates.append(self._known_state(fw, key[1], now, "task is not running"))
            else:
                updates.append(self._master_status(fw, task.task_id, task.agent_id, task.state,
                                                   "REASON_RECONCILIATION", "", now))
        return [ToFramework(fw, protocol.Update(updates), reply_to, call_id)]

    def teardown(self, call: protocol.Teardown, now: float) -> list[Effect]:
        framework = self._framework(call.framework_id)
        effects = self.kill(protocol.Kill(framework.framework_id, sorted(framework.tasks)), now)
        effects.extend(self._shutdown_framework_executors(framework))
        for offer_id in list(framework.offers):
            self._release_offer(self.offers[offer_id])
        del self.frameworks[framework.framework_id]
        self._changed()
        effects.append(PublishEvent("framework.removed", {"framework_id": framework.framework_id}))
        return effects

    # -- status updates ---------------------------------------------------------------------
    def status_update(self, status: TaskStatus, now: float) -> list[Effect]:
        """Record a task's new state; a terminal state returns its resources to the pool."""
        key = (status.framework_id, status.task_id)
        task = self.tasks.get(key)
        if task is None:
            return []  # already terminal (a duplicate) or never known: nothing to change
        if task.agent_id != status.agent_id:
            return []  # only the task's own agent (or the master for it) speaks for it
        task.note(status)
        if not task.state.terminal:  # a task the master declared LOST keeps that state while it drains
            task.state = status.state
            task.last_status = status
        if status.state.terminal:
            self._unbook_task(task)
            self._complete(key, task)
        self._changed()
        agent = self.agents.get(task.agent_id)
        return self._drained_check(agent) if agent is not None else []

    # -- time -------------------------------------------------------------------------------
    def round_due(self, now: float) -> bool:
        if now >= self._next_filter_expiry:
            self._expire_filters(now)
        if not self.changes:
            return False
        return self.changes >= self.config.batch_threshold or now - self.last_round >= self.config.allocation_interval

    def tick(self, now: float) -> list[Effect]:
        """Rescind expired offers, remove silent agents and frameworks gone past their failover
        timeout, then run an allocation round if one is due."""
        effects = self._expire_offers(now)
        if now >= self._next_liveness_check:
            self._next_liveness_check = now + LIVENESS_CHECK_PERIOD
            effects.extend(self._check_liveness(now))
            if self.draining:
                effects.extend(self.drain_tick(now))
        if self.round_due(now):
            effects.extend(self.allocation_round(now))
        return effects

    def allocation_round(self, now: float) -> list[Effect]:
        """Offer the free resources of the agents that changed (all of them in a full round), under the
        current allocator policy, batched into one OFFERS message per framework."""
        self.changes = 0
        self.last_round = now
        self.rounds += 1

        def filtered(framework_id: str, agent_id: str, resources: Resources) -> bool:
            """Refused only if everything on offer now was refused before (Mesos' filter semantics), by
            one decline or several: declines of two offers on one agent keep away their union."""
            refused = self.frameworks[framework_id].filters.get(agent_id)
            if not refused:
                return False
            live = [held for until, held in refused if until > now]
            return bool(live) and resources <= (live[0] if len(live) == 1 else add_all(Resources(), live))

        agents = self.agents
        if self.draining:  # a draining agent is offered nothing (one pass over the agents while any drains)
            agents = {agent_id: a for agent_id, a in agents.items() if agent_id not in self.draining}
        allocations = self.allocator.round(agents, self.frameworks, self.total, filtered, now)
        per_framework: dict[str, list[protocol.Offer]] = {}
        offered: dict[str, list[Resources]] = {}
        timeout = self.config.offer_timeout
        for alloc in allocations:
            offer = self._make_offer(alloc, now)
            agent = self.agents[alloc.agent_id]
            offered.setdefault(alloc.framework_id, []).append(offer.resources)
            per_framework.setdefault(alloc.framework_id, []).append(protocol.Offer(
                offer.offer_id, offer.framework_id, agent.agent_id, agent.hostname, offer.resources,
                dict(agent.attributes), timeout))
        for framework_id, bundles in offered.items():  # one sum per framework, not one per offer
            framework = self.frameworks[framework_id]
            framework.allocated = add_all(framework.allocated, [b.quantity() for b in bundles])
        effects: list[Effect] = [ToFramework(fw, protocol.Offers(offers)) for fw, offers in per_framework.items()]
        if per_framework:
            effects.append(PublishEvent("allocation.round", {
                "round": self.rounds, "offers": len(allocations), "frameworks": len(per_framework),
                "agents": self.allocator.last_round_agents, "full": self.allocator.last_round_full,
                "policy": self.allocator.policy.name}))
        return effects

    # -- admin calls (operators, `bmesos admin`) ----------------------------------------------
    def admin(self, call: Any, reply_to: str | None, call_id: str, now: float) -> list[Effect]:
        """SET_ALLOCATOR / GET_ALLOCATOR / SET_ROLE / GET_ROLES / SET_ACL / GET_ACLS, answered on
        ``reply_to``. A new policy applies from the next round (a full one); outstanding offers stay
        valid, none is made twice. DRAIN_AGENT / UNDRAIN_AGENT / MARK_AGENT_GONE: ``core.master_agents``."""
        if isinstance(call, protocol.DrainAgent):
            return self.drain_agent(call, reply_to, call_id, now)
        if isinstance(call, protocol.UndrainAgent):
            return self.undrain_agent(call, reply_to, call_id, now)
        if isinstance(call, protocol.MarkAgentGone):
            return self.mark_agent_gone(call, reply_to, call_id, now)
        if isinstance(call, protocol.SetAcl):
            reply, events = self.set_acl(call)
        elif isinstance(call, protocol.GetAcls):
            reply, events = self.acls_info(), []
        else:
            try:
                reply, events = allocation_admin.apply(call, self.allocator, self.policies, self.frameworks)
            except PolicyError as exc:
                raise CallRefused(str(exc)) from None
        if events:
            self._changed()
        return [ToFramework("", reply, reply_to, call_id), *(PublishEvent(kind, detail) for kind, detail in events)]

    def operator_kill(self, call: protocol.OperatorKill, reply_to: str | None, call_id: str,
                      now: float) -> list[Effect]:
        """An operator's kill (``bmesos kill``): each task's agent gets KILL_TASKS as for its framework's
        own KILL (the task ends TASK_KILLED on `status`), also for a framework not (re)subscribed yet.
        Refused whole if a task is not live; answered with UPDATE: their states as the kill went out."""
        missing = [f"{ref.framework_id}/{ref.task_id}" for ref in call.tasks
                   if (ref.framework_id, ref.task_id) not in self.tasks]
        if missing:
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise CallRefused(f"not live (ended or unknown): {', '.join(missing[:10])}{more}; nothing killed")
        by_agent: dict[tuple[str, str], list[str]] = {}
        states: list[TaskStatus] = []
        for ref in dict.fromkeys(call.tasks):
            task = self.tasks[(ref.framework_id, ref.task_id)]
            by_agent.setdefault((task.agent_id, task.framework_id), []).append(task.task_id)
            states.append(self._master_status(task.framework_id, task.task_id, task.agent_id, task.state,
                                              "REASON_OPERATOR_KILL", "kill requested by an operator", now))
        effects: list[Effect] = [ToAgent(agent_id, protocol.KillTasks(framework_id, ids))
                                 for (agent_id, framework_id), ids in by_agent.items()]
        effects.append(ToFramework("", protocol.Update(states), reply_to, call_id))
        effects.append(PublishEvent("tasks.killed_by_operator", {"tasks": len(states)}))
        return effects

    def _make_offer(self, alloc: Allocation, now: float) -> OfferRecord:
        """Book an offer against its agent and framework; the caller adds it to ``framework.allocated``.
        An offer never holds more ranges per resource than a message may carry (free ports fragment as
        tasks take some): the rest stays in the pool for the next round."""
        if any(len(r) > MAX_RANGES for r in alloc.resources.ranges.values()):
            capped = Resources(alloc.resources.scalars, {k: v[:MAX_RANGES] for k, v in alloc.resources.ranges.items()},
                               alloc.resources.sets)
            alloc = Allocation(alloc.framework_id, alloc.agent_id, capped)
        offer_id = f"{self.config.master_id}-O{next(self._offer_ids)}-{self.offer_token()}"
        offer = OfferRecord(offer_id, alloc.framework_id, alloc.agent_id, alloc.resources,
                            now + self.config.offer_timeout)
        self.offers[offer.offer_id] = offer
        agent = self.agents[alloc.agent_id]
        whole = alloc.resources is agent.free or alloc.resources == agent.free
        agent.free = EMPTY if whole else agent.free - alloc.resources
        agent.offers.add(offer.offer_id)
        self.frameworks[alloc.framework_id].offers.add(offer.offer_id)
        return offer

    def _release_offer(self, offer: OfferRecord) -> None:
        del self.offers[offer.offer_id]
        agent = self.agents[offer.agent_id]
        agent.offers.discard(offer.offer_id)
        agent.free = agent.free + offer.resources
        self.allocator.agent_changed(agent.agent_id)
        framework = self.frameworks.get(offer.framework_id)
        if framework is not None:
            framework.offers.discard(offer.offer_id)
            framework.allocated = framework.allocated - offer.resources.quantity()
        self._changed()

    def _expire_offers(self, now: float) -> list[Effect]:
        expired: dict[str, list[str]] = {}
        for offer in [o for o in self.offers.values() if o.expires_at <= now]:
            self._release_offer(offer)
            expired.setdefault(offer.framework_id, []).append(offer.offer_id)
        return [ToFramework(fw, protocol.Rescind(ids)) for fw, ids in expired.items()]

    def _check_liveness(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        silent = [a for a in self.agents.values() if self.config.max_missed_heartbeats and now >= a.grace_until
                  and now - a.last_seen > self.agent_timeout(a)]
        for agent in silent:
            missed = (now - agent.last_seen) / (self.config.agent_ping_timeout or agent.heartbeat_interval)
            effects.extend(self.remove_agent(agent.agent_id, f"no heartbeat for {now - agent.last_seen:.1f}s "
                                             f"({missed:.0f} missed)", now))
        for framework in [f for f in self.frameworks.values() if f.disconnected_at is not None
                          and now - f.disconnected_at >= f.failover_timeout]:
            effects.extend(self.teardown(protocol.Teardown(framework.framework_id), now))
        return effects

    def _filter(self, framework: FrameworkRecord, agent_id: str, resources: Resources, until: float) -> None:
        """Refuse ``resources`` of ``agent_id`` to ``framework`` until ``until``. Beyond
        ``MAX_FILTERS_PER_AGENT`` live filters they are merged into one (their sum, the latest end):
        refusing a little longer than asked, never less."""
        refused = framework.filters.setdefault(agent_id, [])
        refused.append((until, resources))
        if len(refused) > MAX_FILTERS_PER_AGENT:
            refused[:] = [(max(u for u, _ in refused), add_all(Resources(), [held for _, held in refused]))]
        self._next_filter_expiry = min(self._next_filter_expiry, until)

    def _expire_filters(self, now: float) -> None:
        upcoming = float("inf")
        for framework in self.frameworks.values():
            for agent_id, refused in list(framework.filters.items()):
                live = [(until, held) for until, held in refused if until > now]
                if len(live) < len(refused):
                    self.allocator.wake()
                    self._changed()
                if live:
                    framework.filters[agent_id] = live
                    upcoming = min(upcoming, *(until for until, _ in live))
                else:
                    del framework.filters[agent_id]
        self._next_filter_expiry = upcoming

    def _changed(self) -> None:
        self.changes += 1

    def _master_status(self, framework_id: str, task_id: str, agent_id: str, state: TaskState, reason: str,
                       message: str, now: float) -> TaskStatus:
        return TaskStatus(task_id, framework_id, agent_id, state, f"{self.config.master_id}-S{next(self._status_ids)}",
                          now, message, reason, "SOURCE_MASTER")

    # -- checks -----------------------------------------------------------------------------
    def check_invariants(self) -> None:
        """Every agent's total = free + offered + used by live tasks and booked executors; framework
        books match; every booked executor is on both its agent's and its framework's books."""
        for agent in self.agents.values():
            assert agent.free + self._in_use(agent) == agent.total, f"agent {agent.agent_id} books do not balance"
        for framework in self.frameworks.values():
            held = Resources()
            for offer_id in framework.offers:
                held = held + self.offers[offer_id].resources.quantity()
            for task_id in framework.tasks:
                held = held + self.tasks[(framework.framework_id, task_id)].resources.quantity()
            for agent_id, executor_id in framework.executors:
                held = held + self.executors[(agent_id, framework.framework_id, executor_id)].resources.quantity()
            assert held == framework.allocated, f"framework {framework.framework_id} books do not balance"
        for executor in self.executors.values():
            agent = self.agents[executor.agent_id]
            assert (executor.framework_id, executor.executor_id) in agent.executors
            booked_for = self.frameworks.get(executor.framework_id)
            assert booked_for is None or (executor.agent_id, executor.executor_id) in booked_for.executors
        offered: set[str] = set()
        for offer in self.offers.values():
            assert offer.offer_id not in offered
            offered.add(offer.offer_id)

    def snapshot(self) -> dict[str, Any]:
        """A summary for logs and the events exchange."""
        return {"agents": len(self.agents), "frameworks": len(self.frameworks), "tasks": len(self.tasks),
                "executors": len(self.executors), "offers": len(self.offers), "total": self.total.to_wire()}



def _counter_token() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"t{next(counter)}"
