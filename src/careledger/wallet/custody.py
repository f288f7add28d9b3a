"""Custody: a patient's keys made on the patient's own device, and claimed from a clinic.

    keyfile, phrase = new_patient_keys()      # `careledger keys new`: shown once, kept offline
    keyfile = restore_patient_keys(phrase)    # `careledger keys restore`

A patient's identity is a 24-word recovery phrase made where the patient is (this CLI, later
the portal); no server ever sees it. A clinic that enrols a patient who has no identity yet
makes a claim package instead (wallet/enrolment.py), which the patient claims (`claim` below):
the patient then holds keys the clinic never saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from careledger.chain.modules.identity.messages import rotation_payload
from careledger.chain.modules.records import scope_key_payload
from careledger.crypto.claim import ClaimError, open_claim_package
from careledger.crypto.keyfile import KeyFile, naming_key_of
from careledger.crypto.keys import Identity, identity_from_phrase, new_recovery_phrase
from careledger.crypto.scopekeys import SCOPES
from careledger.wallet.node_client import NodeClient, NodeError, Signer
from careledger.wallet.refs import RecordsError, raise_for


def new_patient_keys(name: str = "") -> tuple[KeyFile, str]:
    """A new patient identity: its key file (version 2, naming key of this first master) and
    its recovery phrase (24 BIP-39 words), which the caller shows once and forgets."""
    phrase = new_recovery_phrase()
    identity = identity_from_phrase(phrase)
    return KeyFile(identity.did, "patient", identity, name), phrase


def restore_patient_keys(phrase: str, name: str = "") -> KeyFile:
    """The key file a recovery phrase gives (KeyError_ for a bad phrase).

    For an identity that never rotated (made by `keys new`) this is the whole key file. After
    a claim the phrase gives the current keys only; the did, the naming key and the previous
    masters (old epochs) are in the key file the claim wrote, which the patient must keep.
    """
    identity = identity_from_phrase(phrase)
    return KeyFile(identity.did, "patient", identity, name)


# --- claiming a package ------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    """A claimed identity: its new key file and recovery phrase (shown once), and the first
    epoch of its new scope keys. repr() shows no secret."""

    keyfile: KeyFile
    phrase: str = field(repr=False)
    epoch: int
    revoked: tuple[str, ...] = ()  # grants made with the package's key, revoked by the claim


def claim(
    node: NodeClient, package_path: Path, code: str, *, save_to: Path | None = None
) -> Claimed:
    """Claim a package: open it with its code, then move the identity to keys the clinic
    never held.

    1. open the package (crypto/claim.py: a wrong code is counted, ClaimError);
    2. check it is for this chain and not claimed yet (its key is still the identity's);
    3. a new recovery phrase and master secret; the new key file (the package's master kept
       as `previous` for the old epochs, the naming key kept), written to `save_to` now if
       given, so that no crash can lose the new keys once the chain knows them;
    4. `identity/rotate_key`, certified by the old key, proven by the new one;
    5. every scope at epoch max(current) + 1 from the new master, each signed; and every
       grant made with the package's key revoked, but the enrolling clinic's write consent
       (finish_claim).

    Records written afterwards are wrapped to keys derived from the new master only, and no
    grant anyone made with the package's key (the clinic held it until now) survives to
    receive them or to act as the patient's delegate.
    """
    contents = open_claim_package(package_path, code)
    old = contents.identity
    patient = node.signed_as(old, did=contents.did)
    chain_id = str(patient.status()["chain_id"])
    if chain_id != contents.chain_id:
        raise ClaimError(
            f"this package is for chain {contents.chain_id!r}; the node serves {chain_id!r}"
        )
    _require_unclaimed(patient, contents.did, old)
    epoch = _next_epoch(patient, contents.did)
    phrase = new_recovery_phrase()
    new = identity_from_phrase(phrase)
    first = KeyFile(contents.did, "patient", old, contents.name, naming_key_of(old))
    keyfile = first.rotated(new, epoch)
    if save_to is not None:
        keyfile.save(save_to)
    try:
        Signer(patient, contents.did, old).send(
            "identity/rotate_key", rotation_payload(old, new, chain_id, did=contents.did)
        )
    except NodeError as exc:
        if save_to is not None and exc.status < 500:  # refused: the chain has not changed
            save_to.unlink()
        raise ClaimError(f"the node refused the key rotation: {exc.message}") from exc
    revoked = finish_claim(node, keyfile)
    return Claimed(keyfile, phrase, epoch, revoked)


def finish_claim(node: NodeClient, keyfile: KeyFile) -> tuple[str, ...]:
    """After the rotation: publish the new epoch of every scope (signed by the new key) and
    revoke every grant made before the rotation, but the write consent given at registration
    (the enrolling clinic's: a write grant holds no scope key). Before the claim whoever held
    the package's key (the clinic) could sign grants as the patient: sharing the new epochs
    with them would hand the clinic what the claim is for. What is done already is skipped,
    so that an interrupted claim can be finished by calling again. The revoked grants' ids."""
    epoch = keyfile.previous[-1].below_epoch
    patient = node.signed_as(keyfile.identity, did=keyfile.did)
    chain_id = str(patient.status()["chain_id"])
    signer = Signer(patient, keyfile.did, keyfile.identity)
    published = {(k["scope"], k["epoch"]) for k in _scope_keys(patient, keyfile.did)}
    txs = []
    for scope in SCOPES:
        if (scope, epoch) not in published:
            public = keyfile.scope_key(scope, epoch).public_bytes.hex()
            payload = scope_key_payload(
                keyfile.identity, chain_id, scope, epoch, public, patient_did=keyfile.did
            )
            txs.append(signer.sign("records/publish_scope_key", payload))
    stale = _made_with_the_package(patient, keyfile.did)
    txs += [signer.sign("consent/revoke", {"id": grant_id}) for grant_id in stale]
    _submit(patient, txs)
    return stale


def _made_with_the_package(node: NodeClient, did: str) -> tuple[str, ...]:
    """The active grants made before the identity's last key rotation (the claim), but the
    write consent to the clinic that enrolled the patient (`enrolled_by`: its voucher)."""
    identity = node.query("identity/identity", did=did)
    rotated, clinic = int(identity["keys"][-1]["since"]), identity.get("enrolled_by", "")
    stale = []
    for grant in node.query("consent/grants", patient=did):
        if grant["revoked_at"] or grant["height"] >= rotated:
            continue
        if grant["action"] == "write" and grant["grantee"] == clinic:
            continue
        stale.append(str(grant["id"]))
    return tuple(stale)


def _require_unclaimed(node: NodeClient, did: str, old: Identity) -> None:
    try:
        ident = node.query("identity/identity", did=did)
    except NodeError as exc:
        if exc.status == 401:  # the node checks a request's key against the did's current one
            raise ClaimError(
                "this package was already claimed: its key no longer acts for the identity "
                "(the node refused a request signed with it)"
            ) from exc
        raise ClaimError(f"the node does not know the package's identity: {exc.message}") from exc
    if ident.get("kind") != "patient" or not ident.get("active"):
        raise ClaimError(f"{did} is not an active patient on this chain")
    if ident.get("signing_key") != old.signing_public.hex():
        raise ClaimError(
            "this package was already claimed: the identity's keys changed since it was made"
        )


def _next_epoch(node: NodeClient, did: str) -> int:
    return max((int(k["epoch"]) for k in _scope_keys(node, did)), default=0) + 1


def _scope_keys(node: NodeClient, did: str) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = node.query("records/scope_keys", patient=did)
    return keys


def _submit(node: NodeClient, txs: list[bytes]) -> None:
    if not txs:
        return
    for result in node.submit_many(txs, wait=True):
        try:
            raise_for(result, "claim")
        except RecordsError as exc:
            raise ClaimError(
                f"the key rotation is done but finishing the claim failed ({exc}); run the "
                "claim's last step again with the new key file (wallet.custody.finish_claim)"
            ) from exc
