"""``bmesos admin``: operator calls to the running master — allocator policy, roles, ACLs, draining agents.

Each command sends one admin call (exchange ``master``, routing key = the call type) with a private
reply queue as ``reply_to``, waits for the answer with a deadline and prints it; a refusal (ERROR) is
one line on stderr and exit status 1. Everything the master sent is escaped (``printable``,
``json_line``) before it is printed.
"""

from __future__ import annotations

import time
from typing import Any

import click

from broker_mesos.bus.tls import TlsOptions
from broker_mesos.cli.common import broker_options, json_line, one_line_errors, printable, setup_logging
from broker_mesos.cli.query import Client, NoAnswer, Refused
from broker_mesos.core import codec, protocol
from broker_mesos.core.errors import ResourceError
from broker_mesos.core.resources import Resources

REPLY_TIMEOUT = 15.0


def request(broker: str, connect_timeout: float, call: Any, timeout: float, tls: TlsOptions | None = None) -> Any:
    """Send ``call`` to the master and return the body of its reply (or raise ClickException). The
    call expires unanswered after ``timeout`` (``cli.query.Client``): a master started later never
    applies an admin call its operator already gave up on."""
    try:
        return Client(broker, connect_timeout, timeout, tls, name="admin").call(call)
    except (NoAnswer, Refused) as exc:
        raise click.ClickException(str(exc)) from None


def parse_params(values: tuple[str, ...]) -> dict[str, str]:
    params: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint="'--param'")
        params[key] = val
    return params


def parse_quota(value: str | None, option: str) -> Resources | None:
    if value is None:
        return None
    try:
        return Resources.parse(value)
    except ResourceError as exc:
        raise click.BadParameter(str(exc), param_hint=f"'{option}'") from None


def allocator_line(info: protocol.AllocatorInfo) -> str:
    params = " ".join(f"{printable(k)}={printable(v)}" for k, v in sorted(info.params.items()))
    policies = ", ".join(printable(p) for p in info.policies)
    return f"policy {printable(info.policy)}" + (f" {params}" if params else "") + f" (available: {policies})"


def role_line(role: protocol.RoleInfo) -> str:
    frameworks = ",".join(printable(f) for f in role.frameworks) or "-"
    return (f"{printable(role.role)} weight={role.weight:g} guarantee={printable(role.guarantee)} "
            f"limit={printable(role.limit)} allocated={printable(role.allocated)} frameworks={frameworks}")


def _call_options(fn: Any) -> Any:
    """What every admin subcommand takes: --json, --timeout, the broker options, --log-level; and our
    errors as one line."""
    fn = one_line_errors(fn)
    fn = click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="warning",
                      show_default=True, help="Log verbosity (logs go to stderr).")(fn)
    fn = broker_options(fn)
    fn = click.option("--timeout", type=click.FloatRange(min=0.1), default=REPLY_TIMEOUT, show_default=True,
                      help="Seconds to wait for the master's answer.")(fn)
    return click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")(fn)


def _show(as_json: bool, body: Any, lines: list[str]) -> None:
    if as_json:
        click.echo(json_line(codec.to_wire(body), sort_keys=True))
    else:
        for line in lines:
            click.echo(line)


@click.group()
def admin() -> None:
    """Operate the running master: allocator policy, role weights and quotas, ACLs, agent drains.

    Every subcommand talks to the master through the broker (--broker URL or $BMESOS_BROKER) and
    prints the master's answer; a refused call is one line on stderr, exit status 1.

    \b
      bmesos admin allocator show
      bmesos admin allocator set priority --param priorities=prod:10,batch:1
      bmesos admin role set prod --weight 2 --guarantee 'cpus:4;mem:4096' --limit 'cpus:16'
      bmesos admin role show
      bmesos admin drain agent-1 --deadline 600
      bmesos admin gone agent-7
    """


@admin.group()
def allocator() -> None:
    """Show or switch the allocator policy (no restart: it applies from the next round)."""


@allocator.command("set")
@click.argument("policy")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Policy parameter (repeatable).")
@_call_options
def allocator_set(policy: str, params: tuple[str, ...], as_json: bool, timeout: float, broker: str,
                  connect_timeout: float, tls: TlsOptions | None, log_level: str) -> None:
    """Switch to POLICY (drf, priority, fair, binpack, or an installed plugin).

    \b
      bmesos admin allocator set priority --param priorities=prod:10,batch:1
      bmesos admin allocator set fair --param resource=cpus
    """
    setup_logging(log_level)
    info = request(broker, connect_timeout, protocol.SetAllocator(policy, parse_params(params)), timeout, tls)
    _show(as_json, info, [allocator_line(info)])


@allocator.command("show")
@_call_options
def allocator_show(as_json: bool, timeout: float, broker: str, connect_timeout: float, tls: TlsOptions | None,
                   log_level: str) -> None:
    """Print the current policy and its parameters."""
    setup_logging(log_level)
    info = request(broker, connect_timeout, protocol.GetAllocator(), timeout, tls)
    _show(as_json, info, [allocator_line(info)])


@admin.group()
def role() -> None:
    """Show or set role weights and quotas."""


@role.command("set")
@click.argument("name")
@click.option("--weight", type=click.FloatRange(min=0.001, max=1e6), default=None, help="Fair-share weight.")
@click.option("--guarantee", default=None, metavar="RESOURCES",
              help="Guaranteed minimum, e.g. 'cpus:2;mem:1024' ('' for none).")
