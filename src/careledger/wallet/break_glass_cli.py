"""What `careledger break-glass` and `careledger consent emergency` do (cli.py stays thin)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import orjson
from rich.console import Console

from careledger.chain.modules.consent import DEFAULT_EMERGENCY_SCOPES, ETREAT
from careledger.crypto.keyfile import KeyFile
from careledger.wallet.break_glass import EmergencyClient, break_glass
from careledger.wallet.consent_cli import parse_scopes
from careledger.wallet.node_client import NodeClient
from careledger.wallet.records import RecordsClient
from careledger.wallet.refs import RecordsError


def open_emergency(
    patient: KeyFile, node: str, scopes: str, sensitive: bool, threshold: int, console: Console
) -> str:
    chosen = DEFAULT_EMERGENCY_SCOPES if scopes == "default" else parse_scopes(scopes)
    if sensitive and "sensitive" not in chosen:
        chosen = (*chosen, "sensitive")
    client = EmergencyClient(node, patient)
    escrow_id = client.open(chosen, sensitive=sensitive, threshold=threshold)
    escrow = client.escrow() or {}
    console.print(
        f"Emergency access opened to {', '.join(chosen)}: escrow {escrow_id}, "
        f"{escrow.get('threshold')} of {len(escrow.get('members', []))} member organisations "
        "must release their share for a practitioner to read them, and you will see the "
        "alert first."
    )
    return escrow_id


def break_the_glass(
    practitioner: KeyFile,
    patient: str,
    reason: str,
    scopes: str,
    seconds: int,
    nodes: Sequence[str],
    read: Sequence[str],
    console: Console,
) -> None:
    if not nodes:
        raise RecordsError("name at least one member node (--node URL)", 400)
    chosen = () if scopes == "opened" else parse_scopes(scopes)
    keys = break_glass(
        nodes[0], practitioner, patient, reason, scopes=chosen, seconds=seconds, nodes=nodes
    )
    until = dt.datetime.fromtimestamp(keys.until, dt.UTC).isoformat(timespec="seconds")
    console.print(
        f"Break-glass {keys.glass}: {', '.join(keys.scopes)} of {patient} until {until}. "
        "The patient has been alerted."
    )
    with RecordsClient(NodeClient(nodes[0]), practitioner, purpose=ETREAT, keyring=keys) as reader:
        records = [r for r in reader.records(patient) if r.get("scope") in keys.scopes]
        console.print(f"{len(records)} record(s) in those scopes.")
        for reference in read:
            resource_type, _, resource_id = reference.partition("/")
            if not resource_type or not resource_id:
                raise RecordsError(f"a record is named Type/id, not {reference!r}", 400)
            resource = reader.read(reader.ref(patient, resource_type, resource_id))
            console.print_json(orjson.dumps(resource).decode())
