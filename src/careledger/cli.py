"""The `careledger` command."""

from __future__ import annotations

from pathlib import Path

import typer

from careledger.cli_fhir import register_fhir_commands
from careledger.cli_keys import register_key_commands
from careledger.cli_output import DEFAULT_DATA_DIR, DEFAULT_NODE, console
from careledger.cli_output import fail as _fail
from careledger.cli_output import load_key as _load_key
from careledger.consortium.cli import consortium_app, node_app
from careledger.crypto.keyfile import KeyFile
from careledger.localnet.cli import net_app

app = typer.Typer(help="CareLedger: patient records on a consortium chain.", no_args_is_help=True)
register_key_commands(app)
records_app = typer.Typer(
    help="Write, read, list and erase encrypted records.", no_args_is_help=True
)
app.add_typer(records_app, name="records")
consent_app = typer.Typer(
    help="Who may read and write your records: grant, revoke, list.", no_args_is_help=True
)
app.add_typer(consent_app, name="consent")
app.add_typer(net_app, name="net")
app.add_typer(node_app, name="node")
app.add_typer(consortium_app, name="consortium")
register_fhir_commands(app)


@app.command()
def up(
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, help="Where the chain, blobs and keys live."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port of the node API."),
    demo: bool = typer.Option(False, help="On a fresh chain, register demo identities."),
    block_interval: float = typer.Option(0.25, help="Seconds between blocks."),
    audit_interval: float | None = typer.Option(
        None,
        min=0,
        help="Seconds between audit batches (default: $CARELEDGER_AUDIT_INTERVAL, else 0.25; "
        "0: reads are journaled and receipted but never committed, for tests).",
    ),
    base_url: str | None = typer.Option(
        None,
        help="The FHIR API's public base URL (e.g. https://fhir.example/fhir), for Location, "
        "paging links and the token audience. Set it behind a proxy: otherwise each "
        "request's Host header decides them.",
    ),
    open_enrolment: bool | None = typer.Option(
        None,
        "--open-enrolment/--closed-enrolment",
        help="Vouch for patients who sign up in the portal (rate-limited; default: only with "
        "--demo). Closed, a patient needs a voucher from a clinic.",
    ),
) -> None:
    """Start the embedded node (solo block producer, SQLite, blobs on disk), the
    organisation's FHIR gateway and the portal beside it."""
    from careledger.chain.app import IncompatibleState, LocalFault
    from careledger.demo import (
        SECOND_ORGANISATION,
        populate_demo_when_up,
        register_demo_clients,
        seed_demo,
    )
    from careledger.node.builder import Solo, build_node
    from careledger.node.datadir import DataDir, initialise
    from careledger.node.rules import BadRulesHook
    from careledger.node.tls import dial
    from careledger.site import organisation_gateway, serve_site
    from careledger.web.enrolment import OpenEnrolment

    data = DataDir(data_dir)
    if not data.exists():
        keyfile = initialise(data_dir)
        console.print(
            f"New chain in {data_dir}/ with one organisation, [bold]{keyfile.name}[/bold]."
        )
        console.print(f"Its key file: {data.organisation_key}  (did {keyfile.did})")
    try:
        node = build_node(
            data_dir, Solo(block_interval=block_interval), audit_interval=audit_interval
        )
    except (IncompatibleState, LocalFault, BadRulesHook) as exc:
        raise _fail(str(exc)) from None
    if node.replayed:
        console.print(f"Replayed {node.replayed} stored block(s) into the state after a restart.")
    url = f"http://{host}:{port}"
    made = seed_demo(node, KeyFile.load(data.organisation_key)) if demo else []
    seeded = bool(made)
    if seeded:
        client_key, portal_key = register_demo_clients(Path(data_dir), url, made[0])
        console.print(
            f"Demo consortium: Demo Hospital (this node) and {SECOND_ORGANISATION}, a "
            f"practitioner each; key files in {data.keys}/ and {Path(data_dir) / 'demo'}/ "
            f"(backend clients': {client_key}, and {portal_key} bound to {made[0].name})."
        )
    info = node.app.info()
    console.print(f"Chain {info.chain_id} at height {info.last_height}.")
    console.print(
        f"Node API: {url}/status  (every other route answers signed requests: docs/node-api.md)"
    )
    console.print("Check the chain any time with: careledger verify --data-dir " + str(data_dir))
    gateway = organisation_gateway(data, f"http://{dial(host)}:{port}", base_url)
    console.print(f"FHIR R4 API: {url}/fhir  (SMART Backend Services tokens: {url}/auth/token)")
    console.print(
        f"Register a backend client: careledger clients add --data-dir {data_dir} --new-key "
        f"client.json --token-url {url}/auth/token; then careledger token --key client.json"
    )
    enrolment = OpenEnrolment(
        gateway.node_url,
        KeyFile.load(data.organisation_key),
        open=demo if open_enrolment is None else open_enrolment,
    )
    console.print(
        f"Portal: {url}/"
        + ("  (open enrolment: anyone may sign up as a patient)" if enrolment.open else "")
    )
    gateway.start()
    if seeded:
        populate_demo_when_up(url, Path(data_dir), gateway, console.print)
    try:
        serve_site(node, gateway, enrolment, host, port)
    finally:
        node.close()
    if node.halted() is not None:
        raise _fail(f"the node stopped after a local fault: {node.halted()}")


