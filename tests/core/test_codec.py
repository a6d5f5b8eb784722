from __future__ import annotations

import msgpack
import pytest

from broker_mesos.core import codec, protocol
from broker_mesos.core.errors import ProtocolError
from broker_mesos.core.resources import Resources


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
