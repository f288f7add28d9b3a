"""What the `careledger records ...` and `verify-record` commands do (cli.py stays thin)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from careledger.chain.modules.records.events import RecordsErased
from careledger.consensus.cometbft.lightclient import (
    LightClientError,
    ValidatorSet,
    trusted_validator_set,
)
from careledger.crypto.keyfile import KeyFile, KeyFileError
from careledger.wallet.fhir import InvalidResource, iter_bundle_entries
from careledger.wallet.node_client import NodeClient, NodeError
from careledger.wallet.proofs import ProofError, verify_record_proof
from careledger.wallet.records import (
    ImportSummary,
    RecordRef,
    RecordsClient,
    RecordsError,
)
from careledger.wallet.records import (
    import_bundles as import_all,
)


class BundleError(ValueError):
    """A file given to `records import` that is not a FHIR Bundle."""


@contextlib.contextmanager
def errors(fail: Callable[[str], typer.Exit]) -> Iterator[None]:
    """Turn the SDK's errors into one clear line and exit code 1."""
    try:
        yield
    except RecordsError as exc:
        raise fail(f"{exc} (HTTP {exc.status})") from None
    except (ProofError, KeyFileError, InvalidResource, NodeError, BundleError) as exc:
        raise fail(str(exc)) from None
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach the node: {exc}") from None
    except OSError as exc:
        raise fail(str(exc)) from None


def load_bundle(path: Path) -> Any:
    """A FHIR Bundle from a file; BundleError naming the file for anything else."""
    try:
        bundle = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise BundleError(f"{path} is not JSON: {exc}") from None
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BundleError(f"{path} is not a FHIR Bundle")
    return bundle


def import_bundles(
    paths: Sequence[Path],
    author: KeyFile,
    node: str,
    patient_keys: Path,
    workers: int,
    console: Console,
) -> ImportSummary:
    bundles = [(path, load_bundle(path)) for path in paths]
    total = sum(len(list(iter_bundle_entries(b))) for _, b in bundles)
    summary, started = ImportSummary(), time.perf_counter()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("resources"),
        TimeElapsedColumn(),
    )
    with (
        RecordsClient(node, author, workers=workers) as client,
        Progress(*columns, console=console) as bar,
    ):
        task = bar.add_task(f"importing {len(bundles)} bundle(s)", total=total)
        import_all(
            client,
            (bundle for _, bundle in bundles),
            patient_keys,
            summary,
            lambda n: bar.advance(task, n),
        )
    summary.seconds = time.perf_counter() - started
    _print_summary(summary, console, patient_keys)
    return summary


def _print_summary(summary: ImportSummary, console: Console, patient_keys: Path) -> None:
    rate = summary.written / summary.seconds if summary.seconds else 0.0
    console.print(
        f"Imported {summary.written} resources for {summary.patients} patients from "
        f"{summary.bundles} bundle(s) in {summary.seconds:.1f} s ({rate:,.0f}/s)."
    )
    if summary.skipped:
        kinds = ", ".join(f"{n} {t}" for t, n in sorted(summary.skipped.items()))
        console.print(
            f"Skipped {kinds}: no Patient of the bundle owns them (directory data such as "
            "Organizations and Practitioners; a record is always a patient's, encrypted "
            "to the patient's keys)."
        )
    if summary.patients:
        console.print(
            f"Patients' key files and recovery phrases (to hand over, then delete): {patient_keys}/"
        )


def _client(keyfile: KeyFile, node: str) -> RecordsClient:
    return RecordsClient(NodeClient(node), keyfile)


def list_records(keyfile: KeyFile, patient: str, node: str, console: Console) -> None:
    records = _client(keyfile, node).records(patient or keyfile.did)
    table = Table("record", "type", "versions", "author", "state")
    for rec in records:
        latest = rec.get("latest") or {}
        state = "erased" if rec["erased_at"] else ("deleted" if latest.get("tombstone") else "")
        table.add_row(
            rec["record"][:16],
            rec["resource_type"],
            str(rec["versions"]),
            str(latest.get("author", ""))[-12:],
            state,
        )
    console.print(table)
    console.print(f"{len(records)} record(s)")


def _ref(keyfile: KeyFile, patient: str, reference: str) -> RecordRef:
    resource_type, _, resource_id = reference.partition("/")
    if not resource_type or not resource_id:
        raise RecordsError(f"a record is named Type/id, not {reference!r}")
    return RecordRef(patient or keyfile.did, resource_type, resource_id)


def get_record(
    keyfile: KeyFile,
    patient: str,
    reference: str,
    version: int,
    proof_out: Path | None,
    node: str,
    console: Console,
) -> None:
    client, ref = _client(keyfile, node), _ref(keyfile, patient, reference)
    if proof_out is None:
        resource: Any = client.read(ref, version or None)
    else:
        proof = client.proof(ref, version or None)
        proof_out.write_bytes(orjson.dumps(proof, option=orjson.OPT_INDENT_2))
        resource = proof["resource"]
    console.print_json(orjson.dumps(resource).decode())
    if proof_out is not None:
        console.print(f"Proof written to {proof_out}; check it with careledger verify-record.")


def erase_records(keyfile: KeyFile, references: Sequence[str], node: str, console: Console) -> None:
    client = _client(keyfile, node)
    refs = [_ref(keyfile, "", r) for r in references] if references else None
    result = client.erase(refs)
    erased = [e for e in map(RecordsErased.from_json, result["events"]) if e is not None]
    count = sum(len(e.records) for e in erased)
    console.print(
        f"Erased {count} record(s) at height {result['height']}: "
        "their ciphertext and keys are deleted on every node."
    )


def verify_proof_file(path: Path, validators: Path | None, console: Console) -> None:
    proof = _json_file(path, "proof")
    trusted = None if validators is None else _trusted_validators(validators)
    verified = verify_record_proof(proof, trusted)
    block = verified.block
    console.print(
        f"OK: {verified.ref} version {verified.version} of patient {verified.patient} "
        f"is anchored, and its anchor succeeded, in block {block.height} ({block.time}), "
        f"written by {verified.author}."
    )
    if verified.rotations:
        console.print(
            f"The author's key {verified.signing_key} is proven by {verified.rotations} "
            "key rotation(s) from its did."
        )
    if block.consensus == "solo":
        console.print(f"Block hash (solo node): {block.block_hash}")
        console.print("Compare that hash with any node (GET /blocks/<height>) to finish.")
        return
    console.print(f"Block hash (CometBFT): {block.block_hash}")
    total = block.validators.total_power if block.validators else 0
    console.print(f"Signed by validators holding {block.signed_power} of {total} voting power.")
    if trusted is None:
        console.print(
            f"No trusted validator set was given: the proof's own set was used, with hash "
            f"{block.validators_hash}. Compare it with your consortium's out of band, or "
            "pass --validators genesis.json."
        )
    else:
        console.print(f"Trusted because: {block.trusted_by}.")


def _json_file(path: Path, what: str) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ProofError(f"{path} is not JSON: {exc}") from None


def _trusted_validators(path: Path) -> ValidatorSet:
    try:
        return trusted_validator_set(_json_file(path, "validators"))
    except LightClientError as exc:
        raise ProofError(f"{path}: {exc}") from None
