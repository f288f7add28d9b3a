"""The little of protobuf, time and JSON that CometBFT's signed structures need."""

from __future__ import annotations

import base64
import calendar
import re
from typing import Any

from careledger.crypto.varint import encode_uvarint

PRECOMMIT_TYPE = 2  # tendermint.types.SignedMsgType
FLAG_ABSENT, FLAG_COMMIT, FLAG_NIL = 1, 2, 3  # tendermint.types.BlockIDFlag
ED25519_JSON_TYPE = "tendermint/PubKeyEd25519"

U64 = 1 << 64
_TIME = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z$")


class LightClientError(ValueError):
    """A header, commit or validator set that does not hold; the message names the check."""


# --- protobuf, the little of it these messages need ------------------------------------------


def varint_field(number: int, value: int) -> bytes:
    """A proto3 varint field (int64 as two's complement); left out when zero."""
    return encode_uvarint(number << 3) + encode_uvarint(value % U64) if value else b""


def bytes_field(number: int, value: bytes, *, always: bool = False) -> bytes:
    """A length-delimited field; left out when empty unless it is a non-nullable message."""
    if not value and not always:
        return b""
    return encode_uvarint(number << 3 | 2) + encode_uvarint(len(value)) + value


def sfixed64_field(number: int, value: int) -> bytes:
    return encode_uvarint(number << 3 | 1) + (value % U64).to_bytes(8, "little") if value else b""


# --- time ----------------------------------------------------------------------------------


def parse_time(text: str) -> tuple[int, int]:
    """RFC 3339 UTC as CometBFT writes it (nanoseconds, trailing zeros trimmed) -> (s, ns)."""
    found = _TIME.match(text)
    if found is None:
        raise LightClientError(f"time {text!r} is not RFC 3339 UTC")
    year, month, day, hour, minute, second = (int(g) for g in found.groups()[:6])
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    return seconds, int((found.group(7) or "0").ljust(9, "0"))


def format_time(seconds: int, nanos: int) -> str:
    """The inverse of parse_time, trimming trailing zeros of the fraction as Go does."""
    year, month, day, hour, minute, second = _gmtime(seconds)
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    fraction = f"{nanos:09d}".rstrip("0")
    return text + (f".{fraction}" if fraction else "") + "Z"


def _gmtime(seconds: int) -> tuple[int, int, int, int, int, int]:
    days, rest = divmod(seconds, 86_400)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    # Civil date from days since 1970-01-01 (Howard Hinnant's algorithm, integers only).
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return year, month, day, hour, minute, second


def timestamp_bytes(seconds: int, nanos: int) -> bytes:
    """google.protobuf.Timestamp, as gogoproto's StdTimeMarshal writes it."""
    return varint_field(1, seconds) + varint_field(2, nanos)


# --- JSON helpers --------------------------------------------------------------------------


def hex_value(value: Any, what: str) -> bytes:
    try:
        return bytes.fromhex(str(value or ""))
    except ValueError:
        raise LightClientError(f"{what} is not hex") from None


def int_value(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise LightClientError(f"{what} is not an integer")
    try:
        return int(value)
    except ValueError:
        raise LightClientError(f"{what} is not an integer") from None


def b64_value(value: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(value or ""), validate=True)
    except ValueError:
        raise LightClientError(f"{what} is not base64") from None
