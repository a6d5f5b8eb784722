"""``priority``: strict priority by role (or by framework), first come first served inside a level.

Parameters: ``priorities=role1:10,role2:5`` (higher goes first; unnamed ones have ``default``, 0) and
``by=role`` (default) or ``by=framework`` (then ``priorities`` names framework ids). A lower level is
offered only what every higher level cannot take (filtered, suppressed or at its quota limit).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from broker_mesos.core.allocation.policy import AllocatorPolicy, FrameworkView, Key, Quantities
from broker_mesos.core.errors import PolicyError


def parse_priorities(text: str) -> dict[str, float]:
    """``a:10,b:5`` -> ``{"a": 10.0, "b": 5.0}``."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.rpartition(":")
        if not sep or not name:
            raise PolicyError(f"priority {part!r} is not NAME:NUMBER")
        try:
            out[name] = float(value)
        except ValueError:
            raise PolicyError(f"priority of {name!r} is not a number: {value!r}") from None
    return out


class PriorityPolicy(AllocatorPolicy):
    name: ClassVar[str] = "priority"
    accepted_params: ClassVar[frozenset[str]] = frozenset({"priorities", "by", "default"})

    def __init__(self, params: Mapping[str, str] | None = None) -> None:
        super().__init__(params)
        self.by = self._params.get("by", "role")
        if self.by not in ("role", "framework"):
            raise PolicyError(f"priority by={self.by!r}: expected role or framework")
        self.priorities = parse_priorities(self._params.get("priorities", ""))
        try:
            self.default = float(self._params.get("default", "0"))
        except ValueError:
            raise PolicyError(f"priority default={self._params['default']!r} is not a number") from None

    def framework_key(self, framework: FrameworkView, allocated: Quantities, total: Quantities) -> Key:
        level = framework.role if self.by == "role" else framework.framework_id
        return (-self.priorities.get(level, self.default), framework.seq)
