"""CometBFT's RPC answers anyone who reaches it (broadcast, blocks, the mempool, net_info),
so it, and every other listener but P2P, is bound to loopback or switched off. This reads
the config.toml that `net up` generates, as CometBFT will."""

from __future__ import annotations

import tomllib
from pathlib import Path
from urllib.parse import urlparse

from netutil import free_base_port

from careledger.consensus.cometbft.config import NetSettings, NodeAddress, node_config_values
from careledger.localnet.network import create_network


def _loopback(address: str) -> bool:
    host = urlparse(address if "://" in address else f"tcp://{address}").hostname
    return host is not None and (host.startswith("127.") or host == "localhost")


def test_every_listener_but_p2p_is_on_loopback_or_off(tmp_path: Path) -> None:
    network = create_network(tmp_path / "net", 2, base_port=free_base_port(2))
    for index in range(2):
        path = network.home(index) / "config" / "config.toml"
        config = tomllib.loads(path.read_text())
        rpc = config["rpc"]
        assert _loopback(rpc["laddr"]), rpc["laddr"]
        assert rpc["grpc_laddr"] == "" and rpc["pprof_laddr"] == ""
        assert rpc["unsafe"] is False and rpc["cors_allowed_origins"] == []
        assert config["priv_validator_laddr"] == ""
        metrics = config["instrumentation"]
        assert metrics["prometheus"] is False and _loopback(metrics["prometheus_listen_addr"])
        assert config["proxy_app"].startswith("unix://") or _loopback(config["proxy_app"])


def test_a_node_on_a_public_address_still_serves_its_rpc_on_loopback() -> None:
    node = NodeAddress(0, "203.0.113.7", 26656, 26657, 8000)
    assert node.rpc_host == "127.0.0.1" and node.rpc_url == "http://127.0.0.1:26657"
    values = node_config_values(node, [], "unix:///tmp/abci.sock", NetSettings())
    assert values[("rpc", "laddr")] == "tcp://127.0.0.1:26657"
    assert values[("p2p", "laddr")] == "tcp://203.0.113.7:26656"  # only P2P faces the network
    assert NodeAddress(1, "127.0.0.2", 26656, 26657, 8000).rpc_host == "127.0.0.2"
