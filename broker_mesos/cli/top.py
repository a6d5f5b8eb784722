"""``bmesos top``: a live view of the cluster — the busiest agents (used against total), the busiest
tasks, and status updates as they happen.

It never polls the whole state: status updates come live from the ``status`` exchange (one exclusive
queue); every ``--interval`` it asks the master for two small pages, the ``--rows`` agents using most
CPUs and the ``--rows`` tasks using most memory (each one pass with a heap of ``--rows`` items on the
master), and every ``SUMMARY_EVERY`` intervals for the summary line. CPU % of a task is its reported
CPU time between two of its pages. ``--once`` prints one frame and exits (for pipes and tests).
"""

from __future__ import annotations

import collections
import sys
import time
import uuid
from typing import Any

import click
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from broker_mesos.bus import topology
from broker_mesos.bus.connection import Bus, Delivery
from broker_mesos.bus.tls import TlsOptions
from broker_mesos.cli.cluster import amount, console, counts, duration, query_options, short_state
from broker_mesos.cli.common import master_principal_option, printable
from broker_mesos.cli.query import NoAnswer, Refused
from broker_mesos.core import codec, protocol, security
from broker_mesos.core.errors import ProtocolError

SUMMARY_EVERY = 5  # intervals between summary queries
RECENT_KEPT = 10  # status updates shown
MAX_RENDERS_PER_SECOND = 4


class TopView:
    """What ``top`` shows, updated by answers and status updates; ``render`` draws it."""

    def __init__(self) -> None:
        self.summary: protocol.ClusterSummary | None = None
        self.agents: list[protocol.AgentItem] = []
        self.tasks: list[protocol.TaskItem] = []
        self.cpu: dict[tuple[str, str], tuple[float, float]] = {}  # task -> (cpu seconds, when)
        self.rate: dict[tuple[str, str], float] = {}  # task -> CPU % between its last two pages
        self.recent: collections.deque[protocol.TaskStatus] = collections.deque(maxlen=RECENT_KEPT)

    def tasks_page(self, tasks: list[protocol.TaskItem], now: float) -> None:
        self.tasks = tasks
        for task in tasks:
            key = (task.framework_id, task.task_id)
            if task.usage_cpu_seconds is None:
                continue
            before = self.cpu.get(key)
            if before is not None and now > before[1]:
                self.rate[key] = max(0.0, 100 * (task.usage_cpu_seconds - before[0]) / (now - before[1]))
            self.cpu[key] = (task.usage_cpu_seconds, now)
        shown = {(t.framework_id, t.task_id) for t in tasks}
        for gone in [k for k in self.cpu if k not in shown]:
            self.cpu.pop(gone)
            self.rate.pop(gone, None)

    def render(self) -> Group:
        parts: list[Any] = [Text(self.header())]
        agents = Table(box=None, header_style="bold", pad_edge=False, title_justify="left")
        for header in ("AGENT", "HOSTNAME", "STATE", "CPUS used/total", "", "MEM used/total", "TASKS"):
            agents.add_column(header, no_wrap=True)
        for a in self.agents:
            total, used = a.total.scalar("cpus"), a.used.scalar("cpus")
            agents.add_row(Text(printable(a.agent_id)), Text(printable(a.hostname)), Text(a.state),
                           f"{used:g}/{total:g}", bar(used, total),
                           f"{amount('mem', a.used.scalar('mem'))}/{amount('mem', a.total.scalar('mem'))}",
                           str(a.tasks))
        tasks = Table(box=None, header_style="bold", pad_edge=False)
        for header in ("TASK", "FRAMEWORK", "AGENT", "STATE", "CPU%", "MEM", "CPUS", "MEM LIMIT"):
            tasks.add_column(header, no_wrap=True)
        for t in self.tasks:
            rate = self.rate.get((t.framework_id, t.task_id))
            tasks.add_row(Text(printable(t.task_id)), Text(printable(t.framework_id)), Text(printable(t.agent_id)),
                          short_state(t.state.value), "-" if rate is None else f"{rate:.0f}",
                          amount("mem", t.usage_mem_mb or 0.0), f"{t.resources.scalar('cpus'):g}",
                          amount("mem", t.resources.scalar("mem")))
        recent = Table(box=None, header_style="bold", pad_edge=False)
        for header in ("TIME", "TASK", "FRAMEWORK", "AGENT", "STATE"):
            recent.add_column(header, no_wrap=True)
        for s in self.recent:
            recent.add_row(time.strftime("%H:%M:%S", time.localtime(s.timestamp)), Text(printable(s.task_id)),
                           Text(printable(s.framework_id)), Text(printable(s.agent_id)), short_state(s.state.value))
        parts += [Text(""), agents, Text(""), tasks if self.tasks else Text("no task has reported usage yet"),
                  Text(""), Text("recent status updates:", style="bold"),
                  recent if self.recent else Text("  none since top started")]
        return Group(*parts)

    def header(self) -> str:
        s = self.summary
        if s is None:
            return "waiting for the master..."
        cpus, mem = s.total.scalar("cpus"), s.total.scalar("mem")
        return printable(f"master {s.master_id} up {duration(s.uptime)} | agents {counts(s.agents)} | tasks "
                         f"{counts(s.tasks, short=True) or 'none'} | cpus {s.used.scalar('cpus'):g}/{cpus:g} | "
                         f"mem {amount('mem', s.used.scalar('mem'))}/{amount('mem', mem)}")


