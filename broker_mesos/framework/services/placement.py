"""Fitting one instance of a service into an offer, and saying why none fits.

Constraints are checked first (against every live instance of the service and those placed earlier
in the same round), then resources: ``cpus``/``mem``/``disk`` and ``ports`` host ports, taken lowest
first from the offer's ``ports`` ranges.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from broker_mesos.core.protocol import Offer, TaskInfo
from broker_mesos.core.resources import Resources
from broker_mesos.framework.services.constraints import Constraint, field_value, summary, violation
from broker_mesos.framework.services.spec import ServiceSpec

Agent = tuple[str, Mapping[str, str]]  # hostname, attributes


@dataclass(frozen=True, slots=True)
class Fit:
    taken: Resources
    ports: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Misfit:
    """Why an offer cannot take the instance: ``constraint`` failed, or (None) the resources lack."""

    constraint: Constraint | None
    detail: str


def scalars_needed(spec: ServiceSpec) -> Resources:
    return Resources.of(cpus=spec.cpus, mem=spec.mem, disk=spec.disk)


def describe_need(spec: ServiceSpec) -> str:
    return str(scalars_needed(spec)) + (f";ports:{spec.ports}" if spec.ports else "")


def take_ports(free: Resources, count: int) -> tuple[int, ...] | None:
    """The ``count`` lowest free ports of ``free`` (None: fewer are free)."""
    out: list[int] = []
    for lo, hi in free.ranges.get("ports", ()):
        out.extend(range(lo, min(hi, lo + count - len(out) - 1) + 1))
        if len(out) == count:
            break
    return tuple(out) if len(out) == count else None


def try_place(spec: ServiceSpec, offer: Offer, free: Resources, placed: Sequence[Agent],
              known: Mapping[str, Mapping[str, str]]) -> Fit | Misfit:
    """Whether one instance of ``spec`` goes into ``free`` (what is left of ``offer``) given the agents of
    the service's instances ``placed`` so far and the agents ``known`` (hostname -> attributes)."""
    for c in spec.constraints:
        value = field_value(c.field, offer.hostname, offer.attributes)
        placed_values = [field_value(c.field, h, a) for h, a in placed]
        known_values = {v for h, a in known.items() if (v := field_value(c.field, h, a)) is not None}
        why = violation(c, value, placed_values, known_values)
        if why is not None:
            return Misfit(c, why)
    need = scalars_needed(spec)
    if not need <= free:
        return Misfit(None, f"{free} lacks {need}")
    ports = take_ports(free, spec.ports) if spec.ports else ()
    if ports is None:
        return Misfit(None, f"fewer than {spec.ports} free ports")
    taken = need + Resources(ranges={"ports": tuple((p, p) for p in ports)}) if ports else need
    return Fit(taken, ports)


def pending_reason(spec: ServiceSpec, misfits: Sequence[Misfit], offered: Sequence[Resources],
                   placed: Sequence[Agent], known: Mapping[str, Mapping[str, str]]) -> str:
    """What kept a slot pending this round: the resource shortfall when some agent passes the
    constraints, else the constraint that turned away the most offers."""
    if not misfits:
        return "waiting for offers"
    if any(m.constraint is None for m in misfits):
        largest = max(offered, key=lambda r: (r.scalar("cpus"), r.scalar("mem")), default=Resources())
        return f"no offer fits {describe_need(spec)} (largest seen: {largest.quantity()})"
    worst, _ = Counter(m.constraint for m in misfits if m.constraint is not None).most_common(1)[0]
    known_values = {v for h, a in known.items() if (v := field_value(worst.field, h, a)) is not None}
    return summary(worst, known_values, [field_value(worst.field, h, a) for h, a in placed], spec.instances)


def build_task(spec: ServiceSpec, *, slot: int, version: int, task_id: str, agent_id: str, fit: Fit) -> TaskInfo:
    env = dict(spec.env)
    env.update(BMESOS_SERVICE=spec.name, BMESOS_INSTANCE=str(slot), BMESOS_SERVICE_VERSION=str(version))
    for i, port in enumerate(fit.ports):
        env[f"PORT{i}"] = str(port)
    if fit.ports:
        env["PORT"] = str(fit.ports[0])
    health = None if spec.health_check is None else spec.health_check.health_check()
    return TaskInfo(task_id=task_id, agent_id=agent_id, resources=fit.taken, command=spec.command_info(env),
                    name=f"{spec.name}.{slot}", user=spec.user, health_check=health)
