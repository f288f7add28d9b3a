"""The pure CometBFT light-client code against values made by CometBFT v0.38.25 itself.

tests/vectors/cometbft/recorded.json: a live 4-validator network's RPC answers (record.py);
generated.json: values computed by CometBFT's Go code for cases a live network does not show
(gen/main.go). Every hash and every signature must come out as CometBFT's; then the attacks a
forged proof would need (an altered signature, too few signatures, another validator set, a
header that is not the one signed) must fail.
"""

from __future__ import annotations

import base64
import itertools
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from careledger.chain.block import data_hash, tx_inclusion_proof
from careledger.chain.results import TxOutcome, results_hash
from careledger.crypto.keys import Identity
from careledger.crypto.merkle import leaf_hash
from careledger.protocol.cometbft import (
    FLAG_ABSENT,
    BlockID,
    Commit,
    CommitSig,
    Header,
    LightClientError,
    Validator,
    ValidatorSet,
    certify,
    format_time,
    parse_time,
    verify_commit,
    verify_commit_trusting,
    vote_sign_bytes,
)

VECTORS = Path(__file__).parent / "vectors" / "cometbft"
RECORDED = orjson.loads((VECTORS / "recorded.json").read_bytes())
GENERATED = orjson.loads((VECTORS / "generated.json").read_bytes())
CHAIN_ID = RECORDED["chain_id"]
HEIGHTS = RECORDED["heights"]


def _outcome(result: dict[str, Any]) -> TxOutcome:
    data = base64.b64decode(result["data"] or "")
    return TxOutcome(int(result["code"]), data, int(result["gas_wanted"]), int(result["gas_used"]))


# --- recorded from the live binary ---------------------------------------------------------


@pytest.mark.parametrize("recorded", HEIGHTS, ids=lambda h: f"height-{h['block_id']['hash'][:6]}")
def test_a_recorded_header_hashes_to_its_block_id(recorded: dict[str, Any]) -> None:
    header = Header.from_json(recorded["block"]["header"])
    assert header.hash().hex().upper() == recorded["block_id"]["hash"]
    assert header.to_json() == recorded["block"]["header"]  # the RPC's own JSON, round trip
    txs = [base64.b64decode(t) for t in recorded["block"]["data"]["txs"] or []]
    assert data_hash(txs) == header.data_hash


@pytest.mark.parametrize("recorded", HEIGHTS, ids=lambda h: f"height-{h['block_id']['hash'][:6]}")
def test_a_recorded_commit_verifies_against_the_validators_the_header_names(
    recorded: dict[str, Any],
) -> None:
    header = Header.from_json(recorded["commit"]["header"])
    validators = ValidatorSet.from_json(recorded["validators"])
    assert validators.hash() == header.validators_hash
    commit = Commit.from_json(recorded["commit"]["commit"])
    assert commit.block_id.hash == header.hash()
    signed = verify_commit(CHAIN_ID, validators, commit.block_id, header.height, commit)
    assert 3 * signed > 2 * validators.total_power


def test_the_genesis_validators_in_cometbfts_order_hash_to_the_headers_validators_hash() -> None:
    genesis = [Validator.from_json(v) for v in RECORDED["genesis_validators"]]
    random.Random(7).shuffle(genesis)
    first = Header.from_json(HEIGHTS[0]["block"]["header"])
    assert ValidatorSet.canonical(genesis).hash() == first.validators_hash


def test_each_blocks_last_commit_and_last_results_hash_certify_the_block_before() -> None:
    for before, after in itertools.pairwise(HEIGHTS):
        header = Header.from_json(after["block"]["header"])
        assert header.last_block_id.hash.hex().upper() == before["block_id"]["hash"]
        outcomes = [_outcome(r) for r in before["results"]]
        assert results_hash(outcomes) == header.last_results_hash
        last_commit = Commit.from_json(after["block"]["last_commit"])
        validators = ValidatorSet.from_json(before["validators"])
        verify_commit(CHAIN_ID, validators, last_commit.block_id, header.height - 1, last_commit)
    assert [r["code"] for r in HEIGHTS[0]["results"]] == [0, 10, 0]  # a failure is covered


