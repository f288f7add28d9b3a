"""Reading records: the latest version, many at once, every version, one blob opened.

A read fetches the anchor from the chain and the blob from the node, checks the blob's
SHA-256 and header against the anchor, unwraps the data key (patient: scope key; writer:
own key), decrypts (the binding in the associated data refuses a ciphertext moved from
another record) and checks the salted commitment.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from careledger.chain.modules.records.messages import parse_scope_label
from careledger.crypto.envelope import (
    BlobOwner,
    EnvelopeError,
    RecordBinding,
    open_record,
    unpack_record_blob,
)
from careledger.crypto.hashing import sha256_hex
from careledger.crypto.scopekeys import ScopeKeyError, unwrap_data_key
from careledger.wallet.keyring import Keyring
from careledger.wallet.records_api import RecordsApi
from careledger.wallet.refs import Deleted, Erased, IntegrityError, RecordRef, RecordsError

READ_CHUNK = 250  # records per fetch when reading many (the next is fetched while one opens)


class Reader:
    """Reads with a keyring (wallet/keyring.py): a patient through its own scope keys, a
    grantee through the scope keys its grants wrapped to it, and whoever kept access to
    what it wrote (`kept_by`: the writer, or its organisation) through that wrap."""

    def __init__(
        self,
        api: RecordsApi,
        keyring: Keyring,
        kept_by: str,
        kept_by_keys: Sequence[X25519PrivateKey],
    ) -> None:
        self.api = api
        self.keyring = keyring
        self.kept_by = kept_by
        self.kept_by_keys = kept_by_keys  # the encryption keys of `kept_by`, newest first

    def read(self, ref: RecordRef, version: int | None = None) -> dict[str, Any]:
        """The resource (latest version unless one is named), decrypted and checked."""
        info = self.api.versions(ref)
        if info["erased_at"]:
            raise Erased(f"{ref} was erased by its patient at height {info['erased_at']}")
        number = version or int(info["versions"])
        anchors = {a["version"]: a for a in info["history"]}
        if number not in anchors:
            raise RecordsError(f"{ref} has no version {number}", 404)
        if anchors[number]["tombstone"]:
            raise Deleted(f"{ref} version {number} is a deletion (tombstone)")
        resource: dict[str, Any] = self._open_fetched([(ref, anchors[number])])[0]
        return resource

    def read_many(self, refs: Sequence[RecordRef]) -> list[dict[str, Any]]:
        """The latest version of many records (one chain query per patient, one fetch)."""
        anchors = []
        by_patient: dict[str, dict[str, dict[str, Any]]] = {}
        for ref in refs:
            if ref.patient not in by_patient:
                by_patient[ref.patient] = {r["record"]: r for r in self.api.records(ref.patient)}
            rec = by_patient[ref.patient].get(ref.name)
            if rec is None:
                raise RecordsError(f"no record {ref} for {ref.patient}", 404)
            if rec["erased_at"]:
                raise Erased(f"{ref} was erased by its patient")
            if rec["latest"]["tombstone"]:
                raise Deleted(f"{ref} is deleted (tombstone)")
            anchors.append((ref, rec["latest"]))
        # Fetch chunk n+1 (the node's reads) while this thread checks and decrypts chunk n.
        opened: list[dict[str, Any]] = []
        chunks = list(_chunks(anchors, READ_CHUNK))
        with concurrent.futures.ThreadPoolExecutor(1, "records-fetch") as ahead:
            fetches = [ahead.submit(self._fetch_for, chunk) for chunk in chunks[:2]]
            for i, chunk in enumerate(chunks):
                fetched = fetches[i].result()
                if i + 2 < len(chunks):
                    fetches.append(ahead.submit(self._fetch_for, chunks[i + 2]))
                opened += self._open_fetched(chunk, fetched)
        return opened

    def _fetch_for(self, items: Sequence[tuple[RecordRef, dict[str, Any]]]) -> Any:
        return self.api.fetch([anchor["blob_hash"] for _, anchor in items])

    def history(self, ref: RecordRef) -> list[dict[str, Any] | None]:
        """Every version in order; None for a tombstone."""
        info = self.api.versions(ref)
        if info["erased_at"]:
            raise Erased(f"{ref} was erased by its patient")
        live = [(ref, a) for a in info["history"] if not a["tombstone"]]
        opened = iter(self._open_fetched(live)) if live else iter(())
        return [None if a["tombstone"] else next(opened) for a in info["history"]]

    def _open_fetched(
        self,
        items: Sequence[tuple[RecordRef, dict[str, Any]]],
        fetched: list[tuple[int, bytes]] | None = None,
    ) -> list[Any]:
        if fetched is None:
            fetched = self._fetch_for(items)
        out = []
        for (ref, anchor), (status, data) in zip(items, fetched, strict=True):
            if status == 410:
                raise Erased(f"{ref}: {data.decode()}")
            if status != 200:
                raise RecordsError(f"{ref}: {data.decode()}", status)
            out.append(self.open_blob(ref, anchor, data).resource())
        return out

    def open_blob(self, ref: RecordRef, anchor: Mapping[str, Any], blob: bytes) -> Any:
        """Check a blob against its anchor and decrypt it: an OpenedRecord."""
        if sha256_hex(blob) != anchor["blob_hash"]:
            raise IntegrityError(f"{ref}: the blob served does not match its anchor's hash")
        binding = RecordBinding(ref.patient, ref.resource_type, ref.resource_id, anchor["version"])
        try:
            record_blob = unpack_record_blob(blob)
            if record_blob.owner != BlobOwner(ref.patient, ref.name):
                raise IntegrityError(f"{ref}: the blob's header names another record")
            data_key = self._data_key(ref.patient, anchor["recipients"], record_blob, binding)
            opened = open_record(record_blob.ciphertext, data_key, binding)
        except (EnvelopeError, ScopeKeyError, LookupError) as exc:
            raise IntegrityError(f"{ref}: {exc}") from None
        if opened.commitment.hex() != anchor["commitment"]:
            raise IntegrityError(f"{ref}: content does not match the anchored commitment")
        return opened

    def _data_key(
        self, patient: str, recipients: Sequence[str], record_blob: Any, binding: RecordBinding
    ) -> bytes:
        """The record's data key, unwrapped with the first key this reader holds for one of
        its recipients: its own (or its organisation's, any of them since a rotation), else
        a scope key (its own as the patient, or granted)."""
        candidates: list[tuple[str, Any]] = [
            (label, key)
            for label in recipients
            if label == self.kept_by
            for key in self.kept_by_keys
        ]
        for label in recipients:
            scope = parse_scope_label(label)
            pair = self.keyring.scope_pair(patient, *scope) if scope else None
            if pair is not None:
                candidates.append((label, pair))
        if not candidates:
            raise RecordsError(f"{self.kept_by} holds no key that opens this record", 403)
        for label, private_key in candidates[:-1]:
            try:
                return unwrap_data_key(record_blob_key(record_blob, label), binding, private_key)
            except ScopeKeyError:
                continue  # wrapped to another of our keys: try the next
        label, private_key = candidates[-1]
        return unwrap_data_key(record_blob_key(record_blob, label), binding, private_key)


def record_blob_key(record_blob: Any, label: str) -> Any:
    for key in record_blob.wrapped_keys:
        if key.recipient == label:
            return key
    raise LookupError(f"no data key wrapped to {label!r} in this record blob")


def _chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
