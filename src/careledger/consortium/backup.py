"""`careledger node backup` and `careledger node restore` (docs/operations.md, section 5).

A backup is taken from a running node and holds what no peer can give back: the keys (the
organisation's, its node's, CometBFT's node and validator keys), the member file, node.json,
CometBFT's config and its last-signed state, the node's own SQLite databases (audit journal,
gateway: SMART clients, receipts) copied consistently with SQLite's online backup API, the
gateway's other files (claim packages), and the blobs, each re-hashed as it is read.

It does not hold the chain: not `state.sqlite`, not CometBFT's block store. CometBFT's
goleveldb stores cannot be copied consistently while CometBFT writes them, and an application
state ahead of CometBFT's blocks fails the handshake at start. A restored node starts with an
empty state and block store and block-syncs from its peers, replaying every block (every
signature checked again); the blobs in the archive spare the peers most of the copying, and
any the archive lacks are fetched by replication.

Validator safety. The restored home keeps CometBFT's `priv_validator_state.json` as it was
at the backup: the restored validator refuses to sign at any height, round and step at or
below the one recorded there. It cannot know what the old machine signed after the backup,
so the operator must make sure the old machine is stopped for good before starting the
restored one (docs/operations.md, section 5, "Double signing").

The archive is a plain tar written 0600 (it holds private keys); its first member is a
manifest naming every file but the blobs with its size and SHA-256 (blobs are named by their
hash). A restore refuses a non-empty target, a member outside the node home's layout, links,
oversized files, a file that does not match the manifest, and keys of two node homes mixed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import sqlite3
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import orjson

from careledger.consensus.cometbft.server import abci_socket_path
from careledger.consortium.ceremony import genesis_hash
from careledger.consortium.home import NodeHome
from careledger.consortium.members import ConsortiumError
from careledger.crypto.privatefs import (
    DIR_MODE,
    FILE_MODE,
    make_private_dir,
    replace_private_file,
    write_private_file,
)
from careledger.node.netconfig import APP_DIR, COMETBFT_HOME
from careledger.protocol.frames import MAX_BLOB_BYTES
from careledger.storage.blobstore import BlobCorrupted, BlobNotFound, BlobStore

FORMAT = 1
MANIFEST = "careledger-backup.json"

MAX_MANIFEST = 4 * 1024 * 1024
MAX_SMALL_FILE = 1024 * 1024  # keys, configs, JSON files
MAX_DATABASE = 64 * 1024**3
MAX_ENTRIES = 20_000_000
CHUNK = 1024 * 1024

# CometBFT's files a restore needs; everything else under cometbft/ is rebuilt by block sync.
COMETBFT_FILES = (
    "config/node_key.json",
    "config/priv_validator_key.json",
    "config/genesis.json",
    "config/config.toml",
    "data/priv_validator_state.json",
)
SIGN_STATE = "data/priv_validator_state.json"  # CometBFT's last signed height, round, step
ROOT_FILES = ("member.json", "node.json")
# The chain's state is rebuilt from the blocks; a copy would run ahead of CometBFT's store.
CHAIN_DATABASES = ("state.sqlite", "blocks.sqlite")
_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_BLOB = re.compile(r"app/blobs/([0-9a-f]{2})/([0-9a-f]{2})/(\1\2[0-9a-f]{60})")
_SQLITE_SIDE = (".sqlite-wal", ".sqlite-shm", ".sqlite-journal")


@dataclass(frozen=True)
class BackupReport:
    archive: Path
    files: int
    blobs: int
    skipped_blobs: int  # corrupted on disk or erased while the backup ran: peers have them
    signed_height: int  # the validator's last-signed height when the backup was taken


@dataclass(frozen=True)
class RestoreReport:
    home: Path
    name: str
    files: int
    blobs: int
    signed_height: int  # the restored validator signs nothing at or below this height


# --- backup ------------------------------------------------------------------------------------


def backup_node(home: NodeHome, out: Path) -> BackupReport:
    """Write a backup of `home` (running or not) to `out`, a new file, mode 0600."""
    member = home.member()  # a home whose keys and member file disagree is not backed up
    if out.exists():
        raise ConsortiumError(f"{out} exists: refusing to overwrite it")
    if out.resolve().is_relative_to(home.root.resolve()):
        raise ConsortiumError(f"{out} is inside the node home: write the backup elsewhere")
    with tempfile.TemporaryDirectory(prefix="careledger-backup-") as scratch:
        small = _snapshots(_small_files(home), Path(scratch))
        files = dict(small) | dict(_database_copies(home, Path(scratch)))
        signed = _signed_height(files[f"{COMETBFT_HOME}/{SIGN_STATE}"])
        manifest = {
            "careledger_backup": FORMAT,
            "name": member.name,
            "did": member.did,
            "node_id": member.node_id,
            "genesis_sha256": genesis_hash(home.cometbft_genesis.read_bytes()),
            "signed_height": signed,
            "files": {name: _describe(path) for name, path in sorted(files.items())},
        }
        with _new_private_file(out) as sink, tarfile.open(fileobj=sink, mode="w") as tar:
            _add_bytes(tar, MANIFEST, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
            for name, path in sorted(files.items()):
                _add_file(tar, name, path)
            blobs, skipped = _add_blobs(tar, home)
    return BackupReport(out, len(files), blobs, skipped, signed)


def _small_files(home: NodeHome) -> Iterator[tuple[str, Path]]:
    """Keys, configs and the application's other files (all but databases and blobs)."""
    for name in ROOT_FILES:
        yield name, home.root / name
    for name in COMETBFT_FILES:
        path = home.cometbft / name
        if path.is_file():
            yield f"{COMETBFT_HOME}/{name}", path
    app = home.app.root
    for path in sorted(app.rglob("*")):
        relative = path.relative_to(app)
        if not path.is_file() or path.is_symlink() or relative.parts[0] == "blobs":
            continue
        if path.name.endswith((".sqlite", *_SQLITE_SIDE)) or path.name.startswith("."):
            continue
        yield f"{APP_DIR}/{relative.as_posix()}", path


