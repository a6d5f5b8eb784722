"""Bringing a service's slots to its target: missing slots, scale down, rolling deployments.

``converge`` runs after every input. With a deployment active it repeats, while fewer than
``max_parallel`` target-version instances are in flight (not yet healthy, pending ones included) and
old-version instances remain: kill an unhealthy old one if any, else a healthy old one (highest slot
first) when that leaves at least ``min_healthy`` healthy, else start a target-version instance in a
surge slot beyond ``instances`` (at most ``max_parallel`` of them). A killed old instance's slot is
taken over by a healthy surge instance when there is one, else waits for a target-version instance.

Every kill of a healthy instance chosen here leaves ``healthy_count() >= min_healthy``; only scale
down (an operator's choice) and stop kill past that.
"""

from __future__ import annotations

import dataclasses

from broker_mesos.framework.planning import Effect, KillTask
from broker_mesos.framework.services.backoff import BackoffState
from broker_mesos.framework.services.model import Deployment, Instance, Service
from broker_mesos.framework.services.spec import ServiceSpec


def kill(service: Service, instance: Instance) -> list[Effect]:
    """Take ``instance`` out of its slot (the caller decides what the slot becomes); a live task is
    killed and remembered until its terminal update."""
    if service.slots.get(instance.slot) is instance:
        del service.slots[instance.slot]
    if not instance.live:
        return []
    service.dying[instance.task_id] = instance
    return [KillTask(instance.task_id)]


def retarget(service: Service, old_version: int | None) -> None:
    """After ``service.version`` changed: pending slots wait for the new version, and instances of
    ``old_version`` (whose tasks equal the new target's) are relabelled instead of replaced."""
    for slot, inst in list(service.slots.items()):
        if not inst.live or inst.version == old_version:
            service.slots[slot] = dataclasses.replace(inst, version=service.version)


def start_version(service: Service, spec: ServiceSpec, now: float, *, relabel: bool) -> None:
    """Make ``spec`` the target as a new version: running instances are relabelled when ``relabel``
    (their tasks equal the new spec's), else a rolling deployment replaces them."""
    previous_version, previous_spec, previous_deployment = service.version, service.spec, service.deployment
    service.spec = spec
    service.version += 1
    service.backoff = BackoffState()
    if relabel:
        retarget(service, previous_version)
        if previous_deployment is not None:
            service.deployment = dataclasses.replace(previous_deployment, to_version=service.version)
        return
    retarget(service, None)
    service.deployment = Deployment(previous_version, service.version, previous_spec, now)
    service.status = "deploying"


def fail_deployment(service: Service, why: str, now: float) -> None:
    """A target-version instance failed or missed its healthy deadline: revert (once) or stop."""
    d = service.deployment
    if d is None or not d.active:
        return
    message = f"version {service.version} failed: {why}"
    if service.spec.upgrade.auto_revert and d.state != "reverting":
        failed_spec, back_to = service.spec, d.from_version
        service.spec = d.from_spec
        service.version += 1
        service.backoff = BackoffState()
        retarget(service, back_to)
        service.deployment = Deployment(d.to_version, service.version, failed_spec, now, "reverting",
                                        f"{message}; reverting to the spec of version {back_to}")
        service.status = "deploying"
    else:
        service.deployment = dataclasses.replace(d, state="failed", message=message)
        service.status = "running"


def converge(service: Service, now: float, *, deadlines: bool = True) -> list[Effect]:
    """Kill what must go and add the slots that must wait for offers; returns the kills. ``deadlines``
    False skips the healthy deadlines (just after a recovery, before the reconcile answers came)."""
    if service.status == "stopping":
        out: list[Effect] = []
        for inst in sorted(service.slots.values(), key=lambda i: -i.slot):
            out += kill(service, inst)
        return out
    if deadlines:
        _check_deadlines(service, now)
    out = _fill_and_trim(service)
    if service.deployment is not None and service.deployment.active:
        out += _roll(service)
        out += _settle_surge(service)
        _finish_if_done(service)
    return out


def _check_deadlines(service: Service, now: float) -> None:
    d = service.deployment
    if d is None or not d.active:
        return
    deadline = service.spec.upgrade.healthy_deadline
    for inst in sorted(service.slots.values(), key=lambda i: i.slot):
        if (inst.version == service.version and inst.launched_at is not None
                and not inst.is_healthy(service.checked) and now - inst.launched_at >= deadline):
            fail_deployment(service, f"instance {inst.slot} not healthy within {deadline:g}s", now)
            return


def _fill_and_trim(service: Service) -> list[Effect]:
    n = service.spec.instances
    rolling = service.deployment is not None and service.deployment.active
    out: list[Effect] = []
    for slot in range(n):
        if slot not in service.slots:
            service.slots[slot] = Instance(slot, service.version)
    for slot in sorted((s for s in service.slots if s >= n), reverse=True):
        inst = service.slots[slot]
        if rolling and inst.live:
            continue  # a surge slot, or an old instance the deployment replaces under its rules
        out += kill(service, inst)
    return out


def _roll(service: Service) -> list[Effect]:
    spec, target, checked = service.spec, service.version, service.checked
    n, max_parallel = spec.instances, spec.upgrade.max_parallel
    out: list[Effect] = []
    while True:
        olds = [i for i in service.slots.values() if i.version != target]
        if not olds:
            return out
        in_flight = sum(1 for i in service.slots.values() if i.version == target and not i.is_healthy(checked))
        if in_flight >= max_parallel:
            return out
        unhealthy = [i for i in olds if not i.is_healthy(checked)]
        if unhealthy:
            victim: Instance | None = max(unhealthy, key=lambda i: i.slot)
        elif service.healthy_count() - spec.min_healthy > 0:
            victim = max(olds, key=lambda i: i.slot)
        else:
            victim = None
        if victim is not None:
            out += kill(service, victim)
            _refill(service, victim.slot)
            continue
        surge = [s for s in service.slots if s >= n]
        if len(surge) >= max_parallel:
            return out
        slot = next(s for s in range(n, n + max_parallel + 1) if s not in service.slots)
        service.slots[slot] = Instance(slot, target)


def _refill(service: Service, slot: int) -> None:
    """``slot`` was emptied by a kill: a healthy surge instance moves in, else it waits for the target."""
    n = service.spec.instances
    if slot >= n:
        return
    surge = [i for s, i in service.slots.items() if s >= n and i.is_healthy(service.checked)]
    if surge:
        mover = max(surge, key=lambda i: i.slot)
        del service.slots[mover.slot]
        service.slots[slot] = dataclasses.replace(mover, slot=slot)
    else:
        service.slots[slot] = Instance(slot, service.version)


def _settle_surge(service: Service) -> list[Effect]:
    """No old instance left: surge instances fill regular slots that still wait, or go."""
    n = service.spec.instances
    if any(i.version != service.version for i in service.slots.values()):
        return []
    out: list[Effect] = []
    for slot in sorted((s for s in service.slots if s >= n), reverse=True):
        inst = service.slots[slot]
        waiting = [s for s in range(n) if not service.slots[s].live]
        if not inst.live:
            del service.slots[slot]
        elif waiting:
            del service.slots[slot]
            service.slots[waiting[0]] = dataclasses.replace(inst, slot=waiting[0])
        elif all(service.slots[s].is_healthy(service.checked) for s in range(n)):
            out += kill(service, inst)
    return out


def _finish_if_done(service: Service) -> None:
    n = service.spec.instances
    done = (set(service.slots) == set(range(n))
            and all(i.version == service.version and i.is_healthy(service.checked) for i in service.slots.values()))
    if done:
        service.deployment = None
        service.status = "running"
