"""Writing records: new versions through the pipeline, tombstones, erasure.

A write turns each resource into a sealing job (the next version of its record, a new id
if it has none, the patient's current scope key) and streams the jobs through the pipeline
seal -> upload -> anchor -> commit: each chunk is validated and sealed (wallet/sealing.py),
its blobs uploaded (durable on the node before the answer), and only then its anchors
submitted. A delete anchors a tombstone version; an erase is the patient's one transaction.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import re
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from careledger.chain.modules.records.messages import MAX_BATCH_ANCHORS
from careledger.crypto.naming import record_name
from careledger.crypto.scopekeys import ScopePublic
from careledger.wallet.node_client import NodeError, PendingBatch, Signer
from careledger.wallet.records_api import RecordsApi
from careledger.wallet.refs import RecordRef, RecordsError, Written, raise_for
from careledger.wallet.scopes import scope_of
from careledger.wallet.sealing import Job, Prepared, Sealer

CHUNK = 1000  # records per upload and per anchor submission
PIPELINE_DEPTH = 3  # chunks between sealing and commit at once (see Writer.pipelined)


@dataclass(frozen=True)
class _Admitted:
    batches: list[list[Prepared]]  # one anchor_batch transaction each, in submission order
    pending: PendingBatch


class _Stopped(Exception):
    """An earlier chunk of the pipeline failed: this one is not written."""


@dataclass(frozen=True)
class KeptBy:
    """Who keeps access to what a writer writes: the data key is also wrapped to this did's
    encryption key (the writer itself, or for a practitioner its organisation, so that the
    organisation's colleagues can open what it wrote)."""

    did: str
    encryption_key: bytes


class Writer:
    """Writes as the signer's identity: blobs through `api`, anchors signed by `signer`."""

    def __init__(
        self, api: RecordsApi, signer: Signer, sealer: Sealer, kept_by: KeptBy | None = None
    ) -> None:
        self.api = api
        self.node = api.node
        self.signer = signer
        self.sealer = sealer
        self.kept_by = kept_by or KeptBy(signer.did, signer.identity.encryption_public)

    def job(
        self,
        patient: str,
        resource: Mapping[str, Any],
        keys: Mapping[str, ScopePublic],
        latest: Mapping[str, int],
        naming_key: bytes,
    ) -> Job:
        """The sealing job for the next version of the resource's record (`keys`: the
        patient's checked scope keys; `latest`: the current versions by record name;
        `naming_key`: the patient's; a resource without an id gets a new one)."""
        resource_type = resource.get("resourceType")
        if not isinstance(resource_type, str):
            raise RecordsError("not a FHIR resource: resourceType is missing", 422)
        if not resource.get("id"):
            resource = {**resource, "id": str(uuid.uuid4())}
        scope = keys.get(scope_of(resource))
        if scope is None:
            raise RecordsError(
                f"{patient} has no published {scope_of(resource)} scope key "
                "(is the patient enrolled?)",
                404,
            )
        name = record_name(naming_key, resource_type, str(resource["id"]))
        version = latest.get(name, 0) + 1
        return Job(
            orjson.dumps(resource),
            patient,
            name,
            version,
            scope,
            self.kept_by.did,
            self.kept_by.encryption_key,
        )

    def pipelined(self, jobs: Iterable[Job]) -> Iterator[list[Written]]:
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
                sealed = sealers.submit(self.seal_and_upload, chunk, stop)
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

    def seal_and_upload(
        self, jobs: list[Job], stop: threading.Event | None = None
    ) -> list[Prepared]:
        """Seal a chunk and store its blobs; nothing is stored if any resource is invalid."""
        stop = stop or threading.Event()
        if stop.is_set():
            raise _Stopped()
        prepared = self.sealer.seal(jobs)
        errors = [p for p in prepared if isinstance(p, str)]
        if errors:
            raise RecordsError(
                f"{len(errors)} resource(s) did not validate; nothing of this batch was "
                "written:\n" + "\n".join(errors[:5]),
                422,
            )
        ready = [p for p in prepared if isinstance(p, Prepared)]
        if stop.is_set():
            raise _Stopped()
        self.api.upload([p.blob for p in ready])
        return ready

    def _admit(
        self, sealed: concurrent.futures.Future[list[Prepared]], stop: threading.Event
    ) -> _Admitted:
        """Sign and submit a chunk's anchors once its blobs are stored; back once admitted.

        The anchors go in `records/anchor_batch` transactions of up to MAX_BATCH_ANCHORS each
        (one signature, one mempool check and one nonce per batch instead of per record); a
        batch commits whole or not at all."""
        try:
            prepared = sealed.result()
            if stop.is_set():
                raise _Stopped()
            groups = list(_chunks_of(prepared, MAX_BATCH_ANCHORS))
            raws = [
                self.signer.sign("records/anchor_batch", {"anchors": [p.payload for p in g]})
                for g in groups
            ]
            try:
                pending = self.node.submit_pipelined(raws)
            except NodeError as exc:
                raise RecordsError(exc.message, exc.status) from None
            answers = zip(groups, pending.admitted, strict=True)
            refused = [(g, r) for g, r in answers if r["check_code"]]
            if refused:
                group, result = refused[0]
                admitted = len(groups) - len(refused)
                try:
                    raise_for(result, _named(group, result))
                finally:
                    # What was admitted will commit; wait so that the error is the last word.
                    if admitted:
                        pending.results()
                    pending.close()
            return _Admitted(groups, pending)
        except BaseException:
            stop.set()
            raise

    def anchor(self, prepared: list[Prepared]) -> list[Written]:
        """Submit the anchors of uploaded records and wait for their block (no pipeline)."""
        sealed: concurrent.futures.Future[list[Prepared]] = concurrent.futures.Future()
        sealed.set_result(prepared)
        return self._committed(self._admit(sealed, threading.Event()))

    def _committed(self, admitted: _Admitted) -> list[Written]:
        try:
            results = admitted.pending.results()
        except NodeError as exc:
            raise RecordsError(exc.message, exc.status) from None
        written = []
        for group, result in zip(admitted.batches, results, strict=True):
            raise_for(result, _named(group, result))
            written += [
                Written(p.ref, p.version, p.payload["blob_hash"], result["hash"], result["height"])
                for p in group
            ]
        return written

    def delete(self, ref: RecordRef, version: int | None = None) -> Written:
        """A tombstone version (FHIR delete): the record stays, its history readable.
        `version`: the version the tombstone must be (the caller checked the one before it);
        the chain refuses it (409) if another writer got there first. Default: the next."""
        if version is None:
            version = int(self.api.versions(ref)["versions"]) + 1
        payload = {
            "patient": ref.patient,
            "resource_type": ref.resource_type,
            "record": ref.name,
            "version": version,
            "tombstone": 1,
        }
        result = self.node.submit(self.signer.sign("records/anchor", payload), wait=True)
        raise_for(result, str(ref))
        return Written(ref, version, "", result["hash"], result["height"])

    def erase(self, refs: Sequence[RecordRef] | None = None) -> dict[str, Any]:
        """Erase the named records of this patient, or all of them (refs None)."""
        if refs is not None and any(r.patient != self.signer.did for r in refs):
            raise RecordsError("only the patient may erase their records", 403)
        payload: dict[str, Any] = (
            {"all": 1} if refs is None else {"records": [r.name for r in refs]}
        )
        result = self.node.submit(self.signer.sign("records/erase", payload), wait=True)
        raise_for(result, "erase")
        return result


_FAILED_ANCHOR = re.compile(r"anchor (\d+) of \d+: ")


def _named(group: Sequence[Prepared], result: Mapping[str, Any]) -> str:
    """The record a batch's failure names (the chain's and the node's logs start with
    "anchor <i> of <n>: "), or the batch's first record when the log names none."""
    log = str(result.get("log") or result.get("check_log") or "")
    found = _FAILED_ANCHOR.match(log)
    index = int(found.group(1)) if found and int(found.group(1)) < len(group) else 0
    p = group[index]
    batch = f" (in a batch of {len(group)})" if len(group) > 1 else ""
    return f"{p.ref} version {p.version}{batch}"


def _chunks_of(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