@click.option("--limit", default=None, metavar="RESOURCES", help="Most the role may hold ('' for no limit).")
@_call_options
def role_set(name: str, weight: float | None, guarantee: str | None, limit: str | None, as_json: bool,
             timeout: float, broker: str, connect_timeout: float, tls: TlsOptions | None, log_level: str) -> None:
    """Set role NAME's weight, guarantee and/or limit (options left out keep their value)."""
    setup_logging(log_level)
    call = protocol.SetRole(name, weight, parse_quota(guarantee, "--guarantee"), parse_quota(limit, "--limit"))
    roles = request(broker, connect_timeout, call, timeout, tls)
    _show(as_json, roles, [role_line(r) for r in roles.roles if r.role == name])


@role.command("show")
@_call_options
def role_show(as_json: bool, timeout: float, broker: str, connect_timeout: float, tls: TlsOptions | None,
              log_level: str) -> None:
    """Print every role: weight, guarantee, limit, what it holds, its frameworks."""
    setup_logging(log_level)
    roles = request(broker, connect_timeout, protocol.GetRoles(), timeout, tls)
    _show(as_json, roles, [role_line(r) for r in roles.roles] or ["no roles"])


def acl_line(acl: protocol.AclInfo) -> str:
    return (f"{printable(acl.principal)} roles={','.join(printable(r) for r in acl.roles) or '-'} "
            f"users={','.join(printable(u) for u in acl.users) or '-'}")


@admin.group()
def acl() -> None:
    """Show or set what framework principals may use: roles and OS users (deny by default)."""


@acl.command("set")
@click.argument("principal")
@click.option("--roles", default="*", show_default=True, metavar="R1,R2",
              help="Roles it may SUBSCRIBE with ('*' is the default role).")
@click.option("--users", default="", metavar="U1,U2",
              help="OS users its tasks may run as ('*': any; none: only the agents' default task user).")
@_call_options
def acl_set(principal: str, roles: str, users: str, as_json: bool, timeout: float, broker: str,
            connect_timeout: float, tls: TlsOptions | None, log_level: str) -> None:
    """Set framework PRINCIPAL's ACL (framework.<name>); replaces what it had.

    \b
      bmesos admin acl set framework.alice --roles prod,batch --users alice
    """
    setup_logging(log_level)
    call = protocol.SetAcl(principal, [r for r in roles.split(",") if r], [u for u in users.split(",") if u])
    acls = request(broker, connect_timeout, call, timeout, tls)
    _show(as_json, acls, [acl_line(a) for a in acls.acls if a.principal == principal])


@acl.command("show")
@_call_options
def acl_show(as_json: bool, timeout: float, broker: str, connect_timeout: float, tls: TlsOptions | None,
             log_level: str) -> None:
    """Print every framework principal's ACL (those not listed: role * and the default user only)."""
    setup_logging(log_level)
    acls = request(broker, connect_timeout, protocol.GetAcls(), timeout, tls)
    _show(as_json, acls, [acl_line(a) for a in acls.acls] or ["no ACLs (every framework principal: role *, "
                                                               "default task user)"])


def agent_line(result: protocol.AgentAdminResult, now: float) -> str:
    """One line for an AGENT_ADMIN_RESULT: the agent's state and what the call did."""
    parts = [f"agent {printable(result.agent_id)} {printable(result.state)}"]
    if result.state == "GONE":
        parts.append(f"{result.gone} task(s) ended TASK_GONE_BY_OPERATOR")
    else:
        parts.append(f"{result.tasks} task(s) on it")
        if result.killed:
            parts.append(f"{result.killed} told to die")
        if result.deadline is not None:
            parts.append(f"deadline in {max(0.0, result.deadline - now):.0f}s")
        parts.append("offers resume" if result.state == "ACTIVE" else "no new offers")
    return ": ".join(parts[:1]) + ": " + ", ".join(parts[1:])


@admin.command("drain")
@click.argument("agent")
@click.option("--deadline", type=click.FloatRange(min=0.0, max=protocol.MAX_DRAIN_DEADLINE), default=None,
              metavar="SECONDS", help="Kill the tasks still running after this many seconds.")
@click.option("--kill", is_flag=True, help="Kill its tasks now.")
@_call_options
def drain(agent: str, deadline: float | None, kill: bool, as_json: bool, timeout: float, broker: str,
          connect_timeout: float, tls: TlsOptions | None, log_level: str) -> None:
    """Drain AGENT (its full id): no new offers from it, outstanding ones rescinded; its tasks finish,
    or are killed now (--kill) or when --deadline passes (Mesos maintenance, `nomad node drain`).

    \b
      bmesos admin drain agent-1                  # let its tasks finish
      bmesos admin drain agent-1 --deadline 600   # kill what still runs in 10 minutes
      bmesos admin drain agent-1 --kill           # kill its tasks now
    """
    setup_logging(log_level)
    result = request(broker, connect_timeout, protocol.DrainAgent(agent, deadline, kill), timeout, tls)
    _show(as_json, result, [agent_line(result, time.time())])


@admin.command("undrain")
@click.argument("agent")
@_call_options
def undrain(agent: str, as_json: bool, timeout: float, broker: str, connect_timeout: float,
            tls: TlsOptions | None, log_level: str) -> None:
    """End the drain of AGENT: it is offered again."""
    setup_logging(log_level)
    result = request(broker, connect_timeout, protocol.UndrainAgent(agent), timeout, tls)
    _show(as_json, result, [agent_line(result, time.time())])


@admin.command("gone")
@click.argument("agent")
@_call_options
def gone(agent: str, as_json: bool, timeout: float, broker: str, connect_timeout: float,
         tls: TlsOptions | None, log_level: str) -> None:
    """Mark AGENT, which the master removed, gone for good: its LOST / UNREACHABLE tasks end
    TASK_GONE_BY_OPERATOR and it may never register again under that id."""
    setup_logging(log_level)
    result = request(broker, connect_timeout, protocol.MarkAgentGone(agent), timeout, tls)
    _show(as_json, result, [agent_line(result, time.time())])
