"""What the dashboard knows of the cluster, as JSON-ready dicts: filled once from state query pages,
then kept current by status updates and cluster events; pure (no I/O, no clock, no threads).

Bounds: at most ``MAX_TASKS_KEPT`` tasks (the oldest ended ones are forgotten first), ``MAX_AGENTS_KEPT``
agents, ``MAX_FRAMEWORKS_KEPT`` frameworks and ``RECENT_EVENTS_KEPT`` events; a page holds at most
``MAX_PAGE`` rows. Strings from the wire are kept as they came: the server sends JSON and the page sets
them with ``textContent``, so no field can become markup.
"""

from __future__ import annotations

import collections
from typing import Any

from broker_mesos.core import protocol
from broker_mesos.core.resources import Resources

MAX_TASKS_KEPT = 20_000
MAX_AGENTS_KEPT = 20_000
MAX_FRAMEWORKS_KEPT = 5_000
RECENT_EVENTS_KEPT = 200
MAX_PAGE = 200
MESSAGE_CHARS = 1024

Row = dict[str, Any]


def amounts(resources: Resources) -> dict[str, float]:
    """Every resource as one number (port ranges counted), for JSON."""
    return {name: round(value, 3) for name, value in resources.quantities().items()}


def agent_row(item: protocol.AgentItem) -> Row:
    return {"agent_id": item.agent_id, "hostname": item.hostname, "state": item.state,
            "total": amounts(item.total), "used": amounts(item.used), "tasks": item.tasks,
            "last_seen": item.last_seen}


def framework_row(item: protocol.FrameworkItem) -> Row:
    return {"framework_id": item.framework_id, "name": item.name, "role": item.role, "state": item.state,
            "user": item.user, "allocated": amounts(item.allocated), "tasks": item.tasks}


def task_row(item: protocol.TaskItem) -> Row:
    return {"task_id": item.task_id, "framework_id": item.framework_id, "agent_id": item.agent_id,
            "hostname": item.hostname, "state": item.state.value, "resources": amounts(item.resources),
            "updated_at": item.updated_at, "message": item.message[:MESSAGE_CHARS], "reason": item.reason,
            "exit_code": item.exit_code}


def status_row(status: protocol.TaskStatus) -> Row:
    """One status update (without ``data``) for the browser."""
    return {"task_id": status.task_id, "framework_id": status.framework_id, "agent_id": status.agent_id,
            "state": status.state.value, "timestamp": status.timestamp, "message": status.message[:MESSAGE_CHARS],
            "reason": status.reason, "source": status.source, "exit_code": status.exit_code}


def summary_row(summary: protocol.ClusterSummary) -> Row:
    return {"master_id": summary.master_id, "uptime": summary.uptime, "agents": dict(summary.agents),
            "frameworks": dict(summary.frameworks), "tasks": dict(summary.tasks), "total": amounts(summary.total),
            "used": amounts(summary.used), "offered": amounts(summary.offered), "offers": summary.offers}


def _terminal(state: str) -> bool:
    try:
        return protocol.TaskState(state).terminal
    except ValueError:
        return False


