"""The image's health check (deploy/healthcheck.py) against real servers on loopback: it finds
the API in the node home's node.json, speaks HTTPS when the node serves TLS, verifies the
certificate against the node's CA bundle, and says unhealthy otherwise. The container path is
tests/test_image.py; this runs the same script on the host, in seconds."""

from __future__ import annotations

import http.server
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from careledger.consortium.tls import issue_node_cert, make_ca

SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "healthcheck.py"


class StatusHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/status" else 404)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Callable[..., int]]:
    servers: list[http.server.HTTPServer] = []

    def start(context: ssl.SSLContext | None = None) -> int:
        server = http.server.HTTPServer(("127.0.0.1", 0), StatusHandler)
        if context is not None:
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return int(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def tls_pair(folder: Path, organisation: str) -> tuple[Path, Path, Path]:
    """A CA (stream D's consortium/tls.py) and a node certificate for 127.0.0.1 from it."""
    make_ca(folder / "ca", organisation, ["127.0.0.1"])
    issue_node_cert(folder / "ca", ["127.0.0.1"], folder / "node")
    return folder / "node" / "node.pem", folder / "node" / "node-key.pem", folder / "ca" / "ca.pem"


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def check(home: Path, port: int, tls: dict[str, str] | None = None) -> int:
    config: dict[str, object] = {"api_host": "0.0.0.0", "api_port": port}
    if tls is not None:
        config["tls"] = tls
    (home / "node.json").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if k != "CARELEDGER_HEALTH_URL"}
    env["CARELEDGER_HOME"] = str(home)
    ran = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, timeout=60)
    return ran.returncode


def test_plain_node_is_checked_where_node_json_says(
    serve: Callable[..., int], tmp_path: Path
) -> None:
    start = serve
    assert check(tmp_path, start()) == 0


def test_nothing_listening_is_unhealthy(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, now closed
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    assert check(tmp_path, port) == 1


def test_tls_node_is_checked_over_https_against_its_bundle(
    serve: Callable[..., int], tmp_path: Path
) -> None:
    start = serve
    cert, key, ca = tls_pair(tmp_path / "ours", "Ours")
    port = start(server_context(cert, key))
    tls = {"cert": str(cert), "key": str(key), "ca": str(ca)}
    assert check(tmp_path, port, tls) == 0


def test_a_certificate_from_outside_the_bundle_is_unhealthy(
    serve: Callable[..., int], tmp_path: Path
) -> None:
    """Something else answering on the node's port with a certificate the members' bundle
    does not vouch for is not taken for the node."""
    start = serve
    ours_cert, ours_key, ours_ca = tls_pair(tmp_path / "ours", "Ours")
    other_cert, other_key, _ = tls_pair(tmp_path / "other", "Other")
    port = start(server_context(other_cert, other_key))
    tls = {"cert": str(ours_cert), "key": str(ours_key), "ca": str(ours_ca)}
    assert check(tmp_path, port, tls) == 1


def test_plain_http_where_tls_is_configured_is_unhealthy(
    serve: Callable[..., int], tmp_path: Path
) -> None:
    start = serve
    cert, key, ca = tls_pair(tmp_path / "ours", "Ours")
    port = start()
    assert check(tmp_path, port, {"cert": str(cert), "key": str(key), "ca": str(ca)}) == 1
