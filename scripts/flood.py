"""A bounded flood of malformed messages over every input of a running cluster, and what it did.

    .venv/bin/python scripts/flood.py [--messages 100000] [--seconds 300] [--json report.json]

Starts a private RabbitMQ node (in a temp dir, stopped at the end), a master
(``--allocation-interval 0.1``), agents ``a1`` and ``a2`` (``cpus:4;mem:4096``) and one SDK framework
that keeps consuming (the ``sleeper`` example, id ``flood-fw``, holding two ``sleep`` tasks), all as
real child processes. Then it publishes ``--messages`` malformed messages, or stops after ``--seconds``
(whichever comes first), spread over every input:

* exchange ``master``, each call routing key (``SUBSCRIBE`` ... ``TEARDOWN``, the admin calls)
  -> ``master.calls``;
* exchange ``agent.register``, keys ``register`` and ``heartbeat`` -> ``master.agents``;
* exchange ``status``, keys ``<fw>.<agent>.<STATE>`` (some of the framework's own) -> ``master.status``
  and ``status.flood-fw``;
* exchange ``tasks``, key ``a1`` / ``a2`` -> ``tasks.a1`` / ``tasks.a2``;
* exchange ``offers``, key ``flood-fw`` -> ``offers.flood-fw``.

Kinds of malformation, rotating (``--kinds`` / ``--exclude-kinds`` choose): random bytes, truncated
msgpack of a valid envelope, wrong types in fields, deeply nested lists and maps, ids with ``.``,
``/``, ``..``, NUL and friends, NaN / +-Infinity in numeric fields, in resource scalars and in port
ranges, envelopes whose ``type`` is not one the input accepts, valid envelopes with a wrong
``content_type``, broken envelopes (missing / extra / duplicate keys, bytes keys, trailing bytes, ...).
Scheduled a few times only: 1M-character strings (``--huge-count``), messages of about 8 MiB, just
under and just over the limit (``--near-limit-count``), and a REGISTER with 500,000 one-port ranges
(``--port-flood-count``); ``--max-bytes`` bounds the bytes of the whole flood. Valid envelopes are
built with ``codec.encode`` and corrupted with ``msgpack.packb`` of modified dicts. Every message
carries AMQP headers ``x-flood-seq``, ``x-flood-kind`` and ``x-flood-variant`` (consumers ignore
them; dead-lettering keeps them).

What a message could do if a consumer wrongly accepted it is kept harmless: calls name a framework
that never subscribed (``flood-ghost``), agent messages a phantom agent with a 0.05 s heartbeat
interval (so the master drops it within a second), tasks run ``true``; the valid envelopes sent with a
wrong content type are a re-SUBSCRIBE of the flood framework as it is, calls of the ghost (refused),
kills of unknown tasks, rescinds of unknown offers.

Publishing uses pika's BlockingConnection without publisher confirms, paced so that the messages
waiting in queues that have a consumer stay under ``--max-backlog``.

Then it reports, as markdown tables (and ``--json FILE``, ``-`` for stdout): per process (master,
each agent, the framework) PID before and after (a process that died is a failure), RSS before / peak
during the flood / after the drain and the delta, and how often it lost its broker connection (a
consumer that raises on a message loses its channel and gets the message again: a crash loop);
messages and bytes sent, per kind and per input queue; flood duration; drain time (end of the flood
until no input queue has a ready message at a poll and no consuming channel holds an unacknowledged
delivery per ``rabbitmqctl list_channels``, whose answer bounds it from above); the ``dead-letters``
queue's messages, and, read back from it (nothing acked), their bytes (bodies) and how many messages
of each kind and from each input were dead-lettered, plus what the master counted as dropped from it;
what ``codec.decode`` in this process says of samples of each kind (rejected / decoded / raised); for
a queue that did not drain, the messages at its head that its consumer had been given and never acked,
and which of them make ``codec.decode`` raise something other than ``ProtocolError``; for a process
that died or lost its connection, the reasons and the last exception in its log; and whether the
cluster still works: ``bmesos run --count 5 --cpus 0.1 --mem 16 --timeout 60 -- true``, its exit code
and duration. Exit status 0 only if no process died or lost its broker connection, every input queue
drained and that run succeeded; 1 otherwise, 130 on Ctrl-C. Everything it started is stopped, on error
and Ctrl-C too (the work dir is removed; on failure the children's logs are kept and their path
printed).

``run_flood(url, procs, work_dir, options, node=...)`` is the same code for a broker the caller owns
(tests/robustness/test_flood.py runs it at small N on the pytest fixtures).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import unquote, urlparse

import msgpack
import pika
import pika.exceptions
import psutil

from broker_mesos.bus import topology
from broker_mesos.core import codec, protocol
from broker_mesos.core.errors import ProtocolError
from broker_mesos.core.protocol import TaskState
from broker_mesos.core.resources import Resources
from broker_mesos.testing.processes import Proc, ProcessGroup
from broker_mesos.testing.rabbit import RabbitNode
from broker_mesos.testing.wait import WaitTimeout

MiB = 1024 * 1024
FRAMEWORK_ID = "flood-fw"
GHOST = "flood-ghost"  # a framework that never subscribes: whatever it "calls" is refused
PHANTOM = "flood-phantom"  # a phantom agent: if a malformed REGISTER slips through, it dies in < 1 s
PHANTOM_CT = "flood-ct"  # the phantom of the wrong-content-type REGISTERs: no resources, nothing to offer
PORTS_PHANTOM = "flood-ports"
AGENT_IDS = ("a1", "a2")
AGENT_RESOURCES = "cpus:4;mem:4096"
SLEEPER_TASKS = 2
PHANTOM_HEARTBEAT = 0.05
REPLY_TO = "flood.replies"  # no such queue: the master's answers to it are dropped by the broker
DEEP_PLACEHOLDER = "\x00FLOOD-DEEP\x00"

ROTATING_KINDS = ("random-bytes", "truncated", "wrong-types", "deep-nesting", "bad-ids", "float-numbers",
                  "float-scalars", "float-ranges", "type-mismatch", "content-type", "envelope")
GIANT_KINDS = ("huge-string", "near-limit", "port-flood")
KINDS = ROTATING_KINDS + GIANT_KINDS
# kinds whose messages are (some of them) valid envelopes on purpose: the codec decodes them; the
# consumer must still refuse them (wrong content type; a type its queue does not take)
VALID_BY_DESIGN = frozenset({"content-type", "type-mismatch"})

CALL_KEYS = ("SUBSCRIBE", "ACCEPT", "DECLINE", "KILL", "REVIVE", "SUPPRESS", "RECONCILE", "TEARDOWN",
             "SET_ALLOCATOR", "GET_ALLOCATOR", "SET_ROLE", "GET_ROLES")
ID_KEYS = frozenset({"framework_id", "agent_id", "task_id", "offer_id", "uuid"})
ID_LIST_KEYS = frozenset({"offer_ids", "task_ids", "frameworks"})
BAD_IDS = ("a.b", "..", ".", "/", "a/b", "../../../../tmp/flood", "/etc/passwd", "a\x00b", "\x00", "",
           " ", "a b", "x" * 129, "\u00e9t\u00e9", "#", "*", "fw.#", "a\nb", "\u202eevil", "a;b")
SPECIALS = (("NaN", math.nan), ("+Infinity", math.inf), ("-Infinity", -math.inf))
SCALAR_VALUES = (*SPECIALS, ("1e300", 1e300), ("-1", -1.0))
RANGE_VALUES = (
    ("[[31000, +Infinity]]", [[31000, math.inf]]), ("[[-Infinity, 31000]]", [[-math.inf, 31000]]),
    ("[[NaN, NaN]]", [[math.nan, math.nan]]), ("[[+Infinity, +Infinity]]", [[math.inf, math.inf]]),
    ("[[31000.5, 31001.5]]", [[31000.5, 31001.5]]), ("[[0, 1e300]]", [[0, 1e300]]),
    ("[[31001, 31000]]", [[31001, 31000]]), ("[[-5, -1]]", [[-5, -1]]), ("[[0, 2**64-1]]", [[0, 2**64 - 1]]),
    ("[[1, 2, 3]]", [[1, 2, 3]]), ("[[true, true]]", [[True, True]]), ('[["1", "2"]]', [["1", "2"]]),
)
CONTENT_TYPES = ("application/json", "text/plain", None, "", "application/octet-stream")
UNKNOWN_TYPES = ("NOPE", "subscribe", "", "SUBSCRIBE ", "STATUS\x00", "RUN_TASKS.x")


# -- options -----------------------------------------------------------------------------------


@dataclass
class FloodOptions:
    messages: int = 100_000
    seconds: float = 300.0
    seed: int = 1
    max_bytes: int = 512 * MiB
    huge_chars: int = 1_000_000
    huge_count: int | None = None  # None: max(1, min(40, messages // 2500))
    near_limit_count: int | None = None  # None: max(1, min(4, messages // 25000))
    port_ranges: int = 500_000
    port_flood_count: int | None = None  # None: 1 below 50,000 messages, else 2
    kinds: tuple[str, ...] = KINDS
    max_backlog: int = 5_000
    drain_timeout: float = 120.0
    run_timeout: float = 60.0
    verdict_samples: int = 40  # per kind: messages decoded here too, to tell what the codec says of them

    def giant_counts(self) -> dict[str, int]:
        counts = {
            "huge-string": self.huge_count if self.huge_count is not None else max(1, min(40, self.messages // 2500)),
            "near-limit": (self.near_limit_count if self.near_limit_count is not None
                           else max(1, min(4, self.messages // 25000))),
            "port-flood": (self.port_flood_count if self.port_flood_count is not None
                           else (1 if self.messages < 50_000 else 2)),
        }
        return {k: (v if k in self.kinds else 0) for k, v in counts.items()}


# -- inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One (exchange, routing key) of the cluster and the queues a message to it lands in."""

    group: str
    exchange: str
    key: str
    queues: tuple[str, ...]
    types: tuple[str, ...]  # template names natural for this input, used in rotation
    rich: str  # a template carrying ids, numbers and Resources, for kinds that need them
    valid: str  # a valid, harmless template for this input (wrong-content-type messages)
    foreign: tuple[str, ...]  # valid, harmless templates of types this input does not take


