"""READ_LOG at the master: find the task's agent, authorise the sender, relay the request as SEND_LOG.

Agents obey only the master, so a log read goes through it (docs/protocol.md §19): the master knows
where every task (live, or among the ended ones it remembers) ran, checks that the sender may read it
(operators and monitors any task, a framework principal its own frameworks' tasks:
``security.check_read_log``), and sends SEND_LOG on ``tasks`` to that agent, which answers the
requester directly on exchange ``logs`` with routing key ``<sender user>.<reply_token>``: the sender's
own user name, as the broker proved it, so an answer can only reach a queue its asker bound (the
broker lets each principal bind only keys that start with its own name). What goes wrong here is an
ERROR to ``reply_to``. Nothing in the master's state changes: the delivery is acked at once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from broker_mesos.bus import topology
from broker_mesos.bus.connection import Delivery, decode_delivery
from broker_mesos.core import codec, protocol, security
from broker_mesos.core.errors import ProtocolError
from broker_mesos.core.master_model import TaskRecord

if TYPE_CHECKING:
    from broker_mesos.master.process import MasterProcess

log = logging.getLogger(__name__)

READ_LOG = "READ_LOG"
SEND_LOG_TTL_MS = 30_000  # a SEND_LOG its agent has not taken by then is stale: its asker has given up
SILENT_HEARTBEATS = 3  # an agent unheard of for this many heartbeat intervals (+1 s) is reported down at once


class LogRequestError(Exception):
    """Why a READ_LOG cannot be relayed, for the asker."""


class LogRelay:
    """The master's side of READ_LOG (its one hook: ``handles``, called first for every call)."""

    def __init__(self, master: MasterProcess) -> None:
        self.master = master

    def handles(self, delivery: Delivery) -> bool:
        """Take ``delivery`` if it is a READ_LOG (settled here, whatever happens); False otherwise."""
        if delivery.routing_key != READ_LOG:
            return False
        master = self.master
        try:
            envelope = decode_delivery(delivery)
            if not isinstance(envelope.body, protocol.ReadLog):
                raise ProtocolError(f"{envelope.type} sent with routing key {READ_LOG!r}")
        except ProtocolError as exc:
            master._reject(delivery, exc.reason)
            return True
        request: protocol.ReadLog = envelope.body
        who = master._sender(delivery)
        user = delivery.properties.user_id or ""
        try:
            if not protocol.LOG_REPLY_KEY.fullmatch(f"{user}.{request.reply_token}"):
                raise LogRequestError("READ_LOG needs the AMQP user_id property (a user name of A-Z a-z 0-9 _ . -)")
            task = self._find(request, who)
            if not master.insecure:
                denied = security.check_read_log(who, task.framework_id)
                if denied is not None:
                    master._deny(delivery, envelope, denied)
                    return True
            self._check_agent(task)
        except LogRequestError as exc:
            self._error(delivery, envelope, str(exc))
            master.bus.ack(delivery)
            return True
        send = protocol.SendLog(task.framework_id, task.task_id, f"{user}.{request.reply_token}", request.file,
                                request.offset, request.tail_lines, request.max_bytes)
        master.bus.publish(topology.TASKS, task.agent_id, codec.encode(send, master.clock()), persistent=False,
                           correlation_id=delivery.properties.correlation_id, expiration_ms=SEND_LOG_TTL_MS)
        log.debug("READ_LOG of task=%s framework=%s by %s relayed to agent %s", task.task_id, task.framework_id,
                  user[:128], task.agent_id)
        master.bus.ack(delivery)
        return True

    def _find(self, request: protocol.ReadLog, who: security.Principal | None) -> TaskRecord:
        """The task ``request`` names: by exact id, else by unique id prefix; live tasks first, then the
        ended ones the master remembers. Without a framework id, only among frameworks the sender may
        read (so another owner's task ids are never revealed)."""
        state = self.master.state
        fw, wanted = request.framework_id, request.task_id
        if fw:
            found = state.tasks.get((fw, wanted)) or state.completed.get((fw, wanted))
            if found is not None:
                return found

        def visible(framework_id: str) -> bool:
            if fw:
                return framework_id == fw
            return self.master.insecure or security.check_read_log(who, framework_id) is None

        exact: dict[tuple[str, str], TaskRecord] = {}
        prefixed: dict[tuple[str, str], TaskRecord] = {}
        for records in (state.completed, state.tasks):  # live ones last: they win over an ended namesake
            for key, record in records.items():
                if key[1].startswith(wanted) and visible(key[0]):
                    (exact if key[1] == wanted else prefixed)[key] = record
        matches = exact or prefixed
        if not matches:
            where = f" of framework {fw}" if fw else ""
            raise LogRequestError(f"no task {wanted}{where} (the master knows live tasks and the last "
                                  f"ended ones it remembers)")
        if len(matches) > 1:
            shown = ", ".join(f"{f}/{t}" for f, t in sorted(matches)[:5])
            more = f" and {len(matches) - 5} more" if len(matches) > 5 else ""
            raise LogRequestError(f"{wanted} matches {len(matches)} tasks ({shown}{more}): give the full id, "
                                  f"or --framework")
        return next(iter(matches.values()))

    def _check_agent(self, task: TaskRecord) -> None:
        if not task.agent_id:
            raise LogRequestError(f"task {task.task_id} never reached an agent ({task.state.value}): it has no log")
        agent = self.master.state.agents.get(task.agent_id)
        if agent is None:
            raise LogRequestError(f"agent {task.agent_id}, where task {task.task_id} ran, is gone (removed from "
                                  f"the cluster): its sandbox cannot be read")
        silent = self.master.clock() - agent.last_seen
        if silent > SILENT_HEARTBEATS * agent.heartbeat_interval + 1.0:
            raise LogRequestError(f"agent {task.agent_id}, where task {task.task_id} ran, has not been heard from "
                                  f"for {silent:.0f}s: it is down or cut off")

    def _error(self, delivery: Delivery, envelope: codec.Envelope, message: str) -> None:
        """ERROR to the sender's own reply queue (the master's rule: ``process.reply_allowed``)."""
        from broker_mesos.master.process import reply_allowed  # process imports this module

        master = self.master
        reply_to = delivery.properties.reply_to
        if reply_to and reply_allowed(reply_to, None, master._sender(delivery), secure=not master.insecure):
            error = protocol.Error(message, envelope.type, envelope.id)
            master.bus.publish("", reply_to, codec.encode(error, master.clock()), persistent=False,
                               correlation_id=delivery.properties.correlation_id)
