"""``binpack``: fill agents before spreading, for consolidation.

Frameworks are ordered as under ``drf``, but agents are handed out most-used first (by the largest
used fraction of any resource), so the agents already running work are offered before idle ones and
a framework taking its offers in order packs its tasks onto few agents, leaving whole agents idle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from broker_mesos.core.allocation.drf import DRFPolicy
from broker_mesos.core.allocation.policy import AgentView


def used_fraction(agent: AgentView) -> float:
    """The largest fraction of any scalar of the agent that is not free (tasks and offers)."""
    free = agent.free.scalars
    used = 0.0
    for name, cap in agent.total.scalars.items():
        fraction = 1.0 - free.get(name, 0.0) / cap
        if fraction > used:
            used = fraction
    return used


class BinPackPolicy(DRFPolicy):
    name: ClassVar[str] = "binpack"

    def agent_order(self, agent_ids: Sequence[str], agents: Mapping[str, AgentView]) -> Sequence[str]:
        return sorted(agent_ids, key=lambda agent_id: -used_fraction(agents[agent_id]))
