"""A minimal protobuf (proto3) wire codec driven by declarative field tables.

A message is a frozen-free dataclass whose fields are declared with `pb(number, kind, ...)`.
The encoder walks the table in field-number order, as gogoproto does, and follows proto3's
rule of leaving out scalars that hold their default value; the decoder accepts fields in any
order and skips the ones the table does not declare, as every protobuf decoder must.

Two gogoproto details matter for byte-for-byte agreement with CometBFT:
- an embedded message marked `(gogoproto.nullable) = false` is a Go struct, not a pointer,
  so it is always written, even when empty (`always=True` here);
- a member of a `oneof` is written whenever it is set, even to its default (`optional=True`,
  with None meaning "not set").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from functools import cache
from typing import Any, ClassVar, Protocol, TypeVar

from careledger.crypto.varint import encode_uvarint as _encode_uvarint

# Wire types of the protobuf encoding.
VARINT_WIRE = 0
FIXED64_WIRE = 1
LEN_WIRE = 2
FIXED32_WIRE = 5

_U64 = 1 << 64


class CodecError(ValueError):
    """Bytes that are not a valid encoding of the expected message."""


class Kind(Enum):
    UINT = "uint"  # uint32, uint64: plain varint
    INT = "int"  # int32, int64, enum: varint of the two's complement (10 bytes when negative)
    BOOL = "bool"
    BYTES = "bytes"
    STRING = "string"
    MESSAGE = "message"  # an embedded message with its own table
    RAW = "raw"  # an embedded message we never look inside, kept as its encoded bytes


class ProtoMessage(Protocol):
    __dataclass_fields__: ClassVar[dict[str, Any]]


M = TypeVar("M", bound=ProtoMessage)


@dataclass(frozen=True)
class FieldSpec:
    name: str
    number: int
    kind: Kind
    message: type[Any] | None
    repeated: bool
    always: bool
    optional: bool
    # Precomputed once per field, because encoding sits on the mempool's hot path.
    scalar: bool = False  # written as a varint
    default: object = None  # the value proto3 leaves out; _NEVER for embedded messages
    varint_tag: bytes = b""
    len_tag: bytes = b""


def pb(
    number: int,
    kind: Kind,
    message: type[Any] | None = None,
    *,
    repeated: bool = False,
    always: bool = False,
    optional: bool = False,
) -> Any:
    """Declare a dataclass field as protobuf field `number` of this kind."""
    meta = {"pb": (number, kind, message, repeated, always, optional)}
    if repeated:
        return dataclasses.field(default_factory=list, metadata=meta)
    if kind is Kind.MESSAGE and message is not None and always:
        return dataclasses.field(default_factory=message, metadata=meta)
    if optional or kind in (Kind.MESSAGE, Kind.RAW):
        return dataclasses.field(default=None, metadata=meta)
    return dataclasses.field(default=_DEFAULTS[kind], metadata=meta)


_NEVER = object()  # equal to nothing: a set embedded message is written even when empty
_SCALARS = (Kind.UINT, Kind.INT, Kind.BOOL)
_DEFAULTS: dict[Kind, object] = {
    Kind.UINT: 0,
    Kind.INT: 0,
    Kind.BOOL: False,
    Kind.BYTES: b"",
    Kind.STRING: "",
}


@cache
def field_table(cls: Any) -> tuple[FieldSpec, ...]:
    specs = []
    for f in dataclasses.fields(cls):
        number, kind, message, repeated, always, optional = f.metadata["pb"]
        specs.append(
            FieldSpec(
                f.name,
                number,
                kind,
                message,
                repeated,
                always,
                optional,
                scalar=kind in _SCALARS,
                default=_DEFAULTS.get(kind, _NEVER),
                varint_tag=_tag(number, VARINT_WIRE),
                len_tag=_tag(number, LEN_WIRE),
            )
        )
    return tuple(sorted(specs, key=lambda s: s.number))


@cache
def _by_number(cls: Any) -> dict[int, FieldSpec]:
    return {spec.number: spec for spec in field_table(cls)}


# --- varints -------------------------------------------------------------------------------


def encode_uvarint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _SMALL[value]
    if value < 0:
        raise CodecError(f"uvarint of negative {value}")
    return _encode_uvarint(value)


def decode_uvarint(data: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """(value, position after it); CodecError when truncated or longer than 10 bytes."""
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise CodecError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result >= _U64:
                raise CodecError("varint overflows 64 bits")
            return result, pos
        shift += 7
        if shift >= 70:
            raise CodecError("varint longer than 10 bytes")


_SMALL = tuple(bytes([i]) for i in range(0x80))


# --- encoding ------------------------------------------------------------------------------


def encode(msg: ProtoMessage) -> bytes:
    out = bytearray()
    for spec in field_table(type(msg)):
        value = getattr(msg, spec.name)
        if spec.repeated:
            _encode_repeated(out, spec, value)
        elif value is not None and (spec.always or spec.optional or value != spec.default):
            _encode_one(out, spec, value)
    return bytes(out)


def _encode_repeated(out: bytearray, spec: FieldSpec, values: list[Any]) -> None:
    if spec.scalar:
        if values:  # proto3 packs repeated scalars
            packed = b"".join(_varint_of(spec.kind, v) for v in values)
            out += spec.len_tag + encode_uvarint(len(packed)) + packed
        return
    for value in values:
        _encode_one(out, spec, value)


def _encode_one(out: bytearray, spec: FieldSpec, value: Any) -> None:
    if spec.scalar:
        out += spec.varint_tag + _varint_of(spec.kind, value)
        return
    payload = _len_payload(spec.kind, value)
    out += spec.len_tag + encode_uvarint(len(payload)) + payload


def _len_payload(kind: Kind, value: Any) -> bytes:
    if kind is Kind.STRING:
        return str(value).encode()
    if kind is Kind.MESSAGE:
        return encode(value)
    return bytes(value)


def _varint_of(kind: Kind, value: Any) -> bytes:
    if kind is Kind.BOOL:
        return b"\x01" if value else b"\x00"
    number = int(value)
    return encode_uvarint(number % _U64 if kind is Kind.INT else number)


def _tag(number: int, wire: int) -> bytes:
    return encode_uvarint(number << 3 | wire)


# --- decoding ------------------------------------------------------------------------------


def decode(cls: type[M], data: bytes | memoryview) -> M:
    view = memoryview(data)
    values: dict[str, Any] = {}
    table = _by_number(cls)
    for number, wire, raw in _fields(view):
        spec = table.get(number)
        if spec is None:
            continue  # an unknown field: skipped, as protobuf requires
        _decode_into(values, spec, wire, raw)
    return cls(**values)


def _fields(view: memoryview) -> Iterator[tuple[int, int, memoryview | int]]:
    pos = 0
    while pos < len(view):
        key, pos = decode_uvarint(view, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise CodecError("field number 0")
        if wire == VARINT_WIRE:
            value, pos = decode_uvarint(view, pos)
            yield number, wire, value
        elif wire == LEN_WIRE:
            length, pos = decode_uvarint(view, pos)
            if pos + length > len(view):
                raise CodecError(f"field {number}: length {length} past the end")
            yield number, wire, view[pos : pos + length]
            pos += length
        elif wire in (FIXED64_WIRE, FIXED32_WIRE):
            size = 8 if wire == FIXED64_WIRE else 4
            if pos + size > len(view):
                raise CodecError(f"field {number}: truncated fixed-size value")
            yield number, wire, view[pos : pos + size]
            pos += size
        else:
            raise CodecError(f"field {number}: unsupported wire type {wire}")


def _decode_into(values: dict[str, Any], spec: FieldSpec, wire: int, raw: memoryview | int) -> None:
    scalar = spec.scalar
    if spec.repeated and scalar and wire == LEN_WIRE:
        assert isinstance(raw, memoryview)
        values.setdefault(spec.name, []).extend(_unpack(spec.kind, raw))
        return
    expected = VARINT_WIRE if scalar else LEN_WIRE
    if wire != expected:
        raise CodecError(f"field {spec.name}: wire type {wire}, expected {expected}")
    value = _scalar(spec.kind, raw) if scalar else _from_len(spec, raw)
    if spec.repeated:
        values.setdefault(spec.name, []).append(value)
    else:
        values[spec.name] = value  # the last occurrence wins, as protobuf requires


def _unpack(kind: Kind, raw: memoryview) -> Iterator[int | bool]:
    pos = 0
    while pos < len(raw):
        value, pos = decode_uvarint(raw, pos)
        yield _scalar(kind, value)


def _scalar(kind: Kind, raw: memoryview | int) -> int | bool:
    assert isinstance(raw, int)
    if kind is Kind.BOOL:
        return raw != 0
    if kind is Kind.INT and raw >= 1 << 63:
        return raw - _U64
    return raw


def _from_len(spec: FieldSpec, raw: memoryview | int) -> Any:
    assert isinstance(raw, memoryview)
    if spec.kind is Kind.STRING:
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as exc:
            raise CodecError(f"field {spec.name}: not UTF-8") from exc
    if spec.kind is Kind.MESSAGE:
        assert spec.message is not None
        return decode(spec.message, raw)
    return bytes(raw)
