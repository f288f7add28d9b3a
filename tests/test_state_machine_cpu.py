"""The state machine's cheaper paths per registration (session 9, the statemachine stream)
compute exactly what the plain ones did.

- A voucher's statement (bytes, digest, signature cache entry) is computed once per decoded
  transaction (`Voucher.statement`): the same bytes `voucher_bytes` signs, for the chain,
  purpose and subject asked, never another's; a voucher keeps one, of its own size.
- A batch reads ahead the rows a registration's check finds absent (its voucher's used/ row,
  the sender's key/ row), so check_batch answers from the read cache; a reused voucher is
  still refused (the row read ahead is the one the check reads).
- `SignatureCache.verify_statement` caches and forgets a voucher's signature as
  `verify_detached` does.
- `changes_hash` (one joined buffer) equals the per-piece definition of docs/chain.md, and
  overlays read through deletes and writes at every level.
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

import pytest

from careledger.chain import auth
from careledger.chain.apphash import changes_hash
from careledger.chain.codes import Code
from careledger.chain.modules.identity.keeper import IdentityKeeper
from careledger.chain.modules.identity.vouchers import (
    Voucher,
    sign_voucher,
    voucher_bytes,
)
from careledger.chain.state import Overlay
from careledger.chain.store import StateStore
from careledger.chain.tx import SignedTx, Tx, decode_tx
from careledger.crypto.hashing import sha256, sha256_hex
from careledger.crypto.keys import Identity
from nodeutil import CHAIN_ID, make_app, register_patient_tx, run_block


def test_a_voucher_statement_is_the_signed_bytes_for_exactly_the_terms_asked() -> None:
    org, patient, other = Identity.generate(), Identity.generate(), Identity.generate()
    fields = sign_voucher(org, CHAIN_ID, "register_patient", patient.did, 50)
    voucher = Voucher(fields["org"], fields["expires_at"], fields["signature"])
    for chain, purpose, subject in [
        (CHAIN_ID, "register_patient", patient.did),
        (CHAIN_ID, "register_patient", other.did),  # a thief's did: other bytes
        (CHAIN_ID, "apply_membership", patient.did),  # another act: other bytes
        ("another-chain", "register_patient", patient.did),
    ]:
        for _ in range(2):  # computed, then kept: the same either way
            statement = voucher.statement(chain, purpose, subject)
            message = voucher_bytes(chain, purpose, subject, org.did, 50)
            assert statement.message == message
            assert statement.signature == bytes.fromhex(fields["signature"])
            assert statement.digest == sha256_hex(message)
            assert statement.entry == sha256(message + statement.signature)
    with pytest.raises(ValueError):
        voucher.statement(CHAIN_ID, "register_practitioner", patient.did)  # not a voucher's
    assert voucher == Voucher(fields["org"], fields["expires_at"], fields["signature"])


def test_a_voucher_keeps_one_statement_made_for_exactly_its_terms() -> None:
    voucher = Voucher(Identity.generate().did, 10, "00" * 64)
    first, second = Identity.generate().did, Identity.generate().did
    kept = voucher.statement(CHAIN_ID, "register_patient", first)
    assert voucher.statement(CHAIN_ID, "register_patient", first) is kept  # not computed again
    other = voucher.statement(CHAIN_ID, "register_patient", second)  # other terms: computed
    assert other.message == voucher_bytes(CHAIN_ID, "register_patient", second, voucher.org, 10)
    assert voucher._kept is other  # one kept, the last
    again = voucher.statement(CHAIN_ID, "register_patient", first)
    assert again is not kept and again.message == kept.message
    # Its own bytes object, the statement's size: no 4 KiB buffer of orjson's held with it.
    assert sys.getsizeof(again.message) < len(again.message) + 64


def test_a_batch_reads_ahead_the_rows_a_registration_finds_absent(tmp_path: Path) -> None:
    org = Identity.generate()
    app = make_app(tmp_path / "s.sqlite", [org])
    patient = Identity.generate()
    raw = register_patient_tx(CHAIN_ID, patient, org)
    stx = decode_tx(raw)
    voucher = Voucher.of(stx.tx.payload)
    digest = voucher.statement(CHAIN_ID, "register_patient", patient.did).digest
    used = IdentityKeeper.full_key(f"used/{digest}")
    own_key = IdentityKeeper.full_key(f"key/{patient.signing_public.hex()}")
    assert used not in app.store.cache and own_key not in app.store.cache
    app.prepare_batch([raw], signatures=False)
    assert app.store.cache.lookup(used) is None and app.store.cache.lookup(own_key) is None
    assert set(auth.keys_read_first(stx, voucher)) >= {used, own_key}
    assert run_block(app, [raw]) == [Code.OK]
    # The block wrote both rows: the read cache, which held them as absent, holds them now
    # (a read ahead never leaves a stale absence behind), and the same registration in other
    # bytes (a new nonce) is refused.
    assert app.store.cache.lookup(used) is not None
    assert app.store.cache.lookup(own_key) is not None
    again = register_patient_tx(CHAIN_ID, patient, org, nonce=2)
    prepared = app.prepare_batch([again], signatures=False)
    assert app.check_batch(prepared)[0].code == Code.CONFLICT


def test_reading_ahead_is_only_a_hint_for_what_is_no_registration() -> None:
    org = Identity.generate()
    voucher = Voucher(org.did, 10, "00" * 64)
    stx = decode_tx(register_patient_tx(CHAIN_ID, Identity.generate(), org))
    assert len(auth.keys_read_first(stx)) == 2  # the sender's identity and nonces only
    not_a_did = Tx(CHAIN_ID, stx.tx.type, "did:key:zzz", 1, stx.tx.payload)
    hint = auth.keys_read_first(SignedTx(not_a_did, b"", b"", b""), voucher)
    assert len(hint) == 2  # a sender that is no did:key: nothing more to read, no error


def test_verify_statement_caches_and_forgets_as_verify_detached_does() -> None:
    org, patient = Identity.generate(), Identity.generate()
    raw = register_patient_tx(CHAIN_ID, patient, org)
    stx = decode_tx(raw)
    statement = Voucher.of(stx.tx.payload).statement(CHAIN_ID, "register_patient", patient.did)
    cache = auth.SignatureCache()
    assert cache.verify(stx, patient.signing_public)
    assert not cache.verify_statement(patient.signing_public, statement, carried_by=stx)
    assert statement.entry not in cache._seen  # a failure is not remembered
    assert cache.verify_statement(org.signing_public, statement, carried_by=stx)
    assert cache._seen[statement.entry] == org.signing_public
    assert cache._carried[stx.hash] == statement.entry
    cache.forget(stx)
    assert len(cache) == 0


def _changes_hash_by_definition(changes: dict[bytes, bytes | None]) -> bytes:
    """docs/chain.md's definition, one update per piece (the code before session 9)."""
    h = hashlib.sha256()
    for key in sorted(changes):
        value = changes[key]
        h.update(len(key).to_bytes(4, "big") + key)
        if value is None:
            h.update(b"\x00")
        else:
            h.update(b"\x01" + len(value).to_bytes(4, "big") + value)
    return h.digest()


