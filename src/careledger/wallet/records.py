"""The records SDK: write, read, list, prove and erase encrypted FHIR records.

    client = RecordsClient(NodeClient(url), keyfile)           # an organisation, a
    written = client.write(patient_did, resource)               # practitioner or a patient
    resource = client.read(written.ref)                         # decrypted, checked
    proof = client.proof(written.ref)   # check offline with wallet.proofs.verify_record_proof
    patient.erase([written.ref])                                # as the patient

A write validates the resource (`fhir.resources.R4B`), stamps `meta.versionId`, seals it
(docs/crypto.md), wraps its data key to the patient's current scope key and to the writer's
own key, uploads the record blob (durable on the node before the answer), and only then
submits the anchor. Batches do each step for many records at once: validation and sealing
in a process pool, one upload and one submission per chunk.

A read fetches the anchor from the chain and the blob from the node, checks the blob's
SHA-256 against the anchor, unwraps the data key (patient: scope key; writer: own key),
decrypts (the binding in the associated data refuses a ciphertext moved from another record)
and checks the salted commitment.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from careledger.chain.modules.identity.vouchers import ENROLMENT_VOUCHER_BLOCKS, sign_voucher
from careledger.chain.modules.records import record_name
from careledger.chain.modules.records.messages import parse_scope_label
from careledger.crypto.envelope import (
    BlobOwner,
    EnvelopeError,
    RecordBinding,
    open_record,
    pack_record_blob,
    seal_record,
    unpack_record_blob,
)
from careledger.crypto.hashing import sha256_hex
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import (
    identity_from_phrase,
    new_recovery_phrase,
)
from careledger.crypto.scopekeys import (
    SCOPES,
    ScopeKeyError,
    ScopeKeyPair,
    ScopePublic,
    derive_scope_key,
    scope_for,
    unwrap_data_key,
    wrap_data_key,
    wrap_to_scope,
)
from careledger.protocol.errors import http_status
from careledger.protocol.frames import pack_frames, unpack_results
from careledger.wallet.fhir import BundleIndex, InvalidResource, validate_resource
from careledger.wallet.node_client import NodeClient, NodeError, PendingBatch, Signer

CHUNK = 1000  # records per upload and per anchor submission
READ_CHUNK = 250  # records per fetch when reading many (the next is fetched while one opens)
PIPELINE_DEPTH = 3  # chunks between sealing and commit at once (see _write_pipelined)
FIRST_EPOCH = 1


class RecordsError(Exception):
    """A record operation that failed; `status` follows HTTP (404, 409, 410, 422...)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Erased(RecordsError):
    """The patient erased this record: its ciphertext and keys no longer exist."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 410)


class Deleted(RecordsError):
    """The record's latest version is a tombstone (a FHIR delete); older versions remain."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 410)


