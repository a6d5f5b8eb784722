"""``bmesos status | agents | frameworks | tasks | describe | kill``: read the cluster, kill tasks.

Every command asks the active master over the broker (QUERY, docs/protocol.md §18) and prints the
answer: a table (``-o table``, the default), a wider one (``-o wide``) or one JSON document
(``-o json``). Ids may be given as any unique prefix. Exit status (docs/cli.md): 0 done; 1 the
master did not answer within ``--timeout``, refused, or nothing matched; 2 a usage error or an
ambiguous prefix; 130 interrupted. Everything from the wire is escaped before it is printed.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from broker_mesos.bus.tls import TlsOptions
from broker_mesos.cli.common import broker_options, json_line, printable, setup_logging
from broker_mesos.cli.query import DEFAULT_TIMEOUT, Client
from broker_mesos.core import codec, protocol
from broker_mesos.core.errors import BrokerMesosError
from broker_mesos.core.resources import Resources

F = TypeVar("F", bound=Callable[..., Any])
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
CANDIDATES_SHOWN = 20
SHOWN_RESOURCES = ("cpus", "mem", "disk", "gpus")


class Failed(click.ClickException):
    exit_code = EXIT_FAILED


class Ambiguous(click.ClickException):
    exit_code = EXIT_USAGE


def query_options(fn: F) -> F:
    """What every query command takes: --timeout, the broker options, --log-level; errors as one line
    (exit 1: the master did not answer or refused; 2: usage), never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, log_level: str, **kwargs: Any) -> Any:
        setup_logging(log_level)
        try:
            return fn(*args, **kwargs)
        except BrokerMesosError as exc:
            raise Failed(printable(exc)) from None
        except KeyboardInterrupt:
            sys.exit(EXIT_INTERRUPTED)

    out: Any = click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
                            default="error", show_default=True, help="Log verbosity (logs go to stderr).")(wrapper)
    out = broker_options(out)
    return click.option("--timeout", type=click.FloatRange(min=0.1), default=DEFAULT_TIMEOUT, show_default=True,
                        help="Seconds to wait for the master's answer.")(out)  # type: ignore[no-any-return]


def output_option(fn: F) -> F:
    return click.option("-o", "--output", type=click.Choice(["table", "wide", "json"]), default="table",
                        show_default=True, help="Output format; json is one document.")(fn)


def paging_options(fn: F) -> F:
    fn = click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True,
                      help="Skip this many items.")(fn)
    return click.option("--limit", type=click.IntRange(1, protocol.MAX_QUERY_LIMIT), default=100,
                        show_default=True, help=f"Show at most this many (at most {protocol.MAX_QUERY_LIMIT}).")(fn)


def client(broker: str, connect_timeout: float, timeout: float, tls: TlsOptions | None) -> Client:
    return Client(broker, connect_timeout, timeout, tls, name="cli")


# -- printing ---------------------------------------------------------------------------------------


def console() -> Console:
    """Plain text for pipes (wide, so columns are not cut), colours on a terminal; no markup anywhere."""
    tty = sys.stdout.isatty()
    return Console(highlight=False, markup=False, emoji=False, width=None if tty else 250, no_color=not tty)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    out = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for header in headers:
        out.add_column(header, no_wrap=True, overflow="fold")
    for row in rows:
        out.add_row(*(Text(printable(cell)) for cell in row))
    console().print(out)


def print_json(value: Any) -> None:
    click.echo(json_line(value, sort_keys=True))


def page_note(result: protocol.QueryResult, shown: int) -> None:
    if result.total > result.offset + shown or result.offset:
        click.echo(f"showing {result.offset + 1 if shown else result.offset}-{result.offset + shown} of "
                   f"{result.total} (--offset, --limit)", err=True)


def amount(name: str, value: float) -> str:
    """``1.5``, ``96M``, ``0.5M``, ``12.0G``: mem and disk in MB (G from 10 GB on), others as they are."""
    if name in ("mem", "disk"):
        if value >= 10240:
            return f"{value / 1024:.1f}G"
        return f"{value:.0f}M" if value >= 10 or value == int(value) else f"{value:.1f}M"
    return f"{value:g}"


