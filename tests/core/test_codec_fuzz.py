"""No bytes can make ``codec.decode`` do anything but return a validated envelope or raise ``ProtocolError``.

Four angles: arbitrary bytes (and byte edits of a valid envelope); arbitrary msgpack values, alone and
as envelope bodies; every registered message in a valid form with one value replaced at a random place;
and NaN / +inf / -inf at every numeric place of every message. Whatever does decode must be finite,
re-encode to the same message, and keep ``Resources`` arithmetic finite.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker_mesos.core import codec, protocol  # (importing protocol registers the message types)
from broker_mesos.core.errors import ProtocolError
from broker_mesos.core.resources import _NAME, Resources

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TYPES = sorted(codec.registered_types())
Path = tuple[str | int, ...]


# -- a valid wire form of every message, built from the dataclass fields ------------------------


def _valid(tp: Any, meta: Any) -> Any:
    """A valid wire value for a field of type ``tp``: every optional field present, every list and map
    holding one item, so every place a value can go is reachable."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _valid(inner, meta)
    if tp is str:
        return "web" if meta.get("role") else "x1" if meta.get("id") else "text"
    if tp is bool:
        return True
    if tp is bytes:
        return b"\x00\xffdata"
    if tp in (int, float):
        lo, hi = meta.get("min"), meta.get("max")
        value = (lo + hi) / 2 if lo is not None and hi is not None else (lo or 0) + 1.5
        return int(value) if tp is int else value
    if tp is Resources:
        return {"scalars": {"cpus": 1.5, "mem": 512}, "ranges": {"ports": [[1, 3], [7, 9]]},
                "sets": {"gpus": ["a", "b"]}}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return next(iter(tp)).value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        out = {f.name: _valid(hints[f.name], f.metadata) for f in dataclasses.fields(tp)}
        if tp is protocol.HealthCheck:  # a path is "/" then printable ASCII (HealthCheck.__post_init__)
            out["path"] = "/healthz"
        return out
    if origin in (list, tuple):
        return [_valid(typing.get_args(tp)[0], meta)]
    if origin is dict:
        return {"k": _valid(typing.get_args(tp)[1], {})}
    if tp is Any:
        return {"n": 2.5, "l": [1, "s", None, True]}
    raise AssertionError(f"no valid value for {tp!r}")


def _envelope(type_name: str) -> dict[str, Any]:
    body = _valid(codec.registered_types()[type_name], {})
    return {"v": 1, "type": type_name, "id": "m1", "ts": 1.5, "body": body}


def _paths(value: Any, here: Path = ()) -> list[Path]:
    """Every place inside ``value`` (the root excluded) where another value could be put."""
    out: list[Path] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        out.append((*here, key))
        out.extend(_paths(child, (*here, key)))
    return out


def _replace(value: Any, path: Path, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(value[head], rest, new)  # type: ignore[index]
    return copy


def _delete(value: Any, path: Path) -> Any:
    head, rest = path[0], path[1:]
    if not rest:
        return {k: v for k, v in value.items() if k != head} if isinstance(value, dict) else \
            [v for i, v in enumerate(value) if i != head]
    return _replace(value, (head,), _delete(value[head], rest))


@pytest.mark.parametrize("type_name", TYPES)
def test_the_valid_forms_decode(type_name: str) -> None:
    env = _envelope(type_name)
    decoded = codec.decode(msgpack.packb(env, use_bin_type=True))
    assert codec.to_wire(decoded.body) == env["body"]


# -- what must hold of anything decode returns ----------------------------------------------------


def _sound(value: Any, meta: Any = None) -> None:
    """Every number reachable from a decoded body is finite, Resources arithmetic on it stays so, and
    every identifier, role name and resource name matches its pattern in full."""
    meta = meta or {}
    if isinstance(value, float):
        assert math.isfinite(value)
    elif isinstance(value, Resources):
        doubled = value + value
        assert value <= doubled and (doubled - value) + value == doubled and not value - value
        assert all(math.isfinite(v) for v in doubled.quantities().values())
        assert all(_NAME.fullmatch(name) for name in value.quantities())
    elif isinstance(value, str) and not isinstance(value, enum.Enum):
        if meta.get("id"):
            assert codec.ID_PATTERN.fullmatch(value) or (meta.get("empty_ok") and value == ""), value
        if meta.get("role"):
            assert codec.ROLE_PATTERN.fullmatch(value), value
    elif dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            _sound(getattr(value, f.name), f.metadata)
    elif isinstance(value, dict):
        for item in value.values():
            _sound(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _sound(item, meta)


def _decodes_or_refuses(raw: bytes) -> None:
    try:
        env = codec.decode(raw)
    except ProtocolError as exc:
        assert isinstance(exc.reason, str) and len(exc.reason) <= 400, exc.reason[:500]
        return
    assert isinstance(env, codec.Envelope)
    assert math.isfinite(env.ts)
    _sound(env.body)
    again = codec.decode(codec.encode(env.body, env.ts, env.id))
    assert again == env


# -- (a) arbitrary bytes ----------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes(raw: bytes) -> None:
    _decodes_or_refuses(raw)


@FUZZ
@given(st.sampled_from(TYPES), st.data())
def test_byte_edits_of_a_valid_envelope(type_name: str, data: st.DataObject) -> None:
    raw = bytearray(msgpack.packb(_envelope(type_name), use_bin_type=True))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    _decodes_or_refuses(bytes(raw[: data.draw(st.integers(0, len(raw)))] if data.draw(st.booleans())
                              else raw))


# -- (b) arbitrary msgpack values -------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(-(2**63), 2**64 - 1), st.sampled_from([0, 1, -1, 2**32 - 1, 2**32, 2**63 - 1, 2**64 - 1]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf, 1e308]),
    st.text(max_size=20),
    st.sampled_from(["", "*", ".x", "-x", "x1", "x1\n", "*\n", "TASK_RUNNING", "cpus", "ports", "a" * 200]),
    st.binary(max_size=10),
)
keys = st.one_of(st.text(max_size=10), st.binary(max_size=4),
                 st.sampled_from(["scalars", "ranges", "sets", "cpus", "ports", "framework_id", "v", "body"]))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=20,
)


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


