"""`careledger node ...` and `careledger consortium ...`: one organisation's node on its own
machine, the genesis ceremony, and joining or leaving a running network (docs/operations.md).

`careledger/cli.py` mounts `node_app` as `careledger node` and `consortium_app` as
`careledger consortium`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import typer

from careledger.cli_output import console, err, fail, load_key
from careledger.consortium.ceremony import (
    MAX_GENESIS,
    assemble_genesis,
    genesis_hash,
    verify_genesis,
)
from careledger.consortium.home import DEFAULT_RPC_PORT, NodeHome, init_node
from careledger.consortium.members import MAX_MEMBER_FILE, ConsortiumError, MemberFile
from careledger.consortium.runner import install, node_lock, prepare, read_file, run
from careledger.consortium.status import node_report
from careledger.consortium.tls_cli import tls_app
from careledger.consortium.upgrade_cli import upgrade_app
from careledger.node.tls import TlsConfigError, TlsSettings
from careledger.wallet.node_client import NodeError

node_app = typer.Typer(help="One organisation's node on its own machine.", no_args_is_help=True)
consortium_app = typer.Typer(
    help="The genesis ceremony, and members joining or leaving.", no_args_is_help=True
)

node_app.add_typer(tls_app, name="tls")
consortium_app.add_typer(upgrade_app, name="upgrade")

DATA_DIR = typer.Option(..., "--data-dir", help="The node home (`careledger node init`).")
NODE_URL = typer.Option(..., "--node", help="A member node's API URL.")


@contextmanager
def _clear_errors() -> Iterator[None]:
    """Every refusal the package raises ends the command with its message and status 1."""
    try:
        yield
    except ConsortiumError as exc:
        raise fail(str(exc)) from None
    except (NodeError, httpx.HTTPError) as exc:
        raise fail(f"the node refused or could not be reached: {exc}") from None


# --- node ------------------------------------------------------------------------------------


@node_app.command("init")
def node_init(
    data_dir: Path = DATA_DIR,
    name: str = typer.Option(..., help="The organisation's name, as members will see it."),
    p2p: str = typer.Option(..., help="HOST:PORT other nodes reach this node's P2P port at."),
    api: str | None = typer.Option(
        None, help="HOST:PORT of the node API, gateway and portal (default: the P2P host, 26658)."
    ),
    rpc_port: int = typer.Option(DEFAULT_RPC_PORT, help="CometBFT's RPC port, on 127.0.0.1."),
    https: bool = typer.Option(
        False, help="Announce the API as https:// (the node will run with --tls-cert)."
    ),
) -> None:
    """Make this organisation's keys here and print its member file (public: send it to the
    founders, or to a sponsor to join)."""
    with _clear_errors():
        member = init_node(data_dir, name, p2p, api, rpc_port, https=https)
    typer.echo(member.to_json().decode(), nl=False)
    err.print(f"Member file also written to {NodeHome(data_dir).member_file}")


@node_app.command("start")
def node_start(
    data_dir: Path = DATA_DIR,
    genesis: Path = typer.Option(..., help="The genesis file every member verified."),
    peers: str = typer.Option("", help="Other nodes' P2P addresses, ID@HOST:PORT,..."),
    peer_api: str = typer.Option(
        "", help="Other nodes' API URLs, comma-separated: where this node fetches blobs."
    ),
    join: bool = typer.Option(
        False, help="A joining member: the genesis does not name this organisation."
    ),
    name: str | None = typer.Option(None, help="Refuse to start unless this is NAME's node."),
    tls_cert: Path | None = typer.Option(
        None, help="This node's TLS certificate (`careledger node tls issue`): HTTPS only."
    ),
    tls_key: Path | None = typer.Option(None, help="Its private key."),
    tls_ca: Path | None = typer.Option(
        None, help="The members' CA bundle: peers must be https:// URLs it verifies."
    ),
    listen_p2p: str | None = typer.Option(
        None, help="HOST:PORT to bind P2P on (default: the member file's; e.g. in a container)."
    ),
    listen_api: str | None = typer.Option(
        None, help="HOST:PORT to bind the API on (default: node init's --api)."
    ),
) -> None:
    """Run this organisation's node in the foreground: CometBFT, the node API, the FHIR
    gateway and the portal. Every check happens before anything is written."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request is noise here
    home = NodeHome(data_dir)
    with _clear_errors():
        raw = read_file(genesis, "genesis", MAX_GENESIS)
        tls = _tls(tls_cert, tls_key, tls_ca)
        plan = prepare(
            home,
            raw,
            peers,
            peer_api,
            join=join,
            name=name,
            tls=tls,
            listen_p2p=listen_p2p,
            listen_api=listen_api,
        )
        with node_lock(home):
            install(plan)
            console.print(
                f"{plan.member.name}: chain {plan.genesis.chain_id} (genesis "
                f"{genesis_hash(raw)}), API {plan.member.api_url}"
            )
            code = run(plan, console.print)
    raise typer.Exit(code)


