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
    # The bytes hashed, joined once and hashed in one call: a block of registrations has
    # tens of thousands of changes, and an update call per piece cost more than the hash.
    parts: list[bytes] = []
    add = parts.append
    for key in sorted(changes):
        value = changes[key]
        add(len(key).to_bytes(4, "big"))
        add(key)
        if value is None:
            add(b"\x00")
        else:
            add(b"\x01")
            add(len(value).to_bytes(4, "big"))
            add(value)
    return hashlib.sha256(b"".join(parts)).digest()


def next_app_hash(previous: bytes, block_changes_hash: bytes) -> bytes:
    return hashlib.sha256(_DOMAIN + (previous or GENESIS_PREVIOUS) + block_changes_hash).digest()
