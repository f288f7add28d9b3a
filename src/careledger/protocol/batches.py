"""The limits of one `POST /txs` that the node enforces and the wallet keeps to."""

from __future__ import annotations

from collections.abc import Sequence

MAX_BATCH = 2_000  # transactions in one POST /txs (a writer's chunk is 1,000)
TXS_BODY = 16 * 1024 * 1024  # a batch of typical transactions; at most ~190 of the largest
# What the JSON around a batch's transactions may take: {"txs": [...], "wait": ..., "stream": ...}
_BODY_FRAME = 1024


def request_batches(raws: Sequence[bytes]) -> list[Sequence[bytes]]:
    """`raws` in order, split into runs that each fit one POST /txs (MAX_BATCH transactions,
    a body of TXS_BODY bytes once base64-encoded)."""
    batches: list[Sequence[bytes]] = []
    first, size = 0, _BODY_FRAME
    for i, raw in enumerate(raws):
        encoded = 4 * ((len(raw) + 2) // 3) + 3  # base64, its quotes and a comma
        if i > first and (i - first == MAX_BATCH or size + encoded > TXS_BODY):
            batches.append(raws[first:i])
            first, size = i, _BODY_FRAME
        size += encoded
    if first < len(raws):
        batches.append(raws[first:])
    return batches
