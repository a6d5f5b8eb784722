"""Read-only state queries (QUERY -> QUERY_RESULT, docs/protocol.md §18), answered from ``MasterState``.

Pure and cheap: no snapshot, no allocation round, nothing changed. Items come in the master's own
order (agents by registration with this master, then the removed ones it remembers; frameworks by
subscription; tasks by launch, then the ended ones it remembers, oldest first; offers by creation),
so paging needs no sort: an unfiltered page costs O(offset + limit), a filtered one one pass over
its kind (10,000 agents: about 15 ms), and ``sort`` a heap of offset + limit items over that pass
(O(n log k)); building and sizing the items is about 40 us each. A page stops early, before
``limit`` items, once its encoded items pass ``MAX_REPLY_BYTES``, so a reply stays far under the
8 MiB message limit whatever the items hold; the client asks again from ``offset + len(items)``.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import msgpack

from broker_mesos.core import codec, protocol
from broker_mesos.core.allocation import admin as allocation_admin
from broker_mesos.core.allocation.engine import add_all
from broker_mesos.core.errors import CallRefused, ResourceError
from broker_mesos.core.master import AgentRecord, FrameworkRecord, MasterState, TaskRecord
from broker_mesos.core.protocol import (
    AgentItem,
    ClusterSummary,
    FrameworkItem,
    OfferItem,
    Query,
    QueryResult,
    TaskItem,
    TaskState,
)
from broker_mesos.core.resources import Resources

MAX_REPLY_BYTES = 4 * 1024 * 1024  # encoded items per QUERY_RESULT (the message limit is 8 MiB)
AGENT_ACTIVE = "ACTIVE"
AGENT_SILENT = "SILENT"  # a heartbeat is overdue (more than two intervals without one), not removed yet
AGENT_REMOVED = "REMOVED"  # removed for silence; remembered (REMOVED_AGENTS_KEPT) with its lost tasks
AGENT_DRAINING = "DRAINING"  # an operator drains it (DRAIN_AGENT): offered nothing, tasks still on it
AGENT_DRAINED = "DRAINED"  # drained and no task left on it
AGENT_GONE = "GONE"  # marked gone by an operator (MARK_AGENT_GONE): counted in the summary, never listed
AGENT_STATES = (AGENT_ACTIVE, AGENT_SILENT, AGENT_REMOVED)  # always in the summary; DRAINING, DRAINED and
# GONE only when some agent is in them
FRAMEWORK_CONNECTED = "CONNECTED"
FRAMEWORK_DISCONNECTED = "DISCONNECTED"
SILENT_AFTER_INTERVALS = 2.0
USAGE_COLUMNS = {"usage:cpu": "cpu_seconds", "usage:mem": "mem_mb", "usage:disk": "disk_mb"}

T = TypeVar("T")
Visible = Callable[[str], bool]  # framework id -> whether the asker may see it


def check(query: Query) -> None:
    """``CallRefused`` (answered with ERROR) for a ``what`` or ``sort`` the master does not know."""
    if query.what not in protocol.QUERY_KINDS:
        raise CallRefused(f"QUERY what must be one of {', '.join(protocol.QUERY_KINDS)}")
    kind, _, name = query.sort.partition(":")
    if query.sort and not ((kind in ("total", "free", "used") and name and query.what == "agents")
                           or (query.sort in protocol.TASK_SORTS and query.what == "tasks")):
        raise CallRefused("QUERY sort must be '', for agents 'total:<resource>', 'free:<resource>' or "
                          "'used:<resource>', for tasks one of " + ", ".join(protocol.TASK_SORTS))


def answer(state: MasterState, query: Query, now: float, active_since: float,
           visible: Visible | None = None) -> QueryResult:
    """One page of the answer to ``query``. ``visible``: the frameworks the asker may see (None: all);
    their tasks and offers only, and in the summary only their tasks are counted. ``CallRefused``
    when ``check`` refuses it."""
    check(query)
    if query.what == "summary":
        return QueryResult("summary", 1, 0, summary(state, now, active_since, visible))
    if query.what == "agents":
        total, page = _agents(state, query, now)
        return QueryResult("agents", total, query.offset, agents=page)
    if query.what == "frameworks":
        total, fws = _page(_frameworks(state, query, visible), query, lambda f: _framework_item(state, f, now))
        return QueryResult("frameworks", total, query.offset, frameworks=fws)
    if query.what == "tasks" and query.sort in protocol.TASK_SORTS:
        column = USAGE_COLUMNS[query.sort]
        pool = [t for t in _tasks(state, query, visible) if t.usage is not None]
        top = heapq.nlargest(query.offset + query.limit, pool, key=lambda t: getattr(t.usage, column))
        return QueryResult("tasks", len(pool), query.offset,
                           tasks=_budget(task_item(state, t, query.history) for t in top[query.offset:]))
    if query.what == "tasks":
        known = None
        if visible is None and not (query.state or query.framework_id or query.agent_id or query.role
                                    or query.id_prefix):
            known = len(state.tasks) + (len(state.completed) if query.completed else 0)
        total, tasks = _page(_tasks(state, query, visible), query,
                             lambda t: task_item(state, t, query.history), known)
        return QueryResult("tasks", total, query.offset, tasks=tasks)
    if query.what == "offers":
        offers = (o for o in state.offers.values() if _visible(visible, o.framework_id)
                  and _match(query, o.offer_id, o.framework_id, o.agent_id))
        total, items = _page(offers, query, lambda o: OfferItem(o.offer_id, o.framework_id, o.agent_id, o.resources,
                                                                max(0.0, o.expires_at - now)))
        return QueryResult("offers", total, query.offset, offers=items)
    roles = allocation_admin.roles_info(state.allocator, state.frameworks).roles
    chosen = (r for r in roles if (not query.role or r.role == query.role) and r.role.startswith(query.id_prefix))
    total, items = _page(chosen, query, lambda r: r)
    return QueryResult("roles", total, query.offset, roles=items)


# -- summary --------------------------------------------------------------------------------------


def summary(state: MasterState, now: float, active_since: float, visible: Visible | None = None) -> ClusterSummary:
    """Counts and sums over everything: one pass over agents, frameworks, tasks and offers."""
    agents = dict.fromkeys(AGENT_STATES, 0)
    for agent in state.agents.values():
        kind = agent_state(state, agent, now)
        agents[kind] = agents.get(kind, 0) + 1
    agents[AGENT_REMOVED] = sum(1 for a in state.removed_agents if a not in state.agents)
    if state.gone_agents:
        agents[AGENT_GONE] = len(state.gone_agents)
    frameworks: dict[str, int] = {}
    for fw in state.frameworks.values():
        if _visible(visible, fw.framework_id):
            key = FRAMEWORK_DISCONNECTED if fw.disconnected_at is not None else FRAMEWORK_CONNECTED
            frameworks[key] = frameworks.get(key, 0) + 1
    tasks: dict[str, int] = {}
    for table in (state.tasks.values(), state.completed.values()):
        for task in table:
            if _visible(visible, task.framework_id):
                tasks[task.state.value] = tasks.get(task.state.value, 0) + 1
    total: dict[str, float] = {}
    free: dict[str, float] = {}
    for agent in state.agents.values():
        _accumulate(total, agent.total)
        _accumulate(free, agent.free)
    offered: dict[str, float] = {}
    for offer in state.offers.values():
        _accumulate(offered, offer.resources)
    used = {name: max(0.0, value - free.get(name, 0.0) - offered.get(name, 0.0)) for name, value in total.items()}
    return ClusterSummary(state.config.master_id, max(0.0, now - active_since), agents, frameworks, tasks,
                          _amounts(total), _amounts(used), _amounts(offered), _amounts(free), len(state.offers))


def _accumulate(sums: dict[str, float], resources: Resources) -> None:
    """Add ``resources`` as amounts (ranges and sets by size) to ``sums``."""
    for name, value in (resources.quantities() if resources.ranges or resources.sets else resources.scalars).items():
        sums[name] = sums.get(name, 0.0) + value


def _amounts(sums: dict[str, float]) -> Resources:
    return Resources({name: round(value, 3) for name, value in sums.items()})


# -- agents ---------------------------------------------------------------------------------------


def agent_state(state: MasterState, agent: AgentRecord, now: float) -> str:
    overdue = now - agent.last_seen > SILENT_AFTER_INTERVALS * agent.heartbeat_interval
    if overdue and now >= agent.grace_until:
        return AGENT_SILENT
    if agent.drain is not None:
        return AGENT_DRAINED if agent.drain.drained else AGENT_DRAINING
    return AGENT_ACTIVE


def _agents(state: MasterState, query: Query, now: float) -> tuple[int, list[AgentItem]]:
    def live() -> Iterator[AgentRecord]:
        for agent in state.agents.values():
            if query.agent_id and agent.agent_id != query.agent_id:
                continue
            if not agent.agent_id.startswith(query.id_prefix):
                continue
            if query.fits is not None and not query.fits <= agent.total:
                continue
            if query.state and query.state != agent_state(state, agent, now):
                continue
            yield agent

    removed: list[str] = []
    if not query.sort and query.fits is None and query.state in ("", AGENT_REMOVED):
        removed = [a for a in state.removed_agents if a.startswith(query.id_prefix)
                   and (not query.agent_id or a == query.agent_id) and a not in state.agents]
    unfiltered = not (query.agent_id or query.id_prefix or query.fits is not None or query.state or query.sort)
    if unfiltered:  # O(offset + limit): no pass over every agent
        chosen: Iterable[AgentRecord | str] = itertools.chain(state.agents.values(), removed)
        return _page(chosen, query, lambda a: _agent_item(state, a, now) if isinstance(a, AgentRecord)
                     else AgentItem(a, state=AGENT_REMOVED, tasks=len(state.removed_agents[a])),
                     total=len(state.agents) + len(removed))
    if query.state == AGENT_REMOVED:
        chosen = removed
    elif query.sort and query.sort not in protocol.TASK_SORTS:
        kind, _, name = query.sort.partition(":")
        pool = list(live())
        def size(agent: AgentRecord) -> float:
            total = agent.total.scalar(name)
            return total if kind == "total" else agent.free.scalar(name) if kind == "free" else \
                total - agent.free.scalar(name)

        top = heapq.nlargest(query.offset + query.limit, pool, key=size)
        items = _budget(_agent_item(state, a, now) for a in top[query.offset:])
        return len(pool), items
    else:
        chosen = itertools.chain(live(), removed)
    return _page(chosen, query, lambda a: _agent_item(state, a, now) if isinstance(a, AgentRecord)
                 else AgentItem(a, state=AGENT_REMOVED, tasks=len(state.removed_agents[a])))


def _agent_item(state: MasterState, agent: AgentRecord, now: float) -> AgentItem:
    offered = Resources()
    for offer_id in agent.offers:
        offered = offered + state.offers[offer_id].resources
    try:
        used = agent.total - agent.free - offered
    except ResourceError:  # books not in balance would be a bug elsewhere: show amounts, never fail
        used = Resources({k: max(0.0, v - agent.free.scalar(k) - offered.scalar(k))
                          for k, v in agent.total.quantities().items()})
    return AgentItem(agent.agent_id, agent.hostname, agent_state(state, agent, now), agent.total, agent.free, offered,
                     used, dict(agent.attributes), len(agent.tasks), agent.last_seen, agent.usage.cpu_seconds,
                     agent.usage.mem_mb, agent.usage.disk_mb)


# -- frameworks and tasks -------------------------------------------------------------------------


def _frameworks(state: MasterState, query: Query, visible: Visible | None) -> Iterator[FrameworkRecord]:
    for fw in state.frameworks.values():
        if not _visible(visible, fw.framework_id) or not fw.framework_id.startswith(query.id_prefix):
            continue
        if query.framework_id and fw.framework_id != query.framework_id:
            continue
        if query.role and fw.role != query.role:
            continue
        fw_state = FRAMEWORK_DISCONNECTED if fw.disconnected_at is not None else FRAMEWORK_CONNECTED
        if query.state and query.state != fw_state:
            continue
        yield fw


def _framework_item(state: MasterState, fw: FrameworkRecord, now: float) -> FrameworkItem:
    offered = add_all(Resources(), (state.offers[o].resources.quantity() for o in fw.offers))
    fw_state = FRAMEWORK_DISCONNECTED if fw.disconnected_at is not None else FRAMEWORK_CONNECTED
    return FrameworkItem(fw.framework_id, fw.name, fw.role, fw.weight, fw_state, fw.suppressed, fw.user,
                         fw.allocated, offered, len(fw.tasks), fw.failover_timeout, fw.disconnected_at)


def _tasks(state: MasterState, query: Query, visible: Visible | None) -> Iterator[TaskRecord]:
    wanted = _task_state(query.state) if query.state else None
    if query.state and wanted is None:
        return  # not a task state: no task is in it
    tables: list[Iterable[TaskRecord]] = []
    if wanted is None or not wanted.terminal:
        tables.append(state.tasks.values())
    if query.completed or (wanted is not None and wanted.terminal):
        tables.append(state.completed.values())
    role_of = {fw.framework_id: fw.role for fw in state.frameworks.values()} if query.role else {}
    for task in itertools.chain(*tables):
        if wanted is not None and task.state != wanted:
            continue
        if not _visible(visible, task.framework_id) or not task.task_id.startswith(query.id_prefix):
            continue
        if (query.framework_id and task.framework_id != query.framework_id) or \
                (query.agent_id and task.agent_id != query.agent_id):
            continue
        if query.role and role_of.get(task.framework_id) != query.role:
            continue
        yield task


def _task_state(text: str) -> TaskState | None:
    """``TASK_RUNNING`` or ``running`` (None: not a task state)."""
    name = text.upper()
    try:
        return TaskState(name if name.startswith("TASK_") else f"TASK_{name}")
    except ValueError:
        return None


def task_item(state: MasterState, task: TaskRecord, with_history: bool = False) -> TaskItem:
    last = task.last_status
    agent = state.agents.get(task.agent_id)
    usage = task.usage
    history: list[protocol.TaskStatus] = []
    if with_history:
        history = list(task.history)
        if last is not None and all(s.uuid != last.uuid for s in history):
            history.append(last)  # a state the master set itself (LOST, DROPPED, ERROR)
    return TaskItem(task.task_id, task.framework_id, task.agent_id, agent.hostname if agent else "", task.state,
                    task.resources, task.launched_at, last.timestamp if last else None,
                    last.message[:1024] if last else "", last.reason if last else "",
                    last.exit_code if last else None, usage.cpu_seconds if usage else None,
                    usage.mem_mb if usage else None, usage.disk_mb if usage else None, history)


# -- paging ---------------------------------------------------------------------------------------


def _page(items: Iterable[T], query: Query, make: Callable[[T], Any],
          total: int | None = None) -> tuple[int, list[Any]]:
    """(how many items there are, the items of this page made with ``make``): counting them all, unless
    their number is known (``total``: only offset + limit of them are looked at)."""
    if total is not None:
        return total, _budget(make(x) for x in itertools.islice(items, query.offset, query.offset + query.limit))
    if isinstance(items, list | tuple):
        return len(items), _budget(make(x) for x in items[query.offset:query.offset + query.limit])
    total = 0
    chosen: list[T] = []
    for item in items:
        if query.offset <= total < query.offset + query.limit:
            chosen.append(item)
        total += 1
    return total, _budget(make(x) for x in chosen)


def _budget(items: Iterable[Any]) -> list[Any]:
    """Items until their encoded size would pass ``MAX_REPLY_BYTES`` (at least one is always kept:
    no single item can reach it, every field being bounded far below)."""
    out: list[Any] = []
    size = 0
    for item in items:
        size += len(msgpack.packb(codec.to_wire(item), use_bin_type=True))
        if out and size > MAX_REPLY_BYTES:
            break
        out.append(item)
    return out


def _match(query: Query, item_id: str, framework_id: str, agent_id: str) -> bool:
    return item_id.startswith(query.id_prefix) and (not query.framework_id or framework_id == query.framework_id) \
        and (not query.agent_id or agent_id == query.agent_id)


def _visible(visible: Visible | None, framework_id: str) -> bool:
    return visible is None or visible(framework_id)
