"""Importing Synthea-style FHIR transaction bundles: patients enrolled, resources written.

Each Patient of a bundle is enrolled for a claim (wallet/enrolment.py: a claim package
written to the output directory, its one-time code returned in memory for the caller to give
out once, never stored) and the resources that belong to it are written as its records
through the write pipeline (wallet/writing.py); entries that belong to no patient are
counted and skipped. The importing side keeps no phrase, key or name in clear.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from careledger.crypto.claim import write_claim_package
from careledger.crypto.privatefs import make_private_dir
from careledger.wallet.fhir import BundleIndex
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
    enters the pipeline, so their anchors are always admitted after their keys.
    """
    written: list[Written] = []
    make_private_dir(claims_dir)

    def jobs() -> Iterator[Job]:
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
                enrolment = client.enrol_for_claim(
                    _display_name(group.patient.resource), wait=False
                )
                package = claims_dir / f"claim-{enrolment.did[-12:]}.json"
                write_claim_package(package, enrolment.package)
                summary.claims.append(PendingClaim(enrolment.did, package, enrolment.code))
                summary.patients += 1
                for resource in resources:
                    yield client.writer.job(
                        enrolment.did, resource, enrolment.scope_keys, {}, enrolment.naming_key
                    )
            summary.bundles += 1

    for chunk_written in client.writer.pipelined(jobs()):
        written += chunk_written
        summary.written += len(chunk_written)
        if progress:
            progress(len(chunk_written))
    return written


def _display_name(patient: Mapping[str, Any]) -> str:
    # Kept only inside the claim package, encrypted under its code.
    names = patient.get("name") or [{}]
    first = names[0] if isinstance(names, list) and names else {}
    given = " ".join(first.get("given") or [])
    return f"{given} {first.get('family', '')}".strip()
