"""Poison messages for the robustness tests, a plain-pika hand to send them and look at queues, and
the processes they are sent to.

``float_specials()`` builds, for every message type, one valid sample and then every variant with one
numeric leaf (anywhere in the body, in resources' scalars and port ranges, and the envelope's ``ts``)
replaced by NaN, +Infinity or -Infinity: valid msgpack, invalid messages.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import time
import types
import typing
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pika

from broker_mesos.bus import topology
from broker_mesos.core import codec, protocol
from broker_mesos.core.errors import ProtocolError
from broker_mesos.core.protocol import CommandInfo, TaskInfo, TaskState, TaskStatus
from broker_mesos.core.resources import Resources
from broker_mesos.testing.processes import Proc, ProcessGroup

MSGPACK = "application/msgpack"
SPECIALS = (math.nan, math.inf, -math.inf)
RES = Resources.parse("cpus:1;mem:64;ports:[31000-31001];gpus:{0}")


def samples(agent_id: str, framework_id: str) -> dict[str, Any]:
    """One valid body of every message type, each with every numeric field present."""
    check = protocol.HealthCheck(protocol.HealthCheckType.HTTP, CommandInfo("true"), port=31000, port_index=1,
                                 delay_seconds=1.0, interval_seconds=1.0, timeout_seconds=1.0,
                                 grace_period_seconds=1.0, consecutive_failures=2)
    info = TaskInfo("t-poison", agent_id, RES, CommandInfo("true"), health_check=check)
    status = TaskStatus("t-poison", framework_id, agent_id, TaskState.RUNNING, "u-poison", 1.0, exit_code=0,
                        healthy=True)
    agent_task = protocol.AgentTask("t-poison", framework_id, RES)
    out: dict[str, Any] = {
        "REGISTER": protocol.Register(f"{agent_id}-p", "h", RES, {"rack": "a"}, [agent_task], 5.0),
        "HEARTBEAT": protocol.Heartbeat(f"{agent_id}-p", "h", RES, {"rack": "a"}, [agent_task], 5.0),
        "SUBSCRIBE": protocol.Subscribe(framework_id, "n", "*", 1.0, "", 10.0),
        "ACCEPT": protocol.Accept(framework_id, ["o-1"], [info], 1.0),
        "DECLINE": protocol.Decline(framework_id, ["o-1"], 5.0),
        "SET_ROLE": protocol.SetRole("poison", 1.0, RES, RES),
        "STATUS": protocol.Status([status]),
        "RUN_TASKS": protocol.RunTasks(framework_id, [info]),
        "OFFERS": protocol.Offers([protocol.Offer("o-1", framework_id, agent_id, "h", RES, {}, 5.0)]),
        "UPDATE": protocol.Update([status]),
        "ROLES": protocol.Roles([protocol.RoleInfo("r", 1.0, RES, RES, RES, [framework_id])]),
        "KILL_TASKS": protocol.KillTasks(framework_id, ["t"]),
    }
    for name, cls in codec.registered_types().items():  # the rest: built from their fields
        if name not in out:
            wire = _valid_wire(cls, {}, info, status, name)
            try:
                out[name] = codec.decode_body(cls, wire)
            except ProtocolError:  # a rule across fields (e.g. QUERY's): only the required fields then
                required = {f.name for f in dataclasses.fields(cls)
                            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
                out[name] = codec.decode_body(cls, {k: v for k, v in wire.items() if k in required})
    return out


STRING_SAMPLES = {"QUERY": "summary"}
"""The string a message type's string fields take where "x1" is not valid for it."""


