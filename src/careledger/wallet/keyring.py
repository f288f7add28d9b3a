"""The keys an identity holds for a patient's records, and the checks before trusting any.

Two kinds of holder:
- the patient (`OwnKeys`): every scope key and the naming key come from its key file;
- a grantee (`GrantedKeys`): an organisation (or a delegate) opens what the patient wrapped
  to it in its grants (`consent/granted`), checking each scope key it unwraps against the
  key the patient published.

A writer wraps data keys to the patient's current scope public keys. It takes them from a
node's answer, so it first checks them (`verified_scope_keys`): each must be signed by the
patient's current identity key, and that key must be the end of a chain of rotation
certificates that starts at the did itself. A node that answers with a key of its own, or a
key signed by anyone else, is refused (DESIGN.md, Records).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity, ed25519_from_did, verify_signature
from careledger.crypto.scopekeys import (
    ScopeKeyError,
    ScopeKeyPair,
    ScopePublic,
    unwrap_naming_key,
    unwrap_scope_key,
)
from careledger.crypto.statements import rotation_statement, scope_key_statement
from careledger.wallet.refs import RecordsError


class UntrustedKey(RecordsError):
    """A key the node served that the patient's signatures do not vouch for."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 502)


class Keyring(Protocol):
    """What opening and naming a patient's records needs."""

    def naming_key(self, patient: str) -> bytes:
        """The patient's naming key; RecordsError 403 if this holder was not given it."""
        ...

    def scope_pair(self, patient: str, scope: str, epoch: int) -> ScopeKeyPair | None:
        """The scope private key of (scope, epoch), or None if this holder has none."""
        ...


class QueryApi(Protocol):
    def query(self, path: str, **params: str) -> Any: ...


# --- the patient's own keys -----------------------------------------------------------------


class OwnKeys:
    """A patient's keys, all derived from its key file."""

    def __init__(self, keyfile: KeyFile) -> None:
        self._keyfile = keyfile
        # Derived once per (scope, epoch): a key file's scope keys never change (it is
        # frozen; a rotation makes a new KeyFile, and a new OwnKeys), and deriving one (HKDF
        # and an X25519 key) cost as much as opening the record it was asked for.
        self._pairs: dict[tuple[str, int], ScopeKeyPair] = {}

    @property
    def keyfile(self) -> KeyFile:
        """The key file (read-only: the cached scope keys are this key file's)."""
        return self._keyfile

    def naming_key(self, patient: str) -> bytes:
        if patient != self.keyfile.did:
            raise RecordsError(f"{self.keyfile.did} holds no naming key of {patient}", 403)
        return self.keyfile.naming_key

    def scope_pair(self, patient: str, scope: str, epoch: int) -> ScopeKeyPair | None:
        if patient != self.keyfile.did:
            return None
        pair = self._pairs.get((scope, epoch))
        if pair is None:
            pair = self._pairs[(scope, epoch)] = self.keyfile.scope_key(scope, epoch)
        return pair


# --- keys granted to an organisation or a delegate ------------------------------------------


class GrantedKeys:
    """Keys the patients wrapped to `holder` in the grants that name `reader`.

    For an organisation both are its did; for a practitioner, `reader` is the practitioner
    (grants to it and to its organisation) and `holder` its organisation, whose key the
    patient wrapped to (the organisation is the cryptographic boundary; a practitioner-level
    limit is policy, enforced by the node). For a delegate both are the delegate's did.
    One `consent/granted` query per patient, cached; a key or naming key not found in the
    cache is looked for once more in a fresh answer (`_refresh`), so that a long-lived client
    sees a grant made since, and a new epoch's keys shared after a revocation.
    """

    def __init__(
        self,
        api: QueryApi,
        holder: str,
        private_keys: Sequence[X25519PrivateKey],
        reader: str | None = None,
    ) -> None:
        self.api = api
        self.holder = holder
        self.reader = reader or holder
        self.private_keys = private_keys  # the holder's, newest first (see encryption_keys)
        self._grants: dict[str, list[dict[str, Any]]] = {}
        self._published: dict[str, dict[tuple[str, int], ScopePublic]] = {}
        self._pairs: dict[tuple[str, str, int], ScopeKeyPair | None] = {}

    def _grants_of(self, patient: str) -> list[dict[str, Any]]:
        if patient not in self._grants:
            granted = self.api.query("consent/granted", grantee=self.reader)
            self._grants[patient] = [g for g in granted if g["patient"] == patient]
        return self._grants[patient]

    def _published_of(self, patient: str) -> dict[tuple[str, int], ScopePublic]:
        if patient not in self._published:
            rows = self.api.query("records/scope_keys", patient=patient)
            self._published[patient] = {
                (r["scope"], r["epoch"]): ScopePublic(
                    r["scope"], r["epoch"], bytes.fromhex(r["public_key"])
                )
                for r in rows
            }
        return self._published[patient]

    def _refresh(self, patient: str) -> None:
        """Forget the cached answers about `patient`: the next look asks the node again."""
        self._grants.pop(patient, None)
        self._published.pop(patient, None)

    def _cached(self, patient: str) -> bool:
        return patient in self._grants or patient in self._published

    def naming_key(self, patient: str) -> bytes:
        cached = self._cached(patient)
        found = self._naming_key(patient)
        if found is None and cached:  # granted since we last asked? Ask once more.
            self._refresh(patient)
            found = self._naming_key(patient)
        if found is None:
            raise RecordsError(f"{patient} has not shared their naming key with {self.holder}", 403)
        return found

    def _naming_key(self, patient: str) -> bytes | None:
        for grant in self._grants_of(patient):
            wrapped = str(grant.get("naming_key") or "")
            for private_key in self.private_keys if wrapped else ():
                try:
                    return unwrap_naming_key(
                        bytes.fromhex(wrapped), patient, self.holder, private_key
                    )
                except ScopeKeyError:
                    continue  # wrapped to another of our keys, or not ours: try the next
        return None

    def scope_pair(self, patient: str, scope: str, epoch: int) -> ScopeKeyPair | None:
        cached = (patient, scope, epoch)
        if cached not in self._pairs:
            stale = self._cached(patient)
            pair = self._unwrap(patient, scope, epoch)
            if pair is None and stale:  # shared since we last asked (a new epoch after a
                self._refresh(patient)  # revocation, a new grant)? Ask once more.
                pair = self._unwrap(patient, scope, epoch)
            self._pairs[cached] = pair
        return self._pairs[cached]

    def _unwrap(self, patient: str, scope: str, epoch: int) -> ScopeKeyPair | None:
        published = self._published_of(patient).get((scope, epoch))
        if published is None:
            return None
        for grant in self._grants_of(patient):
            for key in grant.get("keys", []):
                if (key["scope"], key["epoch"]) != (scope, epoch):
                    continue
                wrapped = bytes.fromhex(key["wrapped"])
                for private_key in self.private_keys:
                    try:
                        return unwrap_scope_key(
                            wrapped, patient, published, self.holder, private_key
                        )
                    except ScopeKeyError:
                        continue
        return None


