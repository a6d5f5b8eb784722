"""The allocator: turns free resources into offers under a policy, roles' weights and quotas.

A round has two stages, as Mesos' hierarchical allocator since quota: first every role below its
guarantee is offered, on the candidate agents, the resources it is guaranteed (cut to what is still
missing); then the remaining free resources go to whoever the policy puts first. In the second stage
an offer never eats into the *headroom* still owed to guaranteed roles (so a guarantee is honoured even
while other roles are hungry, and even for a role that has no framework yet), and never takes a role
above its limit: an offer is chopped to fit rather than refused.

Rounds are incremental: the master reports which agents gained free resources (``agent_changed``) and
when every idle agent should be looked at again (``wake``: a framework subscribed or revived, a filter
expired, a role changed). A round looks only at those agents, so its cost follows what changed, not the
cluster's size. Framework and role allocations are cached by the identity of the (immutable)
``Resources`` the master holds, so only clients whose allocation changed are recomputed. A full round
runs after a policy swap and every ``full_round_interval`` seconds as a safety net.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from broker_mesos.core.allocation.policy import AgentView, AllocatorPolicy, FrameworkView, Quantities
from broker_mesos.core.allocation.roles import RoleConfig, chop
from broker_mesos.core.allocation.sorter import RoundSorter
from broker_mesos.core.resources import EMPTY, Resources

# Offers smaller than this in every scalar are not worth a framework's attention (Mesos' defaults).
MIN_ALLOCATABLE = Resources.of(cpus=0.01)
MIN_ALLOCATABLE_MEM = Resources.of(mem=32)
FULL_ROUND_INTERVAL = 60.0
DEFAULT_ROLE_CONFIG = RoleConfig()

Filtered = Callable[[str, str, Resources], bool]


class Allocation(NamedTuple):
    """Offer ``resources`` of ``agent_id`` to ``framework_id`` (a tuple: rounds make thousands)."""

    framework_id: str
    agent_id: str
    resources: Resources


def allocatable(resources: Resources) -> bool:
    """True unless the bundle is a crumb: too little CPU and too little memory to run anything."""
    scalars = resources.scalars
    return scalars.get("cpus", 0.0) >= 0.01 or scalars.get("mem", 0.0) >= 32


def quantities(resources: Resources) -> Quantities:
    """Amounts per resource name; shares the scalar map when there is nothing else (read-only use)."""
    if not resources.ranges and not resources.sets:
        return resources.scalars  # type: ignore[return-value]
    return resources.quantities()


def _add(into: Quantities, amounts: Mapping[str, float], sign: float = 1.0) -> None:
    for name, value in amounts.items():
        into[name] = round(into.get(name, 0.0) + sign * value, 3)


def add_all(base: Resources, bundles: Iterable[Resources]) -> Resources:
    """``base`` plus every bundle, summing scalars in one pass (one ``Resources`` built, not one per
    bundle); bundles with ranges or sets are added the ordinary way."""
    scalars = dict(base.scalars)
    other = base
    for bundle in bundles:
        for name, value in bundle.scalars.items():
            scalars[name] = scalars.get(name, 0.0) + value
        if bundle.ranges or bundle.sets:
            other = other + Resources(ranges=bundle.ranges, sets=bundle.sets)
    return Resources({k: round(v, 3) for k, v in scalars.items()}, other.ranges, other.sets)


@dataclass(slots=True)
class _Seen:
    allocated: Resources
    role: str
    amounts: Quantities
    suppressed: bool
    weight: float


class Allocator:
    """Policy + roles + what changed since the last round. Pure: the master applies the allocations."""

    def __init__(self, policy: AllocatorPolicy, full_round_interval: float = FULL_ROUND_INTERVAL) -> None:
        self.policy = policy
        self.full_round_interval = full_round_interval
        self.roles: dict[str, RoleConfig] = {}
        self.dirty: dict[str, None] = {}  # agents whose free resources grew, in the order they did
        self.leftover: dict[str, None] = {}  # agents left with free resources nobody could take
        self.woken = False
        self.full_due = True
        self.last_full = float("-inf")
        self.limited: set[str] = set()  # roles that hit their limit in the last round
        self._seen: dict[str, _Seen] = {}  # framework -> what the last round knew of it
        self._role_alloc: dict[str, Quantities] = {}
        self._total: tuple[Resources, Quantities] = (EMPTY, {})
        self.last_round_full = False
        self.last_round_agents = 0

    # -- what the master reports --------------------------------------------------------------
    def agent_changed(self, agent_id: str) -> None:
        """``agent_id`` gained free resources (registered, task ended, offer returned)."""
        self.dirty[agent_id] = None

    def wake(self) -> None:
        """Idle agents must be looked at again: a framework may now take what nobody could before."""
        self.woken = True

    def set_policy(self, policy: AllocatorPolicy) -> None:
        """Swap the policy; it takes effect at the next round, which is a full one."""
        self.policy = policy
        self.full_due = True

    def set_role(self, role: str, config: RoleConfig) -> None:
        if config == DEFAULT_ROLE_CONFIG:
            self.roles.pop(role, None)
        else:
            self.roles[role] = config
        self.wake()

    def role(self, role: str) -> RoleConfig:
        return self.roles.get(role, DEFAULT_ROLE_CONFIG)

    def role_allocated(self, role: str) -> Quantities:
        return dict(self._role_alloc.get(role, {}))

    # -- the round --------------------------------------------------------------------------
    def full_round_due(self, now: float) -> bool:
        return self.full_due or now - self.last_full >= self.full_round_interval

    def candidates(self, agents: Mapping[str, AgentView], full: bool, now: float) -> list[str]:
        """The agents this round looks at: all with free resources (full round) or those that changed."""
        if full:
            self.full_due = False
            self.last_full = now
            self.leftover.clear()
            ids = [a.agent_id for a in agents.values() if a.free]
        else:
            wanted = dict(self.dirty)
            if self.woken:
                wanted.update(self.leftover)
            ids = [agent_id for agent_id in wanted if agent_id in agents and agents[agent_id].free]
        self.dirty.clear()
        self.woken = False
        return ids

    def _sync(self, frameworks: Mapping[str, FrameworkView], total: Resources, rebuild: bool) -> Quantities:
        """Bring cached amounts up to date with the frameworks' books; cost ~ frameworks that changed."""
        if self._total[0] is not total:
            self._total = (total, total.quantities())
        if rebuild:
            self._seen.clear()
            self._role_alloc.clear()
        seen, role_alloc = self._seen, self._role_alloc
        for fw in frameworks.values():
            entry = seen.get(fw.framework_id)
            if entry is not None and entry.allocated is fw.allocated and entry.role == fw.role \
                    and entry.suppressed == fw.suppressed and entry.weight == fw.weight:
                continue
            if entry is None or (entry.suppressed and not fw.suppressed) or entry.role != fw.role \
                    or entry.weight != fw.weight:
                self.woken = True  # a framework that may take what nobody took before
            amounts = fw.allocated.quantities() if entry is None or entry.allocated is not fw.allocated \
                else entry.amounts
            if entry is not None:
                _add(role_alloc.setdefault(entry.role, {}), entry.amounts, -1.0)
            _add(role_alloc.setdefault(fw.role, {}), amounts)
            seen[fw.framework_id] = _Seen(fw.allocated, fw.role, amounts, fw.suppressed, fw.weight)
        if len(seen) != len(frameworks):
            for fw_id in [f for f in seen if f not in frameworks]:
                gone = seen.pop(fw_id)
                _add(role_alloc.setdefault(gone.role, {}), gone.amounts, -1.0)
        return self._total[1]

    def round(self, agents: Mapping[str, AgentView], frameworks: Mapping[str, FrameworkView], total: Resources,
              filtered: Filtered, now: float) -> list[Allocation]:
        """One allocation round: at most one allocation per (framework, agent), in the order made."""
        full = self.full_round_due(now)
        total_q = self._sync(frameworks, total, rebuild=full)
        for role in self.limited:
            held = self._role_alloc.get(role, {})
            if any(held.get(name, 0.0) < cap for name, cap in self.role(role).limit.scalars.items()):
                self.woken = True  # a role that was stopped at its limit has room again
        ids = self.candidates(agents, full, now)
        self.last_round_full = full
        self.last_round_agents = len(ids)
        if not ids:
            return []
        work = _Round(self, agents, frameworks, total_q, filtered)
        order = self.policy.agent_order(ids, agents)
        work.quota_stage(order)
        work.fair_stage(order)
        self.limited = work.limited
        for agent_id in order:
            self.leftover.pop(agent_id, None)
        self.leftover.update(dict.fromkeys(work.leftover))
        return list(work.allocations.values())


