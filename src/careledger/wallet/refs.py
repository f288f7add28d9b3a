"""What the records SDK names and what it raises.

`RecordRef` names a record (patient, resource type, logical id, and its on-chain name: a
hash of type and id keyed with the patient's naming key) and `Written` is what a committed
write or delete returns. `RecordsError` and its kinds (`Erased`, `Deleted`,
`IntegrityError`) are what every records operation raises, with an HTTP-style `status`;
`raise_for` turns a failed transaction result into one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from careledger.protocol.errors import http_status


class RecordsError(Exception):
    """A record operation that failed; `status` follows HTTP (404, 409, 410, 422...)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Erased(RecordsError):
    """The patient erased this record: its ciphertext and keys no longer exist."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 410)


class Deleted(RecordsError):
    """The record's latest version is a tombstone (a FHIR delete); older versions remain."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 410)


class IntegrityError(RecordsError):
    """What the node served does not match the chain (altered blob, key or content)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 502)


@dataclass(frozen=True)
class RecordRef:
    """A record: whose, what type, which logical id, and its on-chain `name`.

    The name is keyed with the patient's naming key (`crypto.naming.record_name`), so only
    holders of that key can make a ref from a FHIR id: `RecordsClient.ref` does.
    """

    patient: str
    resource_type: str
    resource_id: str
    name: str

    def __str__(self) -> str:
        return f"{self.resource_type}/{self.resource_id}"


@dataclass(frozen=True)
class Written:
    ref: RecordRef
    version: int
    blob_hash: str
    tx_hash: str
    height: int


def raise_for(result: Mapping[str, Any], what: str = "transaction") -> None:
    """RecordsError if a transaction's result (admission or block) is a failure."""
    code = result.get("code") if result.get("check_code") == 0 else result.get("check_code")
    if not code:
        return
    log = result.get("log") or result.get("check_log") or ""
    raise RecordsError(f"{what}: {log}", http_status(int(code)))