def _tls(cert: Path | None, key: Path | None, ca: Path | None) -> TlsSettings:
    try:
        return TlsSettings(cert, key, ca)
    except TlsConfigError as exc:
        raise ConsortiumError(str(exc)) from None


@node_app.command("status")
def node_status(
    data_dir: Path = DATA_DIR,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Height, app hash, peers, validator power and replication backlog of this node."""
    with _clear_errors():
        report = node_report(NodeHome(data_dir))
    if as_json:
        typer.echo(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    for key, value in report.to_dict().items():
        console.print(f"{key}: {'-' if value is None else value}")


@node_app.command("backup")
def node_backup(
    data_dir: Path = DATA_DIR,
    out: Path = typer.Option(..., help="The archive to write (a new file, mode 0600)."),
) -> None:
    """Back up this node, running or not: keys, configuration, its own databases and blobs
    (docs/operations.md, section 5). The archive holds private keys: keep it like them."""
    from careledger.consortium.backup import backup_node

    with _clear_errors():
        report = backup_node(NodeHome(data_dir), out)
    skipped = report.skipped_blobs
    console.print(
        f"Wrote {out} (mode 0600): {report.files} files, {report.blobs} blobs"
        + (f" ({skipped} unreadable or erased: the peers hold them)" if skipped else "")
        + f"; the validator had signed up to height {report.signed_height}."
    )


@node_app.command("restore")
def node_restore(
    from_: Path = typer.Option(..., "--from", help="An archive of `careledger node backup`."),
    data_dir: Path = typer.Option(..., "--data-dir", help="The new node home (absent or empty)."),
) -> None:
    """Make a node home from a backup; then `node start` it with the genesis and peers: it
    block-syncs the chain from its peers. Stop the old machine for good first: two machines
    with one validator key sign twice."""
    from careledger.consortium.backup import restore_node

    with _clear_errors():
        report = restore_node(from_, data_dir)
    console.print(
        f"Restored {report.name}'s node home in {data_dir}: {report.files} files, "
        f"{report.blobs} blobs; its validator signs nothing at or below height "
        f"{report.signed_height}. Make sure the old machine never starts again, then start "
        "this one with `careledger node start`: it replays the chain from its peers."
    )


@node_app.command("rotate-key")
def node_rotate_key(data_dir: Path = DATA_DIR, node: str = NODE_URL) -> None:
    """Move this organisation's did to a new key on-chain and install the new key file (the
    old one kept as organisation.json.previous-HEIGHT)."""
    from careledger.consortium.rotation import rotate_organisation_key

    with _clear_errors():
        rotated = rotate_organisation_key(NodeHome(data_dir), node)
    console.print(
        f"{rotated.did} now signs with a new key (height {rotated.height}); the old key file "
        f"is kept as {rotated.previous_file}."
    )
    console.print(
        "Restart this node now (stop it, then `careledger node start`): a running node keeps "
        "the key it loaded, which the network no longer accepts."
    )


# --- consortium ------------------------------------------------------------------------------


def _members(paths: list[Path]) -> list[MemberFile]:
    return [MemberFile.parse(read_file(p, "member file", MAX_MEMBER_FILE), str(p)) for p in paths]


@consortium_app.command("genesis")
def consortium_genesis(
    member_files: list[Path] = typer.Argument(..., help="The founders' member files."),
    chain_id: str = typer.Option(..., help="The network's name, e.g. careledger-eastregion."),
    out: Path = typer.Option(..., help="Where to write genesis.json."),
) -> None:
    """Assemble the genesis from the founders' member files; print its SHA-256 to compare."""
    with _clear_errors():
        if out.exists():
            raise ConsortiumError(f"{out} exists: refusing to overwrite a genesis")
        raw = assemble_genesis(_members(member_files), chain_id)
        out.write_bytes(raw)
    console.print(f"Wrote {out}: {len(member_files)} founders, chain {chain_id}")
    typer.echo(f"sha256 {genesis_hash(raw)}")


