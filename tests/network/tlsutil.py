"""A local network whose nodes serve their API over TLS and verify each other by a bundle.

Each node's organisation has its own TLS CA, name-constrained to the node's loopback address
(consortium/tls.py); every node trusts the bundle of all of them, as in a real consortium.
`serve_cert` swaps the certificate one node serves and restarts it (certificates are read at
start), `trust` swaps the bundle one node verifies its peers with.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from careledger.consortium.tls import CA_CERT, NODE_CERT, NODE_KEY, issue_node_cert, make_ca
from careledger.consortium.tls import make_bundle as write_bundle
from careledger.localnet.network import Network, start_node, stop_node
from careledger.node.netconfig import CONFIG_FILE, NodeConfig
from careledger.node.tls import TlsSettings


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    root: Path

    def ca(self, name: str) -> Path:
        """The directory of a CA (ca.pem, ca-key.pem)."""
        return self.root / "ca" / name

    def cert(self, name: str) -> Path:
        """The directory of a node certificate (node.pem, node-key.pem)."""
        return self.root / "certs" / name

    def bundle(self, name: str) -> Path:
        return self.root / f"{name}.pem"


def https_url(network: Network, index: int) -> str:
    node = network.nodes[index]
    return f"https://{node.host}:{node.api_port}"


def make_tls(network: Network, root: Path) -> TlsFiles:
    """Per node: a CA `org<i>` for its address, a certificate `node<i>` from it; the bundle
    `all` of every CA. Configures every node (not started, or restarted after) to serve its
    certificate and reach its peers at https:// URLs verified against `all`."""
    files = TlsFiles(root)
    for node in network.nodes:
        make_ca(files.ca(f"org{node.index}"), f"Hospital {node.index}", [node.host])
        issue_node_cert(files.ca(f"org{node.index}"), [node.host], files.cert(f"node{node.index}"))
    bundle(files, "all", [f"org{n.index}" for n in network.nodes])
    for node in network.nodes:
        peers = tuple(https_url(network, p.index) for p in network.nodes if p != node)
        configure(network, node.index, peer_api_urls=peers, tls=settings(files, node.index, "all"))
    return files


def bundle(files: TlsFiles, name: str, cas: list[str]) -> Path:
    path = files.bundle(name)
    write_bundle([files.ca(ca) / CA_CERT for ca in cas], path)
    return path


def settings(files: TlsFiles, index: int, bundle_name: str, cert: str = "") -> TlsSettings:
    cert_dir = files.cert(cert or f"node{index}")
    return TlsSettings(cert_dir / NODE_CERT, cert_dir / NODE_KEY, files.bundle(bundle_name))


def configure(network: Network, index: int, **changes: object) -> NodeConfig:
    """Rewrite fields of node `index`'s node.json (NodeConfig)."""
    node_dir = network.node_dir(index)
    config = dataclasses.replace(NodeConfig.load(node_dir), **changes)  # type: ignore[arg-type]
    (node_dir / CONFIG_FILE).write_bytes(config.to_json())
    return config


def serve_cert(network: Network, files: TlsFiles, index: int, cert: str, bundle_name: str) -> None:
    """Restart node `index` serving certificate `cert`, verifying peers with `bundle_name`."""
    configure(network, index, tls=settings(files, index, bundle_name, cert))
    stop_node(network, index)
    start_node(network, index)
