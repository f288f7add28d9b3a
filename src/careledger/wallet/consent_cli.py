"""What the `careledger consent ...` commands do (cli.py stays thin)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from careledger.crypto.keyfile import KeyFile
from careledger.crypto.scopekeys import BROAD_SCOPES, SCOPES
from careledger.wallet.consent import ConsentClient
from careledger.wallet.records import RecordsClient
from careledger.wallet.refs import RecordsError


def parse_scopes(text: str) -> tuple[str, ...]:
    """`all` (the broad scopes: never `sensitive`, which must be named) or a comma list."""
    if text == "all":
        return BROAD_SCOPES
    scopes = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise RecordsError(
            f"unknown scope(s) {', '.join(unknown) or '(none)'}: choose from "
            f"{', '.join(SCOPES)} or 'all'",
            400,
        )
    return scopes


def parse_until(text: str) -> int:
    """An end date (YYYY-MM-DD: the grant ends at the end of that day, UTC) in unix seconds."""
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise RecordsError(f"--until takes a date, YYYY-MM-DD, not {text!r}", 400) from None
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
    return int(end.timestamp())


def grant(
    patient: KeyFile,
    node: str,
    grantee: str,
    action: str,
    scopes: str,
    purposes: Sequence[str],
    until: str,
    records: Sequence[str],
    console: Console,
) -> str:
    consent = ConsentClient(node, patient)
    names = [_record_name(node, patient, reference) for reference in records]
    grant_id = consent.grant(
        grantee,
        action=action,
        scopes=parse_scopes(scopes),
        purposes=tuple(purposes),
        end=parse_until(until),
        records=names,
    )
    console.print(f"Granted: {grant_id}")
    return grant_id


def _record_name(node: str, patient: KeyFile, reference: str) -> str:
    resource_type, _, resource_id = reference.partition("/")
    if not resource_type or not resource_id:
        raise RecordsError(f"a record is named Type/id, not {reference!r}", 400)
    with RecordsClient(node, patient) as client:
        return client.ref(patient.did, resource_type, resource_id).name


def revoke(patient: KeyFile, node: str, grant_id: str, console: Console) -> None:
    rotated = ConsentClient(node, patient).revoke(grant_id)
    console.print(f"Revoked {grant_id}: its holder is refused from the next block on.")
    if rotated:
        console.print(
            f"New key epochs for {', '.join(rotated)}: records written from now on cannot be "
            "opened with the keys it held."
        )


def list_grants(patient: KeyFile, node: str, console: Console) -> None:
    grants = ConsentClient(node, patient).grants()
    console.print(grants_table(grants, patient.did, int(time.time())))
    console.print(f"{len(grants)} grant(s)")


def grants_table(grants: Sequence[dict[str, Any]], patient: str, now: int) -> Table:
    """The patient's grants as a table, their state at unix time `now`, and who made each
    ("patient", or the tail of the delegate's did)."""
    table = Table("grantee", "action", "scopes", "purposes", "until", "state", "by")
    table.add_column("id (for revoke)", no_wrap=True, min_width=32)
    for g in grants:
        # `end` is exclusive: the grant's last second is end - 1, on the day it was granted until.
        until = dt.datetime.fromtimestamp(g["end"] - 1, dt.UTC).date().isoformat()
        grantor = g.get("grantor", patient)
        table.add_row(
            "…" + g["grantee"][-12:],
            g["action"],
            ",".join(g["scopes"]),
            ",".join(g.get("purposes") or []),
            until,
            _state(g, now),
            "patient" if grantor == patient else "…" + grantor[-12:],
            g["id"],
        )
    return table


def _state(grant: dict[str, Any], now: int) -> str:
    if grant["revoked_at"]:
        return f"revoked at height {grant['revoked_at']}"
    return "ended" if grant["end"] <= now else "active"
