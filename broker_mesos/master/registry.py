"""The master's persisted registry: a snapshot of what a new master needs to carry on.

The active master writes one snapshot (msgpack) to the quorum queue ``master.registry``, which keeps
only the latest message. What is in it: agents (total resources, attributes), frameworks (role, weight,
failover timeout, whether their scheduler was seen), the allocator policy and role settings, live tasks
(where, how much, state), booked executors (where, whose, their ExecutorInfo and resources), the last
completed tasks (so RECONCILE still answers for them), agents removed for silence (with the tasks
declared LOST, killed if they return), operators' drains (per agent) and agents marked gone, and the
id counters. Offers are not in it: they die with the
master that made them and their resources return to the pool.

The snapshot is a pure function of ``MasterState``; ``restore`` rebuilds a state whose books balance
(``check_invariants`` holds) and treats every agent and framework as just heard from (``now``), so
each gets a full timeout to show up again before anything is declared lost.
"""

from __future__ import annotations

import itertools
from typing import Any

import msgpack

from broker_mesos.core import codec
from broker_mesos.core.allocation.roles import RoleConfig
from broker_mesos.core.master import AgentRecord, ExecutorRecord, FrameworkRecord, MasterState, TaskRecord
from broker_mesos.core.master_model import DrainInfo
from broker_mesos.core.protocol import ExecutorInfo, TaskState
from broker_mesos.core.resources import Resources
from broker_mesos.core.security import FrameworkAcl

FORMAT = 1
COMPLETED_IN_SNAPSHOT = 2_000


class RegistryError(Exception):
    """A snapshot that cannot be read (another format, or corrupt)."""


def _peek(counter: itertools.count[int]) -> tuple[int, itertools.count[int]]:
    value = next(counter)
    return value, itertools.count(value)


def snapshot(state: MasterState, master_id: str, seen_consuming: set[str]) -> bytes:
    """Serialise what a successor needs; ``seen_consuming``: frameworks whose scheduler was seen."""
    next_offer, state._offer_ids = _peek(state._offer_ids)
    next_status, state._status_ids = _peek(state._status_ids)
    next_framework, state._framework_seq = _peek(state._framework_seq)
    completed = list(state.completed.values())[-COMPLETED_IN_SNAPSHOT:]
    data = {
        "format": FORMAT,
        "master_id": master_id,
        "counters": [next_offer, next_status, next_framework],
        "agents": [[a.agent_id, a.hostname, a.total.to_wire(), a.attributes, a.heartbeat_interval,
                    None if a.drain is None else [a.drain.since, a.drain.deadline, a.drain.kill, a.drain.killed,
                                                  a.drain.drained]]
                   for a in state.agents.values()],
        "gone_agents": [[agent_id, at] for agent_id, at in state.gone_agents.items()],
        "frameworks": [[f.framework_id, f.name, f.role, f.weight, f.seq, f.reply_to,
                        f.suppressed_before_disconnect if f.disconnected_at is not None else f.suppressed,
                        f.failover_timeout, f.disconnected_at is not None, f.framework_id in seen_consuming,
                        f.partition_aware, f.user]
                       for f in state.frameworks.values()],
        "tasks": [[t.framework_id, t.task_id, t.agent_id, t.resources.to_wire(), t.state.value]
                  for t in state.tasks.values()],
        "executors": [[e.agent_id, e.framework_id, e.executor_id, None if e.info is None else codec.to_wire(e.info),
                       e.resources.to_wire()] for e in state.executors.values()],
        "completed": [[t.framework_id, t.task_id, t.agent_id, t.resources.to_wire(), t.state.value]
                      for t in completed],
        "removed_agents": [[agent_id, [list(key) for key in sorted(keys)]]
                           for agent_id, keys in state.removed_agents.items()],
        "allocator": [state.allocator.policy.name, dict(state.allocator.policy.params)],
        "roles": [[role, config.weight, config.guarantee.to_wire(), config.limit.to_wire()]
                  for role, config in state.allocator.roles.items()],
        "acls": [[user, sorted(acl.roles), sorted(acl.users)] for user, acl in state.acls.items()],
    }
    return msgpack.packb(data, use_bin_type=True)


def restore(state: MasterState, raw: bytes, now: float) -> tuple[str, set[str]]:
    """Load a snapshot into an empty ``state``; returns (the master id that wrote it, frameworks seen
    consuming). Raises ``RegistryError`` if it cannot be read; ``state`` is then left empty."""
    try:
        data: dict[str, Any] = msgpack.unpackb(raw, raw=False)
        if data.get("format") != FORMAT:
            raise RegistryError(f"registry format {data.get('format')!r} is not {FORMAT}")
        _load(state, data, now)
    except RegistryError:
        raise
    except Exception as exc:
        state.__init__(state.config, state.policies, state.offer_token)  # type: ignore[misc]
        raise RegistryError(f"unreadable registry snapshot: {exc.__class__.__name__}: {exc}") from exc
    seen = {row[0] for row in data["frameworks"] if row[9]}
    return str(data["master_id"]), seen


