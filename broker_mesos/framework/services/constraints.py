"""Placement constraints (Marathon's operators) evaluated purely, with reasons an operator can act on.

A constraint names a ``field`` (``hostname`` or an agent attribute from ``Offer.attributes``), an
operator and maybe a value:

- ``UNIQUE``: no two instances share a value of the field;
- ``CLUSTER:v``: every instance on an agent whose field equals ``v``;
- ``GROUP_BY[:n]``: spread evenly over the field's values (those seen in recent offers and on live
  instances, at least ``n`` groups when given): an agent is acceptable when its group holds no more
  instances than the least used group;
- ``LIKE:regex`` / ``UNLIKE:regex``: the field's value matches (does not match) the regex in full.

An agent without the attribute fails every operator except ``UNLIKE`` (``UNIQUE`` included: uniqueness
cannot be promised for a value that is not there).

Regexes are matched with the ``regex`` library and a deadline (``MATCH_TIMEOUT`` per value): attribute
values come from agents, so an operator's pattern with catastrophic backtracking meeting a value built to
trigger it would otherwise wedge the scheduler. A match that runs out of time counts as "no match" for
LIKE and as "matches" for UNLIKE (the instance is not placed there) and says so in the reason.
Patterns are at most ``MAX_PATTERN`` characters.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import regex

from broker_mesos.framework.planning import CommandError

OPERATORS = ("UNIQUE", "CLUSTER", "GROUP_BY", "LIKE", "UNLIKE")
MAX_CONSTRAINTS = 32
MAX_GROUPS = 1000
MAX_PATTERN = 1024
MATCH_TIMEOUT = 0.01  # seconds one LIKE / UNLIKE match may take
MATCH_CACHE = 4096  # (pattern, value) answers remembered: placement asks the same few thousands of times
_FIELD = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


@dataclass(frozen=True, slots=True)
class Constraint:
    field: str
    operator: str
    value: str | None = None

    def __str__(self) -> str:
        return f"{self.operator} {self.field}" + ("" if self.value is None else f":{self.value}")

    def to_wire(self) -> list[str]:
        return [self.field, self.operator] + ([] if self.value is None else [self.value])


def parse_constraints(data: Any) -> tuple[Constraint, ...]:
    """``{field: "OP" | "OP:value"}`` or ``[[field, OP], [field, OP, value], ...]``; refusals name the
    field and say why (``CommandError``)."""
    if data is None:
        return ()
    if isinstance(data, Mapping):
        items: list[tuple[Any, Any, Any]] = []
        for key, text in data.items():
            if not isinstance(text, str):
                raise CommandError(f"constraints.{key}: expected \"OP\" or \"OP:value\", not {text!r}")
            op, sep, value = text.partition(":")
            items.append((key, op, value if sep else None))
    elif isinstance(data, list):
        items = []
        for entry in data:
            if not isinstance(entry, list | tuple) or len(entry) not in (2, 3):
                raise CommandError(f"constraints: each entry is [field, OP] or [field, OP, value], not {entry!r}")
            items.append((entry[0], entry[1], entry[2] if len(entry) == 3 else None))
    else:
        raise CommandError("constraints: expected a mapping {field: OP[:value]} or a list of [field, OP, value]")
    if len(items) > MAX_CONSTRAINTS:
        raise CommandError(f"constraints: at most {MAX_CONSTRAINTS}")
    return tuple(_constraint(*item) for item in items)


def _constraint(field: Any, op: Any, value: Any) -> Constraint:
    where = f"constraints.{field}"
    if not isinstance(field, str) or not _FIELD.fullmatch(field):
        raise CommandError(f"{where}: the field must be hostname or an attribute name ([A-Za-z0-9_.-]{{1,128}})")
    if not isinstance(op, str) or op.upper() not in OPERATORS:
        raise CommandError(f"{where}: unknown operator {op!r} (one of {', '.join(OPERATORS)})")
    op = op.upper()
    if value is not None and not isinstance(value, str | int):
        raise CommandError(f"{where}: the value must be a string, not {value!r}")
    value = None if value is None else str(value)
    if op == "UNIQUE" and value is not None:
        raise CommandError(f"{where}: UNIQUE takes no value")
    if op in ("CLUSTER", "LIKE", "UNLIKE") and not value:
        raise CommandError(f"{where}: {op} needs a value ({op}:value)")
    if op == "GROUP_BY" and value is not None and (not value.isdigit() or not 1 <= int(value) <= MAX_GROUPS):
        raise CommandError(f"{where}: GROUP_BY's value is the number of groups (1-{MAX_GROUPS}), not {value!r}")
    if op in ("LIKE", "UNLIKE"):
        if len(value or "") > MAX_PATTERN:
            raise CommandError(f"{where}: a regex of at most {MAX_PATTERN} characters")
        try:
            regex.compile(value or "")
        except regex.error as exc:
            raise CommandError(f"{where}: bad regex {value!r}: {exc}") from None
    return Constraint(field, op, value)


def field_value(field: str, hostname: str, attributes: Mapping[str, str]) -> str | None:
    """The value an agent has for ``field`` (None: it lacks the attribute)."""
    return hostname if field == "hostname" else attributes.get(field)


def violation(c: Constraint, value: str | None, placed: Sequence[str | None], known: Collection[str]) -> str | None:
    """Why an agent with ``value`` for ``c.field`` cannot take one more instance, given the values of the
    agents of the instances ``placed`` so far and every value ``known`` (recent offers); None: it can."""
    if c.operator == "UNLIKE":
        if value is None:
            return None
        matched = _matches(c.value or "", value)
        return None if matched is False else f"{c.field}={value} {'matches' if matched else 'took too long to match'}"
    if value is None:
        return f"no attribute {c.field}"
    if c.operator == "UNIQUE":
        return f"{c.field}={value} already runs an instance" if value in placed else None
    if c.operator == "CLUSTER":
        return None if value == c.value else f"{c.field}={value}, not {c.value}"
    if c.operator == "LIKE":
        matched = _matches(c.value or "", value)
        if matched:
            return None
        return f"{c.field}={value} {'does not match' if matched is False else 'took too long to match'}"
    counts = Counter(v for v in placed if v is not None)
    groups = set(known) | set(counts) | {value}
    least = 0 if len(groups) < int(c.value or 0) else min(counts.get(g, 0) for g in groups)
    mine = counts.get(value, 0)
    return None if mine <= least else f"group {c.field}={value} holds {mine}, another holds {least}"


def summary(c: Constraint, known: Collection[str], placed: Sequence[str | None], wanted: int) -> str:
    """The pending reason when every offer failed ``c``: what the operator would need to change."""
    seen = ", ".join(sorted(known)[:10]) or "none"
    if c.operator == "UNIQUE":
        distinct = len(set(known) | {v for v in placed if v is not None})
        noun = "agents" if c.field == "hostname" else f"values of {c.field}"
        return f"UNIQUE {c.field}: {distinct} {noun} for {wanted} instances"
    if c.operator == "CLUSTER":
        return f"CLUSTER {c.field}:{c.value}: no offered agent has {c.field}={c.value}"
    if c.operator == "LIKE":
        return f"LIKE {c.field}:{c.value}: no offered agent matches (seen: {seen})"
    if c.operator == "UNLIKE":
        return f"UNLIKE {c.field}:{c.value}: every offered agent matches (seen: {seen})"
    wanted_groups = f", {c.value} wanted" if c.value else ""
    return f"GROUP_BY {c.field}: waiting for an agent in a less used group (seen: {seen}{wanted_groups})"


@functools.lru_cache(maxsize=MATCH_CACHE)
def _matches(pattern: str, value: str) -> bool | None:
    """``value`` matches ``pattern`` in full; None when the match ran out of ``MATCH_TIMEOUT``."""
    try:
        return regex.fullmatch(pattern, value, timeout=MATCH_TIMEOUT) is not None
    except TimeoutError:
        return None

