"""The records SDK: write, read, list, prove and erase encrypted FHIR records.

    client = RecordsClient(NodeClient(url), keyfile)           # an organisation, a
    written = client.write(patient_did, resource)               # practitioner or a patient
    resource = client.read(written.ref)                         # decrypted, checked
    proof = client.proof(written.ref)   # check offline with wallet.proofs.verify_record_proof
    patient.erase([written.ref])                                # as the patient

`RecordsClient` is the one object callers hold; it composes the collaborators that own each
concern, and this module re-exports the names callers use:
- wallet/refs.py: RecordRef, Written, RecordsError and its kinds (Erased, Deleted,
  IntegrityError);
- wallet/records_api.py: the node's blob endpoints and records queries;
- wallet/sealing.py: validating, sealing and wrapping record versions (a process pool);
- wallet/writing.py: the write pipeline seal -> upload -> anchor -> commit, tombstones, erasure;
- wallet/reading.py: reads, checked against the chain and decrypted;
- wallet/enrolment.py: enrolling patients (for a claim, or registering their own keys);
- wallet/importing.py: importing Synthea-style bundles (ImportSummary, import_bundles);
- wallet/proving.py and wallet/proofs.py: record proofs, made and checked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from careledger.crypto.keyfile import KeyFile
from careledger.crypto.naming import record_name
from careledger.crypto.scopekeys import ScopePublic
from careledger.wallet import enrolment
from careledger.wallet.enrolment import ClaimEnrolment
from careledger.wallet.importing import ImportSummary, PendingClaim, import_bundle, import_bundles
from careledger.wallet.keyring import Keyring, encryption_keys, keyring_for
from careledger.wallet.node_client import NodeClient, Signer
from careledger.wallet.reading import Reader
from careledger.wallet.records_api import RecordsApi
from careledger.wallet.refs import Deleted, Erased, IntegrityError, RecordRef, RecordsError, Written
from careledger.wallet.sealing import Sealer, stamp
from careledger.wallet.writing import KeptBy, Writer


class RecordsClient:
    """Records as one identity: an organisation, a practitioner, or a patient.

    `api` talks to the node, `sealer` seals (in `workers` processes if more than one),
    `writer` writes and erases, `reader` reads and opens; each method below is one of
    theirs or a composition of them.
    """

    def __init__(
        self,
        node: NodeClient | str,
        keyfile: KeyFile,
        *,
        workers: int = 0,
        purpose: str = "",
        organisation: KeyFile | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        """`purpose`: the purpose of use its reads state (a FHIR v3 PurposeOfUse code; a
        patient reading its own records needs none). `organisation`: for a practitioner,
        its organisation's key file (held by the organisation's gateway), whose key opens
        what patients granted to the organisation and keeps access to what it writes.
        `keyring`: other keys to read with than the key file's and its grants' (a
        break-glass's, wallet/break_glass.py)."""
        self.node = (NodeClient(node) if isinstance(node, str) else node).signed_as(keyfile)
        self.did = keyfile.did
        self.identity = keyfile.identity
        self.signer = Signer(self.node, self.did, self.identity)
        self.api = RecordsApi(self.node, purpose)
        self.keyring = keyring or keyring_for(self.node, keyfile, organisation)
        holder = organisation or keyfile
        self.sealer = Sealer(workers)
        kept_by = KeptBy(holder.did, holder.identity.encryption_public)
        self.writer = Writer(self.api, self.signer, self.sealer, kept_by)
        self.reader = Reader(self.api, self.keyring, holder.did, encryption_keys(holder))

    def ref(self, patient: str, resource_type: str, resource_id: str) -> RecordRef:
        """The ref of a patient's record by FHIR type and id: its name is keyed with the
        patient's naming key, which this identity must hold (its own, or granted)."""
        name = record_name(self.keyring.naming_key(patient), resource_type, resource_id)
        return RecordRef(patient, resource_type, resource_id, name)

    def warm(self) -> None:
        """Start the sealing processes and load the FHIR models in each (a second or two that
        the first batch would otherwise pay)."""
        self.sealer.warm()

    def close(self) -> None:
        self.sealer.close()

    def __enter__(self) -> RecordsClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- blobs and chain reads ------------------------------------------------------------

    def upload(self, blobs: Sequence[bytes]) -> list[str]:
        """Store blobs on the node (durable when this returns); their hashes."""
        return self.api.upload(blobs)

    def fetch(self, hashes: Sequence[str], purpose: str | None = None) -> list[tuple[int, bytes]]:
        """(status, blob or error message) for each hash, from one request, for `purpose`
        (default: the client's)."""
        return self.api.fetch(hashes, purpose)

    def scope_keys(self, patient: str) -> dict[str, ScopePublic]:
        """The patient's current scope public keys, by scope, each checked against the
        patient's signature (wallet/keyring.py): UntrustedKey if any is not the patient's."""
        return self.api.scope_keys(patient)

    def records(self, patient: str | None = None) -> list[dict[str, Any]]:
        """A patient's records (default: this identity's own), each with its latest anchor."""
        return self.api.records(patient or self.did)

    def versions(self, ref: RecordRef) -> dict[str, Any]:
        return self.api.versions(ref)

    # --- enrolment ------------------------------------------------------------------------

    def enrol_for_claim(self, name: str = "", wait: bool = True) -> ClaimEnrolment:
        """Enrol a patient who has no identity yet, for a claim (enrolment.enrol_for_claim):
        a claim package and its code, nothing of the patient kept in clear."""
        return enrolment.enrol_for_claim(self.node, self.identity, self.did, name, wait)

    # --- writing --------------------------------------------------------------------------

    def write(self, patient: str, resource: Mapping[str, Any]) -> Written:
        """Write one resource as the next version of its record (a new id if it has none)."""
        return self.write_many(patient, [resource])[0]

    def write_many(
        self,
        patient: str,
        resources: Sequence[Mapping[str, Any]],
        *,
        scope_keys: Mapping[str, ScopePublic] | None = None,
        new_patient: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> list[Written]:
        """Write many resources of one patient, chunk by chunk (see `Writer.pipelined`).

        Every resource of a chunk is validated and sealed before anything of it is stored,
        so an invalid resource leaves nothing of its chunk behind. `new_patient` skips the
        lookup of existing versions (every record is version 1).
        """
        keys = dict(scope_keys) if scope_keys is not None else self.scope_keys(patient)
        latest = {} if new_patient else self.api.latest_versions(patient)
        naming_key = self.keyring.naming_key(patient)
        jobs = [
            self.writer.job(patient, resource, keys, latest, naming_key) for resource in resources
        ]
        written: list[Written] = []
        for chunk_written in self.writer.pipelined(jobs):
            written += chunk_written
            if progress:
                progress(len(chunk_written))
        return written

    def delete(self, ref: RecordRef, version: int | None = None) -> Written:
        """A tombstone version (FHIR delete): the record stays, its history readable.
        `version`: the tombstone's, when the caller checked the version before it."""
        return self.writer.delete(ref, version)

    # --- reading --------------------------------------------------------------------------

    def read(self, ref: RecordRef, version: int | None = None) -> dict[str, Any]:
        """The resource (latest version unless one is named), decrypted and checked."""
        return self.reader.read(ref, version)

    def read_many(self, refs: Sequence[RecordRef]) -> list[dict[str, Any]]:
        """The latest version of many records (one chain query per patient, one fetch)."""
        return self.reader.read_many(refs)

    def history(self, ref: RecordRef) -> list[dict[str, Any] | None]:
        """Every version in order; None for a tombstone."""
        return self.reader.history(ref)

    def read_name(self, patient: str, name: str) -> tuple[RecordRef, dict[str, Any]]:
        """The latest version of a record known only by its on-chain name: its ref (type and
        id, learnt from the record's wrapped data key) and the resource."""
        return self.reader.read_name(patient, name)

    def read_all(
        self,
        patient: str | None = None,
        on_failure: Callable[[str, RecordsError], None] | None = None,
    ) -> list[tuple[RecordRef, dict[str, Any]]]:
        """The latest version of every record of `patient` (default: this identity's own)
        that this identity can open, without knowing any id: the patient's all; a grantee's
        what its granted scope keys open (Reader.read_all: what is left out, what fails)."""
        return self.reader.read_all(patient or self.did, on_failure)

    def open_blob(self, ref: RecordRef, anchor: Mapping[str, Any], blob: bytes) -> Any:
        """Check a blob against its anchor and decrypt it: an OpenedRecord."""
        return self.reader.open_blob(ref, anchor, blob)

    # --- proofs ---------------------------------------------------------------------------

    def proof(self, ref: RecordRef, version: int | None = None) -> dict[str, Any]:
        """A self-contained proof of one version: the anchor's evidence (transaction, result,
        Merkle proofs, block), the author's key, the decrypted resource and its commitment
        salt (gathered by wallet/proving.py, checked offline by wallet/proofs.py)."""
        from careledger.wallet.proving import record_proof  # it builds on this client

        return record_proof(self, ref, version)

    # --- erasure --------------------------------------------------------------------------

    def erase(self, refs: Sequence[RecordRef] | None = None) -> dict[str, Any]:
        """Erase the named records of this patient, or all of them (refs None)."""
        return self.writer.erase(refs)


__all__ = [
    "ClaimEnrolment",
    "Deleted",
    "Erased",
    "ImportSummary",
    "IntegrityError",
    "PendingClaim",
    "RecordRef",
    "RecordsClient",
    "RecordsError",
    "Written",
    "import_bundle",
    "import_bundles",
    "stamp",
]
