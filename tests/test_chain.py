"""The state machine: determinism, rejections with their own codes, atomic failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from careledger.chain.app import BlockContext
from careledger.chain.apphash import changes_hash
from careledger.chain.codes import Code
from careledger.chain.modules.identity import rotation_payload
from careledger.chain.modules.records import scope_key_payload
from careledger.chain.tx import MAX_TX_BYTES, SIGNATURE_BYTES, Tx
from careledger.crypto.keys import Identity
from nodeutil import (
    CHAIN_ID,
    make_app,
    practitioner_payload,
    register_patient_tx,
    run_block,
)


def register(patient: Identity, org: Identity, nonce: int = 1, chain_id: str = CHAIN_ID) -> bytes:
    return register_patient_tx(chain_id, patient, org, nonce)


def test_two_state_machines_applying_the_same_blocks_agree_at_every_height(tmp_path: Path) -> None:
    org = Identity.generate()
    a = make_app(tmp_path / "a.sqlite", [org])
    b = make_app(tmp_path / "b.sqlite", [org])
    assert a.info().last_app_hash == b.info().last_app_hash
    patients = [Identity.generate() for _ in range(12)]
    for block in range(4):
        txs = [register(p, org) for p in patients[block * 3 : block * 3 + 3]]
        run_block(a, txs)
        run_block(b, txs)
        assert a.info() == b.info()
        assert a.info().last_height == block + 1


def test_a_different_transaction_order_gives_a_different_app_hash(tmp_path: Path) -> None:
    org = Identity.generate()
    doctor, patient = Identity.generate(), Identity.generate()
    reg_doctor = Tx(
        CHAIN_ID,
        "identity/register_practitioner",
        org.did,
        1,
        practitioner_payload(CHAIN_ID, org.did, doctor),
    ).sign(org)
    # The doctor's own transaction only succeeds once the organisation has registered it.
    rotate = Tx(
        CHAIN_ID,
        "identity/rotate_key",
        doctor.did,
        1,
        rotation_payload(doctor, Identity.generate(), CHAIN_ID),
    ).sign(doctor)
    a = make_app(tmp_path / "a.sqlite", [org])
    b = make_app(tmp_path / "b.sqlite", [org])
    assert run_block(a, [reg_doctor, rotate, register(patient, org)]) == [0, 0, 0]
    assert run_block(b, [rotate, reg_doctor, register(patient, org)]) == [
        Code.UNKNOWN_SENDER,
        0,
        0,
    ]
    assert a.info().last_app_hash != b.info().last_app_hash


def test_each_kind_of_bad_transaction_is_rejected_with_its_own_code(tmp_path: Path) -> None:
    org = Identity.generate()
    app = make_app(tmp_path / "s.sqlite", [org])
    patient, other = Identity.generate(), Identity.generate()
    good = register(patient, org)
    assert run_block(app, [good]) == [Code.OK]

    body = good[:-SIGNATURE_BYTES]
    cases = {
        "replay": (good, Code.REPLAY),
        "old nonce": (register(patient, org, nonce=1), Code.REPLAY),
        "bad signature": (body + other.sign(body), Code.BAD_SIGNATURE),
        "wrong chain": (register(other, org, chain_id="another-chain"), Code.WRONG_CHAIN),
        "unknown type": (
            Tx(CHAIN_ID, "identity/make_me_admin", other.did, 1, {}).sign(other),
            Code.UNKNOWN_TYPE,
        ),
        "oversized": (b"x" * (MAX_TX_BYTES + 1), Code.OVERSIZED),
        "not json": (b"{garbage" + b"\x00" * 64, Code.MALFORMED),
        "not canonical": (
            b'{"nonce":1,"chain_id":"test-chain"}' + b"\x00" * 64,
            Code.MALFORMED,
        ),
        "too short": (b"{}", Code.MALFORMED),
        "bad payload": (
            Tx(CHAIN_ID, "identity/register_patient", other.did, 1, {"encryption_key": "zz"}).sign(
                other
            ),
            Code.INVALID_PAYLOAD,
        ),
    }
    codes = {}
    for name, (raw, expected) in cases.items():
        result = app.check_tx(raw)
        assert result.code == expected, (name, result)
        assert result.log, name
        codes[name] = result.code
    distinct = {Code.REPLAY, Code.BAD_SIGNATURE, Code.WRONG_CHAIN, Code.UNKNOWN_TYPE}
    distinct |= {Code.OVERSIZED, Code.MALFORMED, Code.INVALID_PAYLOAD}
    assert set(codes.values()) == distinct

    # The same bytes forced into a block fail there too, are recorded, and change nothing:
    # not a row of the state (no nonce either: each fails before its nonce is spent).
    rows_before = dict(app.store.all_rows())
    raws = [raw for raw, _ in cases.values()]
    height = app.info().last_height + 1
    result = app.finalize_block(BlockContext(height, 2_000_000_000_000_000_000), raws)
    assert [r.code for r in result.tx_results] == [code for _, code in cases.values()]
    app.commit()
    assert dict(app.store.all_rows()) == rows_before
    *_, (last_height, _, block_changes) = app.store.commits()
    assert (last_height, block_changes) == (height, changes_hash({}))


def test_a_failed_transaction_spends_its_nonce_and_writes_nothing_else(tmp_path: Path) -> None:
    org = Identity.generate()
    app = make_app(tmp_path / "s.sqlite", [org])
    stranger = Identity.generate()  # a registered patient, not a member
    assert run_block(app, [register(stranger, org)]) == [Code.OK]
    before = dict(app.store.all_rows())
    doctor = Identity.generate()
    payload = practitioner_payload(CHAIN_ID, stranger.did, doctor)
    not_a_member = Tx(CHAIN_ID, "identity/register_practitioner", stranger.did, 2, payload).sign(
        stranger
    )
    assert run_block(app, [not_a_member]) == [Code.UNAUTHORISED]
    rows = dict(app.store.all_rows())
    assert list(rows) == sorted(k for k in rows)
    written = [k for k in rows if rows[k] != before.get(k)]
    assert written == [b"auth/nonce/" + stranger.did.encode()]
    assert app.check_tx(not_a_member).code == Code.REPLAY


def test_mempool_refuses_a_second_transaction_with_the_same_nonce(tmp_path: Path) -> None:
    org = Identity.generate()
    app = make_app(tmp_path / "s.sqlite", [org])
    patient = Identity.generate()
    assert app.check_tx(register(patient, org, nonce=5)).code == Code.OK
    assert app.check_tx(register(patient, org, nonce=5)).code == Code.REPLAY
    scope = scope_key_payload(patient, CHAIN_ID, "clinical", 1, "55" * 32)
    behind = Tx(CHAIN_ID, "records/publish_scope_key", patient.did, 4, scope).sign(patient)
    assert app.check_tx(behind).code == Code.OK  # unused, within the window


def test_queries_answer_bad_input_with_codes(tmp_path: Path) -> None:
    app = make_app(tmp_path / "s.sqlite", [Identity.generate()])
    assert app.query("identity/members").code == Code.OK
    assert app.query("nowhere/nothing").code == Code.NOT_FOUND
    assert app.query("identity/identity", b"[1]").code == Code.MALFORMED
    assert app.query("identity/identity", b"{oops").code == Code.MALFORMED
    assert app.query("identity/identity", b'{"did":"x","extra":1}').code == Code.MALFORMED


def test_init_chain_twice_with_the_same_genesis_is_a_no_op(tmp_path: Path) -> None:
    org = Identity.generate()
    app = make_app(tmp_path / "s.sqlite", [org])
    first = app.info()
    again = make_app(tmp_path / "s.sqlite", [org])
    assert again.info() == first


@pytest.mark.parametrize("field", ["chain_id", "type", "sender", "nonce", "payload"])
def test_envelope_missing_a_field_is_malformed(tmp_path: Path, field: str) -> None:
    from careledger.crypto.canonical import canonical_bytes

    app = make_app(tmp_path / "s.sqlite", [Identity.generate()])
    patient = Identity.generate()
    body = {"chain_id": CHAIN_ID, "type": "identity/register_patient", "sender": patient.did}
    body |= {"nonce": 1, "payload": {"encryption_key": "44" * 32}}
    del body[field]
    raw = canonical_bytes(body)
    assert app.check_tx(raw + patient.sign(raw)).code == Code.MALFORMED


def test_nonces_may_arrive_out_of_order_but_never_twice(tmp_path: Path) -> None:
    from careledger.chain.auth import NONCE_WINDOW

    org = Identity.generate()
    app = make_app(tmp_path / "s.sqlite", [org])

    def practitioner(nonce: int) -> bytes:
        payload = practitioner_payload(CHAIN_ID, org.did, Identity.generate())
        return Tx(CHAIN_ID, "identity/register_practitioner", org.did, nonce, payload).sign(org)

    late, early = practitioner(5), practitioner(3)
    assert [app.check_tx(late).code, app.check_tx(early).code] == [Code.OK, Code.OK]
    assert app.check_tx(early).code == Code.REPLAY
    assert run_block(app, [late, early, early]) == [Code.OK, Code.OK, Code.REPLAY]
    assert run_block(app, [practitioner(4), practitioner(3)]) == [Code.OK, Code.REPLAY]

    far = NONCE_WINDOW + 10
    assert run_block(app, [practitioner(far), practitioner(9)]) == [Code.OK, Code.REPLAY]
    assert run_block(app, [practitioner(far - 1)]) == [Code.OK]
    assert app.query("auth/nonce", f'{{"did":"{org.did}"}}'.encode()).value.endswith(
        f'"last_nonce":{far}}}'.encode()
    )


def test_a_store_written_under_other_rules_is_refused(tmp_path: Path) -> None:
    import sqlite3

    from careledger.chain.app import Application, IncompatibleState
    from careledger.chain.store import StateStore

    path = tmp_path / "s.sqlite"
    make_app(path, [Identity.generate()]).store.close()
    Application(StateStore(path)).store.close()  # same rules: accepted
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '0' WHERE key = 'state_machine_version'")
    with pytest.raises(IncompatibleState, match="version 0"):
        Application(StateStore(path))


# --- nonces: bounded jumps, constant cost ---------------------------------------------------


def doomed_probe(org: Identity, nonce: int) -> bytes:
    """A signed transaction from a registered member whose message fails (NOT_FOUND) in the
    block after its nonce is spent: it exercises only the nonce rules."""
    payload = {"did": Identity.generate().did}
    return Tx(CHAIN_ID, "identity/deregister_practitioner", org.did, nonce, payload).sign(org)


def test_a_nonce_jump_to_the_top_is_refused_without_raising_or_memory(tmp_path: Path) -> None:
    """Issue 7, attack 1: nonce 1 then MAX_NONCE - 1 made check_tx raise MemoryError, and a
    block holding both made finalize_block raise on every validator, on replay too."""
    import tracemalloc

    from careledger.chain.app import Application
    from careledger.chain.auth import MODULE, last_nonce
    from careledger.chain.state import KV
    from careledger.chain.store import StateStore
    from careledger.chain.tx import MAX_NONCE

    org = Identity.generate()
    path = tmp_path / "a.sqlite"
    app, other = make_app(path, [org]), make_app(tmp_path / "b.sqlite", [org])
    block = [doomed_probe(org, 1), doomed_probe(org, MAX_NONCE - 1)]
    ctx = BlockContext(1, 1_800_000_000_000_000_001)

    tracemalloc.start()
    try:
        checked = [app.check_tx(raw).code for raw in block]
        first = app.finalize_block(ctx, block)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert checked == [Code.OK, Code.NONCE_TOO_FAR]
    assert [r.code for r in first.tx_results] == [Code.NOT_FOUND, Code.NONCE_TOO_FAR]
    assert peak < 4 * 1024 * 1024

    # The node stops before committing, restarts on the same file and replays the block.
    app.store.close()
    restarted = Application(StateStore(path))
    replayed = restarted.finalize_block(ctx, block)
    restarted.commit()
    independent = other.finalize_block(ctx, block)
    other.commit()
    assert replayed.tx_results == first.tx_results == independent.tx_results
    assert replayed.app_hash == first.app_hash == independent.app_hash
    assert last_nonce(KV(restarted.store, MODULE), org.did) == 1


def test_the_forward_jump_is_bounded_also_for_a_first_nonce(tmp_path: Path) -> None:
    from careledger.chain.auth import MAX_NONCE_JUMP

    org = Identity.generate()
    app = make_app(tmp_path / "s.sqlite", [org])
    assert app.check_tx(doomed_probe(org, MAX_NONCE_JUMP + 1)).code == Code.NONCE_TOO_FAR
    assert run_block(app, [doomed_probe(org, MAX_NONCE_JUMP + 1)]) == [Code.NONCE_TOO_FAR]
    assert run_block(app, [doomed_probe(org, MAX_NONCE_JUMP)]) == [Code.NOT_FOUND]
    top = 2 * MAX_NONCE_JUMP
    assert run_block(app, [doomed_probe(org, top + 1), doomed_probe(org, top)]) == [
        Code.NONCE_TOO_FAR,
        Code.NOT_FOUND,
    ]
    result = app.check_tx(doomed_probe(org, top + MAX_NONCE_JUMP + 1))
    assert (result.code, str(MAX_NONCE_JUMP) in result.log) == (Code.NONCE_TOO_FAR, True)


def test_the_window_never_outgrows_its_bits_and_a_long_jump_clears_it(tmp_path: Path) -> None:
    import random

    from careledger.chain.auth import MAX_NONCE_JUMP, NONCE_WINDOW, spend_nonce
    from careledger.chain.codes import TxFailure
    from careledger.chain.state import KV, Overlay
    from careledger.chain.store import StateStore

    kv = KV(Overlay(StateStore(tmp_path / "s.sqlite")), "auth")
    rng = random.Random(7)
    nonce = 0
    for _ in range(300):
        nonce += rng.choice([1, 2, NONCE_WINDOW - 1, NONCE_WINDOW, NONCE_WINDOW + 1, 5000])
        nonce += rng.choice([0, 0, 0, MAX_NONCE_JUMP - 5001])
        spend_nonce(kv, "did:key:zTest", nonce)
        assert int(kv.get("nonce/did:key:zTest")["seen"], 16).bit_length() <= NONCE_WINDOW

    spend_nonce(kv, "did:key:zJump", 10)
    spend_nonce(kv, "did:key:zJump", 10 + NONCE_WINDOW)  # a whole window on: only it is seen
    assert kv.get("nonce/did:key:zJump")["seen"] == "1"
    spend_nonce(kv, "did:key:zJump", 11)  # the oldest nonce still inside the window, unused
    for refused_nonce in (9, 10, 11):  # below the window, or used
        with pytest.raises(TxFailure) as refused:
            spend_nonce(kv, "did:key:zJump", refused_nonce)
        assert refused.value.code == Code.REPLAY
