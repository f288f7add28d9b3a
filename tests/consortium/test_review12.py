"""Review of issue 12: attacks on the genesis ceremony, node homes and `node start`, each run
against the real commands (real node homes from `careledger node init`) and shown refused."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from orgs import LocalHost, Org, assemble, wait_until

from careledger.consensus.cometbft.server import abci_socket_path
from careledger.consortium.ceremony import verify_genesis
from careledger.consortium.members import ConsortiumError, MemberFile
from nodeutil import free_port

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def founders(tmp_path_factory: pytest.TempPathFactory) -> list[Org]:
    root = tmp_path_factory.mktemp("review12")
    orgs = [Org(LocalHost(f"127.0.12.{i + 1}"), root / f"org{i}", f"Clinic {i}") for i in range(2)]
    for org in orgs:
        org.init()
    return orgs


@pytest.fixture(scope="module")
def genesis(founders: list[Org], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return assemble(founders, tmp_path_factory.mktemp("genesis"), "review-12")


def snapshot(org: Org) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(org.home.rglob("*")) if p.is_file()}


def refused(org: Org, *args: str) -> str:
    done = org.cli(*args)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    return " ".join(done.stderr.split())


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = doc
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = value

    return edit


def _power_as_number(doc: dict[str, Any]) -> None:
    doc["validators"][0]["power"] = 10


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set("consensus_params.block.max_bytes", "104857600"), "block.max_bytes"),
        (_set("consensus_params.block.max_bytes", "-1"), "block.max_bytes"),
        (_set("consensus_params.evidence.max_age_num_blocks", "1"), "max_age_num_blocks"),
        (_set("consensus_params.evidence.max_age_duration", "1000000000"), "max_age_duration"),
        (_set("consensus_params.validator.pub_key_types", ["secp256k1"]), "pub_key_types"),
        (_set("consensus_params.abci.vote_extensions_enable_height", "2"), "vote_extensions"),
        (_set("consensus_params.block.max_bytes", 22020096), "block.max_bytes"),
        (_set("consensus_params.feature.pbts_enable_height", "1"), "feature"),
        (_set("initial_height", "1000"), "initial_height"),
        (_set("app_hash", "AB" * 32), "app_hash"),
        (_set("genesis_time", "2026-01-01T00:00:00Z"), "genesis_time differs"),
        (_set("app_state.genesis_time", "2999-01-01T00:00:00Z"), "genesis_time differs"),
        (_set("extra", {"x": 1}), "unknown field 'extra'"),
        (_power_as_number, "malformed validator entry"),
    ],
)
def test_a_genesis_whose_cometbft_fields_disagree_or_overreach_is_refused(
    founders: list[Org], genesis: Path, edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    doc = orjson.loads(genesis.read_bytes())
    edit(doc)
    with pytest.raises(ConsortiumError, match=message.replace(".", r"\.")):
        verify_genesis(orjson.dumps(doc), founders[0].member)


def test_a_genesis_dated_far_ahead_is_refused_before_node_start_writes(
    founders: list[Org], genesis: Path, tmp_path: Path
) -> None:
    doc = orjson.loads(genesis.read_bytes())
    doc["genesis_time"] = doc["app_state"]["genesis_time"] = "2999-01-01T00:00:00.000000Z"
    future = tmp_path / "future.json"
    future.write_bytes(orjson.dumps(doc))
    org = founders[0]
    before = snapshot(org)
    message = refused(org, *org.start_args(future, founders[1:]))
    assert "more than a day ahead" in message
    assert "more than a day ahead" in refused(
        org, "consortium", "verify-genesis", str(future), "--data-dir", str(org.home)
    )
    assert snapshot(org) == before


def test_the_assembled_genesis_still_verifies(founders: list[Org], genesis: Path) -> None:
    assert verify_genesis(genesis.read_bytes(), founders[0].member).chain_id == "review-12"


@pytest.fixture(scope="module")
def outsider(tmp_path_factory: pytest.TempPathFactory) -> Org:
    """An organisation not in the founders' genesis (it would start with --join)."""
    org = Org(LocalHost("127.0.12.9"), tmp_path_factory.mktemp("outsider"), "Outsider")
    org.init()
    return org


def test_a_node_json_pointing_cometbfts_rpc_off_loopback_is_refused(
    outsider: Org, founders: list[Org], genesis: Path
) -> None:
    config_file = outsider.home / "node.json"
    original = config_file.read_bytes()
    try:
        for public in ("http://0.0.0.0:26657", "http://10.1.2.3:26657", "http://example.org:80"):
            config_file.write_bytes(orjson.dumps({**orjson.loads(original), "rpc_url": public}))
            before = snapshot(outsider)
            message = refused(outsider, *outsider.start_args(genesis, founders, join=True))
            assert "must be http:// on a loopback address" in message
            assert snapshot(outsider) == before  # config.toml not written with a public laddr
            status = refused(outsider, "node", "status", "--data-dir", str(outsider.home))
            assert "must be http:// on a loopback address" in status  # nothing dialled
        config_file.write_bytes(b"{not json")
        assert "not a node configuration" in refused(
            outsider, "node", "status", "--data-dir", str(outsider.home)
        )
    finally:
        config_file.write_bytes(original)