class _Round:
    """The working state of one round: what is still free, who got what, headroom still owed."""

    def __init__(self, allocator: Allocator, agents: Mapping[str, AgentView],
                 frameworks: Mapping[str, FrameworkView], total: Quantities, filtered: Filtered) -> None:
        self.allocator = allocator
        self.agents = agents
        self.filtered = filtered
        self.total = total
        self.eligible = [fw for fw in frameworks.values() if not fw.suppressed]
        self.remaining: dict[str, Resources] = {}
        self.fw_alloc: dict[str, Quantities] = {}
        self.role_alloc = {role: dict(q) for role, q in allocator._role_alloc.items()}
        self.allocations: dict[tuple[str, str], Allocation] = {}
        self.limited: set[str] = set()
        self.leftover: list[str] = []  # agents still holding free resources nobody could take
        self.roles = allocator.roles
        self.guaranteed = {r: c.guarantee.scalars for r, c in self.roles.items() if c.guarantee}
        self.limits = {r: c.limit.scalars for r, c in self.roles.items() if c.limit}
        # role totals matter for role order (hierarchical policies) and quotas only
        self.track_roles = allocator.policy.hierarchical or bool(self.guaranteed) or bool(self.limits)
        # Unallocated amounts cluster-wide, and what guaranteed roles are still owed of them.
        self.pool = dict(total)
        for held in self.role_alloc.values():
            _add(self.pool, held, -1.0)
        self.owed: Quantities = {}
        for role, guarantee in self.guaranteed.items():
            _add(self.owed, self._missing(role, guarantee))

    def free(self, agent_id: str) -> Resources:
        free = self.remaining.get(agent_id)
        return self.agents[agent_id].free if free is None else free

    def _missing(self, role: str, guarantee: Mapping[str, float]) -> Quantities:
        held = self.role_alloc.get(role, {})
        return {n: round(g - held.get(n, 0.0), 3) for n, g in guarantee.items() if held.get(n, 0.0) < g}

    def _framework_alloc(self, framework_id: str) -> Quantities:
        amounts = self.fw_alloc.get(framework_id)
        return self.allocator._seen[framework_id].amounts if amounts is None else amounts

    def _caps(self, role: str, quota_stage: bool) -> dict[str, float] | None:
        """How much more of each capped scalar ``role`` may be offered now; None when uncapped."""
        if not self.track_roles:
            return None
        caps: dict[str, float] = {}
        held = self.role_alloc.get(role, {})
        limit = self.limits.get(role)
        if limit:
            for name, cap in limit.items():
                caps[name] = cap - held.get(name, 0.0)
        guarantee = self.guaranteed.get(role)
        if quota_stage and guarantee:
            for name, amount in self._missing(role, guarantee).items():
                caps[name] = min(caps.get(name, amount), amount)
        elif self.owed:
            mine = self._missing(role, guarantee) if guarantee else {}
            for name, owed in self.owed.items():
                allowance = self.pool.get(name, 0.0) - (owed - mine.get(name, 0.0))
                caps[name] = min(caps.get(name, allowance), allowance)
        return caps or None

    def _offer(self, fw: FrameworkView, agent_id: str, free: Resources, quota_stage: bool) -> Resources | None:
        """What ``fw`` may be offered of ``free`` on ``agent_id`` now, or None."""
        caps = self._caps(fw.role, quota_stage)
        offer = free if caps is None else chop(free, caps)
        if offer is not free and fw.role in self.limits:
            self.limited.add(fw.role)
        if (offer is not free and not allocatable(offer)) or self.filtered(fw.framework_id, agent_id, offer):
            return None
        return offer

    def _record(self, fw: FrameworkView, agent_id: str, free: Resources, offer: Resources) -> None:
        fw_id = fw.framework_id
        key = (fw_id, agent_id)
        earlier = self.allocations.get(key)
        self.allocations[key] = Allocation(fw_id, agent_id, offer if earlier is None else earlier.resources + offer)
        self.remaining[agent_id] = EMPTY if offer is free else free - offer
        amounts = quantities(offer)
        fw_alloc = self.fw_alloc.get(fw_id)
        if fw_alloc is None:
            fw_alloc = self.fw_alloc[fw_id] = dict(self.allocator._seen[fw_id].amounts)
        for name, value in amounts.items():
            fw_alloc[name] = fw_alloc.get(name, 0.0) + value
        if not self.track_roles:
            return
        guarantee = self.guaranteed.get(fw.role)
        if guarantee:
            missing = self._missing(fw.role, guarantee)
            _add(self.owed, {n: min(v, amounts.get(n, 0.0)) for n, v in missing.items()}, -1.0)
        role_alloc = self.role_alloc.get(fw.role)
        if role_alloc is None:
            role_alloc = self.role_alloc[fw.role] = {}
        for name, value in amounts.items():
            role_alloc[name] = role_alloc.get(name, 0.0) + value
        if self.owed:
            _add(self.pool, amounts, -1.0)

    def quota_stage(self, order: Sequence[str]) -> None:
        """Roles below their guarantee first, up to what they are missing (Mesos' quota stage)."""
        hungry = sorted(r for r, g in self.guaranteed.items() if self._missing(r, g))
        members = {r: [fw for fw in self.eligible if fw.role == r] for r in hungry}
        hungry = [r for r in hungry if members[r]]
        if not hungry:
            return
        for agent_id in order:
            for role in list(hungry):
                free = self.free(agent_id)
                if not allocatable(free):
                    break
                by_key = sorted(members[role], key=lambda f: self.allocator.policy.framework_key(
                    f, self._framework_alloc(f.framework_id), self.total))
                for fw in by_key:
                    offer = self._offer(fw, agent_id, free, quota_stage=True)
                    if offer is not None:
                        self._record(fw, agent_id, free, offer)
                        break
                if not self._missing(role, self.guaranteed[role]):
                    hungry.remove(role)
            if not hungry:
                return

    def fair_stage(self, order: Sequence[str]) -> None:
        """Everything still free, to whoever the policy puts first and may take it."""
        if not self.eligible:
            self.leftover = [a for a in order if allocatable(self.free(a))]
            return
        roles = self.allocator.role
        sorter = RoundSorter(self.allocator.policy, self.eligible, self._framework_alloc,
                             lambda r: self.role_alloc.get(r, {}), lambda r: roles(r).weight, self.total)
        remaining, agents = self.remaining, self.agents
        pop, push, offer_of, record = sorter.pop, sorter.push, self._offer, self._record
        for agent_id in order:
            free = remaining.get(agent_id)
            if free is None:
                free = agents[agent_id].free
            if not allocatable(free):
                continue
            tried: list[tuple[FrameworkView, bool]] = []
            while True:
                fw = pop()
                if fw is None:
                    break
                offer = offer_of(fw, agent_id, free, False)
                if offer is None:
                    tried.append((fw, False))
                    continue
                record(fw, agent_id, free, offer)
                tried.append((fw, True))
                free = remaining[agent_id]
                if free is EMPTY or not allocatable(free):
                    break
            if free is not EMPTY and allocatable(free):
                self.leftover.append(agent_id)
            for fw, changed in tried:
                push(fw, changed)