def input_queues(fw: str = FRAMEWORK_ID, agents: Sequence[str] = AGENT_IDS) -> dict[str, str]:
    """Every input queue of the cluster -> the process that consumes it."""
    out = {"master.agents": "master", "master.calls": "master", "master.status": "master"}
    out.update({f"tasks.{a}": f"agent {a}" for a in agents})
    out.update({f"offers.{fw}": "framework", f"status.{fw}": "framework"})
    return out


def input_groups(fw: str = FRAMEWORK_ID, agents: Sequence[str] = AGENT_IDS) -> list[list[Target]]:
    """The cluster's inputs in groups; the flood takes the groups in turn, so each gets its share."""
    # on SUBSCRIBE the flood framework's own SUBSCRIBE is what gets corrupted: one that slipped through
    # would re-subscribe flood-fw (harmless), where a ghost's would add a framework that never answers
    calls = [Target("master.calls", "master", key, ("master.calls",),
                    ("SUBSCRIBE_FW",) if key == "SUBSCRIBE" else (key,), "ACCEPT",
                    "SUBSCRIBE_FW" if key == "SUBSCRIBE" else key,
                    ("RUN_TASKS", "STATUS", "OFFERS", "KILL_TASKS", "REGISTER_CT"))
             for key in CALL_KEYS]
    register = [Target("master.agents", "agent.register", key, ("master.agents",), (typ,), typ, f"{typ}_CT",
                       ("STATUS", "RUN_TASKS", "OFFERS", "REVIVE"))
                for key, typ in (("register", "REGISTER"), ("heartbeat", "HEARTBEAT"))]
    status = [Target("master.status", "status", key, ("master.status",), ("STATUS",), "RUN_TASKS", "STATUS",
                     ("REGISTER_CT", "REVIVE", "RUN_TASKS", "OFFERS"))
              for key in (f"{GHOST}.{agents[0]}.TASK_FINISHED", "x.y/../z.TASK_LOST", f"{GHOST}..TASK_RUNNING")]
    status_fw = [Target(f"status.{fw}", "status", f"{fw}.{a}.TASK_FINISHED", ("master.status", f"status.{fw}"),
                        ("STATUS_FW",), "RUN_TASKS", "STATUS_FW", ("REGISTER_CT", "REVIVE", "OFFERS", "RUN_TASKS"))
                 for a in agents]
    tasks = [[Target(f"tasks.{a}", "tasks", a, (f"tasks.{a}",), ("RUN_TASKS", "KILL_TASKS"), "RUN_TASKS",
                     "KILL_TASKS", ("OFFERS", "STATUS", "REVIVE", "REGISTER_CT"))] for a in agents]
    offers = [Target(f"offers.{fw}", "offers", fw, (f"offers.{fw}",),
                     ("OFFERS", "RESCIND", "SUBSCRIBED", "UPDATE", "ERROR"), "OFFERS", "RESCIND",
                     ("RUN_TASKS", "STATUS", "REGISTER_CT", "KILL_TASKS"))]
    return [calls, register, status, status_fw, *tasks, offers]


def templates(fw: str = FRAMEWORK_ID, agents: Sequence[str] = AGENT_IDS) -> dict[str, bytes]:
    """Valid envelopes (encoded by the codec) that the flood corrupts. Names are types, or a type and a
    variant (``REGISTER_CT``); every one is harmless if a consumer processes it."""
    now = time.time()
    res = Resources.parse("cpus:0.1;mem:16;ports:[31000-31001]")
    agent_res = Resources.parse("cpus:1;mem:64;ports:[31000-31010]")
    task = protocol.TaskInfo("flood-t", agents[0], res, protocol.CommandInfo("true"), "flood")

    def status(framework: str, task_id: str) -> protocol.TaskStatus:
        return protocol.TaskStatus(task_id, framework, agents[0], TaskState.FINISHED, uuid.uuid4().hex, now,
                                   "flood", "", "SOURCE_AGENT", 0)

    offer = protocol.Offer("flood-o", fw, agents[0], "flood-host", res, {"rack": "flood"}, 30.0)
    agent = {"agent_id": PHANTOM, "hostname": "flood-host", "resources": agent_res, "attributes": {"rack": "x"},
             "tasks": [protocol.AgentTask("flood-t", GHOST, res)], "heartbeat_interval": PHANTOM_HEARTBEAT}
    empty_agent = {"agent_id": PHANTOM_CT, "hostname": "flood-host", "heartbeat_interval": PHANTOM_HEARTBEAT}
    bodies: dict[str, Any] = {
        "SUBSCRIBE": protocol.Subscribe(GHOST, "flood"),
        "SUBSCRIBE_FW": protocol.Subscribe(fw, "sleeper"),  # what the flood framework itself sends
        "ACCEPT": protocol.Accept(GHOST, ["flood-o"], [task], 0.0),
        "DECLINE": protocol.Decline(GHOST, ["flood-o"], 5.0),
        "KILL": protocol.Kill(GHOST, ["flood-t"]),
        "REVIVE": protocol.Revive(GHOST),
        "SUPPRESS": protocol.Suppress(GHOST),
        "RECONCILE": protocol.Reconcile(GHOST, ["flood-t"]),
        "TEARDOWN": protocol.Teardown(GHOST),
        "SET_ALLOCATOR": protocol.SetAllocator("drf"),
        "GET_ALLOCATOR": protocol.GetAllocator(),
        "SET_ROLE": protocol.SetRole("flood-role", 1.0, Resources(), Resources.of(cpus=0.5, mem=64)),
        "GET_ROLES": protocol.GetRoles(),
        "REGISTER": protocol.Register(**agent),
        "HEARTBEAT": protocol.Heartbeat(**agent),
        "REGISTER_CT": protocol.Register(**empty_agent),
        "HEARTBEAT_CT": protocol.Heartbeat(**empty_agent),
        "STATUS": protocol.Status([status(GHOST, "flood-t")]),
        "STATUS_FW": protocol.Status([status(fw, "flood-ct-t")]),
        "RUN_TASKS": protocol.RunTasks(GHOST, [task]),
        "KILL_TASKS": protocol.KillTasks(GHOST, ["flood-t"]),
        "OFFERS": protocol.Offers([offer]),
        "RESCIND": protocol.Rescind(["flood-o"]),
        "SUBSCRIBED": protocol.Subscribed(fw, "flood-master"),
        "UPDATE": protocol.Update([status(fw, "flood-t")]),
        "ERROR": protocol.Error("flood", "ACCEPT", "flood-call"),
    }
    return {name: codec.encode(body, now) for name, body in bodies.items()}