def _snapshots(files: Iterator[tuple[str, Path]], scratch: Path) -> Iterator[tuple[str, Path]]:
    """A copy of each file, read once: a running node rewrites some of them (CometBFT its
    priv_validator_state.json at every vote), and the manifest must describe the very bytes
    the archive holds (a restore refuses a member whose size or hash differs)."""
    for name, path in files:
        copy = scratch / f"file__{name.replace('/', '__')}"
        write_private_file(copy, path.read_bytes())
        yield name, copy


def _database_copies(home: NodeHome, scratch: Path) -> Iterator[tuple[str, Path]]:
    """A consistent copy of each of the application's SQLite databases but the chain's,
    taken with SQLite's online backup API while the node writes them."""
    app = home.app.root
    for path in sorted(app.rglob("*.sqlite")):
        relative = path.relative_to(app)
        if relative.as_posix() in CHAIN_DATABASES or relative.parts[0] == "blobs":
            continue
        copy = scratch / relative.as_posix().replace("/", "__")
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        target = sqlite3.connect(copy)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        yield f"{APP_DIR}/{relative.as_posix()}", copy


def _add_blobs(tar: tarfile.TarFile, home: NodeHome) -> tuple[int, int]:
    """Every blob whose bytes still hash to its name, read through the node's blob store
    (segments, `storage/blobstore.py`) and archived as ``app/blobs/<h[0:2]>/<h[2:4]>/<h>``,
    the per-file layout a restore writes and the store converts when it opens it; a blob
    erased or corrupted meanwhile is left out (the peers hold it, or the chain no longer
    wants it)."""
    added = skipped = 0
    with contextlib.closing(BlobStore(home.app.blobs)) as store:
        for digest in sorted(store):
            try:
                data = store.get(digest)
            except (BlobNotFound, BlobCorrupted):
                skipped += 1
                continue
            _add_bytes(tar, f"{APP_DIR}/blobs/{digest[:2]}/{digest[2:4]}/{digest}", data)
            added += 1
    return added, skipped


