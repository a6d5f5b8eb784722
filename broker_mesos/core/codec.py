"""The one codec: message bodies (frozen dataclasses) <-> msgpack envelopes, validated on decode.

Each body class is compiled once into a decoder that checks field names (unknown or missing), types,
ranges and identifier syntax, so a malformed message fails with one ``ProtocolError`` saying what is
wrong and never reaches the state machines. ``decode`` returns a validated ``Envelope`` or raises
``ProtocolError`` for any input bytes whatsoever.

Bounds (beyond each field's own type and range):

- ``MAX_MESSAGE_BYTES`` = 8 MiB per message;
- envelope ``id``: a string of 1-128 characters; envelope ``ts``: a finite number in
  ``[0, MAX_TIMESTAMP]``, ``MAX_TIMESTAMP`` = 1e11 seconds (the year 5138), so every consumer can turn
  it into a date;
- every map key is a string (a bytes key, which msgpack can carry, is refused);
- ``MAX_STRING`` = 65,536 characters per string, map keys included;
- ``MAX_DATA_BYTES`` = 262,144 bytes (256 KiB) per ``bytes`` field (msgpack bin: opaque framework data,
  ``TaskStatus.data`` and the framework messages); a bin anywhere else is refused;
- ``MAX_LIST_ITEMS`` = 100,000 items per list and entries per map;
- identifiers (``id_field``) match ``ID_PATTERN`` in full (no trailing newline, which ``$`` lets
  through with ``re.match``): 1-128 of ``A-Z a-z 0-9 _ -``; only a field declared
  ``id_field(empty_ok=True)`` may also be ``""`` (``TaskStatus.agent_id``: agent unknown);
- role names (``role_field``) match ``ROLE_PATTERN`` in full: ``*``, or 1-128 of ``A-Z a-z 0-9 _ . -`` not
  starting with ``.`` or ``-``;
- every float is finite; numbers are never booleans;
- free-form values (``Any``, e.g. ``EVENT.detail``) are JSON-like: null, booleans, integers, finite
  floats, strings, lists and string-keyed maps, nested at most ``MAX_ANY_DEPTH`` = 16 deep;
- ``Resources``: the bounds in ``broker_mesos.core.resources`` (``MAX_SCALAR``, ``MAX_RANGE_VALUE``,
  ``MAX_RANGES``, ``MAX_SET_ITEMS``, ``MAX_SET_ITEM_CHARS``, ``MAX_RESOURCE_NAMES``).

A reason quotes wire data in at most ``MAX_QUOTE`` = 100 characters, so a huge value never makes a huge
reason (reasons travel back to the sender and into the dead-letter header).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import types
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from broker_mesos.core.errors import ProtocolError, ResourceError
from broker_mesos.core.resources import Resources, brief

VERSION = 1
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_LIST_ITEMS = 100_000
MAX_STRING = 65_536
MAX_DATA_BYTES = 256 * 1024
MAX_TIMESTAMP = 1e11
MAX_ANY_DEPTH = 16
MAX_QUOTE = 100
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
ROLE_PATTERN = re.compile(r"^(\*|[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$")
USER_PATTERN = re.compile(r"[a-z_][a-z0-9_-]{0,31}")  # POSIX-portable user names, as useradd takes them

_ENVELOPE_FIELDS = frozenset({"v", "type", "id", "ts", "body"})

Decoder = Callable[[Any, str], Any]
Encoder = Callable[[Any], Any]

_REGISTRY: dict[str, type] = {}
_TYPE_OF: dict[type, str] = {}
_DECODERS: dict[type, Decoder] = {}
_ENCODERS: dict[type, Encoder] = {}


def message(type_name: str) -> Callable[[type], type]:
    """Register a body dataclass under its wire ``type`` name."""

    def register(cls: type) -> type:
        if type_name in _REGISTRY:
            raise RuntimeError(f"message type {type_name} registered twice")
        _REGISTRY[type_name] = cls
        _TYPE_OF[cls] = type_name
        return cls

    return register


def id_field(*, empty_ok: bool = False, **kwargs: Any) -> Any:
    """A string field that must be an identifier: safe in queue names and routing keys. ``empty_ok``
    also allows ``""``, for a field where "none" or "unknown" must not be spelled as a legal id."""
    return dataclasses.field(metadata={"id": True, "empty_ok": empty_ok}, **kwargs)


def user_field(**kwargs: Any) -> Any:
    """An OS user name (``USER_PATTERN``), or ``""`` for "the default"."""
    return dataclasses.field(metadata={"os_user": True}, **kwargs)


def role_field(**kwargs: Any) -> Any:
    """A string field that must be a role name (``ROLE_PATTERN``), checked alike in every message."""
    return dataclasses.field(metadata={"role": True}, **kwargs)


def bounded(lo: float | None = None, hi: float | None = None, **kwargs: Any) -> Any:
    """A numeric field with an inclusive range."""
    return dataclasses.field(metadata={"min": lo, "max": hi}, **kwargs)


@dataclass(frozen=True, slots=True)
class Envelope:
    """What travels: ``{"v": 1, "type": ..., "id": uuid, "ts": seconds, "body": {...}}``."""

    type: str
    id: str
    ts: float
    body: Any


# -- encoding ---------------------------------------------------------------------------------


def encode(body: Any, ts: float, msg_id: str | None = None) -> bytes:
    """Encode a registered body into envelope bytes."""
    cls = type(body)
    type_name = _TYPE_OF.get(cls)
    if type_name is None:
        raise TypeError(f"{cls.__name__} is not a registered message")
    env = {"v": VERSION, "type": type_name, "id": msg_id or uuid.uuid4().hex, "ts": ts,
           "body": _encoder_for(cls)(body)}
    return msgpack.packb(env, use_bin_type=True)


def to_wire(value: Any) -> Any:
    """The plain msgpack-able form of any body or value (used by docs and tests)."""
    if isinstance(value, Resources):
        return value.to_wire()
    return _encoder_for(type(value))(value) if dataclasses.is_dataclass(value) else value


def _encoder_for(cls: type) -> Encoder:
    enc = _ENCODERS.get(cls)
    if enc is None:
        enc = _compile_encoder(cls)
        _ENCODERS[cls] = enc
    return enc


def _compile_encoder(cls: type) -> Encoder:
    """Generate a straight-line encoder for ``cls`` (as dataclasses does for ``__init__``): offers
    and status updates are encoded by the thousand per round, so no per-field loop or lookup."""
    hints = typing.get_type_hints(cls)
    namespace: dict[str, Any] = {}
    lines = ["def enc(obj):", "    out = {}"]
    for i, f in enumerate(dataclasses.fields(cls)):
        field_encoder = _value_encoder(hints[f.name])
        lines.append(f"    v = obj.{f.name}")
        if hints[f.name] is bytes:  # opaque data, mostly empty: left out then (absent = b"", its default)
            lines.append(f"    if v: out[{f.name!r}] = v")
        elif field_encoder is None:
            lines.append(f"    if v is not None: out[{f.name!r}] = v")
        else:
            namespace[f"f{i}"] = field_encoder
            lines.append(f"    if v is not None: out[{f.name!r}] = f{i}(v)")
    lines.append("    return out")
    exec("\n".join(lines), namespace)  # the source is built above from field names only
    return namespace["enc"]  # type: ignore[no-any-return]


def _value_encoder(tp: Any) -> Encoder | None:
    """None means the value is already msgpack-able as it is."""
    origin = typing.get_origin(tp)
    if tp is Resources:
        return Resources.to_wire
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return lambda v: v.value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _encoder_for(tp)
    if origin in (list, tuple):
        inner = _value_encoder(typing.get_args(tp)[0])
        return (lambda v: [inner(x) for x in v]) if inner else list
    if origin is dict:
        inner = _value_encoder(typing.get_args(tp)[1])
        return (lambda v: {k: inner(x) for k, x in v.items()}) if inner else dict
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = _value_encoder(args[0])
        return (lambda v: None if v is None else inner(v)) if inner else None
    return None


# -- decoding ---------------------------------------------------------------------------------


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """msgpack keeps the last of two equal keys, another decoder may keep the first: a message that
    means two things to two readers is refused (about 7 % of decoding time for a 1,000-offer message)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _DuplicateKey
    return out


