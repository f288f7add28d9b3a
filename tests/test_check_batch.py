"""check_tx's faster paths answer exactly as check_tx does (issue 13, the chain stream).

- A batch whose signatures were verified ahead in another thread (`prepare_batch`, `verify`,
  `check_batch`: the solo producer's intake) gets check_tx's answers, code and log, for every
  kind of transaction, whether or not the verification ran; what is verified ahead is tied to
  the exact bytes and the key that verified them.
- A recheck reuses the decoding and the signatures, never the state: a voucher that expired
  or a nonce a block spent is refused on recheck.
- The intake keeps the submission order in the mempool and the block.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from careledger.chain.app import Application, TxResult
from careledger.chain.codes import Code
from careledger.chain.store import StateStore
from careledger.chain.tx import Tx
from careledger.consensus.solo.blockstore import BlockStore
from careledger.consensus.solo.intake import INLINE_BATCH, INTAKE_BATCH
from careledger.consensus.solo.producer import SoloProducer
from careledger.crypto.keys import Identity
from nodeutil import CHAIN_ID, make_app, register_patient_tx, run_block


def mixed_batch(org: Identity) -> list[bytes]:
    """Every way a transaction can fare in check_tx, in one batch."""
    patients = [Identity.generate() for _ in range(6)]
    good = [register_patient_tx(CHAIN_ID, p, org) for p in patients[:3]]
    forged = bytearray(register_patient_tx(CHAIN_ID, patients[3], org))
    forged[-1] ^= 1  # the envelope's signature no longer verifies
    stranger = Identity.generate()  # vouches, but is no member
    not_vouched = register_patient_tx(CHAIN_ID, patients[4], stranger)
    unregistered = Tx(CHAIN_ID, "records/publish_scope_key", patients[5].did, 1, {}).sign(
        patients[5]
    )
    other_chain = register_patient_tx("another-chain", patients[5], org)
    same_body_other_signature = good[0][:-64] + os.urandom(64)
    return [
        *good,
        bytes(forged),
        not_vouched,
        unregistered,
        other_chain,
        b"not a transaction at all" * 4,
        good[1],  # a replay inside the batch
        same_body_other_signature,  # the bytes verified ahead are not these
        register_patient_tx(CHAIN_ID, patients[5], org, nonce=2),
    ]


def answers(results: list[TxResult]) -> list[tuple[int, str]]:
    return [(int(r.code), r.log) for r in results]


def test_a_batch_verified_ahead_answers_as_check_tx_does_whether_or_not_it_verified(
    tmp_path: Path,
) -> None:
    org = Identity.generate()
    txs = mixed_batch(org)
    one_by_one, ahead, not_verified = (
        make_app(tmp_path / f"{name}.sqlite", [org]) for name in ("one", "ahead", "none")
    )
    expected = answers([one_by_one.check_tx(raw) for raw in txs])
    prepared = ahead.prepare_batch(txs)
    prepared.verify()  # as the verifier process does
    assert answers(ahead.check_batch(prepared)) == expected
    assert answers(not_verified.check_batch(not_verified.prepare_batch(txs))) == expected
    codes = [code for code, _ in expected]
    assert codes[:3] == [Code.OK] * 3 and codes[-1] == Code.OK
    assert Code.BAD_SIGNATURE in codes and Code.UNAUTHORISED in codes and Code.REPLAY in codes
    assert codes[-2] == Code.BAD_SIGNATURE  # same body, other signature: not the verified bytes
    # The mempool views agree too: the same block gives the same app hash on all three.
    for app in (one_by_one, ahead, not_verified):
        run_block(app, txs)
    hashes = {app.info().last_app_hash for app in (one_by_one, ahead, not_verified)}
    assert len(hashes) == 1


def test_only_signatures_that_verified_enter_the_cache_under_the_key_that_verified_them(
    tmp_path: Path,
) -> None:
    org = Identity.generate()
    app = make_app(tmp_path / "s.sqlite", [org])
    patient = Identity.generate()
    good = register_patient_tx(CHAIN_ID, patient, org)
    forged = good[:-64] + bytes(64)
    prepared = app.prepare_batch([forged])
    prepared.verify()
    assert prepared.valid is not None and False in prepared.valid
    assert answers(app.check_batch(prepared))[0][0] == Code.BAD_SIGNATURE
    forged_entry = prepared.checks[0].entry
    assert forged_entry not in app._signatures._seen  # nothing of the forgery is remembered
    # (its voucher is genuine, verified ahead and remembered under the member's key only)
    assert set(app._signatures._seen.values()) <= {org.signing_public}
    prepared = app.prepare_batch([good])
    prepared.verify()
    assert app.check_batch(prepared)[0].ok
    assert len(app._signatures) == 2  # the envelope's and the voucher's, each under its key
    entry = prepared.checks[0]
    assert app._signatures._seen[entry.entry] == patient.signing_public


def test_a_recheck_refuses_a_registration_whose_voucher_expired_meanwhile(tmp_path: Path) -> None:
    org = Identity.generate()
    app = make_app(tmp_path / "s.sqlite", [org])
    late = register_patient_tx(CHAIN_ID, Identity.generate(), org, expires_at=2)
    assert app.check_tx(late).ok  # for height 1
    assert len(app._decoder.cache) == 1 and len(app._signatures) == 2  # decoded and verified once
    run_block(app, [])
    assert app.check_tx(late, recheck=True).ok  # height 2: still valid
    run_block(app, [])
    refused = app.check_tx(late, recheck=True)  # height 3: the state says expired
    assert refused.code == Code.UNAUTHORISED and "expired" in refused.log


def test_a_recheck_refuses_a_transaction_whose_nonce_a_block_spent(tmp_path: Path) -> None:
    org = Identity.generate()
    app = make_app(tmp_path / "s.sqlite", [org])
    patient = Identity.generate()
    waiting = register_patient_tx(CHAIN_ID, patient, org)
    assert app.check_tx(waiting).ok
    # Another transaction of the same sender and nonce (same patient, another voucher
    # expiry: other bytes) reaches a block first, as it may through another node.
    rival = register_patient_tx(CHAIN_ID, patient, org, expires_at=10**6)
    assert run_block(app, [rival]) == [Code.OK]
    assert app.check_tx(waiting, recheck=True).code == Code.REPLAY


@pytest.mark.parametrize("verify_ahead", [False, True])
def test_the_intake_keeps_the_submission_order_in_the_block(
    tmp_path: Path, verify_ahead: bool
) -> None:
    org = Identity.generate()
    app = make_app(tmp_path / "s.sqlite", [org])
    count = INTAKE_BATCH * 2 + INLINE_BATCH + 3  # several batches, the pipeline's two stages
    txs = [register_patient_tx(CHAIN_ID, Identity.generate(), org) for _ in range(count)]
    blocks = BlockStore(tmp_path / "blocks.sqlite")
    producer = SoloProducer(
        app, blocks, block_interval=60, max_block_txs=count, verify_ahead=verify_ahead
    )

    async def scenario() -> list[int]:
        running = asyncio.create_task(producer.run())
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(producer.submit(raw, wait=True) for raw in txs)), timeout=120
        )
        running.cancel()
        return [o.height or 0 for o in outcomes]

    try:
        assert asyncio.run(scenario()) == [1] * count  # one block, made when all were in
        assert [t.raw for t in blocks.block_txs(1)] == txs
    finally:
        blocks.close()


def test_prefetch_reads_what_get_reads(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.sqlite")
    store.commit(1, b"a" * 32, b"c" * 32, {b"k/1": b"one", b"k/2": b"two"})
    fresh = StateStore(tmp_path / "s.sqlite")
    fresh.prefetch([b"k/1", b"k/absent", b"k/2", b"k/1"])
    assert {k for k in (b"k/1", b"k/2", b"k/absent") if k in fresh.cache} == {
        b"k/1",
        b"k/2",
        b"k/absent",
    }
    assert [fresh.get(k) for k in (b"k/1", b"k/2", b"k/absent")] == [b"one", b"two", None]
    store.close()
    fresh.close()


def test_an_application_still_checks_one_by_one(tmp_path: Path) -> None:
    """check_tx alone (CometBFT's CheckTx) keeps working without the batch path."""
    org = Identity.generate()
    app: Application = make_app(tmp_path / "s.sqlite", [org])
    assert app.check_tx(register_patient_tx(CHAIN_ID, Identity.generate(), org)).ok