def used_of(used: Resources, total: Resources, names: Sequence[str] = SHOWN_RESOURCES) -> list[str]:
    return [f"{amount(n, used.scalar(n))}/{amount(n, total.scalar(n))}" if total.scalar(n) else "-" for n in names]


def ago(ts: float | None, now: float) -> str:
    if not ts:
        return "-"
    seconds = max(0.0, now - ts)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h" if seconds < 172800 else f"{seconds / 86400:.0f}d"


def duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h{minutes}m" if days else f"{hours}h{minutes}m{secs}s" if hours else f"{minutes}m{secs}s"


def short_state(state: str) -> str:
    return state.removeprefix("TASK_")


# -- resolving ids ----------------------------------------------------------------------------------


def resolve(cli: Client, what: str, prefix: str, id_of: Callable[[Any], str], **filters: Any) -> Any:
    """The one item of ``what`` whose id is ``prefix`` or starts with it (an exact id wins); ``Failed``
    when none does, ``Ambiguous`` (exit 2, candidates listed) when several do."""
    if not prefix:
        raise Ambiguous("an empty id matches everything: give an id or a prefix of one")
    result = cli.query(what, id_prefix=prefix, limit=CANDIDATES_SHOWN, **filters)
    items = getattr(result, what)
    exact = [item for item in items if id_of(item) == prefix]
    if len(exact) == 1 or (result.total == 1 and items):
        return exact[0] if exact else items[0]
    if result.total == 0:
        raise Failed(f"no {what[:-1]} with an id starting with {printable(prefix)}")
    ids = [id_of(item) for item in items]
    candidates = ", ".join(printable(f"{i} (framework {item.framework_id})" if ids.count(i) > 1 else i)
                           for i, item in zip(ids, items, strict=True))
    more = f" and {result.total - len(items)} more" if result.total > len(items) else ""
    raise Ambiguous(f"{printable(prefix)} matches {result.total} {what}: {candidates}{more}; give more of the id"
                    + (" or --framework" if what == "tasks" else ""))


def task_label(task: protocol.TaskItem) -> str:
    return f"{task.task_id} (framework {task.framework_id})"


# -- commands ---------------------------------------------------------------------------------------


@click.command()
@output_option
@query_options
def status(output: str, timeout: float, broker: str, connect_timeout: float, tls: TlsOptions | None) -> None:
    """The cluster at a glance: master, agents by state, resources used/total, frameworks, tasks.

    \b
      bmesos status
      bmesos status -o json
    """
    result = client(broker, connect_timeout, timeout, tls).query("summary")
    s = result.summary
    if s is None:
        raise Failed("the master's answer holds no summary")
    if output == "json":
        print_json(codec.to_wire(s))
        return
    lines = [f"master     {printable(s.master_id)} (active for {duration(s.uptime)})",
             "agents     " + counts(s.agents),
             "frameworks " + (counts(s.frameworks) or "none"),
             "tasks      " + (counts(s.tasks, short=True) or "none"),
             f"offers     {s.offers} outstanding"]
    for line in lines:
        click.echo(line)
    names = sorted(s.total.scalars)
    rows = [[n, amount(n, s.used.scalar(n)), amount(n, s.offered.scalar(n)), amount(n, s.free.scalar(n)),
             amount(n, s.total.scalar(n)), f"{100 * s.used.scalar(n) / s.total.scalar(n):.0f}%"] for n in names]
    if rows:
        click.echo("")
        table(["RESOURCE", "USED", "OFFERED", "FREE", "TOTAL", "USED%"], rows)


def counts(by_state: dict[str, int], short: bool = False) -> str:
    return ", ".join(f"{n} {printable(short_state(k) if short else k).lower()}" for k, n in sorted(by_state.items())
                     if n) or "0"


