"""`Gateway`: what every route of the gateway shares.

The node it talks to (the node API over HTTP: the embedded node's own loopback address, or a
remote node's), the key files it acts with (the organisation's, and its practitioners', which
the organisation keeps), its database and the index in it. Routes get it from the route
factories in app.py; nothing here is global.
"""

from __future__ import annotations

import functools
import ssl
import threading
from pathlib import Path

from starlette.requests import Request

from careledger.chain.modules.consent import ETREAT
from careledger.crypto.keyfile import KeyFile, KeyFileError
from careledger.gateway import receipts
from careledger.gateway.db import GatewayDb
from careledger.gateway.directory import SCHEMA as directory_schema
from careledger.gateway.emergencies import Emergencies, EmergencyKeyring, Held
from careledger.gateway.index import store as index_store
from careledger.gateway.index.follower import Follower
from careledger.gateway.index.store import RecordIndex
from careledger.gateway.outcome import FhirError
from careledger.gateway.principal import Principal
from careledger.gateway.smart import clients as smart_clients
from careledger.wallet.keyring import keyring_for
from careledger.wallet.node_client import NodeClient
from careledger.wallet.records import RecordsClient

# Every table of gateway.sqlite, by the part that owns it.
SCHEMAS = [index_store.SCHEMA, smart_clients.SCHEMA, directory_schema]


class Gateway:
    def __init__(
        self,
        node_url: str,
        organisation: KeyFile,
        data_dir: Path,
        keys_dir: Path | None = None,
        base_url: str | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        """`data_dir`: the gateway's own files (gateway.sqlite, claim packages); `keys_dir`:
        where the organisation keeps its practitioners' key files (`practitioner-*.json`);
        `base_url`: the public base of the FHIR API (default: from each request); `verify`:
        how the node's TLS certificate is checked, when it serves https://."""
        self.node_url = node_url.rstrip("/")
        self.organisation = organisation
        self.data_dir = data_dir
        self.keys_dir = keys_dir
        self.base_url = base_url.rstrip("/") if base_url else None
        self.db = GatewayDb.open(data_dir / "gateway.sqlite", SCHEMAS)
        # The node's receipts of the gateway's reads, and the AuditEvents proven from them:
        # one row per read, so not fsynced each (the node's journal keeps every entry).
        self.audit_db = GatewayDb.open(data_dir / "audit.sqlite", [receipts.SCHEMA], durable=False)
        self.index = RecordIndex(self.db, organisation.did)
        self.node = NodeClient(self.node_url, verify=verify)
        self._clients: dict[tuple[str, str], RecordsClient] = {}
        self._lock = threading.Lock()
        # The keys of the break-glasses its practitioners made here: memory only, until each
        # one's end (gateway/emergencies.py).
        self.emergencies = Emergencies()
        self.follower = Follower(self)

    def start(self) -> None:
        """Start keeping the index current with the chain (index/follower.py): a thread,
        one pass every `follower.interval` seconds ($CARELEDGER_GATEWAY_SYNC)."""
        self.follower.start()

    @property
    def claims_dir(self) -> Path:
        """Claim packages of patients the gateway enrolled (each encrypted under its code)."""
        return self.data_dir / "claims"

    def claim_package(self, patient_id: str) -> Path | None:
        """Where the claim package of the patient whose Patient resource has this id is (the
        gateway enrolled it), if the index knows the patient."""
        did = self.index.patient_did(patient_id)
        return None if did is None else self.claim_package_of(did)

    def claim_package_of(self, did: str) -> Path:
        return self.claims_dir / f"claim-{did.rsplit(':', 1)[-1]}.json"

    def fhir_base(self, request: Request) -> str:
        """The absolute base URL of the FHIR API (for Location, fullUrl and paging links)."""
        if self.base_url:
            return self.base_url
        return str(request.base_url).rstrip("/") + "/fhir"

    def key_of(self, did: str) -> KeyFile:
        """The key file the gateway acts with for `did`: the organisation's, or one of its
        practitioners' (500 if a client is bound to an identity whose key is not here)."""
        if did == self.organisation.did:
            return self.organisation
        for keyfile in self.practitioner_keys():
            if keyfile.did == did:
                return keyfile
        raise FhirError(500, f"the gateway holds no key for {did}: register its key file")

    def practitioner_keys(self) -> list[KeyFile]:
        """The organisation's practitioners' key files in `keys_dir` (unreadable ones left out)."""
        if self.keys_dir is None:
            return []
        found = []
        for path in sorted(self.keys_dir.glob("practitioner-*.json")):
            try:
                found.append(KeyFile.load(path))
            except KeyFileError:
                continue
        return found

    def records_for(self, principal: Principal, patient: str | None = None) -> RecordsClient:
        """The records SDK acting as the principal's identity, stating its purpose; for
        `patient`'s records, during a break-glass the principal made here, the emergency
        client (purpose ETREAT, the emergency keys: gateway/emergencies.py)."""
        if patient is not None:
            held = self.emergencies.active(principal.did, patient)
            if held is not None:
                return self._emergency_client(principal, held)
        key = (principal.did, principal.purpose)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._new_client(principal.did, principal.purpose)
                self._clients[key] = client
        return client

    def _new_client(self, did: str, purpose: str, held: Held | None = None) -> RecordsClient:
        keyfile = self.key_of(did)
        organisation = None if keyfile is self.organisation else self.organisation
        keyring = None
        if held is not None:
            usual = keyring_for(self.node.signed_as(keyfile), keyfile, organisation)
            keyring = EmergencyKeyring(held.keys, usual)
        client = RecordsClient(
            self.node, keyfile, purpose=purpose, organisation=organisation, keyring=keyring
        )
        client.api.on_receipt = functools.partial(receipts.keep_receipt, self.audit_db, did)
        return client

    def _emergency_client(self, principal: Principal, held: Held) -> RecordsClient:
        with self._lock:
            if held.client is None:
                held.client = self._new_client(principal.did, ETREAT, held)
            return held.client

    def close(self) -> None:
        self.follower.stop()
        self.emergencies.close()
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
        self.node.close()
        self.db.close()
        self.audit_db.close()
