"""Electing the one active master (or built-in framework scheduler): a lease held through the broker.

The lease is the queue ``master.lease`` declared *exclusive* on the connection that also consumes the
master's input queues. RabbitMQ lets only one connection hold an exclusive queue (others get
RESOURCE_LOCKED) and deletes it the moment that connection closes — a SIGKILLed process' socket is
closed by the kernel, a silent one is dropped after the AMQP heartbeat timeout. Because the consumers
live on the same connection, "holds the lease" and "receives input" begin and end together: a master
whose connection is gone can neither consume nor publish on it, so two masters are never active at
once. Why not single-active-consumer: see docs/fault-tolerance.md.

``Lease.gate`` is installed with ``Bus.before_consume``: on every (re)connect the bus declares the
topology, then the gate retries the lease every ``retry`` seconds; once held it hands over to
``on_acquired(done)`` (load the registry), and the bus starts the consumers when ``done`` is called.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from broker_mesos.bus import topology
from broker_mesos.bus.connection import Bus

log = logging.getLogger(__name__)

LEASE_RETRY = 0.1  # seconds between a standby's attempts: bounds the election part of a failover


class Lease:
    """The active-master lease of one ``Bus`` connection (or, with ``queue``, any one-active process':
    the built-in frameworks hold theirs the same way, ``framework.ha``)."""

    def __init__(self, bus: Bus, master_id: str, on_lost: Callable[[], None],
                 on_acquired: Callable[[Callable[[], None]], None], retry: float = LEASE_RETRY,
                 queue: topology.Queue | None = None, who: str = "master") -> None:
        self.bus = bus
        self.master_id = master_id
        self.queue = queue if queue is not None else topology.master_lease_queue()
        self.who = who  # for the log: "master", "service scheduler", ...
        self.retry = retry
        self.held = False
        self._on_lost = on_lost
        self._on_acquired = on_acquired
        self._standing_by = False

    @property
    def standing_by(self) -> bool:
        """Another connection holds the lease; this one retries every ``retry`` seconds."""
        return self._standing_by

    def gate(self, done: Callable[[], None]) -> None:
        """Run by the bus after each connect: wait for the lease, then let ``on_acquired`` finish."""
        if self.held:
            self.held = False
            log.warning("%s %s lost its lease with its broker connection", self.who, self.master_id)
        self._on_lost()
        generation = self.bus.generation
        queue = self.queue

        def attempt() -> None:
            if generation == self.bus.generation:
                self.bus.declare_exclusive(queue, result)

        def result(ok: bool) -> None:
            if generation != self.bus.generation:
                return  # that connection is gone; the next connect runs the gate again
            if not ok:
                if not self._standing_by:
                    self._standing_by = True
                    log.info("%s %s standing by (another one holds %s)", self.who, self.master_id, queue.name)
                self.bus.call_later(self.retry, attempt)
                return
            self.held = True
            self._standing_by = False
            log.info("%s %s acquired the lease", self.who, self.master_id)
            self._on_acquired(done)

        attempt()