@click.command()
@click.option("--state", default="", help="ACTIVE, SILENT (heartbeat overdue) or REMOVED.")
@click.option("--fits", default=None, metavar="RESOURCES", help="Only agents whose total holds these, e.g. cpus:8.")
@output_option
@paging_options
@query_options
def agents(state: str, fits: str | None, output: str, limit: int, offset: int, timeout: float, broker: str,
           connect_timeout: float, tls: TlsOptions | None) -> None:
    """List agents: state, resources used/total, tasks.

    \b
      bmesos agents
      bmesos agents --state SILENT -o wide
      bmesos agents -o json --limit 1000 --offset 1000
    """
    need = parse_resources(fits, "--fits") if fits is not None else None
    result = client(broker, connect_timeout, timeout, tls).query("agents", state=state.upper(), fits=need,
                                                                 offset=offset, limit=limit)
    if output == "json":
        print_json(page_json(result, result.agents))
        return
    now = time.time()
    wide = output == "wide"
    headers = ["ID", "HOSTNAME", "STATE", "CPUS", "MEM", "DISK", "TASKS", "SEEN"]
    if wide:
        headers += ["FREE", "OFFERED", "USAGE(cpu-s/mem)", "ATTRIBUTES"]
    rows = []
    for a in result.agents:
        row = [a.agent_id, a.hostname, a.state, *used_of(a.used, a.total, SHOWN_RESOURCES[:3]), str(a.tasks),
               ago(a.last_seen, now)]
        if wide:
            row += [str(a.free), str(a.offered), f"{a.usage_cpu_seconds:.1f}/{amount('mem', a.usage_mem_mb)}",
                    ",".join(f"{k}={v}" for k, v in sorted(a.attributes.items())) or "-"]
        rows.append(row)
    show(result, headers, rows)


@click.command()
@click.option("--state", default="", help="CONNECTED or DISCONNECTED.")
@click.option("--role", default="", help="Only frameworks of this role.")
@output_option
@paging_options
@query_options
def frameworks(state: str, role: str, output: str, limit: int, offset: int, timeout: float, broker: str,
               connect_timeout: float, tls: TlsOptions | None) -> None:
    """List frameworks: role, state, tasks, what they hold."""
    result = client(broker, connect_timeout, timeout, tls).query("frameworks", state=state.upper(), role=role,
                                                                 offset=offset, limit=limit)
    if output == "json":
        print_json(page_json(result, result.frameworks))
        return
    headers = ["ID", "NAME", "ROLE", "STATE", "TASKS", "CPUS", "MEM"]
    if output == "wide":
        headers += ["WEIGHT", "USER", "OFFERED", "SUPPRESSED", "FAILOVER"]
    rows = []
    for f in result.frameworks:
        row = [f.framework_id, f.name, f.role, f.state, str(f.tasks), amount("cpus", f.allocated.scalar("cpus")),
               amount("mem", f.allocated.scalar("mem"))]
        if output == "wide":
            row += [f"{f.weight:g}", f.user or "-", str(f.offered), "yes" if f.suppressed else "no",
                    f"{f.failover_timeout:g}s"]
        rows.append(row)
    show(result, headers, rows)


@click.command()
@click.option("--state", default="", help="A task state, e.g. RUNNING or TASK_FAILED (ended states: remembered "
                                          "tasks).")
@click.option("--framework", default="", help="Only tasks of this framework (id or unique prefix).")
@click.option("--agent", default="", help="Only tasks on this agent (id or unique prefix).")
@click.option("--all", "completed", is_flag=True, help="Also the ended tasks the master remembers.")
@output_option
@paging_options
@query_options
def tasks(state: str, framework: str, agent: str, completed: bool, output: str, limit: int, offset: int,
          timeout: float, broker: str, connect_timeout: float, tls: TlsOptions | None) -> None:
    """List tasks (live ones; --all adds the ended ones the master remembers).

    \b
      bmesos tasks
      bmesos tasks --state FAILED --framework batch -o wide
    """
    cli = client(broker, connect_timeout, timeout, tls)
    filters = _owner_filters(cli, framework, agent)
    result = cli.query("tasks", state=state.upper(), completed=completed, offset=offset, limit=limit, **filters)
    if output == "json":
        print_json(page_json(result, result.tasks))
        return
    now = time.time()
    headers = ["ID", "FRAMEWORK", "AGENT", "STATE", "CPUS", "MEM", "AGE"]
    if output == "wide":
        headers += ["HOSTNAME", "UPDATED", "EXIT", "USAGE(cpu-s/mem)", "MESSAGE"]
    rows = []
    for t in result.tasks:
        row = [t.task_id, t.framework_id, t.agent_id or "-", short_state(t.state.value),
               amount("cpus", t.resources.scalar("cpus")), amount("mem", t.resources.scalar("mem")),
               ago(t.launched_at, now)]
        if output == "wide":
            usage = "-" if t.usage_cpu_seconds is None else \
                f"{t.usage_cpu_seconds:.1f}/{amount('mem', t.usage_mem_mb or 0.0)}"
            row += [t.hostname or "-", ago(t.updated_at, now), "-" if t.exit_code is None else str(t.exit_code),
                    usage, t.message[:80] or "-"]
        rows.append(row)
    show(result, headers, rows)


