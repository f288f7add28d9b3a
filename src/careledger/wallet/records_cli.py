"""What the `careledger records ...` and `verify-record` commands do (cli.py stays thin)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from careledger.chain.modules.records.events import RecordsErased
from careledger.crypto.keyfile import KeyFile, KeyFileError
from careledger.crypto.privatefs import write_private_file
from careledger.protocol.cometbft import (
    LightClientError,
    ValidatorSet,
    trusted_validator_set,
)
from careledger.wallet.fhir import InvalidResource, iter_bundle_entries
from careledger.wallet.node_client import NodeClient, NodeError
from careledger.wallet.proofs import (
    ProofError,
    TrustAnchor,
    TrustedHeaders,
    VerifiedRecord,
    check_record_proof_untrusted,
    verify_record_proof,
)
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
    claims_dir: Path,
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
            claims_dir,
            summary,
            lambda n: bar.advance(task, n),
        )
    summary.seconds = time.perf_counter() - started
    _print_summary(summary, console)
    return summary


def _print_summary(summary: ImportSummary, console: Console) -> None:
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
    if summary.claims:
        table = Table("claim package", "claim code (give it to the patient, out of band)")
        for pending in summary.claims:
            table.add_row(str(pending.package), pending.code)
        console.print(table)
        console.print(
            "The codes are shown only now and kept nowhere: give each patient their package "
            "and code; they claim it with `careledger claim PACKAGE --out KEYFILE`."
        )


def client(
    keyfile: KeyFile, node: str, purpose: str = "", organisation: KeyFile | None = None
) -> RecordsClient:
    return RecordsClient(NodeClient(node), keyfile, purpose=purpose, organisation=organisation)


def list_records(keyfile: KeyFile, patient: str, node: str, console: Console) -> None:
    records = client(keyfile, node).records(patient or keyfile.did)
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


def _ref(client: RecordsClient, patient: str, reference: str) -> RecordRef:
    resource_type, _, resource_id = reference.partition("/")
    if not resource_type or not resource_id:
        raise RecordsError(f"a record is named Type/id, not {reference!r}")
    return client.ref(patient or client.did, resource_type, resource_id)


def get_record(
    reader: RecordsClient,
    patient: str,
    reference: str,
    version: int,
    proof_out: Path | None,
    console: Console,
) -> None:
    ref = _ref(reader, patient, reference)
    if proof_out is None:
        resource: Any = reader.read(ref, version or None)
    else:
        proof = reader.proof(ref, version or None)
        proof_out.write_bytes(orjson.dumps(proof, option=orjson.OPT_INDENT_2))
        resource = proof["resource"]
    console.print_json(orjson.dumps(resource).decode())
    if proof_out is not None:
        console.print(f"Proof written to {proof_out}; check it with careledger verify-record.")


def export_bundle(
    reader: RecordsClient, patient: str, out: Path | None, console: Console, err: Console
) -> int:
    """Every record of the patient the reader can open, as a FHIR Bundle of type collection
    (to `out`, mode 0600, or standard output), found by name only (no id needed). Returns
    how many records failed (each named on `err`); those opened are written regardless."""
    failures: list[tuple[str, RecordsError]] = []
    opened = reader.read_all(patient or reader.did, lambda name, exc: failures.append((name, exc)))
    bundle = records_bundle(resource for _, resource in opened)
    data = orjson.dumps(bundle, option=orjson.OPT_INDENT_2)
    if out is None:
        console.print_json(data.decode())
    else:
        write_private_file(out, data + b"\n")
        err.print(f"Exported {len(opened)} record(s) to {out}.")
    for name, exc in failures:
        err.print(f"[red]not exported:[/red] record {name}: {exc}")
    return len(failures)


def records_bundle(resources: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A FHIR R4 Bundle of type collection holding `resources`, ordered by type and id."""
    ordered = sorted(resources, key=lambda r: (str(r["resourceType"]), str(r["id"])))
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "entry": [{"resource": resource} for resource in ordered],
    }


