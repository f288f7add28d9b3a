"""Attacks on issue 13's shortcuts (the review stream): each test performs one against the
real code and shows it refused (docs/security/13review.md)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import pytest

from careledger.chain.app import Application, BlockContext
from careledger.chain.codes import Code
from careledger.chain.modules.identity import rotation_payload
from careledger.chain.tx import Tx
from careledger.crypto.keys import Identity
from careledger.storage import legacy
from careledger.storage.blobstore import BlobStore
from careledger.storage.legacy import MAX_FILE_BYTES, LegacyLayoutError
from careledger.wallet.fhir import InvalidResource, validate_resource, validate_with_models
from careledger.wallet.fhir_fast import resource_model, surely_valid
from nodeutil import BLOCK_TIME_NS, CHAIN_ID, make_app, register_patient_tx, run_block
from test_upgrade import NEW_SOFTWARE, NEXT
from test_upgrade import Chain as UpgradeChain

# --- storage/legacy.py: converting a hostile per-file directory ----------------------------


def _legacy_dir(root: Path, name: str) -> Path:
    directory = root / name[:2] / name[2:4]
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory


def _segment_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted((root / "segments").glob("*.seg")))


def test_conversion_follows_no_linked_directory_out_of_the_store(tmp_path: Path) -> None:
    """A fan-out directory that is a link to another directory: the conversion would read
    its hash-named files into the store and delete them, and delete every other file there
    (as if they were temporaries). It refuses, and nothing outside is touched."""
    outside = tmp_path / "operator-keys"
    outside.mkdir()
    (outside / "node_key.json").write_bytes(b"the node's private key")
    data = b"a file that happens to be named by its hash"
    named = outside / hashlib.sha256(data).hexdigest()
    named.write_bytes(data)
    root = tmp_path / "blobs"
    _legacy_dir(root, "ab" * 32).rmdir()
    (root / "ab" / "ab").symlink_to(outside)

    with pytest.raises(LegacyLayoutError, match="symbolic link"):
        BlobStore(root)
    assert (outside / "node_key.json").read_bytes() == b"the node's private key"
    assert named.read_bytes() == data


def test_conversion_reads_no_linked_file(tmp_path: Path) -> None:
    """A blob file that is a link to a secret elsewhere: its target's bytes would be copied
    into a segment. Refused; the secret is in no segment."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"a secret outside the blob store")
    root = tmp_path / "blobs"
    name = hashlib.sha256(b"anything").hexdigest()
    (_legacy_dir(root, name) / name).symlink_to(secret)

    with pytest.raises(LegacyLayoutError, match="symbolic link"):
        BlobStore(root)
    assert b"a secret outside" not in _segment_bytes(root)
    assert secret.exists()


