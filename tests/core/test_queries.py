"""State queries (``core.queries``) on a MasterState built here: filters, paging, totals, bounds, scope."""

from __future__ import annotations

import pytest

from broker_mesos.core import codec, protocol, queries, security
from broker_mesos.core.errors import CallRefused, ProtocolError
from broker_mesos.core.master import MasterConfig, MasterState, ToAgent, ToFramework
from broker_mesos.core.master_model import STATUS_HISTORY_KEPT, TaskUsage
from broker_mesos.core.protocol import Query, TaskState
from broker_mesos.core.resources import Resources

NOW = 1000.0


def build(agents: int = 5, per_agent: int = 2) -> MasterState:
    """``agents`` agents a0.. of 4 cpus (a0 the largest: 8), frameworks alice-web (role web) and bob,
    ``per_agent`` tasks of alice-web per agent, one running task of bob on a0."""
    state = MasterState(MasterConfig("m1"))
    for i in range(agents):
        cpus = 8 if i == 0 else 4
        state.agent_info(protocol.Register(f"a{i}", f"host{i}", Resources.of(cpus=cpus, mem=4096),
                                           heartbeat_interval=1.0), NOW)
    for fw, role in (("alice-web", "web"), ("bob", "*")):  # alice is offered every agent, then bob the rest
        state.subscribe(protocol.Subscribe(fw, fw, role=role), None, "c", NOW)
        effects = state.allocation_round(NOW)
        offers = [o for e in effects if isinstance(e, ToFramework) and isinstance(e.body, protocol.Offers)
                  for o in e.body.offers]
        assert {o.framework_id for o in offers} == {fw} and len(offers) == agents
        count = {"alice-web": dict.fromkeys((o.agent_id for o in offers), per_agent), "bob": {"a0": 1}}[fw]
        tasks = [protocol.TaskInfo(f"{fw}-{o.agent_id}-{n}", o.agent_id, Resources.of(cpus=1, mem=128),
                                   protocol.CommandInfo("sleep 1"))
                 for o in offers for n in range(count.get(o.agent_id, 0))]
        state.accept(protocol.Accept(fw, [o.offer_id for o in offers], tasks), NOW)
        state.suppress(protocol.Suppress(fw), NOW)
    state.revive(protocol.Revive("alice-web"), NOW)
    for (fw, task_id), task in list(state.tasks.items()):
        for st in (TaskState.STARTING, TaskState.RUNNING):
            state.status_update(protocol.TaskStatus(task_id, fw, task.agent_id, st, f"u-{task_id}-{st}", NOW), NOW)
    state.check_invariants()
    return state


def ask(master: MasterState, what: str, now: float = NOW, **filters: object) -> protocol.QueryResult:
    result = queries.answer(master, Query(what, **filters), now, active_since=NOW - 60)  # type: ignore[arg-type]
    assert codec.decode(codec.encode(result, now)).body == result  # every answer is a valid message
    return result


def test_summary_counts_everything() -> None:
    state = build()
    s = ask(state, "summary").summary
    assert s is not None and s.master_id == "m1" and s.uptime == 60
    assert s.agents == {"ACTIVE": 5, "SILENT": 0, "REMOVED": 0}
    assert s.frameworks == {"CONNECTED": 2}
    assert s.tasks == {"TASK_RUNNING": 11}
    assert s.total == Resources.of(cpus=24, mem=5 * 4096)
    assert s.used == Resources.of(cpus=11, mem=11 * 128)
    assert s.used + s.offered + s.free == s.total


def test_agents_page_total_and_order() -> None:
    state = build(agents=30)
    page = ask(state, "agents", offset=10, limit=5)
    assert page.total == 30 and page.offset == 10
    assert [a.agent_id for a in page.agents] == [f"a{i}" for i in range(10, 15)]
    a0 = ask(state, "agents", id_prefix="a0").agents[0]
    assert a0.hostname == "host0" and a0.tasks == 3 and a0.used == Resources.of(cpus=3, mem=384)
    assert a0.used + a0.offered + a0.free == a0.total
    assert ask(state, "agents", limit=0).agents == [] and ask(state, "agents", limit=0).total == 30
    assert ask(state, "agents", offset=100).agents == []
    assert [a.agent_id for a in ask(state, "agents", id_prefix="a2").agents] == ["a2"] + [f"a{i}" for i in
                                                                                          range(20, 30)]


