"""Enrolling patients: a clinic makes a patient's identity and hands over its keys.

`enrol_for_claim` makes a new identity from a fresh master secret (no phrase), registers it
with the organisation's enrolment voucher, publishes its first scope keys (each signed) and
grants the organisation write consent (with the naming key wrapped to it), all signed as the
patient, and returns a claim package and its code (crypto/claim.py): the clinic stores the
package for the patient and gives the code out of band, keeping neither the code nor any key
or name in clear. The patient claims the package (wallet/custody.py) and rotates to keys the
clinic never saw.

`enrol_patient` (the clinic makes a recovery phrase and hands it over, `save_enrolment`
writes it) is the older way: whoever reads what it writes can act as the patient.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from careledger.chain.block import parse_time_ns
from careledger.chain.modules.identity.vouchers import ENROLMENT_VOUCHER_BLOCKS, sign_voucher
from careledger.chain.modules.records import scope_key_payload
from careledger.crypto.claim import (
    DEFAULT_KDF,
    ClaimContents,
    KdfParams,
    new_claim_code,
    seal_claim_package,
)
from careledger.crypto.keyfile import KeyFile, naming_key_of, scope_key_of
from careledger.crypto.keys import Identity, identity_from_phrase, new_recovery_phrase
from careledger.crypto.scopekeys import SCOPES, ScopePublic, wrap_naming_key
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
    (`org`) enrolment voucher, publish its scope keys, grant the organisation write consent.

    The patient signs these transactions; the clinic holds the keys only until it hands
    the key file and phrase over. Without `wait`, the transactions are only admitted:
    anchors submitted after them land in the same or a later block, after them.
    """
    phrase = new_recovery_phrase()
    identity = identity_from_phrase(phrase)
    publics = _register(node, org, org_did, identity, node.status(), wait)
    return Enrolment(KeyFile(identity.did, "patient", identity, name), phrase, publics)


@dataclass(frozen=True)
class ClaimEnrolment:
    """A patient enrolled for a claim: the package to store for them (JSON bytes, written
    with crypto.claim.write_claim_package), the code to give them once, out of band, and the
    scope keys to write their records to meanwhile. repr() shows neither package nor code."""

    did: str
    package: bytes = field(repr=False)
    code: str = field(repr=False)
    scope_keys: dict[str, ScopePublic]


def enrol_for_claim(
    node: NodeClient,
    org: Identity,
    org_did: str,
    name: str = "",
    wait: bool = True,
    *,
    kdf: KdfParams = DEFAULT_KDF,
) -> ClaimEnrolment:
    """Enrol a patient who has no identity yet: a fresh master secret, registered, its
    first scope keys published, the organisation granted write consent; sealed into a claim
    package under a new claim code. `name` goes only inside the package (encrypted).

    The master secret is dropped when this returns: the package, under its code, is the only
    copy, and the patient's claim makes it useless for anything written afterwards.
    """
    identity = Identity.generate()
    status = node.status()
    code = new_claim_code()
    contents = ClaimContents(identity.did, str(status["chain_id"]), identity.master, name)
    package = seal_claim_package(contents, code, kdf=kdf)  # before anything is on the chain
    publics = _register(node, org, org_did, identity, status, wait)
    return ClaimEnrolment(identity.did, package, code, publics)


def _register(
    node: NodeClient,
    org: Identity,
    org_did: str,
    identity: Identity,
    status: dict[str, object],
    wait: bool,
) -> dict[str, ScopePublic]:
    """Register `identity` as a patient with `org`'s voucher, publish its signed scope keys
    of the first epoch and grant `org` write consent: one batch, signed as the patient."""
    chain_id = str(status["chain_id"])
    signer = Signer(node, identity.did, identity)
    voucher = sign_voucher(
        org,
        chain_id,
        "register_patient",
        identity.did,
        int(str(status["height"])) + ENROLMENT_VOUCHER_BLOCKS,
        org_did=org_did,
    )
    txs = [
        signer.sign(
            "identity/register_patient",
            {"encryption_key": identity.encryption_public.hex(), "voucher": voucher},
        )
    ]
    publics = {}
    for scope in SCOPES:
        pair = scope_key_of(identity, scope, FIRST_EPOCH)
        publics[scope] = ScopePublic(scope, FIRST_EPOCH, pair.public_bytes)
        payload = scope_key_payload(identity, chain_id, scope, FIRST_EPOCH, pair.public_bytes.hex())
        txs.append(signer.sign("records/publish_scope_key", payload))
    consent = write_consent(identity.did, org_did, status)
    # The organisation names the records it writes: it gets the naming key with its grant.
    naming = wrap_naming_key(naming_key_of(identity), identity.did, org_did, org.encryption_public)
    txs.append(signer.sign("consent/grant", {**consent, "naming_key": naming.hex()}))
    for result in node.submit_many(txs, wait=wait):
        raise_for(result)
    return publics


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