def test_changes_hash_is_the_definition() -> None:
    rng = random.Random(14)
    for size in (0, 1, 2, 50, 2000):
        changes: dict[bytes, bytes | None] = {}
        for _ in range(size):
            key = rng.randbytes(rng.randint(0, 40))
            changes[key] = None if rng.random() < 0.2 else rng.randbytes(rng.randint(0, 300))
        assert changes_hash(changes) == _changes_hash_by_definition(changes)
    # The framing matters: moving a byte from key to value changes the hash.
    assert changes_hash({b"ab": b"c"}) != changes_hash({b"a": b"bc"})
    assert changes_hash({b"a": None}) != changes_hash({b"a": b""})


def test_overlays_read_through_writes_and_deletes_at_every_level(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.sqlite")
    store.commit(1, b"h" * 32, b"c" * 32, {b"kept": b"1", b"deleted-above": b"2", b"x": b"3"})
    block = Overlay(store)
    block.delete(b"deleted-above")
    block.set(b"x", b"block")
    tx = Overlay(block)
    tx.set(b"new", b"tx")
    view = Overlay(tx)
    assert view.get(b"kept") == b"1"  # from the store, through three overlays
    assert view.get(b"deleted-above") is None  # deleted two levels up
    assert view.get(b"x") == b"block" and view.get(b"new") == b"tx"
    assert view.get(b"absent") is None
    view.set(b"deleted-above", b"back")
    assert view.get(b"deleted-above") == b"back" and tx.get(b"deleted-above") is None
    # Folding a transaction's writes into the block's: the same whether or not the block
    # keeps its changed keys sorted (it does once it has been read by prefix).
    sorted_block = Overlay(store)
    sorted_block.set(b"x", b"block")
    assert [k for k, _ in sorted_block.iterate(b"")] == [b"deleted-above", b"kept", b"x"]
    sorted_block.delete(b"deleted-above")
    for target in (block, sorted_block):
        view.write_into(target)
        assert target.get(b"deleted-above") == b"back"
        assert [k for k, _ in target.iterate(b"")] == [b"deleted-above", b"kept", b"x"]
    store.close()


def test_every_registration_check_refuses_what_it_refused_before(tmp_path: Path) -> None:
    """The memoised statement is the one checked: a voucher for another did, an expired one,
    a reused one and one signed by a non-member are each refused, in check_tx and in a
    block, with the codes of issue 7."""
    org, stranger = Identity.generate(), Identity.generate()
    app = make_app(tmp_path / "s.sqlite", [org])
    patient, thief = Identity.generate(), Identity.generate()
    good = register_patient_tx(CHAIN_ID, patient, org)
    assert run_block(app, [good]) == [Code.OK]
    reused = register_patient_tx(CHAIN_ID, patient, org, nonce=2)  # registered: CONFLICT
    expired = register_patient_tx(CHAIN_ID, Identity.generate(), org, expires_at=1)
    by_stranger = register_patient_tx(CHAIN_ID, Identity.generate(), stranger)
    fields = sign_voucher(org, CHAIN_ID, "register_patient", patient.did, 100)
    stolen = _with_voucher(thief, fields)  # the patient's voucher, sent by another did
    expected = [Code.CONFLICT, Code.UNAUTHORISED, Code.UNAUTHORISED, Code.UNAUTHORISED]
    txs = [reused, expired, by_stranger, stolen]
    assert [app.check_tx(raw).code for raw in txs] == expected
    assert run_block(app, txs) == expected


def _with_voucher(sender: Identity, voucher: dict[str, object]) -> bytes:
    payload = {"encryption_key": sender.encryption_public.hex(), "voucher": voucher}
    return Tx(CHAIN_ID, "identity/register_patient", sender.did, 1, payload).sign(sender)
