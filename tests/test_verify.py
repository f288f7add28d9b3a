"""`careledger verify`: passes on an honest data directory, names any single changed byte."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from careledger.chain.modules.audit import AccessEntry, encode_batch
from careledger.chain.modules.records import scope_key_payload
from careledger.chain.tx import Tx
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.node.builder import Solo, build_node
from careledger.node.datadir import DataDir, initialise
from careledger.storage.blobstore import BlobStore
from careledger.storage.segments import Location
from nodeutil import careledger_command, practitioner_payload, register_patient_tx, run_verify


@pytest.fixture(scope="module")
def honest_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with a few blocks of real transactions, made by the embedded node:
    registrations, and the node's audit batches of reads of the patients' records."""
    root = tmp_path_factory.mktemp("honest") / "data"
    org = initialise(root)
    node_key = KeyFile.load(DataDir(root).node_key)
    node = build_node(root, Solo())
    chain_id = node.app.chain_id

    async def fill() -> None:
        for block in range(4):
            patients = [Identity.generate() for _ in range(5)]
            for patient in patients:
                raw = register_patient_tx(chain_id, patient, org.identity)
                await node.consensus.submit(raw, wait=False)
                if block:  # the record its batch's entry names, its blob stored
                    blob = node.blob_store.put(b"ciphertext of " + patient.did.encode())
                    for raw in own_record(chain_id, patient, blob):
                        await node.consensus.submit(raw, wait=False)
            if block:
                batch = encode_batch(node_key.did, block, [read_of(p, org.did) for p in patients])
                audit = Tx(chain_id, "audit/record_batch", node_key.did, block, batch)
                await node.consensus.submit(audit.sign(node_key.identity), wait=False)
            reg = Tx(
                chain_id,
                "identity/register_practitioner",
                org.did,
                block + 1,
                practitioner_payload(chain_id, org.did, Identity.generate()),
            ).sign(org.identity)
            await node.consensus.submit(reg, wait=False)
            node.consensus.produce_block()

    asyncio.run(fill())
    node.close()
    return root


def own_record(chain_id: str, patient: Identity, blob: str) -> list[bytes]:
    """The patient publishes a scope key and writes record "ab..." (version 1)."""
    key = scope_key_payload(patient, chain_id, "diagnostics", 1, "22" * 32)
    anchor = {
        "patient": patient.did,
        "resource_type": "Observation",
        "record": "ab" * 32,
        "version": 1,
        "blob_hash": blob,
        "commitment": "ab" * 32,
        "recipients": ["scope/diagnostics/1"],
    }
    return [
        Tx(chain_id, "records/publish_scope_key", patient.did, 2, key).sign(patient),
        Tx(chain_id, "records/anchor", patient.did, 3, anchor).sign(patient),
    ]


def read_of(patient: Identity, org: str) -> AccessEntry:
    """An access entry: the organisation read one of the patient's records (block time)."""
    at = int(time.time())
    return AccessEntry(patient.did, "ab" * 32, 1, org, org, "TREAT", "denied", at)