def _describe(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def _signed_height(path: Path) -> int:
    try:
        return int(orjson.loads(path.read_bytes())["height"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


@contextlib.contextmanager
def _new_private_file(out: Path) -> Iterator[IO[bytes]]:
    """`out`, created 0600 from the start and only when complete (written beside it, then
    linked into place: a backup that fails half-way leaves nothing at `out`)."""
    partial = out.with_name(f".{out.name}.partial-{os.urandom(4).hex()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as sink:
            os.fchmod(sink.fileno(), FILE_MODE)
            yield sink
            sink.flush()
            os.fsync(sink.fileno())
        try:
            os.link(partial, out)
        except FileExistsError:
            raise ConsortiumError(f"{out} exists: refusing to overwrite it") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, FILE_MODE, 0
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_tar_info(name, len(data)), io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> None:
    with path.open("rb") as f:
        tar.addfile(_tar_info(name, os.fstat(f.fileno()).st_size), f)


# --- restore -----------------------------------------------------------------------------------


def restore_node(archive: Path, target: Path) -> RestoreReport:
    """A node home at `target` (absent or empty) from `archive`; nothing is left at `target`
    unless every check passed."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConsortiumError(f"{target} is not empty: restore into a new directory")
    make_private_dir(target.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.restoring-", dir=target.parent))
    try:
        manifest, blobs = _extract(archive, staging)
        home = NodeHome(staging)
        member = home.member()  # keys of two homes mixed are refused here
        if (member.did, member.node_id) != (manifest.get("did"), manifest.get("node_id")):
            raise ConsortiumError(f"{archive}: the manifest names another organisation's node")
        _rehome(home, target)
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = len(manifest["files"])
    return RestoreReport(target, member.name, files, blobs, int(manifest.get("signed_height") or 0))


def _extract(archive: Path, staging: Path) -> tuple[dict[str, Any], int]:
    """Every member checked and written under `staging`; the manifest and the blob count."""
    try:
        tar = tarfile.open(archive, mode="r:")  # noqa: SIM115 - closed below
    except (OSError, tarfile.TarError) as exc:
        raise ConsortiumError(f"{archive}: not a backup archive ({exc})") from None
    with tar:
        try:
            return _extract_members(archive, tar, staging)
        except tarfile.TarError as exc:
            raise ConsortiumError(f"{archive}: damaged archive ({exc})") from None


def _extract_members(
    archive: Path, tar: tarfile.TarFile, staging: Path
) -> tuple[dict[str, Any], int]:
    manifest: dict[str, Any] | None = None
    seen: set[str] = set()
    blobs = 0
    for count, info in enumerate(tar):
        if count >= MAX_ENTRIES:
            raise ConsortiumError(f"{archive}: more than {MAX_ENTRIES} members")
        name = _checked_name(archive, info)
        if manifest is None:
            if name != MANIFEST:
                raise ConsortiumError(f"{archive}: the manifest is not the first member")
            manifest = _read_manifest(archive, _read_member(tar, info, MAX_MANIFEST))
            continue
        if name in seen:
            raise ConsortiumError(f"{archive}: {name} appears twice")
        seen.add(name)
        blob = _BLOB.fullmatch(name)
        expected: dict[str, Any]
        if blob:
            expected = {"size": info.size, "sha256": blob.group(3)}
            limit = MAX_BLOB_BYTES
            blobs += 1
        elif name in manifest["files"]:
            expected = manifest["files"][name]
            limit = MAX_DATABASE if name.endswith(".sqlite") else MAX_SMALL_FILE
        else:
            raise ConsortiumError(f"{archive}: {name} is not in the manifest")
        if info.size > limit or info.size != expected["size"]:
            raise ConsortiumError(f"{archive}: {name} has an unexpected size ({info.size} bytes)")
        _write_member(archive, tar, info, staging / name, expected["sha256"])
    if manifest is None:
        raise ConsortiumError(f"{archive}: an empty archive")
    missing = sorted(set(manifest["files"]) - seen)
    if missing:
        raise ConsortiumError(f"{archive}: incomplete, {missing[0]} is missing")
    return manifest, blobs


def _checked_name(archive: Path, info: tarfile.TarInfo) -> str:
    """The member's path if it is a regular file inside the node home's layout."""
    name = info.name
    parts = PurePosixPath(name).parts
    if not info.isreg():
        raise ConsortiumError(f"{archive}: {name!r} is not a regular file (links are refused)")
    if name.startswith("/") or not parts or not all(_COMPONENT.fullmatch(p) for p in parts):
        raise ConsortiumError(f"{archive}: {name!r} is not a path inside a node home")
    if name == MANIFEST or name in ROOT_FILES:
        return name
    if parts[0] == COMETBFT_HOME and "/".join(parts[1:]) in COMETBFT_FILES:
        return name
    inside_app = "/".join(parts[1:])
    if (
        parts[0] == APP_DIR
        and 1 < len(parts) <= 6
        and not inside_app.startswith(CHAIN_DATABASES)  # the chain's state and its -wal
        and not name.endswith(_SQLITE_SIDE)  # a stray -wal would be replayed into a copy
    ):
        return name
    raise ConsortiumError(f"{archive}: {name!r} is not a file a node home's backup holds")


def _read_manifest(archive: Path, raw: bytes) -> dict[str, Any]:
    try:
        manifest = orjson.loads(raw)
    except orjson.JSONDecodeError:
        manifest = None
    if (
        not isinstance(manifest, dict)
        or manifest.get("careledger_backup") != FORMAT
        or not isinstance(manifest.get("files"), dict)
    ):
        raise ConsortiumError(f"{archive}: not a CareLedger node backup (format {FORMAT})")
    for name, entry in manifest["files"].items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("size"), int)
            and isinstance(entry.get("sha256"), str)
        ):
            raise ConsortiumError(f"{archive}: the manifest's entry for {name!r} is malformed")
    return manifest


def _read_member(tar: tarfile.TarFile, info: tarfile.TarInfo, limit: int) -> bytes:
    if info.size > limit:
        raise ConsortiumError(f"{info.name}: larger than {limit} bytes")
    source = tar.extractfile(info)
    assert source is not None  # a regular file
    return source.read(limit + 1)


def _write_member(
    archive: Path, tar: tarfile.TarFile, info: tarfile.TarInfo, path: Path, sha256: str
) -> None:
    make_private_dir(path.parent)
    source = tar.extractfile(info)
    assert source is not None  # a regular file (checked)
    digest = hashlib.sha256()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as sink:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            sink.write(chunk)
    if digest.hexdigest() != sha256:
        raise ConsortiumError(f"{archive}: {info.name} does not match its SHA-256")


def _rehome(home: NodeHome, target: Path) -> None:
    """node.json names the ABCI socket by the home's path: the new home's."""
    config = orjson.loads(home.config_file.read_bytes())
    config["abci_address"] = f"unix://{abci_socket_path(target)}"
    replace_private_file(home.config_file, orjson.dumps(config, option=orjson.OPT_INDENT_2))
    (home.cometbft / "data").mkdir(mode=DIR_MODE, exist_ok=True)
