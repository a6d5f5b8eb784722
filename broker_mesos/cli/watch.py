"""``bmesos watch``: print status updates (and cluster events) as they happen, one line each.

A monitor queue (exclusive, auto-deleted, server-named) is bound to exchange ``status`` with the
topic PATTERN over routing keys ``<framework>.<agent>.<state>``; nothing else is disturbed.
Every field that came off the wire is escaped (``printable``, ``json_line``) before it is printed.
"""

from __future__ import annotations

import datetime
import logging
import threading
from typing import Any

import click

from broker_mesos.bus import topology
from broker_mesos.bus.connection import Bus, Delivery
from broker_mesos.bus.tls import TlsOptions
from broker_mesos.cli.common import (
    broker_options,
    json_line,
    log_level_option,
    one_line_errors,
    printable,
    setup_logging,
)
from broker_mesos.cli.run import QuietUntilConnected, raise_interrupt_on_sigterm
from broker_mesos.core import codec, protocol
from broker_mesos.core.codec import Envelope
from broker_mesos.core.errors import ProtocolError
from broker_mesos.core.protocol import TaskState, TaskStatus
from broker_mesos.framework.driver import RecentIds

log = logging.getLogger(__name__)

STATE_STYLE = {TaskState.FINISHED: "green", TaskState.RUNNING: "cyan", TaskState.STARTING: "blue",
               TaskState.STAGING: "blue", TaskState.KILLED: "yellow"}


def clock(ts: float) -> str:
    """Local wall-clock time with milliseconds: ``2024-05-01 12:00:00.123``."""
    return datetime.datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="milliseconds")


def status_line(status: TaskStatus, ts: float) -> str:
    """``<time> <framework> <agent> <task> <STATE>[ exit N][ message]`` (greppable, one line; every field
    escaped, a newline in the message shows as ``\\n``)."""
    parts = [clock(status.timestamp or ts), printable(status.framework_id), printable(status.agent_id),
             printable(status.task_id), status.state.value]
    if status.exit_code is not None:
        parts.append(f"exit {status.exit_code}")
    if status.message and status.message != f"exited with {status.exit_code}":  # no news beyond the code
        parts.append(printable(status.message))
    return " ".join(parts)


def status_json(status: TaskStatus, ts: float) -> str:
    record: dict[str, Any] = {"kind": "status", "time": status.timestamp or ts, **codec.to_wire(status)}
    return json_line(record, sort_keys=True)


def _plain(value: Any) -> Any:
    """An event's free-form detail made JSON-safe (msgpack may carry bytes, also as nested map keys)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def event_line(event: protocol.ClusterEvent, ts: float) -> str:
    detail = " ".join(f"{printable(k)}={printable(v) if isinstance(v, str) else json_line(_plain(v))}"
                      for k, v in sorted(event.detail.items()))
    return f"{clock(ts)} event {printable(event.kind)}" + (f" {detail}" if detail else "")


def event_json(event: protocol.ClusterEvent, ts: float) -> str:
    return json_line({"kind": "event", "time": ts, "event": event.kind, "detail": _plain(event.detail)},
                     sort_keys=True)


class Watcher:
    """Consumes the monitor queue(s) and echoes every update once (duplicates dropped by uuid)."""

    def __init__(self, bus: Bus, pattern: str, events: bool, as_json: bool) -> None:
        self.bus = bus
        self.pattern = pattern
        self.events = events
        self.as_json = as_json
        self._seen = RecentIds()
        self._announced = False

    def setup(self) -> None:
        self.bus.consume(topology.monitor_queue(self.pattern), self._on_delivery)
        if self.events:
            self.bus.consume(topology.monitor_queue("#", topology.EVENTS), self._on_delivery)
        self.bus.on_ready(self._announce)

    def _announce(self) -> None:
        if not self._announced:
            self._announced = True
            what = f"status '{printable(self.pattern)}'" + (" and events" if self.events else "")
            click.echo(f"watching {what} (Ctrl-C to stop)", err=True)

    def _on_delivery(self, delivery: Delivery) -> None:
        try:
            env = codec.decode(delivery.body)
        except ProtocolError as exc:
            log.warning("queue=%s dead-lettering a bad message: %s", delivery.queue, exc.reason)
            self.bus.dead_letter(delivery, exc.reason)
            return
        self._show(env)
        self.bus.ack(delivery)

    def _show(self, env: Envelope) -> None:
        body = env.body
        if isinstance(body, protocol.Status):
            for status in body.updates:
                if self._seen.seen(status.uuid):
                    continue
                if self.as_json:
                    click.echo(status_json(status, env.ts))
                else:
                    click.echo(click.style(status_line(status, env.ts), fg=_style(status.state)))
        elif isinstance(body, protocol.ClusterEvent):
            click.echo(event_json(body, env.ts) if self.as_json else click.style(event_line(body, env.ts), dim=True))
        else:
            log.info("ignoring %s id=%s", env.type, env.id)


def _style(state: TaskState) -> str | None:
    if state in STATE_STYLE:
        return STATE_STYLE[state]
    return "red" if state.terminal else None


@click.command(context_settings={"default_map": {"log_level": "warning"}})
@click.argument("pattern", default="#")
@click.option("--events", is_flag=True, help="Also print cluster events (agents joining, frameworks, ...).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of text.")
@broker_options
@log_level_option
@one_line_errors
def watch(pattern: str, events: bool, as_json: bool, broker: str, connect_timeout: float, tls: TlsOptions | None,
          log_level: str) -> None:
    """Print task status updates as they happen, one line each, until Ctrl-C.

    PATTERN is an AMQP topic pattern over <framework>.<agent>.<state>:

    \b
      bmesos watch                      # everything
      bmesos watch 'fw1.#'              # one framework
      bmesos watch '*.*.TASK_FAILED'    # failures anywhere
    """
    setup_logging(log_level)
    quiet = QuietUntilConnected().install()
    bus = Bus(broker, "watch", connect_timeout=connect_timeout, tls=tls)
    bus.on_ready(lambda: setattr(quiet, "connected", True))
    Watcher(bus, pattern, events, as_json).setup()
    failure: list[BaseException] = []

    def loop() -> None:
        try:
            bus.run()
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    thread = threading.Thread(target=loop, name="watch-bus", daemon=True)
    raise_interrupt_on_sigterm()
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.2)
    except KeyboardInterrupt:
        bus.stop_threadsafe()
        thread.join(5.0)
        return
    if failure:
        raise failure[0]
