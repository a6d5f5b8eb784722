"""Who is offered next within one round: a heap of roles, each holding a heap of its frameworks.

Mesos' hierarchical sorter in miniature. Only the client that just received resources changes its key,
so ``pop``/``push`` cost O(log n) per offer; roles whose key changed are re-keyed lazily (a stale heap
entry is recognised by its version and skipped). Flat policies use one role, ``""``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

from broker_mesos.core.allocation.policy import AllocatorPolicy, FrameworkView, Key, Quantities

FLAT = ""


class RoundSorter:
    """Clients of one round; ``pop`` takes the next framework out, ``push`` puts it back re-keyed."""

    def __init__(self, policy: AllocatorPolicy, frameworks: Iterable[FrameworkView],
                 framework_alloc: Callable[[str], Quantities], role_alloc: Callable[[str], Quantities],
                 role_weight: Callable[[str], float], total: Quantities) -> None:
        self.policy = policy
        self.hierarchical = policy.hierarchical
        self.framework_alloc = framework_alloc
        self.role_alloc = role_alloc
        self.role_weight = role_weight
        self.total = total
        self.frameworks: dict[str, FrameworkView] = {}
        self._heaps: dict[str, list[tuple[Key, str]]] = {}
        for fw in frameworks:
            self.frameworks[fw.framework_id] = fw
            self._heaps.setdefault(self.group(fw), []).append((self._fw_key(fw), fw.framework_id))
        self._version: dict[str, int] = {}
        self._roles: list[tuple[Key, str, int]] = []
        for role, heap in self._heaps.items():
            heapq.heapify(heap)
            self._version[role] = 0
            self._roles.append((self._role_key(role), role, 0))
        heapq.heapify(self._roles)

    def group(self, fw: FrameworkView) -> str:
        return fw.role if self.hierarchical else FLAT

    def _fw_key(self, fw: FrameworkView) -> Key:
        return self.policy.framework_key(fw, self.framework_alloc(fw.framework_id), self.total)

    def _role_key(self, role: str) -> Key:
        if not self.hierarchical:
            return ()
        return self.policy.role_key(role, self.role_alloc(role), self.role_weight(role), self.total)

    def __bool__(self) -> bool:
        return bool(self.frameworks)

    def pop(self) -> FrameworkView | None:
        """The next framework in policy order, removed until ``push``; None when every one is out."""
        roles = self._roles
        while roles:
            _key, role, version = roles[0]
            if version != self._version[role]:
                heapq.heappop(roles)
                continue
            heap = self._heaps[role]
            if not heap:
                heapq.heappop(roles)
                self._version[role] = version + 1  # absent until a framework of it is pushed back
                continue
            return self.frameworks[heapq.heappop(heap)[1]]
        return None

    def push(self, fw: FrameworkView, rekey_role: bool) -> None:
        """Put ``fw`` back with a fresh key; ``rekey_role`` after its role's allocation changed."""
        role = self.group(fw)
        heap = self._heaps[role]
        was_empty = not heap
        heapq.heappush(heap, (self._fw_key(fw), fw.framework_id))
        if rekey_role or was_empty:
            version = self._version[role] + 1
            self._version[role] = version
            heapq.heappush(self._roles, (self._role_key(role), role, version))