@consortium_app.command("verify-genesis")
def consortium_verify_genesis(
    genesis: Path = typer.Argument(..., help="The genesis file received."),
    data_dir: Path = DATA_DIR,
    members: list[Path] = typer.Option(
        [], "--members", help="The member files that were agreed (repeat the option)."
    ),
    expected: str | None = typer.Option(None, "--hash", help="The SHA-256 agreed out of band."),
) -> None:
    """Check a genesis before starting: this organisation's entry, validators that are the
    founders' keys, the member list agreed; print the hash to compare with the others."""
    with _clear_errors():
        raw = read_file(genesis, "genesis", MAX_GENESIS)
        found = verify_genesis(
            raw, NodeHome(data_dir).member(), _members(members) if members else None, expected
        )
    for org in found.organisations:
        console.print(f"  member {org.name}  {org.did}")
    console.print(f"OK: chain {found.chain_id}, {len(found.organisations)} founders")
    typer.echo(f"sha256 {genesis_hash(raw)}")


@consortium_app.command("voucher")
def consortium_voucher(
    as_: Path = typer.Option(..., "--as", help="The sponsoring member's organisation key."),
    member: Path = typer.Option(..., help="The applicant's member file."),
    node: str = NODE_URL,
    out: Path = typer.Option(..., help="Where to write the voucher (send it to the applicant)."),
) -> None:
    """Sponsor an organisation's application for membership."""
    from careledger.consortium.joining import membership_voucher

    with _clear_errors():
        applicant = _members([member])[0]
        voucher = membership_voucher(load_key(as_), applicant, node)
        out.write_bytes(orjson.dumps(voucher, option=orjson.OPT_INDENT_2))
    console.print(f"Voucher for {applicant.name} ({applicant.did}) written to {out}")


@consortium_app.command("apply")
def consortium_apply(
    data_dir: Path = DATA_DIR,
    voucher: Path = typer.Option(..., help="The sponsor's voucher."),
    node: str = NODE_URL,
) -> None:
    """Apply for membership with this node's keys and a sponsor's voucher."""
    from careledger.consortium.joining import apply_for_membership

    with _clear_errors():
        raw = read_file(voucher, "voucher", MAX_MEMBER_FILE)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ConsortiumError(f"voucher {voucher}: not JSON ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("voucher"), dict):
            raise ConsortiumError(f"voucher {voucher}: not a membership voucher")
        result = apply_for_membership(NodeHome(data_dir), doc, node)
    console.print(f"Applied at height {result.get('height')}; the members now vote.")


@consortium_app.command("approve")
def consortium_approve(
    as_: Path = typer.Option(..., "--as", help="The voting member's organisation key."),
    subject: str = typer.Option(..., help="The applicant's (or member's) did."),
    node: str = NODE_URL,
    remove: bool = typer.Option(False, help="Vote to remove a member instead of admitting."),
) -> None:
    """Vote to admit an applicant (or, with --remove, to remove a member)."""
    from careledger.consortium.joining import vote

    with _clear_errors():
        result = vote(load_key(as_), node, subject, remove)
    console.print(f"Vote recorded at height {result.get('height')}.")


@consortium_app.command("register-node")
def consortium_register_node(data_dir: Path = DATA_DIR, node: str = NODE_URL) -> None:
    """Once admitted: register this organisation's node key (it signs the audit batches)."""
    from careledger.consortium.joining import register_own_node

    with _clear_errors():
        result = register_own_node(NodeHome(data_dir), node)
    console.print(f"Node registered at height {result.get('height')}.")
