"""The app hash: a versioned commitment to the state, chained block to block.

v1: app_hash(h) = SHA-256("careledger/apphash/v1" || app_hash(h-1) || changes_hash(h)), where
changes_hash is SHA-256 over the block's changes sorted by key, each written as
len(key) || key || flag || len(value) || value (lengths as 4-byte big-endian, flag 1 for a
write, 0 for a delete). The genesis block's previous app hash is 32 zero bytes.
"""

import hashlib

from careledger.chain.store import Changes

APP_HASH_VERSION = 1
_DOMAIN = b"careledger/apphash/v1"
GENESIS_PREVIOUS = b"\x00" * 32


def changes_hash(changes: Changes) -> bytes:
    h = hashlib.sha256()
    for key in sorted(changes):
        value = changes[key]
        h.update(len(key).to_bytes(4, "big") + key)
        if value is None:
            h.update(b"\x00")
        else:
            h.update(b"\x01" + len(value).to_bytes(4, "big") + value)
    return h.digest()


def next_app_hash(previous: bytes, block_changes_hash: bytes) -> bytes:
    return hashlib.sha256(_DOMAIN + (previous or GENESIS_PREVIOUS) + block_changes_hash).digest()
