"""The allocation engine: pluggable policies (``drf``, ``priority``, ``fair``, ``binpack``), roles
with weights and quotas, and incremental rounds. See ``engine`` for how a round works and ``policy``
for what a policy decides."""

from broker_mesos.core.allocation.engine import (
    MIN_ALLOCATABLE,
    MIN_ALLOCATABLE_MEM,
    Allocation,
    Allocator,
    allocatable,
)
from broker_mesos.core.allocation.policy import AgentView, AllocatorPolicy, FrameworkView, dominant_share
from broker_mesos.core.allocation.registry import DEFAULT_POLICY, ENTRY_POINT_GROUP, PolicyRegistry
from broker_mesos.core.allocation.roles import DEFAULT_ROLE, RoleConfig

__all__ = [
    "DEFAULT_POLICY",
    "DEFAULT_ROLE",
    "ENTRY_POINT_GROUP",
    "MIN_ALLOCATABLE",
    "MIN_ALLOCATABLE_MEM",
    "AgentView",
    "Allocation",
    "Allocator",
    "AllocatorPolicy",
    "FrameworkView",
    "PolicyRegistry",
    "RoleConfig",
    "allocatable",
    "dominant_share",
]
