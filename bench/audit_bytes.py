"""On-chain bytes per access entry (issue 9): one signed `audit/record_batch` of 1,000
entries, in three shapes, and the state rows the chain keeps for them.

  distinct patients  every entry a different patient's record (the worst case: each entry
                     brings a 58-byte did and a 32-hex record prefix into the tables)
  ten patients       distinct records of ten patients (a clinic's morning)
  one record         the same record read again and again (the best case: the tables hold
                     one patient, one reader, one organisation, one record)

The transaction is the wire form (RFC 8785 body and signature) that every validator stores
in its blocks; a batch above the transaction bound (64 KiB) is split by the node
(`entries_fitting`), and the figure says how many entries one transaction holds. The state
the chain keeps per entry is measured on a real node's state by `bench.audited_read` (the
chain takes only entries of anchored records, which these made-up entries are not).

Run: .venv/bin/python -m bench.audit_bytes
"""

from __future__ import annotations

import os

from careledger.chain.modules.audit import AccessEntry, encode_batch, entries_fitting
from careledger.chain.tx import MAX_TX_BYTES, Tx
from careledger.crypto.keys import Identity

CHAIN_ID = "careledger-bench"
ENTRIES = 1_000
T = 1_800_000_000  # unix seconds of the entries and the block


def shaped(shape: str, reader: str, org: str) -> list[AccessEntry]:
    count = {"distinct": ENTRIES, "ten": 10, "one": 1}[shape]
    patients = [Identity.generate().did for _ in range(count)]
    entries = []
    for i in range(ENTRIES):
        patient = patients[i % len(patients)]
        record = "ab" * 32 if shape == "one" else os.urandom(32).hex()
        outcome = "denied" if i % 4 == 0 else "grant"
        entries.append(AccessEntry(patient, record, 1 + i % 3, reader, org, "TREAT", outcome, T))
    return entries


def main() -> None:
    node, reader, org = (Identity.generate() for _ in range(3))
    print(f"{ENTRIES:,} entries per batch; transaction bound {MAX_TX_BYTES:,} bytes")
    for shape, label in (
        ("distinct", "distinct patients"),
        ("ten", "ten patients"),
        ("one", "one record"),
    ):
        entries = shaped(shape, reader.did, org.did)
        payload = encode_batch(node.did, 1, entries)
        wire = len(Tx(CHAIN_ID, "audit/record_batch", node.did, 1, payload).sign(node))
        fitting = entries_fitting(node.did, 1, entries)
        print(
            f"{label:18} {wire / ENTRIES:6.1f} bytes/entry on the wire ({wire:,} bytes);"
            f" {fitting:,} entries per transaction"
        )


if __name__ == "__main__":
    main()