def tampered_copy(honest: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(honest, copy)
    return copy


PRIMARY_KEYS = {"blocks": "height", "txs": "height, idx", "state": "key", "commits": "height"}


@dataclass(frozen=True)
class Flipped:
    """One bit of one byte changed in one row's column."""

    key: tuple[Any, ...]  # the row's primary key
    before: bytes
    after: bytes


def flip_byte(db_path: Path, table: str, column: str, rng: random.Random) -> Flipped:
    keys = PRIMARY_KEYS[table]
    where = " AND ".join(f"{k.strip()} = ?" for k in keys.split(","))
    db = sqlite3.connect(db_path)
    *key, value = rng.choice(db.execute(f"SELECT {keys}, {column} FROM {table}").fetchall())
    data = bytearray(value)
    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    db.execute(f"UPDATE {table} SET {column} = ? WHERE {where}", (bytes(data), *key))
    db.commit()
    db.close()
    return Flipped(tuple(key), bytes(value), bytes(data))


def row_name(key: bytes) -> str:
    return repr(key.decode(errors="replace"))


def expected_fault(table: str, column: str, flipped: Flipped) -> str:
    """The start of the fault verify must report: the changed block's height or row's key."""
    if table in ("blocks", "txs"):
        return f"block {flipped.key[0]}: "
    if table == "commits":
        height = flipped.key[0]
        return "genesis: " if height == 0 else f"block {height}: state store's app hash"
    if column == "value":
        return f"state row {row_name(flipped.key[0])} has a value that differs"
    # A renamed row: walking both stores in key order, the smaller of the two names shows first.
    if flipped.after < flipped.before:
        return f"state row {row_name(flipped.after)} is not in the replay"
    return f"state row {row_name(flipped.before)} is missing from the state store"


def test_verify_passes_on_an_honest_data_directory(honest_dir: Path) -> None:
    result = run_verify(honest_dir)
    assert result.returncode == 0, result.stderr
    assert "OK: 4 blocks, 57 transactions" in result.stdout
    db = sqlite3.connect(honest_dir / "state.sqlite")
    batches, logged = (
        db.execute(
            "SELECT count(*) FROM state WHERE substr(key, 1, ?) = ?", (len(p), p)
        ).fetchone()[0]
        for p in (b"audit/batch/", b"audit/log/")
    )
    db.close()
    assert (batches, logged) == (3, 15)  # every batch committed, each entry in a log


TARGETS = [
    ("blocks.sqlite", "blocks", "header"),
    ("blocks.sqlite", "blocks", "hash"),
    ("blocks.sqlite", "txs", "raw"),
    ("state.sqlite", "state", "value"),
    ("state.sqlite", "state", "key"),
    ("state.sqlite", "commits", "app_hash"),
]


@pytest.mark.parametrize(("db", "table", "column"), TARGETS)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_verify_names_the_block_or_row_of_a_single_changed_byte(
    honest_dir: Path, tmp_path: Path, db: str, table: str, column: str, seed: int
) -> None:
    root = tampered_copy(honest_dir, tmp_path)
    flipped = flip_byte(root / db, table, column, random.Random(seed))
    result = run_verify(root)
    assert result.returncode == 1, f"{table}.{column} {flipped} went unnoticed: {result.stdout}"
    expected = "verification failed: " + expected_fault(table, column, flipped)
    assert expected in result.stderr, f"{table}.{column} {flipped}: {result.stderr}"
    assert "Traceback" not in result.stderr


def test_verify_refuses_a_directory_that_is_not_a_node(tmp_path: Path) -> None:
    result = run_verify(tmp_path)
    assert result.returncode == 1
    assert "not a CareLedger data directory" in result.stderr


def test_key_file_readable_by_others_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    KeyFile("did:key:zX", "patient", Identity.generate()).save(path)
    path.chmod(0o644)
    result = subprocess.run(
        [*careledger_command(), "keys", "show", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "chmod 600" in result.stderr and "Traceback" not in result.stderr
    path.chmod(0o600)
    path.write_text('{"version": 1, "kind": "patient"}')
    result = subprocess.run(
        [*careledger_command(), "keys", "show", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "malformed" in result.stderr


def test_keys_new_then_recover_gives_the_same_did(tmp_path: Path) -> None:
    made = subprocess.run(
        [*careledger_command(), "keys", "new", "--out", str(tmp_path / "a.json")],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = made.stdout.splitlines()
    phrase = lines[lines.index("Recovery phrase (write it down; it is shown only now):") + 1]
    subprocess.run(
        [*careledger_command(), "keys", "recover", "--out", str(tmp_path / "b.json")],
        input=phrase + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    a = KeyFile.load(tmp_path / "a.json")
    b = KeyFile.load(tmp_path / "b.json")
    assert a.did == b.did
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o600


# --- blob segments (issue 13): every byte of a segment belongs to a blob verify re-hashes ---


def stored_blobs(root: Path) -> list[tuple[str, Location]]:
    with contextlib.closing(BlobStore(DataDir(root).blobs)) as store:
        found = [(d, store.locate(d)) for d in store]
    return sorted(found, key=lambda b: (b[1].path, b[1].offset))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_verify_names_the_blob_of_a_byte_flipped_anywhere_in_a_segment(
    honest_dir: Path, tmp_path: Path, seed: int
) -> None:
    root = tampered_copy(honest_dir, tmp_path)
    blobs = stored_blobs(root)
    digest, where = random.Random(seed).choice(blobs)
    at = random.Random(seed).randrange(where.length)
    with where.path.open("r+b") as segment:
        segment.seek(where.offset + at)
        byte = segment.read(1)
        segment.seek(where.offset + at)
        segment.write(bytes([byte[0] ^ 0x01]))
    result = run_verify(root)
    assert result.returncode == 1, f"byte {at} of blob {digest} went unnoticed"
    assert f"verification failed: blob {digest} " in result.stderr, result.stderr
    assert "does not match" in result.stderr


def test_verify_names_the_first_blob_a_torn_segment_lost(honest_dir: Path, tmp_path: Path) -> None:
    root = tampered_copy(honest_dir, tmp_path)
    blobs = stored_blobs(root)
    digest, where = blobs[-1]
    os.truncate(where.path, where.offset + where.length // 2)  # the disk lost the tail
    result = run_verify(root)
    assert result.returncode == 1
    assert f"verification failed: blob {digest} " in result.stderr, result.stderr


def test_verify_names_a_blob_whose_index_row_is_gone(honest_dir: Path, tmp_path: Path) -> None:
    root = tampered_copy(honest_dir, tmp_path)
    digest, _ = stored_blobs(root)[0]
    with sqlite3.connect(DataDir(root).blobs / "index.sqlite") as db:
        db.execute("DELETE FROM blobs WHERE hash = ?", (bytes.fromhex(digest),))
    result = run_verify(root)
    assert result.returncode == 1
    assert f"verification failed: blob {digest} " in result.stderr
    assert "is missing" in result.stderr
