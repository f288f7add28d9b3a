"""Reading records: the latest version, many at once, every version, one blob opened.

A read fetches the anchor from the chain and the blob from the node, checks the blob's
SHA-256 and header against the anchor, unwraps the data key (patient: scope key; writer:
own key), decrypts (the binding in the associated data refuses a ciphertext moved from
another record) and checks the salted commitment.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from careledger.chain.modules.records.messages import parse_scope_label
from careledger.crypto.envelope import (
    BlobOwner,
    EnvelopeError,
    RecordBinding,
    open_record,
    unpack_record_blob,
)
from careledger.crypto.hashing import sha256_hex
from careledger.crypto.keys import Identity
from careledger.crypto.scopekeys import (
    ScopeKeyError,
    ScopeKeyPair,
    derive_scope_key,
    unwrap_data_key,
)
from careledger.wallet.records_api import RecordsApi
from careledger.wallet.refs import Deleted, Erased, IntegrityError, RecordRef, RecordsError

READ_CHUNK = 250  # records per fetch when reading many (the next is fetched while one opens)


class Reader:
    """Reads as one identity (`did`, `identity`): a patient through its scope keys, a writer
    through the data key wrapped to its own key."""

    def __init__(
        self,
        api: RecordsApi,
        did: str,
        identity: Identity,
        scope_key: Callable[[str, int], ScopeKeyPair] | None = None,
    ) -> None:
        self.api = api
        self.did = did
        self.identity = identity
        # A patient's scope key of an epoch (KeyFile.scope_key: after a claim or a rotation,
        # old epochs derive from a previous master); default: from `identity` alone.
        self._derive = scope_key or self._derive_from_identity
        self._scope_pairs: dict[tuple[str, int], ScopeKeyPair] = {}

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
            label, private_key = self._my_key(ref.patient, anchor["recipients"])
            data_key = unwrap_data_key(record_blob_key(record_blob, label), binding, private_key)
            opened = open_record(record_blob.ciphertext, data_key, binding)
        except (EnvelopeError, ScopeKeyError, LookupError) as exc:
            raise IntegrityError(f"{ref}: {exc}") from None
        if opened.commitment.hex() != anchor["commitment"]:
            raise IntegrityError(f"{ref}: content does not match the anchored commitment")
        return opened

    def _my_key(self, patient: str, recipients: Sequence[str]) -> tuple[str, Any]:
        for label in recipients:
            scope = parse_scope_label(label)
            if scope is not None and patient == self.did:
                return label, self._scope_pair(*scope)
            if label == self.did:
                return label, self.identity.encryption_private
        raise RecordsError(f"{self.did} holds no key that opens this record", 403)

    def _scope_pair(self, scope: str, epoch: int) -> ScopeKeyPair:
        pair = self._scope_pairs.get((scope, epoch))
        if pair is None:
            pair = self._derive(scope, epoch)
            self._scope_pairs[(scope, epoch)] = pair
        return pair

    def _derive_from_identity(self, scope: str, epoch: int) -> ScopeKeyPair:
        return derive_scope_key(self.identity.secret("scope-keys"), scope, epoch)


def record_blob_key(record_blob: Any, label: str) -> Any:
    for key in record_blob.wrapped_keys:
        if key.recipient == label:
            return key
    raise LookupError(f"no data key wrapped to {label!r} in this record blob")


def _chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
