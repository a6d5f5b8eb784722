"""The job scheduler process: ``JobPlanner`` run by ``framework.ha`` (``bmesos job scheduler``).

Commands (CONTROL, docs/protocol.md §20): ``add {spec}``, ``remove {name}``, ``run {name}``; read-only:
``list``, ``history {name, limit}``. A spec travels as the mapping read from the user's YAML and is
parsed again here.
"""

from __future__ import annotations

from typing import Any

from broker_mesos.framework.ha import Command, Kind, text_arg
from broker_mesos.framework.jobs.planner import JobPlanner
from broker_mesos.framework.jobs.spec import parse_job
from broker_mesos.framework.planning import CommandError, Effect

FRAMEWORK_ID = "jobs"  # the framework id (and principal name: framework.jobs) by default
MAX_HISTORY_SHOWN = 1000


def _add(planner: JobPlanner, args: dict[str, Any], now: float) -> tuple[Any, list[Effect]]:
    spec = args.get("spec")
    if not isinstance(spec, dict):
        raise CommandError("spec must be a mapping (the job's YAML)")
    return planner.add(parse_job(spec), now), []


def _remove(planner: JobPlanner, args: dict[str, Any], now: float) -> tuple[Any, list[Effect]]:
    name = text_arg(args, "name")
    return {"name": name, "removed": True}, planner.remove(name, now)


def _run(planner: JobPlanner, args: dict[str, Any], now: float) -> tuple[Any, list[Effect]]:
    name = text_arg(args, "name")
    return {"name": name, "started": True}, planner.run_now(name, now)


def _history(planner: JobPlanner, args: dict[str, Any], now: float) -> tuple[Any, list[Effect]]:
    limit = args.get("limit", 20)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_HISTORY_SHOWN:
        raise CommandError(f"limit must be an integer in 1..{MAX_HISTORY_SHOWN}")
    return {"items": planner.history(text_arg(args, "name"), limit)}, []


KIND = Kind(
    "job scheduler",
    lambda framework_id, role: JobPlanner(framework_id, role=role),
    lambda data, framework_id, role: JobPlanner.from_wire(data, framework_id, role=role),
    {
        "add": Command(_add),
        "remove": Command(_remove),
        "run": Command(_run),
        "list": Command(lambda p, a, now: ({"items": p.list_jobs(now)}, []), read_only=True),
        "history": Command(_history, read_only=True),
    },
)