@app.command()
def verify(
    data_dir: Path = typer.Option(
        DEFAULT_DATA_DIR,
        help="An embedded node's data directory, or a stopped network node's (e.g. net/node0).",
    ),
) -> None:
    """Re-check every block, signature, app hash, state row and blob; exit 1 naming the first
    fault (its block height, state row key or blob hash)."""
    from careledger.node.verify import Fault, verify_data_dir

    try:
        report = verify_data_dir(data_dir)
    except Fault as fault:
        raise _fail(f"verification failed: {fault}") from None
    console.print(
        f"OK: {report.blocks} blocks, {report.transactions} transactions, "
        f"{report.state_rows} state rows, {report.blobs} record blobs verified "
        f"({report.erased_blobs} erased; {report.orphan_blobs} never anchored)."
    )
    if report.unapplied_blocks:
        console.print(
            f"{report.unapplied_blocks} more block(s) stored by CometBFT are not yet in the "
            "state; the node replays them when it starts."
        )


@app.command()
def status(node: str = typer.Option(DEFAULT_NODE, help="Node API URL.")) -> None:
    """Show a node's chain id, height and app hash."""
    import httpx

    from careledger.wallet.node_client import NodeClient, NodeError

    try:
        info = NodeClient(node, timeout=5).status()
    except (httpx.HTTPError, NodeError) as exc:
        raise _fail(f"cannot reach {node}: {exc}") from None
    for key, value in info.items():
        console.print(f"{key}: {value}")


@records_app.command("import")
def records_import(
    bundles: list[Path] = typer.Argument(..., help="FHIR transaction Bundle JSON files."),
    as_: Path = typer.Option(..., "--as", help="Key file of the writing organisation."),
    node: str = typer.Option(DEFAULT_NODE, help="Node API URL."),
    claims: Path = typer.Option(
        Path("claim-packages"),
        help="Where each enrolled patient's claim package is written.",
    ),
    workers: int = typer.Option(2, help="Processes validating and sealing."),
) -> None:
    """Enrol each bundle's Patient for a claim and write its resources as that patient's
    records. Each patient's claim code is printed once, here: give it to the patient with
    their package, out of band. Nothing else about them is kept."""
    from careledger.wallet import records_cli

    with records_cli.errors(_fail):
        records_cli.import_bundles(bundles, _load_key(as_), node, claims, workers, console)


@records_app.command("list")
def records_list(
    as_: Path = typer.Option(..., "--as", help="Your key file."),
    patient: str = typer.Option("", help="The patient's did (default: yourself)."),
    node: str = typer.Option(DEFAULT_NODE, help="Node API URL."),
) -> None:
    """A patient's records: name, type, versions, erased or not."""
    from careledger.wallet import records_cli

    with records_cli.errors(_fail):
        records_cli.list_records(_load_key(as_), patient, node, console)


@records_app.command("get")
def records_get(
    reference: str = typer.Argument(..., help="Type/id, e.g. Observation/123."),
    as_: Path = typer.Option(..., "--as", help="Your key file."),
    patient: str = typer.Option("", help="The patient's did (default: yourself)."),
    version: int = typer.Option(0, help="A version (default: the latest)."),
    proof: Path | None = typer.Option(None, help="Also write a proof file for verify-record."),
    purpose: str = typer.Option(
        "", help="Purpose of use (TREAT, HPAYMT, HRESCH...); needed to read another's record."
    ),
    organisation: Path | None = typer.Option(
        None, help="A practitioner's organisation key file (opens what was granted to it)."
    ),
    node: str = typer.Option(DEFAULT_NODE, help="Node API URL."),
) -> None:
    """Print a record, decrypted and checked against its anchor."""
    from careledger.wallet import records_cli

    org = _load_key(organisation) if organisation else None
    with records_cli.errors(_fail):
        client = records_cli.client(_load_key(as_), node, purpose, org)
        records_cli.get_record(client, patient, reference, version, proof, console)