def _solo(root: Path, address: str) -> tuple[Org, Path]:
    """One organisation that is the whole network (it commits alone)."""
    org = Org(LocalHost(address), root / "solo", "Solo", rpc_port=free_port())
    org.init()
    return org, assemble([org], root, "review-12-solo")


def _cometbft_pid(org: Org) -> int:
    wait_until(lambda: "CometBFT started (pid" in org.log.read_text(), 60, "CometBFT started")
    return int(org.log.read_text().split("CometBFT started (pid ")[1].split(")")[0])


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/status").read_text().count("State:\tZ") == 1


def test_cometbft_killed_stops_the_node_and_a_crash_lock_does_not_block_a_restart(
    tmp_path: Path,
) -> None:
    org, genesis = _solo(tmp_path, "127.0.12.20")
    try:
        org.start(genesis, [])
        org.wait_height(2)
        os.kill(_cometbft_pid(org), signal.SIGKILL)  # CometBFT dies under the node
        assert org.process is not None
        assert org.process.wait(60) == 1  # a supervisor sees the failure and restarts both
        assert "CometBFT exited with status -9; stopping the node" in org.log.read_text()
        org.process = None

        org.start(genesis, [])  # the lock file of the stopped node is still there
        org.wait_height(3)
        comet = _cometbft_pid_after(org, 1)
        assert org.process is not None
        org.process.kill()  # the node itself crashes: CometBFT loses its app and exits
        org.process.wait(30)
        org.process = None
        wait_until(lambda: _gone(comet), 60, "the orphaned CometBFT to exit")
        assert (org.home / "node.lock").exists()

        org.start(genesis, [])  # a stale node.lock from a crash does not block a restart
        org.wait_height(4)
        assert org.stop() == 0
    finally:
        org.host.close()  # type: ignore[attr-defined]


def _cometbft_pid_after(org: Org, skip: int) -> int:
    """The pid of the (skip+1)th CometBFT this node started."""
    marker = "CometBFT started (pid "

    def started() -> bool:
        return org.log.read_text().count(marker) > skip

    wait_until(started, 60, "CometBFT started again")
    return int(org.log.read_text().split(marker)[skip + 1].split(")")[0])


def test_a_moved_home_starts_on_its_own_abci_socket(tmp_path: Path) -> None:
    org, genesis = _solo(tmp_path, "127.0.12.21")
    try:
        org.start(genesis, [])
        org.wait_height(2)
        assert org.stop() == 0
        old_socket = orjson.loads((org.home / "node.json").read_bytes())["abci_address"]
        moved = tmp_path / "moved"
        org.root.rename(moved)
        org.root = moved
        org.start(genesis, [])
        org.wait_height(3)
        config = orjson.loads((org.home / "node.json").read_bytes())
        assert config["abci_address"] != old_socket
        assert config["abci_address"] == f"unix://{abci_socket_path(org.home)}"
        assert org.stop() == 0
    finally:
        org.host.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("field", "bad", "message"),
    [
        ("p2p_address", "0.0.0.0:26656", "not an address other members can reach"),
        ("p2p_address", "[::]:26656", "not an address other members can reach"),
        ("p2p_address", "224.0.0.1:26656", "not an address other members can reach"),
        ("api_url", "http://0.0.0.0:26658", "not an address other members can reach"),
        ("api_url", "http://user@evil.example:26658", "not a host name or address"),
        ("api_url", "https://hospital.example", "is not HOST:PORT"),
        ("api_url", "ftp://hospital.example:21", "must be http(s)://HOST:PORT"),
        ("name", "Clinic \u202egnp.exe", "printable characters"),
        ("name", "Clinic\x1b[31m", "printable characters"),
        ("name", "x" * 16_000, "larger than 16384 bytes"),
        ("name", "x" * 201, "printable characters"),
    ],
)
def test_a_member_file_others_cannot_dial_or_display_safely_is_refused(
    founders: list[Org], field: str, bad: str, message: str
) -> None:
    doc = orjson.loads(founders[0].member_file.read_bytes())
    with pytest.raises(ConsortiumError, match=re.escape(message)):
        MemberFile.parse(orjson.dumps({**doc, field: bad}))


def test_node_init_on_an_unspecified_address_writes_nothing(tmp_path: Path) -> None:
    org = Org(LocalHost("127.0.12.10"), tmp_path, "Anywhere")
    for flags in (["--p2p", "0.0.0.0:26656"], ["--p2p", "127.0.12.10:26656", "--api", "[::]:80"]):
        done = org.cli("node", "init", "--data-dir", str(org.home), "--name", "A", *flags)
        assert done.returncode == 1, done.stdout
        assert "not an address other members can reach" in " ".join(done.stderr.split())
        assert not org.home.exists()
