"""A network whose node directories have very long paths still talks ABCI over a Unix socket.

Before: past 100 bytes of socket path the application listened for ABCI on TCP (p2p port + 3,
no authentication). Now the socket moves to a short private directory; nothing listens on TCP.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import orjson
from netutil import running_network, wait_for_height


def test_a_long_node_directory_gets_a_unix_socket_never_tcp(tmp_path: Path) -> None:
    root = tmp_path / ("long-directory-name-" * 5)
    with running_network(root, validators=1) as network:
        node = network.nodes[0]
        node_dir = network.node_dir(0)
        assert len(str(node_dir.resolve() / "abci.sock")) > 100
        address = orjson.loads((node_dir / "node.json").read_bytes())["abci_address"]
        assert address.startswith("unix://")
        config = (network.home(0) / "config" / "config.toml").read_text()
        assert f'proxy_app = "{address}"' in config
        socket_path = Path(address.removeprefix("unix://"))
        assert stat.S_ISSOCK(socket_path.lstat().st_mode)
        assert stat.S_IMODE(socket_path.parent.lstat().st_mode) == 0o700
        assert socket_path.parent.lstat().st_uid == os.getuid()
        wait_for_height(network, 0, 3)  # CometBFT drives the application through it
        with socket.socket() as probe:  # the old fallback port is closed
            assert probe.connect_ex((node.host, node.p2p_port + 3)) != 0
