"""``bmesos watch``: print status updates (and cluster events) as they happen, one line each, and with
``--since`` / ``--from-offset`` what happened before, then what happens next.

Watch consumes the ``history`` stream (docs/protocol.md §10), which holds every status update and event
of the cluster: from ``next`` by default, from a time or an offset when asked. One consumer reads both
history and live messages, so there is no gap and no duplicate where the one turns into the other, and
after a reconnect it resumes at the offset after the last one it printed (an exclusive queue would lose
what happened while it was gone). The topic PATTERN over ``<framework>.<agent>.<state>`` is applied here,
to each update, as the broker applies it to a binding. Only the master and an update's own agent are
believed (when connected as a principal); every field that came off the wire is escaped (``printable``,
``json_line``) before it is printed.
"""

from __future__ import annotations

import datetime
import logging
import re
import threading
import time
from typing import Any

import click

from broker_mesos.bus import topology
from broker_mesos.bus.connection import Bus, Delivery
from broker_mesos.bus.tls import TlsOptions
from broker_mesos.cli.common import (
    broker_options,
    json_line,
    log_level_option,
    master_principal_option,
    one_line_errors,
    printable,
    setup_logging,
)
from broker_mesos.cli.run import QuietUntilConnected, raise_interrupt_on_sigterm
from broker_mesos.core import codec, protocol, security
from broker_mesos.core.codec import Envelope
from broker_mesos.core.errors import ProtocolError
from broker_mesos.core.protocol import TaskState, TaskStatus
from broker_mesos.core.ratelimit import LogLimiter
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


def status_json(status: TaskStatus, ts: float, offset: int | None = None) -> str:
    """One JSON object; ``offset`` (its place in the history stream) lets a reader resume after it."""
    record: dict[str, Any] = {"kind": "status", "time": status.timestamp or ts, **codec.to_wire(status)}
    if offset is not None:
        record["offset"] = offset
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


def event_json(event: protocol.ClusterEvent, ts: float, offset: int | None = None) -> str:
    record: dict[str, Any] = {"kind": "event", "time": ts, "event": event.kind, "detail": _plain(event.detail)}
    if offset is not None:
        record["offset"] = offset
    return json_line(record, sort_keys=True)


# -- where to start reading the history stream ------------------------------------------------------

StreamStart = int | str | datetime.datetime  # an offset, first / last / next, or a time (x-stream-offset)
NAMED_OFFSETS = ("first", "last", "next")
DURATION = re.compile(r"(\d{1,9})([smhd])")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: datetime.datetime) -> datetime.datetime:
    """``30s``, ``10m``, ``2h``, ``7d`` before ``now``, or an ISO 8601 time (local time unless it names
    its zone), as an aware UTC time; ``ValueError`` otherwise."""
    text = text.strip()
    match = DURATION.fullmatch(text)
    if match:
        return now.astimezone(datetime.UTC) - datetime.timedelta(
            seconds=int(match.group(1)) * UNIT_SECONDS[match.group(2)])
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration (30s, 10m, 2h, 7d) nor an ISO 8601 time "
                         "(2024-05-01T12:00:00, with +02:00 or Z for another zone than local)") from None
    return when.astimezone(datetime.UTC)  # a naive time is local time


def parse_offset(text: str) -> int | str:
    """An offset of the history stream (an integer >= 0) or ``first`` / ``last`` / ``next``."""
    text = text.strip()
    if text in NAMED_OFFSETS:
        return text
    if text.isdigit() and len(text) <= 19:  # an AMQP long
        return int(text)
    raise ValueError(f"{text!r} is not an offset (an integer >= 0, or first, last, next)")


