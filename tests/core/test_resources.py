from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker_mesos.core.errors import ResourceError
from broker_mesos.core.resources import (
    MAX_RANGE_VALUE,
    MAX_RANGES,
    MAX_RESOURCE_NAMES,
    MAX_SCALAR,
    MAX_SET_ITEM_CHARS,
    MAX_SET_ITEMS,
    Resources,
    _normalise_ranges,
    _ranges_contain,
    _subtract_ranges,
    brief,
    parse_attributes,
)


def test_parse_mesos_syntax() -> None:
    r = Resources.parse("cpus:4;mem:4096;disk:10000;ports:[31000-32000,33000-33001];gpus:{0,1}")
    assert r.scalars == {"cpus": 4.0, "mem": 4096.0, "disk": 10000.0}
    assert r.ranges == {"ports": ((31000, 32000), (33000, 33001))}
    assert r.sets == {"gpus": frozenset({"0", "1"})}
    assert str(Resources.parse(str(r))) == str(r)


@pytest.mark.parametrize("text", ["cpus", "cpus:x", "ports:[5-1]", "CPU:1", "mem:-5", ":3"])
def test_parse_rejects_bad_text(text: str) -> None:
    with pytest.raises(ResourceError):
        Resources.parse(text)


def test_reference_flow_arithmetic() -> None:
    agent = Resources.of(cpus=4, mem=4096)
    used = Resources.of(cpus=2, mem=1024) + Resources.of(cpus=1, mem=2048)
    assert agent - used == Resources.of(cpus=1, mem=1024)


def test_subtract_never_goes_negative() -> None:
    with pytest.raises(ResourceError):
        Resources.of(cpus=1) - Resources.of(cpus=2)
    with pytest.raises(ResourceError):
        Resources.of(cpus=1) - Resources.of(mem=1)


def test_ranges_and_sets() -> None:
    have = Resources.parse("ports:[31000-31010];gpus:{a,b}")
    take = Resources.parse("ports:[31005-31005];gpus:{a}")
    left = have - take
    assert left.ranges["ports"] == ((31000, 31004), (31006, 31010))
    assert left.sets["gpus"] == frozenset({"b"})
    assert left + take == have
    assert not Resources.parse("ports:[30000-30000]") <= have


def test_tenths_do_not_drift() -> None:
    r = Resources.of(cpus=1)
    for _ in range(10):
        r = r - Resources.of(cpus=0.1)
    assert r == Resources()
    assert not r


def test_wire_round_trip_and_validation() -> None:
    r = Resources.parse("cpus:0.5;ports:[1-3];gpus:{x}")
    assert Resources.from_wire(r.to_wire()) == r
    with pytest.raises(ResourceError):
        Resources.from_wire({"scalar": {"cpus": 1}})
    with pytest.raises(ResourceError):
        Resources.from_wire({"scalars": {"cpus": "1"}})


def test_attributes() -> None:
    assert parse_attributes("rack:a; zone:1") == {"rack": "a", "zone": "1"}
    with pytest.raises(ResourceError):
        parse_attributes("rack")


scalar_bundles = st.builds(
    lambda c, m: Resources.of(cpus=c, mem=m),
    st.integers(0, 64_000).map(lambda x: x / 1000), st.integers(0, 10_000))


@given(scalar_bundles, scalar_bundles)
def test_add_then_subtract_is_identity(a: Resources, b: Resources) -> None:
    assert (a + b) - b == a
    assert b <= a + b


# -- strictness and bounds --------------------------------------------------------------------------


@pytest.mark.parametrize("ranges", [
    [[31000, math.inf]], [[-math.inf, 1]], [[1, math.nan]],  # +Infinity once crashed the master (int(inf))
    [[1.5, 3]], [[1, 2.0]], [[True, 3]],                        # floats and booleans are not truncated
    [[-1, 3]], [[0, MAX_RANGE_VALUE + 1]], [[5, 1]],            # out of range, or empty
    [[1, 2, 3]], [[1]], [1], [{"begin": 1, "end": 2}], [["1", "2"]],
])
def test_from_wire_refuses_bad_ranges(ranges: list[object]) -> None:
    with pytest.raises(ResourceError):
        Resources.from_wire({"ranges": {"ports": ranges}})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True, "1", None, [1], -0.5, MAX_SCALAR * 1.01])
