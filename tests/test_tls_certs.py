"""TLS certificates (consortium/tls.py) and settings (node/tls.py), with real TLS handshakes
over loopback: the verifier is OpenSSL through Python's ssl module, as in the node."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from careledger.consortium.tls import (
    CA_CERT,
    CA_KEY,
    NODE_CERT,
    NODE_KEY,
    TlsCertError,
    describe_file,
    host_name,
    issue_node_cert,
    load_ca,
    make_bundle,
    make_ca,
    sign_node_cert,
)
from careledger.consortium.tls_cli import tls_app
from careledger.node.tls import TlsConfigError, TlsSettings, tls_settings


@pytest.fixture
def org(tmp_path: Path) -> Path:
    """A CA for 127.0.0.1 and hospital-a.example, a node certificate, the bundle."""
    make_ca(tmp_path / "ca", "Hospital A", ["127.0.0.1", "hospital-a.example"])
    issue_node_cert(tmp_path / "ca", ["127.0.0.1", "node.hospital-a.example"], tmp_path / "node")
    make_bundle([tmp_path / "ca" / CA_CERT], tmp_path / "bundle.pem")
    return tmp_path


def test_commands_write_keys_0600_and_never_print_them(tmp_path: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(
        tls_app,
        ["ca", "--out", str(tmp_path / "ca"), "--name", "Hospital A", "--permit", "10.1.2.3"],
    )
    issued = runner.invoke(
        tls_app,
        ["issue", "--ca", str(tmp_path / "ca"), "--host", "10.1.2.3", "--out", str(tmp_path / "n")],
    )
    bundled = runner.invoke(
        tls_app, ["bundle", str(tmp_path / "ca" / CA_CERT), "--out", str(tmp_path / "b.pem")]
    )
    shown = runner.invoke(tls_app, ["show", str(tmp_path / "n" / NODE_CERT)])
    assert [r.exit_code for r in (made, issued, bundled, shown)] == [0, 0, 0, 0], made.output
    for key in (tmp_path / "ca" / CA_KEY, tmp_path / "n" / NODE_KEY):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        body = key.read_text().splitlines()[1]  # a line of the key's base64
        for result in (made, issued, bundled, shown):
            assert body not in result.output and "PRIVATE KEY" not in result.output
    assert "10.1.2.3" in shown.output and "sha256:" in shown.output


def test_a_node_certificate_verifies_against_the_bundle(org: Path) -> None:
    with tls_server(org / "node") as port:
        assert handshake(port, org / "bundle.pem") in ("TLSv1.2", "TLSv1.3")
        assert handshake(port, org / "bundle.pem", "node.hospital-a.example") == "TLSv1.3"
        with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
            handshake(port, org / "bundle.pem", "hospital-b.example")


def test_issue_refuses_a_host_outside_the_cas_names(org: Path) -> None:
    with pytest.raises(TlsCertError, match=r"may not issue for 10\.0\.0\.9, other\.example"):
        issue_node_cert(org / "ca", ["10.0.0.9", "other.example"], org / "other")
    assert not (org / "other").exists()


def test_a_ca_for_addresses_only_cannot_certify_any_dns_name(tmp_path: Path) -> None:
    """RFC 5280 leaves a kind of name the constraints do not list unconstrained; make_ca
    excludes it, so an address-only CA's certificate for a DNS name is refused."""
    make_ca(tmp_path / "ca", "Hospital A", ["127.0.0.1"])
    make_bundle([tmp_path / "ca" / CA_CERT], tmp_path / "bundle.pem")
    forge(tmp_path / "ca", ["localhost"], tmp_path / "forged")
    with (
        tls_server(tmp_path / "forged") as port,
        pytest.raises(ssl.SSLCertVerificationError, match="excluded subtree violation"),
    ):
        handshake(port, tmp_path / "bundle.pem", "localhost")


def test_a_ca_for_dns_names_only_cannot_certify_any_address(tmp_path: Path) -> None:
    make_ca(tmp_path / "ca", "Hospital A", ["hospital-a.example"])
    make_bundle([tmp_path / "ca" / CA_CERT], tmp_path / "bundle.pem")
    forge(tmp_path / "ca", ["127.0.0.1"], tmp_path / "forged")
    with (
        tls_server(tmp_path / "forged") as port,
        pytest.raises(ssl.SSLCertVerificationError, match="excluded subtree violation"),
    ):
        handshake(port, tmp_path / "bundle.pem")


def test_bad_names_and_existing_files_are_refused(org: Path) -> None:
    for bad in ("bad host", "999.1.1.1", "-x.example", ""):
        with pytest.raises(TlsCertError):
            host_name(bad)
    with pytest.raises(TlsCertError, match="not an IP address or network"):
        make_ca(org / "ca2", "B", ["10.0.0.1/8"])  # host bits set: a typo, not a network
    with pytest.raises(TlsCertError, match="at least one permitted"):
        make_ca(org / "ca2", "B", [])
    with pytest.raises(TlsCertError, match="already exist"):
        make_ca(org / "ca", "Hospital A", ["127.0.0.1"])
    with pytest.raises(TlsCertError, match="already exist"):
        issue_node_cert(org / "ca", ["127.0.0.1"], org / "node")
    before = (org / "node" / NODE_CERT).read_bytes()
    issue_node_cert(org / "ca", ["127.0.0.1"], org / "node", replace=True)
    assert (org / "node" / NODE_CERT).read_bytes() != before


