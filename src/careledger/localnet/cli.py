"""`careledger net up|status|down`: a local CometBFT network of N validators on 127.0.0.x.

`careledger/cli.py` mounts this as `careledger net`.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import typer
from rich.console import Console

from careledger.localnet.network import (
    DEFAULT_BASE_PORT,
    NetError,
    Network,
    NodeStatus,
    create_network,
    network_status,
    start_network,
    stop_network,
)

net_app = typer.Typer(help="A local consortium network on CometBFT.", no_args_is_help=True)
console = Console(emoji=False, highlight=False, soft_wrap=True)
DEFAULT_NET_DIR = Path("net")


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {message}")
    return typer.Exit(code=1)


@net_app.command("up")
def up(
    validators: int = typer.Option(4, help="How many validators (one organisation each)."),
    data_dir: Path = typer.Option(DEFAULT_NET_DIR, help="Where the nodes' homes live."),
    base_port: int = typer.Option(DEFAULT_BASE_PORT, help="p2p port; RPC +1, node API +2."),
) -> None:
    """Create (first time) and start the network; each node on its own 127.0.0.x address."""
    try:
        if (data_dir / "network.json").exists():
            network = Network.load(data_dir)
            if len(network.nodes) != validators:
                console.print(f"{data_dir} holds {len(network.nodes)} validators; starting those.")
        else:
            network = create_network(data_dir, validators, base_port=base_port)
            console.print(f"Created chain {network.chain_id} with {validators} validators.")
        start_network(network)
    except NetError as exc:
        raise _fail(str(exc)) from None
    _print_status(network, network_status(network))
    console.print(f"Stop it with: careledger net down --data-dir {data_dir}")


@net_app.command("status")
def status(data_dir: Path = typer.Option(DEFAULT_NET_DIR, help="The network's directory.")) -> None:
    """Heights and app hashes of every node."""
    network = _load(data_dir)
    _print_status(network, network_status(network))


@net_app.command("down")
def down(data_dir: Path = typer.Option(DEFAULT_NET_DIR, help="The network's directory.")) -> None:
    """Stop every node's processes (the data stays; `net up` resumes the chain)."""
    network = _load(data_dir)
    stop_network(network)
    console.print(f"Stopped {len(network.nodes)} nodes of {network.chain_id}.")


def _load(data_dir: Path) -> Network:
    try:
        return Network.load(data_dir)
    except NetError as exc:
        raise _fail(str(exc)) from None


def _print_status(network: Network, statuses: list[NodeStatus]) -> None:
    console.print(f"chain {network.chain_id}")
    for s in statuses:
        app_height, app_hash = _app_status(s.api_url)
        state = "running" if s.running else "stopped"
        height = "-" if s.height is None else str(s.height)
        console.print(
            f"node{s.index} {s.host:<11} {state:<8} height {height:<6} "
            f"app height {app_height:<6} app hash {app_hash}  api {s.api_url}  rpc {s.rpc_url}"
        )


def _app_status(api_url: str) -> tuple[str, str]:
    """The application's own last committed height and app hash, from its node API."""
    try:
        found = httpx.get(api_url + "/status", timeout=2).json()
        return str(found["height"]), str(found["app_hash"])
    except (httpx.HTTPError, ValueError, KeyError):
        return "-", "-"
