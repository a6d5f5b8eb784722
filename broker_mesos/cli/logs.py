"""``bmesos logs``: print a task's stdout (or stderr), from wherever it ran, without a shared disk.

The command sends READ_LOG to the master (exchange ``master``), which relays it to the task's agent;
the agent answers with LOG_DATA chunks on exchange ``logs``, routing key ``<our user>.<token>``, bound
to our private queue (docs/protocol.md §19). One READ_LOG gets at most 4 MiB back; the command asks
again from the next offset until it has the whole file, and with ``-f`` keeps asking (every
``FOLLOW_INTERVAL`` seconds when nothing new came) until the agent says the task has ended and the
file is complete. Nothing is kept on the agent between requests.

The bytes are the task's own output and go to stdout as they are, unless stdout is a terminal: then
control characters are escaped (``printable``) so a task cannot drive the operator's terminal
(``--raw`` prints them anyway). Exit status: 0 the log was printed (with ``-f``: the task ended);
1 the master or the agent refused or did not answer within ``--timeout``; 2 usage or broker errors;
130 interrupted.
"""

from __future__ import annotations

import codecs
import sys
import time
import uuid
from typing import BinaryIO

import click

from broker_mesos.bus import topology
from broker_mesos.bus.connection import Bus, Delivery, decode_delivery
from broker_mesos.bus.tls import TlsOptions
from broker_mesos.cli.common import (
    broker_options,
    log_level_option,
    master_principal_option,
    one_line_errors,
    printable,
    setup_logging,
)
from broker_mesos.cli.run import QuietUntilConnected
from broker_mesos.core import codec, protocol, security
from broker_mesos.core.errors import ProtocolError

ANSWER_TIMEOUT = 10.0  # seconds without any answer to a READ_LOG before giving up
FOLLOW_INTERVAL = 0.5  # seconds between READ_LOGs of a follower that is up to date


class LogPrinter:
    """Writes chunks to ``out``: raw bytes, or (for a terminal) decoded UTF-8 with controls escaped."""

    def __init__(self, out: BinaryIO, escape: bool) -> None:
        self.out = out
        self.escape = escape
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(self, data: bytes, final: bool = False) -> None:
        if self.escape:
            text = printable(self._decoder.decode(data, final), keep="\n\t")
            self.out.write(text.encode("utf-8", errors="replace"))
        else:
            self.out.write(data)
        self.out.flush()


class LogReader:
    """Asks for the log window by window on ``bus``; ``result`` is the exit status once the bus stops."""

    def __init__(self, bus: Bus, printer: LogPrinter, task_id: str, framework_id: str, file: protocol.LogFile,
                 tail: int | None, follow: bool, timeout: float, master_principal: str) -> None:
        self.bus = bus
        self.printer = printer
        self.task_id = task_id
        self.framework_id = framework_id
        self.file = file
        self.tail = tail
        self.follow = follow
        self.timeout = timeout
        self.master_principal = master_principal
        self.secure = security.parse(bus.user, master_principal) is not None
        self.offset = 0
        self.token = uuid.uuid4().hex
        self.queue = topology.Queue("", ((topology.LOGS, f"{bus.user}.{self.token}"),), durable=False,
                                    exclusive=True, auto_delete=True)
        self.request_id: str | None = None
        self._timer: object | None = None
        self._poll: object | None = None
        self.result: int | None = None
        self.error = ""
        self._answered = False
        self._deadline = 0.0  # when the current request's answer is late

    def setup(self) -> None:
        self.bus.consume(self.queue, self._on_message)
        self.bus.on_ready(self._ask)  # also after a reconnect: what was in flight is lost with our queue

    def _ask(self, keep_clock: bool = False) -> None:
        if self.result is not None:
            return
        deadline = self._deadline if keep_clock else time.monotonic() + self.timeout
        self._cancel()
        self._deadline = deadline
        self.request_id = uuid.uuid4().hex
        call = protocol.ReadLog(self.task_id, self.token, self.framework_id, self.file, self.offset,
                                None if self._answered else self.tail)  # --tail: only until the first answer
        self.bus.publish(topology.MASTER, topology.call_type(protocol.ReadLog),
                         codec.encode(call, time.time(), self.request_id), persistent=False,
                         reply_to=self.bus.queue_name(self.queue), correlation_id=self.request_id,
                         expiration_ms=int(self.timeout * 1000))  # unanswered, it must not wait for a master
        self._timer = self.bus.call_later(deadline - time.monotonic(), self._timed_out)

    def _cancel(self) -> None:
        for handle in (self._timer, self._poll):
            if handle is not None:
                self.bus.cancel(handle)
        self._timer = self._poll = None

    def _timed_out(self) -> None:
        self._timer = None
        self._finish(1, f"no answer within {self.timeout:g}s about task {self.task_id}: its agent (or the master) "
                        "is down or unreachable")

    def _finish(self, code: int, error: str = "") -> None:
        if self.result is None:
            self.result, self.error = code, error
            self._cancel()
            self.bus.stop()

    def _believed(self, delivery: Delivery) -> bool:
        """As a principal: only the master's ERRORs and agents' answers count (the broker lets nobody
        else publish on ``logs``, and nobody but the master on our queue: this is the second fence)."""
        if not self.secure:
            return True
        who = security.parse(delivery.properties.user_id, self.master_principal)
        return who is not None and who.kind in (security.Kind.MASTER, security.Kind.AGENT)

    def _on_message(self, delivery: Delivery) -> None:
        try:
            envelope = decode_delivery(delivery)
        except ProtocolError as exc:
            self.bus.dead_letter(delivery, exc.reason)
            return
        self.bus.ack(delivery)
        if delivery.properties.correlation_id != self.request_id or self.result is not None \
                or not self._believed(delivery):
            return  # an answer to an earlier request, or not from whom it may come
        body = envelope.body
        if isinstance(body, protocol.Error) and body.message.startswith(protocol.LOG_BUSY):
            self._cancel()  # the agent serves others now: ask again (the --timeout clock keeps running)
            self._poll = self.bus.call_later(FOLLOW_INTERVAL, lambda: self._ask(keep_clock=True))
        elif isinstance(body, protocol.Error):
            self._finish(1, printable(body.message))
        elif isinstance(body, protocol.LogData):
            self._chunk(body)

    def _chunk(self, chunk: protocol.LogData) -> None:
        if self._timer is not None:  # an answer is coming: restart the clock for the rest of it
            self.bus.cancel(self._timer)
            self._deadline = time.monotonic() + self.timeout
            self._timer = self.bus.call_later(self.timeout, self._timed_out)
        self.framework_id, self.task_id = chunk.framework_id, chunk.task_id  # resolved by the master
        self._answered = True
        if chunk.data:
            self.printer.write(chunk.data)
        self.offset = chunk.offset + len(chunk.data)
        if not chunk.last:
            return
        self._cancel()
        if chunk.done:
            self.printer.write(b"", final=True)
            self._finish(0)
        elif self.offset < chunk.size:
            self._ask()  # the answer was one full window: more is there already
        elif self.follow:
            self._poll = self.bus.call_later(FOLLOW_INTERVAL, self._ask)
        else:
            self.printer.write(b"", final=True)
            self._finish(0)


