"""Audit receipts: what a node promises, on each read response, about that read's entries.

Every blob read (`GET /blobs/{hash}`, `POST /blobs/fetch`), served or refused, answers with

    CareLedger-Audit: node=<did>, entries=<n>, first=<journal seq>, digest=<64 hex>,
                      sig=<128 hex>

(one line): the node `node` journaled (fsynced) `n` access entries for this request, numbered
`first`..`first`+n-1 in its journal, before it sent the first byte of the response, and
promises to commit them on chain. `digest` is SHA-256 of the entries' leaves
(`AccessEntry.leaf()`, 32 bytes each, concatenated in request order); `sig` is the node key's
Ed25519 signature over the RFC 8785 bytes of

    {"domain": "careledger/audit-receipt/v1", "chain_id", "node", "request", "entries",
     "first", "digest"}

where `request` is the hex SHA-256 of the request's own signature (the `sig` of its
`Authorization` header, 64 bytes): the receipt answers that one signed request and no other.
The reader holds both: its signed request (which only it could make) and the node's signed
promise. If the entries are not on chain after a grace period, the pair proves it
(`wallet/audit.py::check_receipt`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from careledger.crypto.canonical import canonical_bytes
from careledger.crypto.keys import Identity, KeyError_, ed25519_from_did, verify_signature

HEADER = "CareLedger-Audit"
RECEIPT_DOMAIN = "careledger/audit-receipt/v1"

_RECEIPT = re.compile(
    r"node=(?P<node>did:key:z[1-9A-HJ-NP-Za-km-z]{1,100}), entries=(?P<entries>[0-9]{1,9}), "
    r"first=(?P<first>[0-9]{1,18}), digest=(?P<digest>[0-9a-f]{64}), sig=(?P<sig>[0-9a-f]{128})"
)


class BadReceipt(ValueError):
    """A receipt header that is missing, malformed, or not signed by its node."""


@dataclass(frozen=True)
class AuditReceipt:
    node: str
    entries: int
    first: int
    digest: str  # hex SHA-256 of the entries' leaves, in order
    signature: bytes

    def header(self) -> str:
        return (
            f"node={self.node}, entries={self.entries}, first={self.first}, "
            f"digest={self.digest}, sig={self.signature.hex()}"
        )

    @classmethod
    def parse(cls, header: str | None) -> AuditReceipt:
        if not header:
            raise BadReceipt(f"the response has no {HEADER} header: the read was not receipted")
        match = _RECEIPT.fullmatch(header.strip())
        if match is None:
            raise BadReceipt(f"{HEADER} is not 'node=..., entries=..., first=..., digest=, sig='")
        return cls(
            match["node"],
            int(match["entries"]),
            int(match["first"]),
            match["digest"],
            bytes.fromhex(match["sig"]),
        )

    def check(self, chain_id: str, request: str, signing_key: bytes | None = None) -> None:
        """BadReceipt unless the node's key (`signing_key`, default the key its did names)
        signed this receipt for the request whose digest is `request`."""
        try:
            key = signing_key if signing_key is not None else ed25519_from_did(self.node)
        except KeyError_ as exc:
            raise BadReceipt(f"the receipt's node: {exc}") from None
        statement = receipt_statement(
            chain_id, self.node, request, self.entries, self.first, self.digest
        )
        if not verify_signature(key, self.signature, statement):
            raise BadReceipt(
                f"the receipt is not signed by node {self.node} for this request and these entries"
            )


def receipt_statement(
    chain_id: str, node: str, request: str, entries: int, first: int, digest: str
) -> bytes:
    return canonical_bytes(
        {
            "domain": RECEIPT_DOMAIN,
            "chain_id": chain_id,
            "node": node,
            "request": request,
            "entries": entries,
            "first": first,
            "digest": digest,
        }
    )


def sign_receipt(
    identity: Identity, chain_id: str, node: str, request: str, first: int, leaves: Sequence[bytes]
) -> AuditReceipt:
    digest = leaves_digest(leaves)
    statement = receipt_statement(chain_id, node, request, len(leaves), first, digest)
    return AuditReceipt(node, len(leaves), first, digest, identity.sign(statement))


def leaves_digest(leaves: Sequence[bytes]) -> str:
    return hashlib.sha256(b"".join(leaves)).hexdigest()


def request_digest(authorization: str) -> str:
    """The digest a receipt names for a request: hex SHA-256 of its Authorization's
    signature bytes. BadReceipt if the header carries no signature."""
    found = re.search(r"sig=([A-Za-z0-9_\-]{86}(?:==)?)", authorization or "")
    if found is None:
        raise BadReceipt("the request has no CareLedger signature to be receipted")
    text = found[1]
    try:
        signature = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise BadReceipt("the request's signature is not base64url") from None
    return hashlib.sha256(signature).hexdigest()
