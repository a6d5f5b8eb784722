"""Roles: weights and quotas (a guaranteed minimum and a limit per scalar resource).

Quotas are scalar-only, as in Mesos (``cpus:2;mem:1024``): a range or a set has no meaningful
"amount" to guarantee. ``chop`` cuts an offer down so it stays inside caps, which is how a limit is
never exceeded even when an agent has more free than the role may hold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from broker_mesos.core.codec import ROLE_PATTERN
from broker_mesos.core.errors import PolicyError
from broker_mesos.core.resources import EMPTY, Resources

DEFAULT_ROLE = "*"


@dataclass(frozen=True, slots=True)
class RoleConfig:
    weight: float = 1.0
    guarantee: Resources = EMPTY
    limit: Resources = EMPTY


def check_role_name(role: str) -> None:
    """Mesos-like role names: ``*`` or 1-128 of ``A-Za-z0-9_.-`` not starting with ``.`` or ``-``
    (``codec.ROLE_PATTERN``, the rule every message's role field is decoded with)."""
    if not ROLE_PATTERN.fullmatch(role):
        raise PolicyError(f"bad role name {role!r} (1-128 of A-Z a-z 0-9 _ . -, or *)")


def check_quota(resources: Resources, what: str) -> None:
    if resources.ranges or resources.sets:
        raise PolicyError(f"{what} may name scalar resources only (cpus, mem, disk, ...), not {resources}")


def check_config(config: RoleConfig) -> None:
    if not 0.001 <= config.weight <= 1e6:
        raise PolicyError(f"role weight {config.weight} is outside [0.001, 1000000]")
    check_quota(config.guarantee, "a guarantee")
    check_quota(config.limit, "a limit")
    for name, amount in config.guarantee.scalars.items():
        cap = config.limit.scalars.get(name)
        if cap is not None and cap < amount:
            raise PolicyError(f"the guarantee of {name} ({amount:g}) is above its limit ({cap:g})")


def chop(resources: Resources, caps: Mapping[str, float]) -> Resources:
    """``resources`` with each scalar named in ``caps`` cut down to at most its cap (never below 0)."""
    scalars = dict(resources.scalars)
    cut = False
    for name, cap in caps.items():
        have = scalars.get(name)
        if have is not None and have > cap:
            scalars[name] = math.floor(cap * 1000 + 1e-6) / 1000 if cap > 0 else 0.0
            cut = True
    if not cut:
        return resources
    return Resources(scalars, resources.ranges, resources.sets)