def erase_records(keyfile: KeyFile, references: Sequence[str], node: str, console: Console) -> None:
    patient = client(keyfile, node)
    refs = [_ref(patient, "", r) for r in references] if references else None
    result = patient.erase(refs)
    erased = [e for e in map(RecordsErased.from_json, result["events"]) if e is not None]
    count = sum(len(e.records) for e in erased)
    console.print(
        f"Erased {count} record(s) at height {result['height']}: "
        "their ciphertext and keys are deleted on every node."
    )


UNVERIFIED_EXIT = 2  # verify-record: consistent, but nothing ties the proof to the chain


@dataclass(frozen=True)
class TrustOptions:
    """What `verify-record` may trust: at most one of a validator set file, the hash of the
    anchor's block, or a node (with the key file that signs the request to it)."""

    validators: Path | None = None
    header_hash: str | None = None
    node: str | None = None
    keyfile: KeyFile | None = None

    def given(self) -> list[str]:
        named = {
            "--validators": self.validators,
            "--header-hash": self.header_hash,
            "--node": self.node,
        }
        return [name for name, value in named.items() if value is not None]


def verify_proof_file(path: Path, options: TrustOptions, console: Console) -> None:
    """Check a proof file; print OK (exit 0), or UNVERIFIED and what is left to trust
    (typer.Exit(2)) when no trust anchor was given; ProofError when the proof fails."""
    proof = _json_file(path, "proof")
    trust = trust_anchor(proof, options)
    verified = (
        check_record_proof_untrusted(proof) if trust is None else verify_record_proof(proof, trust)
    )
    if not verified.trusted:
        _print_unverified(verified, console)
        raise typer.Exit(code=UNVERIFIED_EXIT)
    _print_verified(verified, console)


def trust_anchor(proof: Any, options: TrustOptions) -> TrustAnchor | None:
    """The trust anchor the options name; None when they name none."""
    given = options.given()
    if len(given) > 1:
        raise ProofError(f"give one trust anchor, not {' and '.join(given)}")
    if options.validators is not None:
        return _trusted_validators(options.validators)
    if options.header_hash is not None:
        return TrustedHeaders({_anchor_height(proof): options.header_hash.strip()})
    if options.node is not None:
        if options.keyfile is None:
            raise ProofError("--node needs --as KEYFILE: a node answers signed requests only")
        height = _anchor_height(proof)
        return TrustedHeaders({height: _block_hash_at(options.node, options.keyfile, height)})
    return None


def _anchor_height(proof: Any) -> int:
    anchor = proof.get("anchor") if isinstance(proof, dict) else None
    height = anchor.get("height") if isinstance(anchor, dict) else None
    if type(height) is not int or height < 1:
        raise ProofError("the proof names no block height for its anchor")
    return height


def _block_hash_at(node: str, keyfile: KeyFile, height: int) -> str:
    client = NodeClient(node, keyfile)
    try:
        return str(client.block(height)["hash"])
    except NodeError as exc:
        if exc.status != 404:
            raise
        raise ProofError(
            f"{node} has no block {height}: the proof's block is not on its chain"
        ) from None
    finally:
        client.close()


def _print_verified(verified: VerifiedRecord, console: Console) -> None:
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
    console.print(f"Block hash ({block.consensus}): {block.block_hash}")
    if block.validators is not None:
        total = block.validators.total_power
        console.print(f"Signed by validators holding {block.signed_power} of {total} voting power.")
    console.print(f"Trusted because: {block.trusted_by}.")


def _print_unverified(verified: VerifiedRecord, console: Console) -> None:
    block = verified.block
    console.print(
        f"UNVERIFIED: the proof is consistent ({verified.ref} version {verified.version} of "
        f"patient {verified.patient}, anchored with success in block {block.height} by "
        f"{verified.author}), but nothing ties block {block.height} to the chain; anyone can "
        "make such a proof."
    )
    if block.consensus == "solo":
        console.print(
            f"Left to trust: block {block.height}'s hash {block.block_hash}. Compare it with "
            "a node you trust and give --header-hash HASH, or give --node URL --as KEYFILE."
        )
    else:
        console.print(
            f"Left to trust: the proof's own validator set (hash {block.validators_hash}) "
            f"and block {block.height}'s hash {block.block_hash}. Give --validators "
            "genesis.json, --header-hash HASH or --node URL --as KEYFILE."
        )


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
