from __future__ import annotations

import functools
import math

import msgpack
import pytest

from broker_mesos.core import codec, protocol
from broker_mesos.core.allocation.roles import check_role_name
from broker_mesos.core.codec import MAX_STRING, MAX_TIMESTAMP
from broker_mesos.core.errors import PolicyError, ProtocolError
from broker_mesos.core.resources import MAX_RANGES, Resources


def _task(task_id: str = "t1") -> protocol.TaskInfo:
    return protocol.TaskInfo(task_id, "agent-1", Resources.parse("cpus:2;mem:1024;ports:[31000-31000]"),
                             protocol.CommandInfo("echo hi", environment={"A": "1"}), name="demo")


def test_round_trip_every_field() -> None:
    accept = protocol.Accept("fw1", ["o1", "o2"], [_task("a"), _task("b")], refuse_seconds=2.5)
    envelope = codec.decode(codec.encode(accept, 123.5, "m1"))
    assert envelope == codec.Envelope("ACCEPT", "m1", 123.5, accept)


def _raw(type_name: str, body: object, **envelope: object) -> bytes:
    env = {"v": 1, "type": type_name, "id": "x", "ts": 1.0, "body": body, **envelope}
    return msgpack.packb(env)


@pytest.mark.parametrize(("raw", "reason"), [
    (b"\xc1garbage", "not a msgpack"),
    (msgpack.packb([1, 2]), "envelope must be a map"),
    (_raw("NOPE", {}), "unknown message type"),
    (_raw("REVIVE", {}), "missing field 'framework_id'"),
    (_raw("REVIVE", {"framework_id": "fw", "extra": 1}), "unknown fields ['extra']"),
    (_raw("REVIVE", {"framework_id": 7}), "must be a string"),
    (_raw("REVIVE", {"framework_id": "no.dots"}), "not an identifier"),
    (_raw("DECLINE", {"framework_id": "fw", "refuse_seconds": -1}), "outside"),
    (_raw("DECLINE", {"framework_id": "fw", "offer_ids": "o1"}), "must be a list"),
    (_raw("ACCEPT", {"framework_id": "fw", "tasks": [{"task_id": "t", "agent_id": "a",
                                                      "resources": {"scalars": {"cpus": -1}}}]}), "negative"),
    (_raw("STATUS", {"updates": [{"task_id": "t", "framework_id": "f", "agent_id": "a", "state": "TASK_BOGUS",
                                  "uuid": "u", "timestamp": 1.0}]}), "must be one of"),
    (_raw("REVIVE", {"framework_id": "fw"}, v=2), "unsupported protocol version"),
    (_raw("REVIVE", {"framework_id": "fw"}, extra=1), "unknown fields"),
])
def test_bad_messages_say_why(raw: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as err:
        codec.decode(raw)
    assert reason in err.value.reason


def test_size_limit() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        codec.decode(b"\x00" * (codec.MAX_MESSAGE_BYTES + 1))


def test_defaults_fill_in() -> None:
    envelope = codec.decode(_raw("DECLINE", {"framework_id": "fw"}))
    assert envelope.body == protocol.Decline("fw", [], protocol.DEFAULT_REFUSE_SECONDS)


def test_every_registered_type_round_trips_with_defaults() -> None:
    for name, cls in codec.registered_types().items():
        try:
            body = cls()
        except TypeError:
            continue  # has required fields; covered by the explicit tests above
        assert codec.decode(codec.encode(body, 1.0)).type == name


# -- no message can stop, wedge or mislead a consumer -----------------------------------------------


def _status(agent_id: str) -> dict[str, object]:
    return {"task_id": "t", "framework_id": "f", "agent_id": agent_id, "state": "TASK_LOST", "uuid": "u",
            "timestamp": 1.0}


def _accept_with_resources(resources: object) -> bytes:
    return _raw("ACCEPT", {"framework_id": "fw", "tasks": [{"task_id": "t", "agent_id": "a", "resources": resources}]})


@pytest.mark.parametrize(("raw", "reason"), [
    # a port range ending at +Infinity (valid msgpack) once raised OverflowError out of the decoder
    (_accept_with_resources({"ranges": {"ports": [[31000, math.inf]]}}), "integers"),
    (_accept_with_resources({"ranges": {"ports": [[31000, 31000.5]]}}), "integers"),
    (_accept_with_resources({"scalars": {"cpus": math.inf}}), "finite"),
    (_accept_with_resources({"ranges": {"ports": [[1, 1]] * (MAX_RANGES + 1)}}), "more than 1024 ranges"),
    (_raw("REVIVE", {"framework_id": "fw", b"framework_id": "fw"}), "keys must be strings"),
    (msgpack.packb({"v": 1, "type": "REVIVE", "id": "x", "ts": 1.0, "body": {"framework_id": "fw"}, b"v": 1}),
     "keys must be strings"),
    (_raw("EVENT", {"kind": "k", "detail": {"x": b"raw"}}), "must be null, a boolean"),
    (_raw("EVENT", {"kind": "k", "detail": {"x": math.nan}}), "finite"),
    (_raw("EVENT", {"kind": "k", "detail": {"x": functools.reduce(lambda v, _: [v], range(20), 1)}}), "nested"),
    (_raw("EVENT", {"kind": "k", "detail": {"x" * (MAX_STRING + 1): 1}}), "key longer"),
    (_raw("DECLINE", {"framework_id": "fw", "offer_ids": msgpack.ExtType(1, b"o1")}), "must be a list"),
    (_raw("REVIVE", {"framework_id": "fw"}, ts=-1.0), "envelope ts"),
    (_raw("REVIVE", {"framework_id": "fw"}, ts=MAX_TIMESTAMP * 2), "envelope ts"),
    (_raw("REVIVE", {"framework_id": "fw"}, v=True), "unsupported protocol version"),
])
def test_hostile_messages_are_refused(raw: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as err:
        codec.decode(raw)
    assert reason in err.value.reason


@pytest.mark.parametrize("raw", [
    _raw("x" * 1_000_000, {}),
    _raw("REVIVE", {"framework_id": "fw", **{f"extra{i}": i for i in range(10_000)}}),
    _raw("REVIVE", {"framework_id": "é" * 60_000}),
    _raw("REVIVE", {"framework_id": "fw"}, v=["x" * 100_000]),
    _raw("SET_ALLOCATOR", {"policy": "drf", "params": {"k" * 60_000: 1}}),
    _accept_with_resources({"sets": {"gpus": ["x" * 60_000]}}),
])
def test_reasons_stay_short(raw: bytes) -> None:
    with pytest.raises(ProtocolError) as err:
        codec.decode(raw)
    assert len(err.value.reason) < 300, err.value.reason[:400]


def test_a_decoder_bug_is_still_a_protocol_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(data: object, where: str) -> object:
        raise ZeroDivisionError("a bug")

    monkeypatch.setitem(codec._DECODERS, protocol.Revive, broken)
    with pytest.raises(ProtocolError, match="ZeroDivisionError"):
        codec.decode(_raw("REVIVE", {"framework_id": "fw"}))


@pytest.mark.parametrize("role", ["*", "web", "web.prod", "_x", "a" * 128, "A-b_c.9"])
def test_role_names_are_checked_alike_everywhere(role: str) -> None:
    assert codec.decode(_raw("SUBSCRIBE", {"framework_id": "fw", "role": role})).body.role == role
    assert codec.decode(_raw("SET_ROLE", {"role": role})).body.role == role
    assert codec.decode(_raw("ROLES", {"roles": [{"role": role}]})).body.roles[0].role == role
    check_role_name(role)


@pytest.mark.parametrize("role", ["", ".hidden", "-x", "a" * 129, "a b", "a/b", "**", "é", "web\n", "*\n"])
def test_bad_role_names_are_refused_everywhere(role: str) -> None:
    for raw in (_raw("SUBSCRIBE", {"framework_id": "fw", "role": role}), _raw("SET_ROLE", {"role": role}),
                _raw("ROLES", {"roles": [{"role": role}]})):
        with pytest.raises(ProtocolError, match="not a role name"):
            codec.decode(raw)
    with pytest.raises(PolicyError):
        check_role_name(role)


def test_only_a_status_may_name_no_agent_and_ids_are_whole() -> None:
    (update,) = codec.decode(_raw("STATUS", {"updates": [_status("")]})).body.updates
    assert update.agent_id == ""
    refused = [
        _raw("STATUS", {"updates": [{**_status(""), "task_id": ""}]}),
        _raw("STATUS", {"updates": [{**_status("a"), "framework_id": ""}]}),
        _raw("RUN_TASKS", {"framework_id": "fw", "tasks": [{"task_id": "t", "agent_id": ""}]}),
        _raw("OFFERS", {"offers": [{"offer_id": "o", "framework_id": "f", "agent_id": ""}]}),
        _raw("REGISTER", {"agent_id": ""}),
        _raw("KILL", {"framework_id": "fw", "task_ids": [""]}),
        _raw("REVIVE", {"framework_id": "fw\n"}),  # ``$`` would let a trailing newline into a routing key
        _raw("STATUS", {"updates": [_status("a1\n")]}),
    ]
    for raw in refused:
        with pytest.raises(ProtocolError, match="not an identifier"):
            codec.decode(raw)


def test_free_form_values_that_are_json_like_pass() -> None:
    detail = {"n": 1, "f": 2.5, "s": "x", "l": [None, True, {"k": [1]}], "m": {}}
    assert codec.decode(_raw("EVENT", {"kind": "k", "detail": detail})).body.detail == detail


def test_a_map_with_a_key_twice_is_refused() -> None:
    """msgpack keeps the last value, other decoders the first: the two would read different messages."""
    env = {"v": 1, "type": "REVIVE", "id": "x1", "ts": 1.0, "body": {"framework_id": "fw"}}
    items = b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in env.items())
    raw = bytes([0x80 | 6]) + msgpack.packb("type") + msgpack.packb("TEARDOWN") + items
    with pytest.raises(ProtocolError, match="same key twice"):
        codec.decode(raw)
    body_dup = msgpack.packb({**env, "body": {}})[:-1] + b"\x82" + b"".join(
        msgpack.packb(x) for x in ("framework_id", "fw", "framework_id", "other"))
    with pytest.raises(ProtocolError):
        codec.decode(body_dup)
