"""An operator's day: back up a running node, lose its machine, restore it on a fresh one; rotate
an organisation's key; a member leaves. Three founders on loopback addresses, every step
through the `careledger` command (orgs.py), real CometBFT and node processes.

The tests run in order on one network: the restored node replaces the lost one for the tests
after it.
"""

from __future__ import annotations

import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fhir_flow import write_at_one_gateway_read_at_another
from orgs import LocalHost, Org, assemble, wait_until

from careledger.consortium.members import MemberFile
from careledger.crypto.keyfile import KeyFile
from careledger.protocol.signing import RequestSigner
from nodeutil import free_port

pytestmark = pytest.mark.timeout(600)


class Network:
    def __init__(self, root: Path, orgs: list[Org], genesis: Path) -> None:
        self.root = root
        self.orgs = orgs
        self.genesis = genesis
        self.archive = root / "backup" / "hospital-1.tar"

    def peers_of(self, org: Org) -> list[Org]:
        return [o for o in self.orgs if o.name != org.name]

    def start(self, org: Org) -> None:
        org.start(self.genesis, self.peers_of(org))


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    root = tmp_path_factory.mktemp("operations")
    hosts = [LocalHost(f"127.0.7.{i + 1}") for i in range(3)]
    orgs = [
        Org(host, root / f"org{i}", f"Hospital {i}", rpc_port=free_port())
        for i, host in enumerate(hosts)
    ]
    for org in orgs:
        org.init()
    network = Network(root, orgs, assemble(orgs, root, "operations-test"))
    for org in orgs:
        network.start(org)
    try:
        for org in orgs:
            org.wait_height(2)
        yield network
    finally:
        for org in network.orgs:
            if org.process is not None:
                org.stop()
        for host in hosts:
            host.close()


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done


def restored_org(org: Org, root: Path) -> Org:
    """`org` as the operator knows it after the restore: the same host, a new node home."""
    again = Org(org.host, root, org.name, org.rpc_port)
    again._member = MemberFile.parse((root / "home" / "member.json").read_bytes())
    return again


def test_a_running_node_is_backed_up_without_its_chain_state(net: Network, tmp_path: Path) -> None:
    writer, node = net.orgs[0], net.orgs[1]
    write_at_one_gateway_read_at_another(writer, node, tmp_path)  # blobs, grants, a client
    net.archive.parent.mkdir()
    done = ok(node.cli("node", "backup", "--data-dir", str(node.home), "--out", str(net.archive)))
    assert node.process is not None and node.process.poll() is None  # it kept running

    assert stat.S_IMODE(net.archive.stat().st_mode) == 0o600
    secret = orjson.loads((node.home / "app" / "keys" / "organisation.json").read_bytes())
    assert secret["master_secret"] not in done.stdout + done.stderr
    with tarfile.open(net.archive) as tar:
        names = tar.getnames()
    assert names[0] == "careledger-backup.json"
    for kept in (
        "member.json",
        "app/keys/organisation.json",
        "app/keys/node.json",
        "app/gateway/gateway.sqlite",
        "cometbft/config/priv_validator_key.json",
        "cometbft/config/node_key.json",
        "cometbft/data/priv_validator_state.json",
    ):
        assert kept in names
    assert any(n.startswith("app/blobs/") for n in names)
    assert "app/state.sqlite" not in names  # rebuilt from the blocks
    assert not any(n.startswith("cometbft/data/blockstore") for n in names)


def test_a_node_restored_on_a_fresh_machine_catches_up_and_verifies(net: Network) -> None:
    """The machine is lost after the backup (the network of three halts without it); the
    backup is restored on a fresh one, which replays the chain from its peers, signs nothing
    its backup had signed, and joins the validators again."""
    lost, live = net.orgs[1], net.orgs[0]
    signed = orjson.loads(
        (lost.home / "cometbft" / "data" / "priv_validator_state.json").read_bytes()
    )
    assert lost.stop() == 0  # the machine is lost
    halted = live.height()
    target = net.root / "fresh-machine"
    ok(lost.cli("node", "restore", "--from", str(net.archive), "--data-dir", str(target / "home")))
    restored = restored_org(lost, target)
    net.orgs[1] = restored
    net.start(restored)
    live.wait_height(halted + 3, timeout=240)  # the network commits again with it
    restored.wait_height(halted + 3, timeout=240)
    assert restored.status()["validator_power"] == 10
    log = (restored.home / "cometbft.log").read_text()
    assert "height regression" in log  # the backup's last-signed state held
    now = orjson.loads(
        (restored.home / "cometbft" / "data" / "priv_validator_state.json").read_bytes()
    )
    assert int(now["height"]) > int(signed["height"])
    wait_until(lambda: restored.status()["replication_backlog"] == 0, 60, "no blob missing")
    assert restored.stop() == 0
    verified = ok(restored.cli("verify", "--data-dir", str(restored.home), timeout=300))
    assert "OK:" in verified.stdout, verified.stdout
    net.start(restored)
    restored.wait_height(live.height() + 1, timeout=120)


def test_an_organisation_rotates_its_key_and_its_node_works_after_a_restart(
    net: Network, tmp_path: Path
) -> None:
    org = net.orgs[0]
    old = org.key
    done = ok(org.cli("node", "rotate-key", "--data-dir", str(org.home), "--node", org.api_url))
    assert "Restart this node" in done.stdout
    new = org.key
    assert new.did == old.did and new.identity.signing_public != old.identity.signing_public
    (kept,) = (org.home / "app" / "keys").glob("organisation.json.previous-*")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert KeyFile.load(kept).identity.signing_public == old.identity.signing_public
    assert org.member.did == MemberFile.parse(org.home.joinpath("member.json").read_bytes()).did

    assert _signed_fetch(net.orgs[1], old, org.member.did).status_code == 401  # old key refused
    assert org.stop() == 0
    net.start(org)
    org.wait_height(net.orgs[1].height() + 1, timeout=120)
    write_at_one_gateway_read_at_another(org, net.orgs[2], tmp_path)  # it signs with the new key
    assert _signed_fetch(net.orgs[1], new, org.member.did).status_code == 200


def test_a_member_leaves_and_its_node_is_refused_blobs(net: Network) -> None:
    leaving = net.orgs[2]
    assert _signed_fetch(net.orgs[0], leaving.key, leaving.member.did).status_code == 200
    for voter in net.orgs[:2]:
        key = str(voter.home / "app" / "keys" / "organisation.json")
        ok(voter.cli(
            "consortium", "approve", "--as", key, "--subject", leaving.member.did, "--remove",
            "--node", voter.api_url,
        ))  # fmt: skip
    wait_until(lambda: leaving.status()["validator_power"] == 0, 60, "its power to go to 0")
    refused = _signed_fetch(net.orgs[0], leaving.key, leaving.member.did)
    assert refused.status_code == 401
    assert "no longer active" in refused.json()["error"]["message"]
    assert leaving.stop() == 0  # the operator stops its node
    height = net.orgs[0].height()
    net.orgs[0].wait_height(height + 2)  # the two remaining members commit on


def _signed_fetch(at: Org, key: KeyFile, did: str) -> httpx.Response:
    """`POST /replication/fetch` at `at`'s node, signed as the organisation `did` with `key`:
    what a member's node sends to copy blobs."""
    body: dict[str, Any] = {"hashes": ["0" * 64]}
    with httpx.Client(base_url=at.api_url, timeout=30) as client:
        return client.post("/replication/fetch", json=body, auth=RequestSigner(key.identity, did))
