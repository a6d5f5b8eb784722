"""Resources: scalars (cpus, mem, disk), ranges (ports) and sets (gpus), with number-like arithmetic.

``Resources`` is immutable and behaves like a number: ``a + b``, ``a - b`` (raises ``ResourceError``
rather than going negative), ``a <= b`` (fits inside), ``a.contains(b)``. Scalars are kept to three
decimals, as Mesos does, so repeated adding and subtracting of 0.1 CPU never drifts.

Bounds, so that no bundle read from the wire or from agent text can make later arithmetic slow or
non-finite (``from_wire`` and ``parse`` refuse anything outside them with ``ResourceError``):

- names: ``_NAME`` (a lower-case letter, then up to 63 of ``a-z 0-9 _ . -``), at most
  ``MAX_RESOURCE_NAMES`` = 64 names per kind (scalars, ranges, sets);
- a scalar is a finite number (not a boolean) in ``[0, MAX_SCALAR]``, ``MAX_SCALAR`` = 1e12: large
  enough for any machine in any unit we use (MB of memory or disk), small enough that three decimals
  stay exact in a float;
- a range resource is a list of at most ``MAX_RANGES`` = 1024 ``[begin, end]`` pairs (counted as
  sent, before merging) of integers (not booleans, not floats) with
  ``0 <= begin <= end <= MAX_RANGE_VALUE`` = 2**32 - 1: ports and any other 32-bit numbered thing
  fit, and a range's size stays exact in a float;
- a set resource is a list of at most ``MAX_SET_ITEMS`` = 1024 strings of 1 to
  ``MAX_SET_ITEM_CHARS`` = 128 characters each.

Constructing ``Resources(...)`` refuses non-finite or negative scalars, range bounds outside
``[0, MAX_RANGE_VALUE]`` and bad set items too; it does not apply the scalar and count caps, because
the allocator builds bundles that legitimately sum many agents. Range arithmetic is
O((n + m) log(n + m)) at worst (a sort when adding; one sweep when subtracting; binary search when
testing containment).
"""

from __future__ import annotations

import math
import re
import reprlib
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from broker_mesos.core.errors import ResourceError

Range = tuple[int, int]

MAX_SCALAR = 1e12
MAX_RANGE_VALUE = 2**32 - 1
MAX_RANGES = 1024
MAX_SET_ITEMS = 1024
MAX_SET_ITEM_CHARS = 128
MAX_RESOURCE_NAMES = 64

_SCALAR_PRECISION = 3
_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
_KINDS = ("scalars", "ranges", "sets")

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 60, 60


def brief(value: object, limit: int = 100) -> str:
    """A repr of wire data short enough for an error reason (never more than ``limit`` characters)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    """``have`` minus ``take``, both normalised: one sweep over the two, O(n + m)."""
    out: list[Range] = []
    j = 0
    for lo, hi in have:
        while j < len(take) and take[j][1] < lo:
            j += 1
        start = lo
        while j < len(take) and take[j][0] <= hi:
            tlo, thi = take[j]
            if tlo > start:
                out.append((start, tlo - 1))
            start = max(start, thi + 1)
            if thi > hi:
                break  # this piece of ``take`` reaches into the next range of ``have``
            j += 1
        if start <= hi:
            out.append((start, hi))
    return tuple(out)


def _ranges_contain(have: tuple[Range, ...], want: tuple[Range, ...]) -> bool:
    """Whether normalised ``have`` covers every range of ``want``: a binary search each, O(m log n)."""
    if not want:
        return True
    starts = [lo for lo, _ in have]
    for wlo, whi in want:
        at = bisect_right(starts, wlo) - 1
        if at < 0 or have[at][1] < whi:
            return False
    return True


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
            value = _round(_check_scalar(name, value))
            if value > 0:
                scalars[name] = value
        ranges = {}
        for name, value in self.ranges.items():
            _check_name(name)
            normal = _normalise_ranges(_check_range(name, pair) for pair in value)
            if normal:
                ranges[name] = normal
        sets = {}
        for name, value in self.sets.items():
            _check_name(name)
            items = frozenset(_check_set_item(name, v) for v in value)
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
        """Parse Mesos' agent syntax: ``cpus:4;mem:4096;ports:[31000-32000,33000-33010];gpus:{0,1}``, within
        the wire's bounds (an agent's bundle travels in REGISTER)."""
        scalars: dict[str, float] = {}
        ranges: dict[str, list[Range]] = {}
        sets: dict[str, list[str]] = {}
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
                sets.setdefault(name, []).extend(p.strip() for p in value[1:-1].split(",") if p.strip())
            else:
                try:
                    scalars[name] = scalars.get(name, 0.0) + float(value)
                except ValueError:
                    raise ResourceError(f"cannot parse {name!r} value {value!r} as a number") from None
        _check_caps(scalars, ranges, sets)
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
    def from_wire(cls, data: Any) -> Resources:
        """The inverse of ``to_wire``, strict: anything outside the module's bounds is a ``ResourceError``."""
        if not isinstance(data, dict):
            raise ResourceError("resources must be a map")
        for kind in data:
            if kind not in _KINDS:
                raise ResourceError(f"unknown resource kind {brief(kind)}")
        scalars, ranges, sets = (data.get(kind, {}) for kind in _KINDS)
        for kind, named in zip(_KINDS, (scalars, ranges, sets), strict=True):
            if not isinstance(named, dict):
                raise ResourceError(f"{kind} must be a map")
            if len(named) > MAX_RESOURCE_NAMES:
                raise ResourceError(f"more than {MAX_RESOURCE_NAMES} {kind} resources")
            for name, value in named.items():
                _check_name(name)
                if kind != "scalars" and not isinstance(value, list):
                    raise ResourceError(f"{kind} {name!r} must be a list, not {brief(value)}")
        _check_caps(scalars, ranges, sets)
        return cls(scalars, ranges, sets)

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
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ResourceError(f"bad resource name {brief(name)}")