def _owner_filters(cli: Client, framework: str, agent: str) -> dict[str, str]:
    filters = {}
    if framework:
        filters["framework_id"] = resolve(cli, "frameworks", framework, lambda f: f.framework_id).framework_id
    if agent:
        filters["agent_id"] = resolve(cli, "agents", agent, lambda a: a.agent_id).agent_id
    return filters


def show(result: protocol.QueryResult, headers: list[str], rows: list[list[str]]) -> None:
    if rows:
        table(headers, rows)
    else:
        click.echo(f"no {result.what}" + (f" from offset {result.offset}" if result.offset else ""), err=True)
    page_note(result, len(rows))


def page_json(result: protocol.QueryResult, items: Sequence[Any]) -> dict[str, Any]:
    return {"total": result.total, "offset": result.offset, "items": [codec.to_wire(i) for i in items]}


def parse_resources(text: str, option: str) -> Resources:
    try:
        return Resources.parse(text)
    except BrokerMesosError as exc:
        raise click.BadParameter(printable(exc), param_hint=f"'{option}'") from None


@click.group()
def describe() -> None:
    """Show one task, agent or framework in full (ids: any unique prefix).

    Asks the master through the broker (--broker URL or $BMESOS_BROKER, before or after the
    subcommand); -o json prints one JSON document.

    \b
      bmesos describe task run-3
      bmesos describe agent a1 -o json
    """


@describe.command("task")
@click.argument("task_id")
@click.option("--framework", default="", help="The task's framework (id or unique prefix), when ids clash.")
@output_option
@query_options
def describe_task(task_id: str, framework: str, output: str, timeout: float, broker: str, connect_timeout: float,
                  tls: TlsOptions | None) -> None:
    """A task: where it runs, its state, resources, usage and status history."""
    cli = client(broker, connect_timeout, timeout, tls)
    task = resolve(cli, "tasks", task_id, lambda t: t.task_id, completed=True, history=True,
                   **_owner_filters(cli, framework, ""))
    if output == "json":
        print_json(codec.to_wire(task))
        return
    now = time.time()
    fields = [("task", task.task_id), ("framework", task.framework_id),
              ("agent", f"{task.agent_id or '-'} ({task.hostname or 'host unknown'})"),
              ("state", task.state.value), ("resources", str(task.resources)),
              ("launched", f"{ago(task.launched_at, now)} ago"),
              ("updated", f"{ago(task.updated_at, now)} ago" if task.updated_at else "-"),
              ("exit code", "-" if task.exit_code is None else str(task.exit_code)),
              ("reason", task.reason or "-"), ("message", task.message or "-")]
    if task.usage_cpu_seconds is not None:
        fields.append(("usage", f"cpu {task.usage_cpu_seconds:.2f}s, mem {amount('mem', task.usage_mem_mb or 0)}, "
                                f"sandbox {amount('disk', task.usage_disk_mb or 0)}"))
    key_values(fields)
    click.echo("\nhistory:")
    rows = [[time.strftime("%H:%M:%S", time.localtime(s.timestamp)) + f".{int(s.timestamp * 1000) % 1000:03d}",
             s.state.value, s.source.removeprefix("SOURCE_"), s.reason or "-", s.message[:100] or "-"]
            for s in task.history]
    if rows:
        table(["TIME", "STATE", "SOURCE", "REASON", "MESSAGE"], rows)
    else:
        click.echo("  (none recorded)")


