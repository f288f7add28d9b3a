"""The `careledger` command."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from careledger.crypto.keyfile import KeyFile, KeyFileError
from careledger.crypto.keys import Identity, KeyError_, identity_from_phrase, new_recovery_phrase

app = typer.Typer(help="CareLedger: patient records on a consortium chain.", no_args_is_help=True)
keys_app = typer.Typer(help="Make, recover and inspect key files.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

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
    port: int = typer.Option(8000, help="Port of the node API."),
    demo: bool = typer.Option(False, help="On a fresh chain, register demo identities."),
    block_interval: float = typer.Option(0.25, help="Seconds between blocks."),
) -> None:
    """Start the embedded node (solo block producer, SQLite, blobs on disk)."""
    from careledger.node.datadir import DataDir, initialise
    from careledger.node.demo import seed_demo
    from careledger.node.embedded import EmbeddedNode, serve

    data = DataDir(data_dir)
    if not data.exists():
        keyfile = initialise(data_dir)
        console.print(
            f"New chain in {data_dir}/ with one organisation, [bold]{keyfile.name}[/bold]."
        )
        console.print(f"Its key file: {data.organisation_key}  (did {keyfile.did})")
    node = EmbeddedNode(data_dir, block_interval=block_interval)
    if node.replayed:
        console.print(f"Replayed {node.replayed} stored block(s) into the state after a restart.")
    if demo:
        made = seed_demo(node, KeyFile.load(data.organisation_key))
        if made:
            console.print(f"Demo identities registered; their key files are in {data.keys}/.")
    info = node.app.info()
    url = f"http://{host}:{port}"
    console.print(f"Chain {info.chain_id} at height {info.last_height}.")
    console.print(
        f"Node API: {url}/status  (blocks: {url}/blocks/1, queries: {url}/query/identity/members)"
    )
    console.print("Check the chain any time with: careledger verify --data-dir " + str(data_dir))
    try:
        serve(node.asgi(), host, port)
    finally:
        node.close()


@app.command()
def verify(
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, help="The node's data directory."),
) -> None:
    """Re-check every block, signature, app hash and state row; exit 1 naming the first fault."""
    from careledger.node.verify import Fault, verify_data_dir

    try:
        report = verify_data_dir(data_dir)
    except Fault as fault:
        raise _fail(f"verification failed: {fault}") from None
    console.print(
        f"OK: {report.blocks} blocks, {report.transactions} transactions, "
        f"{report.state_rows} state rows verified."
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
    phrase = new_recovery_phrase()
    _write_keyfile(out, kind, identity_from_phrase(phrase), name)
    console.print("Recovery phrase (write it down; it is shown only now):")
    console.print(f"[bold]{phrase}[/bold]")


@keys_app.command("recover")
def keys_recover(
    out: Path = typer.Option(..., help="Key file to write (mode 0600)."),
    kind: str = typer.Option("patient", help="patient, practitioner or organisation."),
    phrase: str = typer.Option(..., prompt="Recovery phrase", hide_input=True),
) -> None:
    """Restore keys from a recovery phrase."""
    try:
        identity = identity_from_phrase(phrase)
    except KeyError_ as exc:
        raise _fail(str(exc)) from None
    _write_keyfile(out, kind, identity, "")


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


def _write_keyfile(out: Path, kind: str, identity: Identity, name: str) -> None:
    try:
        KeyFile(identity.did, kind, identity, name).save(out)
        KeyFile.load(out)
    except KeyFileError as exc:
        raise _fail(str(exc)) from None
    console.print(f"did: {identity.did}")
    console.print(f"written to {out}")


def main() -> None:
    app(prog_name="careledger")


if __name__ == "__main__":
    main()