def test_a_bundle_takes_unexpired_cas_only_and_each_once(org: Path) -> None:
    with pytest.raises(TlsCertError, match="not a CA"):
        make_bundle([org / "node" / NODE_CERT], org / "b.pem")
    long_ago = datetime.now(UTC) - timedelta(days=100)
    make_ca(org / "old", "Hospital A", ["127.0.0.1"], days=30, now=long_ago)
    with pytest.raises(TlsCertError, match="expired"):
        make_bundle([org / "old" / CA_CERT], org / "b.pem")
    infos = make_bundle([org / "ca" / CA_CERT, org / "bundle.pem"], org / "b.pem")
    assert len(infos) == 1 and len(describe_file(org / "b.pem")) == 1


def test_settings_need_a_key_with_a_certificate_and_https_peers_with_a_bundle(org: Path) -> None:
    with pytest.raises(TlsConfigError, match="needs its key"):
        TlsSettings(cert=org / "node" / NODE_CERT)
    with pytest.raises(TlsConfigError, match=r"not https:// URLs: http://10\.0\.0\.2:26658"):
        tls_settings(ca=org / "bundle.pem", peers=["https://10.0.0.3:1", "http://10.0.0.2:26658"])
    # Without a bundle, an http:// peer is the operator's choice (no TLS configured).
    assert not tls_settings(peers=["http://10.0.0.2:26658"]).configured


def test_a_key_that_is_not_the_certificates_is_refused_without_showing_it(org: Path) -> None:
    make_ca(org / "ca-b", "Hospital B", ["127.0.0.1"])
    issue_node_cert(org / "ca-b", ["127.0.0.1"], org / "node-b")
    other_key = org / "node-b" / NODE_KEY
    with pytest.raises(TlsConfigError, match="cannot load the TLS certificate") as raised:
        tls_settings(org / "node" / NODE_CERT, other_key)
    assert other_key.read_text().splitlines()[1] not in str(raised.value)
    with pytest.raises(TlsConfigError, match="cannot load the TLS CA bundle"):
        tls_settings(ca=org / "node" / NODE_KEY)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_the_server_and_the_client_require_tls_1_2(org: Path) -> None:
    # Set by the node itself, not left to the system's OpenSSL configuration.
    settings = TlsSettings(org / "node" / NODE_CERT, org / "node" / NODE_KEY, org / "bundle.pem")
    client = settings.client_context()
    assert isinstance(client, ssl.SSLContext)
    assert client.minimum_version == settings.server_context().minimum_version
    assert client.minimum_version == ssl.TLSVersion.TLSv1_2
    with tls_server(org / "node") as port:
        assert handshake(port, org / "bundle.pem", version=ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
        with pytest.raises(ssl.SSLError):
            handshake(port, org / "bundle.pem", version=ssl.TLSVersion.TLSv1_1)


# --- helpers ---------------------------------------------------------------------------------


def forge(ca_dir: Path, hosts: list[str], out: Path) -> None:
    """A certificate signed by the CA for names it may not issue for (an attacker's tools
    would not ask issue_node_cert)."""
    ca_cert, ca_key = load_ca(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = sign_node_cert(ca_cert, ca_key, key.public_key(), [host_name(h) for h in hosts])
    out.mkdir()
    (out / NODE_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / NODE_KEY).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@contextmanager
def tls_server(cert_dir: Path) -> Iterator[int]:
    """A TLS server on 127.0.0.1 with the node's server context, for one handshake at a time."""
    context = TlsSettings(cert_dir / NODE_CERT, cert_dir / NODE_KEY).server_context()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # to see `stop`
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(10)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass  # the client refused, or was refused

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def handshake(
    port: int,
    bundle: Path,
    server_name: str = "127.0.0.1",
    version: ssl.TLSVersion | None = None,
) -> str:
    """Connect as the replication client does; the negotiated version, or the ssl error."""
    context = TlsSettings(ca=bundle).client_context()
    assert isinstance(context, ssl.SSLContext)
    if version is not None:
        context.minimum_version = context.maximum_version = version
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer old versions
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        negotiated = tls.version()
        tls.sendall(b"x")
    assert negotiated is not None
    return negotiated


def test_the_local_url_names_a_host_the_certificate_carries(org: Path) -> None:
    settings = TlsSettings(org / "node" / NODE_CERT, org / "node" / NODE_KEY, org / "bundle.pem")
    assert settings.cert_names() == ["node.hospital-a.example", "127.0.0.1"]
    assert settings.local_url("127.0.0.1", 8443) == "https://127.0.0.1:8443"
    # Listening on an address the certificate does not carry: dial a name it carries.
    assert settings.local_url("10.9.9.9", 8443) == "https://node.hospital-a.example:8443"
    assert TlsSettings(ca=org / "bundle.pem").local_url("10.9.9.9", 80) == "http://10.9.9.9:80"
