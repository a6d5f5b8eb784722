"""``bmesos``: the command line of broker-mesos. One module per command; this file only wires them."""

from __future__ import annotations

import importlib
import sys

import click

from broker_mesos.cli.common import printable

COMMANDS = {
    "admin": "broker_mesos.cli.admin:admin",
    "master": "broker_mesos.cli.master:master",
    "principals": "broker_mesos.cli.principals:principals",
    "agent": "broker_mesos.cli.agent:agent",
    "run": "broker_mesos.cli.run:run",
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


def run() -> None:
    """The ``bmesos`` entry point: usage errors are one line on stderr (exit 2), never a usage dump."""
    try:
        code = main.main(standalone_mode=False)
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