@records_app.command("export")
def records_export(
    as_: Path = typer.Option(..., "--as", help="Your key file."),
    out: Path | None = typer.Option(None, help="Write the Bundle here (default: print it)."),
    patient: str = typer.Option("", help="The patient's did (default: yourself)."),
    purpose: str = typer.Option(
        "", help="Purpose of use (TREAT, HPAYMT, HRESCH...); needed to read another's records."
    ),
    organisation: Path | None = typer.Option(
        None, help="A practitioner's organisation key file (opens what was granted to it)."
    ),
    node: str = typer.Option(DEFAULT_NODE, help="Node API URL."),
) -> None:
    """Every record you can open, decrypted and checked, as a FHIR Bundle (collection)."""
    from careledger.cli_output import err
    from careledger.wallet import records_cli

    if out is not None and out.exists():
        raise _fail(f"{out} exists: not overwriting it")
    org = _load_key(organisation) if organisation else None
    with records_cli.errors(_fail):
        client = records_cli.client(_load_key(as_), node, purpose, org)
        failed = records_cli.export_bundle(client, patient, out, console, err)
    if failed:
        raise _fail(f"{failed} record(s) could not be read (named above)")


@records_app.command("erase")
def records_erase(
    references: list[str] = typer.Argument(None, help="Type/id of each record to erase."),
    as_: Path = typer.Option(..., "--as", help="The patient's key file."),
    all_: bool = typer.Option(False, "--all", help="Erase every record of the patient."),
    node: str = typer.Option(DEFAULT_NODE, help="Node API URL."),
) -> None:
    """Erase records (crypto-shredding): every node deletes their ciphertext and keys."""
    from careledger.wallet import records_cli

    if bool(references) == all_:
        raise _fail("name the records to erase, or give --all (not both)")
    with records_cli.errors(_fail):
        records_cli.erase_records(_load_key(as_), references or [], node, console)


@consent_app.command("grant")
def consent_grant(
    grantee: str = typer.Argument(..., help="did of an organisation, practitioner or delegate."),
    as_: Path = typer.Option(..., "--as", help="The patient's key file."),
    action: str = typer.Option("read", help="read, write (contribute records) or delegate."),
    scopes: str = typer.Option(
        "all", help="Comma list of scopes, or 'all' (every scope but 'sensitive')."
    ),
    purpose: list[str] = typer.Option(["TREAT"], help="Purpose of use codes (repeatable)."),
    until: str = typer.Option(..., help="Last day of the grant, YYYY-MM-DD."),
    record: list[str] = typer.Option([], help="Only these records, Type/id (repeatable)."),
    node: str = typer.Option(DEFAULT_NODE, help="Node API URL."),
) -> None:
    """Let an organisation or practitioner read (or write) your records, for a purpose,
    until a date; their keys are wrapped to the organisation's key."""
    from careledger.wallet import consent_cli, records_cli

    with records_cli.errors(_fail):
        consent_cli.grant(
            _load_key(as_), node, grantee, action, scopes, purpose, until, record, console
        )


@consent_app.command("revoke")
def consent_revoke(
    grant_id: str = typer.Argument(..., help="The grant's id (careledger consent list)."),
    as_: Path = typer.Option(..., "--as", help="The patient's key file."),
    node: str = typer.Option(DEFAULT_NODE, help="Node API URL."),
) -> None:
    """Revoke a grant: refused from the next block on; new key epochs for what it covered."""
    from careledger.wallet import consent_cli, records_cli

    with records_cli.errors(_fail):
        consent_cli.revoke(_load_key(as_), node, grant_id, console)


@consent_app.command("list")
def consent_list(
    as_: Path = typer.Option(..., "--as", help="The patient's key file."),
    node: str = typer.Option(DEFAULT_NODE, help="Node API URL."),
) -> None:
    """Your grants: who, what, for which purpose, until when, active or revoked."""
    from careledger.wallet import consent_cli, records_cli

    with records_cli.errors(_fail):
        consent_cli.list_grants(_load_key(as_), node, console)


