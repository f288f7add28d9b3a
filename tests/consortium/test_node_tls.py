"""`careledger node start` over TLS, with certificates made by the operators' commands.

Two founders on loopback addresses: each makes its organisation's CA (`node tls ca`, named
for its own address only) and its node's certificate (`node tls issue`); both put their CA
certificates in one bundle (`node tls bundle`). Their nodes serve the API port over HTTPS
only, fetch each other's blobs over verified TLS, and `node status` reads its own node over
HTTPS. A record written at one gateway is read, with consent, at the other's.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fhir_flow import write_at_one_gateway_read_at_another
from orgs import CLI, LocalHost, Org, assemble

from nodeutil import free_port

pytestmark = pytest.mark.timeout(300)


class TlsOrg(Org):
    """An organisation whose node serves HTTPS with a certificate from its own CA."""

    def init(self) -> object:
        self.root.mkdir(parents=True, exist_ok=True)
        done = self.cli(
            "node", "init", "--data-dir", str(self.home), "--name", self.name,
            "--p2p", f"{self.host.address}:26656", "--rpc-port", str(self.rpc_port), "--https",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        from careledger.consortium.members import MemberFile

        self._member = MemberFile.parse(done.stdout.encode())
        self.member_file.write_text(done.stdout)
        ca, certs = self.root / "ca", self.root / "certs"
        for args in (
            ["ca", "--out", str(ca), "--name", self.name, "--permit", self.host.address],
            ["issue", "--ca", str(ca), "--host", self.host.address, "--out", str(certs)],
        ):
            made = self.cli("node", "tls", *args)
            assert made.returncode == 0, made.stderr
        return self._member

    def tls_args(self, bundle: Path) -> list[str]:
        certs = self.root / "certs"
        return [
            "--tls-cert", str(certs / "node.pem"), "--tls-key", str(certs / "node-key.pem"),
            "--tls-ca", str(bundle),
        ]  # fmt: skip


@pytest.fixture(scope="module")
def founders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[TlsOrg], Path]]:
    root = tmp_path_factory.mktemp("tls-founders")
    hosts = [LocalHost(f"127.0.6.{i + 1}") for i in range(2)]
    orgs = [TlsOrg(h, root / f"org{i}", f"Secure {i}", free_port()) for i, h in enumerate(hosts)]
    for org in orgs:
        org.init()
    bundle = root / "bundle.pem"
    done = orgs[0].cli(
        "node",
        "tls",
        "bundle",
        *(str(o.root / "ca" / "ca.pem") for o in orgs),
        "--out",
        str(bundle),
    )
    assert done.returncode == 0, done.stderr
    genesis = assemble(orgs, root, "tls-test")
    for org in orgs:
        others = [o for o in orgs if o is not org]
        args = [*org.start_args(genesis, others), *org.tls_args(bundle)]
        org.process = org.host.popen([*CLI, *args], org.log)
    try:
        for org in orgs:
            org.wait_height(2)
        yield orgs, bundle
    finally:
        for org in orgs:
            if org.process is not None:
                org.stop()
        for host in hosts:
            host.close()


def test_the_api_port_serves_https_only_with_the_members_certificates(
    founders: tuple[list[TlsOrg], Path],
) -> None:
    orgs, bundle = founders
    trusted = ssl.create_default_context(cafile=str(bundle))
    for org in orgs:
        assert org.api_url.startswith("https://")
        answer = httpx.get(org.api_url + "/status", verify=trusted, timeout=10)
        assert answer.status_code == 200
        assert answer.json()["replication"]["backlog"] == 0
        plain = org.api_url.replace("https://", "http://")
        with pytest.raises(httpx.HTTPError):
            httpx.get(plain + "/status", timeout=10).raise_for_status()
        with pytest.raises(httpx.ConnectError):  # the system's CAs do not vouch for it
            httpx.get(org.api_url + "/status", timeout=10)
        status = org.status()  # `node status` reaches its own node over HTTPS
        assert status["replication_backlog"] == 0 and status["validator_power"] == 10


def test_a_record_replicates_over_tls_and_reads_with_consent_at_the_other_gateway(
    founders: tuple[list[TlsOrg], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    orgs, bundle = founders
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))  # the test's own FHIR and node clients
    write_at_one_gateway_read_at_another(orgs[0], orgs[1], tmp_path)


def test_a_certificate_without_the_bundle_is_refused_before_anything_is_written(
    founders: tuple[list[TlsOrg], Path], tmp_path: Path
) -> None:
    org = founders[0][0]
    genesis = org.home / "cometbft" / "config" / "genesis.json"
    args = org.start_args(genesis, founders[0][1:])
    certs = org.root / "certs"
    done = org.cli(
        *args, "--tls-cert", str(certs / "node.pem"), "--tls-key", str(certs / "node-key.pem")
    )
    assert done.returncode == 1
    assert "--tls-cert needs --tls-ca" in done.stderr
