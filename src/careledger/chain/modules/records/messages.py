"""The records module's transaction payloads: parsed, validated, typed.

None carries health data or anything identifying in clear: the patient is a did (a
pseudonym), the record is named by a hash of its binding, the content by the SHA-256 of its
ciphertext blob and a salted commitment. Wrapped data keys are never here (they live in the
blob, so that erasure can delete them; docs/crypto.md section 7).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from careledger.chain.codes import Code, TxFailure
from careledger.chain.modules.base import Payload
from careledger.crypto.keys import Identity
from careledger.crypto.scopekeys import SCOPES
from careledger.crypto.statements import scope_key_statement

MAX_RECIPIENTS = 8
MAX_ERASE_RECORDS = 1000
# Anchors in one records/anchor_batch: about 420 bytes each, so a full batch (~42 KB) stays
# well under the 64 KiB transaction bound with room for long dids and recipient lists.
MAX_BATCH_ANCHORS = 100
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{0,63}")
_SCOPE_LABEL = re.compile(r"scope/([a-z]{1,64})/([0-9]{1,10})")


def _fail(message: str) -> TxFailure:
    return TxFailure(Code.INVALID_PAYLOAD, message)


def _flag(p: Payload, name: str) -> bool:
    """An optional 0/1 field (the payload type has no booleans)."""
    return p.integer(name, 0, 1) == 1 if p.has(name) else False


def parse_scope_label(label: str) -> tuple[str, int] | None:
    """(scope, epoch) of a `scope/<scope>/<epoch>` recipient label; None for a did."""
    match = _SCOPE_LABEL.fullmatch(label)
    return (match.group(1), int(match.group(2))) if match else None


@dataclass(frozen=True)
class Anchor:
    """One version of one record: what it is, where its ciphertext is, who can open it.

    A tombstone version (a FHIR delete) has no blob, commitment or recipients, and is never
    version 1. Any other version names exactly one `scope/<scope>/<epoch>` recipient (the
    patient's scope key its data key is wrapped to: the record's scope) and may name dids.
    """

    patient: str
    resource_type: str
    record: str
    version: int
    blob_hash: str
    commitment: str
    recipients: tuple[str, ...]
    tombstone: bool

    @classmethod
    def parse(cls, p: Payload) -> Anchor:
        patient, resource_type = p.did("patient"), p.text("resource_type", max_len=64)
        if not _RESOURCE_TYPE.fullmatch(resource_type):
            raise _fail(f"not a FHIR resource type: {resource_type!r}")
        record, version = p.hex_bytes("record", 32), p.integer("version", 1, 2**32 - 1)
        tombstone = _flag(p, "tombstone")
        blob_hash, commitment, recipients = "", "", tuple[str, ...]()
        if not tombstone:
            blob_hash, commitment = p.hex_bytes("blob_hash", 32), p.hex_bytes("commitment", 32)
            recipients = tuple(p.text_list("recipients", MAX_RECIPIENTS))
            for label in recipients:
                if parse_scope_label(label) is None and not label.startswith("did:key:z"):
                    raise _fail(f"recipient {label!r} is neither scope/<scope>/<epoch> nor a did")
            scopes = [label for label in recipients if parse_scope_label(label)]
            if len(scopes) != 1:
                raise _fail(
                    f"a version names exactly one scope/<scope>/<epoch> recipient, not "
                    f"{len(scopes)}"
                )
        elif version == 1:
            raise _fail("version 1 of a record cannot be a tombstone")
        p.done()
        return cls(
            patient, resource_type, record, version, blob_hash, commitment, recipients, tombstone
        )

    @property
    def scope_key(self) -> tuple[str, int] | None:
        """(scope, epoch) of the scope recipient; None for a tombstone."""
        for label in self.recipients:
            parsed = parse_scope_label(label)
            if parsed is not None:
                return parsed
        return None


@dataclass(frozen=True)
class AnchorBatch:
    """Up to MAX_BATCH_ANCHORS anchors by one author (the sender), of one or more patients,
    applied all or nothing: each is checked exactly as a `records/anchor` is, in order, and
    the first refusal refuses the whole batch. A record (patient and name) and a blob appear
    at most once in a batch."""

    anchors: tuple[Anchor, ...]

    @classmethod
    def parse(cls, p: Payload) -> AnchorBatch:
        items = p.objects("anchors", MAX_BATCH_ANCHORS, min_items=1)
        anchors: list[Anchor] = []
        for index, item in enumerate(items):
            try:
                anchors.append(Anchor.parse(item))
            except TxFailure as failure:
                raise _fail(f"anchor {index}: {failure.log}") from None
        if len({(a.patient, a.record) for a in anchors}) != len(anchors):
            raise _fail("a batch names each record once (one version per record)")
        blobs = [a.blob_hash for a in anchors if not a.tombstone]
        if len(set(blobs)) != len(blobs):
            raise _fail("a batch names each blob once")
        p.done()
        return cls(tuple(anchors))


@dataclass(frozen=True)
class PublishScopeKey:
    """A patient's scope public key for one scope and epoch, with the patient's signature
    over `scope_key_statement` (crypto/statements.py) by their current identity key: writers
    check it before wrapping, so a node cannot pass its own key off as the patient's."""

    scope: str
    epoch: int
    public_key: str
    signature: str

    @classmethod
    def parse(cls, p: Payload) -> PublishScopeKey:
        scope, epoch = p.choice("scope", SCOPES), p.integer("epoch", 1, 2**32 - 1)
        msg = cls(scope, epoch, p.hex_bytes("public_key", 32), p.hex_bytes("signature", 64))
        p.done()
        return msg


def scope_key_payload(
    patient: Identity, chain_id: str, scope: str, epoch: int, public_key: str, patient_did: str = ""
) -> dict[str, Any]:
    """A signed `records/publish_scope_key` payload (`patient_did`: the patient's did when
    `patient` is a rotated key; default `patient.did`)."""
    did = patient_did or patient.did
    statement = scope_key_statement(chain_id, did, scope, epoch, public_key)
    return {
        "scope": scope,
        "epoch": epoch,
        "public_key": public_key,
        "signature": patient.sign(statement).hex(),
    }


@dataclass(frozen=True)
class Erase:
    """The patient's request to erase named records, or all of theirs (`all`: 1)."""

    records: tuple[str, ...]
    all: bool

    @classmethod
    def parse(cls, p: Payload) -> Erase:
        everything = _flag(p, "all")
        records: tuple[str, ...] = ()
        if p.has("records"):
            records = tuple(p.text_list("records", MAX_ERASE_RECORDS))
            if any(len(r) != 64 or r.strip("0123456789abcdef") for r in records):
                raise _fail("'records' must hold record names (64 lowercase hex)")
        if everything == bool(records):
            raise _fail("name the records to erase, or set 'all' to 1 (not both)")
        p.done()
        return cls(records, everything)
