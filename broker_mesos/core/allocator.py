"""Turning free resources into offers: a sorter decides who is next, the allocator what they get.

As in Mesos' hierarchical allocator, each round walks the agents that have free resources and offers
*all* of an agent's free resources to the framework that is furthest below its fair share and is
allowed to see that agent (not suppressed, no DECLINE filter covering what is free). The framework's share then grows by
what it was offered, so the next agent goes to whoever is now furthest behind.

``DRFSorter`` orders clients by weighted dominant share (Ghodsi et al., NSDI 2011): a client's share of
a resource is what it holds over the cluster's total, its dominant share the largest of those, divided
by its weight. Ties go to the client that subscribed first.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from broker_mesos.core.resources import Resources

# Offers smaller than this in every scalar are not worth a framework's attention (Mesos' defaults).
MIN_ALLOCATABLE = Resources.of(cpus=0.01)
MIN_ALLOCATABLE_MEM = Resources.of(mem=32)


@dataclass(slots=True)
class Client:
    """A framework as the sorter sees it."""

    client_id: str
    weight: float = 1.0
    allocated: Resources = field(default_factory=Resources)
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Allocation:
    framework_id: str
    agent_id: str
    resources: Resources


def dominant_share(allocated: Resources, total: Mapping[str, float]) -> float:
    """Largest fraction of any resource in ``total`` that ``allocated`` holds."""
    share = 0.0
    for name, amount in allocated.quantities().items():
        cap = total.get(name, 0.0)
        if cap > 0:
            share = max(share, amount / cap)
    return share


class DRFSorter:
    """Weighted DRF ordering of clients; ``allocate``/``unallocate`` keep shares current within a round."""

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


def allocatable(resources: Resources) -> bool:
    """True unless the bundle is a crumb: too little CPU and too little memory to run anything."""
    return resources.contains(MIN_ALLOCATABLE) or resources.contains(MIN_ALLOCATABLE_MEM)


def allocate(free: Mapping[str, Resources], clients: Iterable[Client], total: Resources,
             filtered: Callable[[str, str, Resources], bool]) -> list[Allocation]:
    """One DRF round: each agent's free resources go, whole, to the neediest client allowed them.

    ``free`` maps agent id -> unoffered resources (iterated in the given order), ``filtered(fw, agent,
    resources)`` says a client must not be offered those resources of that agent now. Pure: the
    clients' ``allocated`` is not changed.
    """
    clients = [Client(c.client_id, c.weight, c.allocated, c.seq) for c in clients]
    if not clients:
        return []
    sorter = DRFSorter(clients, total)
    heap = [(*sorter.key(c.client_id), c.client_id) for c in clients]
    heapq.heapify(heap)
    out: list[Allocation] = []
    for agent_id, resources in free.items():
        if not allocatable(resources):
            continue
        skipped = []
        chosen = None
        while heap:
            entry = heapq.heappop(heap)
            if filtered(entry[2], agent_id, resources):
                skipped.append(entry)
                continue
            chosen = entry
            break
        if chosen is not None:
            client_id = chosen[2]
            sorter.allocate(client_id, resources)
            out.append(Allocation(client_id, agent_id, resources))
            heapq.heappush(heap, (*sorter.key(client_id), client_id))
        for entry in skipped:
            heapq.heappush(heap, entry)
    return out