def decode(raw: bytes) -> Envelope:
    """Decode and validate envelope bytes, or raise ``ProtocolError`` with the reason (for any bytes)."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(raw)} bytes exceeds the {MAX_MESSAGE_BYTES} byte limit")
    try:
        env = msgpack.unpackb(raw, raw=False, strict_map_key=True, object_pairs_hook=_unique_keys)
    except _DuplicateKey:
        raise ProtocolError("a map has the same key twice (receivers could disagree on its value)") from None
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise ProtocolError(f"not a msgpack message: {exc.__class__.__name__}") from None
    if not isinstance(env, dict):
        raise ProtocolError("envelope must be a map")
    _check_keys(env, "envelope")
    missing = _ENVELOPE_FIELDS - env.keys()
    if missing:
        raise ProtocolError(f"envelope is missing {sorted(missing)}")
    if env.keys() - _ENVELOPE_FIELDS:
        raise ProtocolError(f"envelope has unknown fields {_quote(sorted(env.keys() - _ENVELOPE_FIELDS))}")
    if type(env["v"]) is not int or env["v"] != VERSION:
        raise ProtocolError(f"unsupported protocol version {_quote(env['v'])} (this side speaks {VERSION})")
    type_name = env["type"]
    cls = _REGISTRY.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {_quote(type_name)}")
    if not isinstance(env["id"], str) or not 0 < len(env["id"]) <= 128:
        raise ProtocolError("envelope id must be a string of 1-128 characters")
    ts = env["ts"]
    if not _is_number(ts) or not math.isfinite(ts) or not 0 <= ts <= MAX_TIMESTAMP:
        raise ProtocolError(f"envelope ts must be a number of seconds in [0, {MAX_TIMESTAMP:g}]")
    try:
        body = decode_body(cls, env["body"])
    except ProtocolError:
        raise
    except Exception as exc:  # the last fence: a decoder bug must still be the sender's ProtocolError
        raise ProtocolError(f"body of {type_name} could not be decoded ({exc.__class__.__name__})") from None
    return Envelope(type_name, env["id"], float(ts), body)


def decode_body(cls: type, data: Any, where: str = "body") -> Any:
    """Decode and validate one body (or nested record) of type ``cls`` from its wire form."""
    return _decoder_for(cls)(data, where)


def _quote(value: Any) -> str:
    return brief(value, MAX_QUOTE)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_keys(data: dict[Any, Any], where: str) -> None:
    for k in data:
        if not isinstance(k, str):
            raise ProtocolError(f"{where} keys must be strings, not {type(k).__name__} ({_quote(k)})")
        if len(k) > MAX_STRING:
            raise ProtocolError(f"{where} has a key longer than {MAX_STRING} characters")


def _key_path(where: str, key: str) -> str:
    return f"{where}.{key}" if len(key) <= 40 else f"{where}.{key[:37]}..."


def _decoder_for(cls: type) -> Decoder:
    dec = _DECODERS.get(cls)
    if dec is None:
        dec = _compile_decoder(cls)
        _DECODERS[cls] = dec
    return dec


def _compile_decoder(cls: type) -> Decoder:
    hints = typing.get_type_hints(cls)
    specs: list[tuple[str, Decoder, bool]] = []
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        specs.append((f.name, _value_decoder(hints[f.name], f.metadata), required))
    names = {name for name, _, _ in specs}

    def dec(data: Any, where: str) -> Any:
        if not isinstance(data, dict):
            raise ProtocolError(f"{where} must be a map")
        _check_keys(data, where)
        unknown = data.keys() - names
        if unknown:
            raise ProtocolError(f"{where} has unknown fields {_quote(sorted(unknown))}")
        kwargs = {}
        for name, field_dec, required in specs:
            if name in data:
                kwargs[name] = field_dec(data[name], f"{where}.{name}")
            elif required:
                raise ProtocolError(f"{where} is missing field {name!r}")
        return cls(**kwargs)

    return dec


def _value_decoder(tp: Any, meta: Any) -> Decoder:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = _value_decoder(args[0], meta)
        return lambda v, w: None if v is None else inner(v, w)
    if tp is str:
        is_id, empty_ok, is_role = bool(meta.get("id")), bool(meta.get("empty_ok")), bool(meta.get("role"))
        is_user = bool(meta.get("os_user"))

        def dec_str(v: Any, w: str) -> str:
            if not isinstance(v, str):
                raise ProtocolError(f"{w} must be a string, not {type(v).__name__}")
            if len(v) > MAX_STRING:
                raise ProtocolError(f"{w} is longer than {MAX_STRING} characters")
            if is_id and not ID_PATTERN.fullmatch(v) and not (empty_ok and v == ""):
                raise ProtocolError(f"{w} {_quote(v)} is not an identifier (1-128 of A-Z a-z 0-9 _ -)")
            if is_user and v and not USER_PATTERN.fullmatch(v):
                raise ProtocolError(f"{w} {_quote(v)} is not a user name (1-32 of a-z 0-9 _ - starting with a-z or _)")
            if is_role and not ROLE_PATTERN.fullmatch(v):
                raise ProtocolError(f"{w} {_quote(v)} is not a role name "
                                    "(*, or 1-128 of A-Z a-z 0-9 _ . - not starting with . or -)")
            return v

        return dec_str
    if tp is bytes:
        def dec_bytes(v: Any, w: str) -> bytes:
            if not isinstance(v, bytes):
                raise ProtocolError(f"{w} must be bytes (msgpack bin), not {type(v).__name__}")
            if len(v) > MAX_DATA_BYTES:
                raise ProtocolError(f"{w} has {len(v)} bytes, more than {MAX_DATA_BYTES}")
            return v

        return dec_bytes
    if tp is bool:
        def dec_bool(v: Any, w: str) -> bool:
            if not isinstance(v, bool):
                raise ProtocolError(f"{w} must be a boolean")
            return v

        return dec_bool
    if tp in (int, float):
        lo, hi = meta.get("min"), meta.get("max")
        want_int = tp is int

        def dec_num(v: Any, w: str) -> Any:
            if not _is_number(v) or (want_int and not isinstance(v, int)):
                raise ProtocolError(f"{w} must be {'an integer' if want_int else 'a number'}")
            if not want_int and not math.isfinite(v):
                raise ProtocolError(f"{w} must be finite")
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise ProtocolError(f"{w} = {v} is outside [{lo}, {hi}]")
            return v if want_int else float(v)

        return dec_num
    if tp is Resources:
        def dec_res(v: Any, w: str) -> Resources:
            if not isinstance(v, dict):
                raise ProtocolError(f"{w} must be a map")
            try:
                return Resources.from_wire(v)
            except ResourceError as exc:
                raise ProtocolError(f"{w}: {exc}") from None

        return dec_res
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        allowed = {m.value: m for m in tp}

        def dec_enum(v: Any, w: str) -> Any:
            try:
                return allowed[v]
            except (KeyError, TypeError):
                raise ProtocolError(f"{w} must be one of {sorted(allowed)}") from None

        return dec_enum
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return lambda v, w: _decoder_for(tp)(v, w)
    if origin in (list, tuple):
        inner = _value_decoder(typing.get_args(tp)[0], meta)
        make = tuple if origin is tuple else list

        def dec_list(v: Any, w: str) -> Any:
            if not isinstance(v, list):  # not tuple: msgpack's ExtType is one
                raise ProtocolError(f"{w} must be a list")
            if len(v) > MAX_LIST_ITEMS:
                raise ProtocolError(f"{w} has more than {MAX_LIST_ITEMS} items")
            return make(inner(x, f"{w}[{i}]") for i, x in enumerate(v))

        return dec_list
    if origin is dict:
        inner = _value_decoder(typing.get_args(tp)[1], {})

        def dec_dict(v: Any, w: str) -> Any:
            if not isinstance(v, dict):
                raise ProtocolError(f"{w} must be a map")
            if len(v) > MAX_LIST_ITEMS:
                raise ProtocolError(f"{w} has more than {MAX_LIST_ITEMS} entries")
            _check_keys(v, w)
            return {k: inner(x, _key_path(w, k)) for k, x in v.items()}

        return dec_dict
    if tp is Any:
        return _dec_any
    raise TypeError(f"no decoder for field type {tp!r}")


def _dec_any(v: Any, w: str, depth: int = 0) -> Any:
    """A free-form value, kept JSON-like so any consumer can print, store or re-send it."""
    if depth > MAX_ANY_DEPTH:
        raise ProtocolError(f"{w} is nested more than {MAX_ANY_DEPTH} deep")
    if v is None or isinstance(v, bool | int):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ProtocolError(f"{w} must be finite")
        return v
    if isinstance(v, str):
        if len(v) > MAX_STRING:
            raise ProtocolError(f"{w} is longer than {MAX_STRING} characters")
        return v
    if isinstance(v, list):
        if len(v) > MAX_LIST_ITEMS:
            raise ProtocolError(f"{w} has more than {MAX_LIST_ITEMS} items")
        return [_dec_any(x, f"{w}[{i}]", depth + 1) for i, x in enumerate(v)]
    if isinstance(v, dict):
        if len(v) > MAX_LIST_ITEMS:
            raise ProtocolError(f"{w} has more than {MAX_LIST_ITEMS} entries")
        _check_keys(v, w)
        return {k: _dec_any(x, _key_path(w, k), depth + 1) for k, x in v.items()}
    raise ProtocolError(f"{w} must be null, a boolean, a number, a string, a list or a map, "
                        f"not {type(v).__name__}")


def registered_types() -> dict[str, type]:
    """Every wire type name and its body class (for docs and tests)."""
    return dict(_REGISTRY)
