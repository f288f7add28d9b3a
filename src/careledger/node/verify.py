"""`careledger verify`: re-check a data directory from genesis and name the first fault.

It re-checks every block header's hash and link, every block's transactions against its
Merkle root, replays every transaction (so every signature is verified again) into a fresh
state machine, compares each height's app hash with the header and the state store, and
finally compares every state row. Any single changed byte in a block or a state row shows up.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

import orjson

from careledger.chain.app import STATE_MACHINE_VERSION, Application, BlockContext
from careledger.chain.block import BlockHeader, data_hash
from careledger.chain.modules.records import RecordsKeeper
from careledger.chain.state import KV
from careledger.chain.store import StateStore
from careledger.consensus.solo.blockstore import BlockStore
from careledger.node.datadir import DataDir
from careledger.node.erasure import ORPHAN_BOUND
from careledger.storage.blobstore import BlobCorrupted, BlobNotFound, BlobStore


class Fault(Exception):
    """The first inconsistency found, said in words."""


@dataclass(frozen=True)
class Report:
    blocks: int
    transactions: int
    state_rows: int
    blobs: int = 0
    erased_blobs: int = 0
    orphan_blobs: int = 0


def verify_data_dir(root: Path) -> Report:
    data = DataDir(root)
    if not data.exists():
        raise Fault(f"{root} is not a CareLedger data directory (no genesis.json)")
    store, blocks = StateStore(data.state), BlockStore(data.blocks)
    try:
        rules = store.get_meta("state_machine_version")
        if rules != str(STATE_MACHINE_VERSION):
            raise Fault(
                f"the state was written under state machine version {rules or 'unknown'}; "
                f"this code replays version {STATE_MACHINE_VERSION}"
            )
        with tempfile.TemporaryDirectory() as scratch:
            replica = Application(StateStore(Path(scratch) / "replay.sqlite"))
            try:
                genesis_hash = replica.init_chain(data.load_genesis())
            except ValueError as exc:
                raise Fault(f"genesis.json: {exc}") from None
            if store.app_hash_at(0) != genesis_hash:
                raise Fault("genesis: state store's genesis app hash differs from genesis.json")
            txs = _replay_blocks(blocks, store, replica)
            rows = _compare_state(store, replica.store)
            replica.store.close()
        checked, erased, orphans = _check_blobs(store, BlobStore(data.blobs))
        return Report(blocks.height(), txs, rows, checked, erased, orphans)
    finally:
        blocks.close()
        store.close()


def _replay_blocks(blocks: BlockStore, store: StateStore, replica: Application) -> int:
    previous_hash = b""
    count = 0
    for expected_height, (height, stored_hash, raw_header) in enumerate(
        blocks.raw_headers(), start=1
    ):
        where = f"block {height}"
        try:
            header = BlockHeader.from_json(orjson.loads(raw_header))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise Fault(f"{where}: header is unreadable (altered)") from None
        if header.height != expected_height or height != expected_height:
            raise Fault(f"{where}: expected height {expected_height}")
        if header.hash() != stored_hash:
            raise Fault(f"{where}: header does not match its stored hash (header altered)")
        if header.previous_hash != previous_hash.hex():
            raise Fault(f"{where}: previous_hash does not link to block {header.height - 1}")
        if header.chain_id != replica.chain_id:
            raise Fault(f"{where}: chain id {header.chain_id!r} is not the genesis chain id")
        stored = blocks.block_txs(header.height)
        txs = [t.raw for t in stored]
        if len(txs) != header.num_txs or data_hash(txs).hex() != header.data_hash:
            raise Fault(f"{where}: transactions do not match the header's data_hash (altered)")
        result = replica.finalize_block(BlockContext(header.height, header.time_ns), txs)
        for t, r in zip(stored, result.tx_results, strict=True):
            if t.code != r.code:
                raise Fault(f"{where}, tx {t.index}: stored result {t.code}, replay gives {r.code}")
        if result.app_hash.hex() != header.app_hash:
            raise Fault(f"{where}: replay gives a different app hash than the header")
        if store.app_hash_at(header.height) != result.app_hash:
            raise Fault(f"{where}: state store's app hash differs from the replay")
        replica.commit()
        previous_hash = stored_hash
        count += len(txs)
    if store.last_commit().height != blocks.height():
        state_height = store.last_commit().height
        raise Fault(f"state store is at height {state_height}, blocks end at {blocks.height()}")
    return count


def _compare_state(store: StateStore, replayed: StateStore) -> int:
    rows = 0
    for mine, theirs in zip_longest(store.all_rows(), replayed.all_rows()):
        if mine != theirs:
            key = (mine or theirs or (b"", b""))[0]
            raise Fault(f"state row {key.decode(errors='replace')!r} differs from the replay")
        rows += 1
    return rows


def _check_blobs(store: StateStore, blobs: BlobStore) -> tuple[int, int, int]:
    """Every anchored blob of a live record is stored and hashes to its anchor; erased
    records' blobs are gone. Returns (checked, erased, orphans: stored but never anchored,
    younger than the bound)."""
    keeper = RecordsKeeper(KV(store, "records"))
    checked = erased = 0
    anchored: set[str] = set()
    for digest, where in keeper.blobs():
        anchored.add(digest)
        record = keeper.record(where["patient"], where["record"]) or {}
        name = f"record {where['record'][:16]} version {where['version']}"
        if record.get("erased_at"):
            if blobs.has(digest):
                raise Fault(f"blob {digest} of erased {name} is still on disk")
            erased += 1
            continue
        try:
            blobs.get(digest)
        except BlobNotFound:
            raise Fault(f"blob {digest} of {name} is missing") from None
        except BlobCorrupted:
            raise Fault(f"blob {digest} of {name} does not match its anchor's hash") from None
        checked += 1
    return checked, erased, _count_young_orphans(blobs, anchored)


def _count_young_orphans(blobs: BlobStore, anchored: set[str]) -> int:
    """Orphans (stored, never anchored) younger than ORPHAN_BOUND; an older one is a fault:
    it holds wrapped keys past the bound within which a running node deletes it."""
    oldest_allowed = time.time() - ORPHAN_BOUND
    young = 0
    for digest, stored_at in blobs.with_stored_at():
        if digest in anchored:
            continue
        if stored_at < oldest_allowed:
            hours = (time.time() - stored_at) / 3600
            raise Fault(
                f"blob {digest} was never anchored and was stored {hours:.1f} h ago: orphans"
                f" are deleted within {ORPHAN_BOUND / 3600:.2f} h (a running node expires it)"
            )
        young += 1
    return young
