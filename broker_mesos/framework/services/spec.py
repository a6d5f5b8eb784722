"""A service's description (``ServiceSpec``), read from a YAML-loaded mapping by ``parse_service``.

Keys, defaults in brackets, bounds after them (anything else, and any unknown key, is refused with a
``CommandError`` naming the field):

- ``name`` (required): ``[a-z0-9][a-z0-9-]{0,62}`` (no underscore: task ids are ``<name>_<slot>_<n>``);
- ``instances`` [1]: 0-1000; ``command`` (required): a string run by ``/bin/sh -c``, or a list (argv) of
  1-256 strings;
- ``cpus`` [0.1]: 0.001-1000; ``mem`` [64] MB: 1-10,000,000; ``disk`` [0] MB: 0-1,000,000,000;
- ``ports`` [0]: 0-16 host ports taken from the offer's ``ports`` ranges; the task gets ``PORT0`` ..
  ``PORT<n-1>`` and ``PORT`` = ``PORT0`` in its environment;
- ``env`` [{}]: at most 64 variables, names ``[A-Za-z_][A-Za-z0-9_]{0,127}`` except ``PORT``, ``PORT<n>``
  and ``BMESOS_*`` (the planner sets those), values strings or numbers;
- ``user`` [""]: an OS user name (the framework's default when empty);
- ``role`` [""]: the role whose resources it runs on; a scheduler subscribes with one role
  (``bmesos service scheduler --role R``), so a spec naming another is refused: run one scheduler (with
  its own ``--framework-id``) per role;
- ``constraints`` [none]: see ``constraints``;
- ``health_check`` [none]: ``type`` http|tcp|command (required), ``path`` ["/"], ``port_index`` [0]
  (< ``ports``, for http and tcp), ``command`` (required for command: string or argv list),
  ``grace_period`` [10] 0-86400, ``interval`` [10] 0.1-86400, ``timeout`` [5] 0.1-3600,
  ``consecutive_failures`` [3] 1-1000, ``delay`` [0] 0-86400 (seconds);
- ``backoff``: ``initial`` [1] 0.001-86400, ``factor`` [2] 1-100, ``max`` [60] ``initial``-86400,
  ``reset_after`` [60] 0-86400 (seconds);
- ``upgrade``: ``max_parallel`` [1] 1-1000, ``min_healthy`` [instances - max_parallel, at least 0]
  0-``instances``, ``healthy_deadline`` [300] 1-86400 seconds, ``auto_revert`` [true].
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from broker_mesos.core.codec import ROLE_PATTERN, USER_PATTERN
from broker_mesos.core.protocol import CommandInfo, HealthCheck, HealthCheckType
from broker_mesos.framework.planning import CommandError
from broker_mesos.framework.services.backoff import BackoffPolicy
from broker_mesos.framework.services.constraints import Constraint, parse_constraints

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MAX_INSTANCES = 1000
MAX_PORTS = 16
MAX_ENV = 64
MAX_ARGV = 256
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_RESERVED_ENV = re.compile(r"^(PORT[0-9]*|BMESOS_.*)$")
_KEYS = ("name", "instances", "command", "cpus", "mem", "disk", "ports", "env", "user", "role", "constraints",
         "health_check", "backoff", "upgrade")
_HEALTH_KEYS = ("type", "path", "port_index", "command", "grace_period", "interval", "timeout",
                "consecutive_failures", "delay")


@dataclass(frozen=True, slots=True)
class HealthSpec:
    """The ``health_check`` section, in the spec's words; ``health_check()`` is what the agent runs."""

    type: HealthCheckType
    path: str = "/"
    port_index: int = 0
    command: str | tuple[str, ...] | None = None
    grace_period: float = 10.0
    interval: float = 10.0
    timeout: float = 5.0
    consecutive_failures: int = 3
    delay: float = 0.0

    def health_check(self) -> HealthCheck:
        return HealthCheck(type=self.type, command=None if self.command is None else command_info(self.command),
                           port_index=self.port_index, path=self.path, delay_seconds=self.delay,
                           interval_seconds=self.interval, timeout_seconds=self.timeout,
                           grace_period_seconds=self.grace_period, consecutive_failures=self.consecutive_failures)

    def to_wire(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in _HEALTH_KEYS}
        out["type"] = self.type.value.lower()
        out["command"] = _wire_command(self.command)
        return out


