"""`careledger node restore` refuses archives that are not one node home's backup.

Node homes made with the real `node init` (CometBFT's keys included), backed up with the real
`node backup`; each hostile archive is then built from that backup's members as an attacker
(or an operator's mistake) would, and the restore must refuse it and leave nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from orgs import LocalHost, Org

from careledger.consortium.backup import backup_node, restore_node
from careledger.consortium.home import NodeHome
from nodeutil import free_port

Members = list[tuple[tarfile.TarInfo, bytes]]


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Org, Org, Path]:
    root = tmp_path_factory.mktemp("archives")
    host = LocalHost("127.0.7.9")
    orgs = [Org(host, root / f"org{i}", f"Clinic {i}", rpc_port=free_port()) for i in range(2)]
    for org in orgs:
        org.init()
    archive = root / "clinic0.tar"
    done = orgs[0].cli("node", "backup", "--data-dir", str(orgs[0].home), "--out", str(archive))
    assert done.returncode == 0, done.stderr
    return orgs[0], orgs[1], archive


def members_of(archive: Path) -> Members:
    with tarfile.open(archive) as tar:
        return [(info, tar.extractfile(info).read()) for info in tar if info.isreg()]  # type: ignore[union-attr]


def write_archive(
    path: Path, members: Members, extra: Callable[[tarfile.TarFile], None] = lambda t: None
) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        extra(tar)
    return path


def with_file(members: Members, name: str, data: bytes) -> Members:
    """`members` with `name`'s bytes replaced and the manifest updated to match (a forger
    who rebuilds the manifest too)."""
    manifest = orjson.loads(members[0][1])
    manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    out: Members = [(members[0][0], orjson.dumps(manifest))]
    for info, old in members[1:]:
        out.append((info, data if info.name == name else old))
    return out


def restore(org: Org, archive: Path, target: Path) -> tuple[int, str]:
    done = org.cli("node", "restore", "--from", str(archive), "--data-dir", str(target))
    return done.returncode, done.stderr + done.stdout


def test_the_archive_is_private_whatever_the_umask(homes: tuple[Org, Org, Path]) -> None:
    org, _, archive = homes
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    old = os.umask(0)
    try:
        out = archive.with_name("again.tar")
        done = org.cli("node", "backup", "--data-dir", str(org.home), "--out", str(out))
        assert done.returncode == 0, done.stderr
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        refused = org.cli("node", "backup", "--data-dir", str(org.home), "--out", str(out))
        assert refused.returncode == 1 and "exists" in refused.stderr
    finally:
        os.umask(old)


def test_a_backup_restores_into_an_empty_directory(
    homes: tuple[Org, Org, Path], tmp_path: Path
) -> None:
    org, _, archive = homes
    code, said = restore(org, archive, tmp_path / "home")
    assert code == 0, said
    restored = tmp_path / "home"
    assert (restored / "app" / "keys" / "organisation.json").read_bytes() == (
        org.home / "app" / "keys" / "organisation.json"
    ).read_bytes()
    assert stat.S_IMODE((restored / "app" / "keys" / "organisation.json").stat().st_mode) == 0o600
    config = orjson.loads((restored / "node.json").read_bytes())
    assert str(restored.resolve()) in config["abci_address"]  # the new home's socket


def test_a_non_empty_target_is_refused(homes: tuple[Org, Org, Path], tmp_path: Path) -> None:
    org, _, archive = homes
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "precious.txt").write_text("an operator's file")
    code, said = restore(org, archive, tmp_path / "home")
    assert code == 1 and "not empty" in said
    assert os.listdir(tmp_path / "home") == ["precious.txt"]


@pytest.mark.parametrize(
    "name", ["../escaped.json", "app/../../escaped.json", "/tmp/escaped.json", "app/keys/.hidden"]
)
def test_a_member_outside_the_node_home_is_refused(
    homes: tuple[Org, Org, Path], tmp_path: Path, name: str
) -> None:
    org, _, archive = homes
    evil = tarfile.TarInfo(name)
    bad = write_archive(
        tmp_path / "evil.tar",
        members_of(archive),
        lambda t: t.addfile(_sized(evil, b"x"), io.BytesIO(b"x")),
    )
    code, said = restore(org, bad, tmp_path / "home")
    assert code == 1 and "not a path inside a node home" in said
    assert not (tmp_path / "home").exists() and not (tmp_path / "escaped.json").exists()
    assert not Path("/tmp/escaped.json").exists()
    assert [p for p in tmp_path.iterdir() if p.name != "evil.tar"] == []  # no staging left


def test_a_link_in_the_archive_is_refused(homes: tuple[Org, Org, Path], tmp_path: Path) -> None:
    org, _, archive = homes
    link = tarfile.TarInfo("app/keys/stolen.json")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    bad = write_archive(tmp_path / "evil.tar", members_of(archive), lambda t: t.addfile(link))
    code, said = restore(org, bad, tmp_path / "home")
    assert code == 1 and "links are refused" in said
    assert not (tmp_path / "home").exists()


def test_the_chain_state_in_an_archive_is_refused(
    homes: tuple[Org, Org, Path], tmp_path: Path
) -> None:
    org, _, archive = homes
    state = with_file(members_of(archive), "app/state.sqlite", b"SQLite format 3\x00")
    state.append((tarfile.TarInfo("app/state.sqlite"), b"SQLite format 3\x00"))
    code, said = restore(org, write_archive(tmp_path / "state.tar", state), tmp_path / "home")
    assert code == 1 and "not a file a node home's backup holds" in said


def test_a_file_altered_after_the_backup_is_refused(
    homes: tuple[Org, Org, Path], tmp_path: Path
) -> None:
    org, _, archive = homes
    members = [
        (info, data.replace(b'"name"', b'"nama"') if info.name == "member.json" else data)
        for info, data in members_of(archive)
    ]
    code, said = restore(org, write_archive(tmp_path / "altered.tar", members), tmp_path / "home")
    assert code == 1 and "does not match its SHA-256" in said
    assert not (tmp_path / "home").exists()


def test_another_nodes_key_mixed_in_is_refused(
    homes: tuple[Org, Org, Path], tmp_path: Path
) -> None:
    org, other, archive = homes
    for name in ("app/keys/organisation.json", "cometbft/config/priv_validator_key.json"):
        path = other.home / name
        mixed = with_file(members_of(archive), name, path.read_bytes())
        code, said = restore(org, write_archive(tmp_path / "mixed.tar", mixed), tmp_path / "home")
        assert code == 1 and "files from two node homes mixed" in said, said
        assert not (tmp_path / "home").exists()


def test_an_oversized_key_file_is_refused(homes: tuple[Org, Org, Path], tmp_path: Path) -> None:
    org, _, archive = homes
    big = with_file(members_of(archive), "app/keys/node.json", b" " * (1024 * 1024 + 1))
    code, said = restore(org, write_archive(tmp_path / "big.tar", big), tmp_path / "home")
    assert code == 1 and "unexpected size" in said


def _sized(info: tarfile.TarInfo, data: bytes) -> tarfile.TarInfo:
    info.size = len(data)
    return info


def test_a_backup_of_a_running_node_holds_the_bytes_its_manifest_describes(
    homes: tuple[Org, Org, Path], tmp_path: Path
) -> None:
    """CometBFT rewrites priv_validator_state.json at every vote, and the backup described a
    file (size, hash) before it read it into the archive: under load in CI, the restore
    refused the archive ("has an unexpected size"). A writer rewrites the file, growing,
    while five backups are taken; every one restores."""
    org, _, _ = homes
    state = org.home / "cometbft" / "data" / "priv_validator_state.json"
    original = state.read_bytes()
    done = threading.Event()

    def vote() -> None:
        height = 0
        while not done.is_set():
            height += 1
            state.write_bytes(orjson.dumps({"height": str(height), "round": 0, "step": 3}))

    writer = threading.Thread(target=vote)
    writer.start()
    try:
        for n in range(5):
            archive = tmp_path / f"running-{n}.tar"
            backup_node(NodeHome(org.home), archive)
            restore_node(archive, tmp_path / f"home-{n}")
    finally:
        done.set()
        writer.join()
        state.write_bytes(original)
