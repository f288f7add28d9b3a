"""Sealing record versions: the work of a write that runs in worker processes for batches.

A `Job` is one record version to write: the resource's JSON, the patient's scope key and
the writer's own key. `prepare` validates the resource (`fhir.resources.R4B`), stamps
`meta.versionId`, seals it (docs/crypto.md), wraps its data key to the patient's scope key
and to the writer, and packs the record blob with the payload of its anchor. A `Sealer`
prepares a chunk of jobs, across a process pool when it has more than one worker.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from careledger.crypto.canonical import NotCanonicalisable
from careledger.crypto.envelope import (
    BlobOwner,
    EnvelopeError,
    RecordBinding,
    pack_record_blob,
    seal_record,
)
from careledger.crypto.hashing import sha256_hex
from careledger.crypto.scopekeys import ScopePublic, wrap_data_key, wrap_to_scope
from careledger.wallet.fhir import InvalidResource, validate_resource
from careledger.wallet.refs import RecordRef


@dataclass(frozen=True)
class Job:
    resource: bytes  # JSON
    patient: str
    record: str  # the record's on-chain name (keyed: crypto/naming.py)
    version: int
    scope: ScopePublic
    author: str
    author_key: bytes  # the writer's X25519 public key: it keeps access to what it wrote
    validated: bool = False  # the caller validated exactly this resource (the gateway does)


@dataclass(frozen=True)
class Prepared:
    ref: RecordRef
    version: int
    blob: bytes
    payload: dict[str, Any]


def stamp(resource: Mapping[str, Any], version: int) -> dict[str, Any]:
    """The resource as stored: `meta.versionId` set (the one field the store adds)."""
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    return {**resource, "meta": meta}


def prepare(job: Job) -> Prepared | str:
    """Validate, seal and wrap one record version; an error message instead if invalid."""
    resource = stamp(orjson.loads(job.resource), job.version)
    try:
        if not job.validated:
            validate_resource(resource)
        binding = RecordBinding(job.patient, resource["resourceType"], resource["id"], job.version)
        sealed = seal_record(resource, binding)
    except (InvalidResource, EnvelopeError, NotCanonicalisable) as exc:
        # NotCanonicalisable: valid FHIR nested deeper than a record may be (canonical.py
        # MAX_DEPTH): refused like an invalid resource, not raised out of the pool.
        return f"{resource.get('resourceType')}/{resource.get('id')}: {exc}"
    wrapped = [
        wrap_to_scope(sealed.data_key, binding, job.record, job.scope),
        wrap_data_key(sealed.data_key, binding, job.record, job.author, job.author_key),
    ]
    ref = RecordRef(job.patient, binding.resource_type, binding.resource_id, job.record)
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
    return Prepared(ref, job.version, blob, payload)


def _prepare_all(jobs: Sequence[Job]) -> list[Prepared | str]:
    return [prepare(job) for job in jobs]


def _warm_worker(_: int) -> None:
    validate_resource({"resourceType": "Patient", "id": "warm"})
    time.sleep(0.2)  # hold this worker so that the next task goes to another


def _split(items: Sequence[Any], parts: int) -> list[list[Any]]:
    size = max(1, -(-len(items) // parts))
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


class Sealer:
    """Prepares jobs in this process, or across a pool of `workers` processes (> 1)."""

    def __init__(self, workers: int = 0) -> None:
        self._pool = concurrent.futures.ProcessPoolExecutor(workers) if workers > 1 else None
        self._workers = max(1, workers)

    def warm(self) -> None:
        """Start the pool's processes and load the FHIR models in each (a second or two that
        the first batch would otherwise pay)."""
        if self._pool is not None:
            list(self._pool.map(_warm_worker, range(self._workers)))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def seal(self, jobs: list[Job]) -> list[Prepared | str]:
        """Each job prepared, in order (a pool only for chunks worth splitting)."""
        if self._pool is None or len(jobs) < 2 * self._workers:
            return _prepare_all(jobs)
        parts = _split(jobs, self._workers * 4)
        results: list[Prepared | str] = []
        for part in self._pool.map(_prepare_all, parts):
            results += part
        return results
