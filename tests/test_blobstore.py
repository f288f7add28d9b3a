"""Content-addressed blob store in segment files, on real files (issue 13).

Each property of the per-file store it replaced: durable, re-hashed on read, erased for
real (no byte of the blob left in the segment), crash-safe (no half-visible blob), 0600/0700,
and a data directory of the per-file layout converted when it is opened.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blobutil import backdate, files_holding, flip_byte, raw_bytes
from careledger.storage import segments
from careledger.storage.blobstore import (
    BlobCorrupted,
    BlobNotFound,
    BlobStore,
    InvalidBlobHash,
)


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


def segment_files(store: BlobStore) -> list[Path]:
    return sorted((store.root / segments.SEGMENT_DIR).glob("*.seg"))


def test_put_get_has_under_its_sha256(store: BlobStore) -> None:
    data = b"ciphertext bytes" * 100
    digest = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.get(digest) == data
    assert store.has(digest) and digest in store
    assert store.size(digest) == len(data) and store.head(digest, 10) == data[:10]
    assert store.locate(digest).path.parent == store.root / "segments"


def test_a_batch_is_packed_in_one_segment_file(store: BlobStore) -> None:
    blobs = [os.urandom(64) for _ in range(300)]
    digests = store.put_many(blobs + blobs[:5])  # repeats within a batch are stored once
    assert sorted(store) == sorted(set(digests))
    assert all(store.get(d) == b for d, b in zip(digests, blobs, strict=False))
    (segment,) = segment_files(store)
    assert segment.stat().st_size == 300 * 64  # blob bytes only: no header, no repeat
    assert not [p for p in store.root.rglob("*") if len(p.name) == 64]  # no file per blob


def test_storing_again_is_a_no_op_that_restarts_the_age(store: BlobStore) -> None:
    digest = store.put(b"same")
    backdate(store, digest, 3600)
    old = store.stored_at(digest)
    assert store.put(b"same") == digest
    assert store.stored_at(digest) > old + 3000
    assert segment_files(store)[0].stat().st_size == len(b"same")


def test_new_segments_start_at_the_size_limit(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segments, "SEGMENT_BYTES", 1000)
    digests = [store.put(os.urandom(400)) for _ in range(5)]
    assert len(segment_files(store)) == 3  # 400+400, 400+400, 400
    assert all(len(store.get(d)) == 400 for d in digests)


def test_a_flipped_byte_on_disk_is_reported(store: BlobStore) -> None:
    digest = store.put(b"x" * 1000)
    neighbour = store.put(b"y" * 1000)
    flip_byte(store, digest)
    with pytest.raises(BlobCorrupted, match=digest):
        store.get(digest)
    assert store.get(neighbour) == b"y" * 1000


def test_a_torn_segment_is_reported_corrupted(store: BlobStore) -> None:
    first, last = store.put_many([b"a" * 1000, b"b" * 1000])
    (segment,) = segment_files(store)
    os.truncate(segment, 1500)  # the disk lost the end of the file
    assert store.get(first) == b"a" * 1000
    with pytest.raises(BlobCorrupted, match=last):
        store.get(last)


def test_erasing_punches_the_blob_out_of_its_segment_and_leaves_no_trace(
    store: BlobStore,
) -> None:
    before, secret, after = os.urandom(5000), os.urandom(6000), os.urandom(5000)
    digests = store.put_many([before, secret, after])
    (segment,) = segment_files(store)
    where = store.locate(digests[1])
    assert files_holding(store.root, secret) == ["segments/" + segment.name]

    assert store.delete(digests[1]) is True
    raw = segment.read_bytes()
    assert raw[where.offset : where.offset + where.length] == bytes(where.length)
    assert files_holding(store.root, secret) == []  # no 32-byte piece of it in any file
    assert store.get(digests[0]) == before and store.get(digests[2]) == after
    assert store.delete(digests[1]) is False  # twice is harmless
    assert not store.has(digests[1])
    with pytest.raises(BlobNotFound):
        store.get(digests[1])


def test_a_segment_whose_blobs_all_went_is_deleted(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segments, "SEGMENT_BYTES", 1000)
    old = store.put_many([os.urandom(500), os.urandom(500)])
    kept = store.put(os.urandom(500))
    first, second = segment_files(store)
    store.delete(old[0])
    assert first.exists()
    store.delete(old[1])
    assert not first.exists() and second.exists() and len(store.get(kept)) == 500


def test_an_orphan_expires_only_if_still_old(store: BlobStore) -> None:
    data = os.urandom(3000)
    old, young = store.put(data), store.put(b"young")
    backdate(store, old, 7200)
    cutoff = time.time() - 3600
    assert store.expire(young, cutoff) is False
    assert store.expire(old, cutoff) is True
    assert old not in store and young in store
    assert files_holding(store.root, data) == []
    assert [d for d, _ in store.with_stored_at(since=cutoff)] == [young]


def test_missing_blob_is_not_found(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        store.get("0" * 64)
    assert store.size("0" * 64) == 0


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
    for operation in (store.get, store.has, store.delete, store.locate, store.stored_at):
        with pytest.raises(InvalidBlobHash):
            operation(bad)
    assert bad not in store


def test_reopening_the_store_sees_the_blobs(tmp_path: Path) -> None:
    digest = BlobStore(tmp_path / "b").put(b"durable")
    assert BlobStore(tmp_path / "b").get(digest) == b"durable"


def test_files_are_0600_and_directories_0700_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        store = BlobStore(tmp_path / "blobs")
        store.put_many([os.urandom(100) for _ in range(40)])
        store.delete(next(iter(store)))
    finally:
        os.umask(previous)
    paths = [store.root, *store.root.rglob("*")]
    modes = {str(p): stat.S_IMODE(p.stat().st_mode) for p in paths}
    assert {p: m for p, m in modes.items() if m != (0o700 if Path(p).is_dir() else 0o600)} == {}


# --- crashes: a blob is visible whole or not at all ---------------------------------------

KILLED_WRITER = """
import os, sys, time
from careledger.storage.blobstore import BlobStore