def bar(used: float, total: float, width: int = 20) -> Text:
    filled = 0 if total <= 0 else min(width, round(width * used / total))
    return Text("#" * filled + "." * (width - filled), style="green" if filled < width * 0.8 else "red")


@click.command()
@click.option("--interval", type=click.FloatRange(min=0.5), default=2.0, show_default=True,
              help="Seconds between refreshes of the agent and task pages.")
@click.option("--rows", type=click.IntRange(1, 100), default=15, show_default=True,
              help="Agents and tasks shown.")
@click.option("--once", is_flag=True, help="Print one frame and exit (what a pipe gets anyway).")
@master_principal_option
@query_options
def top(interval: float, rows: int, once: bool, master_principal: str, timeout: float, broker: str,
        connect_timeout: float, tls: TlsOptions | None) -> None:
    """A live view: the busiest agents (used against total), the busiest tasks, status as it happens.

    \b
      bmesos top
      bmesos top --rows 30 --interval 5
      bmesos top --once
    """
    once = once or not sys.stdout.isatty()
    view = TopView()
    bus = Bus(broker, "top", connect_timeout=connect_timeout, tls=tls)
    replies = topology.Queue("", durable=False, exclusive=True, auto_delete=True)
    updates = topology.Queue("", ((topology.STATUS, "#"),), durable=False, exclusive=True, auto_delete=True)
    waiting: dict[str, str] = {}  # correlation id -> what it asked
    secure = security.parse(bus.user, master_principal) is not None
    live = None if once else Live(view.render(), console=console(), auto_refresh=False, screen=False)
    state: dict[str, Any] = {"rendered": 0.0, "ticks": 0, "answered": 0.0, "error": ""}

    def ask(what: str, **filters: Any) -> None:
        call_id = uuid.uuid4().hex
        waiting[call_id] = what
        body = protocol.Query(what, **filters)
        bus.publish(topology.MASTER, topology.call_type(protocol.Query), codec.encode(body, time.time(), call_id),
                    persistent=False, reply_to=bus.queue_name(replies), correlation_id=call_id,
                    expiration_ms=int(timeout * 1000))

    def refresh() -> None:
        if state["ticks"] % SUMMARY_EVERY == 0:
            ask("summary")
        state["ticks"] += 1
        ask("agents", sort="used:cpus", limit=rows)
        ask("tasks", sort="usage:mem", limit=rows)

    def render(force: bool = False) -> None:
        now = time.monotonic()
        if live is not None and (force or now - state["rendered"] >= 1 / MAX_RENDERS_PER_SECOND):
            state["rendered"] = now
            live.update(view.render(), refresh=True)

    def on_reply(delivery: Delivery) -> None:
        try:
            body = codec.decode(delivery.body).body
        except ProtocolError as exc:
            bus.dead_letter(delivery, exc.reason)
            return
        bus.ack(delivery)
        what = waiting.pop(delivery.properties.correlation_id or "", None)
        if what is None:
            return
        state["answered"] = time.monotonic()
        if isinstance(body, protocol.Error):
            state["error"] = f"the master refused QUERY: {printable(body.message)}"
            bus.stop()
            return
        if not isinstance(body, protocol.QueryResult):
            return
        if what == "summary":
            view.summary = body.summary
        elif what == "agents":
            view.agents = body.agents
        else:
            view.tasks_page(body.tasks, time.time())
        if once and view.summary is not None and not waiting:
            bus.stop()
        render()

    def on_status(delivery: Delivery) -> None:
        try:
            envelope = codec.decode(delivery.body)
        except ProtocolError as exc:
            bus.dead_letter(delivery, exc.reason)
            return
        bus.ack(delivery)
        if not isinstance(envelope.body, protocol.Status):
            return
        sender = security.parse(delivery.properties.user_id, master_principal)
        for update in envelope.body.updates:
            if secure and (sender is None or not (sender.kind is security.Kind.MASTER or (
                    sender.kind is security.Kind.AGENT and sender.name == update.agent_id))):
                continue  # only the master and the update's own agent are believed
            view.recent.appendleft(update)
        render()

    def started() -> None:
        refresh()
        bus.call_every(interval, refresh)
        bus.call_later(timeout, check_answered)

    def check_answered() -> None:
        if not state["answered"]:
            state["error"] = f"no answer from the master within {timeout:g}s (is `bmesos master` running?)"
            bus.stop()

    bus.consume(replies, on_reply)
    if not once:
        bus.consume(updates, on_status)
    bus.on_ready(started)
    try:
        if live is not None:
            live.start()
        bus.run()
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()
    if state["error"]:
        raise (NoAnswer if state["error"].startswith("no answer") else Refused)(str(state["error"]))
    if once:
        console().print(view.render())