# --- checking what a node says about a patient's keys ---------------------------------------


def current_signing_key(identity: Mapping[str, Any], chain_id: str) -> bytes:
    """The identity's current signing key, checked link by link from the did's own key.

    Every rotation carries the old key's certificate and the new key's proof of possession
    over the same statement; a history that does not start at the did's key, or a link
    without both signatures, is refused.
    """
    did = str(identity["did"])
    history: Sequence[Mapping[str, Any]] = identity["keys"]
    key = ed25519_from_did(did)
    if not history or bytes.fromhex(history[0]["signing_key"]) != key:
        raise UntrustedKey(f"{did}'s key history does not start at the did's own key")
    for link in history[1:]:
        new_key = bytes.fromhex(link["signing_key"])
        statement = rotation_statement(
            chain_id, did, link["signing_key"], str(link.get("encryption_key", ""))
        )
        certificate = bytes.fromhex(str(link.get("certificate", "")))
        proof = bytes.fromhex(str(link.get("proof", "")))
        if not (
            verify_signature(key, certificate, statement)
            and verify_signature(new_key, proof, statement)
        ):
            raise UntrustedKey(f"{did}'s key rotation at height {link['since']} is not signed")
        key = new_key
    if key.hex() != identity["signing_key"]:
        raise UntrustedKey(f"{did}'s current key is not the end of its rotation chain")
    return key


def verified_scope_keys(
    identity: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], chain_id: str
) -> dict[str, ScopePublic]:
    """The patient's current scope public key of each scope, each checked against the
    patient's signature with the patient's current key (`records/scope_keys` rows)."""
    patient = str(identity["did"])
    signer = current_signing_key(identity, chain_id)
    current: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        if row["scope"] not in current or row["epoch"] > current[row["scope"]]["epoch"]:
            current[row["scope"]] = row
    verified = {}
    for scope, row in current.items():
        statement = scope_key_statement(
            chain_id, patient, scope, int(row["epoch"]), str(row["public_key"])
        )
        if not verify_signature(signer, bytes.fromhex(str(row.get("signature", ""))), statement):
            raise UntrustedKey(
                f"{patient}'s {scope} key (epoch {row['epoch']}) is not signed by the patient's "
                "current key: refusing to encrypt to it"
            )
        verified[scope] = ScopePublic(scope, int(row["epoch"]), bytes.fromhex(row["public_key"]))
    return verified


class HolderKeys:
    """An identity's keyring: its own records through its key file (a patient), everyone
    else's through what their grants wrapped to it (or to its organisation)."""

    def __init__(self, own: OwnKeys | None, granted: GrantedKeys) -> None:
        self.own = own
        self.granted = granted

    def naming_key(self, patient: str) -> bytes:
        if self.own is not None and patient == self.own.keyfile.did:
            return self.own.naming_key(patient)
        return self.granted.naming_key(patient)

    def scope_pair(self, patient: str, scope: str, epoch: int) -> ScopeKeyPair | None:
        if self.own is not None and patient == self.own.keyfile.did:
            return self.own.scope_pair(patient, scope, epoch)
        return self.granted.scope_pair(patient, scope, epoch)


def keyring_for(api: QueryApi, keyfile: KeyFile, organisation: KeyFile | None = None) -> Keyring:
    """The keyring of `keyfile`; a practitioner opens what was granted to `organisation`
    (its organisation's key file, held by its gateway)."""
    own = OwnKeys(keyfile) if keyfile.kind == "patient" else None
    holder = organisation or keyfile
    granted = GrantedKeys(api, holder.did, encryption_keys(holder), reader=keyfile.did)
    return HolderKeys(own, granted)


def encryption_keys(keyfile: KeyFile) -> list[X25519PrivateKey]:
    """Every encryption key of the identity, newest first: what was wrapped to it before a
    key rotation still opens with the key it was wrapped to."""
    masters = [keyfile.identity.master, *(p.master_secret for p in reversed(keyfile.previous))]
    return [Identity(master).encryption_private for master in masters]
