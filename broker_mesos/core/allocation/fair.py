"""``fair``: equal share of one named resource (``resource=cpus`` by default), for comparison with DRF.

Frameworks are ordered by how much of that one resource they hold (offers included); everything else
they hold is ignored, which is exactly the unfairness DRF was invented to remove. Ties go to the
framework that subscribed first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from broker_mesos.core.allocation.policy import AllocatorPolicy, FrameworkView, Key, Quantities
from broker_mesos.core.errors import PolicyError
from broker_mesos.core.resources import _NAME


class FairPolicy(AllocatorPolicy):
    name: ClassVar[str] = "fair"
    accepted_params: ClassVar[frozenset[str]] = frozenset({"resource"})

    def __init__(self, params: Mapping[str, str] | None = None) -> None:
        super().__init__(params)
        self.resource = self._params.get("resource", "cpus")
        if not _NAME.match(self.resource):
            raise PolicyError(f"fair resource={self.resource!r} is not a resource name")

    def framework_key(self, framework: FrameworkView, allocated: Quantities, total: Quantities) -> Key:
        return (allocated.get(self.resource, 0.0) / framework.weight, framework.seq)
