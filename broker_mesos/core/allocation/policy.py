"""The allocator policy interface: what a policy decides, and the views of the cluster it decides on.

As in Mesos, *ordering clients* (who is offered next) is kept apart from *turning free resources into
offers* (``engine.Allocator``). A policy only orders: agents (which free resources are handed out
first) and clients (which framework, within which role, gets the next agent). It never sees offers,
filters, quotas or time; the engine applies those the same way under every policy, which is what makes
a policy swappable between two rounds without losing or duplicating an offer.

A policy is built from string parameters (``--param k=v``) and must refuse bad ones with
``PolicyError`` in ``__init__``, so a refused swap leaves the running policy untouched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

from broker_mesos.core.errors import PolicyError
from broker_mesos.core.resources import Resources

Quantities = dict[str, float]
Key = tuple[Any, ...]


class AgentView(Protocol):
    """What the engine and policies read of an agent (the master's ``AgentRecord`` is one)."""

    agent_id: str
    total: Resources
    free: Resources


class FrameworkView(Protocol):
    """What the engine and policies read of a framework (the master's ``FrameworkRecord`` is one)."""

    framework_id: str
    role: str
    weight: float
    seq: int
    suppressed: bool
    allocated: Resources


def dominant_share(allocated: Mapping[str, float], total: Mapping[str, float]) -> float:
    """Largest fraction of any resource in ``total`` that ``allocated`` holds (Ghodsi et al., 2011)."""
    share = 0.0
    for name, amount in allocated.items():
        cap = total.get(name, 0.0)
        if cap > 0.0:
            fraction = amount / cap
            if fraction > share:
                share = fraction
    return share


class AllocatorPolicy:
    """Base of every policy. Subclasses set ``name`` and override the ordering hooks they need.

    ``hierarchical`` policies order roles first (``role_key``), then frameworks inside the chosen role
    (``framework_key``); flat ones order all frameworks together by ``framework_key``. Keys are compared
    ascending (smallest is offered first) and are recomputed only for a client whose allocation changed.
    """

    name: ClassVar[str] = ""
    hierarchical: ClassVar[bool] = False
    accepted_params: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, params: Mapping[str, str] | None = None) -> None:
        params = dict(params or {})
        unknown = sorted(set(params) - self.accepted_params)
        if unknown:
            allowed = ", ".join(sorted(self.accepted_params)) or "none"
            raise PolicyError(f"policy {self.name} has no parameter {unknown[0]!r} (parameters: {allowed})")
        self._params = params

    @property
    def params(self) -> dict[str, str]:
        """The parameters as given (what ``bmesos admin allocator show`` prints)."""
        return dict(self._params)

    def role_key(self, role: str, allocated: Quantities, weight: float, total: Quantities) -> Key:
        """Order of roles (hierarchical policies only)."""
        return (role,)

    def framework_key(self, framework: FrameworkView, allocated: Quantities, total: Quantities) -> Key:
        """Order of frameworks (inside a role for hierarchical policies); ``allocated`` includes offers."""
        raise NotImplementedError

    def agent_order(self, agent_ids: Sequence[str], agents: Mapping[str, AgentView]) -> Sequence[str]:
        """Order in which candidate agents are handed out; default: as given (registration order)."""
        return agent_ids

    def describe(self) -> str:
        params = ",".join(f"{k}={v}" for k, v in sorted(self._params.items()))
        return f"{self.name}({params})"
