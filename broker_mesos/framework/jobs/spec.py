"""A scheduled job's definition, read from an operator's YAML mapping and kept in the planner's state.

Keys (defaults in brackets); anything else is refused, and every refusal names the field:

* ``name`` (required): ``[a-z0-9][a-z0-9-]{0,62}`` (at most 63 characters, usable in task ids);
* ``schedule`` (required): a cron expression, see ``cron``; ``timezone`` ["UTC"]: an IANA zone;
* ``command`` (required): a string run by ``/bin/sh -c``, or a list of strings run as argv without a
  shell; at most 64 KiB (UTF-8) in all;
* ``cpus`` [0.1] (> 0), ``mem`` [64] MB (> 0), ``disk`` [0] MB (>= 0): what one run needs;
* ``env`` [{}]: at most 256 ``NAME: value`` strings (names ``[A-Za-z_][A-Za-z0-9_]*``, values at most
  64 KiB); ``BMESOS_JOB`` and ``BMESOS_RUN_ID`` are set by the planner and cannot be given;
* ``user`` [""]: the OS user the runs run as ("" = the framework's default);
* ``concurrency_policy`` ["forbid"]: what a fire does while a run of the job is active: ``allow`` a
  second one, ``forbid`` it (the fire is recorded SKIPPED) or ``replace`` the active run (killed);
* ``starting_deadline`` [60] seconds (> 0, at most a day): a fire not started within it is MISSED;
* ``retries`` [0] (0..100) and ``retry_backoff`` {``initial`` [1], ``factor`` [2], ``max`` [60]}
  seconds: a failed attempt is retried after ``min(max, initial * factor ** (attempt - 1))``;
* ``history_limit`` [50] (1..1000): finished runs kept per job;
* ``suspended`` [false]: a suspended job does not fire (it can still be run by hand).

``JobSpec.to_wire()`` is this same mapping with every key spelled out, so
``parse_job(spec.to_wire()) == spec`` and the CLI may send either form.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from broker_mesos.core.codec import USER_PATTERN
from broker_mesos.framework.jobs.cron import Schedule
from broker_mesos.framework.planning import CommandError

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")
MAX_COMMAND_BYTES = 64 * 1024
MAX_ENV_ENTRIES = 256
MAX_ENV_VALUE_BYTES = 64 * 1024
MAX_SCALAR = 1e6  # cpus, mem or disk of one run (mem and disk in MB)
MAX_STARTING_DEADLINE = 86400.0
MAX_RETRIES = 100
MAX_BACKOFF_SECONDS = 86400.0
MAX_BACKOFF_FACTOR = 100.0
MAX_HISTORY_LIMIT = 1000
RESERVED_ENV = frozenset({"BMESOS_JOB", "BMESOS_RUN_ID"})


class ConcurrencyPolicy(enum.StrEnum):
    """What a fire does while an earlier run of the same job is still active (Kubernetes' names)."""

    ALLOW = "allow"
    FORBID = "forbid"
    REPLACE = "replace"


@dataclass(frozen=True, slots=True)
class RetryBackoff:
    """Delay before retry attempt ``n + 1`` after attempt ``n`` failed: ``min(max, initial * factor**(n-1))``."""

    initial: float = 1.0
    factor: float = 2.0
    max: float = 60.0

    def delay(self, failed_attempt: int) -> float:
        # bounded inputs (factor <= 100, attempts <= 101) keep the power far below float overflow
        return min(self.max, self.initial * self.factor ** max(0, failed_attempt - 1))


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job as the operator defined it (validated: build it with ``parse_job``)."""

    name: str
    schedule: str
    command: str | tuple[str, ...]
    timezone: str = "UTC"
    cpus: float = 0.1
    mem: float = 64.0
    disk: float = 0.0
    env: tuple[tuple[str, str], ...] = ()  # sorted by name
    user: str = ""
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.FORBID
    starting_deadline: float = 60.0
    retries: int = 0
    retry_backoff: RetryBackoff = field(default_factory=RetryBackoff)
    history_limit: int = 50
    suspended: bool = False

    @property
    def environment(self) -> dict[str, str]:
        return dict(self.env)

    def cron(self) -> Schedule:
        return Schedule(self.schedule, self.timezone)

    def to_wire(self) -> dict[str, Any]:
        """The YAML form with every key present (only plain, msgpack-able values)."""
        return {
            "name": self.name, "schedule": self.schedule, "timezone": self.timezone,
            "command": self.command if isinstance(self.command, str) else list(self.command),
            "cpus": self.cpus, "mem": self.mem, "disk": self.disk, "env": dict(self.env), "user": self.user,
            "concurrency_policy": self.concurrency_policy.value, "starting_deadline": self.starting_deadline,
            "retries": self.retries,
            "retry_backoff": {"initial": self.retry_backoff.initial, "factor": self.retry_backoff.factor,
                              "max": self.retry_backoff.max},
            "history_limit": self.history_limit, "suspended": self.suspended,
        }

    @classmethod
    def from_wire(cls, data: Any) -> JobSpec:
        """The inverse of ``to_wire``, as strict as ``parse_job`` but raising ``ValueError`` (stored state)."""
        try:
            return parse_job(data)
        except CommandError as exc:
            raise ValueError(f"job spec: {exc}") from None


_KEYS = frozenset(JobSpec.__dataclass_fields__)
_BACKOFF_KEYS = frozenset(RetryBackoff.__dataclass_fields__)


def parse_job(data: Any) -> JobSpec:
    """Validate a YAML-loaded mapping into a ``JobSpec``; ``CommandError`` names the first bad field."""
    if not isinstance(data, Mapping):
        raise CommandError(f"a job must be a mapping of keys to values, not {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in _KEYS)
    if unknown:
        raise CommandError(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}")
    for key in ("name", "schedule", "command"):
        if key not in data:
            raise CommandError(f"{key}: required")
    name = data["name"]
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise CommandError(f"name: {name!r} must match [a-z0-9][a-z0-9-]{{0,62}} (lower case, at most 63)")
    schedule, timezone = data["schedule"], data.get("timezone", "UTC")
    if not isinstance(schedule, str):
        raise CommandError("schedule: must be a string such as '30 2 * * *'")
    if not isinstance(timezone, str):
        raise CommandError("timezone: must be a string such as 'Europe/Berlin'")
    Schedule(schedule, timezone)  # raises CommandError naming schedule or timezone
    policy = data.get("concurrency_policy", ConcurrencyPolicy.FORBID.value)
    if policy not in {p.value for p in ConcurrencyPolicy}:
        raise CommandError(f"concurrency_policy: {policy!r} is not one of allow, forbid, replace")
    suspended = data.get("suspended", False)
    if not isinstance(suspended, bool):
        raise CommandError(f"suspended: must be true or false, not {suspended!r}")
    return JobSpec(
        name=name, schedule=schedule, timezone=timezone, command=_command(data["command"]),
        cpus=_number(data, "cpus", 0.1, low=0.0, high=MAX_SCALAR, low_open=True),
        mem=_number(data, "mem", 64.0, low=0.0, high=MAX_SCALAR, low_open=True),
        disk=_number(data, "disk", 0.0, low=0.0, high=MAX_SCALAR),
        env=_env(data.get("env", {})), user=_user(data.get("user", "")),
        concurrency_policy=ConcurrencyPolicy(policy),
        starting_deadline=_number(data, "starting_deadline", 60.0, low=0.0, high=MAX_STARTING_DEADLINE,
                                  low_open=True),
        retries=_integer(data, "retries", 0, 0, MAX_RETRIES),
        retry_backoff=_backoff(data.get("retry_backoff", {})),
        history_limit=_integer(data, "history_limit", 50, 1, MAX_HISTORY_LIMIT),
        suspended=suspended,
    )


def _number(data: Mapping[str, Any], key: str, default: float, *, low: float, high: float,
            low_open: bool = False) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CommandError(f"{key}: must be a number, not {value!r}")
    if value < low or (low_open and value == low) or value > high:
        bound = ">" if low_open else ">="
        raise CommandError(f"{key}: {value!r} must be {bound} {low:g} and <= {high:g}")
    return float(value)


def _integer(data: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CommandError(f"{key}: must be an integer, not {value!r}")
    if not low <= value <= high:
        raise CommandError(f"{key}: {value} must be between {low} and {high}")
    return value


def _command(value: Any) -> str | tuple[str, ...]:
    if isinstance(value, str):
        if not value.strip():
            raise CommandError("command: must not be empty")
        size = len(value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, list | tuple):
        if not value or not all(isinstance(arg, str) for arg in value) or not value[0]:
            raise CommandError("command: a list must hold strings (argv), the first one non-empty")
        size = sum(len(arg.encode("utf-8", "surrogatepass")) + 1 for arg in value)
    else:
        raise CommandError(f"command: must be a string (run by /bin/sh) or a list (argv), not {value!r}")
    if size > MAX_COMMAND_BYTES:
        raise CommandError(f"command: {size} bytes, more than {MAX_COMMAND_BYTES}")
    if any("\0" in arg for arg in ([value] if isinstance(value, str) else value)):
        raise CommandError("command: must not contain NUL characters")
    return value if isinstance(value, str) else tuple(value)


def _env(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise CommandError(f"env: must be a mapping of NAME: value, not {value!r}")
    if len(value) > MAX_ENV_ENTRIES:
        raise CommandError(f"env: {len(value)} entries, more than {MAX_ENV_ENTRIES}")
    for key, text in value.items():
        if not isinstance(key, str) or not ENV_NAME_PATTERN.fullmatch(key):
            raise CommandError(f"env: name {key!r} must match [A-Za-z_][A-Za-z0-9_]* (at most 256)")
        if key in RESERVED_ENV:
            raise CommandError(f"env.{key}: set by the planner for every run, cannot be given")
        if not isinstance(text, str):
            raise CommandError(f"env.{key}: must be a string (quote it in YAML), not {text!r}")
        if "\0" in text or len(text.encode("utf-8", "surrogatepass")) > MAX_ENV_VALUE_BYTES:
            raise CommandError(f"env.{key}: must be at most {MAX_ENV_VALUE_BYTES} bytes without NUL")
    return tuple(sorted(value.items()))


def _user(value: Any) -> str:
    if not isinstance(value, str) or (value and not USER_PATTERN.fullmatch(value)):
        raise CommandError(f"user: {value!r} is not an OS user name ([a-z_][a-z0-9_-]{{0,31}}) or \"\"")
    return value


def _backoff(value: Any) -> RetryBackoff:
    if not isinstance(value, Mapping):
        raise CommandError(f"retry_backoff: must be a mapping with initial, factor, max; not {value!r}")
    unknown = sorted(str(k) for k in value if k not in _BACKOFF_KEYS)
    if unknown:
        raise CommandError(f"retry_backoff: unknown key(s) {', '.join(unknown)}; known: factor, initial, max")
    scoped = {f"retry_backoff.{k}": v for k, v in value.items()}
    initial = _number(scoped, "retry_backoff.initial", 1.0, low=0.0, high=MAX_BACKOFF_SECONDS)
    factor = _number(scoped, "retry_backoff.factor", 2.0, low=1.0, high=MAX_BACKOFF_FACTOR)
    cap = _number(scoped, "retry_backoff.max", max(60.0, initial), low=initial, high=MAX_BACKOFF_SECONDS)
    return RetryBackoff(initial, factor, cap)