def _load(state: MasterState, data: dict[str, Any], now: float) -> None:
    next_offer, next_status, next_framework = data["counters"]
    state._offer_ids = itertools.count(int(next_offer))
    state._status_ids = itertools.count(int(next_status))
    state._framework_seq = itertools.count(int(next_framework))
    for agent_id, hostname, total, attributes, interval, *rest in data["agents"]:
        resources = Resources.from_wire(total)
        agent = AgentRecord(agent_id, hostname, resources, resources, dict(attributes), now,
                            float(interval), grace_until=now + state.config.agent_reregister_timeout)
        state.agents[agent_id] = agent
        state.total = state.total + resources
        if rest and rest[0] is not None:  # a drain survives a failover (its deadline is wall-clock time)
            since, deadline, kill, killed, drained = rest[0]
            agent.drain = DrainInfo(float(since), None if deadline is None else float(deadline), bool(kill),
                                    bool(killed), bool(drained))
            state.draining.add(agent_id)
    for agent_id, at in data.get("gone_agents", []):
        state.gone_agents[str(agent_id)] = float(at)
    for fw, name, role, weight, seq, reply_to, suppressed, failover, disconnected, _seen, *rest in data["frameworks"]:
        record = FrameworkRecord(fw, name, role, float(weight), int(seq), reply_to, suppressed=bool(suppressed),
                                 failover_timeout=float(failover), partition_aware=bool(rest and rest[0]),
                                 user=str(rest[1]) if len(rest) > 1 else "")
        state.frameworks[fw] = record
        if disconnected:
            record.disconnected_at = now  # its failover timeout starts again: conservative, never early
            record.suppressed_before_disconnect = record.suppressed
            record.suppressed = True
    for fw, task_id, agent_id, resources, value in data["tasks"]:
        task = TaskRecord(task_id, fw, agent_id, Resources.from_wire(resources), TaskState(value), launched_at=now)
        agent = state.agents.get(agent_id)
        if agent is None or not task.resources <= agent.free:
            continue  # cannot happen in a snapshot written by MasterState; never unbalance the books
        state.tasks[(fw, task_id)] = task
        agent.free = agent.free - task.resources
        agent.tasks.add((fw, task_id))
        framework = state.frameworks.get(fw)
        if framework is not None:
            framework.tasks.add(task_id)
            framework.allocated = framework.allocated + task.resources.quantity()
    for agent_id, fw, executor_id, info, resources in data.get("executors", []):
        _load_executor(state, ExecutorRecord(
            agent_id, fw, executor_id, None if info is None else codec.decode_body(ExecutorInfo, info, "executor"),
            Resources.from_wire(resources), now))
    for fw, task_id, agent_id, resources, value in data["completed"]:
        state.completed[(fw, task_id)] = TaskRecord(task_id, fw, agent_id, Resources.from_wire(resources),
                                                    TaskState(value))
    for agent_id, keys in data["removed_agents"]:
        state.removed_agents[agent_id] = {(fw, task_id) for fw, task_id in keys}
    if "allocator" in data:  # the operator's policy and roles survive a failover
        name, params = data["allocator"]
        state.allocator.set_policy(state.policies.create(name, dict(params)))
        for role, weight, guarantee, limit in data["roles"]:
            state.allocator.set_role(role, RoleConfig(float(weight), Resources.from_wire(guarantee),
                                                      Resources.from_wire(limit)))
    for user, roles, users in data.get("acls", []):
        state.acls[str(user)] = FrameworkAcl(frozenset(map(str, roles)), frozenset(map(str, users)))
    state.changes += 1


def _load_executor(state: MasterState, record: ExecutorRecord) -> None:
    """Book a restored executor as ``MasterState`` does (its grace to be reported starts now)."""
    agent = state.agents.get(record.agent_id)
    if agent is None or not record.resources <= agent.free:
        return  # cannot happen in a snapshot written by MasterState; never unbalance the books
    state.executors[record.key] = record
    agent.free = agent.free - record.resources
    agent.executors.add((record.framework_id, record.executor_id))
    framework = state.frameworks.get(record.framework_id)
    if framework is not None:
        framework.executors.add((record.agent_id, record.executor_id))
        framework.allocated = framework.allocated + record.resources.quantity()