def test_cometbfts_tx_proofs_are_the_proofs_this_code_makes() -> None:
    for found in RECORDED["txs"]:
        height = int(found["height"])
        block = HEIGHTS[height - 1]["block"]
        txs = [base64.b64decode(t) for t in block["data"]["txs"]]
        ours = tx_inclusion_proof(txs, int(found["index"]))
        theirs = found["proof"]["proof"]
        assert ours.total == int(theirs["total"]) and ours.index == int(theirs["index"])
        assert [a.hex() for a in ours.aunts] == [base64.b64decode(a).hex() for a in theirs["aunts"]]
        assert base64.b64decode(theirs["leaf_hash"]) == leaf_hash(ours.leaf)
        assert bytes.fromhex(found["proof"]["root_hash"]) == data_hash(txs)


def test_a_block_is_certified_by_the_next_blocks_commit() -> None:
    header = Header.from_json(HEIGHTS[0]["block"]["header"])
    after = HEIGHTS[1]
    commit = Commit.from_json(after["commit"]["commit"])
    validators = ValidatorSet.from_json(after["validators"])
    certified = certify(header, Header.from_json(after["commit"]["header"]), commit, validators)
    assert certified.header == header and certified.signed_power == validators.total_power


# --- generated by CometBFT's Go code -------------------------------------------------------


@pytest.mark.parametrize("case", GENERATED["results"], ids=lambda c: c["hash"][:8])
def test_results_encode_and_hash_as_cometbfts_new_results(case: dict[str, Any]) -> None:
    outcomes = [
        TxOutcome(r["code"], bytes.fromhex(r["data"]), r["gas_wanted"], r["gas_used"])
        for r in case["results"] or []
    ]
    assert [o.encode().hex() for o in outcomes] == [r["encoded"] for r in case["results"] or []]
    assert results_hash(outcomes).hex() == case["hash"]


@pytest.mark.parametrize("case", GENERATED["votes"], ids=lambda c: c["sign_bytes"][:12])
def test_vote_sign_bytes_are_cometbfts(case: dict[str, Any]) -> None:
    block_id = BlockID.from_json(case["block_id"])
    made = vote_sign_bytes(
        case["chain_id"], case["height"], case["round"], block_id, parse_time(case["timestamp"])
    )
    assert made.hex() == case["sign_bytes"]


@pytest.mark.parametrize("case", GENERATED["headers"], ids=lambda c: c["hash"][:8])
def test_header_hashes_are_cometbfts(case: dict[str, Any]) -> None:
    assert Header.from_json(case["header"]).hash().hex() == case["hash"]


def test_validator_set_hash_and_order_are_cometbfts() -> None:
    (case,) = GENERATED["validators"]
    validators = [
        Validator(base64.b64decode(v["pub_key"]), v["voting_power"]) for v in case["validators"]
    ]
    assert [v.address.hex().upper() for v in validators] == [
        v["address"] for v in case["validators"]
    ]
    assert ValidatorSet(tuple(validators)).hash().hex() == case["hash"]
    shuffled = validators[::-1]
    assert ValidatorSet.canonical(shuffled).validators == tuple(validators)


def test_times_parse_and_format_as_go_writes_them() -> None:
    for text in ("2026-01-02T03:04:05.000006007Z", "1960-01-01T00:00:00.000000001Z"):
        assert format_time(*parse_time(text)) == text
    assert parse_time("1970-01-01T00:00:01Z") == (1, 0)
    assert format_time(0, 500_000_000) == "1970-01-01T00:00:00.5Z"
    with pytest.raises(LightClientError):
        parse_time("2026-01-02 03:04:05Z")


# --- attacks -------------------------------------------------------------------------------


def _signed_block() -> tuple[Header, Commit, ValidatorSet]:
    recorded = HEIGHTS[2]
    header = Header.from_json(recorded["commit"]["header"])
    return header, Commit.from_json(recorded["commit"]["commit"]), _validators(recorded)


def _validators(recorded: dict[str, Any]) -> ValidatorSet:
    return ValidatorSet.from_json(recorded["validators"])


def _with_signatures(commit: Commit, signatures: list[CommitSig]) -> Commit:
    return Commit(commit.height, commit.round, commit.block_id, tuple(signatures))


