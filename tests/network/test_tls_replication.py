"""Blob replication over TLS between two real nodes (CometBFT + `careledger.node.network`).

Each organisation has its own name-constrained TLS CA; both nodes serve HTTPS on their API
port and verify each other against the bundle of both CAs (tests/network/tlsutil.py). The
records are written at node0; node1 fetches their blobs from node0's `/replication/fetch`,
so node0's certificate is the one under test: each attack makes node0 serve a certificate
node1 must refuse, checks that node1 said so and holds no copy, then gives node0 its good
certificate back and sees the copy arrive (the refusal was the certificate's doing).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from netutil import (
    TEST_SETTINGS,
    free_base_port,
    organisation,
    some_observations,
    wait_until,
)
from tlsutil import TlsFiles, bundle, configure, https_url, make_tls, serve_cert

from careledger.consortium.tls import (
    NODE_CERT,
    NODE_KEY,
    host_name,
    issue_node_cert,
    load_ca,
    make_ca,
    sign_node_cert,
)
from careledger.crypto.privatefs import make_private_dir, write_private_file
from careledger.localnet.network import (
    NetError,
    Network,
    create_network,
    start_network,
    start_node,
    stop_network,
    stop_node,
)
from careledger.node.netconfig import NodeConfig
from careledger.node.tls import TlsSettings
from careledger.storage.blobstore import BlobStore
from careledger.wallet.node_client import NodeClient
from careledger.wallet.records import RecordsClient
from nodeutil import enrol

pytestmark = pytest.mark.timeout(300)

REFUSED = "refused: TLS verification failed"
WRITER, FETCHER = 0, 1


@dataclass
class TlsNet:
    network: Network
    files: TlsFiles
    writer: RecordsClient
    patient: str
    written: int = 0

    def write_one(self) -> str:
        """Write one record at node0; its blob's hash."""
        observations = some_observations(5)
        resource = observations[self.written % len(observations)]
        self.written += 1
        return self.writer.write_many(self.patient, [resource])[0].blob_hash

    def fetched(self, digest: str) -> bool:
        return digest in BlobStore(self.network.app_data(FETCHER).blobs)

    def wait_fetched(self, digest: str) -> None:
        wait_until(lambda: self.fetched(digest), 90, f"node{FETCHER} to fetch {digest}")

    def log_size(self) -> int:
        return self._log().stat().st_size

    def refusals_since(self, offset: int) -> list[str]:
        with self._log().open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        return [line for line in text.splitlines() if REFUSED in line]

    def _log(self) -> Path:
        return self.network.node_dir(FETCHER) / "app.log"


@pytest.fixture(scope="module")
def tls_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsNet]:
    root = tmp_path_factory.mktemp("tls")
    network = create_network(root / "net", 2, base_port=free_base_port(2), settings=TEST_SETTINGS)
    files = make_tls(network, root / "tls")
    try:
        start_network(network)
        url = https_url(network, WRITER)
        # The writer is not what is tested: it must reach node0 whatever certificate node0
        # is made to serve, so it does not verify; node1's replication client is tested.
        http = httpx.Client(base_url=url, timeout=30, verify=False)
        writer = RecordsClient(NodeClient(url, http=http), organisation(network, WRITER))
        with pytest.MonkeyPatch.context() as env:
            env.setenv("SSL_CERT_FILE", str(files.bundle("all")))  # enrol's own client
            patient = enrol(writer, "tls test")
        yield TlsNet(network, files, writer, patient.did)
        http.close()
    finally:
        stop_network(network)


def test_blobs_replicate_between_nodes_over_verified_tls(tls_net: TlsNet) -> None:
    network = tls_net.network
    config = NodeConfig.load(network.node_dir(FETCHER))
    assert config.peer_api_urls == (https_url(network, WRITER),)
    assert config.tls.ca == tls_net.files.bundle("all")
    # A client that trusts the consortium's bundle reaches node0 over TLS 1.2 or newer.
    trusted = TlsSettings(ca=tls_net.files.bundle("all")).client_context()
    with httpx.Client(verify=trusted) as client:
        response = client.get(https_url(network, WRITER) + "/status")
        assert response.status_code == 200
        assert response.extensions["network_stream"].get_extra_info("ssl_object").version() in (
            "TLSv1.2",
            "TLSv1.3",
        )
    tls_net.wait_fetched(tls_net.write_one())


def test_plain_http_to_the_tls_port_fails(tls_net: TlsNet) -> None:
    node = tls_net.network.nodes[WRITER]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{node.host}:{node.api_port}/status", timeout=10)
    # Nor does a client trusting only the public CAs accept the consortium's certificate.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(https_url(tls_net.network, WRITER) + "/status", timeout=10)


def test_a_peer_whose_certificate_no_trusted_ca_signed_is_refused(tls_net: TlsNet) -> None:
    files, host = tls_net.files, tls_net.network.nodes[WRITER].host
    make_ca(files.ca("mallory"), "Mallory", [host])
    issue_node_cert(files.ca("mallory"), [host], files.cert("mallory"))
    _refused_then_restored(tls_net, "mallory", "unable to get local issuer certificate")


