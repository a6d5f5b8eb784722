"""The callbacks a framework implements: Mesos' ``Scheduler`` interface, with no-op defaults.

Every callback runs on the driver's I/O loop thread, one at a time, in arrival order. A callback may
call the driver directly (no marshalling needed on that thread); it should not block for long, since
no other message is handled meanwhile. An exception raised by a callback is logged with its traceback
and does not stop the driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker_mesos.core.protocol import Error, Offer, TaskStatus

if TYPE_CHECKING:
    from broker_mesos.framework.driver import SchedulerDriver


class Scheduler:
    """Override what you need; every method has a harmless default."""

    def registered(self, driver: SchedulerDriver, framework_id: str) -> None:
        """The master confirmed SUBSCRIBE. Called again after every reconnect (re-SUBSCRIBE)."""

    def reregistered(self, driver: SchedulerDriver, master_id: str) -> None:
        """A new master took over (failover) and confirmed the re-SUBSCRIBE; tasks kept running."""

    def resource_offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        """New offers: answer each with ``accept``/``launch`` or ``decline``, or let it expire."""

    def offer_rescinded(self, driver: SchedulerDriver, offer_id: str) -> None:
        """The offer is no longer valid (expired or its agent left); accepting it now is refused."""

    def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
        """A task changed state (each update is delivered once: duplicates are filtered by uuid)."""

    def framework_message(self, driver: SchedulerDriver, agent_id: str, executor_id: str, data: bytes) -> None:
        """One of the framework's executors sent ``data`` (Mesos' MESSAGE event): best effort, at most once."""

    def error(self, driver: SchedulerDriver, message: str) -> None:
        """The master refused a call (see ``call_refused`` for which one)."""

    def call_refused(self, driver: SchedulerDriver, error: Error) -> None:
        """The master refused the call whose id (as returned by the driver call) is ``error.call_id``.

        The default hands the message to ``error``; override this to react per call (e.g. put the
        tasks of a refused ACCEPT back in the queue).
        """
        self.error(driver, f"{error.call_type} refused: {error.message}" if error.call_type else error.message)

    def disconnected(self, driver: SchedulerDriver) -> None:
        """The broker connection was lost; the driver reconnects and re-subscribes by itself."""
