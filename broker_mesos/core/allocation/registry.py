"""Policies by name: the ones we ship, plus any a third-party package registers.

The registry itself is pure; finding third-party policies (entry-point group
``broker_mesos.allocators``, read with ``importlib.metadata``) reads installed package metadata, so
it is done by the master process (``broker_mesos.master.allocators``) and injected here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from broker_mesos.core.allocation.binpack import BinPackPolicy
from broker_mesos.core.allocation.drf import DRFPolicy
from broker_mesos.core.allocation.fair import FairPolicy
from broker_mesos.core.allocation.policy import AllocatorPolicy
from broker_mesos.core.allocation.priority import PriorityPolicy
from broker_mesos.core.errors import PolicyError

ENTRY_POINT_GROUP = "broker_mesos.allocators"
DEFAULT_POLICY = "drf"

PolicyFactory = Callable[[Mapping[str, str]], AllocatorPolicy]

BUILTIN: dict[str, PolicyFactory] = {
    "drf": DRFPolicy,
    "priority": PriorityPolicy,
    "fair": FairPolicy,
    "binpack": BinPackPolicy,
}


class PolicyRegistry:
    """Name -> policy factory (a policy class, or any callable taking the parameter map)."""

    def __init__(self, factories: Mapping[str, PolicyFactory] | None = None) -> None:
        self._factories: dict[str, PolicyFactory] = dict(BUILTIN if factories is None else factories)

    def register(self, name: str, factory: PolicyFactory) -> None:
        self._factories[name] = factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def create(self, name: str, params: Mapping[str, str] | None = None) -> AllocatorPolicy:
        """Build policy ``name``; an unknown name or a bad parameter raises ``PolicyError``."""
        factory = self._factories.get(name)
        if factory is None:
            raise PolicyError(f"unknown allocator policy {name!r} (known: {', '.join(self.names())})")
        try:
            policy = factory(dict(params or {}))
        except PolicyError:
            raise
        except Exception as exc:  # a third-party policy's own validation; the operator sees one line
            raise PolicyError(f"policy {name} refused its parameters: {exc.__class__.__name__}: {exc}") from None
        if not isinstance(policy, AllocatorPolicy):
            raise PolicyError(f"policy {name} did not produce an AllocatorPolicy")
        return policy
