"""`careledger verify`: re-check a node's data from genesis and name the first fault.

It replays every block's transactions (so every signature is verified again) into a fresh
state machine, compares each block's results and app hash with what the blocks and the
state store say, then compares every state row and checks every record blob. The fault
names the block height, the state row's key or the blob's hash.

Two kinds of directory:
- an embedded node's data directory (`careledger up`): blocks from our own block store,
  whose headers are hash-linked and checked here;
- a network node's directory (`net/node0`, or its `app/`): blocks from CometBFT's block store,
  read with `cometbft inspect` while the node is stopped (docs/network.md, "Verifying a
  node"). Each block's app hash is compared with the app hash this node's application
  answered (kept in CometBFT's block results) and with the one the validators signed in the
  next block's header.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

import orjson

from careledger.chain.app import (
    STATE_MACHINE_VERSION,
    Application,
    BlockContext,
    UpgradeRequired,
)
from careledger.chain.block import BlockHeader, data_hash, parse_time_ns
from careledger.chain.modules.records import RecordsKeeper
from careledger.chain.results import outcomes_hash, results_hash
from careledger.chain.state import KV
from careledger.chain.store import StateStore
from careledger.consensus.cometbft.binary import CometBftNotFound
from careledger.consensus.cometbft.inspect import InspectedStore, InspectError
from careledger.consensus.cometbft.rpc import RpcError
from careledger.consensus.solo.blockstore import BlockStore, IncompatibleBlocks
from careledger.node.datadir import DataDir
from careledger.node.erasure import ORPHAN_BOUND
from careledger.node.netconfig import APP_DIR, COMETBFT_HOME, is_network_node
from careledger.node.rules import supported_rules_versions
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
    unapplied_blocks: int = 0  # network: stored by CometBFT, replayed into the state at start


@dataclass
class BlockToCheck:
    """One block as a block store keeps it, already checked against its own header."""

    height: int
    chain_id: str
    time_ns: int
    txs: list[bytes]
    stored_codes: list[int]  # each transaction's result as the block store keeps it
    # Where else the app hash after this block is written, and what it says there.
    app_hash_claims: list[tuple[str, bytes]] = field(default_factory=list)
    # Where the root of this block's results is written (a header), and what it says there.
    results_claims: list[tuple[str, bytes]] = field(default_factory=list)


def verify_data_dir(root: Path) -> Report:
    """Verify an embedded node's data directory or a network node's directory."""
    if is_network_node(root):
        return verify_network_node(root)
    if root.name == APP_DIR and is_network_node(root.parent):
        return verify_network_node(root.parent)
    return verify_solo_node(root)


def verify_solo_node(root: Path) -> Report:
    data = _data_dir(root)
    try:
        blocks = BlockStore(data.blocks)
    except IncompatibleBlocks as exc:
        raise Fault(str(exc)) from None
    store = StateStore(data.state)
    try:
        height = blocks.height()
        if store.last_commit().height != height:
            state_height = store.last_commit().height
            raise Fault(f"state store is at height {state_height}, blocks end at {height}")
        return _verify(data, store, _solo_blocks(blocks), height)
    finally:
        blocks.close()
        store.close()


def verify_network_node(node_dir: Path) -> Report:
    data = _data_dir(node_dir / APP_DIR)
    store = StateStore(data.state)
    try:
        with InspectedStore(node_dir / COMETBFT_HOME) as comet:
            stored = comet.height()
            applied = store.last_commit().height
            if applied > stored:
                raise Fault(
                    f"state store is at height {applied}, CometBFT's blocks end at {stored}"
                )
            report = _verify(data, store, _cometbft_blocks(comet, applied, stored), applied)
    except (InspectError, CometBftNotFound) as exc:
        raise Fault(str(exc)) from None
    except RpcError as exc:
        raise Fault(f"CometBFT's block store: {exc}") from None
    finally:
        store.close()
    return dataclasses.replace(report, unapplied_blocks=stored - applied)


def _data_dir(root: Path) -> DataDir:
    data = DataDir(root)
    if not data.exists():
        raise Fault(f"{root} is not a CareLedger data directory (no genesis.json)")
    return data


def _verify(data: DataDir, store: StateStore, blocks: Iterator[BlockToCheck], top: int) -> Report:
    rules = store.get_meta("state_machine_version")
    supported = supported_rules_versions()
    if rules not in {str(v) for v in supported}:
        raise Fault(
            f"the state was written under state machine version {rules or 'unknown'}; "
            f"this code replays version {STATE_MACHINE_VERSION}"
        )
    with tempfile.TemporaryDirectory() as scratch:
        replica = Application(
            StateStore(Path(scratch) / "replay.sqlite"), supported_versions=supported
        )
        try:
            try:
                genesis_hash = replica.init_chain(data.load_genesis())
            except ValueError as exc:
                raise Fault(f"genesis.json: {exc}") from None
            if store.app_hash_at(0) != genesis_hash:
                raise Fault("genesis: state store's genesis app hash differs from genesis.json")
            txs = _replay(blocks, store, replica)
            rows = _compare_state(store, replica.store)
        finally:
            replica.store.close()
    with contextlib.closing(BlobStore(data.blobs)) as blobs:
        checked, erased, orphans = _check_blobs(store, blobs)
    return Report(top, txs, rows, checked, erased, orphans)


def _replay(blocks: Iterator[BlockToCheck], store: StateStore, replica: Application) -> int:
    """Replay each block; its results and app hash must match every record of them."""
    count = 0
    for block in blocks:
        where = f"block {block.height}"
        if block.chain_id != replica.chain_id:
            raise Fault(f"{where}: chain id {block.chain_id!r} is not the genesis chain id")
        try:
            result = replica.finalize_block(BlockContext(block.height, block.time_ns), block.txs)
        except UpgradeRequired as exc:  # the chain moved to rules this software lacks
            raise Fault(f"{where}: {exc}") from None
        replayed = [int(r.code) for r in result.tx_results]
        for index, (kept, got) in enumerate(zip(block.stored_codes, replayed, strict=True)):
            if kept != got:
                raise Fault(f"{where}, tx {index}: stored result {kept}, replay gives {got}")
        for claim, app_hash in block.app_hash_claims:
            if app_hash != result.app_hash:
                raise Fault(f"{where}: replay gives a different app hash than {claim}")
        for claim, root in block.results_claims:
            if outcomes_hash(result.tx_results) != root:
                raise Fault(f"{where}: replay gives other results than {claim}'s results_hash")
        if store.app_hash_at(block.height) != result.app_hash:
            raise Fault(f"{where}: state store's app hash differs from the replay")
        replica.commit()
        count += len(block.txs)
    return count


def _solo_blocks(blocks: BlockStore) -> Iterator[BlockToCheck]:
    """The embedded node's blocks, each header checked against its hash, link and txs."""
    previous_hash = b""
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
        stored = blocks.block_txs(header.height)
        txs = [t.raw for t in stored]
        if len(txs) != header.num_txs or data_hash(txs).hex() != header.data_hash:
            raise Fault(f"{where}: transactions do not match the header's data_hash (altered)")
        if results_hash([t.outcome for t in stored]).hex() != header.results_hash:
            raise Fault(f"{where}: stored results do not match the header's results_hash")
        yield BlockToCheck(
            header.height,
            header.chain_id,
            header.time_ns,
            txs,
            [t.code for t in stored],
            [("the header", bytes.fromhex(header.app_hash))],
            [("the header", bytes.fromhex(header.results_hash))],
        )
        previous_hash = stored_hash


