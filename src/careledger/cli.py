"""The `careledger` command."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

import typer
from rich.console import Console

from careledger.crypto.keyfile import KeyFile, KeyFileError
from careledger.crypto.keys import KeyError_
from careledger.localnet.cli import net_app

app = typer.Typer(help="CareLedger: patient records on a consortium chain.", no_args_is_help=True)
keys_app = typer.Typer(help="Make, recover and inspect key files.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
records_app = typer.Typer(
    help="Write, read, list and erase encrypted records.", no_args_is_help=True
)
app.add_typer(records_app, name="records")
consent_app = typer.Typer(
    help="Who may read and write your records: grant, revoke, list.", no_args_is_help=True
)
app.add_typer(consent_app, name="consent")
app.add_typer(net_app, name="net")
clients_app = typer.Typer(
    help="SMART backend clients of the FHIR gateway: add, list, remove.", no_args_is_help=True
)
app.add_typer(clients_app, name="clients")

console = Console(emoji=False, highlight=False, soft_wrap=True)
err = Console(stderr=True, emoji=False, highlight=False, soft_wrap=True)

DEFAULT_DATA_DIR = Path("data")
DEFAULT_NODE = "http://127.0.0.1:8000"


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=1)


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
) -> None:
    """Start the embedded node (solo block producer, SQLite, blobs on disk) and the
    organisation's FHIR gateway beside it."""
    from careledger.chain.app import IncompatibleState, LocalFault
    from careledger.demo import (
        SECOND_ORGANISATION,
        populate_demo_when_up,
        register_demo_client,
        seed_demo,
    )
    from careledger.gateway.app import compose, gateway_app
    from careledger.gateway.context import Gateway
    from careledger.node.builder import Solo, build_node, serve
    from careledger.node.datadir import DataDir, initialise

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
    except (IncompatibleState, LocalFault) as exc:
        raise _fail(str(exc)) from None
    if node.replayed:
        console.print(f"Replayed {node.replayed} stored block(s) into the state after a restart.")
    url = f"http://{host}:{port}"
    seeded = demo and bool(seed_demo(node, KeyFile.load(data.organisation_key)))
    if seeded:
        client_key = register_demo_client(Path(data_dir), url)
        console.print(
            f"Demo consortium: Demo Hospital (this node) and {SECOND_ORGANISATION}, a "
            f"practitioner each; key files in {data.keys}/ and {Path(data_dir) / 'demo'}/ "
            f"(a backend client's: {client_key})."
        )
    info = node.app.info()
    console.print(f"Chain {info.chain_id} at height {info.last_height}.")
    console.print(
        f"Node API: {url}/status  (every other route answers signed requests: docs/node-api.md)"
    )
    console.print("Check the chain any time with: careledger verify --data-dir " + str(data_dir))
    gateway = Gateway(
        f"http://{_loopback(host)}:{port}",
        KeyFile.load(data.organisation_key),
        Path(data_dir) / "gateway",
        keys_dir=data.keys,
        base_url=base_url,
    )
    console.print(f"FHIR R4 API: {url}/fhir  (SMART Backend Services tokens: {url}/auth/token)")
    console.print(
        f"Register a backend client: careledger clients add --data-dir {data_dir} --new-key "
        f"client.json --token-url {url}/auth/token; then careledger token --key client.json"
    )
    gateway.start()
    if seeded:
        populate_demo_when_up(url, Path(data_dir), gateway.claim_package, console.print)
    try:
        serve(node, host, port, beside=lambda node_api: compose(node_api, gateway_app(gateway)))
    finally:
        gateway.close()
        node.close()
    if node.halted() is not None:
        raise _fail(f"the node stopped after a local fault: {node.halted()}")


@app.command("gateway")
def gateway_command(
    node: str = typer.Option(..., help="Node API URL of the node to talk to."),
    as_: Path = typer.Option(..., "--as", help="The organisation's key file."),
    data_dir: Path = typer.Option(..., help="The gateway's own files (index, directory)."),
    keys: Path | None = typer.Option(None, help="Where its practitioners' key files are."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, min=1, max=65535, help="Port of the FHIR API."),
    base_url: str | None = typer.Option(None, help="Public base URL of /fhir (for links)."),
) -> None:
    """Serve the FHIR R4 gateway alone, in front of a node that runs elsewhere."""
    from careledger.gateway.standalone import GatewayStartError, check_node, serve_gateway

    organisation = _load_key(as_)
    try:
        chain_id = check_node(node)
    except GatewayStartError as exc:
        raise _fail(str(exc)) from None
    url = f"http://{host}:{port}"
    console.print(f"FHIR R4 gateway of {organisation.did} for chain {chain_id} via {node}")
    console.print(f"FHIR R4 API: {url}/fhir  (SMART Backend Services tokens: {url}/auth/token)")
    serve_gateway(node, organisation, data_dir, keys, host, port, base_url)


