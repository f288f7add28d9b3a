"""Protobuf's unsigned varint, the one piece of protobuf that hashed CometBFT structures
(results, headers, votes) and the ABCI wire share: 7 bits a byte, least significant first."""

from __future__ import annotations


def encode_uvarint(value: int) -> bytes:
    """ValueError for a negative value (protobuf encodes signed ints as their 64-bit form)."""
    if value < 0:
        raise ValueError(f"uvarint of negative {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
