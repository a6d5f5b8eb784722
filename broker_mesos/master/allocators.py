"""Finding allocator policies: ours and third-party ones, through the entry-point group
``broker_mesos.allocators`` (reading installed package metadata, hence here and not in the pure core).

A third-party package adds a policy without touching ours::

    [options.entry_points]
    broker_mesos.allocators =
        mypolicy = mypackage.allocation:MyPolicy

where ``MyPolicy`` subclasses ``broker_mesos.core.allocation.AllocatorPolicy``.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from broker_mesos.core.allocation.registry import ENTRY_POINT_GROUP, PolicyRegistry

log = logging.getLogger(__name__)


def load_policies() -> PolicyRegistry:
    """The built-in policies, then every installed entry point of the group (a broken one is logged
    and skipped: one bad plugin must not stop the master)."""
    registry = PolicyRegistry()
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            registry.register(entry.name, entry.load())
        except Exception as exc:
            log.warning("allocator policy %s (%s) cannot be loaded: %s: %s", entry.name, entry.value,
                        exc.__class__.__name__, exc)
    return registry