def key_values(fields: Sequence[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        click.echo(f"{key:<{width}}  {printable(value)}")


@describe.command("agent")
@click.argument("agent_id")
@output_option
@query_options
def describe_agent(agent_id: str, output: str, timeout: float, broker: str, connect_timeout: float,
                   tls: TlsOptions | None) -> None:
    """An agent: resources total/used/offered/free, attributes, and its tasks."""
    cli = client(broker, connect_timeout, timeout, tls)
    agent = resolve(cli, "agents", agent_id, lambda a: a.agent_id)
    running = cli.query("tasks", agent_id=agent.agent_id, limit=protocol.MAX_QUERY_LIMIT)
    if output == "json":
        print_json({**codec.to_wire(agent), "task_list": [codec.to_wire(t) for t in running.tasks]})
        return
    now = time.time()
    key_values([("agent", agent.agent_id), ("hostname", agent.hostname or "-"), ("state", agent.state),
                ("last seen", f"{ago(agent.last_seen, now)} ago"), ("total", str(agent.total)),
                ("used", str(agent.used)), ("offered", str(agent.offered)), ("free", str(agent.free)),
                ("usage", f"cpu {agent.usage_cpu_seconds:.1f}s, mem {amount('mem', agent.usage_mem_mb)}"),
                ("attributes", ", ".join(f"{k}={v}" for k, v in sorted(agent.attributes.items())) or "-"),
                ("tasks", str(agent.tasks))])
    if running.tasks:
        click.echo("")
        table(["TASK", "FRAMEWORK", "STATE", "RESOURCES"],
              [[t.task_id, t.framework_id, short_state(t.state.value), str(t.resources)] for t in running.tasks])
        page_note(running, len(running.tasks))


@describe.command("framework")
@click.argument("framework_id")
@output_option
@query_options
def describe_framework(framework_id: str, output: str, timeout: float, broker: str, connect_timeout: float,
                       tls: TlsOptions | None) -> None:
    """A framework: role, connection, what it holds, its tasks."""
    cli = client(broker, connect_timeout, timeout, tls)
    fw = resolve(cli, "frameworks", framework_id, lambda f: f.framework_id)
    running = cli.query("tasks", framework_id=fw.framework_id, limit=protocol.MAX_QUERY_LIMIT)
    if output == "json":
        print_json({**codec.to_wire(fw), "task_list": [codec.to_wire(t) for t in running.tasks]})
        return
    key_values([("framework", fw.framework_id), ("name", fw.name or "-"), ("role", fw.role),
                ("weight", f"{fw.weight:g}"), ("state", fw.state), ("user", fw.user or "-"),
                ("suppressed", "yes" if fw.suppressed else "no"), ("allocated", str(fw.allocated)),
                ("offered", str(fw.offered)), ("failover timeout", f"{fw.failover_timeout:g}s"),
                ("tasks", str(fw.tasks))])
    if running.tasks:
        click.echo("")
        table(["TASK", "AGENT", "STATE", "RESOURCES"],
              [[t.task_id, t.agent_id, short_state(t.state.value), str(t.resources)] for t in running.tasks])
        page_note(running, len(running.tasks))


@click.command()
@click.argument("task_ids", nargs=-1, required=True, metavar="TASK...")
@click.option("--framework", default="", help="The tasks' framework (id or unique prefix), when ids clash.")
@query_options
def kill(task_ids: tuple[str, ...], framework: str, timeout: float, broker: str, connect_timeout: float,
         tls: TlsOptions | None) -> None:
    """Kill live tasks of any framework (an operator's call): each ends TASK_KILLED.

    \b
      bmesos kill run-3 batch-1a2b
    """
    if len(task_ids) > protocol.MAX_KILL_TASKS:
        raise click.UsageError(f"at most {protocol.MAX_KILL_TASKS} tasks per call")
    cli = client(broker, connect_timeout, timeout, tls)
    filters = _owner_filters(cli, framework, "")
    found = [resolve(cli, "tasks", task_id, lambda t: t.task_id, **filters) for task_id in task_ids]
    refs = list(dict.fromkeys(protocol.TaskRef(t.framework_id, t.task_id) for t in found))
    answer = cli.call(protocol.OperatorKill(refs))
    for update in getattr(answer, "updates", []):
        click.echo(printable(f"killing task {update.task_id} of framework {update.framework_id} on agent "
                             f"{update.agent_id} (was {update.state.value})"))
