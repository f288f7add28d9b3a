"""Content-addressed blob store, on real files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from careledger.storage.blobstore import (
    BlobCorrupted,
    BlobNotFound,
    BlobStore,
    InvalidBlobHash,
)


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


def test_put_get_has_under_its_sha256(store: BlobStore) -> None:
    data = b"ciphertext bytes" * 100
    digest = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.get(digest) == data
    assert store.has(digest) and digest in store
    assert store.path_of(digest) == store.root / digest[:2] / digest[2:4] / digest


def test_put_is_idempotent_and_leaves_no_temporary(store: BlobStore) -> None:
    digest = store.put(b"same")
    assert store.put(b"same") == digest
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert [p.name for p in files] == [digest]


def test_put_many_and_iteration(store: BlobStore) -> None:
    blobs = [os.urandom(64) for _ in range(300)]
    digests = store.put_many(blobs)
    assert sorted(store) == sorted(set(digests))
    assert all(store.get(d) == b for d, b in zip(digests, blobs, strict=True))


def test_a_flipped_byte_on_disk_is_reported(store: BlobStore) -> None:
    digest = store.put(b"x" * 1000)
    path = store.path_of(digest)
    damaged = bytearray(path.read_bytes())
    damaged[500] ^= 0x40
    os.chmod(path, 0o600)
    path.write_bytes(bytes(damaged))
    with pytest.raises(BlobCorrupted, match=digest):
        store.get(digest)


def test_delete_is_idempotent_and_final(store: BlobStore) -> None:
    digest = store.put(b"to be erased")
    assert store.delete(digest) is True
    assert store.delete(digest) is False
    assert not store.has(digest) and not store.path_of(digest).exists()
    with pytest.raises(BlobNotFound):
        store.get(digest)


def test_missing_blob_is_not_found(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        store.get("0" * 64)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "../" + "a" * 61,
        "a" * 63,
        "a" * 65,
        "A" * 64,
        "/etc/passwd",
        "aa/bb/" + "a" * 58,
        "g" * 64,
        "a" * 63 + "\n",
    ],
)
def test_bad_hashes_are_refused(store: BlobStore, bad: str) -> None:
    for operation in (store.get, store.has, store.delete, store.path_of):
        with pytest.raises(InvalidBlobHash):
            operation(bad)
    assert bad not in store


def test_stale_temporaries_are_ignored_and_removed(store: BlobStore) -> None:
    digest = store.put(b"kept")
    leftover = store.path_of(digest).parent / ".tmp-crashed"
    leftover.write_bytes(b"half a blob")
    assert list(store) == [digest]
    assert store.remove_stale_temporaries() == 1
    assert not leftover.exists() and store.get(digest) == b"kept"


def test_reopening_the_store_sees_the_blobs(tmp_path: Path) -> None:
    digest = BlobStore(tmp_path / "b").put(b"durable")
    assert BlobStore(tmp_path / "b").get(digest) == b"durable"
