"""docs/protocol.md is normative, so it must not drift from the code: these tests read it back.

Every registered message type and nested record must have a field table in the doc whose rows are
exactly the dataclass' fields, with the right wire type and required/default column; every exchange,
queue, dead-letter header, task state and limit must be there; the worked examples must decode with the
real codec; the plain-pika sketch must compile and must not import broker_mesos.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import json
import re
import types
import typing
from pathlib import Path
from typing import Any

import msgpack
import pytest

from broker_mesos.bus import topology
from broker_mesos.core import codec, protocol
from broker_mesos.core.resources import _NAME, Resources

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
NESTED = (protocol.CommandInfo, protocol.TaskInfo, protocol.TaskStatus, protocol.Offer, protocol.AgentTask,
          protocol.Usage, protocol.ExecutorInfo, protocol.AgentExecutor, protocol.HealthCheck)
ROW = re.compile(r"^\|\s*`(?P<field>[a-z_]+)`\s*\|\s*(?P<type>[^|]+?)\s*\|\s*(?P<default>[^|]+?)\s*\|")


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC_PATH.read_text()


def _blocks(doc: str) -> dict[str, list[tuple[str, str, str]]]:
    """Field-table rows under each bold heading line (``**SUBSCRIBE**``, ``**REVIVE** / **SUPPRESS**``)."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    current: list[str] = []
    for line in doc.splitlines():
        if line.startswith("#"):
            current = []
        elif line.startswith("**"):
            current = re.findall(r"\*\*([A-Za-z_.]+)\*\*", line.split(" — ")[0])
            for name in current:
                out.setdefault(name, [])
        elif (m := ROW.match(line)) and current:
            for name in current:
                out[name].append((m["field"], m["type"], m["default"].replace("`", "").strip()))
    return out


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


