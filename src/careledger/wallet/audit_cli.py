"""What `careledger audit` does (cli.py stays thin): the patient's access log, each proof
checked, break-glass alerts first."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from careledger.crypto.keyfile import KeyFile
from careledger.wallet.audit import AuditClient, LoggedAccess
from careledger.wallet.break_glass import EmergencyClient
from careledger.wallet.evidence import ProofError

PROOF_FAILED_EXIT = 1


def show_log(
    patient: KeyFile, node: str, as_json: bool, rotate: bool | None, console: Console
) -> None:
    """Print the log (alerts, then entries newest first) with each entry's proof; then offer
    to rotate the scopes an ended break-glass exposed (`rotate`: True rotates, False does
    not, None asks on a terminal); exit 1 after printing if any proof failed."""
    with AuditClient(node, patient) as client:
        log = client.access_log(verify=False)
        checked = [_checked(client, access) for access in log.entries]
    emergency = EmergencyClient(node, patient)
    unrotated = emergency.ended_unrotated()
    failed = sum(1 for _, problem in checked if problem)
    if as_json:
        document = {
            "alerts": log.alerts,
            "entries": [_json(a, p) for a, p in checked],
            "ended_unrotated": unrotated,
        }
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print_alerts(log.alerts, console)
        console.print(_table(checked))
        console.print(f"{len(checked)} access(es), {len(checked) - failed} proof(s) ok")
    if unrotated:
        _offer_rotation(emergency, unrotated, rotate, console)
    if failed:
        Console(stderr=True).print(f"[red]error:[/red] {failed} entr(ies) failed their proof")
        raise typer.Exit(code=PROOF_FAILED_EXIT)


def _offer_rotation(
    emergency: EmergencyClient,
    unrotated: list[dict[str, Any]],
    rotate: bool | None,
    console: Console,
) -> None:
    """After a break-glass ended, its requester still holds keys that open what is written
    now in the scopes it exposed: new epochs (and a fresh escrow) end that."""
    scopes = sorted({s for g in unrotated for s in g["epochs"]})
    console.print(
        f"{len(unrotated)} break-glass(es) ended; whoever broke the glass still holds the keys "
        f"of {', '.join(scopes)}: rotate them (new keys for what is written from now on)."
    )
    if rotate is None:
        rotate = sys.stdin.isatty() and typer.confirm("Rotate them now?", default=True)
    if not rotate:
        console.print("Not rotated: careledger audit --rotate does it.")
        return
    rotated = emergency.rotate_after(unrotated)
    console.print(f"Rotated {', '.join(rotated)}; the emergency escrow holds the new keys.")


def _checked(client: AuditClient, access: LoggedAccess) -> tuple[LoggedAccess, str]:
    try:
        return client.prove(access), ""
    except ProofError as exc:
        return access, str(exc)


def _when(at: int) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _print_alerts(alerts: list[dict[str, Any]], console: Console) -> None:
    for row in alerts:
        alert = row.get("alert", row)
        # Every part but the label is the node's answer, the reason a practitioner's free
        # text: printed literally (as markup, "[/x]" would crash this listing).
        details = escape(
            f"by {alert.get('requester', '?')} ({alert.get('org', '?')}) for "
            f"{', '.join(map(str, alert.get('scopes', [])))}, reason: {alert.get('reason', '')!r}, "
            f"until {_when(int(alert.get('until', 0)))} (block {row.get('height', '?')})"
        )
        console.print(f"[bold red]BREAK-GLASS[/bold red] {details}")


def _table(checked: list[tuple[LoggedAccess, str]]) -> Table:
    table = Table("when (UTC)", "reader", "for", "record", "purpose", "outcome", "proof")
    for access, problem in checked:
        entry = access.entry
        table.add_row(
            _when(entry.at),
            "…" + entry.reader[-12:],
            "…" + entry.org[-12:] if entry.org else "",
            f"{entry.record[:12]}… v{entry.version}",
            entry.purpose,
            entry.outcome,
            f"FAILED: {problem}" if problem else f"proof ok (block {access.height})",
        )
    return table


def _json(access: LoggedAccess, problem: str) -> dict[str, Any]:
    return {
        "entry": access.entry.to_json(),
        "height": access.height,
        "tx": access.tx,
        "node": access.node,
        "seq": access.seq,
        "index": access.index,
        "proof": "failed: " + problem if problem else "ok",
        "block_hash": access.block.block_hash if access.block else "",
    }
