"""Test helpers for reads through a real node: members, practitioners, patients, records and
grants, each made by a real signed transaction through the node's API.

Records are written by hand (a record blob whose header names its record, uploaded, then
anchored with one scope recipient), not through the records SDK: what is tested here is who
the node serves a blob to, so the blob's bytes need not open, and the helpers stay independent
of how the SDK writes.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from careledger.crypto.envelope import BlobOwner, WrappedKey, pack_record_blob
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.crypto.scopekeys import SCOPES, derive_scope_key
from careledger.crypto.statements import scope_key_statement
from careledger.protocol.frames import unpack_results
from careledger.protocol.signing import RequestSigner
from careledger.storage.blobstore import blob_hash
from careledger.wallet.node_client import NodeClient, Signer
from nodeutil import application_payload, practitioner_payload, register_patient_tx

HOUR = 3600


@dataclass(frozen=True)
class Record:
    patient: str
    name: str  # the record's on-chain name
    scope: str
    blob: bytes

    @property
    def hash(self) -> str:
        return blob_hash(self.blob)


class Reader:
    """Signed blob reads as one identity, through plain HTTP (the routes as they are)."""

    def __init__(self, url: str, keyfile: KeyFile) -> None:
        self.did = keyfile.did
        self.http = httpx.Client(base_url=url, timeout=60)
        self.auth = RequestSigner(keyfile.identity, keyfile.did)

    def get(self, digest: str, purpose: str = "") -> httpx.Response:
        return self.http.get(f"/blobs/{digest}{_query(purpose)}", auth=self.auth)

    def fetch(self, hashes: list[str], purpose: str = "") -> list[tuple[int, bytes]]:
        body = httpx.Request("POST", "/", json={"hashes": hashes}).read()
        response = self.http.post(f"/blobs/fetch{_query(purpose)}", content=body, auth=self.auth)
        assert response.status_code == 200, response.text
        return unpack_results(response.content)

    def replicate(self, hashes: list[str]) -> httpx.Response:
        body = httpx.Request("POST", "/", json={"hashes": hashes}).read()
        return self.http.post("/replication/fetch", content=body, auth=self.auth)


def _query(purpose: str) -> str:
    return f"?purpose={quote(purpose)}" if purpose else ""


class Consortium:
    """A running node's founding member, and whatever the tests add to it."""

    def __init__(self, url: str, founder: KeyFile) -> None:
        self.url = url
        self.founder = founder
        self.client = NodeClient(url, founder)
        self.chain_id = str(self.client.status()["chain_id"])
        self._signers: dict[str, Signer] = {}

    def signer(self, keyfile: KeyFile, last_nonce: int | None = None) -> Signer:
        if keyfile.did not in self._signers:
            client = self.client.signed_as(keyfile)
            self._signers[keyfile.did] = Signer(client, keyfile.did, keyfile.identity, last_nonce)
        return self._signers[keyfile.did]

    def send(self, keyfile: KeyFile, type_: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Sign as `keyfile`, submit, wait for the block; NodeError if it failed."""
        return self.signer(keyfile).send(type_, payload)

    def reader(self, keyfile: KeyFile) -> Reader:
        return Reader(self.url, keyfile)

    # --- identities -----------------------------------------------------------------------

    def admit_member(self, name: str) -> KeyFile:
        """A new member organisation: it applies (sponsored by the founder), the founder
        admits it (one member: its vote is the two thirds)."""
        ident = Identity.generate()
        org = KeyFile(ident.did, "organisation", ident, name)
        payload = application_payload(self.chain_id, ident, self.founder.identity, name)
        self.signer(org, last_nonce=0).send("identity/apply_membership", payload)
        vote = {"action": "admit", "subject": org.did}
        self.send(self.founder, "identity/approve_membership", vote)
        return org

    def applicant(self, name: str) -> KeyFile:
        """An organisation that applied and was not admitted (not a member)."""
        ident = Identity.generate()
        org = KeyFile(ident.did, "organisation", ident, name)
        payload = application_payload(self.chain_id, ident, self.founder.identity, name)
        self.signer(org, last_nonce=0).send("identity/apply_membership", payload)
        return org

    def practitioner(self, org: KeyFile, name: str = "Dr. Test") -> KeyFile:
        ident = Identity.generate()
        payload = practitioner_payload(self.chain_id, org.did, ident, name)
        self.send(org, "identity/register_practitioner", payload)
        return KeyFile(ident.did, "practitioner", ident, name)

    def patient(self) -> KeyFile:
        """A registered patient (the founder's voucher) with every scope's key at epoch 1,
        each signed by the patient."""
        ident = Identity.generate()
        keyfile = KeyFile(ident.did, "patient", ident)
        signer = self.signer(keyfile, last_nonce=1)
        raws = [register_patient_tx(self.chain_id, ident, self.founder.identity)]
        root = ident.secret("scope-keys")
        for scope in SCOPES:
            public = derive_scope_key(root, scope, 1).public_bytes.hex()
            statement = scope_key_statement(self.chain_id, ident.did, scope, 1, public)
            payload = {
                "scope": scope,
                "epoch": 1,
                "public_key": public,
                "signature": ident.sign(statement).hex(),
            }
            raws.append(signer.sign("records/publish_scope_key", payload))
        for result in self.client.submit_many(raws, wait=True):
            assert result.get("code", 0) == 0, result
        return keyfile

    # --- records and grants ---------------------------------------------------------------

    def write(
        self, author: KeyFile, patient: str, scope: str = "clinical", size: int = 300
    ) -> Record:
        """Version 1 of a new record of `patient` in `scope`, written by `author`: its blob
        (`size` bytes of ciphertext) uploaded, then anchored."""
        name = secrets.token_hex(32)
        wrapped = WrappedKey(f"scope/{scope}/1", os.urandom(80))
        blob = pack_record_blob(BlobOwner(patient, name), [wrapped], os.urandom(size))
        record = Record(patient, name, scope, blob)
        put = self.reader(author).http.put(
            f"/blobs/{record.hash}", content=blob, auth=RequestSigner(author.identity, author.did)
        )
        assert put.status_code == 201, put.text
        anchor = {
            "patient": patient,
            "resource_type": "Observation",
            "record": name,
            "version": 1,
            "blob_hash": record.hash,
            "commitment": secrets.token_hex(32),
            "recipients": [f"scope/{scope}/1"],
        }
        self.send(author, "records/anchor", anchor)
        return record

    def grant(
        self,
        patient: KeyFile,
        grantee: str,
        *,
        action: str = "read",
        scopes: tuple[str, ...] = ("clinical",),
        purposes: tuple[str, ...] = ("TREAT",),
        records: tuple[str, ...] = (),
        start: int | None = None,
        end: int | None = None,
    ) -> str:
        """A grant signed by the patient; its id."""
        now = int(time.time())
        payload: dict[str, Any] = {
            "id": secrets.token_hex(16),
            "patient": patient.did,
            "grantee": grantee,
            "action": action,
            "scopes": list(scopes),
            "start": now - HOUR if start is None else start,
            "end": now + HOUR if end is None else end,
        }
        if action == "read":
            payload["purposes"] = list(purposes)
        if records:
            payload["records"] = list(records)
        self.send(patient, "consent/grant", payload)
        return str(payload["id"])

    def revoke(self, patient: KeyFile, grant: str) -> int:
        """The height of the block that revoked it."""
        return int(self.send(patient, "consent/revoke", {"id": grant})["height"])

    def erase(self, patient: KeyFile, records: list[Record]) -> None:
        self.send(patient, "records/erase", {"records": [r.name for r in records]})