def _loopback(host: str) -> str:
    """Where this machine reaches a server listening on `host`."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host


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


@keys_app.command("new")
def keys_new(
    out: Path = typer.Option(..., help="Key file to write (mode 0600)."),
    kind: str = typer.Option("patient", help="patient, practitioner or organisation."),
    name: str = typer.Option("", help="A label kept in the file."),
) -> None:
    """Make new keys from a fresh 24-word recovery phrase, shown once."""
    from careledger.wallet.custody import new_patient_keys

    keyfile, phrase = new_patient_keys(name)
    if kind != "patient":
        keyfile = KeyFile(keyfile.did, kind, keyfile.identity, name)
    _save_keyfile(out, keyfile)
    console.print("Recovery phrase (write it down; it is shown only now):")
    console.print(f"[bold]{phrase}[/bold]")


@keys_app.command("restore")
def keys_restore(
    out: Path = typer.Option(..., help="Key file to write (mode 0600)."),
    kind: str = typer.Option("patient", help="patient, practitioner or organisation."),
) -> None:
    """Restore keys from a recovery phrase, read from standard input (or asked for, hidden)."""
    from careledger.wallet.custody import restore_patient_keys

    phrase = _read_secret("Recovery phrase")
    try:
        keyfile = restore_patient_keys(phrase)
    except KeyError_ as exc:
        raise _fail(str(exc)) from None
    if kind != "patient":
        keyfile = KeyFile(keyfile.did, kind, keyfile.identity)
    _save_keyfile(out, keyfile)
    if kind == "patient":
        console.print(
            "If this identity was claimed from a clinic's package, keep the key file the claim "
            "wrote: it, not the phrase, holds the keys of the records written before the claim."
        )


# The command's name before `restore`; kept so that scripts using it keep working.
keys_app.command("recover", hidden=True)(keys_restore)


@app.command("claim")
def claim_package(
    package: Path = typer.Argument(..., help="The claim package the clinic gave you."),
    out: Path = typer.Option(..., help="Your new key file (mode 0600)."),
    node: str = typer.Option(DEFAULT_NODE, help="Node API URL."),
) -> None:
    """Claim your identity from a clinic's package: the claim code is read from standard
    input (or asked for, hidden); then your keys are replaced by new ones the clinic never
    saw, and your new recovery phrase is shown once."""
    import httpx

    from careledger.crypto.claim import ClaimError
    from careledger.wallet.custody import claim
    from careledger.wallet.node_client import NodeClient, NodeError

    if out.exists():
        raise _fail(f"{out} exists: refusing to overwrite a key file")
    code = _read_secret("Claim code (6 words)")
    try:
        claimed = claim(NodeClient(node), package, code, save_to=out)
    except ClaimError as exc:
        raise _fail(str(exc)) from None
    except (NodeError, httpx.HTTPError) as exc:
        hint = f" (your new keys are in {out}: keep it)" if out.exists() else ""
        raise _fail(f"the node at {node} did not complete the claim: {exc}{hint}") from None
    console.print(f"Claimed {claimed.keyfile.did}; new keys from epoch {claimed.epoch} on.")
    if claimed.revoked:
        console.print(
            f"Revoked {len(claimed.revoked)} grant(s) made before your claim with the clinic's "
            "copy of the keys (grant again what you want: careledger consent grant)."
        )
    console.print(f"Key file: {out} (it also holds the keys of your earlier records: keep it)")
    console.print("Recovery phrase (write it down; it is shown only now):")
    console.print(f"[bold]{claimed.phrase}[/bold]")


@keys_app.command("show")
def keys_show(path: Path) -> None:
    """Show a key file's did and public keys (never the secret)."""
    try:
        keyfile = KeyFile.load(path)
    except KeyFileError as exc:
        raise _fail(str(exc)) from None
    console.print(f"did: {keyfile.did}")
    console.print(f"kind: {keyfile.kind}")
    if keyfile.name:
        console.print(f"name: {keyfile.name}")
    console.print(f"signing key: {keyfile.identity.signing_public.hex()}")
    console.print(f"encryption key: {keyfile.identity.encryption_public.hex()}")