@dataclass(frozen=True, slots=True)
class UpgradePolicy:
    """The ``upgrade`` section; ``min_healthy`` None means "instances - max_parallel" (see ServiceSpec)."""

    max_parallel: int = 1
    min_healthy: int | None = None
    healthy_deadline: float = 300.0
    auto_revert: bool = True


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    command: str | tuple[str, ...]
    instances: int = 1
    cpus: float = 0.1
    mem: float = 64.0
    disk: float = 0.0
    ports: int = 0
    env: Mapping[str, str] = field(default_factory=dict)
    user: str = ""
    role: str = ""  # "": the scheduler's; else it must be the scheduler's (one role per framework)
    constraints: tuple[Constraint, ...] = ()
    health_check: HealthSpec | None = None
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    upgrade: UpgradePolicy = field(default_factory=UpgradePolicy)

    @property
    def min_healthy(self) -> int:
        """How many instances must stay healthy during a rolling update (never more than ``instances``)."""
        wanted = self.upgrade.min_healthy
        if wanted is None:
            wanted = self.instances - self.upgrade.max_parallel
        return max(0, min(wanted, self.instances))

    def same_tasks(self, other: ServiceSpec) -> bool:
        """Whether both specs launch identical tasks (only the count or the policies differ), so running
        instances need no restart to move from one to the other."""
        task_fields = ("command", "cpus", "mem", "disk", "ports", "env", "user", "constraints", "health_check")
        return all(getattr(self, k) == getattr(other, k) for k in task_fields)

    def with_instances(self, instances: int) -> ServiceSpec:
        if not 0 <= instances <= MAX_INSTANCES:
            raise CommandError(f"instances: must be 0-{MAX_INSTANCES}, not {instances}")
        upgrade = self.upgrade
        if upgrade.min_healthy is not None and upgrade.min_healthy > instances:
            upgrade = dataclasses.replace(upgrade, min_healthy=instances)
        return dataclasses.replace(self, instances=instances, upgrade=upgrade)

    def command_info(self, environment: Mapping[str, str]) -> CommandInfo:
        return dataclasses.replace(command_info(self.command), environment=dict(environment))

    def to_wire(self) -> dict[str, Any]:
        """The spec as a complete YAML-like mapping (every default spelled out); ``from_wire`` reads it."""
        return {
            "name": self.name, "instances": self.instances, "command": _wire_command(self.command),
            "cpus": self.cpus, "mem": self.mem, "disk": self.disk, "ports": self.ports, "env": dict(self.env),
            "user": self.user, "role": self.role, "constraints": [c.to_wire() for c in self.constraints],
            "health_check": None if self.health_check is None else self.health_check.to_wire(),
            "backoff": dataclasses.asdict(self.backoff), "upgrade": dataclasses.asdict(self.upgrade),
        }

    @classmethod
    def from_wire(cls, data: Any) -> ServiceSpec:
        try:
            return parse_service(data)
        except CommandError as exc:
            raise ValueError(f"bad service spec: {exc}") from None


def command_info(command: str | tuple[str, ...]) -> CommandInfo:
    if isinstance(command, str):
        return CommandInfo(value=command, shell=True)
    return CommandInfo(value=command[0], shell=False, arguments=list(command))


def _wire_command(command: str | tuple[str, ...] | None) -> str | list[str] | None:
    return command if command is None or isinstance(command, str) else list(command)


def parse_service(data: Any) -> ServiceSpec:
    """Read a service from a YAML-loaded mapping, refusing (``CommandError`` naming the field) anything
    outside the module's bounds and any key it does not know."""
    section = _section(data, "service", _KEYS)
    name = section.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise CommandError(f"name: required, [a-z0-9][a-z0-9-]{{0,62}}, not {name!r}")
    instances = int(_number(section, "instances", 1, 0, MAX_INSTANCES, integer=True))
    ports = int(_number(section, "ports", 0, 0, MAX_PORTS, integer=True))
    if "command" not in section:
        raise CommandError("command: required (a string for /bin/sh -c, or an argv list)")
    user = section.get("user", "") if section.get("user") is not None else ""
    if not isinstance(user, str) or (user and not USER_PATTERN.fullmatch(user)):
        raise CommandError(f"user: not an OS user name: {user!r}")
    role = section.get("role") if section.get("role") is not None else ""
    if not isinstance(role, str) or (role and not ROLE_PATTERN.fullmatch(role)):
        raise CommandError(f"role: not a role name (*, or 1-128 of A-Z a-z 0-9 _ . -): {role!r}")
    upgrade = _upgrade(section.get("upgrade"), instances)
    return ServiceSpec(
        name=name, command=_command(section["command"], "command"), instances=instances,
        cpus=_number(section, "cpus", 0.1, 0.001, 1000.0), mem=_number(section, "mem", 64.0, 1.0, 1e7),
        disk=_number(section, "disk", 0.0, 0.0, 1e9), ports=ports, env=_env(section.get("env")), user=user, role=role,
        constraints=parse_constraints(section.get("constraints")),
        health_check=_health(section.get("health_check"), ports), backoff=_backoff(section.get("backoff")),
        upgrade=upgrade)