def test_agents_fits_sort_and_states() -> None:
    state = build()
    assert [a.agent_id for a in ask(state, "agents", fits=Resources.of(cpus=5)).agents] == ["a0"]
    assert ask(state, "agents", fits=Resources.of(cpus=9)).total == 0
    assert [a.agent_id for a in ask(state, "agents", sort="total:cpus", limit=1).agents] == ["a0"]
    assert ask(state, "agents", sort="free:cpus", limit=2).agents[0].free.scalar("cpus") == 5  # a0: 8 - 3
    # a3 falls silent, then is removed: its states follow
    for agent in state.agents.values():
        if agent.agent_id != "a3":
            agent.last_seen = NOW + 10
    assert [a.agent_id for a in ask(state, "agents", NOW + 10, state="SILENT").agents] == ["a3"]
    state.remove_agent("a3", "test", NOW + 10)
    removed = ask(state, "agents", NOW + 10, state="REMOVED")
    assert [(a.agent_id, a.state, a.tasks) for a in removed.agents] == [("a3", "REMOVED", 2)]
    assert ask(state, "summary", NOW + 10).summary.agents == {"ACTIVE": 4, "SILENT": 0, "REMOVED": 1}


def test_tasks_filters() -> None:
    state = build()
    assert ask(state, "tasks").total == 11
    assert ask(state, "tasks", framework_id="bob").total == 1
    assert {t.task_id for t in ask(state, "tasks", agent_id="a1").tasks} == {"alice-web-a1-0", "alice-web-a1-1"}
    assert ask(state, "tasks", role="web").total == 10 and ask(state, "tasks", role="nosuch").total == 0
    assert ask(state, "tasks", state="running").total == 11 and ask(state, "tasks", state="TASK_FAILED").total == 0
    assert ask(state, "tasks", state="bogus").total == 0
    assert [t.task_id for t in ask(state, "tasks", id_prefix="alice-web-a4").tasks] == ["alice-web-a4-0",
                                                                                       "alice-web-a4-1"]
    item = ask(state, "tasks", id_prefix="bob-").tasks[0]
    assert item.agent_id == "a0" and item.hostname == "host0" and item.state == TaskState.RUNNING
    assert item.history == []  # only when asked for


def test_ended_tasks_and_history() -> None:
    state = build()
    task = state.tasks[("bob", "bob-a0-0")]
    state.status_update(protocol.TaskStatus("bob-a0-0", "bob", "a0", TaskState.FAILED, "u-f", NOW + 1,
                                            message="x" * 5000, exit_code=3, data=b"big"), NOW + 1)
    assert ask(state, "tasks", framework_id="bob").total == 0  # live only by default
    ended = ask(state, "tasks", framework_id="bob", completed=True, history=True).tasks
    assert [t.state for t in ended] == [TaskState.FAILED]
    assert ended[0].exit_code == 3 and len(ended[0].message) == 1024
    assert [s.state for s in ended[0].history] == [TaskState.STARTING, TaskState.RUNNING, TaskState.FAILED]
    assert all(not s.data and len(s.message) <= 1024 for s in ended[0].history)
    assert ask(state, "tasks", state="FAILED").tasks[0].task_id == "bob-a0-0"
    for n in range(100):
        task.note(protocol.TaskStatus("bob-a0-0", "bob", "a0", TaskState.RUNNING, f"x{n}", NOW))
    assert len(task.history) == STATUS_HISTORY_KEPT


def test_master_decided_state_ends_the_history() -> None:
    state = build()
    state.remove_agent("a1", "gone", NOW + 5)
    (task,) = ask(state, "tasks", id_prefix="alice-web-a1-0", completed=True, history=True).tasks
    assert task.state == TaskState.LOST and task.history[-1].state == TaskState.LOST
    assert task.history[-1].source == "SOURCE_MASTER"


def test_frameworks_offers_roles() -> None:
    state = build()
    fws = ask(state, "frameworks")
    assert [f.framework_id for f in fws.frameworks] == ["alice-web", "bob"]
    assert fws.frameworks[0].tasks == 10 and fws.frameworks[0].state == "CONNECTED"
    assert ask(state, "frameworks", role="web").total == 1
    state.framework_disconnected("bob", NOW)
    assert [f.framework_id for f in ask(state, "frameworks", state="DISCONNECTED").frameworks] == ["bob"]
    state.allocation_round(NOW + 5)
    offers = ask(state, "offers", NOW + 6)
    assert offers.total == len(state.offers) > 0
    assert all(o.framework_id == "alice-web" and 0 < o.expires_in <= 30 for o in offers.offers)
    assert {r.role for r in ask(state, "roles").roles} == {"*", "web"}
    assert [r.role for r in ask(state, "roles", role="web").roles] == ["web"]