def _wire_type(tp: Any, meta: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _wire_type(inner, meta) + "?"
    if tp is str:
        return "id" if meta.get("id") else "str"
    if tp is bool:
        return "bool"
    if tp is bytes:
        return "bytes"
    if tp is int:
        return "int"
    if tp is float:
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and hi is not None:
            return f"float {_num(lo)}..{_num(hi)}"
        return f"float ≥ {_num(lo)}" if lo is not None else "float"
    if tp is Resources:
        return "Resources"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp.__name__
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return "{" + tp.__name__ + "}"
    if origin is list:
        return f"list<{_wire_type(typing.get_args(tp)[0], meta)}>"
    if origin is dict:
        val = typing.get_args(tp)[1]
        return "map<str,any>" if val is Any else f"map<str,{_wire_type(val, {})}>"
    raise AssertionError(f"no wire type for {tp!r}")


def _expected_rows(cls: type) -> dict[str, tuple[str, str]]:
    hints = typing.get_type_hints(cls)
    rows = {}
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            default = "req."
        else:
            value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if value is None:
                default = "absent"
            elif isinstance(value, Resources) or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
                default = "{}"
            elif isinstance(value, bytes):
                default = json.dumps(value.decode())
            else:
                default = json.dumps(value.value if isinstance(value, enum.Enum) else value, ensure_ascii=False)
        rows[f.name] = (_wire_type(hints[f.name], f.metadata), default)
    return rows


@pytest.mark.parametrize("name", sorted(codec.registered_types()) + [c.__name__ for c in NESTED])
def test_every_body_has_an_exact_field_table(doc: str, name: str) -> None:
    cls = codec.registered_types().get(name) or next(c for c in NESTED if c.__name__ == name)
    rows = _blocks(doc).get(name)
    assert rows is not None, f"docs/protocol.md has no **{name}** heading"
    documented = {field: (wire, default) for field, wire, default in rows}
    expected = _expected_rows(cls)
    assert sorted(documented) == sorted(expected), f"{name}: documented fields differ from the dataclass"
    for field, (wire, default) in expected.items():
        doc_wire, doc_default = documented[field]
        assert doc_wire == wire, f"{name}.{field}: doc says type {doc_wire!r}, code has {wire!r}"
        assert doc_default == default or doc_default.startswith(default + " "), (
            f"{name}.{field}: doc says default {doc_default!r}, code has {default!r}")


def test_every_message_type_and_field_is_mentioned(doc: str) -> None:
    for name, cls in codec.registered_types().items():
        assert f"**{name}**" in doc, name
        for f in dataclasses.fields(cls):
            assert f"`{f.name}`" in doc, f"{name}.{f.name}"


def test_every_exchange_is_documented_with_type_and_durability(doc: str) -> None:
    for ex in topology.EXCHANGES:
        row = rf"^\| `{re.escape(ex.name)}` \| {ex.type} \| {'yes' if ex.durable else 'no'} \|"
        assert re.search(row, doc, re.MULTILINE), f"exchange {ex.name} ({ex.type}) missing from the table"


def test_every_queue_is_documented_with_type_and_bindings(doc: str) -> None:
    queues = [*topology.master_queues(), *topology.DEAD_LETTER_QUEUES,
              topology.agent_tasks_queue("<agent_id>"), *topology.framework_queues("<framework_id>")]
    call_types = [topology.call_type(c) for c in protocol.FRAMEWORK_CALLS]
    for q in queues:
        m = re.search(rf"^\| `{re.escape(q.name)}` \|(.*)$", doc, re.MULTILINE)
        assert m, f"queue {q.name} missing from the queue table"
        cells = [c.strip() for c in m[1].split("|")]
        kind = "quorum" if q.arguments.get("x-queue-type") == "quorum" else "classic"
        assert cells[0] == kind, f"{q.name}: doc says {cells[0]}, topology says {kind}"
        assert ("DLX" in cells[2]) == ("x-dead-letter-exchange" in q.arguments), q.name
        for exchange, key in q.bindings:
            assert f"`{exchange}`" in cells[3], f"{q.name}: binding to {exchange} missing"
            if exchange == topology.MASTER and key in call_types:
                assert f"each of the {len(call_types)} call types" in cells[3]
                assert f"`{key}`" in doc
            else:
                assert f"`{key}`" in cells[3] or (key == "" and '`""`' in cells[3]), f"{q.name}: key {key!r}"


def test_routing_keys_headers_states_and_limits(doc: str) -> None:
    for key in (topology.KEY_REGISTER, topology.KEY_HEARTBEAT):
        assert f"`{key}`" in doc
    for header in (topology.HEADER_REASON, topology.HEADER_ORIGINAL_EXCHANGE,
                   topology.HEADER_ORIGINAL_ROUTING_KEY, topology.HEADER_QUEUE):
        assert f"| `{header}` |" in doc, header
    for state in protocol.TaskState:
        row = rf"^\| `{state.value}` \| (\*\*yes\*\*|no) \|"
        m = re.search(row, doc, re.MULTILINE)
        assert m, f"{state.value} missing from the task state table"
        assert (m[1] == "**yes**") == state.terminal, f"{state.value}: terminal column is wrong"
    assert topology.status_key("fw1", "agent-7", protocol.TaskState.FAILED) == "fw1.agent-7.TASK_FAILED"
    for text in ("`<framework_id>.<agent_id>.<TASK_STATE>`", "`#`", "`fw1.#`", "`*.*.TASK_FAILED`"):
        assert text in doc, text
    assert codec.ID_PATTERN.pattern.strip("^$") in doc
    assert _NAME.pattern in doc
    assert codec.MAX_MESSAGE_BYTES == 8 * 1024 * 1024 and f"{codec.MAX_MESSAGE_BYTES:,}" in doc
    assert f"{codec.MAX_STRING:,}" in doc and f"{codec.MAX_LIST_ITEMS:,}" in doc
    assert f"MUST be `{codec.VERSION}`" in doc
    assert "application/msgpack" in doc


def _json_envelopes(doc: str) -> list[dict[str, Any]]:
    out = []
    for block in re.findall(r"```json\n(.*?)```", doc, re.DOTALL):
        if "…" not in block:
            out.append(json.loads(block))
    return out


def test_worked_examples_decode_with_the_real_codec(doc: str) -> None:
    envelopes = {env["type"]: env for env in _json_envelopes(doc)}
    assert {"SUBSCRIBE", "ACCEPT"} <= set(envelopes)
    for env in envelopes.values():
        decoded = codec.decode(msgpack.packb(env, use_bin_type=True))
        assert codec.to_wire(decoded.body) == env["body"], "the example is not in canonical wire form"
        raw = codec.encode(decoded.body, decoded.ts, decoded.id)
        assert f"{len(raw)} bytes of msgpack" in doc, f"{env['type']} is {len(raw)} bytes, the doc says otherwise"
    sub = codec.encode(codec.decode(msgpack.packb(envelopes["SUBSCRIBE"])).body, 1732560000.25,
                       envelopes["SUBSCRIBE"]["id"])
    assert "cb 41 d9 d1 31 20 10 00 00" in doc and sub.hex(" ").startswith("85 a1 76 01 a4 74 79 70 65")


def test_the_pika_sketch_is_python_without_broker_mesos(doc: str) -> None:
    (sketch,) = re.findall(r"```python\n(.*?)```", doc, re.DOTALL)
    tree = ast.parse(sketch)
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "pika" in imported and "msgpack" in imported
    assert "broker_mesos" not in imported
    terminal = {s.value for s in protocol.TERMINAL_STATES}
    assert all(f'"{s}"' in sketch for s in terminal), "the sketch's TERMINAL set misses a terminal state"
