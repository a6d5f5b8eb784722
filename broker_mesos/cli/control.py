"""The request/reply client of the built-in frameworks' commands: one CONTROL, one answer, a deadline.

The call goes to exchange ``builtin`` with key ``<framework_id>.calls``; the answer comes back on a
private server-named queue bound there under its own name. The call carries a per-message TTL equal
to the deadline, so a command nobody answered in time (no scheduler running) expires in the queue
instead of being carried out later by a scheduler that starts after the command gave up. Connected as
a principal, only an answer from a principal owning the framework id counts.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from broker_mesos.bus import topology
from broker_mesos.bus.connection import Delivery, url_user
from broker_mesos.bus.tls import TlsOptions
from broker_mesos.cli.common import printable
from broker_mesos.cli.query import NoAnswer, Refused, ask
from broker_mesos.core import codec, protocol, security
from broker_mesos.core.errors import ProtocolError

DEFAULT_TIMEOUT = 10.0


class ControlClient:
    """Commands to the active scheduler of built-in framework ``framework_id``."""

    def __init__(self, broker: str, framework_id: str, *, connect_timeout: float = 15.0,
                 timeout: float = DEFAULT_TIMEOUT, tls: TlsOptions | None = None, what: str = "scheduler") -> None:
        self.broker, self.framework_id, self.connect_timeout, self.timeout, self.tls = (
            broker, framework_id, connect_timeout, timeout, tls)
        self.what = what  # for messages: "service scheduler"
        self.secure = security.parse(url_user(broker)) is not None

    def _from_scheduler(self, delivery: Delivery) -> bool:
        if not self.secure:
            return True
        who = security.parse(delivery.properties.user_id)
        return who is not None and security.owns_framework(who, self.framework_id)

    def call(self, command: str, **args: Any) -> dict[str, Any]:
        """Run ``command``; its result (a list answer under ``items``), or ``NoAnswer`` / ``Refused``
        (the scheduler's reason)."""
        body = protocol.Control(command, args)
        call_id = uuid.uuid4().hex
        try:  # before connecting: too large, or not msgpack (an integer beyond 64 bits, ...)
            raw = codec.encode(body, time.time(), call_id)
        except (OverflowError, TypeError, ValueError) as exc:
            raise ProtocolError(f"the command cannot be sent: {exc}") from None
        replies = topology.Queue("", ((topology.BUILTIN, topology.OWN_NAME),), durable=False, exclusive=True,
                                 auto_delete=True)
        answer = ask(self.broker, f"{self.what} client", self.connect_timeout, self.tls, self.timeout,
                     topology.BUILTIN, topology.builtin_calls_key(self.framework_id), raw, call_id, replies,
                     lambda delivery, envelope: self._from_scheduler(delivery)
                     and isinstance(envelope.body, protocol.ControlResult))
        if answer is None:
            raise NoAnswer(f"no answer from the {self.what} {self.framework_id} within {self.timeout:g}s "
                           f"(is one running?)")
        if answer.error:
            raise Refused(printable(answer.error))
        return answer.result


__all__ = ["DEFAULT_TIMEOUT", "ControlClient", "NoAnswer", "Refused"]