def _section(data: Any, where: str, keys: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise CommandError(f"{where}: expected a mapping, not {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in keys)
    if unknown:
        prefix = "" if where == "service" else f"{where}."
        raise CommandError(f"{prefix}{unknown[0]}: unknown key (known: {', '.join(keys)})")
    return data


def _number(section: Mapping[str, Any], key: str, default: float, lo: float, hi: float, *,
            integer: bool = False, where: str = "") -> float:
    value = section.get(key)
    if value is None:
        return default
    name = f"{where}{key}"
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        raise CommandError(f"{name}: must be {kind}, not {value!r}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise CommandError(f"{name}: must be {lo:g}-{hi:g}, not {value!r}")
    return value if integer else float(value)


def _command(value: Any, where: str) -> str | tuple[str, ...]:
    if isinstance(value, str):
        if not value.strip():
            raise CommandError(f"{where}: must not be empty")
        return value
    if isinstance(value, list) and 0 < len(value) <= MAX_ARGV and all(isinstance(a, str) for a in value):
        return tuple(value)
    raise CommandError(f"{where}: expected a string or a list of 1-{MAX_ARGV} strings, not {value!r}")


def _env(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise CommandError("env: expected a mapping of NAME: value")
    if len(value) > MAX_ENV:
        raise CommandError(f"env: at most {MAX_ENV} variables")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
            raise CommandError(f"env.{key}: not a variable name")
        if _RESERVED_ENV.fullmatch(key):
            raise CommandError(f"env.{key}: reserved (PORT, PORT<n> and BMESOS_* are set by the planner)")
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise CommandError(f"env.{key}: expected a string or a number, not {item!r}")
        out[key] = str(item)
    return out


def _health(value: Any, ports: int) -> HealthSpec | None:
    if value is None:
        return None
    section = _section(value, "health_check", _HEALTH_KEYS)
    where = "health_check."
    kind = section.get("type")
    if not isinstance(kind, str) or kind.upper() not in HealthCheckType.__members__:
        raise CommandError(f"health_check.type: one of http, tcp, command; not {kind!r}")
    check_type = HealthCheckType(kind.upper())
    port_index = int(_number(section, "port_index", 0, 0, MAX_PORTS - 1, integer=True, where=where))
    if check_type is not HealthCheckType.COMMAND and port_index >= ports:
        raise CommandError(f"health_check.port_index: {port_index} but the service asks for {ports} ports")
    command = section.get("command")
    if check_type is HealthCheckType.COMMAND:
        if command is None:
            raise CommandError("health_check.command: required for a command check")
        command = _command(command, "health_check.command")
    elif command is not None:
        raise CommandError(f"health_check.command: only for a command check, not {kind}")
    path = section.get("path", "/") if section.get("path") is not None else "/"
    if not isinstance(path, str) or not path.startswith("/"):
        raise CommandError(f"health_check.path: must start with '/', not {path!r}")
    return HealthSpec(
        type=check_type, path=path, port_index=port_index, command=command,
        grace_period=_number(section, "grace_period", 10.0, 0.0, 86400.0, where=where),
        interval=_number(section, "interval", 10.0, 0.1, 86400.0, where=where),
        timeout=_number(section, "timeout", 5.0, 0.1, 3600.0, where=where),
        consecutive_failures=int(_number(section, "consecutive_failures", 3, 1, 1000, integer=True, where=where)),
        delay=_number(section, "delay", 0.0, 0.0, 86400.0, where=where))


def _backoff(value: Any) -> BackoffPolicy:
    section = _section({} if value is None else value, "backoff", ("initial", "factor", "max", "reset_after"))
    where = "backoff."
    initial = _number(section, "initial", 1.0, 0.001, 86400.0, where=where)
    return BackoffPolicy(initial=initial, factor=_number(section, "factor", 2.0, 1.0, 100.0, where=where),
                         max=_number(section, "max", max(60.0, initial), initial, 86400.0, where=where),
                         reset_after=_number(section, "reset_after", 60.0, 0.0, 86400.0, where=where))


def _upgrade(value: Any, instances: int) -> UpgradePolicy:
    keys = ("max_parallel", "min_healthy", "healthy_deadline", "auto_revert")
    section = _section({} if value is None else value, "upgrade", keys)
    where = "upgrade."
    max_parallel = int(_number(section, "max_parallel", 1, 1, MAX_INSTANCES, integer=True, where=where))
    min_healthy = section.get("min_healthy")
    if min_healthy is not None:
        min_healthy = int(_number(section, "min_healthy", 0, 0, instances, integer=True, where=where))
    auto_revert = section.get("auto_revert", True)
    if not isinstance(auto_revert, bool):
        raise CommandError(f"upgrade.auto_revert: must be true or false, not {auto_revert!r}")
    return UpgradePolicy(max_parallel=max_parallel, min_healthy=min_healthy, auto_revert=auto_revert,
                         healthy_deadline=_number(section, "healthy_deadline", 300.0, 1.0, 86400.0, where=where))
