"""Blob batch frames: many blobs in one request body or one response body.

Upload (`POST /blobs`): `u32 length || blob`, repeated.
Fetch response (`POST /blobs/fetch`): `u16 HTTP status || u32 length || blob or UTF-8 error
message`, one per requested hash, in order.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

MAX_BLOB_BYTES = 16 * 1024 * 1024
MAX_FETCH = 5000  # hashes in one fetch request


class MalformedFrames(ValueError):
    """A frame body that is truncated or holds a frame of an impossible length."""


def pack_frames(blobs: Iterable[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(b)) + b for b in blobs)


def unpack_frames(body: bytes) -> list[bytes]:
    blobs, offset = [], 0
    while offset < len(body):
        if offset + 4 > len(body):
            raise MalformedFrames("upload frames are truncated")
        (length,) = struct.unpack_from(">I", body, offset)
        end = offset + 4 + length
        if length == 0 or length > MAX_BLOB_BYTES or end > len(body):
            raise MalformedFrames(f"upload frame of {length} bytes is invalid")
        blobs.append(body[offset + 4 : end])
        offset = end
    return blobs


def pack_results(results: Iterable[tuple[int, bytes]]) -> bytes:
    return b"".join(struct.pack(">HI", status, len(data)) + data for status, data in results)


def unpack_results(body: bytes) -> list[tuple[int, bytes]]:
    results, offset = [], 0
    while offset < len(body):
        if offset + 6 > len(body):
            raise MalformedFrames("result frames are truncated")
        status, length = struct.unpack_from(">HI", body, offset)
        end = offset + 6 + length
        if end > len(body):
            raise MalformedFrames(f"result frame of {length} bytes runs past the body")
        results.append((status, body[offset + 6 : end]))
        offset = end
    return results