def _cometbft_blocks(comet: InspectedStore, applied: int, stored: int) -> Iterator[BlockToCheck]:
    """CometBFT's blocks 1..applied, each checked against its own header's data_hash.

    Under CometBFT a header carries the app hash *before* it, so block h's app hash is read
    from block h+1's header (signed by the validators), when h+1 is stored.
    """
    following = comet.block(1) if applied >= 1 else None
    for height in range(1, applied + 1):
        found = following
        assert found is not None
        following = comet.block(height + 1) if height < stored else None
        header = found["block"]["header"]
        where = f"block {height}"
        if int(header["height"]) != height:
            raise Fault(f"{where}: CometBFT's store holds height {header['height']} there")
        txs = [base64.b64decode(t) for t in found["block"]["data"]["txs"] or []]
        if data_hash(txs).hex() != header["data_hash"].lower():
            raise Fault(f"{where}: transactions do not match the header's data_hash (altered)")
        results = comet.block_results(height)
        outcomes = results.get("txs_results") or []
        if len(outcomes) != len(txs):
            raise Fault(f"{where}: {len(outcomes)} stored results for {len(txs)} transactions")
        claims = [("CometBFT's block results", base64.b64decode(results.get("app_hash") or ""))]
        results_claims = []
        if following is not None:
            next_header = following["block"]["header"]
            claims.append(
                (f"the header of block {height + 1}", bytes.fromhex(next_header["app_hash"]))
            )
            results_claims.append(
                (
                    f"the header of block {height + 1}",
                    bytes.fromhex(next_header["last_results_hash"]),
                )
            )
        yield BlockToCheck(
            height,
            str(header["chain_id"]),
            parse_time_ns(header["time"]),
            txs,
            [int(r.get("code") or 0) for r in outcomes],
            claims,
            results_claims,
        )


def _compare_state(store: StateStore, replayed: StateStore) -> int:
    """Walk both stores' rows in key order; name the first key that differs."""
    rows = 0
    for mine, theirs in zip_longest(store.all_rows(), replayed.all_rows()):
        if mine == theirs:
            rows += 1
            continue
        if theirs is None or (mine is not None and mine[0] < theirs[0]):
            raise Fault(f"state row {_key(mine)} is not in the replay (added or renamed)")
        if mine is None or theirs[0] < mine[0]:
            raise Fault(f"state row {_key(theirs)} is missing from the state store")
        raise Fault(f"state row {_key(mine)} has a value that differs from the replay")
    return rows


def _key(row: tuple[bytes, bytes] | None) -> str:
    assert row is not None
    return repr(row[0].decode(errors="replace"))


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
    """Orphans (stored, never anchored) younger than ORPHAN_BOUND, each re-hashed too (so
    that every byte of every segment that names a blob is checked); an older one is a fault:
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
        _check_orphan(blobs, digest)
        young += 1
    return young


def _check_orphan(blobs: BlobStore, digest: str) -> None:
    try:
        blobs.get(digest)
    except BlobNotFound:
        pass  # expired or erased while we looked
    except BlobCorrupted:
        raise Fault(f"blob {digest} (never anchored) does not match its hash") from None