class ClusterView:
    """Agents, frameworks and tasks in the master's order (tasks: by when they were first seen)."""

    def __init__(self) -> None:
        self.summary: Row | None = None
        self.roles: list[Row] = []
        self.agents: dict[str, Row] = {}
        self.frameworks: dict[str, Row] = {}
        self.tasks: collections.OrderedDict[tuple[str, str], Row] = collections.OrderedDict()
        self.ended: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()  # by when they ended
        self.events: collections.deque[Row] = collections.deque(maxlen=RECENT_EVENTS_KEPT)

    # -- filling ---------------------------------------------------------------------------------

    def add_page(self, result: protocol.QueryResult) -> None:
        """One QUERY_RESULT page; an item already updated by a newer status update keeps that update."""
        if result.summary is not None:
            self.summary = summary_row(result.summary)
        for agent in result.agents:
            if agent.agent_id in self.agents or len(self.agents) < MAX_AGENTS_KEPT:
                self.agents[agent.agent_id] = agent_row(agent)
        for fw in result.frameworks:
            if fw.framework_id in self.frameworks or len(self.frameworks) < MAX_FRAMEWORKS_KEPT:
                self.frameworks[fw.framework_id] = framework_row(fw)
        for task in result.tasks:
            key = (task.framework_id, task.task_id)
            known = self.tasks.get(key)
            if known is not None and (known.get("updated_at") or 0.0) > (task.updated_at or 0.0):
                known["resources"] = task_row(task)["resources"]
                continue
            self._put_task(key, task_row(task))
        if result.what == "roles":
            self.roles = [{"role": r.role, "weight": r.weight, "frameworks": r.frameworks,
                           "allocated": amounts(r.allocated)} for r in result.roles]

    def _put_task(self, key: tuple[str, str], row: Row) -> None:
        self.tasks[key] = row
        self._ended(key, row["state"])
        while len(self.tasks) > MAX_TASKS_KEPT:
            victim = self.ended.popitem(last=False)[0] if self.ended else next(iter(self.tasks))
            self.tasks.pop(victim, None)

    def _ended(self, key: tuple[str, str], state: str) -> None:
        if _terminal(state):
            self.ended[key] = None
        else:
            self.ended.pop(key, None)

    # -- following -------------------------------------------------------------------------------

    def apply_status(self, status: protocol.TaskStatus) -> Row:
        """A status update: the task's row, made or changed (a live task's agent counts it)."""
        key = (status.framework_id, status.task_id)
        row = self.tasks.get(key)
        before = row["state"] if row is not None else None
        if row is None:
            row = {"task_id": status.task_id, "framework_id": status.framework_id, "agent_id": status.agent_id,
                   "hostname": "", "state": status.state.value, "resources": {}, "updated_at": None,
                   "message": "", "reason": "", "exit_code": None}
            agent = self.agents.get(status.agent_id)
            row["hostname"] = agent["hostname"] if agent else ""
            self._put_task(key, row)
        if row.get("updated_at") is not None and status.timestamp < row["updated_at"]:
            return row  # an older update arriving late
        row.update(state=status.state.value, updated_at=status.timestamp, message=status.message[:MESSAGE_CHARS],
                   reason=status.reason, exit_code=status.exit_code)
        self._ended(key, row["state"])
        if status.agent_id:
            row["agent_id"] = status.agent_id
        agent = self.agents.get(row["agent_id"])
        if agent is not None:
            was_live = before is not None and not _terminal(before)
            now_live = not status.state.terminal
            agent["tasks"] = max(0, agent["tasks"] + int(now_live) - int(was_live))
            _book(agent, row["resources"], int(now_live) - int(was_live))
        return row

    def set_resources(self, framework_id: str, task_id: str, resources: Resources) -> None:
        """A task first seen on ``status`` (which carries no resources): what it holds, now known; a live
        one's agent counts them as used."""
        row = self.tasks.get((framework_id, task_id))
        if row is None or row["resources"]:
            return
        row["resources"] = amounts(resources)
        agent = self.agents.get(row["agent_id"])
        if agent is not None and not _terminal(row["state"]):
            _book(agent, row["resources"], 1)

    def apply_event(self, event: protocol.ClusterEvent, timestamp: float) -> Row:
        """A cluster event: remembered among the recent ones; agents and frameworks follow it."""
        detail = event.detail if isinstance(event.detail, dict) else {}
        row = {"kind": event.kind, "timestamp": timestamp, "detail": detail}
        self.events.appendleft(row)
        agent_id, fw_id = detail.get("agent_id"), detail.get("framework_id")
        if event.kind == "agent.added" and isinstance(agent_id, str):
            known = self.agents.get(agent_id)
            if known is None and len(self.agents) < MAX_AGENTS_KEPT:
                total = detail.get("resources")
                self.agents[agent_id] = {"agent_id": agent_id, "hostname": str(detail.get("hostname", "")),
                                         "state": "ACTIVE", "total": _numbers(total), "used": {}, "tasks": 0,
                                         "last_seen": timestamp}
            elif known is not None:
                known["state"] = "ACTIVE"
        elif event.kind == "agent.removed" and isinstance(agent_id, str) and agent_id in self.agents:
            self.agents[agent_id].update(state="REMOVED", tasks=0)
        elif event.kind in ("framework.added", "framework.resubscribed") and isinstance(fw_id, str):
            known = self.frameworks.get(fw_id)
            if known is None and len(self.frameworks) < MAX_FRAMEWORKS_KEPT:
                self.frameworks[fw_id] = {"framework_id": fw_id, "name": str(detail.get("name", "")),
                                          "role": str(detail.get("role", "")), "state": "CONNECTED", "user": "",
                                          "allocated": {}, "tasks": 0}
            elif known is not None:
                known["state"] = "CONNECTED"
        elif event.kind == "framework.disconnected" and isinstance(fw_id, str) and fw_id in self.frameworks:
            self.frameworks[fw_id]["state"] = "DISCONNECTED"
        elif event.kind == "framework.removed" and isinstance(fw_id, str):
            self.frameworks.pop(fw_id, None)
        return row

    # -- reading ---------------------------------------------------------------------------------

    def page(self, kind: str, offset: int, limit: int, state: str = "", framework_id: str = "",
             agent_id: str = "") -> Row:
        """``{"total", "offset", "items"}``: one page of ``kind`` (tasks newest first), filtered."""
        limit = max(0, min(limit, MAX_PAGE))
        offset = max(0, offset)
        rows: list[Row]
        if kind == "agents":
            rows = [a for a in self.agents.values() if not state or a["state"] == state]
        elif kind == "frameworks":
            rows = [f for f in self.frameworks.values() if not state or f["state"] == state]
        elif kind == "tasks":
            wanted = state.upper()
            if wanted and not wanted.startswith("TASK_"):
                wanted = f"TASK_{wanted}"
            rows = [t for t in reversed(self.tasks.values())
                    if (not wanted or t["state"] == wanted) and (not framework_id or t["framework_id"] == framework_id)
                    and (not agent_id or t["agent_id"] == agent_id)]
        else:
            raise ValueError(f"no such table: {kind}")
        return {"total": len(rows), "offset": offset, "items": rows[offset:offset + limit]}

    def task_states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for task in self.tasks.values():
            counts[task["state"]] = counts.get(task["state"], 0) + 1
        return counts


def _book(agent: Row, resources: dict[str, float], sign: int) -> None:
    """Add (``sign`` 1) or take back (-1) a task's resources in its agent's ``used``, never below 0."""
    if not sign:
        return
    used = agent.setdefault("used", {})
    for name, value in resources.items():
        used[name] = round(max(0.0, used.get(name, 0.0) + sign * value), 3)


def _numbers(value: Any) -> dict[str, float]:
    """A resources map from an event's detail: only its numeric entries, or the quantities of a wire
    ``Resources`` (``{"scalars": {...}}``)."""
    if not isinstance(value, dict):
        return {}
    if isinstance(value.get("scalars"), dict):
        value = value["scalars"]
    return {str(k): float(v) for k, v in value.items() if isinstance(v, int | float) and not isinstance(v, bool)}