def test_a_members_ca_cannot_certify_another_members_node(tls_net: TlsNet) -> None:
    """Hospital 1's CA is in the bundle, but constrained to Hospital 1's own address: a
    certificate it signs for node0's address is refused by name constraints."""
    files, host = tls_net.files, tls_net.network.nodes[WRITER].host
    ca_cert, ca_key = load_ca(files.ca(f"org{FETCHER}"))
    key = ec.generate_private_key(ec.SECP256R1())
    # sign_node_cert does not check constraints (issue_node_cert refuses to do this).
    forged = sign_node_cert(ca_cert, ca_key, key.public_key(), [host_name(host)])
    _write_pair(files.cert("forged"), forged.public_bytes(serialization.Encoding.PEM), key)
    _refused_then_restored(tls_net, "forged", "permitted subtree violation")


def test_an_expired_certificate_is_refused(tls_net: TlsNet) -> None:
    files, host = tls_net.files, tls_net.network.nodes[WRITER].host
    last_month = datetime.now(UTC) - timedelta(days=30)
    issue_node_cert(files.ca(f"org{WRITER}"), [host], files.cert("expired"), days=7, now=last_month)
    _refused_then_restored(tls_net, "expired", "certificate has expired")


def test_rotating_a_ca_with_an_overlapping_bundle_keeps_replication_going(
    tls_net: TlsNet,
) -> None:
    network, files = tls_net.network, tls_net.files
    host = network.nodes[WRITER].host
    try:
        # 1. Hospital 0 makes a new CA; every node trusts the old and the new one.
        make_ca(files.ca("org0-new"), "Hospital 0", [host])
        bundle(files, "overlap", ["org0", "org0-new", "org1"])
        serve_cert(network, files, FETCHER, "node1", "overlap")
        serve_cert(network, files, WRITER, "node0", "overlap")
        tls_net.wait_fetched(tls_net.write_one())
        # 2. Node0 serves a certificate of the new CA.
        issue_node_cert(files.ca("org0-new"), [host], files.cert("node0-new"))
        serve_cert(network, files, WRITER, "node0-new", "overlap")
        tls_net.wait_fetched(tls_net.write_one())
        # 3. The old CA is dropped from every bundle: replication goes on...
        bundle(files, "after", ["org0-new", "org1"])
        serve_cert(network, files, FETCHER, "node1", "after")
        serve_cert(network, files, WRITER, "node0-new", "after")
        tls_net.wait_fetched(tls_net.write_one())
        # ...and a certificate of the old CA is no longer trusted.
        offset = tls_net.log_size()
        serve_cert(network, files, WRITER, "node0", "after")
        digest = tls_net.write_one()
        _wait_refused(tls_net, offset, "unable to get local issuer certificate")
        assert not tls_net.fetched(digest)
    finally:
        serve_cert(network, files, FETCHER, "node1", "all")
        serve_cert(network, files, WRITER, "node0", "all")


def test_a_node_requiring_tls_does_not_start_with_a_plain_http_peer(tls_net: TlsNet) -> None:
    network = tls_net.network
    node = network.nodes[WRITER]
    config = NodeConfig.load(network.node_dir(FETCHER))
    log = network.node_dir(FETCHER) / "app.log"
    offset = log.stat().st_size
    try:
        configure(network, FETCHER, peer_api_urls=(f"http://{node.host}:{node.api_port}",))
        stop_node(network, FETCHER)
        with pytest.raises(NetError, match="application exited"):
            start_node(network, FETCHER)
        with log.open("rb") as text:
            text.seek(offset)
            assert b"TLS is required (a CA bundle is configured)" in text.read()
    finally:
        configure(network, FETCHER, peer_api_urls=config.peer_api_urls)
        stop_node(network, FETCHER)
        start_node(network, FETCHER)
    tls_net.wait_fetched(tls_net.write_one())


# --- helpers ---------------------------------------------------------------------------------


def _refused_then_restored(tls_net: TlsNet, cert: str, reason: str) -> None:
    """Node0 serves `cert`: node1 refuses it for `reason` and fetches nothing from it; with
    its own certificate back, node0 gives node1 the blob."""
    network, files = tls_net.network, tls_net.files
    offset = tls_net.log_size()
    try:
        serve_cert(network, files, WRITER, cert, "all")
        digest = tls_net.write_one()
        _wait_refused(tls_net, offset, reason)
        assert not tls_net.fetched(digest)
    finally:
        serve_cert(network, files, WRITER, "node0", "all")
    tls_net.wait_fetched(digest)


def _wait_refused(tls_net: TlsNet, offset: int, reason: str) -> None:
    wait_until(
        lambda: any(reason in line for line in tls_net.refusals_since(offset)),
        90,
        f"node{FETCHER} to log its refusal ({reason})",
    )


def _write_pair(out: Path, cert_pem: bytes, key: ec.EllipticCurvePrivateKey) -> None:
    make_private_dir(out)
    (out / NODE_CERT).write_bytes(cert_pem)
    write_private_file(
        out / NODE_KEY,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
