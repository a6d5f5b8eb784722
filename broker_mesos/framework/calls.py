"""The calls a scheduler makes, as protocol bodies: shared by the real driver and the simulator's.

Subclasses say how a call travels (``_call``: over RabbitMQ, or into the simulated master) and may
watch which offers were answered (``_offers_answered``); the bodies are built here once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from broker_mesos.core import codec, protocol
from broker_mesos.core.protocol import Offer, TaskInfo


class SchedulerCalls:
    """Mesos' scheduler calls; each returns the call id the master echoes in an ERROR."""

    framework_id: str

    def _call(self, body: Any) -> str:
        raise NotImplementedError

    def _offers_answered(self, offer_ids: list[str]) -> None:
        """Hook: these offers were just accepted or declined."""

    def _launching(self, task_ids: list[str]) -> None:
        """Hook: these task ids are being launched."""

    def accept(self, offer_ids: Iterable[str], tasks: Iterable[TaskInfo], refuse_seconds: float = 0.0) -> str:
        offer_ids, tasks = list(offer_ids), list(tasks)
        self._offers_answered(offer_ids)
        self._launching([t.task_id for t in tasks])
        return self._call(protocol.Accept(self.framework_id, offer_ids, tasks, float(refuse_seconds)))

    def launch(self, offer: Offer, tasks: Iterable[TaskInfo], refuse_seconds: float = 0.0) -> str:
        """Accept one offer with ``tasks`` (whose agent_id must be the offer's agent)."""
        return self.accept([offer.offer_id], tasks, refuse_seconds)

    def decline(self, offer_ids: Iterable[str], refuse_seconds: float = protocol.DEFAULT_REFUSE_SECONDS) -> str:
        offer_ids = list(offer_ids)
        self._offers_answered(offer_ids)
        return self._call(protocol.Decline(self.framework_id, offer_ids, float(refuse_seconds)))

    def kill(self, task_id: str) -> str:
        return self._call(protocol.Kill(self.framework_id, [task_id]))

    def revive(self) -> str:
        return self._call(protocol.Revive(self.framework_id))

    def suppress(self) -> str:
        return self._call(protocol.Suppress(self.framework_id))

    def reconcile(self, task_ids: Iterable[str] = ()) -> str:
        """Ask for the latest state of ``task_ids`` (all tasks when empty); answers arrive as updates."""
        return self._call(protocol.Reconcile(self.framework_id, list(task_ids)))

    def send_framework_message(self, agent_id: str, executor_id: str, data: bytes) -> str:
        """Send ``data`` (at most ``codec.MAX_DATA_BYTES``) to one of this framework's executors (Mesos'
        MESSAGE): best effort, at most once; an executor the master does not know there is an ERROR."""
        if len(data) > codec.MAX_DATA_BYTES:
            raise ValueError(f"a framework message has at most {codec.MAX_DATA_BYTES} bytes, not {len(data)}")
        return self._call(protocol.Message(self.framework_id, agent_id, executor_id, bytes(data)))

    def teardown(self) -> str:
        """Kill every task of this framework and make the master forget it."""
        return self._call(protocol.Teardown(self.framework_id))
