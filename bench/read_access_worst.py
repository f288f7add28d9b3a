"""The worst case of one `records/read_access` query (issue 8): how long it takes, and how many
grant rows it reads, when the patient has given the reader's organisation the most live grants
the chain allows and none of them applies.

A state machine on a real SQLite file, in process (no node: the query alone). One patient
writes `--records` records and gives the reader's organisation `--grants` read grants; the
organisation then asks `records/read_access` about every record's blob in one query (the
node's batch fetch does exactly this, up to 5,000 hashes). Two kinds of grant, each the worst
for a different step of the decision:

  purpose  grants for research only (HRESCH); the query asks for treatment: each grant is
           read and fails at its last check
  records  grants for treatment naming 100 other records each (the most a grant may name):
           each grant fails at the record check, after a search of its list

Then the same query through the solo producer (`ConsensusDriver.query`, as the node asks it)
while a coroutine ticks every millisecond on the event loop: its longest pause is how long
the node could neither make blocks nor serve its API.

Run: .venv/bin/python -m bench.read_access_worst [--grants 1000] [--records 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

from bench.common import machine
from careledger.chain.app import Application, BlockContext
from careledger.chain.genesis import Genesis
from careledger.chain.modules.consent.messages import MAX_GRANT_RECORDS
from careledger.chain.modules.identity.vouchers import sign_voucher
from careledger.chain.store import StateStore
from careledger.chain.tx import Tx
from careledger.consensus.solo.blockstore import BlockStore
from careledger.consensus.solo.producer import SoloProducer
from careledger.crypto.keys import Identity
from careledger.crypto.scopekeys import SCOPES, derive_scope_key
from careledger.crypto.statements import scope_key_statement

CHAIN_ID = "bench-read-access"
BLOCK_TXS = 500
FAR_FUTURE = 2**39


class CountingStore:
    """The committed state store, counting what a query reads of the consent grants."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self.grant_reads = 0
        self.index_scans = 0

    def get(self, key: bytes) -> bytes | None:
        if key.startswith(b"consent/grant/"):
            self.grant_reads += 1
        return self._store.get(key)

    def iterate(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        if prefix.startswith(b"consent/pg/"):
            self.index_scans += 1
        return self._store.iterate(prefix, start)

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


class Chain:
    """One patient, one organisation, blocks committed in process."""

    def __init__(self, path: Path) -> None:
        self.org, self.patient = Identity.generate(), Identity.generate()
        self.app = Application(StateStore(path))
        genesis = Genesis.for_organisations(CHAIN_ID, [("Org", self.org)])
        self.app.init_chain(genesis)
        self._nonce = 1
        voucher = sign_voucher(self.org, CHAIN_ID, "register_patient", self.patient.did, 10**9)
        payload = {"encryption_key": self.patient.encryption_public.hex(), "voucher": voucher}
        register = Tx(CHAIN_ID, "identity/register_patient", self.patient.did, 1, payload)
        self.block([register.sign(self.patient)] + [self._publish(s) for s in SCOPES])

    def _publish(self, scope: str) -> bytes:
        root = self.patient.secret("scope-keys")
        public = derive_scope_key(root, scope, 1).public_bytes.hex()
        statement = scope_key_statement(CHAIN_ID, self.patient.did, scope, 1, public)
        signature = self.patient.sign(statement).hex()
        payload = {"scope": scope, "epoch": 1, "public_key": public, "signature": signature}
        return self.tx("records/publish_scope_key", payload)

    def tx(self, type_: str, payload: dict[str, object]) -> bytes:
        self._nonce += 1
        return Tx(CHAIN_ID, type_, self.patient.did, self._nonce, payload).sign(self.patient)

    def block(self, txs: list[bytes]) -> None:
        height = self.app.info().last_height + 1
        results = self.app.finalize_block(BlockContext(height, 1_800_000_000 * 10**9), txs)
        self.app.commit()
        failed = [r.log for r in results.tx_results if r.code]
        if failed:
            raise RuntimeError(f"{len(failed)} transactions failed: {failed[0]}")

    def in_blocks(self, txs: Iterator[bytes]) -> None:
        batch: list[bytes] = []
        for tx in txs:
            batch.append(tx)
            if len(batch) == BLOCK_TXS:
                self.block(batch)
                batch = []
        if batch:
            self.block(batch)

    def anchors(self, count: int) -> list[str]:
        hashes = [secrets.token_hex(32) for _ in range(count)]
        self.in_blocks(self._anchor(h) for h in hashes)
        return hashes

    def _anchor(self, blob_hash: str) -> bytes:
        payload = {
            "patient": self.patient.did,
            "resource_type": "Observation",
            "record": secrets.token_hex(32),
            "version": 1,
            "blob_hash": blob_hash,
            "commitment": secrets.token_hex(32),
            "recipients": ["scope/clinical/1"],
        }
        return self.tx("records/anchor", payload)

    def grants(self, count: int, kind: str) -> None:
        self.in_blocks(self._grant(kind) for _ in range(count))

    def _grant(self, kind: str) -> bytes:
        payload: dict[str, object] = {
            "id": secrets.token_hex(16),
            "patient": self.patient.did,
            "grantee": self.org.did,
            "action": "read",
            "scopes": ["clinical"],
            "purposes": ["HRESCH"] if kind == "purpose" else ["TREAT"],
            "start": 0,
            "end": FAR_FUTURE,
        }
        if kind == "records":
            payload["records"] = [secrets.token_hex(32) for _ in range(MAX_GRANT_RECORDS)]
        return self.tx("consent/grant", payload)

    def _query(self, hashes: list[str]) -> bytes:
        query = {"reader": self.org.did, "purpose": "TREAT", "at": 1_800_000_000}
        return orjson.dumps({**query, "hashes": hashes})

    def read_access(self, hashes: list[str]) -> tuple[float, CountingStore, str]:
        """The query alone, on this thread, counting what it reads of the grants."""
        counting = CountingStore(self.app.store)
        self.app.store = counting  # type: ignore[assignment]
        started = time.perf_counter()
        try:
            found = self.app.query("records/read_access", self._query(hashes))
        finally:
            self.app.store = counting._store
        seconds = time.perf_counter() - started
        answers = orjson.loads(found.value)
        assert len(answers) == len(hashes) and all(a["status"] == 403 for a in answers)
        return seconds, counting, answers[0]["reason"]

    def loop_pause(self, hashes: list[str], blocks: Path) -> float:
        """The event loop's longest pause while the solo producer answers the query."""
        producer = SoloProducer(self.app, BlockStore(blocks))
        return asyncio.run(_longest_pause(producer, self._query(hashes)))


async def _longest_pause(producer: SoloProducer, query: bytes) -> float:
    longest, answered = 0.0, False

    async def tick() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not answered:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            longest, last = max(longest, now - last), now

    ticking = asyncio.create_task(tick())
    await asyncio.sleep(0.05)
    found = await producer.query("records/read_access", query)
    answered = True
    await ticking
    assert found.code == 0, found.log
    return longest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grants", type=int, default=1000)
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--kind", choices=("purpose", "records"), action="append")
    args = parser.parse_args()
    print(machine())
    print(
        "| grants | hashes | kind | query s | grant reads | index scans | loop's longest pause s |"
    )
    print("|---|---|---|---|---|---|---|")
    for kind in args.kind or ["purpose", "records"]:
        with tempfile.TemporaryDirectory() as tmp:
            chain = Chain(Path(tmp) / "state.sqlite")
            hashes = chain.anchors(args.records)
            chain.grants(args.grants, kind)
            seconds, counts, reason = chain.read_access(hashes)
            pause = chain.loop_pause(hashes, Path(tmp) / "blocks.sqlite")
            chain.app.store.close()
        print(
            f"| {args.grants:,} | {len(hashes):,} | {kind} | {seconds:.2f} "
            f"| {counts.grant_reads:,} | {counts.index_scans:,} | {pause:.3f} |"
        )
        print(f"  first answer: {reason}")


if __name__ == "__main__":
    main()
