"""``bmesos``: the command line of broker-mesos. One module per command; this file only wires them."""

from __future__ import annotations

import importlib
import sys

import click

from broker_mesos.cli.common import printable

COMMANDS = {
    "admin": "broker_mesos.cli.admin:admin",
    "agents": "broker_mesos.cli.cluster:agents",
    "describe": "broker_mesos.cli.cluster:describe",
    "frameworks": "broker_mesos.cli.cluster:frameworks",
    "job": "broker_mesos.cli.job:job",
    "kill": "broker_mesos.cli.cluster:kill",
    "logs": "broker_mesos.cli.logs:logs",
    "status": "broker_mesos.cli.cluster:status",
    "tasks": "broker_mesos.cli.cluster:tasks",
    "top": "broker_mesos.cli.top:top",
    "master": "broker_mesos.cli.master:master",
    "principals": "broker_mesos.cli.principals:principals",
    "agent": "broker_mesos.cli.agent:agent",
    "run": "broker_mesos.cli.run:run",
    "service": "broker_mesos.cli.service:service",
    "ui": "broker_mesos.cli.ui:ui",
    "watch": "broker_mesos.cli.watch:watch",
}


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs, so ``bmesos --help`` stays fast."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="broker-mesos")
def main() -> None:
    """broker-mesos: a Mesos-style cluster resource manager over RabbitMQ.

    Start a master and some agents, then run work on them:

    \b
      bmesos master &
      bmesos agent --resources 'cpus:4;mem:4096' &
      bmesos run --count 3 -- echo hello
      bmesos watch '#'
    """


def _option(command: click.Command, token: str) -> click.Option | None:
    name = token.split("=", 1)[0]
    for param in command.params:
        if isinstance(param, click.Option) and name in (*param.opts, *param.secondary_opts):
            return param
    return None


def _option_below(group: click.Group, token: str) -> click.Option | None:
    """The option ``token`` names in some command under ``group`` (the first found), or None."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        sub = group.get_command(ctx, name)
        if sub is None:
            continue
        option = _option(sub, token) or (_option_below(sub, token) if isinstance(sub, click.Group) else None)
        if option is not None:
            return option
    return None


def _takes_value(option: click.Option | None, token: str) -> bool:
    return option is not None and not option.is_flag and not option.count and "=" not in token


def hoist_options(args: list[str], root: click.Group = main) -> list[str]:
    """Move each option to the level of the command line that accepts it, so options work in either
    place: ``bmesos admin --broker URL acl show`` (``--broker`` is the leaf's) and ``bmesos principals
    list --admin-url URL`` (the group's) mean what they say. An option no level knows stays where it is
    (click then says it is unknown); nothing after ``--``, ``--help`` or, for a command that takes no
    options after its arguments (``bmesos run``), its first argument is touched."""
    levels: list[tuple[click.Command, list[str]]] = [(root, [])]
    names: list[str] = []  # names[k]: the token that chose levels[k + 1]
    pending: list[list[str]] = []  # options of a deeper level, waiting for the command that knows them
    i = 0
    while i < len(args):
        command, tokens = levels[-1]
        token = args[i]
        if token in ("--", "-h", "--help"):
            tokens.extend(args[i:])
            break
        if token.startswith("-") and token != "-":
            option, owner = _option(command, token), tokens
            upper = None if option is not None else next(
                ((o, up_tokens) for up, up_tokens in reversed(levels[:-1]) if (o := _option(up, token))), None)
            if upper is not None:
                option, owner = upper
            elif option is None and isinstance(command, click.Group):
                option = _option_below(command, token)
                owner = None if option is not None else tokens
            group = args[i:i + 2] if _takes_value(option, token) else [token]
            i += len(group)
            if owner is None:
                pending.append(group)
            else:
                owner.extend(group)
            continue
        if isinstance(command, click.Group):
            sub = command.get_command(click.Context(command), token)
            i += 1
            if sub is None:
                tokens.extend(args[i - 1:])
                break
            names.append(token)
            sub_tokens: list[str] = []
            levels.append((sub, sub_tokens))
            still = []
            for group in pending:
                if _option(sub, group[0]):
                    sub_tokens.extend(group)
                else:
                    still.append(group)
            pending = still
            continue
        if not command.context_settings.get("allow_interspersed_args", True):
            tokens.extend(args[i:])  # the rest is the command's own (`bmesos run ... -- CMD`)
            break
        tokens.append(token)
        i += 1
    out = list(levels[0][1])
    for name, (_, tokens) in zip(names, levels[1:], strict=True):
        out += [name, *tokens]
    for group in pending:  # nobody took them: left for click to refuse
        out.extend(group)
    return out


def run() -> None:
    """The ``bmesos`` entry point: usage errors are one line on stderr (exit 2), never a usage dump."""
    try:
        code = main.main(args=hoist_options(sys.argv[1:]), standalone_mode=False)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "bmesos"
        click.echo(f"Error: {printable(exc.format_message())} (see '{where} --help')", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"Error: {printable(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    run()
