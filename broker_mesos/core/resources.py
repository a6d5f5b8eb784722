"""Resources: scalars (cpus, mem, disk), ranges (ports) and sets (gpus), with number-like arithmetic.

``Resources`` is immutable and behaves like a number: ``a + b``, ``a - b`` (raises ``ResourceError``
rather than going negative), ``a <= b`` (fits inside), ``a.contains(b)``. Scalars are kept to three
decimals, as Mesos does, so repeated adding and subtracting of 0.1 CPU never drifts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from broker_mesos.core.errors import ResourceError

Range = tuple[int, int]

_SCALAR_PRECISION = 3
_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


def _round(value: float) -> float:
    return round(value, _SCALAR_PRECISION)


def _normalise_ranges(ranges: Iterable[Range]) -> tuple[Range, ...]:
    """Sort and merge overlapping or adjacent ranges: ``[(1, 3), (4, 5)]`` -> ``((1, 5),)``."""
    merged: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if lo > hi:
            raise ResourceError(f"range {lo}-{hi} is empty")
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return tuple((lo, hi) for lo, hi in merged)


def _subtract_ranges(have: tuple[Range, ...], take: tuple[Range, ...]) -> tuple[Range, ...]:
    out: list[Range] = []
    for lo, hi in have:
        pieces = [(lo, hi)]
        for tlo, thi in take:
            next_pieces: list[Range] = []
            for plo, phi in pieces:
                if thi < plo or tlo > phi:
                    next_pieces.append((plo, phi))
                    continue
                if plo < tlo:
                    next_pieces.append((plo, tlo - 1))
                if thi < phi:
                    next_pieces.append((thi + 1, phi))
            pieces = next_pieces
        out.extend(pieces)
    return _normalise_ranges(out)


def _ranges_contain(have: tuple[Range, ...], want: tuple[Range, ...]) -> bool:
    return all(any(lo <= wlo and whi <= hi for lo, hi in have) for wlo, whi in want)


def _range_size(ranges: tuple[Range, ...]) -> int:
    return sum(hi - lo + 1 for lo, hi in ranges)


@dataclass(frozen=True, slots=True)
class Resources:
    """A bundle of named resources. Empty kinds are dropped, so equal bundles compare equal."""

    scalars: Mapping[str, float] = field(default_factory=dict)
    ranges: Mapping[str, tuple[Range, ...]] = field(default_factory=dict)
    sets: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        scalars = {}
        for name, value in self.scalars.items():
            _check_name(name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
                raise ResourceError(f"resource {name!r} must be a number, not {value!r}")
            if value < 0:
                raise ResourceError(f"resource {name!r} is negative ({value})")
            value = _round(float(value))
            if value > 0:
                scalars[name] = value
        ranges = {}
        for name, value in self.ranges.items():
            _check_name(name)
            normal = _normalise_ranges((int(lo), int(hi)) for lo, hi in value)
            if normal:
                ranges[name] = normal
        sets = {}
        for name, value in self.sets.items():
            _check_name(name)
            items = frozenset(str(v) for v in value)
            if items:
                sets[name] = items
        object.__setattr__(self, "scalars", scalars)
        object.__setattr__(self, "ranges", ranges)
        object.__setattr__(self, "sets", sets)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def of(cls, **scalars: float) -> Resources:
        """``Resources.of(cpus=2, mem=1024)``: the common scalar-only case."""
        return cls(scalars=scalars)

    @classmethod
    def parse(cls, text: str) -> Resources:
        """Parse Mesos' agent syntax: ``cpus:4;mem:4096;ports:[31000-32000,33000-33010];gpus:{0,1}``."""
        scalars: dict[str, float] = {}
        ranges: dict[str, list[Range]] = {}
        sets: dict[str, set[str]] = {}
        for part in filter(None, (p.strip() for p in text.split(";"))):
            name, sep, value = part.partition(":")
            name, value = name.strip(), value.strip()
            if not sep or not name or not value:
                raise ResourceError(f"cannot parse resource {part!r}: expected name:value")
            if value.startswith("[") and value.endswith("]"):
                for piece in filter(None, (p.strip() for p in value[1:-1].split(","))):
                    lo, dash, hi = piece.partition("-")
                    try:
                        bounds = (int(lo), int(hi if dash else lo))
                    except ValueError:
                        raise ResourceError(f"cannot parse range {piece!r} of {name!r}") from None
                    ranges.setdefault(name, []).append(bounds)
            elif value.startswith("{") and value.endswith("}"):
                items = {p.strip() for p in value[1:-1].split(",") if p.strip()}
                sets.setdefault(name, set()).update(items)
            else:
                try:
                    scalars[name] = scalars.get(name, 0.0) + float(value)
                except ValueError:
                    raise ResourceError(f"cannot parse {name!r} value {value!r} as a number") from None
        return cls(scalars, {k: tuple(v) for k, v in ranges.items()}, {k: frozenset(v) for k, v in sets.items()})

    # -- wire form ----------------------------------------------------------------------------
    def to_wire(self) -> dict[str, Any]:
        """The msgpack form documented in docs/protocol.md; kinds that are empty are left out."""
        out: dict[str, Any] = {}
        if self.scalars:
            out["scalars"] = dict(self.scalars)
        if self.ranges:
            out["ranges"] = {k: [list(r) for r in v] for k, v in self.ranges.items()}
        if self.sets:
            out["sets"] = {k: sorted(v) for k, v in self.sets.items()}
        return out

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Resources:
        unknown = set(data) - {"scalars", "ranges", "sets"}
        if unknown:
            raise ResourceError(f"unknown resource kinds {sorted(unknown)}")
        scalars = data.get("scalars", {})
        ranges = data.get("ranges", {})
        sets = data.get("sets", {})
        if not all(isinstance(x, dict) for x in (scalars, ranges, sets)):
            raise ResourceError("scalars, ranges and sets must be maps")
        try:
            parsed_ranges = {k: tuple((int(lo), int(hi)) for lo, hi in v) for k, v in ranges.items()}
        except (TypeError, ValueError):
            raise ResourceError("ranges must be lists of [begin, end] integer pairs") from None
        for name, value in sets.items():
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ResourceError(f"set resource {name!r} must be a list of strings")
        return cls(scalars, parsed_ranges, {k: frozenset(v) for k, v in sets.items()})

    # -- arithmetic ---------------------------------------------------------------------------
    @classmethod
    def _trusted(cls, scalars: dict[str, float], ranges: Mapping[str, tuple[Range, ...]],
                 sets: Mapping[str, frozenset[str]]) -> Resources:
        """Build from parts already validated and normalised (the hot path of +, -)."""
        obj = object.__new__(cls)
        object.__setattr__(obj, "scalars", {k: v for k, v in scalars.items() if v > 0})
        object.__setattr__(obj, "ranges", {k: v for k, v in ranges.items() if v} if ranges else {})
        object.__setattr__(obj, "sets", {k: v for k, v in sets.items() if v} if sets else {})
        return obj

    def __add__(self, other: Resources) -> Resources:
        scalars = dict(self.scalars)
        for name, value in other.scalars.items():
            scalars[name] = _round(scalars.get(name, 0.0) + value)
        ranges: Mapping[str, tuple[Range, ...]] = self.ranges
        if other.ranges:
            ranges = dict(self.ranges)
            for name, value in other.ranges.items():
                ranges[name] = _normalise_ranges(ranges.get(name, ()) + tuple(value))
        sets: Mapping[str, frozenset[str]] = self.sets
        if other.sets:
            sets = dict(self.sets)
            for name, value in other.sets.items():
                sets[name] = sets.get(name, frozenset()) | value
        return Resources._trusted(scalars, ranges, sets)

    def __sub__(self, other: Resources) -> Resources:
        if not other <= self:
            raise ResourceError(f"cannot subtract {other} from {self}")
        scalars = dict(self.scalars)
        for name, value in other.scalars.items():
            scalars[name] = _round(scalars[name] - value)
        ranges: Mapping[str, tuple[Range, ...]] = self.ranges
        if other.ranges:
            ranges = dict(self.ranges)
            for name, value in other.ranges.items():
                ranges[name] = _subtract_ranges(ranges[name], tuple(value))
        sets: Mapping[str, frozenset[str]] = self.sets
        if other.sets:
            sets = dict(self.sets)
            for name, value in other.sets.items():
                sets[name] = sets[name] - value
        return Resources._trusted(scalars, ranges, sets)

    def __le__(self, other: Resources) -> bool:
        """True when every resource in ``self`` is available in ``other`` (self fits in other)."""
        for name, value in self.scalars.items():
            if value > other.scalars.get(name, 0.0) + 1e-9:
                return False
        for name, value in self.ranges.items():
            if not _ranges_contain(tuple(other.ranges.get(name, ())), tuple(value)):
                return False
        return all(value <= other.sets.get(name, frozenset()) for name, value in self.sets.items())

    def contains(self, other: Resources) -> bool:
        return other <= self

    def __bool__(self) -> bool:
        return bool(self.scalars or self.ranges or self.sets)

    def __hash__(self) -> int:
        return hash((tuple(sorted(self.scalars.items())), tuple(sorted(self.ranges.items())),
                     tuple(sorted((k, tuple(sorted(v))) for k, v in self.sets.items()))))

    def scalar(self, name: str) -> float:
        return self.scalars.get(name, 0.0)

    def quantity(self) -> Resources:
        """The same amounts as scalars only (ports as a count): what a framework or role *holds*.

        Holdings sum resources of many agents; unioning their port ranges would collapse two agents'
        31000-32000 into one, so they are booked as amounts, as Mesos' sorters do.
        """
        if not self.ranges and not self.sets:
            return self
        return Resources._trusted(self.quantities(), {}, {})

    def quantities(self) -> dict[str, float]:
        """Every resource as one number (ranges and sets by size): what shares are computed from."""
        out = dict(self.scalars)
        for name, value in self.ranges.items():
            out[name] = float(_range_size(tuple(value)))
        for name, value in self.sets.items():
            out[name] = float(len(value))
        return out

    def __str__(self) -> str:
        parts = [f"{k}:{v:g}" for k, v in sorted(self.scalars.items())]
        parts += [f"{k}:[{','.join(f'{lo}-{hi}' for lo, hi in v)}]" for k, v in sorted(self.ranges.items())]
        parts += [f"{k}:{{{','.join(sorted(v))}}}" for k, v in sorted(self.sets.items())]
        return ";".join(parts) or "(none)"


EMPTY = Resources()


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ResourceError(f"bad resource name {name!r}")


def parse_attributes(text: str) -> dict[str, str]:
    """Parse ``rack:a;zone:1`` into ``{"rack": "a", "zone": "1"}``."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, value = part.partition(":")
        if not sep or not name.strip():
            raise ResourceError(f"cannot parse attribute {part!r}: expected name:value")
        out[name.strip()] = value.strip()
    return out
