"""``bmesos ui``: a live web dashboard of the cluster, its own process and a monitor like any other.

It reads the cluster once through state queries, then follows ``status`` and ``events`` and pushes
each change to the browsers with server-sent events (broker_mesos/ui/). It listens on 127.0.0.1 by
default: whoever reaches the port sees what its broker user sees (an operator's or monitor's view of
every framework, task and log), with no login of its own. Exit status: 0 stopped (Ctrl-C, SIGTERM);
2 usage, the port is taken, or the broker could not be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import click

from broker_mesos.bus.tls import TlsOptions
from broker_mesos.cli.common import (
    broker_options,
    log_level_option,
    master_principal_option,
    one_line_errors,
    printable,
    setup_logging,
)
from broker_mesos.core.errors import BrokerMesosError


class Unserved(BrokerMesosError):
    """The dashboard could not start or lost its broker connection for good."""


async def _main(host: str, port: int, broker: str, connect_timeout: float, tls: TlsOptions | None,
                master_principal: str) -> None:
    from broker_mesos.ui.feed import Feed
    from broker_mesos.ui.server import Hub, make_app, serve
    from broker_mesos.ui.view import ClusterView

    loop = asyncio.get_running_loop()
    view = ClusterView()
    hub = Hub(view)
    feed = Feed(broker, connect_timeout, tls, master_principal, loop, hub.sink)
    hub.feed = feed
    app = make_app(view, hub, feed, host)
    server = asyncio.ensure_future(serve(app, host, port, lambda url: click.echo(f"dashboard at {url}",
                                                                               err=False)))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.cancel)
    feed.start()
    try:
        while not server.done():
            await asyncio.wait({server}, timeout=0.5)
            if not feed.thread.is_alive():
                server.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await server
                raise Unserved(f"the broker connection ended: {feed.error}")
        with contextlib.suppress(asyncio.CancelledError):
            server.result()
    except OSError as exc:
        raise Unserved(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    finally:
        feed.stop()


@click.command(context_settings={"default_map": {"log_level": "warning"}})
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="TCP port to listen on (0: any free one, printed at start).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. The page shows every framework's tasks and logs to whoever "
                   "reaches it, with no login: keep it on loopback (use an SSH tunnel) unless you mean it.")
@broker_options
@master_principal_option
@log_level_option
@one_line_errors
def ui(port: int, host: str, broker: str, connect_timeout: float, tls: TlsOptions | None, master_principal: str,
       log_level: str) -> None:
    """Serve a live web dashboard of the cluster: overview, agents, frameworks, tasks, logs.

    \b
      bmesos ui                        # then open http://127.0.0.1:8080/
      bmesos ui --port 9000 --broker-file ~/.bmesos-monitor
    """
    setup_logging(log_level)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: listening on {printable(host)}: anyone who reaches it sees the whole cluster "
                   "and its tasks' logs, with no login", err=True)
    try:
        asyncio.run(_main(host, port, broker, connect_timeout, tls, master_principal))
    except KeyboardInterrupt:
        sys.exit(130)