def stall(fd):
    print("written", flush=True)
    time.sleep(600)

os.fdatasync = stall  # the segment holds the bytes; the writer dies before the index commit
BlobStore(sys.argv[1]).put(sys.stdin.buffer.read())
"""


def killed_while_writing(store: BlobStore, data: bytes) -> None:
    """A real writer process killed after writing `data` into a segment, before indexing it."""
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(store.root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert writer.stdin is not None and writer.stdout is not None
    writer.stdin.write(data)
    writer.stdin.close()
    assert writer.stdout.readline() == b"written\n"
    writer.kill()
    writer.wait(10)


def test_a_writer_killed_before_the_index_commit_leaves_no_visible_blob(store: BlobStore) -> None:
    kept = store.put(b"stored before the crash")
    data = os.urandom(4000)
    digest = hashlib.sha256(data).hexdigest()
    killed_while_writing(store, data)
    assert files_holding(store.root, data) != []  # the bytes reached the segment...
    assert digest not in store  # ...but no reader can see them
    with pytest.raises(BlobNotFound):
        store.get(digest)

    reopened = BlobStore(store.root)  # a restart: the node's start-up cleaning
    assert reopened.remove_stale_temporaries() == len(data)
    assert files_holding(store.root, data) == []
    assert reopened.get(kept) == b"stored before the crash"
    assert reopened.put(data) == digest and reopened.get(digest) == data  # stored again, whole


def test_the_next_put_cuts_off_a_killed_writers_bytes(store: BlobStore) -> None:
    data = os.urandom(4000)
    killed_while_writing(store, data)
    later = store.put(b"the next upload")  # no restart in between
    assert files_holding(store.root, data) == []
    assert store.get(later) == b"the next upload"


def test_erasing_a_blob_removes_the_copy_a_killed_writer_left(store: BlobStore) -> None:
    data = b"ciphertext and wrapped keys " * 100
    killed_while_writing(store, data)
    assert store.delete(hashlib.sha256(data).hexdigest()) is False  # never indexed...
    assert files_holding(store.root, data) == []  # ...and its partial copy is gone too


def test_a_failed_index_commit_leaves_nothing_of_the_batch(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = store.put(b"earlier")
    data = os.urandom(3000)

    def refuse(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store.segments, "_commit", refuse)
    with pytest.raises(OSError, match="disk full"):
        store.put_many([data, os.urandom(100)])
    assert files_holding(store.root, data) == []
    assert list(store) == [kept] and store.get(kept) == b"earlier"


# --- a data directory of the per-file layout ----------------------------------------------


def legacy_file(root: Path, name: str, data: bytes, age: float = 0) -> Path:
    """A blob as the per-file store (before issue 13) kept it."""
    path = root / name[:2] / name[2:4] / name
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_bytes(data)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_a_per_file_data_directory_is_converted_when_opened(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    good, old = b"a record blob", b"an orphan from long ago"
    legacy_file(root, hashlib.sha256(good).hexdigest(), good)
    legacy_file(root, hashlib.sha256(old).hexdigest(), old, age=7200)
    altered_name = hashlib.sha256(b"original").hexdigest()
    legacy_file(root, altered_name, b"altered on disk")
    partial = legacy_file(root, "0" * 64, b"x").with_name(".tmp-" + "1" * 64 + "-abc")
    partial.write_bytes(b"half a blob")

    store = BlobStore(root)
    assert store.get(hashlib.sha256(good).hexdigest()) == good
    assert store.stored_at(hashlib.sha256(old).hexdigest()) < time.time() - 7000  # age kept
    with pytest.raises(BlobCorrupted):  # still reported, as the per-file store did
        store.get(altered_name)
    left = {p.name for p in root.iterdir()}
    assert left == {"index.sqlite", "index.sqlite-shm", "index.sqlite-wal", "lock", "segments"}
    assert files_holding(root, b"half a blob") == []
    assert len(list(store)) == 4  # the three and the "0"*64 file


def test_a_conversion_interrupted_after_the_index_commit_completes_on_reopening(
    tmp_path: Path,
) -> None:
    root = tmp_path / "blobs"
    data = b"converted, file not yet unlinked"
    digest = hashlib.sha256(data).hexdigest()
    store = BlobStore(root)
    store.put(data)
    leftover = legacy_file(root, digest, data)  # as if the crash came before the unlink
    reopened = BlobStore(root)
    assert not leftover.exists() and reopened.get(digest) == data
    assert len(raw_bytes(reopened, digest)) == len(data)
    assert segment_files(reopened)[0].stat().st_size == len(data)  # stored once


CONCURRENT_WRITER = """
import os, sys
from careledger.storage.blobstore import BlobStore

store = BlobStore(sys.argv[1])
tag = sys.argv[2].encode()
for batch in range(20):
    store.put_many([tag + b"-%d-%d-" % (batch, i) + os.urandom(300) for i in range(10)])
    print(batch, flush=True)
"""


def test_writers_in_several_processes_never_overwrite_each_other(store: BlobStore) -> None:
    """`careledger verify`, a backup or a test may open a node's store while the node writes:
    appends are serialised across processes by the store's `flock`."""
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_WRITER, str(store.root), tag],
            stdout=subprocess.DEVNULL,
        )
        for tag in ("one", "two", "three")
    ]
    assert [w.wait(120) for w in writers] == [0, 0, 0]
    digests = list(store)
    assert len(digests) == 600
    total = sum(len(store.get(d)) for d in digests)  # each re-hashed: none overwritten
    assert sum(p.stat().st_size for p in segment_files(store)) == total  # nothing lost between