# -- paths in wire data --------------------------------------------------------------------------

Path_ = tuple[Any, ...]


def paths(obj: Any, prefix: Path_ = ()) -> list[Path_]:
    """Every path (keys and indexes) to a value inside ``obj``, containers included."""
    out: list[Path_] = []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        p = (*prefix, k)
        out.append(p)
        out.extend(paths(v, p))
    return out


def get_at(obj: Any, path: Path_) -> Any:
    for k in path:
        obj = obj[k]
    return obj


def set_at(obj: Any, path: Path_, value: Any) -> None:
    get_at(obj, path[:-1])[path[-1]] = value


def show_path(path: Path_) -> str:
    return ".".join(str(p) for p in path)


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def brief(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- the malformations ----------------------------------------------------------------------------


@dataclass
class Message:
    seq: int
    target: Target
    kind: str
    variant: str
    body: bytes
    content_type: str | None = "application/msgpack"
    reply_to: str | None = None


class Malformer:
    """Builds the flood's messages: seq -> (target, kind) in rotation, giants at planned positions."""

    def __init__(self, options: FloodOptions, fw: str = FRAMEWORK_ID, agents: Sequence[str] = AGENT_IDS) -> None:
        self.options = options
        self.rng = random.Random(options.seed)
        self.raw = templates(fw, agents)
        self.groups = input_groups(fw, agents)
        self.kinds = [k for k in ROTATING_KINDS if k in options.kinds]
        self._group_turns = [0] * len(self.groups)
        self.giants: dict[int, str] = {}
        self._giant_turn: Counter[str] = Counter()
        self._plan_giants()

    def _plan_giants(self) -> None:
        n = max(1, self.options.messages)
        seqs: list[tuple[int, str]] = []
        for kind, count in self.options.giant_counts().items():
            # spread evenly, each kind shifted a little so they do not all land on the same messages
            offset = {"huge-string": 0.5, "near-limit": 0.35, "port-flood": 0.65}[kind]
            seqs.extend((int((i + offset) * n / count), kind) for i in range(count))
        for seq, kind in sorted(seqs):
            while seq in self.giants:
                seq += 1
            self.giants[seq] = kind

    def env(self, name: str) -> dict[str, Any]:
        return msgpack.unpackb(self.raw[name], raw=False)

    def message(self, seq: int) -> Message | None:
        """Message number ``seq``; None when only giant kinds were chosen and this is not one of them."""
        giant = self.giants.get(seq)
        if giant is None and not self.kinds:
            return None
        if giant is not None:
            kind = giant
            turn = self._giant_turn[kind]
            self._giant_turn[kind] += 1
            if kind == "port-flood":
                target = self.groups[1][turn % 2]  # agent.register: register, then heartbeat
            else:
                group = self.groups[turn % len(self.groups)]
                target = group[(turn // len(self.groups)) % len(group)]
            return self._build(seq, target, kind, turn)
        gi = seq % len(self.groups)
        group = self.groups[gi]
        turn = self._group_turns[gi]
        self._group_turns[gi] += 1
        # every (target, kind) pair of the group comes up once per len(group) * len(kinds) turns
        pair = turn % (len(group) * len(self.kinds))
        target, kind = group[pair % len(group)], self.kinds[pair // len(group)]
        return self._build(seq, target, kind, turn)

    def _build(self, seq: int, target: Target, kind: str, turn: int) -> Message:
        make: Callable[[Target, int], tuple[Any, ...]] = getattr(self, "_" + kind.replace("-", "_"))
        body, variant, *extra = make(target, turn)
        msg = Message(seq, target, kind, variant, body)
        if extra:
            msg.content_type = extra[0]
        # some calls carry a reply_to (the master answers a refusal there; no such queue: dropped), but
        # never a SUBSCRIBE: if one slipped through, the framework's replies would go astray
        if target.exchange == "master" and target.key != "SUBSCRIBE" and self.rng.random() < 0.25:
            msg.reply_to = REPLY_TO
        return msg

    def _natural(self, target: Target, turn: int) -> dict[str, Any]:
        return self.env(target.types[turn % len(target.types)])

    # rotating kinds: each returns (body, variant[, content_type])
    def _random_bytes(self, target: Target, turn: int) -> tuple[bytes, str]:
        rng = self.rng
        variant = rng.choice(("random", "random", "empty", "map-then-garbage", "bad-utf8", "json", "nil"))
        if variant == "random":
            n = rng.choice((1, 2, 8, 64, 512, 4096))
            return rng.randbytes(n), f"random {n} bytes"
        if variant == "empty":
            return b"", "empty body"
        if variant == "map-then-garbage":
            return b"\x85" + rng.randbytes(40), variant
        if variant == "bad-utf8":
            raw = b"\x85\xa1v\x01\xa4type\xa4\xff\xfe\xfd\xfc\xa2id\xa1x\xa2ts\x01\xa4body\x80"
            return raw, "type is invalid UTF-8"
        if variant == "json":
            return b'{"v": 1, "type": "SUBSCRIBE", "id": "x", "ts": 1, "body": {}}', "JSON text"
        return b"\xc0", "msgpack nil"

    def _truncated(self, target: Target, turn: int) -> tuple[bytes, str]:
        raw = self.raw[target.types[turn % len(target.types)]]
        cut = self.rng.randint(1, len(raw) - 1)
        return raw[:cut], f"cut at {cut} of {len(raw)} bytes"

    def _wrong_types(self, target: Target, turn: int) -> tuple[bytes, str]:
        env = self._natural(target, turn)
        path = self.rng.choice(paths(env))
        current = get_at(env, path)
        if isinstance(current, bool):
            pool: tuple[Any, ...] = (0, 1, "true", 1.0)
        elif isinstance(current, int | float):
            pool = ("1", True, [], {}, b"\x01", "NaN")
        elif isinstance(current, str):
            pool = (123, -1, 1.5, True, [], {}, b"bytes")
        elif isinstance(current, list):
            pool = ("x", {}, 5, True, b"")
        elif isinstance(current, dict):
            pool = ([], "x", 5, [["k", "v"]], b"")
        else:
            pool = ("x", 1)
        value = self.rng.choice(pool)
        set_at(env, path, value)
        return pack(env), f"{show_path(path)} = {brief(value, 20)}"

    def _deep_nesting(self, target: Target, turn: int) -> tuple[bytes, str]:
        # 100,000 deep (100-300 KB) now and then only: the flood's bytes stay bounded by the rest
        depth = 100_000 if self.rng.random() < 0.02 else self.rng.choice((100, 1000, 2000, 5000, 10_000))
        shape = self.rng.choice(("list", "map"))
        nested = (b"\x91" * depth if shape == "list" else b"\x81\xa1k" * depth) + b"\xc0"
        where = self.rng.choice(("field", "field", "body", "top-level"))
        if where == "top-level":
            return nested, f"{shape}s {depth} deep as the whole message"
        env = self._natural(target, turn)
        body_paths = [("body", *p) for p in paths(env["body"])]
        path = self.rng.choice(body_paths) if where == "field" and body_paths else ("body",)
        set_at(env, path, DEEP_PLACEHOLDER)
        raw = pack(env).replace(pack(DEEP_PLACEHOLDER), nested, 1)
        return raw, f"{shape}s {depth} deep at {show_path(path)}"

    def _bad_ids(self, target: Target, turn: int) -> tuple[bytes, str]:
        env = self._natural(target, turn)
        found = self._id_paths(env)
        if not found:
            env = self.env(target.rich)
            found = self._id_paths(env)
        path = self.rng.choice(found)
        value = self.rng.choice(BAD_IDS)
        set_at(env, path, value)
        return pack(env), f"{show_path(path)} = {brief(value, 24)}"

    @staticmethod
    def _id_paths(env: dict[str, Any]) -> list[Path_]:
        out = []
        for p in paths(env["body"]):
            last, parent = p[-1], p[-2] if len(p) > 1 else None
            if last in ID_KEYS or parent in ID_LIST_KEYS or last == "role":
                out.append(("body", *p))
        return [p for p in out if isinstance(get_at(env, p), str)]

    def _float_numbers(self, target: Target, turn: int) -> tuple[bytes, str]:
        env = self._natural(target, turn)
        numeric = [("body", *p) for p in paths(env["body"])
                   if isinstance(get_at(env["body"], p), int | float) and not isinstance(get_at(env["body"], p), bool)
                   and "resources" not in p and "guarantee" not in p and "limit" not in p]
        path = self.rng.choice(numeric) if numeric and self.rng.random() < 0.75 else self.rng.choice((("ts",), ("v",)))
        name, value = self.rng.choice(SPECIALS)
        set_at(env, path, value)
        return pack(env), f"{show_path(path)} = {name}"

    def _resource_env(self, target: Target, turn: int, kind: str) -> tuple[dict[str, Any], list[Path_]]:
        for name in (target.types[turn % len(target.types)], target.rich):
            env = self.env(name)
            found = [("body", *p) for p in paths(env["body"]) if len(p) >= 2 and p[-2] == kind]
            if found:
                return env, found
        raise RuntimeError(f"no template with {kind} for {target}")

    def _float_scalars(self, target: Target, turn: int) -> tuple[bytes, str]:
        env, found = self._resource_env(target, turn, "scalars")
        path = self.rng.choice(found)
        name, value = self.rng.choice(SCALAR_VALUES)
        set_at(env, path, value)
        return pack(env), f"{env['type']} {show_path(path)} = {name}"

    def _float_ranges(self, target: Target, turn: int) -> tuple[bytes, str]:
        env, found = self._resource_env(target, turn, "ranges")
        path = self.rng.choice(found)
        name, value = self.rng.choice(RANGE_VALUES)
        set_at(env, path, value)
        return pack(env), f"{env['type']} {show_path(path)} = {name}"

    def _type_mismatch(self, target: Target, turn: int) -> tuple[bytes, str]:
        variant = self.rng.choice(("foreign", "foreign", "relabel", "unknown"))
        if variant == "foreign":  # a valid envelope of a type this input does not take
            name = self.rng.choice(target.foreign)
            return self.raw[name], f"valid {name} on {target.exchange}/{brief(target.key, 30)}"
        env = self._natural(target, turn)
        if variant == "relabel":  # another type's name on this body
            # never SUBSCRIBE: a ghost's REVIVE body labelled SUBSCRIBE is a valid subscription
            others = [t for t in codec.registered_types() if t not in (env["type"], "SUBSCRIBE")]
            env["type"] = self.rng.choice(others)
            return pack(env), f"body of {target.types[turn % len(target.types)]} labelled {env['type']}"
        env["type"] = self.rng.choice(UNKNOWN_TYPES)
        return pack(env), f"type {brief(env['type'], 20)}"

    def _content_type(self, target: Target, turn: int) -> tuple[bytes, str, str | None]:
        content_type = self.rng.choice(CONTENT_TYPES)
        return self.raw[target.valid], f"valid {target.valid} as {content_type!r}", content_type

    def _envelope(self, target: Target, turn: int) -> tuple[bytes, str]:
        env = self._natural(target, turn)
        variant = self.rng.choice(("missing", "extra-key", "version", "top-level", "int-keys", "bytes-keys",
                                   "duplicate-type", "trailing-bytes", "ext-type", "timestamp-ext", "bad-id",
                                   "body-not-map"))
        if variant == "missing":
            key = self.rng.choice(("v", "type", "id", "ts", "body"))
            del env[key]
            return pack(env), f"no {key!r}"
        if variant == "extra-key":
            env["extra"] = 1
            return pack(env), "extra envelope key"
        if variant == "version":
            env["v"] = self.rng.choice((2, 0, -1, True, 1.0, "1", None))
            return pack(env), f"v = {env['v']!r}"
        if variant == "top-level":
            shape = self.rng.choice(("array", "int", "str", "nil", "bin"))
            value = {"array": list(env.values()), "int": 1, "str": "SUBSCRIBE", "nil": None, "bin": b"\x85"}[shape]
            return pack(value), f"top-level {shape}"
        if variant == "int-keys":
            return pack({i: v for i, v in enumerate(env.values())}), "integer keys"
        if variant == "bytes-keys":
            return pack({k.encode(): v for k, v in env.items()}), "bin (bytes) keys"
        if variant == "duplicate-type":
            first = self.rng.random() < 0.5
            items = b"".join(pack(k) + pack(v) for k, v in env.items())
            dup = pack("type") + pack("NOPE")
            raw = bytes([0x80 | (len(env) + 1)]) + ((dup + items) if first else (items + dup))
            return raw, "'type' twice, " + ("real one last" if first else "'NOPE' last")
        if variant == "trailing-bytes":
            return pack(env) + b"\xc1\x00", "valid envelope + 2 trailing bytes"
        if variant == "ext-type":
            env["ts"] = msgpack.ExtType(42, b"flood")
            return pack(env), "ts is an ext type"
        if variant == "timestamp-ext":
            env["ts"] = msgpack.Timestamp.from_unix(time.time())
            return pack(env), "ts is a msgpack Timestamp"
        if variant == "bad-id":
            env["id"] = self.rng.choice(("", "x" * 129, 5, None))
            return pack(env), f"id = {brief(env['id'], 12)}"
        env["body"] = self.rng.choice(([], "body", 1, None, [env["body"]]))
        return pack(env), f"body = {brief(env['body'], 20)}"

    # giant kinds (scheduled, not rotating)
    def _huge_string(self, target: Target, turn: int) -> tuple[bytes, str]:
        n = self.options.huge_chars
        env = self._natural(target, turn)
        where = ("str-field", "unknown-field", "id-field", "map-key", "type", "unicode")[turn % 6]
        huge = "\u00e9" * n if where == "unicode" else "x" * n
        strs = [("body", *p) for p in paths(env["body"]) if isinstance(get_at(env["body"], p), str)]
        ids = self._id_paths(env)
        maps = [("body", *p) for p in paths(env["body"])
                if p[-1] in ("attributes", "environment") and isinstance(get_at(env["body"], p), dict)]
        if where in ("str-field", "unicode") and strs:
            path = self.rng.choice(strs)
            set_at(env, path, huge)
            label = show_path(path)
        elif where == "id-field" and ids:
            path = self.rng.choice(ids)
            set_at(env, path, huge)
            label = show_path(path)
        elif where == "map-key" and maps:
            path = self.rng.choice(maps)
            get_at(env, path)[huge] = "v"
            label = f"a key of {show_path(path)}"
        elif where == "type":
            env["type"] = huge
            label = "envelope type"
        else:
            env["body"][huge] = 1
            label = "an unknown body field's name"
        return pack(env), f"{n:,}-character {'non-ASCII ' if where == 'unicode' else ''}string in {label}"

    def _near_limit(self, target: Target, turn: int) -> tuple[bytes, str]:
        limit = codec.MAX_MESSAGE_BYTES
        variant = ("under", "over", "int-list")[turn % 3]
        env = self._natural(target, turn)
        strs = [("body", *p) for p in paths(env["body"]) if isinstance(get_at(env["body"], p), str)
                and p[-1] not in ID_KEYS and (len(p) < 2 or p[-2] not in ID_LIST_KEYS)]
        path = self.rng.choice(strs) if strs else ("body", "pad")
        want = limit - 64 if variant != "over" else limit + 1
        set_at(env, path, "" if variant != "int-list" else [])
        base = len(pack(env)) - 1  # without the empty value (1 byte either way)
        # a str32 / array32 header is 5 bytes; ASCII characters and fixints 1 byte each
        n = want - base - 5
        set_at(env, path, "x" * n if variant != "int-list" else [1] * n)
        raw = pack(env)
        what = {"under": "string just under", "over": "string just over", "int-list": f"list of {n:,} ints under"}
        return raw, f"{len(raw):,} bytes: {what[variant]} the 8 MiB limit at {show_path(path)}"

    def _port_flood(self, target: Target, turn: int) -> tuple[bytes, str]:
        n = self.options.port_ranges
        typ = "REGISTER" if target.key == "register" else "HEARTBEAT"
        env = self.env(typ)
        env["body"]["agent_id"] = PORTS_PHANTOM
        env["body"]["tasks"] = []
        env["body"]["resources"] = {"scalars": {"cpus": 1.0, "mem": 64.0},
                                    "ranges": {"ports": [[2 * i, 2 * i] for i in range(n)]}}
        return pack(env), f"{typ} with {n:,} one-port ranges"


# -- what the codec of this process says ------------------------------------------------------------


def verdict(body: bytes) -> str:
    try:
        codec.decode(body)
    except ProtocolError:
        return "rejected"
    except Exception as exc:  # what would take a consumer down
        return f"raised {exc.__class__.__name__}"
    return "decoded"


# -- the broker side ------------------------------------------------------------------------------


@dataclass
class QueueDepth:
    ready: int
    consumers: int


class Broker:
    """One BlockingConnection for publishing and probing queues (passive declares), plus rabbitmqctl
    through ``node`` when the caller has one (message bytes and unacknowledged counts)."""

    def __init__(self, url: str, node: RabbitNode | None = None) -> None:
        self.url = url
        self.node = node
        self.vhost = unquote(urlparse(url.split(",")[0]).path[1:] or "/") or "/"
        self.connection: pika.BlockingConnection | None = None
        self.channel: Any = None
        self._probe: Any = None
        self.blocked = False
        self.connect()

    def connect(self) -> None:
        params = pika.URLParameters(self.url.split(",")[0])
        params.heartbeat = 0  # long sleeps between calls must not cost the connection
        params.blocked_connection_timeout = 30
        params.socket_timeout = 10
        self.connection = pika.BlockingConnection(params)
        self.connection.add_on_connection_blocked_callback(lambda *_: setattr(self, "blocked", True))
        self.connection.add_on_connection_unblocked_callback(lambda *_: setattr(self, "blocked", False))
        self.channel = self.connection.channel()
        self._probe = None

    def close(self) -> None:
        if self.connection is not None and self.connection.is_open:
            with contextlib.suppress(Exception):
                self.connection.close()

    def publish(self, msg: Message) -> None:
        props = pika.BasicProperties(
            content_type=msg.content_type, delivery_mode=2, reply_to=msg.reply_to,
            correlation_id=uuid.uuid4().hex if msg.reply_to else None,
            headers={"x-flood-seq": msg.seq, "x-flood-kind": msg.kind, "x-flood-variant": ascii(msg.variant)[:120]})
        self.channel.basic_publish(msg.target.exchange, msg.target.key, msg.body, props)

    def depth(self, queue: str) -> QueueDepth | None:
        """Ready messages and consumers of ``queue`` (None if it does not exist)."""
        assert self.connection is not None
        try:
            if self._probe is None or not self._probe.is_open:
                self._probe = self.connection.channel()
            frame = self._probe.queue_declare(queue, passive=True)
            return QueueDepth(frame.method.message_count, frame.method.consumer_count)
        except pika.exceptions.ChannelClosedByBroker:
            self._probe = None
            return None

    def depths(self, queues: Sequence[str]) -> dict[str, QueueDepth | None]:
        return {q: self.depth(q) for q in queues}

    def unacked_on_consumer_channels(self) -> int | None:
        """Deliveries not yet acknowledged on every channel of this vhost that consumes, live from the
        channels (``rabbitmqctl list_channels``); None without a node or on failure. (``list_queues``
        would not do: a quorum queue's counts there lag by seconds.)"""
        if self.node is None:
            return None
        try:
            out = self.node.ctl("list_channels", "--quiet", "vhost", "consumer_count", "messages_unacknowledged",
                                "--formatter", "json", timeout=30)
            start = out.find("[")
            rows = json.loads(out[start:]) if start >= 0 else []
            return sum(_int(row.get("messages_unacknowledged")) or 0 for row in rows
                       if row.get("vhost") == self.vhost and (_int(row.get("consumer_count")) or 0) > 0)
        except Exception as exc:  # a diagnostic: never the reason the flood fails
            print(f"flood: rabbitmqctl list_channels failed: {exc}", file=sys.stderr)
            return None


# -- processes --------------------------------------------------------------------------------------


@dataclass
class ProcSample:
    pid: int
    alive: bool
    exit_code: int | None
    rss: int | None
    create_time: float | None


def sample(proc: Proc) -> ProcSample:
    pid = proc.popen.pid
    code = proc.popen.poll()
    try:
        ps = psutil.Process(pid)
        if code is None:
            return ProcSample(pid, True, None, ps.memory_info().rss, ps.create_time())
    except psutil.Error:
        pass
    return ProcSample(pid, False, proc.popen.poll(), None, None)


class Monitor(threading.Thread):
    """Samples every process during the flood: peak RSS, and when (at which message) one died."""

    def __init__(self, procs: dict[str, Proc], progress: Callable[[], int], interval: float = 0.2) -> None:
        super().__init__(daemon=True, name="flood-monitor")
        self.procs = procs
        self.progress = progress
        self.interval = interval
        self.peak: dict[str, int] = {}
        self.deaths: dict[str, tuple[float, int]] = {}  # name -> (seconds since start, messages sent then)
        self.started = time.monotonic()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.poll()
            self._halt.wait(self.interval)

    def poll(self) -> None:
        for name, proc in self.procs.items():
            s = sample(proc)
            if s.alive and s.rss is not None:
                self.peak[name] = max(self.peak.get(name, 0), s.rss)
            elif name not in self.deaths:
                self.deaths[name] = (time.monotonic() - self.started, self.progress())

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self.poll()


def start_cluster(procs: ProcessGroup, url: str, work_dir: Path, fw: str = FRAMEWORK_ID,
                  agents: Sequence[str] = AGENT_IDS) -> dict[str, Proc]:
    """Master, agents and the flood framework, each ready (the framework with its tasks RUNNING)."""
    master = procs.bmesos("master", "master", "--broker", url, "--allocation-interval", "0.1")
    master.wait_output(r"master \S+ serving", 60)
    out = {"master": master}
    for a in agents:
        agent = procs.bmesos(f"agent-{a}", "agent", "--broker", url, "--id", a, "--resources", AGENT_RESOURCES,
                             "--work-dir", str(work_dir / f"agent-{a}"))
        agent.wait_output(rf"agent {a} registered", 60)
        out[f"agent {a}"] = agent
    framework = procs.python("framework", "-m", "broker_mesos.framework.examples.sleeper", "--broker", url,
                             "--framework-id", fw, "--count", str(SLEEPER_TASKS), "--seconds", "3600",
                             "--refuse-seconds", "5")
    framework.wait_output(rf"(?:status \S+ TASK_RUNNING[\s\S]*){{{SLEEPER_TASKS}}}", 60)
    out["framework"] = framework
    return out


DROPPED_LOG = re.compile(r"dead-letters dropped (\d+) message")
DROPPED_REPORT_WAIT = 10.5
LOST = re.compile(r"connection lost \((.*?)\); reconnecting")


def connection_losses(log: str) -> Counter[str]:
    """Why the process' Bus lost its broker connection (its log lines), by reason: under the flood a
    consumer that raises on a message loses its channel, reconnects, gets the message again..."""
    return Counter(m[:200] for m in LOST.findall(log))


def last_exception(log: str) -> str | None:
    """The exception line (and where it was raised) of the last traceback in a process' output."""
    at = log.rfind("Traceback (most recent call last):")
    if at < 0:
        return None
    where, lines = None, log[at:].splitlines()[1:]
    for line in lines:
        if line.startswith("  File "):
            where = line.strip()
        elif line and not line.startswith(" "):
            return f"{line.strip()[:300]} ({where})" if where else line.strip()[:300]
    return None


# -- the report -------------------------------------------------------------------------------------


@dataclass
class ProcessReport:
    name: str
    pid_before: int
    pid_after: int | None
    alive: bool
    exit_code: int | None
    rss_before: int | None
    rss_peak: int | None
    rss_after: int | None
    died_at: float | None = None  # seconds after the flood started
    died_after_messages: int | None = None
    exception: str | None = None  # the last traceback's exception in its log during the run
    tracebacks: int = 0
    connection_losses: dict[str, int] = field(default_factory=dict)  # reason -> times, during the run


@dataclass
class Report:
    options: dict[str, Any]
    processes: list[ProcessReport] = field(default_factory=list)
    sent: int = 0
    bytes: int = 0
    flood_seconds: float = 0.0
    stopped_by: str = ""
    paced_seconds: float = 0.0
    publish_errors: int = 0
    skipped_giants: int = 0
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [messages, bytes, queue deliveries]
    by_queue: dict[str, int] = field(default_factory=dict)
    verdicts: dict[str, dict[str, int]] = field(default_factory=dict)
    slipped: dict[str, list[str]] = field(default_factory=dict)  # kind -> variants not rejected by the codec
    drained: bool = False
    drain_seconds: float | None = None  # when a poll first saw no ready message left (then confirmed)
    drain_confirmed_seconds: float | None = None  # when rabbitmqctl confirmed no unacked ones either
    undrained: dict[str, Any] = field(default_factory=dict)
    # a queue that did not drain: the messages at its head that were delivered before and never acked
    stuck: dict[str, Any] = field(default_factory=dict)
    queues_after: dict[str, Any] = field(default_factory=dict)  # queue -> ready, consumers
    unacked_after: int | None = None  # deliveries unacknowledged on the vhost's consumer channels
    dead_letters: int | None = None
    dead_letter_bytes: int | None = None
    dead_letters_dropped: int | None = None
    # what `dead-letters` holds, read back (and put back): per flood kind and per queue it was refused on;
    # complete only if the queue dropped nothing and every message was read
    dead_lettered_by_kind: dict[str, int] = field(default_factory=dict)
    dead_lettered_by_queue: dict[str, int] = field(default_factory=dict)
    dead_letter_scan_complete: bool = False
    dead_letters_read: int = 0
    final_run_exit: int | None = None
    final_run_seconds: float | None = None
    final_run_output: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"ok": self.ok}


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _mib(n: int | None) -> str:
    return "—" if n is None else f"{n / MiB:,.1f}"


def markdown(r: Report) -> str:
    lines = ["## Malformed-message flood", ""]
    lines += ["| process | PID before | PID after | RSS before MiB | RSS peak MiB | RSS after MiB | delta MiB | "
              "broker connection lost |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for p in r.processes:
        after = str(p.pid_after) if p.alive else f"**died** (exit {p.exit_code})"
        delta = (f"{(p.rss_after - p.rss_before) / MiB:+,.1f}"
                 if p.rss_after is not None and p.rss_before is not None else "—")
        losses = sum(p.connection_losses.values())
        lines.append(f"| {p.name} | {p.pid_before} | {after} | {_mib(p.rss_before)} | {_mib(p.rss_peak)} | "
                     f"{_mib(p.rss_after)} | {delta} | {f'**{losses:,}**' if losses else 0} |")
    rate = r.sent / r.flood_seconds if r.flood_seconds else 0.0
    drain = f"{r.drain_seconds:.1f} s" if r.drained and r.drain_seconds is not None else \
        f"**not drained** after {r.options['drain_timeout']:g} s"
    if r.drained and r.drain_confirmed_seconds is not None:
        drain += f" (≤ {r.drain_confirmed_seconds:.1f} s)"
    dl_msgs = f"{r.dead_letters:,}" if r.dead_letters is not None else "—"
    dl_bytes = f"{r.dead_letter_bytes:,}" if r.dead_letter_bytes is not None else "—"
    dropped = f"{r.dead_letters_dropped:,}" if r.dead_letters_dropped is not None else "—"
    final = ("skipped (master dead)" if r.final_run_exit is None and r.final_run_seconds is None
             else f"exit {r.final_run_exit}" + (f", {r.final_run_seconds:.1f} s" if r.final_run_seconds else ""))
    lines += ["", "| messages sent | bytes sent | flood duration | rate | stopped by | drain time | "
              "dead-letters msgs | dead-letters bytes | dropped from dead-letters | follow-up `bmesos run` |",
              "| ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |",
              f"| {r.sent:,} | {r.bytes:,} ({r.bytes / MiB:,.1f} MiB) | {r.flood_seconds:.1f} s | {rate:,.0f} msg/s | "
              f"{r.stopped_by} | {drain} | {dl_msgs} | {dl_bytes} | "
              f"{dropped} | {final} |"]
    if r.paced_seconds or r.publish_errors or r.skipped_giants:
        lines += ["", f"Paced (backlog above {r.options['max_backlog']:,}) for {r.paced_seconds:.1f} s; "
                      f"{r.publish_errors} publish errors; {r.skipped_giants} giant messages skipped (byte budget)."]
    scan = "" if r.dead_letter_scan_complete else \
        f" (read {r.dead_letters_read:,} of {r.dead_letters or 0:,}; dropped {r.dead_letters_dropped or 0:,})"
    lines += ["", f"| kind | messages | bytes | dead-lettered / deliveries{scan} | "
                  "codec here: rejected / decoded / raised (of samples) |",
              "| --- | ---: | ---: | ---: | --- |"]
    for kind in KINDS:
        if kind not in r.by_kind:
            continue
        count, size, deliveries = r.by_kind[kind]
        dead = f"{r.dead_lettered_by_kind.get(kind, 0):,} / {deliveries:,}"
        v = r.verdicts.get(kind, {})
        raised = {k: n for k, n in v.items() if k.startswith("raised")}
        text = f"{v.get('rejected', 0)} / {v.get('decoded', 0)} / " + \
            (", ".join(f"{n} {k}" for k, n in raised.items()) or "0")
        if kind in VALID_BY_DESIGN:
            text += " (valid envelopes on purpose)"
        lines.append(f"| {kind} | {count:,} | {size:,} | {dead} | {text} |")
    other = r.dead_lettered_by_kind.get("(not from the flood)")
    if other:
        lines += ["", f"{other:,} messages in dead-letters are not the flood's own."]
    lines += ["", "| input queue | consumer | messages sent to it | dead-lettered from it | "
                  "ready after the drain | consumers |",
              "| --- | --- | ---: | ---: | ---: | ---: |"]
    owners = input_queues()
    for q, owner in owners.items():
        after = r.queues_after.get(q, {})
        lines.append(f"| {q} | {owner} | {r.by_queue.get(q, 0):,} | {r.dead_lettered_by_queue.get(q, 0):,} | "
                     f"{after.get('ready', '?')} | {after.get('consumers', '?')} |")
    if r.unacked_after is not None:
        lines += ["", f"Deliveries still unacknowledged on the vhost's consumer channels after the drain: "
                      f"{r.unacked_after:,}."]
    slipped = {k: v for k, v in r.slipped.items() if k not in VALID_BY_DESIGN}
    if slipped:
        lines += ["", "Not rejected by `codec.decode` here (examples):"]
        lines += [f"- {k}: " + "; ".join(v) for k, v in slipped.items()]
    for p in r.processes:
        if p.alive and not p.connection_losses and not p.tracebacks:
            continue
        head = f"**{p.name} died** (exit {p.exit_code})" if not p.alive else f"**{p.name}** stayed up, but"
        if not p.alive and p.died_at is not None and p.died_after_messages is not None:
            head += f" {p.died_at:.1f} s into the flood, after about {p.died_after_messages:,} messages"
        lines += ["", head + ":"]
        if p.connection_losses:
            reasons = ", ".join(f"{why} ({n:,} times)"
                                for why, n in sorted(p.connection_losses.items(), key=lambda x: -x[1]))
            lines.append(f"- lost its broker connection {sum(p.connection_losses.values()):,} times: {reasons}")
        if p.tracebacks:
            lines.append(f"- {p.tracebacks} tracebacks in its log; the last: `{p.exception}`")
    for q, info in r.stuck.items():
        lines += ["", f"`{q}` ({input_queues().get(q, '?')}) did not drain: of the first {info.get('read', 0)} "
                      f"messages at its head, {info.get('redelivered', 0)} had been delivered before and never acked "
                      f"(up to {info.get('max_delivery_count', 0)} times), kinds {info.get('kinds', {})}"
                      + (f"; {info['error']}" if info.get("error") else "")]
        for culprit in info.get("culprits", []):
            lines.append(f"- makes `codec.decode` raise: {culprit}")
    if r.final_run_output and r.final_run_exit != 0:
        lines += ["", "Follow-up run output (tail):", "", "```", r.final_run_output.strip()[-1500:], "```"]
    lines += ["", "**Result: OK**" if r.ok else "**Result: FAILED** — " + "; ".join(r.problems)]
    return "\n".join(lines)


# -- the flood itself ------------------------------------------------------------------------------


def flood(broker: Broker, options: FloodOptions, report: Report, progress: list[int],
          log: Callable[[str], None]) -> None:
    """Publish the malformed messages (bounded in count, time and bytes); fill ``report``."""
    maker = Malformer(options)
    inputs = list(input_queues())
    deadline = time.monotonic() + options.seconds
    started = time.monotonic()
    last_check = 0.0
    samples: Counter[str] = Counter()
    report.stopped_by = "messages"
    seq = 0
    next_log = started + 5
    for seq in range(options.messages):
        now = time.monotonic()
        if now >= deadline:
            report.stopped_by = "seconds"
            break
        if seq % 100 == 0 or now - last_check > 0.5:  # pace on queues whose consumer is there
            last_check = now
            while time.monotonic() < deadline:
                depths = broker.depths(inputs)
                backlog = sum(d.ready for d in depths.values() if d is not None and d.consumers > 0)
                if backlog <= options.max_backlog and not broker.blocked:
                    break
                time.sleep(0.05)
                report.paced_seconds += 0.05
            if time.monotonic() >= deadline:
                report.stopped_by = "seconds"
                break
        msg = maker.message(seq)
        if msg is None:
            continue
        if msg.kind in GIANT_KINDS and report.bytes + len(msg.body) > options.max_bytes:
            report.skipped_giants += 1
            continue
        if report.bytes + len(msg.body) > options.max_bytes:
            report.stopped_by = "max-bytes"
            break
        if samples[msg.kind] < options.verdict_samples or msg.kind in GIANT_KINDS:
            samples[msg.kind] += 1
            v = verdict(msg.body)
            report.verdicts.setdefault(msg.kind, {})
            report.verdicts[msg.kind][v] = report.verdicts[msg.kind].get(v, 0) + 1
            if v != "rejected" and not msg.variant.startswith("valid "):
                examples = report.slipped.setdefault(msg.kind, [])
                if len(examples) < 4:
                    examples.append(f"{msg.variant} on {msg.target.exchange}/{brief(msg.target.key, 30)} ({v})")
        try:
            broker.publish(msg)
        except (pika.exceptions.AMQPError, OSError) as exc:
            report.publish_errors += 1
            log(f"publish of message {seq} ({msg.kind}: {msg.variant}) failed: {exc!r}; reconnecting")
            if report.publish_errors > 20 or time.monotonic() >= deadline:
                report.stopped_by = "publish errors"
                break
            broker.close()
            broker.connect()
            continue
        report.sent += 1
        report.bytes += len(msg.body)
        progress[0] = report.sent
        counts = report.by_kind.setdefault(msg.kind, [0, 0, 0])
        counts[0] += 1
        counts[1] += len(msg.body)
        counts[2] += len(msg.target.queues)
        for q in msg.target.queues:
            report.by_queue[q] = report.by_queue.get(q, 0) + 1
        if time.monotonic() >= next_log:
            next_log += 5
            log(f"{report.sent:,} messages, {report.bytes / MiB:,.1f} MiB sent")
    report.flood_seconds = time.monotonic() - started


def wait_drained(broker: Broker, owners: dict[str, str], alive: Callable[[str], bool], timeout: float,
                 report: Report) -> None:
    """Poll until no input queue whose consumer lives has a ready message (passive declares) and, with a
    node, no consuming channel of the vhost holds an unacknowledged delivery (``rabbitmqctl``: it takes
    about a second, so it bounds the drain time from above); or ``timeout``. Queues of dead consumers
    cannot drain."""
    started = time.monotonic()
    deadline = started + timeout
    pending: dict[str, Any] = {}
    while time.monotonic() < deadline:
        polled = time.monotonic()
        depths = broker.depths(list(owners))
        pending = {q: d.ready for q, d in depths.items() if d is not None and d.ready > 0 and alive(owners[q])}
        if not pending:
            unacked = broker.unacked_on_consumer_channels()
            if unacked is None or unacked == 0:
                report.drained, report.drain_seconds = True, polled - started
                if unacked is not None:
                    report.drain_confirmed_seconds = time.monotonic() - started
                break
            pending = {"(unacknowledged on consumer channels)": unacked}
        time.sleep(0.1)
    else:
        report.undrained = pending
    dead = {q: owner for q, owner in owners.items() if not alive(owner)}
    if dead:
        report.drained = False
        report.undrained.update({q: f"consumer ({owner}) is dead" for q, owner in dead.items()})


def inspect_stuck(broker: Broker, queue: str, limit: int = 300) -> dict[str, Any]:
    """The messages at the head of a queue that did not drain which its consumer had been given before
    and never acked (RabbitMQ marks them redelivered; a quorum queue counts the deliveries), by kind,
    and those that make ``codec.decode`` raise something else than ProtocolError: what killed (or keeps
    killing) the consumer. Nothing is acked: they all go back to the queue."""
    assert broker.connection is not None
    channel = broker.connection.channel()
    kinds: Counter[str] = Counter()
    culprits: list[str] = []
    redelivered = read = max_count = 0
    try:
        for _ in range(limit):
            method, props, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                break
            read += 1
            headers = props.headers or {}
            count = headers.get("x-delivery-count")
            if not (method.redelivered or count):
                continue
            max_count = max(max_count, int(count or 1))
            redelivered += 1
            kind = str(headers.get("x-flood-kind", "not from the flood"))
            kinds[kind] += 1
            v = verdict(body)
            if v.startswith("raised") and len(culprits) < 5:
                culprits.append(f"message {headers.get('x-flood-seq')} ({kind}: {headers.get('x-flood-variant')}) "
                                f"-> {v}")
    except pika.exceptions.AMQPError as exc:
        return {"read": read, "redelivered": redelivered, "kinds": dict(kinds), "culprits": culprits,
                "error": repr(exc)}
    finally:
        with contextlib.suppress(Exception):
            channel.close()  # unacked messages go back to the queue
    return {"read": read, "redelivered": redelivered, "max_delivery_count": max_count, "kinds": dict(kinds),
            "culprits": culprits}


def dead_letters_full(report: Report) -> bool:
    """Whether `dead-letters` reached its bounds (this tree's topology), so it may have dropped some."""
    max_len = getattr(topology, "DEAD_LETTER_MAX_LENGTH", None)
    max_bytes = getattr(topology, "DEAD_LETTER_MAX_BYTES", None)
    return ((max_len is not None and (report.dead_letters or 0) >= 0.98 * max_len)
            or (max_bytes is not None and (report.dead_letter_bytes or 0) >= 0.8 * max_bytes))


def scan_dead_letters(broker: Broker, report: Report, limit: int = 50_000, max_bytes: int = 512 * MiB,
                      idle: float = 2.0) -> None:
    """Read ``dead-letters`` (without acking: everything goes back) and count its flood messages per
    kind (header ``x-flood-kind``) and per queue that refused them (``x-bmesos-queue``, or RabbitMQ's
    ``x-death`` for a rejected delivery)."""
    assert broker.connection is not None
    channel = broker.connection.channel()
    # nothing is acked, so the prefetch bounds the reading (and 0, "unlimited", is 2,000 on a quorum queue)
    channel.basic_qos(prefetch_count=min(limit, 65535))
    seen = size = 0
    try:
        for method, props, body in channel.consume("dead-letters", inactivity_timeout=idle):
            if method is None:
                break
            seen += 1
            size += len(body)
            headers = props.headers or {}
            kind = str(headers.get("x-flood-kind", "(not from the flood)"))
            queue = headers.get("x-bmesos-queue")
            if queue is None and headers.get("x-death"):
                queue = headers["x-death"][0].get("queue")
            report.dead_lettered_by_kind[kind] = report.dead_lettered_by_kind.get(kind, 0) + 1
            q = str(queue)
            report.dead_lettered_by_queue[q] = report.dead_lettered_by_queue.get(q, 0) + 1
            if seen >= min(limit, 65535) or size >= max_bytes:
                break
    except pika.exceptions.AMQPError as exc:
        print(f"flood: reading dead-letters failed: {exc!r}", file=sys.stderr)
        return
    finally:
        with contextlib.suppress(Exception):
            channel.cancel()
            channel.close()  # nothing was acked: every message goes back
    report.dead_letters_read = seen
    report.dead_letter_scan_complete = (seen == report.dead_letters and seen < min(limit, 65535)
                                        and size < max_bytes and not report.dead_letters_dropped)
    if report.dead_letter_scan_complete:
        report.dead_letter_bytes = size  # message bodies; rabbitmqctl has no bytes for a quorum queue


def final_run(procs: ProcessGroup, url: str, timeout: float, report: Report) -> None:
    started = time.monotonic()
    run = procs.bmesos("final-run", "run", "--broker", url, "--count", "5", "--cpus", "0.1", "--mem", "16",
                       "--timeout", f"{timeout:g}", "--", "true")
    try:
        code: int | None = run.wait(timeout + 30)
    except subprocess.TimeoutExpired:
        run.kill()
        code = None
    report.final_run_seconds = time.monotonic() - started
    report.final_run_exit = code
    report.final_run_output = run.output()[-3000:]


def run_flood(url: str, procs: ProcessGroup, work_dir: Path, options: FloodOptions, *,
              node: RabbitNode | None = None, log: Callable[[str], None] | None = None) -> Report:
    """Start the cluster on ``url`` (children in ``procs``), flood it, measure, and return the report.
    The caller stops ``procs`` (and its broker) afterwards."""
    say = log or (lambda line: print(f"flood: {line}", file=sys.stderr, flush=True))
    report = Report(options=dataclasses.asdict(options))
    say("starting the master, agents a1 a2 and the framework")
    cluster = start_cluster(procs, url, work_dir)
    owners = input_queues()
    broker = Broker(url, node)
    try:
        missing = [q for q, d in broker.depths(list(owners)).items() if d is None]
        if missing:
            raise RuntimeError(f"input queues missing after start-up: {missing}")
        before = {name: sample(p) for name, p in cluster.items()}
        log_start = {name: len(p.output()) for name, p in cluster.items()}
        progress = [0]
        monitor = Monitor(cluster, lambda: progress[0])
        monitor.start()
        say(f"flooding: {options.messages:,} messages at most, {options.seconds:g} s at most")
        try:
            flood(broker, options, report, progress, say)
        finally:
            monitor.stop()
        say(f"flood done: {report.sent:,} messages, {report.bytes / MiB:,.1f} MiB in {report.flood_seconds:.1f} s "
            f"({report.stopped_by}); waiting for the inputs to drain")

        def alive(owner: str) -> bool:
            return cluster[owner].popen.poll() is None

        wait_drained(broker, owners, alive, options.drain_timeout, report)
        say(f"drained in {report.drain_seconds:.1f} s" if report.drained else f"not drained: {report.undrained}")
        after = {name: sample(p) for name, p in cluster.items()}
        depths = broker.depths([*owners, "dead-letters", "dead-letters.dropped"])
        for q in owners:
            d = depths.get(q)
            report.queues_after[q] = {"ready": d.ready, "consumers": d.consumers} if d is not None else {}
        report.unacked_after = broker.unacked_on_consumer_channels()
        if (d := depths.get("dead-letters")) is not None:
            report.dead_letters = d.ready  # nobody consumes it: ready is all of it
        if (d := depths.get("dead-letters.dropped")) is not None:
            report.dead_letters_dropped = d.ready
        scan_dead_letters(broker, report)
        # the active master drains `dead-letters.dropped` and logs its count every 10 s: wait for one more
        # report after the drain so that it covers the whole flood
        if dead_letters_full(report) and cluster["master"].alive():
            time.sleep(DROPPED_REPORT_WAIT)
            counts = DROPPED_LOG.findall(cluster["master"].output())
            if counts:
                report.dead_letters_dropped = max(report.dead_letters_dropped or 0, int(counts[-1]))
                report.dead_letter_scan_complete = False
        for name in cluster:
            b, a = before[name], after[name]
            p = ProcessReport(name, b.pid, a.pid if a.alive else None, a.alive, a.exit_code, b.rss,
                              monitor.peak.get(name), a.rss)
            if name in monitor.deaths:
                p.died_at, p.died_after_messages = monitor.deaths[name]
            report.processes.append(p)
        for q in report.undrained:
            if q in owners:
                report.stuck[q] = inspect_stuck(broker, q)
        if cluster["master"].alive():
            say("follow-up: bmesos run --count 5 --cpus 0.1 --mem 16 -- true")
            final_run(procs, url, options.run_timeout, report)
        for p in report.processes:  # alive still, after the follow-up run too?
            s = sample(cluster[p.name])
            if p.alive and (not s.alive or s.create_time != before[p.name].create_time):
                p.alive, p.pid_after, p.exit_code = False, None, s.exit_code
            log = cluster[p.name].output()[log_start[p.name]:]
            p.connection_losses = dict(connection_losses(log).most_common(6))
            p.tracebacks = log.count("Traceback (most recent call last):")
            p.exception = last_exception(log)
    finally:
        broker.close()
    for p in report.processes:
        if not p.alive:
            report.problems.append(f"{p.name} died (exit {p.exit_code})"
                                   + (f": {p.exception}" if p.exception else ""))
        elif p.connection_losses:  # its consumer crashed and came back: a restart, if not of the process
            top = max(p.connection_losses.items(), key=lambda x: x[1])[0]
            report.problems.append(f"{p.name} lost its broker connection {sum(p.connection_losses.values()):,} "
                                   f"times (most often: {top})")
    if not report.drained:
        report.problems.append(f"inputs not drained within {options.drain_timeout:g} s: {report.undrained}")
    if report.final_run_exit != 0:
        report.problems.append("follow-up run " + ("skipped: the master is dead" if report.final_run_seconds is None
                                                   else f"failed (exit {report.final_run_exit})"))
    return report


# -- command line -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/flood.py", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="kinds: " + ", ".join(KINDS))
    d = FloodOptions()
    parser.add_argument("--messages", type=int, default=d.messages, help="messages to send at most")
    parser.add_argument("--seconds", type=float, default=d.seconds, help="hard time bound of the flood")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--max-bytes", type=int, default=d.max_bytes, help="bytes of the whole flood at most")
    parser.add_argument("--huge-chars", type=int, default=d.huge_chars, help="length of the huge strings")
    parser.add_argument("--huge-count", type=int, default=None, help="huge-string messages (default: N/2500, 1-40)")
    parser.add_argument("--near-limit-count", type=int, default=None,
                        help="messages of about 8 MiB (default: N/25000, 1-4)")
    parser.add_argument("--port-ranges", type=int, default=d.port_ranges, help="ranges of the port-flood REGISTER")
    parser.add_argument("--port-flood-count", type=int, default=None,
                        help="port-flood REGISTERs (default: 1 below 50,000 messages, else 2)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated kinds to send")
    parser.add_argument("--exclude-kinds", default="", help="comma-separated kinds not to send")
    parser.add_argument("--max-backlog", type=int, default=d.max_backlog,
                        help="pause while more messages than this wait in consumed input queues")
    parser.add_argument("--drain-timeout", type=float, default=d.drain_timeout)
    parser.add_argument("--run-timeout", type=float, default=d.run_timeout, help="--timeout of the follow-up run")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON (- for stdout)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, broker data) afterwards")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    excluded = {k.strip() for k in args.exclude_kinds.split(",") if k.strip()}
    unknown = (set(kinds) | excluded) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}; kinds are {', '.join(KINDS)}")
    args.kinds = tuple(k for k in kinds if k not in excluded)
    if not args.kinds:
        parser.error("no kinds left to send")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    options = FloodOptions(
        messages=args.messages, seconds=args.seconds, seed=args.seed, max_bytes=args.max_bytes,
        huge_chars=args.huge_chars, huge_count=args.huge_count, near_limit_count=args.near_limit_count,
        port_ranges=args.port_ranges, port_flood_count=args.port_flood_count, kinds=args.kinds,
        max_backlog=args.max_backlog, drain_timeout=args.drain_timeout, run_timeout=args.run_timeout)

    def interrupt(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    work = Path(tempfile.mkdtemp(prefix="bmesos-flood-"))
    node = RabbitNode(work / "rabbit", vhosts=1)
    procs = ProcessGroup(work / "logs")
    report: Report | None = None
    status = 1
    try:
        print(f"flood: starting a private RabbitMQ node in {work}", file=sys.stderr, flush=True)
        node.start()
        report = run_flood(node.url(node.fresh_vhost()), procs, work, options, node=node)
        status = 0 if report.ok else 1
    except KeyboardInterrupt:
        print("flood: interrupted; stopping everything", file=sys.stderr, flush=True)
        status = 130
    except (WaitTimeout, RuntimeError) as exc:
        print(f"flood: {exc}", file=sys.stderr, flush=True)
    except Exception:
        traceback.print_exc()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not cut the clean-up short
        try:
            procs.stop_all()
        finally:
            node.stop()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if args.keep:
            print(f"flood: work dir kept: {work}", file=sys.stderr)
        elif status != 0:  # the children's logs tell what happened; the broker's data is only big
            shutil.rmtree(work / "rabbit" / "mnesia", ignore_errors=True)
            print(f"flood: logs kept in {work / 'logs'}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if report is not None:
        print(markdown(report))
        if args.json:
            text = json.dumps(report.to_json(), indent=2, default=str)
            if args.json == "-":
                print(text)
            else:
                Path(args.json).write_text(text + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
