"""Write portal/tests/fixtures/audit-log.json: a patient's access log as a real `careledger up
--demo` node answers it (reads by the patient, by Northside Clinic under its grant, and a denied
one by Demo Hospital), with each batch's `GET /txs` answer and block hash, for the page's proof
checks (tests/audit.test.ts). Run against a running demo node:

    PYTHONPATH=src .venv/bin/python portal/tools/audit_fixture.py http://127.0.0.1:PORT DATA_DIR
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from careledger.chain.modules.audit.entries import AccessEntry
from careledger.crypto.keyfile import KeyFile
from careledger.wallet.node_client import NodeClient


def read(client: NodeClient, blobs: list[str], purpose: str) -> None:
    """A signed blob fetch (the node journals one access entry per blob)."""
    path = f"/blobs/fetch?purpose={purpose}" if purpose else "/blobs/fetch"
    response = client.http.post(path, json={"hashes": blobs}, auth=client.auth)
    response.raise_for_status()


def main(url: str, data: Path, out: Path) -> None:
    patient = KeyFile.load(data / "demo" / "patient-1.json")
    northside = KeyFile.load(data / "demo" / "northside-clinic.json")
    hospital = KeyFile.load(data / "keys" / "organisation.json")
    node = NodeClient(url, patient)
    records = node.query("records/records", patient=patient.did)
    blobs = [r["latest"]["blob_hash"] for r in records if r["latest"]][:3]
    read(NodeClient(url, patient), blobs, "")
    read(NodeClient(url, northside), blobs, "TREAT")
    read(NodeClient(url, hospital), blobs[:1], "HRESCH")  # no grant: denied
    time.sleep(2)  # the batcher commits every 0.25 s
    log = node.query("audit/log", patient=patient.did, limit="20")
    txs = {row["tx"]: node.transaction(row["tx"]) for row in log["entries"]}
    heights = {row["height"] for row in log["entries"]}
    blocks = {str(h): node.block(h)["hash"] for h in heights}
    leaves = [AccessEntry.from_json(row["entry"]).leaf().hex() for row in log["entries"]]
    fixture = {
        "patient": patient.did,
        "log": log,
        "leaves": leaves,  # Python's AccessEntry.leaf() of each log entry, in order
        "txs": txs,
        "block_hashes": blocks,
    }
    out.write_text(json.dumps(fixture, indent=1) + "\n")


if __name__ == "__main__":
    fixture = Path(__file__).parent.parent / "tests" / "fixtures" / "audit-log.json"
    main(sys.argv[1], Path(sys.argv[2]), fixture)
