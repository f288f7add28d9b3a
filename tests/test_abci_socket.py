"""The ABCI connection is a Unix socket in a private directory, never a TCP port.

The attack: when a node directory's path was too long for a Unix socket, the application
listened for ABCI on a TCP port instead, where any local user (or, on a wrong host address,
anyone) could connect and drive the state machine: finalize blocks, commit, query.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from careledger.consensus.cometbft.handler import AbciHandler
from careledger.consensus.cometbft.server import UNIX_PATH_LIMIT, AbciServer, abci_socket_path
from nodeutil import free_port


@pytest.fixture
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short private base for the socket directory ($XDG_RUNTIME_DIR), removed after."""
    base = Path(tempfile.mkdtemp(prefix="cl-", dir="/tmp"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    yield base
    shutil.rmtree(base)


def long_node_dir(tmp_path: Path) -> Path:
    node_dir = tmp_path / ("n" * 60) / ("o" * 60) / "node0"
    node_dir.mkdir(parents=True)
    assert len(str(node_dir / "abci.sock")) > UNIX_PATH_LIMIT
    return node_dir


def test_a_short_node_dir_keeps_its_socket_inside(tmp_path: Path) -> None:
    assert abci_socket_path(tmp_path) == tmp_path.resolve() / "abci.sock"


def test_a_long_node_dir_gets_a_short_socket_in_a_0700_directory(
    tmp_path: Path, runtime_dir: Path
) -> None:
    node_dir = long_node_dir(tmp_path)
    path = abci_socket_path(node_dir)
    assert len(str(path)) <= UNIX_PATH_LIMIT
    assert path.parent == runtime_dir / f"careledger-{os.getuid()}"
    info = path.parent.lstat()
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()
    assert abci_socket_path(node_dir) == path  # the same node finds its socket again
    other = tmp_path / ("n" * 60) / ("o" * 60) / "node1"
    assert abci_socket_path(other) != path


def test_the_server_listens_on_that_socket_and_never_on_tcp(
    tmp_path: Path, runtime_dir: Path
) -> None:
    path = abci_socket_path(long_node_dir(tmp_path))
    port = free_port()

    async def scenario() -> None:
        server = AbciServer(cast(AbciHandler, cast(Any, None)))
        with pytest.raises(ValueError, match="Unix socket only"):
            await server.start(f"tcp://127.0.0.1:{port}")
        await server.start(f"unix://{path}")
        try:
            assert stat.S_ISSOCK(path.lstat().st_mode)
            assert stat.S_IMODE(path.lstat().st_mode) == 0o600
            _, writer = await asyncio.open_unix_connection(str(path))
            writer.close()
        finally:
            await server.close()
        assert not path.exists()  # closed: no stale socket left in the shared directory

    asyncio.run(scenario())
    with socket.socket() as probe, pytest.raises(OSError):
        probe.connect(("127.0.0.1", port))  # nothing ever listened there


def test_a_socket_directory_open_to_others_is_refused(tmp_path: Path, runtime_dir: Path) -> None:
    # Another local user who makes the directory first (or makes it writable) could put a
    # socket of theirs where CometBFT connects: the directory must be ours and closed.
    planted = runtime_dir / f"careledger-{os.getuid()}"
    planted.mkdir()
    planted.chmod(0o777)
    with pytest.raises(PermissionError, match="open to others"):
        abci_socket_path(long_node_dir(tmp_path))


def test_a_symlink_in_place_of_the_directory_is_refused(tmp_path: Path, runtime_dir: Path) -> None:
    target = runtime_dir / "elsewhere"
    target.mkdir(mode=0o700)
    (runtime_dir / f"careledger-{os.getuid()}").symlink_to(target)
    with pytest.raises(PermissionError, match="not a directory of this user"):
        abci_socket_path(long_node_dir(tmp_path))
