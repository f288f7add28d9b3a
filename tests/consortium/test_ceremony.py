"""The genesis ceremony and `node start`'s checks: every bad input refused before anything is
written, with a message that says what is wrong.

Real node homes (`careledger node init`, which runs `cometbft init`), the real CLI as a
separate process; nothing here starts a node (test_node_start.py does).
"""

from __future__ import annotations

import base64
import hashlib
import shutil
from pathlib import Path

import orjson
import pytest
from orgs import LocalHost, Org, assemble

from careledger.consensus.cometbft.config import validator_address
from careledger.consortium.ceremony import assemble_genesis, verify_genesis
from careledger.consortium.home import NodeHome
from careledger.consortium.members import ConsortiumError, MemberFile
from careledger.consortium.runner import install, prepare
from careledger.crypto.keys import Identity

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def founders(tmp_path_factory: pytest.TempPathFactory) -> list[Org]:
    root = tmp_path_factory.mktemp("ceremony")
    orgs = [Org(LocalHost(f"127.0.9.{i + 1}"), root / f"org{i}", f"Hospital {i}") for i in range(3)]
    for org in orgs:
        org.init()
    return orgs


@pytest.fixture(scope="module")
def genesis(founders: list[Org], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return assemble(founders[:2], tmp_path_factory.mktemp("genesis"), "ceremony-test")


def snapshot(org: Org) -> dict[str, bytes]:
    """Every file of a node home, to show that a refused start wrote nothing."""
    return {str(p): p.read_bytes() for p in sorted(org.home.rglob("*")) if p.is_file()}


def refused(org: Org, *args: str) -> str:
    """Run a command that must fail; its error message."""
    done = org.cli(*args)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    return " ".join(done.stderr.split())


def test_the_member_file_holds_public_keys_only_and_matches_the_home(founders: list[Org]) -> None:
    org = founders[0]
    text = org.member_file.read_text()
    key = org.key
    assert key.identity.secret("x").hex() not in text  # nothing derived from the master secret
    for secret in ("priv_key", "private", "seed", "phrase"):
        assert secret not in text
    assert org.member.did == key.did
    assert (org.home / "member.json").stat().st_mode & 0o777 == 0o644
    assert (org.home / "app" / "keys" / "organisation.json").stat().st_mode & 0o777 == 0o600


def test_a_member_file_with_a_malformed_key_is_refused(founders: list[Org], tmp_path: Path) -> None:
    doc = orjson.loads(founders[0].member_file.read_bytes())
    for field, bad in [
        ("validator_pub_key", "zz" * 32),
        ("encryption_key", "ab" * 31),
        ("did", "did:key:zNotAKey"),
        ("node_id", "12"),
        ("p2p_address", "host-without-port"),
    ]:
        path = tmp_path / f"{field}.json"
        path.write_bytes(orjson.dumps({**doc, field: bad}))
        message = refused(
            founders[0], "consortium", "genesis", str(path), str(founders[1].member_file),
            "--chain-id", "x", "--out", str(tmp_path / f"{field}-genesis.json"),
        )  # fmt: skip
        assert field in message
        assert not (tmp_path / f"{field}-genesis.json").exists()


def test_two_member_files_with_one_validator_key_are_refused(founders: list[Org]) -> None:
    a, b = founders[0].member, founders[1].member
    twin = MemberFile(**{**b.__dict__, "validator_pub_key": a.validator_pub_key})
    with pytest.raises(ConsortiumError, match="validator key"):
        assemble_genesis([a, twin], "twins")


def test_every_founder_verifies_the_same_genesis(founders: list[Org], genesis: Path) -> None:
    digest = hashlib.sha256(genesis.read_bytes()).hexdigest()
    for org in founders[:2]:
        done = org.cli("consortium", "verify-genesis", str(genesis), "--data-dir", str(org.home))
        assert done.returncode == 0, done.stderr
        assert f"sha256 {digest}" in done.stdout


def test_a_genesis_that_does_not_name_the_operator_is_refused(
    founders: list[Org], genesis: Path
) -> None:
    outsider = founders[2]
    before = snapshot(outsider)
    message = refused(
        outsider, "consortium", "verify-genesis", str(genesis), "--data-dir", str(outsider.home)
    )
    assert "does not name this organisation" in message
    message = refused(outsider, *outsider.start_args(genesis, founders[:2]))
    assert "does not name this organisation" in message
    assert snapshot(outsider) == before


def test_a_member_list_other_than_the_agreed_one_is_refused(
    founders: list[Org], genesis: Path
) -> None:
    org = founders[0]
    agreed = [a for o in founders for a in ("--members", str(o.member_file))]  # three agreed
    message = refused(
        org, "consortium", "verify-genesis", str(genesis), "--data-dir", str(org.home), *agreed
    )
    assert "are not the 3 member files agreed" in message
    message = refused(
        org, "consortium", "verify-genesis", str(genesis), "--data-dir", str(org.home),
        "--hash", "00" * 32,
    )  # fmt: skip
    assert "not the" in message and "agreed" in message


def test_a_validator_slipped_into_the_genesis_is_refused(
    founders: list[Org], genesis: Path, tmp_path: Path
) -> None:
    """The assembler adds a consensus key of its own that no member answers for: with it, it
    would hold a third of the voting power without being a member."""
    doc = orjson.loads(genesis.read_bytes())
    key = Identity.generate().signing_public
    doc["validators"].append(
        {
            "address": validator_address(key),
            "pub_key": {
                "type": "tendermint/PubKeyEd25519",
                "value": base64.b64encode(key).decode(),
            },
            "power": "10",
            "name": "nobody",
        }
    )
    forged = tmp_path / "forged.json"
    forged.write_bytes(orjson.dumps(doc))
    org = founders[0]
    before = snapshot(org)
    message = refused(org, "consortium", "verify-genesis", str(forged), "--data-dir", str(org.home))
    assert "validators are not exactly the founders" in message
    assert "validators are not exactly" in refused(org, *org.start_args(forged, founders[1:2]))
    assert snapshot(org) == before


def test_a_changed_entry_for_the_operator_is_refused(founders: list[Org], genesis: Path) -> None:
    doc = orjson.loads(genesis.read_bytes())
    doc["app_state"]["organisations"][0]["encryption_key"] = "11" * 32
    with pytest.raises(ConsortiumError, match="differs from this node's member file"):
        verify_genesis(orjson.dumps(doc), founders[0].member)


def test_another_organisations_home_is_refused(founders: list[Org], genesis: Path) -> None:
    org = founders[0]
    before = snapshot(org)
    message = refused(org, *org.start_args(genesis, founders[1:2]), "--name", "Hospital 1")
    assert "'Hospital 0''s node home, not 'Hospital 1''s" in message
    assert snapshot(org) == before


def test_a_home_with_another_homes_member_file_is_refused(
    founders: list[Org], genesis: Path, tmp_path: Path
) -> None:
    """Files of two node homes mixed (one organisation's keys, another's member file): the
    node would announce keys it does not hold."""
    mixed = Org(founders[0].host, tmp_path / "mixed", "Hospital 0")
    shutil.copytree(founders[0].home, mixed.home)
    (mixed.home / "member.json").write_bytes(founders[1].member_file.read_bytes())
    mixed._member = founders[1].member
    message = refused(mixed, *mixed.start_args(genesis, founders[:1]))
    assert "is not the key this directory holds" in message


def test_malformed_peers_are_refused(founders: list[Org], genesis: Path) -> None:
    org = founders[0]
    before = snapshot(org)
    args = org.start_args(genesis, founders[1:2])
    at = args.index("--peers") + 1
    for bad in [
        "nothex@10.0.0.1:26656",
        f"{founders[1].member.node_id}@10.0.0.1",
        org.member.p2p_peer,
    ]:
        args[at] = bad
        assert "peer" in refused(org, *args)
    assert snapshot(org) == before


def test_init_refuses_a_home_that_holds_keys(founders: list[Org]) -> None:
    org = founders[0]
    message = refused(
        org, "node", "init", "--data-dir", str(org.home), "--name", "Again", "--p2p", "1.2.3.4:1"
    )
    assert "not empty" in message


def test_a_node_binds_where_told_and_announces_its_member_files_address(
    founders: list[Org], genesis: Path, tmp_path: Path
) -> None:
    """In a container the node binds 0.0.0.0 but peers dial the address the members agreed."""
    org = founders[1]
    message = refused(org, *org.start_args(genesis, founders[:1]), "--listen-p2p", "nowhere")
    assert "--listen-p2p" in message
    home = NodeHome(tmp_path / "copy")
    shutil.copytree(org.home, home.root)
    plan = prepare(
        home, genesis.read_bytes(), founders[0].member.p2p_peer,
        listen_p2p="0.0.0.0:26656", listen_api="0.0.0.0:8443",
    )  # fmt: skip
    install(plan)
    config = (home.cometbft / "config" / "config.toml").read_text()
    assert 'laddr = "tcp://0.0.0.0:26656"' in config
    assert f'external_address = "{org.member.p2p_address}"' in config
    assert home.config().api_port == 8443 and home.config().api_host == "0.0.0.0"
    assert home.member().api_url == org.member.api_url  # what the members know is unchanged
