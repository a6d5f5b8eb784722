"""The original one-call DRF allocator API, kept for callers and tests written against it.

The engine now lives in ``broker_mesos.core.allocation`` (policies, roles, quotas, incremental
rounds); ``allocate`` here runs one stateless ``drf`` round of that engine over flat clients, and
``DRFSorter`` is the plain weighted-DRF ordering used to check the published DRF example by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from broker_mesos.core.allocation import policy as _policy
from broker_mesos.core.allocation.drf import DRFPolicy
from broker_mesos.core.allocation.engine import (
    MIN_ALLOCATABLE,
    MIN_ALLOCATABLE_MEM,
    Allocation,
    Allocator,
    allocatable,
)
from broker_mesos.core.allocation.roles import DEFAULT_ROLE
from broker_mesos.core.resources import Resources

__all__ = ["MIN_ALLOCATABLE", "MIN_ALLOCATABLE_MEM", "Allocation", "Client", "DRFSorter", "allocatable", "allocate",
           "dominant_share"]


@dataclass(slots=True)
class Client:
    """A framework as the sorter sees it."""

    client_id: str
    weight: float = 1.0
    allocated: Resources = field(default_factory=Resources)
    seq: int = 0


def dominant_share(allocated: Resources, total: Mapping[str, float]) -> float:
    """Largest fraction of any resource in ``total`` that ``allocated`` holds."""
    return _policy.dominant_share(allocated.quantities(), total)


class DRFSorter:
    """Weighted DRF ordering of clients; ``allocate`` keeps shares current as resources are handed out."""

    def __init__(self, clients: Iterable[Client], total: Resources) -> None:
        self.total = total.quantities()
        self.clients = {c.client_id: c for c in clients}

    def share(self, client_id: str) -> float:
        c = self.clients[client_id]
        return dominant_share(c.allocated, self.total) / c.weight

    def key(self, client_id: str) -> tuple[float, int]:
        return (self.share(client_id), self.clients[client_id].seq)

    def allocate(self, client_id: str, resources: Resources) -> None:
        c = self.clients[client_id]
        c.allocated = c.allocated + resources

    def sort(self) -> list[str]:
        return sorted(self.clients, key=self.key)


@dataclass(slots=True)
class _Framework:
    framework_id: str
    weight: float
    seq: int
    allocated: Resources
    role: str = DEFAULT_ROLE
    suppressed: bool = False


@dataclass(slots=True)
class _Agent:
    agent_id: str
    total: Resources
    free: Resources


def allocate(free: Mapping[str, Resources], clients: Iterable[Client], total: Resources,
             filtered: Callable[[str, str, Resources], bool]) -> list[Allocation]:
    """One DRF round: each agent's free resources go, whole, to the neediest client allowed them.

    ``free`` maps agent id -> unoffered resources (iterated in the given order), ``filtered(fw, agent,
    resources)`` says a client must not be offered those resources of that agent now. Pure: the
    clients' ``allocated`` is not changed.
    """
    frameworks = {c.client_id: _Framework(c.client_id, c.weight, c.seq, c.allocated) for c in clients}
    agents = {agent_id: _Agent(agent_id, resources, resources) for agent_id, resources in free.items()}
    return Allocator(DRFPolicy()).round(agents, frameworks, total, filtered, 0.0)