@click.command(context_settings={"default_map": {"log_level": "warning"}})
@click.argument("task_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing what the task writes until it ends.")
@click.option("--stderr", "stderr", is_flag=True, help="The task's stderr instead of its stdout.")
@click.option("--tail", type=click.IntRange(0, protocol.MAX_TAIL_LINES), metavar="N",
              help=f"Only the last N lines (at most {protocol.MAX_TAIL_LINES:,}; found within the file's last 8 MiB).")
@click.option("--framework", "framework_id", default="", metavar="FW",
              help="The task's framework (needed only when several frameworks have a task of that id).")
@click.option("--raw", is_flag=True, help="Print control characters as they are, even to a terminal.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=ANSWER_TIMEOUT, show_default=True,
              help="Seconds to wait for an answer before giving up.")
@broker_options
@master_principal_option
@log_level_option
@one_line_errors
def logs(task_id: str, follow: bool, stderr: bool, tail: int | None, framework_id: str, raw: bool, timeout: float,
         broker: str, connect_timeout: float, tls: TlsOptions | None, master_principal: str, log_level: str) -> None:
    """Print TASK_ID's stdout (or --stderr), fetched from its agent through the broker.

    TASK_ID may be a unique prefix. Works while the task runs and after it ended, until the agent's
    sandbox GC removes its sandbox. Exit status: 0 printed (with -f: the task ended), 1 refused or no
    answer within --timeout (the agent is down), 2 usage or broker error.

    \b
      bmesos logs job-3
      bmesos logs -f job-3                # follow until it ends
      bmesos logs --tail 20 --stderr job-3
    """
    for value, what in ((task_id, "TASK_ID"), (framework_id, "--framework")):
        if value and not codec.ID_PATTERN.fullmatch(value):
            raise click.BadParameter(f"{printable(value)!r} is not an id (1-128 of A-Z a-z 0-9 _ -)",
                                     param_hint=what)
    setup_logging(log_level)
    quiet = QuietUntilConnected().install()
    bus = Bus(broker, "logs", connect_timeout=connect_timeout, tls=tls)
    bus.on_ready(lambda: setattr(quiet, "connected", True))
    escape = sys.stdout.isatty() and not raw
    reader = LogReader(bus, LogPrinter(sys.stdout.buffer, escape), task_id, framework_id,
                       protocol.LogFile.STDERR if stderr else protocol.LogFile.STDOUT, tail, follow, timeout,
                       master_principal)
    reader.setup()
    try:
        bus.run()
    except KeyboardInterrupt:
        sys.exit(130)
    if reader.result != 0:
        click.echo(f"Error: {reader.error or 'interrupted'}", err=True)
        sys.exit(1)