def test_from_wire_refuses_bad_scalars(value: object) -> None:
    with pytest.raises(ResourceError):
        Resources.from_wire({"scalars": {"cpus": value}})


@pytest.mark.parametrize("items", [[1], [""], ["x" * (MAX_SET_ITEM_CHARS + 1)], "ab", {"a": 1}, [None]])
def test_from_wire_refuses_bad_sets(items: object) -> None:
    with pytest.raises(ResourceError):
        Resources.from_wire({"sets": {"gpus": items}})


@pytest.mark.parametrize("data", [
    [], {"scalars": []}, {b"scalars": {}}, {"scalars": {b"cpus": 1}}, {"scalars": {"CPU": 1}},
    {"scalars": {"cpus\n": 1}}, {"ranges": {"ports": ((1, 2),)}},
])
def test_from_wire_refuses_bad_shapes(data: object) -> None:
    with pytest.raises(ResourceError):
        Resources.from_wire(data)


def test_from_wire_accepts_the_bounds_themselves() -> None:
    r = Resources.from_wire({
        "scalars": {"mem": MAX_SCALAR, "cpus": 0},
        "ranges": {"ports": [[i * 2, i * 2] for i in range(MAX_RANGES - 1)] + [[MAX_RANGE_VALUE, MAX_RANGE_VALUE]]},
        "sets": {"gpus": [str(i) for i in range(MAX_SET_ITEMS - 1)] + ["x" * MAX_SET_ITEM_CHARS]},
    })
    assert r.scalars == {"mem": MAX_SCALAR}
    assert len(r.ranges["ports"]) == MAX_RANGES and len(r.sets["gpus"]) == MAX_SET_ITEMS
    names = {f"r{i}": 1 for i in range(MAX_RESOURCE_NAMES)}
    assert len(Resources.from_wire({"scalars": names}).scalars) == MAX_RESOURCE_NAMES


def test_from_wire_caps_counts() -> None:
    one_port = [[31000, 31000]]
    with pytest.raises(ResourceError, match="more than 1024 ranges"):  # counted as sent, before merging
        Resources.from_wire({"ranges": {"ports": one_port * (MAX_RANGES + 1)}})
    with pytest.raises(ResourceError, match="more than 1024 items"):
        Resources.from_wire({"sets": {"gpus": ["a"] * (MAX_SET_ITEMS + 1)}})
    for kind, value in (("scalars", 1), ("ranges", one_port), ("sets", ["a"])):
        with pytest.raises(ResourceError, match=f"more than 64 {kind}"):
            Resources.from_wire({kind: {f"r{i}": value for i in range(MAX_RESOURCE_NAMES + 1)}})


def test_reasons_quote_wire_data_briefly() -> None:
    for data in ({"sets": {"gpus": ["x" * 100_000]}}, {"x" * 100_000: {}}, {"ranges": {"ports": [["1" * 5000, 2]]}},
                 {"scalars": {"x" * 100_000: 1}}):
        with pytest.raises(ResourceError) as err:
            Resources.from_wire(data)
        assert len(str(err.value)) < 250
    assert len(brief(list(range(100_000)))) <= 100


@pytest.mark.parametrize("text", ["cpus:inf", "cpus:-inf", "cpus:nan", "mem:1e13", "cpus:1e308;cpus:1e308",
                                  "ports:[0-4294967296]", "gpus:{" + "x" * 129 + "}",
                                  "ports:[" + ",".join(str(i * 2) for i in range(MAX_RANGES + 1)) + "]"])
def test_parse_keeps_the_wire_bounds(text: str) -> None:
    with pytest.raises(ResourceError):
        Resources.parse(text)


