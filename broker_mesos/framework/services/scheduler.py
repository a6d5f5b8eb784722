"""The service scheduler process: ``ServicePlanner`` run by ``framework.ha`` (``bmesos service scheduler``).

Commands (CONTROL, docs/protocol.md §20), each answered with a JSON-like result: ``deploy {spec}``,
``scale {name, instances}``, ``restart {name}``, ``stop {name}``; read-only: ``list``, ``status {name}``.
A spec travels as the mapping read from the user's YAML and is parsed again here: the scheduler
trusts nothing a client sent.
"""

from __future__ import annotations

from typing import Any

from broker_mesos.framework.ha import Command, Kind, text_arg
from broker_mesos.framework.planning import CommandError, Effect
from broker_mesos.framework.services.planner import ServicePlanner
from broker_mesos.framework.services.spec import parse_service

FRAMEWORK_ID = "services"  # the framework id (and principal name: framework.services) by default


def _deploy(planner: ServicePlanner, args: dict[str, Any], now: float) -> tuple[Any, list[Effect]]:
    spec = args.get("spec")
    if not isinstance(spec, dict):
        raise CommandError("spec must be a mapping (the service's YAML)")
    parsed = parse_service(spec)
    if parsed.role and parsed.role != planner.role:
        raise CommandError(f"role: this service scheduler runs as role {planner.role}, not {parsed.role}; run one "
                           f"with --role {parsed.role} --framework-id services-{parsed.role.replace('.', '-')} "
                           f"and deploy there (--framework-id)")
    return planner.deploy(parsed, now), []


def _scale(planner: ServicePlanner, args: dict[str, Any], now: float) -> tuple[Any, list[Effect]]:
    instances = args.get("instances")
    if not isinstance(instances, int) or isinstance(instances, bool):
        raise CommandError("instances must be an integer")
    return planner.scale(text_arg(args, "name"), instances, now), []


def _restart(planner: ServicePlanner, args: dict[str, Any], now: float) -> tuple[Any, list[Effect]]:
    return planner.restart(text_arg(args, "name"), now), []


def _stop(planner: ServicePlanner, args: dict[str, Any], now: float) -> tuple[Any, list[Effect]]:
    name = text_arg(args, "name")
    effects = planner.stop(name, now)
    return {"name": name, "stopping": True}, effects


KIND = Kind(
    "service scheduler",
    lambda framework_id, role: ServicePlanner(framework_id, role=role),
    lambda data, framework_id, role: ServicePlanner.from_wire(data, framework_id, role=role),
    {
        "deploy": Command(_deploy),
        "scale": Command(_scale),
        "restart": Command(_restart),
        "stop": Command(_stop),
        "list": Command(lambda p, a, now: ({"items": p.list_services(now)}, []), read_only=True),
        "status": Command(lambda p, a, now: (p.status(text_arg(a, "name"), now), []), read_only=True),
    },
)
