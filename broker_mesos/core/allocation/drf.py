"""``drf`` (the default): weighted dominant resource fairness over roles, then frameworks in a role.

Like Mesos' hierarchical allocator: the role whose weighted dominant share is smallest goes first, and
inside it the framework whose own weighted dominant share is smallest. Ties go to the role name, then
to the framework that subscribed first.
"""

from __future__ import annotations

from typing import ClassVar

from broker_mesos.core.allocation.policy import AllocatorPolicy, FrameworkView, Key, Quantities, dominant_share


class DRFPolicy(AllocatorPolicy):
    name: ClassVar[str] = "drf"
    hierarchical: ClassVar[bool] = True

    def role_key(self, role: str, allocated: Quantities, weight: float, total: Quantities) -> Key:
        return (dominant_share(allocated, total) / weight, role)

    def framework_key(self, framework: FrameworkView, allocated: Quantities, total: Quantities) -> Key:
        return (dominant_share(allocated, total) / framework.weight, framework.seq)