def test_a_framework_principal_sees_only_its_own() -> None:
    state = build()
    scope = security.query_scope(security.principal("framework", "alice"))
    result = queries.answer(state, Query("tasks", limit=1000), NOW, NOW, scope)
    assert result.total == 10 and {t.framework_id for t in result.tasks} == {"alice-web"}
    assert [f.framework_id for f in queries.answer(state, Query("frameworks"), NOW, NOW, scope).frameworks] == [
        "alice-web"]
    assert queries.answer(state, Query("agents"), NOW, NOW, scope).total == 5  # every agent
    summary = queries.answer(state, Query("summary"), NOW, NOW, scope).summary
    assert summary is not None and summary.tasks == {"TASK_RUNNING": 10} and summary.frameworks == {"CONNECTED": 1}
    framework = security.principal("framework", "alice")
    assert security.check_query(framework, "roles") is not None
    assert security.check_query(framework, "tasks") is None
    assert security.check_query(security.principal("monitor", "m"), "roles") is None
    assert security.check_query(security.principal("agent", "a1"), "summary") is not None
    assert security.check_query(None, "summary") is not None


def test_a_page_stops_at_the_byte_budget() -> None:
    state = MasterState(MasterConfig("m1"))
    attributes = {f"k{i}": "v" * 2000 for i in range(50)}  # about 100 kB per agent
    for i in range(60):
        state.agent_info(protocol.Register(f"a{i}", "h", Resources.of(cpus=1), attributes), NOW)
    page = queries.answer(state, Query("agents", limit=1000), NOW, NOW)
    assert page.total == 60 and 0 < len(page.agents) < 60
    assert len(codec.encode(page, NOW)) <= queries.MAX_REPLY_BYTES + 200_000
    rest = queries.answer(state, Query("agents", offset=len(page.agents), limit=1000), NOW, NOW)
    assert rest.agents[0].agent_id == f"a{len(page.agents)}"


def test_a_10k_agent_page_is_one_screenful() -> None:
    state = MasterState(MasterConfig("m1"))
    for i in range(10_000):
        state.agent_info(protocol.Register(f"a{i}", f"h{i}", Resources.of(cpus=4, mem=4096)), NOW)
    page = queries.answer(state, Query("agents", offset=9_990, limit=20), NOW, NOW)
    assert page.total == 10_000 and [a.agent_id for a in page.agents] == [f"a{i}" for i in range(9_990, 10_000)]
    assert queries.answer(state, Query("summary"), NOW, NOW).summary.total == Resources.of(cpus=40_000,
                                                                                          mem=40_960_000)


def test_bad_queries_are_refused() -> None:
    for bad in ({"what": "agents", "limit": 1001}, {"what": "agents", "offset": -1},
                {"what": "tasks", "id_prefix": "x" * 129}):
        with pytest.raises(ProtocolError):  # invalid: dead-lettered
            codec.decode_body(Query, bad)
    with pytest.raises(ProtocolError):
        codec.decode_body(protocol.OperatorKill, {"tasks": []})
    state = build(agents=1)
    for query in (Query("everything"), Query("agents", sort="size"), Query("agents", sort="usage:mem"),
                  Query("tasks", sort="total:cpus")):
        with pytest.raises(CallRefused):  # refused: answered with ERROR
            queries.answer(state, query, NOW, NOW)


def test_operator_kill_uses_the_kill_path_and_is_all_or_nothing() -> None:
    state = build()
    refs = [protocol.TaskRef("bob", "bob-a0-0"), protocol.TaskRef("alice-web", "alice-web-a1-0")]
    effects = state.operator_kill(protocol.OperatorKill(refs), "amq.gen-x", "c1", NOW)
    kills = {(e.agent_id, e.body.framework_id): e.body.task_ids for e in effects if isinstance(e, ToAgent)}
    assert kills == {("a0", "bob"): ["bob-a0-0"], ("a1", "alice-web"): ["alice-web-a1-0"]}
    (reply,) = [e for e in effects if isinstance(e, ToFramework)]
    assert reply.reply_to == "amq.gen-x" and reply.correlation_id == "c1"
    assert [(s.task_id, s.state) for s in reply.body.updates] == [("bob-a0-0", TaskState.RUNNING),
                                                                   ("alice-web-a1-0", TaskState.RUNNING)]
    with pytest.raises(CallRefused, match="nosuch"):
        state.operator_kill(protocol.OperatorKill([*refs, protocol.TaskRef("bob", "nosuch")]), None, "c2", NOW)
    state.check_invariants()


def test_sorted_by_use() -> None:
    state = build()
    assert ask(state, "agents", sort="used:cpus", limit=2).agents[0].agent_id == "a0"  # 3 tasks
    for n, task in enumerate(state.tasks.values()):
        task.usage = TaskUsage(cpu_seconds=n, mem_mb=100 - n)
    busiest = ask(state, "tasks", sort="usage:mem", limit=3)
    assert busiest.total == 11 and [t.usage_mem_mb for t in busiest.tasks] == [100, 99, 98]
    assert ask(state, "tasks", sort="usage:cpu", limit=1).tasks[0].usage_cpu_seconds == 10
