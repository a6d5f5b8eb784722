from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker_mesos.core.errors import ResourceError
from broker_mesos.core.resources import Resources, parse_attributes


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
