"""Enrolling patients: a clinic makes a patient's identity and hands over its keys.

`enrol_patient` makes a new identity from a fresh recovery phrase, registers it with the
organisation's enrolment voucher, publishes its first scope keys (each signed) and grants the
organisation write consent, all signed as the patient; `save_enrolment` writes the key file
and phrase to hand over.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from careledger.chain.block import parse_time_ns
from careledger.chain.modules.identity.vouchers import ENROLMENT_VOUCHER_BLOCKS, sign_voucher
from careledger.chain.modules.records import scope_key_payload
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity, identity_from_phrase, new_recovery_phrase
from careledger.crypto.scopekeys import SCOPES, ScopePublic, derive_scope_key
from careledger.wallet.node_client import NodeClient, Signer
from careledger.wallet.refs import raise_for

FIRST_EPOCH = 1
WRITE_CONSENT_SECONDS = 10 * 365 * 24 * 3600  # about ten years


@dataclass(frozen=True)
class Enrolment:
    """A patient enrolled by a clinic: keys to hand over (key file and recovery phrase)."""

    keyfile: KeyFile
    phrase: str = field(repr=False)  # the recovery phrase: the patient's keys
    scope_keys: dict[str, ScopePublic]


def enrol_patient(
    node: NodeClient, org: Identity, org_did: str, name: str = "", wait: bool = True
) -> Enrolment:
    """Make a new patient identity (recovery phrase), register it with the organisation's
    (`org`) enrolment voucher, publish its scope keys.

    The patient signs these transactions; the clinic holds the keys only until it hands
    the key file and phrase over. Without `wait`, the transactions are only admitted:
    anchors submitted after them land in the same or a later block, after them.
    """
    phrase = new_recovery_phrase()
    identity = identity_from_phrase(phrase)
    keyfile = KeyFile(identity.did, "patient", identity, name)
    signer = Signer(node, identity.did, identity)
    scope_root = identity.secret("scope-keys")
    publics = {}
    status = node.status()
    voucher = sign_voucher(
        org,
        status["chain_id"],
        "register_patient",
        identity.did,
        int(status["height"]) + ENROLMENT_VOUCHER_BLOCKS,
        org_did=org_did,
    )
    txs = [
        signer.sign(
            "identity/register_patient",
            {"encryption_key": identity.encryption_public.hex(), "voucher": voucher},
        )
    ]
    for scope in SCOPES:
        pair = derive_scope_key(scope_root, scope, FIRST_EPOCH)
        publics[scope] = ScopePublic(scope, FIRST_EPOCH, pair.public_bytes)
        payload = scope_key_payload(
            identity, status["chain_id"], scope, FIRST_EPOCH, pair.public_bytes.hex()
        )
        txs.append(signer.sign("records/publish_scope_key", payload))
    txs.append(signer.sign("consent/grant", write_consent(identity.did, org_did, status)))
    for result in node.submit_many(txs, wait=wait):
        raise_for(result)
    return Enrolment(keyfile, phrase, publics)


def write_consent(patient: str, org_did: str, status: dict[str, object]) -> dict[str, object]:
    """The patient's write grant to the enrolling organisation: every scope, from the node's
    latest block time (the chain's clock: the next block is not earlier; 0 before the first
    block, whose time under CometBFT is the genesis time) for WRITE_CONSENT_SECONDS."""
    latest, height = status.get("latest_block_time"), status.get("height")
    has_block = isinstance(latest, str) and isinstance(height, int) and height > 0
    start = parse_time_ns(latest) // 10**9 if has_block and isinstance(latest, str) else 0
    return {
        "id": os.urandom(16).hex(),
        "patient": patient,
        "grantee": org_did,
        "action": "write",
        "scopes": list(SCOPES),
        "start": start,
        "end": max(start, int(time.time())) + WRITE_CONSENT_SECONDS,
    }


def save_enrolment(enrolment: Enrolment, directory: Path) -> Path:
    """The key file and the recovery phrase, both mode 0600, to hand to the patient."""
    stem = f"patient-{enrolment.keyfile.did[-12:]}"
    path = directory / f"{stem}.json"
    enrolment.keyfile.save(path)
    phrase_path = directory / f"{stem}.phrase.txt"
    fd = os.open(phrase_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(enrolment.phrase + "\n")
    return path