def test_conversion_deletes_no_file_that_is_not_a_temporary(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    notes = _legacy_dir(root, "cd" * 32) / "NOTES.txt"
    notes.write_bytes(b"an operator's notes")
    with pytest.raises(LegacyLayoutError, match="neither by a blob hash"):
        BlobStore(root)
    assert notes.read_bytes() == b"an operator's notes"


def test_conversion_does_not_load_a_file_larger_than_any_blob(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    name = "ef" * 32
    huge = _legacy_dir(root, name) / name
    with huge.open("wb") as file:
        file.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(LegacyLayoutError, match="larger than any blob"):
        BlobStore(root)
    assert huge.exists() and _segment_bytes(root) == b""


def test_conversion_still_converts_a_plain_directory(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    data = b"a record blob"
    digest = hashlib.sha256(data).hexdigest()
    (_legacy_dir(root, digest) / digest).write_bytes(data)
    temporary = _legacy_dir(root, digest) / f".tmp-{digest}-x1y2"
    temporary.write_bytes(b"half")
    store = BlobStore(root)
    assert store.get(digest) == data and not temporary.exists()
    assert not (root / digest[:2]).exists()


# --- wallet/fhir_fast.py: never more permissive than the models -----------------------------

LONE_SURROGATES: list[dict[str, Any]] = [
    {"resourceType": "Patient", "name": [{"family": "Smith\ud800"}]},  # string
    {"resourceType": "Patient", "name": [{"given": ["\udc80Ann"]}]},  # string in a list
    {"resourceType": "Patient", "implicitRules": "http://x/\udfff"},  # uri
]


@pytest.mark.parametrize("resource", LONE_SURROGATES)
def test_fast_check_refuses_a_lone_surrogate_as_the_models_do(resource: dict[str, Any]) -> None:
    """A str with a lone surrogate (from Python, or a JSON parser that decodes "\\ud800"
    escapes) has no UTF-8 form: the models refuse it; the fast check let it through."""
    model = resource_model(resource["resourceType"])
    with pytest.raises(InvalidResource):
        validate_with_models(resource, model)
    assert not surely_valid(resource, model)
    with pytest.raises(InvalidResource):
        validate_resource(resource)


def _extension_nested(depth: int) -> dict[str, Any]:
    extension: dict[str, Any] = {"url": "urn:x", "valueString": "x"}
    for _ in range(depth):
        extension = {"url": "urn:x", "extension": [extension]}
    return {"resourceType": "Patient", "extension": [extension]}


def _contained_nested(depth: int) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient"}
    for _ in range(depth):
        resource = {"resourceType": "Patient", "contained": [resource]}
    return resource


@pytest.mark.parametrize("resource", [_extension_nested(180), _contained_nested(170)])
def test_fast_check_leaves_deep_nesting_to_the_models(resource: dict[str, Any]) -> None:
    """The models run out of stack on a resource nested ~150 levels deep and refuse it;
    the fast check, whose recursion is shallower per level, accepted it."""
    model = resource_model("Patient")
    with pytest.raises(InvalidResource, match="nested too deeply"):
        validate_with_models(resource, model)
    assert not surely_valid(resource, model)
    with pytest.raises(InvalidResource):
        validate_resource(resource)


def test_fast_check_still_accepts_ordinary_nesting() -> None:
    assert surely_valid(_extension_nested(8), resource_model("Patient"))


# --- chain/: what a recheck reuses (decode and signature caches) ---------------------------


def _rotation_waiting(tmp_path: Path) -> tuple[Application, bytes, bytes]:
    """A patient registered; its rotation to a new key admitted, and then a transaction
    still signed by the old key admitted behind it (the mempool view does not apply a
    rotation): (app, the rotation, the waiting transaction)."""
    org, old, new = Identity.generate(), Identity.generate(), Identity.generate()
    app = make_app(tmp_path / "state.sqlite", [org])
    assert run_block(app, [register_patient_tx(CHAIN_ID, old, org)]) == [Code.OK]
    rotate = Tx(CHAIN_ID, "identity/rotate_key", old.did, 2, rotation_payload(old, new, CHAIN_ID))
    onward = rotation_payload(old, Identity.generate(), CHAIN_ID)
    waiting = Tx(CHAIN_ID, "identity/rotate_key", old.did, 3, onward).sign(old)
    assert app.check_tx(rotate.sign(old)).ok and app.check_tx(waiting).ok
    assert run_block(app, [rotate.sign(old)]) == [Code.OK]
    return app, rotate.sign(old), waiting


def test_a_recheck_refuses_a_transaction_signed_by_a_key_rotated_away_meanwhile(
    tmp_path: Path,
) -> None:
    """The waiting transaction's signature is cached (it verified under the old key): the
    recheck, the batch path and the block must look it up under the new key and refuse."""
    app, _, waiting = _rotation_waiting(tmp_path)
    assert app.check_tx(waiting, recheck=True).code == Code.BAD_SIGNATURE
    prepared = app.prepare_batch([waiting])
    prepared.verify()
    assert [r.code for r in app.check_batch(prepared)] == [Code.BAD_SIGNATURE]
    assert run_block(app, [waiting]) == [Code.BAD_SIGNATURE]


def test_a_voucher_admitted_in_a_batch_is_not_used_again_on_recheck(tmp_path: Path) -> None:
    """One voucher, two registrations of the same did (other nonces: other bytes): the
    batch admits the first and refuses the second; after a block carrying the first, a
    recheck of the second still refuses it."""
    org, patient = Identity.generate(), Identity.generate()
    app = make_app(tmp_path / "state.sqlite", [org])
    first = register_patient_tx(CHAIN_ID, patient, org, nonce=1)
    second = register_patient_tx(CHAIN_ID, patient, org, nonce=2)
    prepared = app.prepare_batch([first, second])
    prepared.verify()
    codes = [r.code for r in app.check_batch(prepared)]
    assert codes[0] == Code.OK and codes[1] != Code.OK
    assert run_block(app, [first]) == [Code.OK]
    assert not app.check_tx(second, recheck=True).ok
    assert run_block(app, [second]) != [Code.OK]


def test_two_openers_of_one_per_file_directory_do_not_trip_over_each_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node and `careledger verify` (or a backup) open the same per-file directory at
    once. The second converted and unlinked the files the first had listed, and the first
    then failed reading them (FileNotFoundError: the store did not open). The conversion
    now holds the write lock throughout: the second waits, then finds nothing to convert."""
    root = tmp_path / "blobs"
    blobs = [b"blob %d" % i for i in range(3)]
    for data in blobs:
        digest = hashlib.sha256(data).hexdigest()
        (_legacy_dir(root, digest) / digest).write_bytes(data)
    other: list[BlobStore | BaseException] = []

    def open_other() -> None:
        try:
            other.append(BlobStore(root))
        except BaseException as exc:  # reported below
            other.append(exc)

    real_read = legacy._read
    started: list[threading.Thread] = []

    def read_while_another_opens(path: Path) -> bytes:
        if not started:  # once: the other opener runs now, mid-conversion
            started.append(threading.Thread(target=open_other))
            started[0].start()
            started[0].join(timeout=3)  # it converts everything, or waits for the lock
        return real_read(path)

    monkeypatch.setattr(legacy, "_read", read_while_another_opens)
    first = BlobStore(root)
    started[0].join()
    assert isinstance(other[0], BlobStore)
    for store in (first, other[0]):
        assert sorted(store.get(hashlib.sha256(d).hexdigest()) for d in blobs) == sorted(blobs)


def test_nothing_decoded_under_the_old_rules_outlives_the_switch(tmp_path: Path) -> None:
    """check_tx runs between finalize_block and commit (CometBFT's mempool connection is
    separate): a transaction decoded in that window, under the old rules, must not be
    carried into the first block of the new ones from the decode cache."""
    chain = UpgradeChain(tmp_path)
    chain.restart(NEW_SOFTWARE)
    plan = chain.schedule()
    chain.until(plan["height"] - 1)
    app = chain.app
    app.finalize_block(BlockContext(plan["height"], BLOCK_TIME_NS + plan["height"]), [])
    late = register_patient_tx(CHAIN_ID, Identity.generate(), chain.members[0])
    assert app.check_tx(late).ok and len(app._decoder.cache) == 1  # in the window
    app.commit()
    assert app.rules_version == NEXT
    assert app._decoder.cache.get(late) is None  # decoded again, under the new rules
    assert app.check_tx(late, recheck=True).ok


def test_a_batch_decoded_before_the_switch_is_decoded_again_after_it(tmp_path: Path) -> None:
    """The solo intake reads batches ahead, across blocks: a batch prepared under the old
    rules and checked after the block that switched them must not put its old decodings back
    into the cache (the next block would execute them)."""
    chain = UpgradeChain(tmp_path)
    chain.restart(NEW_SOFTWARE)
    plan = chain.schedule()
    chain.until(plan["height"] - 1)
    app = chain.app
    late = register_patient_tx(CHAIN_ID, Identity.generate(), chain.members[0])
    batch = app.prepare_batch([late])  # read ahead, under the old rules
    old_decoding = batch.decoded[0]
    app.finalize_block(BlockContext(plan["height"], BLOCK_TIME_NS + plan["height"]), [])
    app.commit()
    assert app.rules_version == NEXT
    assert [r.ok for r in app.check_batch(batch)] == [True]
    kept = app._decoder.cache.get(late)
    assert kept is not None and kept is not old_decoding  # decoded again, under the new rules