@app.command("audit")
def audit(
    keys: Path = typer.Option(..., "--keys", "--as", help="The patient's key file."),
    node: str = typer.Option(DEFAULT_NODE, help="Node API URL."),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of a table."),
    rotate: bool | None = typer.Option(
        None,
        "--rotate/--no-rotate",
        help="After an ended break-glass, rotate the scopes it exposed (default: ask).",
    ),
) -> None:
    """Your access log: break-glass alerts first, then every read of your records (allowed
    or refused) newest first, each checked against its batch on chain ("proof ok"); then,
    if a break-glass ended, the offer to rotate what it exposed. Exit 1 if any proof fails."""
    from careledger.wallet import audit_cli, records_cli

    with records_cli.errors(_fail):
        audit_cli.show_log(_load_key(keys), node, as_json, rotate, console)


@consent_app.command("emergency")
def consent_emergency(
    as_: Path = typer.Option(..., "--as", help="The patient's key file."),
    scopes: str = typer.Option(
        "default",
        help="Comma list of scopes to open, or 'default' (clinical, medications, diagnostics).",
    ),
    sensitive: bool = typer.Option(False, help="Open the sensitive scope too (opt-in)."),
    threshold: int = typer.Option(0, help="Shares needed (default: two thirds of members)."),
    node: str = typer.Option(DEFAULT_NODE, help="Node API URL."),
) -> None:
    """Open scopes to emergency access (break-glass): their keys escrowed, split among the
    member organisations; any break-glass raises an alert you see first."""
    from careledger.wallet import break_glass_cli, records_cli

    with records_cli.errors(_fail):
        break_glass_cli.open_emergency(_load_key(as_), node, scopes, sensitive, threshold, console)


@app.command("break-glass")
def break_glass(
    as_: Path = typer.Option(..., "--as", help="The practitioner's key file."),
    patient: str = typer.Option(..., help="The patient's did."),
    reason: str = typer.Option(
        ...,
        help="Why (1 to 500 characters): the patient reads it, and so can member node "
        "operators: the situation, no identifying details.",
    ),
    scopes: str = typer.Option(
        "opened", help="Comma list of scopes, or 'opened' (all the patient opened but sensitive)."
    ),
    seconds: int = typer.Option(3600, help="How long (at most 3600)."),
    node: list[str] = typer.Option(..., help="Member node URLs to ask for shares (repeatable)."),
    read: list[str] = typer.Option([], help="Records to read, Type/id (repeatable)."),
) -> None:
    """Emergency access without consent: a stated reason, the patient's opened scopes only,
    an hour at most, an alert the patient sees first, and k member nodes must release."""
    from careledger.wallet import break_glass_cli, records_cli

    with records_cli.errors(_fail):
        break_glass_cli.break_the_glass(
            _load_key(as_), patient, reason, scopes, seconds, node, read, console
        )


@app.command("verify-record")
def verify_record(
    proof: Path = typer.Argument(..., help="A proof file from records get."),
    validators: Path | None = typer.Option(
        None,
        help="Network mode: the validator set to trust (CometBFT genesis.json or /validators).",
    ),
    header_hash: str | None = typer.Option(
        None,
        "--header-hash",
        help='The hash of the anchor\'s block (GET /blocks/<height> "hash"), as compared '
        "with a node you trust or a published checkpoint.",
    ),
    node: str | None = typer.Option(
        None, help="A node you trust: the anchor's block hash is fetched from it (with --as)."
    ),
    as_: Path | None = typer.Option(
        None, "--as", help="Your key file, to sign the request to --node."
    ),
) -> None:
    """Check a record proof: the anchor's success in its block, the author's signature, the
    content's commitment, and that the block is the chain's, by the trust anchor given
    (--validators, --header-hash or --node). Exit 0 verified, 1 refused, 2 UNVERIFIED: the
    proof is consistent but no trust anchor was given (it prints what is left to trust)."""
    from careledger.wallet import records_cli

    keyfile = None if as_ is None else _load_key(as_)
    options = records_cli.TrustOptions(validators, header_hash, node, keyfile)
    with records_cli.errors(_fail):
        records_cli.verify_proof_file(proof, options, console)


def main() -> None:
    app(prog_name="careledger")


if __name__ == "__main__":
    main()
