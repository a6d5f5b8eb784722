"""``ServicePlanner``: keeps every service at ``instances`` healthy tasks of its target version.

The planner interface (offers, status updates, ticks, recovery, durable state) is the one the shell
in ``framework/ha.py`` drives; operators' commands (``deploy``, ``scale``, ``restart``, ``stop``) and
views (``list_services``, ``status``) return plain data for the CLI. Commands only change the target:
the kills and launches they imply come from the next ``tick`` and ``offers``.

Task ids are ``<name>_<slot>_<counter>`` with a counter persisted in the state, so an id is never
reused, and a task's service is read back from its id (service names have no underscore).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from broker_mesos.core.protocol import Offer, TaskInfo, TaskState, TaskStatus
from broker_mesos.framework.planning import (
    CommandError,
    Decline,
    Effect,
    KillTask,
    Launch,
    Reconcile,
    Revive,
    Suppress,
)
from broker_mesos.framework.services.backoff import BackoffState
from broker_mesos.framework.services.model import LAUNCHING, Instance, Service
from broker_mesos.framework.services.placement import Fit, Misfit, build_task, pending_reason, try_place
from broker_mesos.framework.services.rolling import converge, fail_deployment, start_version
from broker_mesos.framework.services.spec import ServiceSpec

FORMAT = 1
HOST_MEMORY = 300.0  # seconds an offered agent counts as "seen" for constraint reasons and GROUP_BY
LONG_REFUSE_SECONDS = 30.0  # nothing waits to be placed
SHORT_REFUSE_SECONDS = 3.0  # something waits but did not fit: let other offers come
KILL_RETRY_SECONDS = 30.0  # a kill with no terminal update yet is sent again
LAUNCH_RECONCILE_SECONDS = 60.0  # a launch with no update yet is reconciled explicitly
# after a recovery, healthy deadlines wait this long for the reconcile answers (a task may have become
# healthy while no scheduler listened)
RECOVERY_GRACE_SECONDS = 30.0
# terminal states of a target-version task that fail its deployment (lost agents do not)
_DEPLOY_FAILURES = frozenset({TaskState.FAILED, TaskState.FINISHED, TaskState.ERROR})
_NEVER_LAUNCHED_FROM = frozenset({LAUNCHING, TaskState.STAGING.value})


class ServicePlanner:
    def __init__(self, framework_id: str, *, role: str = "*") -> None:
        self.framework_id = framework_id
        self.role = role
        self.dirty = False
        self._services: dict[str, Service] = {}
        self._counter = 0
        self._suppressed = False
        self._agents: dict[str, tuple[dict[str, str], float]] = {}  # hostname -> attributes, last offered
        self._reasons: dict[tuple[str, int], str] = {}
        self._kills_sent: dict[str, float] = {}
        self._reconciled: dict[str, float] = {}
        self._deadlines_from = float("-inf")

    # -- cluster input ------------------------------------------------------------------------
    def offers(self, offers: Sequence[Offer], now: float) -> list[Effect]:
        for offer in offers:
            self._agents[offer.hostname] = (dict(offer.attributes), now)
        self._agents = {h: seen for h, seen in self._agents.items() if now - seen[1] <= HOST_MEMORY}
        free = {o.offer_id: o.resources for o in offers}
        launches: dict[str, list[TaskInfo]] = {}
        unplaced = False
        stuck: dict[str, str] = {}  # service -> reason: its later slots would fail alike
        for service, slot in self._waiting(now):
            name = service.spec.name
            if name in stuck:
                self._reasons[(name, slot)] = stuck[name]
                continue
            constrained = bool(service.spec.constraints)
            placed = self._agents_of(service) if constrained else []
            known = self._known(service) if constrained else {}
            misfits: list[Misfit] = []
            for offer in offers:
                result = try_place(service.spec, offer, free[offer.offer_id], placed, known)
                if isinstance(result, Fit):
                    free[offer.offer_id] = free[offer.offer_id] - result.taken
                    launches.setdefault(offer.offer_id, []).append(self._launch(service, slot, offer, result, now))
                    break
                misfits.append(result)
            else:
                unplaced = True
                stuck[name] = pending_reason(service.spec, misfits, list(free.values()), placed, known)
                self._reasons[(name, slot)] = stuck[name]
        out: list[Effect] = [Launch(oid, tuple(tasks)) for oid, tasks in launches.items()]
        unused = tuple(o.offer_id for o in offers if o.offer_id not in launches)
        if unplaced:
            if unused:
                out.append(Decline(unused, SHORT_REFUSE_SECONDS))
            return out
        if unused:
            out.append(Decline(unused, LONG_REFUSE_SECONDS))
        if not self._suppressed:
            self._suppressed = True
            out.append(Suppress())
        return out

    def offer_rescinded(self, offer_id: str) -> None:
        """Nothing to undo: the planner holds no offers between calls."""

    def status_update(self, status: TaskStatus, now: float) -> list[Effect]:
        service = self._services.get(status.task_id.split("_", 1)[0])
        found = None if service is None else self._find(service, status.task_id)
        if service is None or found is None:
            return [] if status.state.terminal else [KillTask(status.task_id)]
        self._reconciled.pop(status.task_id, None)
        inst, dying = found
        if dying:
            if status.state.terminal:
                del service.dying[status.task_id]
                self._kills_sent.pop(status.task_id, None)
                self.dirty = True
            else:
                service.dying[status.task_id] = dataclasses.replace(inst, state=status.state.value)
            return self._step(service, now)
        if status.state.terminal:
            self._ended(service, inst, status, now)
        else:
            updated = _observe(inst, status, service.checked, now)
            if updated != inst:
                service.slots[inst.slot] = updated
                self.dirty = True
        return self._step(service, now)

    def tick(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        for service in list(self._services.values()):
            out += self._step(service, now)
            for task_id in service.dying:
                if now - self._kills_sent.get(task_id, now) >= KILL_RETRY_SECONDS:
                    out += self._killed([KillTask(task_id)], now)
        overdue = tuple(i.task_id for s in self._services.values() for i in s.slots.values()
                        if i.state == LAUNCHING and i.launched_at is not None
                        and now - max(i.launched_at, self._reconciled.get(i.task_id, i.launched_at))
                        >= LAUNCH_RECONCILE_SECONDS)
        if overdue:
            self._reconciled.update(dict.fromkeys(overdue, now))
            out.append(Reconcile(overdue))
        if self._suppressed and any(True for _ in self._waiting(now)):
            self._suppressed = False
            out.append(Revive())
        return out

    def recovered(self, now: float) -> list[Effect]:
        """Ask for every task's state (recorded ones by id, so one the master never saw answers LOST),
        kill again what was being killed, and ask for offers."""
        self._suppressed = False
        self._deadlines_from = now + RECOVERY_GRACE_SECONDS
        recorded = tuple(i.task_id for s in self._services.values() for i in [*s.slots.values(), *s.dying.values()]
                         if i.live)
        out: list[Effect] = [Reconcile(())]
        if recorded:
            out.append(Reconcile(recorded))
        self._reconciled.update(dict.fromkeys(recorded, now))
        for service in list(self._services.values()):
            out += self._killed([KillTask(t) for t in service.dying], now)
            out += self._step(service, now)
        out.append(Revive())
        return out

    def next_wakeup(self, now: float) -> float | None:
        """The earliest future time a timer fires: a backoff ends, a healthy deadline passes, a run
        proves stable, a kill or a silent launch is due to be sent again (None: no timer)."""
        times: list[float] = []
        for s in self._services.values():
            if any(not i.live for i in s.slots.values()):
                times.append(s.backoff.next_launch_at)
            rolling = s.deployment is not None and s.deployment.active
            for i in s.slots.values():
                if rolling and i.version == s.version and i.launched_at is not None and not i.is_healthy(s.checked):
                    times.append(i.launched_at + s.spec.upgrade.healthy_deadline)
                if s.backoff.failures and i.running_since is not None:
                    times.append(i.running_since + s.spec.backoff.reset_after)
                if i.state == LAUNCHING and i.launched_at is not None:
                    times.append(max(i.launched_at, self._reconciled.get(i.task_id, i.launched_at))
                                 + LAUNCH_RECONCILE_SECONDS)
            times += [self._kills_sent.get(t, now) + KILL_RETRY_SECONDS for t in s.dying]
        future = [t for t in times if t > now]
        return min(future) if future else None

    # -- operators' commands -----------------------------------------------------------------
    def deploy(self, spec: ServiceSpec, now: float) -> dict[str, Any]:
        """Create the service, or make ``spec`` its new version (rolling when its tasks change)."""
        service = self._services.get(spec.name)
        if service is None:
            self._services[spec.name] = Service(spec)
            self.dirty = True
            return {"name": spec.name, "result": "created", "version": 1}
        self._refuse_stopping(service)
        if spec == service.spec:
            return {"name": spec.name, "result": "unchanged", "version": service.version}
        start_version(service, spec, now, relabel=spec.same_tasks(service.spec))
        self.dirty = True
        return {"name": spec.name, "result": f"updated to version {service.version}", "version": service.version}

    def scale(self, name: str, instances: int, now: float) -> dict[str, Any]:
        service = self._get(name)
        self._refuse_stopping(service)
        if instances == service.spec.instances:
            return {"name": name, "result": "unchanged", "version": service.version}
        start_version(service, service.spec.with_instances(instances), now, relabel=True)
        self.dirty = True
        return {"name": name, "result": f"scaled to {instances} (version {service.version})",
                "version": service.version}

    def restart(self, name: str, now: float) -> dict[str, Any]:
        """A rolling restart: the same spec as a new version."""
        service = self._get(name)
        self._refuse_stopping(service)
        start_version(service, service.spec, now, relabel=False)
        self.dirty = True
        return {"name": name, "result": f"restarting as version {service.version}", "version": service.version}

    def stop(self, name: str, now: float) -> list[Effect]:
        """Kill every task; the service is forgotten once none is live."""
        service = self._get(name)
        service.status = "stopping"
        service.deployment = None
        self.dirty = True
        return self._step(service, now)

    # -- views -------------------------------------------------------------------------------
    def list_services(self, now: float) -> list[dict[str, Any]]:
        return [self._summary(s) for _, s in sorted(self._services.items())]

    def status(self, name: str, now: float) -> dict[str, Any]:
        service = self._get(name)
        out = self._summary(service)
        out["instances"] = [
            {"slot": i.slot, "version": i.version, "task_id": i.task_id, "agent": i.agent_id,
             "hostname": i.hostname, "state": i.state, "healthy": i.healthy, "ports": list(i.ports),
             "since": i.healthy_since or i.running_since or i.launched_at}
            for _, i in sorted(service.slots.items()) if i.live]
        out["pending"] = [{"slot": i.slot, "reason": self._pending_reason(service, i.slot, now)}
                          for _, i in sorted(service.slots.items()) if not i.live]
        out["killing"] = sorted(service.dying)
        b = service.backoff
        out["backoff"] = {"failures": b.failures, "next_launch_at": b.next_launch_at if b.failures else None,
                          "last_failure": b.last_message}
        d = service.deployment
        out["deployment"] = None if d is None else {
            "from_version": d.from_version, "to_version": d.to_version, "phase": d.state,
            "started_at": d.started_at, "message": d.message}
        out["spec"] = service.spec.to_wire()
        return out

    # -- durable state -----------------------------------------------------------------------
    def to_wire(self) -> dict[str, Any]:
        return {"format": FORMAT, "counter": self._counter,
                "services": {name: s.to_wire() for name, s in sorted(self._services.items())}}

    @classmethod
    def from_wire(cls, data: dict[str, Any], framework_id: str, *, role: str = "*") -> ServicePlanner:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a services planner state of format {FORMAT}")
        counter, services = data.get("counter"), data.get("services")
        if not isinstance(counter, int) or isinstance(counter, bool) or counter < 0:
            raise ValueError(f"bad task counter {counter!r}")
        if not isinstance(services, dict):
            raise ValueError("services must be a map")
        planner = cls(framework_id, role=role)
        planner._counter = counter
        for name, wire in services.items():
            service = Service.from_wire(wire)
            if service.spec.name != name:
                raise ValueError(f"service {name!r} holds the spec of {service.spec.name!r}")
            planner._services[name] = service
        return planner

    # -- inside ------------------------------------------------------------------------------
    def _get(self, name: str) -> Service:
        service = self._services.get(name)
        if service is None:
            raise CommandError(f"no service {name!r}")
        return service

    @staticmethod
    def _refuse_stopping(service: Service) -> None:
        if service.status == "stopping":
            raise CommandError(f"service {service.spec.name!r} is stopping: {len(service.dying)} tasks "
                               "still to end; try again once it is gone")

    def _waiting(self, now: float) -> list[tuple[Service, int]]:
        """Pending slots whose service may launch now: services by name, slots lowest first."""
        return [(s, slot) for _, s in sorted(self._services.items())
                if s.status != "stopping" and s.backoff.ready(now)
                for slot, i in sorted(s.slots.items()) if not i.live]

    def _find(self, service: Service, task_id: str) -> tuple[Instance, bool] | None:
        if task_id in service.dying:
            return service.dying[task_id], True
        for inst in service.slots.values():
            if inst.task_id == task_id:
                return inst, False
        return None

    @staticmethod
    def _agents_of(service: Service) -> list[tuple[str, dict[str, str]]]:
        return [(i.hostname, i.attributes) for i in [*service.slots.values(), *service.dying.values()] if i.live]

    def _known(self, service: Service) -> dict[str, dict[str, str]]:
        known = {h: attrs for h, (attrs, _) in self._agents.items()}
        known.update({i.hostname: i.attributes for i in service.slots.values() if i.live})
        return known

    def _launch(self, service: Service, slot: int, offer: Offer, fit: Fit, now: float) -> TaskInfo:
        """Record the instance (write-ahead: the state holds the task id before its Launch leaves)."""
        self._counter += 1
        task_id = f"{service.spec.name}_{slot}_{self._counter}"
        service.slots[slot] = Instance(slot, service.version, task_id, offer.agent_id, offer.hostname,
                                       dict(offer.attributes), fit.ports, LAUNCHING, launched_at=now)
        self._reasons.pop((service.spec.name, slot), None)
        self.dirty = True
        return build_task(service.spec, slot=slot, version=service.version, task_id=task_id,
                          agent_id=offer.agent_id, fit=fit)

    def _ended(self, service: Service, inst: Instance, status: TaskStatus, now: float) -> None:
        """A task of a slot ended without our kill: the slot waits again, a failure counts for backoff
        (unless the master never saw the launch) and may fail the deployment."""
        service.slots[inst.slot] = Instance(inst.slot, service.version)
        self.dirty = True
        if status.state is TaskState.LOST and status.agent_id == "" and inst.state in _NEVER_LAUNCHED_FROM:
            return
        why = _describe(status)
        service.backoff = service.backoff.failed(service.spec.backoff, now, why)
        unhealthy_kill = status.state is TaskState.KILLED and (status.healthy is False or inst.healthy is False)
        if inst.version == service.version and (status.state in _DEPLOY_FAILURES or unhealthy_kill):
            fail_deployment(service, f"instance {inst.slot} {why}", now)

    def _step(self, service: Service, now: float) -> list[Effect]:
        """Converge one service; note whether durable state changed; forget it once stopped."""
        before = (service.version, service.status, service.deployment, dict(service.slots), set(service.dying),
                  service.backoff)
        if service.backoff.failures and any(
                service.backoff.proves_stable(service.spec.backoff, i.launched_at, i.running_since, now)
                for i in service.slots.values()):
            service.backoff = BackoffState()
        out = self._killed(converge(service, now, deadlines=now >= self._deadlines_from), now)
        if service.status == "stopping" and not service.slots and not service.dying:
            del self._services[service.spec.name]
            self.dirty = True
        elif before != (service.version, service.status, service.deployment, dict(service.slots),
                        set(service.dying), service.backoff):
            self.dirty = True
        return out

    def _killed(self, effects: list[Effect], now: float) -> list[Effect]:
        for e in effects:
            if isinstance(e, KillTask):
                self._kills_sent[e.task_id] = now
        return effects

    def _pending_reason(self, service: Service, slot: int, now: float) -> str:
        b = service.backoff
        if service.status == "stopping":
            return "stopping"
        if not b.ready(now):
            return (f"backoff: next launch in {b.next_launch_at - now:.1f}s after {b.failures} failures "
                    f"(last: {b.last_message})")
        return self._reasons.get((service.spec.name, slot), "waiting for offers")

    @staticmethod
    def _summary(service: Service) -> dict[str, Any]:
        d = service.deployment
        live = [i for i in service.slots.values() if i.live]
        return {"name": service.spec.name, "version": service.version, "status": service.status,
                "wanted": service.spec.instances, "running": sum(1 for i in live if i.running),
                "healthy": service.healthy_count(),
                "deployment": None if d is None else f"{d.state} v{d.from_version} -> v{d.to_version}"
                + (f": {d.message}" if d.message else "")}


def _observe(inst: Instance, status: TaskStatus, checked: bool, now: float) -> Instance:
    """``inst`` after a non-terminal update (the same update twice changes nothing)."""
    running = status.state is TaskState.RUNNING
    healthy = status.healthy
    if healthy is None and running and inst.running:
        healthy = inst.healthy  # an update without a check result (e.g. a reconcile answer) keeps the last
    running_since = (inst.running_since if inst.running_since is not None else now) if running else None
    is_healthy = running and (not checked or healthy is True)
    healthy_since = (inst.healthy_since if inst.healthy_since is not None else now) if is_healthy else None
    return dataclasses.replace(inst, state=status.state.value, healthy=healthy if running else None,
                               running_since=running_since, healthy_since=healthy_since,
                               agent_id=status.agent_id or inst.agent_id)


def _describe(status: TaskStatus) -> str:
    if status.state is TaskState.KILLED and status.healthy is False:
        return "killed after failing its health checks"
    detail = f"exit code {status.exit_code}" if status.exit_code is not None else (status.message or status.reason)
    name = status.state.value.removeprefix("TASK_").lower()
    return f"{name}: {detail}" if detail else name
