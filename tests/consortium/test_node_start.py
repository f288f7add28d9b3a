"""Organisations run their own nodes with `careledger node start`, and a third one joins.

Here on loopback addresses of one machine (test_four_hosts.py does it across hosts that
share no loopback): each founder makes its keys with `node init`, the genesis is assembled
from the member files and verified by each, each node runs in the foreground as an operator's
supervisor would run it, and a new organisation applies with a sponsor's voucher, block-syncs
as a full node and becomes a validator when the members vote it in.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fhir_flow import write_at_one_gateway_read_at_another
from orgs import LocalHost, Org, assemble, wait_until

from careledger.consensus.cometbft.rpc import sync_call
from nodeutil import free_port

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def founders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Org]]:
    root = tmp_path_factory.mktemp("founders")
    hosts = [LocalHost(f"127.0.8.{i + 1}") for i in range(2)]
    orgs = [
        Org(host, root / f"org{i}", f"Hospital {i}", rpc_port=free_port())
        for i, host in enumerate(hosts)
    ]
    for org in orgs:
        org.init()
    genesis = assemble(orgs, root, "founders-test")
    for org in orgs:
        org.start(genesis, [o for o in orgs if o is not org])
    try:
        for org in orgs:
            org.wait_height(2)
        yield orgs
    finally:
        for org in orgs:
            if org.process is not None:
                org.stop()
        for host in hosts:
            host.close()


def test_each_founder_runs_a_validator_that_commits_with_its_peers(founders: list[Org]) -> None:
    start = founders[0].height()
    for org in founders:
        org.wait_height(start + 2)
        status = org.status()
        assert status["running"] is True
        assert status["validator_power"] == 10
        assert status["peers"] == [o.name.replace(" ", "-") for o in founders if o is not org]
        assert status["catching_up"] is False
        assert status["replication_backlog"] == 0
    hashes = {_app_hash(org, start + 1) for org in founders}
    assert len(hashes) == 1


def _app_hash(org: Org, height: int) -> str:
    rpc = f"http://127.0.0.1:{org.rpc_port}"
    header = sync_call(rpc, "header", height=str(height + 1))["header"]
    return str(header["app_hash"])


def test_a_record_written_at_one_gateway_is_read_with_consent_at_the_other(
    founders: list[Org], tmp_path: Path
) -> None:
    write_at_one_gateway_read_at_another(founders[0], founders[1], tmp_path)


def test_cometbfts_rpc_listens_on_loopback_only(founders: list[Org]) -> None:
    config = (founders[0].home / "cometbft" / "config" / "config.toml").read_text()
    assert f'laddr = "tcp://127.0.0.1:{founders[0].rpc_port}"' in config
    assert f'laddr = "tcp://{founders[0].host.address}:26656"' in config


def test_a_second_start_on_a_running_home_is_refused(founders: list[Org], tmp_path: Path) -> None:
    org = founders[0]
    genesis = org.home / "cometbft" / "config" / "genesis.json"
    done = org.cli(*org.start_args(genesis, founders[1:]), timeout=60)
    assert done.returncode == 1
    assert "in use by a running node" in done.stderr


def test_a_peer_of_another_chain_is_never_connected_nor_its_home_started_on_ours(
    founders: list[Org], tmp_path: Path
) -> None:
    """A node of another chain names our founder as its peer: CometBFT's handshake refuses
    a peer of another network, so neither side counts it, and both chains go on."""
    host = LocalHost("127.0.8.9")
    stranger = Org(host, tmp_path / "stranger", "Stranger", free_port())
    stranger.init()
    genesis = assemble([stranger], tmp_path, "another-chain")
    stranger.start(genesis, founders[:1])
    try:
        stranger.wait_height(3)
        assert stranger.status()["peers"] == []
        assert "Stranger" not in founders[0].status()["peers"]
        log = (stranger.home / "cometbft.log").read_text()
        assert "founders-test" in log or "network" in log.lower()
    finally:
        assert stranger.stop() == 0
        host.close()
    founders_genesis = founders[0].home / "cometbft" / "config" / "genesis.json"
    done = stranger.cli(*stranger.start_args(founders_genesis, founders, join=True))
    assert done.returncode == 1
    assert "belongs to chain another-chain" in " ".join(done.stderr.split())


def test_a_new_organisation_joins_syncs_and_is_voted_in_as_a_validator(
    founders: list[Org], tmp_path: Path
) -> None:
    sponsor = founders[0]
    host = LocalHost("127.0.8.3")
    joiner = Org(host, tmp_path / "joiner", "Clinic Three", free_port())
    joiner.init()
    voucher = tmp_path / "voucher.json"
    sponsor_key = str(sponsor.home / "app" / "keys" / "organisation.json")
    ok(sponsor.cli(
        "consortium", "voucher", "--as", sponsor_key, "--member", str(joiner.member_file),
        "--node", sponsor.api_url, "--out", str(voucher),
    ))  # fmt: skip
    ok(joiner.cli(
        "consortium", "apply", "--data-dir", str(joiner.home), "--voucher", str(voucher),
        "--node", sponsor.api_url,
    ))  # fmt: skip
    genesis = sponsor.home / "cometbft" / "config" / "genesis.json"
    joiner.start(genesis, founders, join=True)
    try:
        joiner.wait_height(sponsor.height(), timeout=120)  # block-synced from its peers
        assert joiner.status()["validator_power"] == 0  # a full node until voted in

        for voter in founders:
            key = str(voter.home / "app" / "keys" / "organisation.json")
            ok(voter.cli(
                "consortium", "approve", "--as", key, "--subject", joiner.member.did,
                "--node", voter.api_url,
            ))  # fmt: skip
        wait_until(lambda: joiner.status()["validator_power"] == 10, 60, "the new validator")
        ok(joiner.cli(
            "consortium", "register-node", "--data-dir", str(joiner.home), "--node", sponsor.api_url
        ))  # fmt: skip
        validators = sync_call(f"http://127.0.0.1:{sponsor.rpc_port}", "validators")
        keys = {v["pub_key"]["value"] for v in validators["validators"]}
        assert base64.b64encode(bytes.fromhex(joiner.member.validator_pub_key)).decode() in keys
        height = sponsor.height()
        joiner.wait_height(height + 2)  # three validators commit together
    finally:
        assert joiner.stop() == 0
        host.close()


def ok(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, (done.stdout, done.stderr)