class IntegrityError(RecordsError):
    """What the node served does not match the chain (altered blob, key or content)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 502)


@dataclass(frozen=True)
class RecordRef:
    """A record: whose, what type, which logical id. Its on-chain name is a hash of these."""

    patient: str
    resource_type: str
    resource_id: str

    @property
    def name(self) -> str:
        return record_name(self.patient, self.resource_type, self.resource_id)

    def __str__(self) -> str:
        return f"{self.resource_type}/{self.resource_id}"


@dataclass(frozen=True)
class Written:
    ref: RecordRef
    version: int
    blob_hash: str
    tx_hash: str
    height: int


@dataclass(frozen=True)
class Enrolment:
    """A patient enrolled by a clinic: keys to hand over (key file and recovery phrase)."""

    keyfile: KeyFile
    phrase: str = field(repr=False)  # the recovery phrase: the patient's keys
    scope_keys: dict[str, ScopePublic]


# --- sealing (runs in worker processes for batches) ---------------------------------------


@dataclass(frozen=True)
class _Job:
    resource: bytes  # JSON
    patient: str
    version: int
    scope: ScopePublic
    author: str
    author_key: bytes  # the writer's X25519 public key: it keeps access to what it wrote


@dataclass(frozen=True)
class _Prepared:
    ref: RecordRef
    version: int
    blob: bytes
    payload: dict[str, Any]


@dataclass(frozen=True)
class _Admitted:
    prepared: list[_Prepared]
    pending: PendingBatch


class _Stopped(Exception):
    """An earlier chunk of the pipeline failed: this one is not written."""


def stamp(resource: Mapping[str, Any], version: int) -> dict[str, Any]:
    """The resource as stored: `meta.versionId` set (the one field the store adds)."""
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    return {**resource, "meta": meta}


def _prepare(job: _Job) -> _Prepared | str:
    """Validate, seal and wrap one record version; an error message instead if invalid."""
    resource = stamp(orjson.loads(job.resource), job.version)
    try:
        validate_resource(resource)
        binding = RecordBinding(job.patient, resource["resourceType"], resource["id"], job.version)
        sealed = seal_record(resource, binding)
    except (InvalidResource, EnvelopeError) as exc:
        return f"{resource.get('resourceType')}/{resource.get('id')}: {exc}"
    wrapped = [
        wrap_to_scope(sealed.data_key, binding, job.scope),
        wrap_data_key(sealed.data_key, binding, job.author, job.author_key),
    ]
    ref = RecordRef(job.patient, binding.resource_type, binding.resource_id)
    blob = pack_record_blob(BlobOwner(job.patient, ref.name), wrapped, sealed.ciphertext)
    payload = {
        "patient": job.patient,
        "resource_type": binding.resource_type,
        "record": ref.name,
        "version": job.version,
        "blob_hash": sha256_hex(blob),
        "commitment": sealed.commitment.hex(),
        "recipients": [job.scope.recipient, job.author],
    }
    return _Prepared(ref, job.version, blob, payload)


def _warm_worker(_: int) -> None:
    validate_resource({"resourceType": "Patient", "id": "warm"})
    time.sleep(0.2)  # hold this worker so that the next task goes to another


def _prepare_all(jobs: Sequence[_Job]) -> list[_Prepared | str]:
    return [_prepare(job) for job in jobs]


# --- the client ---------------------------------------------------------------------------


class RecordsClient:
    """Records as one identity: an organisation, a practitioner, or a patient."""

    def __init__(self, node: NodeClient | str, keyfile: KeyFile, *, workers: int = 0) -> None:
        self.node = (NodeClient(node) if isinstance(node, str) else node).signed_as(keyfile)
        self.did = keyfile.did
        self.identity = keyfile.identity
        self.signer = Signer(self.node, self.did, self.identity)
        self._pool = concurrent.futures.ProcessPoolExecutor(workers) if workers > 1 else None
        self._workers = max(1, workers)
        self._scope_pairs: dict[tuple[str, int], ScopeKeyPair] = {}

    def warm(self) -> None:
        """Start the pool's processes and load the FHIR models in each (a second or two that
        the first batch would otherwise pay)."""
        if self._pool is not None:
            list(self._pool.map(_warm_worker, range(self._workers)))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def __enter__(self) -> RecordsClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- signed HTTP ----------------------------------------------------------------------

    def _signed(self, method: str, path: str, body: bytes = b"") -> bytes:
        response = self.node.http.request(method, path, content=body, auth=self.node.auth)
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                message, code = str(error["message"]), str(error["code"])
            except (ValueError, KeyError, TypeError):
                message, code = response.text, "http_error"
            raise RecordsError(f"{code}: {message}", response.status_code)
        return response.content

    def upload(self, blobs: Sequence[bytes]) -> list[str]:
        """Store blobs on the node (durable when this returns); their hashes."""
        body = self._signed("POST", "/blobs", pack_frames(blobs))
        hashes: list[str] = orjson.loads(body)["hashes"]
        return hashes

    def fetch(self, hashes: Sequence[str]) -> list[tuple[int, bytes]]:
        """(status, blob or error message) for each hash, from one request."""
        body = self._signed("POST", "/blobs/fetch", orjson.dumps({"hashes": list(hashes)}))
        return unpack_results(body)

    # --- chain reads ----------------------------------------------------------------------

    def _query(self, path: str, **params: str) -> Any:
        try:
            return self.node.query(path, **params)
        except NodeError as exc:
            raise RecordsError(exc.message, exc.status) from None

    def scope_keys(self, patient: str) -> dict[str, ScopePublic]:
        """The patient's current scope public keys, by scope."""
        current: dict[str, ScopePublic] = {}
        for key in self._query("records/scope_keys", patient=patient):
            current[key["scope"]] = ScopePublic(
                key["scope"], key["epoch"], bytes.fromhex(key["public_key"])
            )
        return current

    def records(self, patient: str | None = None) -> list[dict[str, Any]]:
        """A patient's records (default: this identity's own), each with its latest anchor."""
        found: list[dict[str, Any]] = self._query("records/records", patient=patient or self.did)
        return found

    def versions(self, ref: RecordRef) -> dict[str, Any]:
        try:
            found: dict[str, Any] = self._query(
                "records/versions", patient=ref.patient, record=ref.name
            )
        except RecordsError as exc:
            if exc.status == 404:
                raise RecordsError(f"no record {ref} for {ref.patient}", 404) from None
            raise
        return found

    # --- enrolment ------------------------------------------------------------------------

    def enrol_patient(self, name: str = "", wait: bool = True) -> Enrolment:
        """Make a new patient identity (recovery phrase), register it with this
        organisation's enrolment voucher, publish its scope keys.

        The patient signs these transactions; the clinic holds the keys only until it hands
        the key file and phrase over. Without `wait`, the transactions are only admitted:
        anchors submitted after them land in the same or a later block, after them.
        """
        phrase = new_recovery_phrase()
        identity = identity_from_phrase(phrase)
        keyfile = KeyFile(identity.did, "patient", identity, name)
        signer = Signer(self.node, identity.did, identity)
        scope_root = identity.secret("scope-keys")
        publics = {}
        status = self.node.status()  # this client is the organisation's: it vouches
        voucher = sign_voucher(
            self.identity,
            status["chain_id"],
            "register_patient",
            identity.did,
            int(status["height"]) + ENROLMENT_VOUCHER_BLOCKS,
            org_did=self.did,
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
            payload = {"scope": scope, "epoch": FIRST_EPOCH, "public_key": pair.public_bytes.hex()}
            txs.append(signer.sign("records/publish_scope_key", payload))
        for result in self.node.submit_many(txs, wait=wait):
            _raise_for(result)
        return Enrolment(keyfile, phrase, publics)

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
        """Write many resources of one patient, chunk by chunk.

        Every resource of a chunk is validated and sealed before anything of it is stored,
        so an invalid resource leaves nothing of its chunk behind. `new_patient` skips the
        lookup of existing versions (every record is version 1).
        """
        keys = dict(scope_keys) if scope_keys is not None else self.scope_keys(patient)
        latest = {} if new_patient else self._latest_versions(patient)
        jobs = [self._job(patient, resource, keys, latest) for resource in resources]
        written: list[Written] = []
        for chunk_written in self._write_pipelined(jobs):
            written += chunk_written
            if progress:
                progress(len(chunk_written))
        return written

    def _latest_versions(self, patient: str) -> dict[str, int]:
        try:
            return {rec["record"]: rec["versions"] for rec in self.records(patient)}
        except RecordsError as exc:
            if exc.status == 404:
                return {}
            raise

    def _job(
        self,
        patient: str,
        resource: Mapping[str, Any],
        keys: Mapping[str, ScopePublic],
        latest: Mapping[str, int],
    ) -> _Job:
        resource_type = resource.get("resourceType")
        if not isinstance(resource_type, str):
            raise RecordsError("not a FHIR resource: resourceType is missing", 422)
        if not resource.get("id"):
            resource = {**resource, "id": str(uuid.uuid4())}
        scope = keys.get(scope_for(resource_type))
        if scope is None:
            raise RecordsError(
                f"{patient} has no published {scope_for(resource_type)} scope key "
                "(is the patient enrolled?)",
                404,
            )
        name = record_name(patient, resource_type, str(resource["id"]))
        version = latest.get(name, 0) + 1
        return _Job(
            orjson.dumps(resource),
            patient,
            version,
            scope,
            self.did,
            self.identity.encryption_public,
        )

    def _write_pipelined(self, jobs: Iterable[_Job]) -> Iterator[list[Written]]:
        """Stream jobs through seal -> upload -> anchor -> commit, PIPELINE_DEPTH chunks at once.

        Chunk n+1 is sealed (process pool) and uploaded (the node's fsyncs) while chunk n's
        anchors wait for their block. Invariants: a chunk's anchors are submitted only after
        its upload returned (blobs durable first); anchors are admitted strictly in chunk
        order (one admitting thread; the node answers admission before the block, see
        `NodeClient.submit_pipelined`), so nonces stay in sequence; after any failure no
        further chunk is admitted. Chunks already admitted still commit (their records are
        written); the error names the failed chunk. `jobs` may be a lazy iterator: whatever
        it does before yielding a job (e.g. enrol the job's patient, wait=False) is admitted
        before that job's anchor.
        """
        stop = threading.Event()
        in_flight: collections.deque[concurrent.futures.Future[_Admitted]] = collections.deque()
        sealers = concurrent.futures.ThreadPoolExecutor(2, "records-seal")
        admitter = concurrent.futures.ThreadPoolExecutor(1, "records-anchor")
        try:
            for chunk in _chunks_of(jobs, CHUNK):
                sealed = sealers.submit(self._seal_and_upload, chunk, stop)
                in_flight.append(admitter.submit(self._admit, sealed, stop))
                while len(in_flight) >= PIPELINE_DEPTH:
                    yield self._committed(in_flight.popleft().result())
            while in_flight:
                yield self._committed(in_flight.popleft().result())
        except BaseException:
            stop.set()
            for future in in_flight:
                future.cancel()
            raise
        finally:
            sealers.shutdown(wait=True, cancel_futures=True)
            admitter.shutdown(wait=True, cancel_futures=True)
            for future in in_flight:  # abandoned after a failure: close their streams
                if future.done() and not future.cancelled() and future.exception() is None:
                    future.result().pending.close()

    def _seal_and_upload(
        self, jobs: list[_Job], stop: threading.Event | None = None
    ) -> list[_Prepared]:
        stop = stop or threading.Event()
        if stop.is_set():
            raise _Stopped()
        prepared = self._seal(jobs)
        errors = [p for p in prepared if isinstance(p, str)]
        if errors:
            raise RecordsError(
                f"{len(errors)} resource(s) did not validate; nothing of this batch was "
                "written:\n" + "\n".join(errors[:5]),
                422,
            )
        ready = [p for p in prepared if isinstance(p, _Prepared)]
        if stop.is_set():
            raise _Stopped()
        self.upload([p.blob for p in ready])
        return ready

    def _seal(self, jobs: list[_Job]) -> list[_Prepared | str]:
        if self._pool is None or len(jobs) < 2 * self._workers:
            return _prepare_all(jobs)
        parts = _split(jobs, self._workers * 4)
        results: list[_Prepared | str] = []
        for part in self._pool.map(_prepare_all, parts):
            results += part
        return results

    def _admit(
        self, sealed: concurrent.futures.Future[list[_Prepared]], stop: threading.Event
    ) -> _Admitted:
        """Sign and submit a chunk's anchors once its blobs are stored; back once admitted."""
        try:
            prepared = sealed.result()
            if stop.is_set():
                raise _Stopped()
            raws = [self.signer.sign("records/anchor", p.payload) for p in prepared]
            try:
                pending = self.node.submit_pipelined(raws)
            except NodeError as exc:
                raise RecordsError(exc.message, exc.status) from None
            refused = [
                (p, r) for p, r in zip(prepared, pending.admitted, strict=True) if r["check_code"]
            ]
            if refused:
                p, r = refused[0]
                admitted = len(prepared) - len(refused)
                try:
                    _raise_for(r, f"{p.ref} version {p.version}")
                finally:
                    # What was admitted will commit; wait so that the error is the last word.
                    if admitted:
                        pending.results()
                    pending.close()
            return _Admitted(prepared, pending)
        except BaseException:
            stop.set()
            raise

    def _anchor(self, prepared: list[_Prepared]) -> list[Written]:
        """Submit the anchors of uploaded records and wait for their block (no pipeline)."""
        sealed: concurrent.futures.Future[list[_Prepared]] = concurrent.futures.Future()
        sealed.set_result(prepared)
        return self._committed(self._admit(sealed, threading.Event()))

    def _committed(self, admitted: _Admitted) -> list[Written]:
        try:
            results = admitted.pending.results()
        except NodeError as exc:
            raise RecordsError(exc.message, exc.status) from None
        written = []
        for p, result in zip(admitted.prepared, results, strict=True):
            _raise_for(result, f"{p.ref} version {p.version}")
            written.append(
                Written(p.ref, p.version, p.payload["blob_hash"], result["hash"], result["height"])
            )
        return written

    def delete(self, ref: RecordRef) -> Written:
        """A tombstone version (FHIR delete): the record stays, its history readable."""
        version = int(self.versions(ref)["versions"]) + 1
        payload = {
            "patient": ref.patient,
            "resource_type": ref.resource_type,
            "record": ref.name,
            "version": version,
            "tombstone": 1,
        }
        result = self.node.submit(self.signer.sign("records/anchor", payload), wait=True)
        _raise_for(result, str(ref))
        return Written(ref, version, "", result["hash"], result["height"])

    # --- reading --------------------------------------------------------------------------

    def read(self, ref: RecordRef, version: int | None = None) -> dict[str, Any]:
        """The resource (latest version unless one is named), decrypted and checked."""
        info = self.versions(ref)
        if info["erased_at"]:
            raise Erased(f"{ref} was erased by its patient at height {info['erased_at']}")
        number = version or int(info["versions"])
        anchors = {a["version"]: a for a in info["history"]}
        if number not in anchors:
            raise RecordsError(f"{ref} has no version {number}", 404)
        if anchors[number]["tombstone"]:
            raise Deleted(f"{ref} version {number} is a deletion (tombstone)")
        resource: dict[str, Any] = self._open_fetched([(ref, anchors[number])])[0]
        return resource

    def read_many(self, refs: Sequence[RecordRef]) -> list[dict[str, Any]]:
        """The latest version of many records (one chain query per patient, one fetch)."""
        anchors = []
        by_patient: dict[str, dict[str, dict[str, Any]]] = {}
        for ref in refs:
            if ref.patient not in by_patient:
                by_patient[ref.patient] = {r["record"]: r for r in self.records(ref.patient)}
            rec = by_patient[ref.patient].get(ref.name)
            if rec is None:
                raise RecordsError(f"no record {ref} for {ref.patient}", 404)
            if rec["erased_at"]:
                raise Erased(f"{ref} was erased by its patient")
            if rec["latest"]["tombstone"]:
                raise Deleted(f"{ref} is deleted (tombstone)")
            anchors.append((ref, rec["latest"]))
        # Fetch chunk n+1 (the node's reads) while this thread checks and decrypts chunk n.
        opened: list[dict[str, Any]] = []
        chunks = list(_chunks(anchors, READ_CHUNK))
        with concurrent.futures.ThreadPoolExecutor(1, "records-fetch") as ahead:
            fetches = [ahead.submit(self._fetch_for, chunk) for chunk in chunks[:2]]
            for i, chunk in enumerate(chunks):
                fetched = fetches[i].result()
                if i + 2 < len(chunks):
                    fetches.append(ahead.submit(self._fetch_for, chunks[i + 2]))
                opened += self._open_fetched(chunk, fetched)
        return opened

    def _fetch_for(self, items: Sequence[tuple[RecordRef, dict[str, Any]]]) -> Any:
        return self.fetch([anchor["blob_hash"] for _, anchor in items])

    def history(self, ref: RecordRef) -> list[dict[str, Any] | None]:
        """Every version in order; None for a tombstone."""
        info = self.versions(ref)
        if info["erased_at"]:
            raise Erased(f"{ref} was erased by its patient")
        live = [(ref, a) for a in info["history"] if not a["tombstone"]]
        opened = iter(self._open_fetched(live)) if live else iter(())
        return [None if a["tombstone"] else next(opened) for a in info["history"]]

    def _open_fetched(
        self,
        items: Sequence[tuple[RecordRef, dict[str, Any]]],
        fetched: list[tuple[int, bytes]] | None = None,
    ) -> list[Any]:
        if fetched is None:
            fetched = self._fetch_for(items)
        out = []
        for (ref, anchor), (status, data) in zip(items, fetched, strict=True):
            if status == 410:
                raise Erased(f"{ref}: {data.decode()}")
            if status != 200:
                raise RecordsError(f"{ref}: {data.decode()}", status)
            out.append(self.open_blob(ref, anchor, data).resource())
        return out

    def open_blob(self, ref: RecordRef, anchor: Mapping[str, Any], blob: bytes) -> Any:
        """Check a blob against its anchor and decrypt it: an OpenedRecord."""
        if sha256_hex(blob) != anchor["blob_hash"]:
            raise IntegrityError(f"{ref}: the blob served does not match its anchor's hash")
        binding = RecordBinding(ref.patient, ref.resource_type, ref.resource_id, anchor["version"])
        try:
            record_blob = unpack_record_blob(blob)
            if record_blob.owner != BlobOwner(ref.patient, ref.name):
                raise IntegrityError(f"{ref}: the blob's header names another record")
            label, private_key = self._my_key(ref.patient, anchor["recipients"])
            data_key = unwrap_data_key(record_blob_key(record_blob, label), binding, private_key)
            opened = open_record(record_blob.ciphertext, data_key, binding)
        except (EnvelopeError, ScopeKeyError, LookupError) as exc:
            raise IntegrityError(f"{ref}: {exc}") from None
        if opened.commitment.hex() != anchor["commitment"]:
            raise IntegrityError(f"{ref}: content does not match the anchored commitment")
        return opened

    def _my_key(self, patient: str, recipients: Sequence[str]) -> tuple[str, Any]:
        for label in recipients:
            scope = parse_scope_label(label)
            if scope is not None and patient == self.did:
                return label, self._scope_pair(*scope)
            if label == self.did:
                return label, self.identity.encryption_private
        raise RecordsError(f"{self.did} holds no key that opens this record", 403)

    def _scope_pair(self, scope: str, epoch: int) -> ScopeKeyPair:
        pair = self._scope_pairs.get((scope, epoch))
        if pair is None:
            pair = derive_scope_key(self.identity.secret("scope-keys"), scope, epoch)
            self._scope_pairs[(scope, epoch)] = pair
        return pair

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
        if refs is not None and any(r.patient != self.did for r in refs):
            raise RecordsError("only the patient may erase their records", 403)
        payload: dict[str, Any] = (
            {"all": 1} if refs is None else {"records": [r.name for r in refs]}
        )
        result = self.node.submit(self.signer.sign("records/erase", payload), wait=True)
        _raise_for(result, "erase")
        return result


def record_blob_key(record_blob: Any, label: str) -> Any:
    for key in record_blob.wrapped_keys:
        if key.recipient == label:
            return key
    raise LookupError(f"no data key wrapped to {label!r} in this record blob")


# --- importing Synthea-style transaction bundles ------------------------------------------


@dataclass
class ImportSummary:
    bundles: int = 0
    patients: int = 0
    written: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # resource type -> count
    seconds: float = 0.0
    patient_keys: list[Path] = field(default_factory=list)


def import_bundle(
    client: RecordsClient,
    bundle: Mapping[str, Any],
    patient_keys: Path,
    summary: ImportSummary,
    progress: Callable[[int], None] | None = None,
) -> list[Written]:
    """Import one bundle (see import_bundles)."""
    return import_bundles(client, [bundle], patient_keys, summary, progress)


def import_bundles(
    client: RecordsClient,
    bundles: Iterable[Mapping[str, Any]],
    patient_keys: Path,
    summary: ImportSummary,
    progress: Callable[[int], None] | None = None,
) -> list[Written]:
    """Enrol each Patient of the bundles and write its resources as that patient's records.

    References inside a bundle (`urn:uuid:`) become `Type/id`, as a FHIR server does when
    it stores a transaction. Entries that belong to no patient (Organization, Practitioner:
    directory data, not health records) are skipped and counted in `summary.skipped`: a
    record is always a patient's, encrypted to the patient's keys.

    Every patient's records go through one pipeline (see `RecordsClient._write_pipelined`),
    so sealing, the node's fsyncs and the blocks of different patients overlap. A patient
    is enrolled (registration and scope keys admitted, wait=False) just before their first
    record enters the pipeline, so their anchors are always admitted after their keys.
    """
    written: list[Written] = []

    def jobs() -> Iterator[_Job]:
        for bundle in bundles:
            index = BundleIndex.of(bundle)
            groups, unowned = index.split_by_patient()
            for entry in unowned:
                kind = str(entry.resource.get("resourceType"))
                summary.skipped[kind] = summary.skipped.get(kind, 0) + 1
                if progress:
                    progress(1)
            for group in groups:
                resources = [index.local_references(group.patient.resource)]
                resources += [index.local_references(e.resource) for e in group.entries]
                enrolment = client.enrol_patient(_display_name(group.patient.resource), wait=False)
                summary.patient_keys.append(save_enrolment(enrolment, patient_keys))
                summary.patients += 1
                did = enrolment.keyfile.did
                for resource in resources:
                    yield client._job(did, resource, enrolment.scope_keys, {})
            summary.bundles += 1

    for chunk_written in client._write_pipelined(jobs()):
        written += chunk_written
        summary.written += len(chunk_written)
        if progress:
            progress(len(chunk_written))
    return written


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


def _display_name(patient: Mapping[str, Any]) -> str:
    # Kept only in the patient's own key file (a label for the clinic's handover).
    names = patient.get("name") or [{}]
    first = names[0] if isinstance(names, list) and names else {}
    given = " ".join(first.get("given") or [])
    return f"{given} {first.get('family', '')}".strip()


# --- helpers ------------------------------------------------------------------------------


def _raise_for(result: Mapping[str, Any], what: str = "transaction") -> None:
    code = result.get("code") if result.get("check_code") == 0 else result.get("check_code")
    if not code:
        return
    log = result.get("log") or result.get("check_log") or ""
    raise RecordsError(f"{what}: {log}", http_status(int(code)))


def _chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _chunks_of(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _split(items: Sequence[Any], parts: int) -> list[list[Any]]:
    size = max(1, -(-len(items) // parts))
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


__all__ = [
    "Deleted",
    "Enrolment",
    "Erased",
    "ImportSummary",
    "IntegrityError",
    "RecordRef",
    "RecordsClient",
    "RecordsError",
    "Written",
    "import_bundle",
    "import_bundles",
]