def _valid_wire(tp: Any, meta: Any, info: TaskInfo, status: TaskStatus, name: str = "") -> Any:
    """A valid wire value of type ``tp`` (every field present, every list one item long)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _valid_wire(inner, meta, info, status, name)
    if tp is TaskInfo:
        return codec.to_wire(info)
    if tp is TaskStatus:
        return codec.to_wire(status)
    if tp is str:
        return "web" if meta.get("role") else STRING_SAMPLES.get(name, "x1")
    if tp is bool:
        return False
    if tp is bytes:
        return b"poison"
    if tp in (int, float):
        lo, hi = meta.get("min"), meta.get("max")
        value = (lo + hi) / 2 if lo is not None and hi is not None else (lo or 0) + 1
        return int(value) if tp is int else float(value)
    if tp is Resources:
        return RES.to_wire()
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return next(iter(tp)).value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return {f.name: _valid_wire(hints[f.name], f.metadata, info, status, name) for f in dataclasses.fields(tp)}
    if origin in (list, tuple):
        return [_valid_wire(typing.get_args(tp)[0], meta, info, status, name)]
    if origin is dict:
        return {"k": _valid_wire(typing.get_args(tp)[1], {}, info, status, name)}
    return "x"


def _numeric_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _numeric_paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _numeric_paths(item, (*path, i))


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {k: (_replaced(v, rest, new) if k == head else v) for k, v in value.items()}
    return [(_replaced(v, rest, new) if i == head else v) for i, v in enumerate(value)]


def float_specials(agent_id: str, framework_id: str) -> Iterator[tuple[str, str, bytes]]:
    """(type name, path, raw envelope) for every numeric leaf of every sample, set to each special."""
    for type_name, body in samples(agent_id, framework_id).items():
        envelope = {"v": 1, "type": type_name, "id": uuid.uuid4().hex, "ts": time.time(), "body": codec.to_wire(body)}
        for path in _numeric_paths(envelope):
            if path[0] == "v":
                continue
            for special in SPECIALS:
                yield type_name, "/".join(map(str, path)), msgpack.packb(_replaced(envelope, path, special))


def range_bomb(ranges: int = 500_000) -> dict[str, Any]:
    """Resources on the wire with ``ranges`` one-port ranges (about 5 MiB as msgpack)."""
    return {"scalars": {"cpus": 1.0}, "ranges": {"ports": [[p, p] for p in range(0, 2 * ranges, 2)]}}


def envelope(type_name: str, body: dict[str, Any]) -> bytes:
    return msgpack.packb({"v": 1, "type": type_name, "id": uuid.uuid4().hex, "ts": time.time(), "body": body})


def start_master(procs: ProcessGroup, url: str, *extra: str) -> Proc:
    master = procs.bmesos("master", "master", "--broker", url, "--master-id", "m1", "--allocation-interval", "0.1",
                          "--agent-reregister-timeout", "0", "--max-missed-heartbeats", "3", *extra)
    master.wait_output(r"master m1 serving")
    return master


def start_agent(procs: ProcessGroup, url: str, work: Path, agent_id: str = "a1",
                resources: str = "cpus:4;mem:4096") -> Proc:
    agent = procs.bmesos(agent_id, "agent", "--broker", url, "--id", agent_id, "--resources", resources,
                         "--work-dir", str(work / agent_id))
    agent.wait_output(rf"agent {agent_id} registered")
    return agent


def start_reference(procs: ProcessGroup, url: str, framework_id: str, *extra: str) -> Proc:
    return procs.python(framework_id, "-m", "broker_mesos.framework.examples.reference", "--broker", url,
                        "--framework-id", framework_id, "--log-level", "info", *extra)


class Hand:
    """A plain-pika connection that publishes anything anywhere and reads queue depths."""

    def __init__(self, url: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        for ex in topology.EXCHANGES:
            self.channel.exchange_declare(ex.name, ex.type, durable=ex.durable)

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()

    def publish(self, exchange: str, key: str, raw: bytes, **props: Any) -> None:
        props.setdefault("content_type", MSGPACK)
        self.channel.basic_publish(exchange, key, raw, pika.BasicProperties(delivery_mode=2, **props))

    def declare(self, *queues: topology.Queue) -> None:
        for q in queues:
            self.channel.queue_declare(q.name, durable=q.durable, arguments=q.arguments or None)
            for exchange, key in q.bindings:
                self.channel.queue_bind(q.name, exchange, routing_key=key)

    def depth(self, queue: str) -> int:
        """Ready messages in ``queue`` (not those delivered and unacked: callers also wait for effects)."""
        return int(self.channel.queue_declare(queue, passive=True).method.message_count)

    def get(self, queue: str) -> tuple[Any, bytes] | None:
        method, props, body = self.channel.basic_get(queue, auto_ack=True)
        return (props, body) if method is not None else None

    def drain(self, queue: str) -> list[tuple[Any, bytes]]:
        out = []
        while (got := self.get(queue)) is not None:
            out.append(got)
        return out