def test_one_altered_signature_fails_the_commit() -> None:
    header, commit, validators = _signed_block()
    sigs = list(commit.signatures)
    bad = bytearray(sigs[3].signature)
    bad[5] ^= 0x40
    sigs[3] = CommitSig(sigs[3].flag, sigs[3].validator_address, sigs[3].time, bytes(bad))
    with pytest.raises(LightClientError, match=r"signature 3 .* does not verify"):
        verify_commit(
            CHAIN_ID, validators, commit.block_id, header.height, _with_signatures(commit, sigs)
        )


def test_signatures_removed_below_two_thirds_fail_the_commit() -> None:
    header, commit, validators = _signed_block()
    absent = CommitSig(FLAG_ABSENT, b"", (0, 0), b"")
    two = [*commit.signatures[:2], absent, absent]
    with pytest.raises(LightClientError, match="20 of 40 voting power signed: not more than 2/3"):
        verify_commit(
            CHAIN_ID, validators, commit.block_id, header.height, _with_signatures(commit, two)
        )
    three = [*commit.signatures[:3], absent]  # 30 of 40 is enough
    assert (
        verify_commit(
            CHAIN_ID, validators, commit.block_id, header.height, _with_signatures(commit, three)
        )
        == 30
    )
    with pytest.raises(LightClientError, match="3 signatures for a set of 4"):
        verify_commit(
            CHAIN_ID,
            validators,
            commit.block_id,
            header.height,
            _with_signatures(commit, list(commit.signatures[:3])),
        )


def test_a_commit_for_another_chain_or_block_fails() -> None:
    header, commit, validators = _signed_block()
    with pytest.raises(LightClientError, match="does not verify"):
        verify_commit("another-chain", validators, commit.block_id, header.height, commit)
    other = BlockID(b"\x01" * 32, commit.block_id.parts_total, commit.block_id.parts_hash)
    with pytest.raises(LightClientError, match="another block id"):
        verify_commit(CHAIN_ID, validators, other, header.height, commit)
    with pytest.raises(LightClientError, match="for height"):
        verify_commit(CHAIN_ID, validators, commit.block_id, header.height + 1, commit)


def _strangers(count: int) -> ValidatorSet:
    return ValidatorSet.canonical(
        [Validator(Identity.generate().signing_public, 10) for _ in range(count)]
    )


def test_a_different_validator_set_fails() -> None:
    header, commit, validators = _signed_block()
    strangers = _strangers(4)
    with pytest.raises(LightClientError, match="not by validator 0"):
        verify_commit(CHAIN_ID, strangers, commit.block_id, header.height, commit)
    with pytest.raises(LightClientError, match="0 of 40 voting power"):
        verify_commit_trusting(CHAIN_ID, strangers, commit)
    before = Header.from_json(HEIGHTS[1]["block"]["header"])
    with pytest.raises(LightClientError, match="not more than 1/3"):
        certify(before, header, commit, validators, trusted=strangers)
    with pytest.raises(LightClientError, match="validators_hash"):
        certify(before, header, commit, strangers)


def test_a_trusted_set_that_changed_a_little_still_certifies_with_more_than_a_third() -> None:
    header, commit, validators = _signed_block()
    before = Header.from_json(HEIGHTS[1]["block"]["header"])
    # The user trusts an older set: two of today's validators and two since removed.
    older = ValidatorSet.canonical([*validators.validators[:2], *_strangers(2).validators])
    certified = certify(before, header, commit, validators, trusted=older)
    assert "1/3" in certified.trusted_by
    # One of four known is not more than a third.
    fewer = ValidatorSet.canonical([validators.validators[0], *_strangers(3).validators])
    with pytest.raises(LightClientError, match="10 of 40"):
        certify(before, header, commit, validators, trusted=fewer)


def test_a_header_that_is_not_the_one_the_next_block_names_fails() -> None:
    header, commit, validators = _signed_block()
    before = Header.from_json(HEIGHTS[1]["block"]["header"])
    altered = Header.from_json({**HEIGHTS[1]["block"]["header"], "app_hash": "00" * 32})
    with pytest.raises(LightClientError, match="header altered"):
        certify(altered, header, commit, validators)
    with pytest.raises(LightClientError, match="does not follow"):
        certify(Header.from_json(HEIGHTS[0]["block"]["header"]), header, commit, validators)
    certify(before, header, commit, validators)  # the honest pair