@pytest.mark.parametrize("build", [
    lambda: Resources.of(cpus=math.inf), lambda: Resources.of(cpus=math.nan), lambda: Resources.of(cpus=True),
    lambda: Resources(ranges={"ports": ((0, MAX_RANGE_VALUE + 1),)}), lambda: Resources(ranges={"ports": ((1.5, 2),)}),
    lambda: Resources(ranges={"ports": ((1, 2, 3),)}), lambda: Resources(sets={"gpus": frozenset({""})}),
    lambda: Resources(sets={"gpus": frozenset({1})}),
])
def test_construction_refuses_non_finite_and_out_of_range(build: Callable[[], Resources]) -> None:
    with pytest.raises(ResourceError):
        build()


# -- range arithmetic: correct (against a set-of-ints model) and never quadratic ----------------------

small_ranges = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 8)).map(lambda p: (p[0], p[0] + p[1])),
                        max_size=6)


def _ports(ranges: list[tuple[int, int]]) -> set[int]:
    return {port for lo, hi in ranges for port in range(lo, hi + 1)}


def _is_normal(ranges: tuple[tuple[int, int], ...]) -> bool:
    return all(lo <= hi for lo, hi in ranges) and all(a[1] + 1 < b[0] for a, b in itertools.pairwise(ranges))


@given(small_ranges, small_ranges)
def test_range_arithmetic_matches_sets_of_ints(a_list: list[tuple[int, int]], b_list: list[tuple[int, int]]) -> None:
    a, b = Resources(ranges={"ports": a_list}), Resources(ranges={"ports": b_list})
    model_a, model_b = _ports(a_list), _ports(b_list)
    total = (a + b).ranges.get("ports", ())
    assert _ports(list(total)) == model_a | model_b and _is_normal(total)
    assert (b <= a) == (model_b <= model_a)
    if model_b <= model_a:
        left = (a - b).ranges.get("ports", ())
        assert _ports(list(left)) == model_a - model_b and _is_normal(left)
    else:
        with pytest.raises(ResourceError):
            a - b
    norm_a, norm_b = _normalise_ranges(a_list), _normalise_ranges(b_list)
    difference = _subtract_ranges(norm_a, norm_b)  # also when b is not inside a
    assert _ports(list(difference)) == model_a - model_b and _is_normal(difference)
    assert _ranges_contain(norm_a, norm_b) == (model_b <= model_a)


class _Counted(int):
    """An int that counts how often it is compared: a machine-independent measure of work."""

    comparisons = 0

    def _count(self, other: object, op: Callable[[int, int], bool]) -> bool:
        _Counted.comparisons += 1
        return op(int(self), int(other))  # type: ignore[call-overload]

    def __lt__(self, other: object) -> bool:
        return self._count(other, int.__lt__)

    def __le__(self, other: object) -> bool:
        return self._count(other, int.__le__)

    def __gt__(self, other: object) -> bool:
        return self._count(other, int.__gt__)

    def __ge__(self, other: object) -> bool:
        return self._count(other, int.__ge__)


def _fragmented(n: int, offset: int) -> tuple[tuple[int, int], ...]:
    return tuple((_Counted(4 * i + offset), _Counted(4 * i + offset + 1)) for i in range(n))


def test_range_subtract_and_contain_are_not_quadratic() -> None:
    """1024 fragmented ranges against 1024: about (n + m) log(n + m) comparisons, not n * m (a REGISTER
    with 500,000 one-port ranges once wedged a core for 45 s)."""
    n = MAX_RANGES
    have, take, elsewhere = _fragmented(n, 0), _fragmented(n, 1), _fragmented(n, 2)
    budget = 4 * (2 * n) * math.ceil(math.log2(2 * n))
    _Counted.comparisons = 0
    left = _subtract_ranges(have, take)
    assert len(left) == n and all(lo == hi for lo, hi in left)
    assert _Counted.comparisons < budget, _Counted.comparisons
    _Counted.comparisons = 0
    assert _ranges_contain(have, _fragmented(n, 0)) and not _ranges_contain(have, elsewhere)
    assert _Counted.comparisons < budget, _Counted.comparisons
    _Counted.comparisons = 0
    assert _normalise_ranges(have + elsewhere) == ((0, 4 * n - 1),)  # 4i..4i+1 and 4i+2..4i+3 all merge
    assert _Counted.comparisons < 4 * budget, _Counted.comparisons
