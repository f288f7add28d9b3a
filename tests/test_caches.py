"""The state machine's caches stay within their bounds, whatever is sent (issue 7, the house).

The decode cache could hold 100,000 entries of up to 64 KiB (about 6.5 GB), the state read
cache was cleared whole when full (after holding 500,000 values of 4 KiB each: orjson's
buffers), and the signature cache kept every transaction ever checked. Each is now bounded by
bytes or entries and evicts the least recently used first; these tests insert more than the
bound, through the real Application and StateStore where the cache is reached that way.
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from careledger.chain import auth
from careledger.chain.app import BlockContext, DecodeCache
from careledger.chain.auth import SignatureCache
from careledger.chain.codes import Code
from careledger.chain.state import encode_value
from careledger.chain.store import ReadCache, StateStore
from careledger.chain.tx import MAX_TX_BYTES, SIGNATURE_BYTES, Tx, decode_tx
from careledger.crypto.keys import Identity, verify_signature
from nodeutil import BLOCK_TIME_NS, CHAIN_ID, make_app, register_patient_tx, run_block


def registration(patient: Identity, org: Identity) -> bytes:
    """A patient's self-registration with founding member `org`'s voucher."""
    return register_patient_tx(CHAIN_ID, patient, org)


def test_the_read_cache_keeps_to_its_bytes_and_evicts_the_least_recently_used() -> None:
    cache = ReadCache(max_bytes=64 * 1024)
    for i in range(5000):
        cache.put(f"key/{i}".encode(), b"v" * (i % 700) if i % 3 else None)
        assert cache.bytes <= cache.max_bytes
        if i == 10:
            hot = cache[b"key/1"]
        if i > 10 and i % 50 == 0:
            assert cache[b"key/1"] == hot  # read often: never the least recently used
    assert b"key/1" in cache and b"key/2" not in cache
    assert 0 < len(cache) < 5000


def test_the_state_store_cache_stays_bounded_through_reads_and_commits(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.sqlite", cache_bytes=256 * 1024)
    for block in range(1, 6):
        changes = {f"k/{block}/{i}".encode(): os.urandom(200) for i in range(2000)}
        store.commit(block, os.urandom(32), os.urandom(32), changes)
        assert store.cache.bytes <= store.cache.max_bytes
    for i in range(20_000):  # absent keys are cached too: a flood of lookups
        assert store.get(f"absent/{i}".encode()) is None
    assert store.cache.bytes <= store.cache.max_bytes
    assert store.get(b"k/1/0") is not None  # evicted values are read again from SQLite


def test_state_values_cost_their_own_size_not_orjsons_buffer() -> None:
    value = {"did": "did:key:z6Mk" + "x" * 40, "kind": "patient", "active": True}
    tracemalloc.start()
    try:
        kept = [encode_value(value) for _ in range(1000)]
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 1000 * (len(kept[0]) + 200)  # orjson's own result held 4 KiB each


def test_a_flood_of_unsigned_64_kib_transactions_leaves_the_decode_cache_empty(
    tmp_path: Path,
) -> None:
    """The 6.5 GB attack: well-formed envelopes that fail check_tx are not kept."""
    app = make_app(tmp_path / "s.sqlite", [Identity.generate()])
    sender = Identity.generate()
    for nonce in range(1, 201):
        filler = "a" * (MAX_TX_BYTES - 400)
        body = Tx(CHAIN_ID, "identity/register_patient", sender.did, nonce, {"x": filler}).body()
        raw = body + b"\0" * SIGNATURE_BYTES  # not signed
        assert len(raw) > 60_000
        assert app.check_tx(raw).code in (Code.INVALID_PAYLOAD, Code.BAD_SIGNATURE)
    assert len(app._decoder.cache) == 0 and app._decoder.cache.bytes == 0


def test_the_decode_cache_keeps_admitted_transactions_within_its_bounds(tmp_path: Path) -> None:
    org = Identity.generate()
    app = make_app(tmp_path / "s.sqlite", [org])
    app._decoder.cache = DecodeCache(max_entries=50, max_bytes=40 * 1024)
    txs = [registration(Identity.generate(), org) for _ in range(120)]
    for raw in txs:
        assert app.check_tx(raw).code == Code.OK
        assert len(app._decoder.cache) <= 50 and app._decoder.cache.bytes <= 40 * 1024
    assert len(app._decoder.cache) > 0
    assert run_block(app, txs) == [Code.OK] * 120  # evicted ones are decoded again
    assert len(app._decoder.cache) == 0 and app._decoder.cache.bytes == 0  # the block took its own


def test_the_signature_cache_keeps_to_its_capacity_and_blocks_forget_theirs(
    tmp_path: Path,
) -> None:
    cache = SignatureCache(capacity=100)
    signer = Identity.generate()
    for nonce in range(1, 301):
        stx = decode_tx(registration_by(signer, nonce))
        assert cache.verify(stx, signer.signing_public)
        voucher = f"voucher {nonce}".encode()  # a detached signature the tx carries
        assert cache.verify_detached(
            signer.signing_public, signer.sign(voucher), voucher, carried_by=stx
        )
        assert len(cache) <= 100
        assert set(cache._carried) <= set(cache._seen)  # ties leave with their transaction
    org = Identity.generate()
    app = make_app(tmp_path / "s.sqlite", [org])
    txs = [registration(Identity.generate(), org) for _ in range(30)]
    assert all(app.check_tx(raw).ok for raw in txs)
    assert len(app._signatures) == 60  # each registration's signature and its voucher's
    assert run_block(app, txs) == [Code.OK] * 30
    assert len(app._signatures) == 0  # the block forgets both


def test_a_check_tx_between_a_block_and_its_commit_verifies_nothing_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CometBFT's mempool connection may CheckTx a transaction between FinalizeBlock and
    Commit when it reached this node in another validator's proposal first: the block has
    verified and decoded it, and it keeps both until commit (it forgot them at once, and
    the CheckTx verified both signatures again: 578 of 12,000 on node0 under load)."""
    org = Identity.generate()
    app = make_app(tmp_path / "s.sqlite", [org])
    raw = registration(Identity.generate(), org)
    verified: list[bytes] = []

    def counting(key: bytes, signature: bytes, message: bytes) -> bool:
        verified.append(signature)
        return verify_signature(key, signature, message)

    monkeypatch.setattr(auth, "verify_signature", counting)
    result = app.finalize_block(BlockContext(1, BLOCK_TIME_NS + 1), [raw])
    assert [r.code for r in result.tx_results] == [Code.OK] and len(verified) == 2
    assert app.check_tx(raw).ok  # the mempool view has not seen the block yet
    assert len(verified) == 2  # each signature verified once on this node
    app.commit()
    assert len(app._signatures) == 0 and len(app._decoder.cache) == 0  # the commit forgets them


def registration_by(signer: Identity, nonce: int) -> bytes:
    payload = {"encryption_key": signer.encryption_public.hex()}
    return Tx(CHAIN_ID, "identity/register_patient", signer.did, nonce, payload).sign(signer)
