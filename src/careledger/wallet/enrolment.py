"""Enrolling patients: the patient's own keys, or a claim package for one who has none yet.

The patient's keys are made on the patient's device, never by a clinic (DESIGN.md, Custody):
- A patient who has keys (`careledger keys new`, the portal) registers itself: the clinic
  signs an enrolment voucher for the patient's did (`clinic_voucher`) and the patient's
  device submits `register_patient`, which also publishes its signed scope keys of the first
  epoch and grants the clinic write consent (with the naming key wrapped to it), all signed
  by the patient.
- A hospital bringing many patients who have keys enrols their dids on chain, up to 500 in
  one transaction signed once (`enrol_patients`); each patient's device then registers
  naming the hospital (`register_patient` without a voucher): one signature a patient
  for every validator to check instead of two (chain/modules/identity/enrolments.py).
- For a patient who has no identity yet (importing an EHR), `enrol_for_claim` makes a fresh
  master secret (no phrase), registers it the same way, and seals it into a claim package
  under a one-time code (crypto/claim.py): the clinic stores the package for the patient and
  gives the code out of band, keeping neither the code nor any key or name in clear. The
  patient claims the package (wallet/custody.py) and rotates to keys the clinic never saw.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from careledger.chain.block import parse_time_ns
from careledger.chain.modules.identity.enrolments import (
    ENROLLED_REGISTRATION_TYPE,
    ENROLMENT_TYPE,
    MAX_ENROLMENT_DIDS,
)
from careledger.chain.modules.identity.vouchers import ENROLMENT_VOUCHER_BLOCKS, sign_voucher
from careledger.chain.modules.records import scope_key_payload
from careledger.crypto.claim import (
    DEFAULT_KDF,
    ClaimContents,
    KdfParams,
    new_claim_code,
    seal_claim_package,
)
from careledger.crypto.keyfile import KeyFile, naming_key_of
from careledger.crypto.keys import Identity
from careledger.crypto.scopekeys import SCOPES, ScopePublic, wrap_naming_key
from careledger.wallet.node_client import NodeClient, Signer
from careledger.wallet.refs import raise_for

FIRST_EPOCH = 1
WRITE_CONSENT_SECONDS = 10 * 365 * 24 * 3600  # about ten years


@dataclass(frozen=True)
class ClaimEnrolment:
    """A patient enrolled for a claim: the package to store for them (JSON bytes, written
    with crypto.claim.write_claim_package), the code to give them once, out of band, and the
    scope keys to write their records to meanwhile. repr() shows neither package nor code."""

    did: str
    package: bytes = field(repr=False)
    code: str = field(repr=False)
    scope_keys: dict[str, ScopePublic]
    naming_key: bytes = field(repr=False)  # to name the records written meanwhile


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
    patient = KeyFile(identity.did, "patient", identity, naming_key=naming_key_of(identity))
    voucher = clinic_voucher(org, org_did, identity.did, status)
    # The clinic's signed client relays the patient's transactions (signed by the patient).
    publics = _register(node, patient, voucher, org_did, org.encryption_public, status, wait)
    return ClaimEnrolment(identity.did, package, code, publics, patient.naming_key)


def clinic_voucher(
    org: Identity, org_did: str, patient: str, status: dict[str, object]
) -> dict[str, object]:
    """The clinic's one-time enrolment voucher for `patient` (valid for a few blocks)."""
    return sign_voucher(
        org,
        str(status["chain_id"]),
        "register_patient",
        patient,
        int(str(status["height"])) + ENROLMENT_VOUCHER_BLOCKS,
        org_did=org_did,
    )


def enrol_patients(
    node: NodeClient, org: Identity, org_did: str, dids: Sequence[str], wait: bool = True
) -> None:
    """As member `org_did`: enrol patients' dids to register themselves naming it
    (`register_patient` with no voucher), MAX_ENROLMENT_DIDS to a transaction. RecordsError
    if any is refused (a did already registered refuses its whole transaction)."""
    signer = Signer(node, org_did, org)
    chunks = [dids[i : i + MAX_ENROLMENT_DIDS] for i in range(0, len(dids), MAX_ENROLMENT_DIDS)]
    txs = [signer.sign(ENROLMENT_TYPE, {"dids": list(chunk)}) for chunk in chunks]
    for result in node.submit_many(txs, wait=wait):
        raise_for(result, "enrolment")


def register_patient(
    node: NodeClient,
    patient: KeyFile,
    voucher: dict[str, object] | None,
    org_did: str,
    org_encryption_key: bytes,
    wait: bool = True,
) -> dict[str, ScopePublic]:
    """On the patient's device: register `patient` with the clinic's voucher (None: the
    clinic `org_did` enrolled the patient's did on chain), publish its signed scope keys of
    the first epoch, grant the clinic write consent. Its scope keys."""
    own = node.signed_as(patient)
    return _register(own, patient, voucher, org_did, org_encryption_key, own.status(), wait)


def _register(
    node: NodeClient,
    patient: KeyFile,
    voucher: dict[str, object] | None,
    org_did: str,
    org_encryption_key: bytes,
    status: dict[str, object],
    wait: bool,
) -> dict[str, ScopePublic]:
    """Register `patient` with `voucher` (None: with `org_did`'s enrolment), publish its
    signed scope keys of the first epoch and grant `org_did` write consent with the naming
    key, all signed as the patient.

    `node` submits them: the clinic's client (one batch), or the patient's own, which as an
    unregistered did may send its registration alone first (node/auth.py) and the rest once
    it is registered.
    """
    chain_id = str(status["chain_id"])
    identity = patient.identity
    signer = Signer(node, patient.did, identity, last_nonce=0)
    encryption_key = identity.encryption_public.hex()
    vouching: dict[str, object] = (
        {"enrolled_by": org_did} if voucher is None else {"voucher": voucher}
    )
    kind = ENROLLED_REGISTRATION_TYPE if voucher is None else "identity/register_patient"
    txs = [signer.sign(kind, {"encryption_key": encryption_key, **vouching})]
    publics = {}
    for scope in SCOPES:
        pair = patient.scope_key(scope, FIRST_EPOCH)
        publics[scope] = ScopePublic(scope, FIRST_EPOCH, pair.public_bytes)
        payload = scope_key_payload(identity, chain_id, scope, FIRST_EPOCH, pair.public_bytes.hex())
        txs.append(signer.sign("records/publish_scope_key", payload))
    consent = write_consent(patient.did, org_did, status)
    # The organisation names the records it writes: it gets the naming key with its grant.
    naming = wrap_naming_key(patient.naming_key, patient.did, org_did, org_encryption_key)
    txs.append(signer.sign("consent/grant", {**consent, "naming_key": naming.hex()}))
    # The registration goes first on its own: a batch reaches a network's mempools in no set
    # order, and a scope key checked before its sender is registered is refused. The
    # patient's own (unregistered) client also needs the block before it may sign requests.
    raise_for(node.submit(txs.pop(0), wait=node.did == patient.did), "registration")
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