def _check_scalar(name: str, value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ResourceError(f"resource {name!r} must be a number, not {brief(value)}")
    if not math.isfinite(value):
        raise ResourceError(f"resource {name!r} must be finite, not {value}")
    if value < 0:
        raise ResourceError(f"resource {name!r} is negative ({value})")
    return float(value)


def _check_range(name: str, pair: object) -> Range:
    if not isinstance(pair, list | tuple) or len(pair) != 2:
        raise ResourceError(f"range resource {name!r} must hold [begin, end] pairs, not {brief(pair)}")
    lo, hi = pair
    for bound in (lo, hi):
        if not isinstance(bound, int) or isinstance(bound, bool):
            raise ResourceError(f"range resource {name!r} bounds must be integers, not {brief(bound)}")
    if not 0 <= lo <= hi <= MAX_RANGE_VALUE:
        raise ResourceError(f"range {lo}-{hi} of {name!r} is empty or outside [0, {MAX_RANGE_VALUE}]")
    return lo, hi


def _check_set_item(name: str, item: object) -> str:
    if not isinstance(item, str) or not 0 < len(item) <= MAX_SET_ITEM_CHARS:
        raise ResourceError(f"set resource {name!r} items must be strings of 1-{MAX_SET_ITEM_CHARS} characters, "
                            f"not {brief(item)}")
    return item


def _check_caps(scalars: Mapping[str, Any], ranges: Mapping[str, Any], sets: Mapping[str, Any]) -> None:
    """The bounds a bundle from outside (wire or agent text) must keep besides its values'."""
    for kind, named in zip(_KINDS, (scalars, ranges, sets), strict=True):
        if len(named) > MAX_RESOURCE_NAMES:
            raise ResourceError(f"more than {MAX_RESOURCE_NAMES} {kind} resources")
    for name, value in scalars.items():
        if isinstance(value, int | float) and math.isfinite(value) and value > MAX_SCALAR:
            raise ResourceError(f"resource {brief(name)} = {value:g} is above {MAX_SCALAR:g}")
    for name, pairs in ranges.items():
        if len(pairs) > MAX_RANGES:
            raise ResourceError(f"range resource {brief(name)} has more than {MAX_RANGES} ranges")
    for name, items in sets.items():
        if len(items) > MAX_SET_ITEMS:
            raise ResourceError(f"set resource {brief(name)} has more than {MAX_SET_ITEMS} items")


def parse_attributes(text: str) -> dict[str, str]:
    """Parse ``rack:a;zone:1`` into ``{"rack": "a", "zone": "1"}``."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, value = part.partition(":")
        if not sep or not name.strip():
            raise ResourceError(f"cannot parse attribute {part!r}: expected name:value")
        out[name.strip()] = value.strip()
    return out
