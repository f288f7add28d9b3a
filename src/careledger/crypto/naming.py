"""Keyed record names: what a record is called on-chain.

    name = HMAC-SHA256(naming key, "careledger-record-name-v2" || lp(type) || lp(id))

The naming key is the patient's (32 bytes) and is shared with grantees like a scope key, so
that only the patient and those they granted can tell which name stands for a known EHR id.
An unkeyed hash of (patient, type, id) let anyone match a known id against every patient in
a fraction of a second (issue 8).
"""

from __future__ import annotations

import hashlib
import hmac

from careledger.crypto.envelope import length_prefixed

RECORD_NAME_LABEL = b"careledger-record-name-v2"
NAMING_KEY_SIZE = 32


def record_name(naming_key: bytes, resource_type: str, resource_id: str) -> str:
    """The record's on-chain name, 64 lowercase hex characters."""
    if len(naming_key) != NAMING_KEY_SIZE:
        raise ValueError(f"a naming key is {NAMING_KEY_SIZE} bytes")
    message = RECORD_NAME_LABEL + length_prefixed(resource_type) + length_prefixed(resource_id)
    return hmac.new(naming_key, message, hashlib.sha256).hexdigest()
