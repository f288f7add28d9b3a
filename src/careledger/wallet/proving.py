"""Gathering a record proof from a node; wallet/proofs.py checks it offline.

A proof (docs/records.md, "Proofs") holds the anchor transaction's evidence as the node's
`GET /txs/{hash}` gives it (`evidence`: the transaction, its result, both Merkle proofs and
the block, with the next block and its commit under CometBFT), the author's key at that
height with the proven rotations that lead to it, the decrypted resource and its salt.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from careledger.chain.modules.identity.events import KeyRotated
from careledger.chain.modules.records.events import RecordAnchored
from careledger.chain.tx import decode_tx
from careledger.crypto.keys import ed25519_from_did
from careledger.wallet.node_client import NodeClient, NodeError
from careledger.wallet.proofs import PROOF_FORMAT
from careledger.wallet.records import Erased, RecordRef, RecordsError

if TYPE_CHECKING:
    from careledger.wallet.records import RecordsClient

# A CometBFT proof needs block H+1, which commits to block H's results; it comes within a
# block interval or two, the node waits ten seconds of it per request.
EVIDENCE_WAIT_SECONDS = 30.0


def record_proof(
    client: RecordsClient, ref: RecordRef, version: int | None = None
) -> dict[str, Any]:
    """A self-contained proof of one version of a record (check it with wallet.proofs)."""
    info = client.versions(ref)
    if info["erased_at"]:
        raise Erased(f"{ref} was erased by its patient")
    number = version or int(info["versions"])
    anchor = next((a for a in info["history"] if a["version"] == number), None)
    if anchor is None or anchor["tombstone"]:
        raise RecordsError(f"{ref} has no readable version {number}", 404)
    evidence = tx_evidence(client.node, anchor_tx_hash(client.node, anchor))
    anchor_tx = decode_tx(bytes.fromhex(evidence["tx"])).tx
    author = anchor_tx.sender
    fetched = client.fetch([anchor["blob_hash"]])[0]
    if fetched[0] != 200:
        raise RecordsError(f"{ref}: {fetched[1].decode()}", fetched[0])
    opened = client.open_blob(ref, anchor, fetched[1])
    proof = {
        "format": PROOF_FORMAT,
        "anchor": evidence,
        "author_key": author_key_evidence(client.node, author, evidence),
        "resource": opened.resource(),
        "salt": opened.salt.hex(),
    }
    if anchor_tx.type == "records/anchor_batch":
        blobs = [a.get("blob_hash") for a in anchor_tx.payload["anchors"]]
        proof["anchor_index"] = blobs.index(anchor["blob_hash"])  # which anchor of the batch
    return proof


def anchor_tx_hash(node: NodeClient, anchor: Mapping[str, Any]) -> str:
    """The hash of the transaction that made this anchor, found by its block's events."""
    block = _node_call(node.block, int(anchor["height"]))
    for tx in block["txs"]:
        for event in tx.get("events", []):
            anchored = RecordAnchored.from_json(event)
            if anchored is not None and anchored.blob_hash == anchor["blob_hash"]:
                return str(tx["hash"])
    raise RecordsError(f"no anchor of blob {anchor['blob_hash']} in its block", 404)


def tx_evidence(
    node: NodeClient, tx_hash: str, wait: float = EVIDENCE_WAIT_SECONDS
) -> dict[str, Any]:
    """The node's evidence for a committed transaction, once it can give it."""
    deadline = time.monotonic() + wait
    while True:
        evidence = _node_call(node.transaction, tx_hash).get("evidence")
        if evidence:
            return dict(evidence)
        if time.monotonic() > deadline:
            raise RecordsError(
                f"the node has no proof of {tx_hash} yet: the block after it is not committed",
                503,
            )
        time.sleep(0.25)


def author_key_evidence(node: NodeClient, did: str, anchor: Mapping[str, Any]) -> dict[str, Any]:
    """The author's key at the anchor's position, and the proven rotations leading to it.

    The key history comes from the identity query (`keys`: [{since, signing_key}], oldest
    first, `since` the height of the transaction that registered or rotated to the key). The
    did's own key is the starting point; rotations after the anchor are left out."""
    key = ed25519_from_did(did).hex()
    history = _key_history(node, did)
    anchored_at = (int(anchor["height"]), int(anchor["tx_proof"]["index"]))
    rotations: list[dict[str, Any]] = []
    for entry in sorted(history, key=lambda e: int(e["since"])):
        new_key = str(entry["signing_key"])
        if new_key == key or int(entry["since"]) > anchored_at[0]:
            continue  # the registration itself, or a rotation after the anchor
        evidence = tx_evidence(node, _rotation_tx_hash(node, did, int(entry["since"]), new_key))
        if (int(evidence["height"]), int(evidence["tx_proof"]["index"])) > anchored_at:
            break  # in the anchor's block, after it
        rotations.append(evidence)
        key = new_key
    return {"signing_key": key, "rotations": rotations}


def _key_history(node: NodeClient, did: str) -> list[dict[str, Any]]:
    keys = _node_call(node.query, "identity/identity", did=did).get("keys")
    if not isinstance(keys, list):  # every identity record carries it (rules version 2)
        raise RecordsError(f"the node gave no key history for {did}", 502)
    return keys


def _rotation_tx_hash(node: NodeClient, did: str, height: int, new_key: str) -> str:
    for tx in _node_call(node.block, height)["txs"]:
        rotated = any(
            (typed := KeyRotated.from_json(e)) is not None and typed.did == did
            for e in tx.get("events", [])
        )
        if rotated and tx.get("code") == 0:
            found = _node_call(node.transaction, str(tx["hash"]))
            payload = decode_tx(bytes.fromhex(found["tx"])).tx.payload
            if payload.get("signing_key") == new_key:
                return str(tx["hash"])
    raise RecordsError(f"no rotation of {did} to key {new_key[:16]}... in block {height}", 404)


def _node_call(method: Any, *args: Any, **params: Any) -> Any:
    try:
        return method(*args, **params)
    except NodeError as exc:
        raise RecordsError(exc.message, exc.status) from None