@FUZZ
@given(values)
def test_arbitrary_msgpack_values(value: Any) -> None:
    _decodes_or_refuses(_pack(value))


@FUZZ
@given(st.sampled_from(TYPES), values)
def test_arbitrary_bodies(type_name: str, body: Any) -> None:
    _decodes_or_refuses(_pack({"v": 1, "type": type_name, "id": "m1", "ts": 1.0, "body": body}))


@FUZZ
@given(st.sampled_from(TYPES), st.dictionaries(keys, values, max_size=4), st.data())
def test_bodies_with_the_right_field_names(type_name: str, extra: dict[Any, Any], data: st.DataObject) -> None:
    names = [f.name for f in dataclasses.fields(codec.registered_types()[type_name])]
    chosen = data.draw(st.lists(st.sampled_from(names), unique=True)) if names else []
    body = {name: data.draw(values) for name in chosen}
    if data.draw(st.booleans()):
        body.update(extra)
    _decodes_or_refuses(_pack({"v": 1, "type": type_name, "id": "m1", "ts": 1.0, "body": body}))


# -- (c) a valid message with one place replaced or removed --------------------------------------


@FUZZ
@given(st.sampled_from(TYPES), values, st.booleans(), st.data())
def test_one_value_replaced(type_name: str, new: Any, delete: bool, data: st.DataObject) -> None:
    env = _envelope(type_name)
    path = data.draw(st.sampled_from(_paths(env)))
    _decodes_or_refuses(_pack(_delete(env, path) if delete else _replace(env, path, new)))


@FUZZ
@given(st.sampled_from(TYPES), st.binary(min_size=1, max_size=4), values, st.data())
def test_bytes_key_added_to_any_map(type_name: str, key: bytes, new: Any, data: st.DataObject) -> None:
    env = _envelope(type_name)
    maps = [p for p in [(), *_paths(env)] if isinstance(_get(env, p), dict)]
    path = data.draw(st.sampled_from(maps))
    _decodes_or_refuses(_pack(_replace(env, path, {**_get(env, path), key: new})))


def _get(value: Any, path: Path) -> Any:
    for key in path:
        value = value[key]
    return value


# -- (d) NaN and infinities at every numeric place -------------------------------------------------


def _numeric_paths(type_name: str) -> list[Path]:
    env = _envelope(type_name)
    return [p for p in _paths(env)
            if isinstance(_get(env, p), int | float) and not isinstance(_get(env, p), bool)]


NUMERIC = [(t, p) for t in TYPES for p in _numeric_paths(t)]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(("type_name", "path"), NUMERIC, ids=[f"{t}:{'.'.join(map(str, p))}" for t, p in NUMERIC])
def test_non_finite_numbers_are_refused(type_name: str, path: Path, bad: float) -> None:
    raw = _pack(_replace(_envelope(type_name), path, bad))
    with pytest.raises(ProtocolError):
        codec.decode(raw)


def test_every_numeric_place_is_covered() -> None:
    """The walk reaches Resources scalars and range bounds, and the float fields of nested records."""
    places = {(t, p[-2] if isinstance(p[-1], int) else p[-1]) for t, p in NUMERIC}
    assert ("ACCEPT", "cpus") in places and ("REGISTER", "heartbeat_interval") in places
    assert any(t == "ACCEPT" and "ports" in p for t, p in NUMERIC)
    assert ("STATUS", "exit_code") in places and ("STATUS", "timestamp") in places
    assert all((t, "ts") in places for t in TYPES)
