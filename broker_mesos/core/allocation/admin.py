"""Operator calls on the allocator (SET_ALLOCATOR, GET_ALLOCATOR, SET_ROLE, GET_ROLES), pure.

``apply`` returns the reply body and the cluster events to announce, or raises ``PolicyError`` before
changing anything, so a refused call leaves the running policy and roles as they were.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker_mesos.core import protocol
from broker_mesos.core.allocation.engine import Allocator
from broker_mesos.core.allocation.policy import FrameworkView
from broker_mesos.core.allocation.registry import PolicyRegistry
from broker_mesos.core.allocation.roles import RoleConfig, check_config, check_role_name
from broker_mesos.core.resources import Resources

AdminCall = protocol.SetAllocator | protocol.GetAllocator | protocol.SetRole | protocol.GetRoles
Event = tuple[str, dict[str, Any]]


def allocator_info(allocator: Allocator, registry: PolicyRegistry) -> protocol.AllocatorInfo:
    return protocol.AllocatorInfo(allocator.policy.name, allocator.policy.params, registry.names())


def roles_info(allocator: Allocator, frameworks: Mapping[str, FrameworkView]) -> protocol.Roles:
    """Every configured role and every role a framework is in, sorted by name."""
    members: dict[str, list[str]] = {}
    held: dict[str, Resources] = {}
    for fw in frameworks.values():
        members.setdefault(fw.role, []).append(fw.framework_id)
        held[fw.role] = held.get(fw.role, Resources()) + fw.allocated
    out = []
    for role in sorted(set(members) | set(allocator.roles)):
        config = allocator.role(role)
        out.append(protocol.RoleInfo(role, config.weight, config.guarantee, config.limit,
                                     held.get(role, Resources()), sorted(members.get(role, []))))
    return protocol.Roles(out)


def apply(call: AdminCall, allocator: Allocator, registry: PolicyRegistry,
          frameworks: Mapping[str, FrameworkView]) -> tuple[Any, list[Event]]:
    """Apply one admin call: (reply body, events); ``PolicyError`` when refused."""
    if isinstance(call, protocol.SetAllocator):
        policy = registry.create(call.policy, call.params)
        previous = allocator.policy
        allocator.set_policy(policy)
        return allocator_info(allocator, registry), [("allocator.changed", {
            "policy": policy.name, "params": policy.params, "previous": previous.name,
            "previous_params": previous.params})]
    if isinstance(call, protocol.GetAllocator):
        return allocator_info(allocator, registry), []
    if isinstance(call, protocol.SetRole):
        check_role_name(call.role)
        current = allocator.role(call.role)
        config = RoleConfig(current.weight if call.weight is None else call.weight,
                            current.guarantee if call.guarantee is None else call.guarantee,
                            current.limit if call.limit is None else call.limit)
        check_config(config)
        allocator.set_role(call.role, config)
        return roles_info(allocator, frameworks), [("role.changed", {
            "role": call.role, "weight": config.weight, "guarantee": config.guarantee.to_wire(),
            "limit": config.limit.to_wire()})]
    return roles_info(allocator, frameworks), []
