"""The services planner's durable state: services, their instance slots, deployments (plain values).

``Instance.state`` is a ``TaskState`` value, or ``PENDING`` (the slot waits for an offer; no task) or
``LAUNCHING`` (a task id is recorded and its Launch returned, no update heard yet).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from broker_mesos.core.protocol import TaskState
from broker_mesos.framework.services.backoff import BackoffState
from broker_mesos.framework.services.spec import ServiceSpec

PENDING = "PENDING"
LAUNCHING = "LAUNCHING"
_STATES = frozenset({PENDING, LAUNCHING} | {s.value for s in TaskState})


@dataclass(frozen=True, slots=True)
class Instance:
    slot: int
    version: int
    task_id: str = ""
    agent_id: str = ""
    hostname: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    ports: tuple[int, ...] = ()
    state: str = PENDING
    healthy: bool | None = None
    launched_at: float | None = None
    running_since: float | None = None
    healthy_since: float | None = None

    @property
    def live(self) -> bool:
        """A task exists (or may): launched and not known to have ended."""
        return self.state != PENDING

    @property
    def running(self) -> bool:
        return self.state == TaskState.RUNNING.value

    def is_healthy(self, checked: bool) -> bool:
        """RUNNING, and (when the service has a health check: ``checked``) its last check passed."""
        return self.running and (not checked or self.healthy is True)

    def to_wire(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["ports"] = list(self.ports)
        return out

    @classmethod
    def from_wire(cls, data: Any) -> Instance:
        if not isinstance(data, dict):
            raise ValueError("an instance must be a map")
        names = {f.name for f in dataclasses.fields(cls)}
        if set(data) != names:
            raise ValueError(f"an instance has keys {sorted(data)}, expected {sorted(names)}")
        if data["state"] not in _STATES:
            raise ValueError(f"unknown instance state {data['state']!r}")
        try:
            return cls(**{**data, "ports": tuple(int(p) for p in data["ports"]),
                          "attributes": {str(k): str(v) for k, v in data["attributes"].items()}})
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"bad instance: {exc}") from None


@dataclass(frozen=True, slots=True)
class Deployment:
    """A move of a service from ``from_version`` (running ``from_spec``) to ``to_version``.

    ``state``: ``rolling``, ``reverting`` (a rollback after a failure: same rules), or ``failed``
    (stopped with ``message``; no more old instances are replaced until the next deploy)."""

    from_version: int
    to_version: int
    from_spec: ServiceSpec
    started_at: float
    state: str = "rolling"
    message: str = ""

    @property
    def active(self) -> bool:
        return self.state != "failed"

    def to_wire(self) -> dict[str, Any]:
        return {"from_version": self.from_version, "to_version": self.to_version, "from_spec": self.from_spec.to_wire(),
                "started_at": self.started_at, "state": self.state, "message": self.message}

    @classmethod
    def from_wire(cls, data: Any) -> Deployment:
        if not isinstance(data, dict):
            raise ValueError("a deployment must be a map")
        try:
            if data["state"] not in ("rolling", "reverting", "failed"):
                raise ValueError(f"unknown deployment state {data['state']!r}")
            return cls(int(data["from_version"]), int(data["to_version"]), ServiceSpec.from_wire(data["from_spec"]),
                       float(data["started_at"]), str(data["state"]), str(data["message"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"bad deployment: {exc!r}") from None


@dataclass(slots=True)
class Service:
    """One service: its target ``spec`` at ``version``, its slots (slot -> instance) and the tasks it
    is killing (task id -> instance; they left their slot when the kill was chosen)."""

    spec: ServiceSpec
    version: int = 1
    status: str = "running"  # running | deploying | stopping
    slots: dict[int, Instance] = field(default_factory=dict)
    dying: dict[str, Instance] = field(default_factory=dict)
    backoff: BackoffState = field(default_factory=BackoffState)
    deployment: Deployment | None = None

    @property
    def checked(self) -> bool:
        return self.spec.health_check is not None

    def healthy_count(self) -> int:
        return sum(1 for i in self.slots.values() if i.is_healthy(self.checked))

    def to_wire(self) -> dict[str, Any]:
        return {"spec": self.spec.to_wire(), "version": self.version, "status": self.status,
                "slots": [i.to_wire() for _, i in sorted(self.slots.items())],
                "dying": [i.to_wire() for i in self.dying.values()], "backoff": self.backoff.to_wire(),
                "deployment": None if self.deployment is None else self.deployment.to_wire()}

    @classmethod
    def from_wire(cls, data: Any) -> Service:
        if not isinstance(data, dict):
            raise ValueError("a service must be a map")
        try:
            slots = [Instance.from_wire(i) for i in data["slots"]]
            dying = [Instance.from_wire(i) for i in data["dying"]]
            if data["status"] not in ("running", "deploying", "stopping"):
                raise ValueError(f"unknown service status {data['status']!r}")
            deployment = None if data["deployment"] is None else Deployment.from_wire(data["deployment"])
            return cls(ServiceSpec.from_wire(data["spec"]), int(data["version"]), data["status"],
                       {i.slot: i for i in slots}, {i.task_id: i for i in dying},
                       BackoffState.from_wire(data["backoff"]), deployment)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"bad service: {exc!r}") from None