def _save_keyfile(out: Path, keyfile: KeyFile) -> None:
    try:
        keyfile.save(out)
        KeyFile.load(out)
    except KeyFileError as exc:
        raise _fail(str(exc)) from None
    console.print(f"did: {keyfile.did}")
    console.print(f"written to {out}")


def _read_secret(prompt: str) -> str:
    """A secret from the terminal (not echoed) or from standard input: never from an argument,
    which any user of the machine sees in `ps`."""
    if sys.stdin.isatty():
        return getpass.getpass(f"{prompt}: ")
    return sys.stdin.readline().strip()


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


@clients_app.command("add")
def clients_add(
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, help="Data directory of the gateway."),
    jwks: Path | None = typer.Option(None, help="The client's public JWKS file."),
    jwk: Path | None = typer.Option(None, help="The client's public JWK file."),
    jwks_url: str | None = typer.Option(None, help="Where the gateway fetches its JWKS."),
    new_key: Path | None = typer.Option(
        None, help="Make a key pair; write the private key, client id and token URL here."
    ),
    alg: str = typer.Option("EdDSA", help="With --new-key: EdDSA, ES384 or RS384."),
    practitioner: str | None = typer.Option(
        None, help="Act as this practitioner (did; default: the organisation)."
    ),
    scope: str = typer.Option("system/*.cruds", help="The most its tokens may carry."),
    purpose: str = typer.Option("TREAT", help="Purpose of use its reads state."),
    name: str = typer.Option("", help="A label."),
    keys: Path | None = typer.Option(None, help="Practitioners' key files (default DIR/keys)."),
    token_url: str = typer.Option(
        DEFAULT_NODE + "/auth/token", help="With --new-key: the token URL to write."
    ),
) -> None:
    """Register a SMART backend client; prints its client id."""
    from careledger.gateway import clients_cli as cc

    sources = cc.KeySource(jwks, jwk, jwks_url, new_key, alg)
    binding = cc.Binding(practitioner, scope, purpose, name)
    try:
        console.print(cc.add_client(data_dir, sources, binding, keys, token_url))
    except cc.CommandError as exc:
        raise _fail(str(exc)) from None


@clients_app.command("list")
def clients_list(
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, help="Data directory of the gateway."),
) -> None:
    """The registered clients: id, name, who they act as, scopes, purpose, keys."""
    from careledger.gateway import clients_cli as cc

    try:
        cc.list_clients(data_dir, console)
    except cc.CommandError as exc:
        raise _fail(str(exc)) from None


@clients_app.command("remove")
def clients_remove(
    client_id: str = typer.Argument(..., help="The client's id."),
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, help="Data directory of the gateway."),
) -> None:
    """Remove a client; its tokens stop working at once."""
    from careledger.gateway import clients_cli as cc

    try:
        cc.remove_client(data_dir, client_id)
    except cc.CommandError as exc:
        raise _fail(str(exc)) from None
    err.print(f"Removed client {client_id}.")


@app.command()
def token(
    key: Path = typer.Option(..., help="The client key file (clients add --new-key)."),
    scope: str | None = typer.Option(None, help="Scopes to ask for (default: all its own)."),
    url: str | None = typer.Option(None, help="Token URL, or the FHIR base URL to ask."),
) -> None:
    """Get a bearer token the SMART way (a signed assertion) and print it, alone."""
    from careledger.gateway import clients_cli as cc

    try:
        print(cc.get_token(key, scope, url))
    except cc.CommandError as exc:
        raise _fail(str(exc)) from None


@app.command("import")
def import_(
    paths: list[Path] = typer.Argument(..., help="FHIR Bundle files, or folders of them."),
    key: Path = typer.Option(..., help="The backend client's key file (clients add --new-key)."),
    url: str = typer.Option(DEFAULT_NODE + "/fhir", help="The gateway's FHIR base URL."),
    state: Path = typer.Option(
        Path(".careledger-import.json"), help="Which bundles are done (for resuming)."
    ),
) -> None:
    """Post FHIR bundles to a gateway, one transaction each (directory bundles first),
    resuming after an interruption without duplicating anything. Each enrolled patient's
    claim code is printed once, here: give it to the patient out of band."""
    from careledger.gateway import import_cli

    with import_cli.errors(_fail):
        import_cli.run(paths, key, url, state, console)


def _load_key(path: Path) -> KeyFile:
    try:
        return KeyFile.load(path)
    except KeyFileError as exc:
        raise _fail(str(exc)) from None


def main() -> None:
    app(prog_name="careledger")


if __name__ == "__main__":
    main()
