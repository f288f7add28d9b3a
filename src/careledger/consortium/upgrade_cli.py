"""`careledger consortium upgrade ...`: members plan an upgrade of the chain's rules on chain.

    propose --as ORG_KEY --node URL --name N --height H --version V
    approve --as ORG_KEY --node URL --name N --height H --version V
    cancel  --as ORG_KEY --node URL --name N
    show    --as KEY --node URL [--json]

Each of the first three signs one `upgrade/...` transaction with the organisation's key and
waits for its block. An approval names the whole plan, as agreed out of band: the chain
counts it only for a plan that says exactly that (chain/modules/upgrade). The rules and the
operator's steps: docs/chain.md (Planned upgrades), docs/operations.md, section 6.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import typer

from careledger.cli_output import DEFAULT_NODE, console, fail, load_key
from careledger.crypto.keyfile import KeyFile
from careledger.wallet.node_client import NodeClient, NodeError, Signer

upgrade_app = typer.Typer(
    help="Plan an upgrade of the chain's rules: a height, agreed by two thirds of the members.",
    no_args_is_help=True,
)

AS_OPTION = typer.Option(..., "--as", help="Your organisation's key file.")
NODE_OPTION = typer.Option(DEFAULT_NODE, "--node", help="Node API URL.")
NAME_OPTION = typer.Option(..., "--name", help="The plan's name (a-z, 0-9, '.', '_', '-').")
HEIGHT_OPTION = typer.Option(..., "--height", help="The block height the new rules start at.")
VERSION_OPTION = typer.Option(..., "--version", help="The rules version from that height on.")


@contextmanager
def _node_errors(node: str) -> Iterator[None]:
    """A node's refusal or an unreachable node as a clear error (exit 1)."""
    try:
        yield
    except NodeError as exc:
        raise fail(f"the chain refused it: {exc}") from None
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach {node}: {exc}") from None


def _send(key: KeyFile, node: str, type_: str, payload: dict[str, Any]) -> dict[str, Any]:
    client = NodeClient(node, key)
    try:
        with _node_errors(node):
            return Signer(client, key.did, key.identity).send(type_, payload)
    finally:
        client.close()


def _plan(name: str, height: int, version: int) -> dict[str, Any]:
    return {"name": name, "height": height, "version": version}


def _status(key: KeyFile, node: str) -> dict[str, Any]:
    client = NodeClient(node, key)
    try:
        with _node_errors(node):
            return {
                "height": int(client.status()["height"]),
                "upgrade": client.query("upgrade/status"),
                "history": client.query("upgrade/history"),
                "members": len(client.query("identity/members")),
            }
    finally:
        client.close()


def _say_plan(status: dict[str, Any]) -> None:
    plan = status["upgrade"]["plan"]
    if plan is None:
        console.print("No open upgrade plan.")
        return
    votes = f"{len(plan['approvals'])} of {status['members']} members approve"
    state = f"scheduled at block {plan['scheduled_at']}" if plan["scheduled_at"] else "voting"
    console.print(
        f"Plan {plan['name']}: rules version {plan['version']} from height {plan['height']}"
        f" ({state}; {votes}; proposed by {plan['proposer']} at block {plan['proposed_at']})."
    )
    if plan["cancellations"]:
        console.print(f"Votes to cancel it: {len(plan['cancellations'])}.")


@upgrade_app.command("propose")
def propose(
    as_: Path = AS_OPTION,
    node: str = NODE_OPTION,
    name: str = NAME_OPTION,
    height: int = HEIGHT_OPTION,
    version: int = VERSION_OPTION,
) -> None:
    """Propose a plan (your approval counts at once). Other members then approve it with
    the same name, height and version."""
    key = load_key(as_)
    result = _send(key, node, "upgrade/propose", _plan(name, height, version))
    console.print(f"Proposed {name} in block {result.get('height')}.")
    _say_plan(_status(key, node))


@upgrade_app.command("approve")
def approve(
    as_: Path = AS_OPTION,
    node: str = NODE_OPTION,
    name: str = NAME_OPTION,
    height: int = HEIGHT_OPTION,
    version: int = VERSION_OPTION,
) -> None:
    """Approve the open plan. Give the name, height and version you agreed: the vote counts
    only for a plan that says exactly that."""
    key = load_key(as_)
    result = _send(key, node, "upgrade/approve", _plan(name, height, version))
    console.print(f"Approved {name} in block {result.get('height')}.")
    _say_plan(_status(key, node))


@upgrade_app.command("cancel")
def cancel(as_: Path = AS_OPTION, node: str = NODE_OPTION, name: str = NAME_OPTION) -> None:
    """Vote to cancel the open plan: its proposer withdraws it alone until it is scheduled;
    a scheduled plan is cancelled by two thirds of the members."""
    key = load_key(as_)
    result = _send(key, node, "upgrade/cancel", {"name": name})
    console.print(f"Voted to cancel {name} in block {result.get('height')}.")
    _say_plan(_status(key, node))


@upgrade_app.command("show")
def show(
    as_: Path = AS_OPTION,
    node: str = NODE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
) -> None:
    """The chain's rules version, the open plan and its votes, and the applied plans."""
    status = _status(load_key(as_), node)
    if as_json:
        console.print_json(orjson.dumps(status).decode())
        return
    console.print(
        f"Height {status['height']}: the chain runs rules version {status['upgrade']['version']}."
    )
    _say_plan(status)
    for applied in status["history"]:
        console.print(
            f"Applied {applied['name']} at height {applied['height']}: rules version"
            f" {applied['from_version']} -> {applied['version']}."
        )