class SinceType(click.ParamType):
    name = "WHEN"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime.datetime:
        if isinstance(value, datetime.datetime):
            return value
        try:
            return parse_since(str(value), datetime.datetime.now(datetime.UTC))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class OffsetType(click.ParamType):
    name = "N|first|last|next"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int):
            return value
        try:
            return parse_offset(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def describe_start(start: StreamStart) -> str:
    if isinstance(start, datetime.datetime):
        return f"since {start.astimezone().isoformat(sep=' ', timespec='seconds')}"
    return f"from offset {start}" if isinstance(start, int) else f"from {start}"


# -- the watcher ------------------------------------------------------------------------------------


class Watcher:
    """Reads the history stream from ``start`` and echoes every update once (duplicates, which
    at-least-once publishing makes, are dropped by uuid; events by envelope id)."""

    def __init__(self, bus: Bus, pattern: str, events: bool, as_json: bool, start: StreamStart = "next",
                 master_principal: str = security.DEFAULT_MASTER_PRINCIPAL) -> None:
        self.bus = bus
        self.pattern = pattern
        self.events = events
        self.as_json = as_json
        self.start = start
        self.master_principal = master_principal
        # connected as a principal: believe the master, and an agent about its own tasks only
        self.secure = security.parse(bus.user, master_principal) is not None
        self.next_offset: int | None = None  # after the last message handled: where a reconnect resumes
        self._seen = RecentIds()
        self._seen_events = RecentIds()
        self._rejections = LogLimiter()
        self._announced = False

    def setup(self) -> None:
        self.bus.consume(topology.HISTORY_STREAM, self._on_delivery, arguments=self._consumer_arguments)
        self.bus.on_ready(self._announce)

    def _consumer_arguments(self) -> dict[str, Any]:
        start = self.start if self.next_offset is None else self.next_offset
        return {"x-stream-offset": start}

    def _announce(self) -> None:
        if not self._announced:
            self._announced = True
            what = f"status '{printable(self.pattern)}'" + (" and events" if self.events else "")
            start = "" if self.start == "next" else f" {describe_start(self.start)}"
            click.echo(f"watching {what}{start} (Ctrl-C to stop)", err=True)

    def _on_delivery(self, delivery: Delivery) -> None:
        """Everything is acked (a stream keeps it anyway; acks only give the broker credit to send
        more); nothing is dead-lettered: every replay would dead-letter the same message again."""
        offset = (delivery.properties.headers or {}).get("x-stream-offset")
        if not isinstance(offset, int) or isinstance(offset, bool):
            offset = None
        elif self.next_offset is not None and offset < self.next_offset:
            self.bus.ack(delivery)  # handled before a reconnect
            return
        else:
            self.next_offset = offset + 1
        try:
            env = codec.decode(delivery.body)
            self._check_sender(env, delivery.properties.user_id)
        except ProtocolError as exc:
            self._skip(offset, exc.reason)
        else:
            self._show(env, offset)
        self.bus.ack(delivery)

    def _check_sender(self, env: Envelope, user: str | None) -> None:
        """What the framework SDK believes (docs/protocol.md §16.4): events from the master, status
        updates from the master or from the agent every update is about."""
        if not self.secure or user == self.master_principal:
            return
        body = env.body
        if isinstance(body, protocol.Status) and body.updates and all(
                user == security.Principal(security.Kind.AGENT, u.agent_id).user for u in body.updates):
            return
        raise ProtocolError(f"{env.type} from user {str(user)[:128]!r}, who may not send it")

    def _skip(self, offset: int | None, reason: str) -> None:
        allowed, held = self._rejections.allow("skipped", time.monotonic())
        if allowed:
            more = f" ({held} more skipped meanwhile)" if held else ""
            log.warning("skipped the message at offset %s of %s: %s%s", offset, topology.HISTORY_QUEUE,
                        reason[:300], more)

    def _show(self, env: Envelope, offset: int | None) -> None:
        body = env.body
        if isinstance(body, protocol.Status):
            for status in body.updates:
                key = topology.status_key(status.framework_id, status.agent_id, status.state)
                if not topology.topic_matches(self.pattern, key) or self._seen.seen(status.uuid):
                    continue
                if self.as_json:
                    click.echo(status_json(status, env.ts, offset))
                else:
                    click.echo(click.style(status_line(status, env.ts), fg=_style(status.state)))
        elif isinstance(body, protocol.ClusterEvent):
            if not self.events or self._seen_events.seen(env.id):
                return
            click.echo(event_json(body, env.ts, offset) if self.as_json
                       else click.style(event_line(body, env.ts), dim=True))
        else:
            log.info("ignoring %s id=%s", env.type, env.id)


def _style(state: TaskState) -> str | None:
    if state in STATE_STYLE:
        return STATE_STYLE[state]
    return "red" if state.terminal else None


@click.command(context_settings={"default_map": {"log_level": "warning"}})
@click.argument("pattern", default="#")
@click.option("--events", is_flag=True, help="Also print cluster events (agents joining, frameworks, ...).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per line instead of text (with its \"offset\" in the history).")
@click.option("--since", type=SinceType(), metavar="WHEN",
              help="First replay the history since WHEN: a duration before now (30s, 10m, 2h, 7d) or an "
                   "ISO 8601 time (local unless it names a zone).")
@click.option("--from-offset", "--from", "from_offset", type=OffsetType(), metavar="OFFSET",
              help="First replay the history from OFFSET: a number (as --json prints it), first (the "
                   "oldest message kept) or last (the newest).")
@broker_options
@master_principal_option
@log_level_option
@one_line_errors
def watch(pattern: str, events: bool, as_json: bool, since: datetime.datetime | None, from_offset: int | str | None,
          broker: str, connect_timeout: float, tls: TlsOptions | None, master_principal: str,
          log_level: str) -> None:
    """Print task status updates as they happen, one line each, until Ctrl-C; with --since or
    --from-offset, first those of the past (kept 7 days, at most 1 GiB), then on without a gap.

    PATTERN is an AMQP topic pattern over <framework>.<agent>.<state>:

    \b
      bmesos watch                      # everything from now on
      bmesos watch 'fw1.#'              # one framework
      bmesos watch '*.*.TASK_FAILED'    # failures anywhere
      bmesos watch --since 10m --events # the last ten minutes, then on
    """
    if since is not None and from_offset is not None:
        raise click.UsageError("give --since or --from-offset, not both")
    start: StreamStart = since if since is not None else from_offset if from_offset is not None else "next"
    setup_logging(log_level)
    quiet = QuietUntilConnected().install()
    bus = Bus(broker, "watch", connect_timeout=connect_timeout, tls=tls)
    bus.on_ready(lambda: setattr(quiet, "connected", True))
    Watcher(bus, pattern, events, as_json, start, master_principal).setup()
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
