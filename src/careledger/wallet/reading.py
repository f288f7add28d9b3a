"""Reading records: the latest version, many at once, every version, one blob opened, and
every record of a patient knowing only the names the chain lists.

A read fetches the anchor from the chain and the blob from the node, checks the blob's
SHA-256 and header against the anchor, unwraps the data key (patient: scope key; writer:
own key) with the record's type, id and version (wrap v2, docs/crypto.md 6.1), checks type
and version against the chain (and the id against the ref, or the name against the naming
key), decrypts (the binding in the associated data refuses a ciphertext moved from another
record, and a wrap that lies about the id) and checks the salted commitment.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
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
from careledger.crypto.naming import record_name
from careledger.crypto.scopekeys import ScopeKeyError, UnwrappedDataKey, unwrap_data_key
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
        """Check a blob against its anchor and decrypt it: an OpenedRecord. The data key's
        wrap must name the ref's type and id (IntegrityError otherwise)."""
        opened = self._open(ref.patient, ref.name, anchor, blob, ref.resource_type)
        if opened.binding.resource_id != ref.resource_id:
            raise IntegrityError(
                f"{ref}: its data key is wrapped for {opened.binding.resource_type}/"
                f"{opened.binding.resource_id}"
            )
        return opened.record

    def open_named(
        self,
        patient: str,
        record: Mapping[str, Any],
        anchor: Mapping[str, Any],
        blob: bytes,
        naming_key: bytes | None = None,
    ) -> tuple[RecordRef, Any]:
        """Open a blob knowing only the record's name and type (a `records/records` or
        `records/versions` row) and the version's anchor: the ref (its type and id, as the
        data key's wrap names them and the ciphertext's associated data confirms) and the
        OpenedRecord. With the patient's naming key, the name must be the HMAC of that type
        and id (IntegrityError otherwise)."""
        name = str(record["record"])
        opened = self._open(patient, name, anchor, blob, str(record["resource_type"]))
        binding = opened.binding
        ref = RecordRef(patient, binding.resource_type, binding.resource_id, name)
        if naming_key is not None and record_name(naming_key, *_type_and_id(binding)) != name:
            raise IntegrityError(f"{ref}: the record's name is not that of its type and id")
        return ref, opened.record

    def _open(
        self,
        patient: str,
        name: str,
        anchor: Mapping[str, Any],
        blob: bytes,
        resource_type: str,
    ) -> _Opened:
        """Hash, header, unwrap (the wrap says type, id and version), check type and version
        against the chain, decrypt under that binding, check the commitment."""
        where = f"{resource_type} record {name[:16]}"
        if sha256_hex(blob) != anchor["blob_hash"]:
            raise IntegrityError(f"{where}: the blob served does not match its anchor's hash")
        owner = BlobOwner(patient, name)
        try:
            record_blob = unpack_record_blob(blob)
            if record_blob.owner != owner:
                raise IntegrityError(f"{where}: the blob's header names another record")
            unwrapped = self._data_key(owner, anchor["recipients"], record_blob)
            binding = unwrapped.binding
            if (binding.resource_type, binding.version) != (resource_type, anchor["version"]):
                raise IntegrityError(
                    f"{where}: its data key is wrapped for {binding.resource_type} version "
                    f"{binding.version}, not version {anchor['version']}"
                )
            opened = open_record(record_blob.ciphertext, unwrapped.data_key, binding)
        except (EnvelopeError, ScopeKeyError, LookupError) as exc:
            raise IntegrityError(f"{where}: {exc}") from None
        if opened.commitment.hex() != anchor["commitment"]:
            raise IntegrityError(f"{where}: content does not match the anchored commitment")
        return _Opened(binding, opened)

    def _data_key(
        self, owner: BlobOwner, recipients: Sequence[str], record_blob: Any
    ) -> UnwrappedDataKey:
        """The record's data key, unwrapped with the first key this reader holds for one of
        its recipients: its own (or its organisation's, any of them since a rotation), else
        a scope key (its own as the patient, or granted)."""
        candidates = self._candidates(owner.patient, recipients)
        if not candidates:
            raise RecordsError(f"{self.kept_by} holds no key that opens this record", 403)
        for label, private_key in candidates[:-1]:
            try:
                return unwrap_data_key(record_blob_key(record_blob, label), owner, private_key)
            except ScopeKeyError:
                continue  # wrapped to another of our keys: try the next
        label, private_key = candidates[-1]
        return unwrap_data_key(record_blob_key(record_blob, label), owner, private_key)

    def _candidates(self, patient: str, recipients: Sequence[str]) -> list[tuple[str, Any]]:
        """(recipient label, private key) for each recipient this reader holds a key of."""
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
        return candidates

    def can_open(self, patient: str, anchor: Mapping[str, Any]) -> bool:
        """Whether this reader holds a key for one of the anchor's recipients (asked before
        fetching, so that a grantee does not ask the node for blobs it cannot open)."""
        return bool(self._candidates(patient, anchor["recipients"]))

    # --- reading by name -----------------------------------------------------------------

    def read_name(self, patient: str, name: str) -> tuple[RecordRef, dict[str, Any]]:
        """The latest version of the record named `name` (its on-chain name, no id needed):
        its ref, learnt from the record's wrapped data key, and the resource."""
        info = self.api.versions_named(patient, name)
        if info["erased_at"]:
            raise Erased(f"record {name} was erased by its patient at height {info['erased_at']}")
        latest = max(info["history"], key=lambda anchor: int(anchor["version"]))
        if latest["tombstone"]:
            raise Deleted(f"record {name} is deleted (tombstone)")
        ((status, blob),) = self.api.fetch([latest["blob_hash"]])
        _raise_for_fetch(f"record {name}", status, blob)
        ref, opened = self.open_named(patient, info, latest, blob, self._naming_key(patient))
        return ref, checked_resource(ref, opened)

    def read_all(
        self,
        patient: str,
        on_failure: Callable[[str, RecordsError], None] | None = None,
    ) -> list[tuple[RecordRef, dict[str, Any]]]:
        """The latest version of every record of `patient` this reader can open, knowing only
        the names the chain lists: the patient's all, a grantee's what its scope keys (or
        its own wraps, for what it wrote) open and the node serves it.

        Erased and deleted records, records wrapped to no key this reader holds, and blobs
        the node refuses it (403: consent) are left out. Any other failure (an integrity
        failure, a blob the node does not hold) raises, or, with `on_failure`, is passed to it
        with the record's name and reading goes on."""
        rows = [
            rec
            for rec in self.api.records(patient)
            if not rec["erased_at"]
            and not rec["latest"]["tombstone"]
            and self.can_open(patient, rec["latest"])
        ]
        naming_key = self._naming_key(patient)
        out: list[tuple[RecordRef, dict[str, Any]]] = []
        for chunk in _chunks(rows, READ_CHUNK):
            fetched = self.api.fetch([rec["latest"]["blob_hash"] for rec in chunk])
            for rec, (status, blob) in zip(chunk, fetched, strict=True):
                name = str(rec["record"])
                try:
                    if status in (403, 410):
                        continue  # refused by consent, or erased since the query
                    _raise_for_fetch(f"record {name}", status, blob)
                    ref, opened = self.open_named(patient, rec, rec["latest"], blob, naming_key)
                    out.append((ref, checked_resource(ref, opened)))
                except RecordsError as exc:
                    if on_failure is None:
                        raise
                    on_failure(name, exc)
        return out

    def _naming_key(self, patient: str) -> bytes | None:
        """The patient's naming key if this reader holds it (it then checks names)."""
        try:
            return self.keyring.naming_key(patient)
        except RecordsError:
            return None


@dataclass(frozen=True)
class _Opened:
    binding: RecordBinding  # as the data key's wrap named it, confirmed by the ciphertext
    record: Any  # the OpenedRecord


def _type_and_id(binding: RecordBinding) -> tuple[str, str]:
    return binding.resource_type, binding.resource_id


def _raise_for_fetch(what: str, status: int, data: bytes) -> None:
    if status == 410:
        raise Erased(f"{what}: {data.decode(errors='replace')}")
    if status != 200:
        raise RecordsError(f"{what}: {data.decode(errors='replace')}", status)


def checked_resource(ref: RecordRef, opened: Any) -> dict[str, Any]:
    """The resource, which must call itself what its binding says (the sealer checks it; a
    reader that learnt the id from the wrap checks again before showing it)."""
    resource: dict[str, Any] = opened.resource()
    if resource.get("resourceType") != ref.resource_type or resource.get("id") != ref.resource_id:
        raise IntegrityError(f"{ref}: the resource calls itself something else")
    return resource


def record_blob_key(record_blob: Any, label: str) -> Any:
    for key in record_blob.wrapped_keys:
        if key.recipient == label:
            return key
    raise LookupError(f"no data key wrapped to {label!r} in this record blob")


def _chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
