"""Importing Synthea-style FHIR transaction bundles: patients enrolled, resources written.

Each Patient of a bundle is enrolled for a claim (wallet/enrolment.py: a claim package
written to the output directory, its one-time code returned in memory for the caller to give
out once, never stored) and the resources that belong to it are written as its records
through the write pipeline (wallet/writing.py); entries that belong to no patient are
counted and skipped. The importing side keeps no phrase, key or name in clear.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from careledger.crypto.claim import write_claim_package
from careledger.crypto.privatefs import make_private_dir
from careledger.wallet.enrolment import SealedClaim, enrol_sealed_claim, seal_new_claim
from careledger.wallet.fhir import BundleIndex, PatientRecords
from careledger.wallet.refs import Written
from careledger.wallet.sealing import Job

if TYPE_CHECKING:
    from careledger.wallet.records import RecordsClient


@dataclass(frozen=True)
class PendingClaim:
    """A patient's claim package on disk and its code, to give the patient once (out of
    band: printed or told). repr() does not show the code."""

    did: str
    package: Path
    code: str = field(repr=False)


@dataclass
class ImportSummary:
    bundles: int = 0
    patients: int = 0
    written: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # resource type -> count
    seconds: float = 0.0
    claims: list[PendingClaim] = field(default_factory=list)


def import_bundle(
    client: RecordsClient,
    bundle: Mapping[str, Any],
    claims_dir: Path,
    summary: ImportSummary,
    progress: Callable[[int], None] | None = None,
) -> list[Written]:
    """Import one bundle (see import_bundles)."""
    return import_bundles(client, [bundle], claims_dir, summary, progress)


def import_bundles(
    client: RecordsClient,
    bundles: Iterable[Mapping[str, Any]],
    claims_dir: Path,
    summary: ImportSummary,
    progress: Callable[[int], None] | None = None,
) -> list[Written]:
    """Enrol each Patient of the bundles and write its resources as that patient's records.

    References inside a bundle (`urn:uuid:`) become `Type/id`, as a FHIR server does when
    it stores a transaction. Entries that belong to no patient (Organization, Practitioner:
    directory data, not health records) are skipped and counted in `summary.skipped`: a
    record is always a patient's, encrypted to the patient's keys.

    Every patient's records go through one pipeline (see `Writer.pipelined`), so sealing,
    the node's fsyncs and the blocks of different patients overlap. A patient is enrolled
    (registration and scope keys admitted, wait=False) just before their first record
    enters the pipeline, so their anchors are always admitted after their keys; their claim
    package is sealed ahead, while the previous patient's records are written.
    """
    written: list[Written] = []
    make_private_dir(claims_dir)

    def patients() -> Iterator[tuple[BundleIndex, PatientRecords]]:
        for bundle in bundles:
            index = BundleIndex.of(bundle)
            groups, unowned = index.split_by_patient()
            for entry in unowned:
                kind = str(entry.resource.get("resourceType"))
                summary.skipped[kind] = summary.skipped.get(kind, 0) + 1
                if progress:
                    progress(1)
            for group in groups:
                yield index, group
            summary.bundles += 1

    def jobs() -> Iterator[Job]:
        for index, group, sealed in _sealed_ahead(client, patients()):
            resources = [index.local_references(group.patient.resource)]
            resources += [index.local_references(e.resource) for e in group.entries]
            enrolment = enrol_sealed_claim(
                client.node, client.identity, client.did, sealed, wait=False
            )
            package = claims_dir / f"claim-{enrolment.did[-12:]}.json"
            write_claim_package(package, enrolment.package)
            summary.claims.append(PendingClaim(enrolment.did, package, enrolment.code))
            summary.patients += 1
            for resource in resources:
                yield client.writer.job(
                    enrolment.did, resource, enrolment.scope_keys, {}, enrolment.naming_key
                )

    for chunk_written in client.writer.pipelined(jobs()):
        written += chunk_written
        summary.written += len(chunk_written)
        if progress:
            progress(len(chunk_written))
    return written


def _sealed_ahead(
    client: RecordsClient, patients: Iterator[tuple[BundleIndex, PatientRecords]]
) -> Iterator[tuple[BundleIndex, PatientRecords, SealedClaim]]:
    """Each patient with its claim package, the next patient's sealed in a thread meanwhile.

    Sealing is the claim KDF (Argon2id, DEFAULT_KDF: its strength is not traded for speed),
    which releases the GIL: it runs beside the writing of the current patient's records
    instead of stopping the pipeline's feed once per patient. Only the sealing runs ahead;
    each patient is still registered (on the chain) just before their records.
    """
    chain_id = str(client.node.status()["chain_id"])

    def seal(group: PatientRecords) -> SealedClaim:
        return seal_new_claim(chain_id, _display_name(group.patient.resource))

    kdf = concurrent.futures.ThreadPoolExecutor(1, "claim-kdf")
    try:
        current = next(patients, None)
        sealing = kdf.submit(seal, current[1]) if current else None
        while current is not None and sealing is not None:
            following = next(patients, None)
            sealing_next = kdf.submit(seal, following[1]) if following else None
            yield current[0], current[1], sealing.result()
            current, sealing = following, sealing_next
    finally:
        kdf.shutdown(wait=True, cancel_futures=True)


def _display_name(patient: Mapping[str, Any]) -> str:
    # Kept only inside the claim package, encrypted under its code.
    names = patient.get("name") or [{}]
    first = names[0] if isinstance(names, list) and names else {}
    given = " ".join(first.get("given") or [])
    return f"{given} {first.get('family', '')}".strip()
