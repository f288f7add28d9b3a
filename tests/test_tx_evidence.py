"""Transaction evidence under CometBFT, checked offline from what the real binary served.

tests/vectors/cometbft/recorded.json holds block 1 of a live network (three transactions, the
second failed with CONFLICT), block 2's header, the commit for it and the validators. From
them this builds exactly the evidence a node gives for a transaction (`GET /txs/{hash}`) and
checks it as `verify-record` does, deterministically and without a network. Then every field
of it is replaced by hostile values: the verifier answers ProofError or accepts, never
anything else (a crash in a verifier is a denial of service on whoever relies on it).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from careledger.chain.results import TxOutcome, result_inclusion_proof
from careledger.crypto.hashing import sha256
from careledger.crypto.keys import Identity
from careledger.protocol.cometbft import (
    Validator,
    ValidatorSet,
    trusted_validator_set,
)
from careledger.wallet.proofs import ProofError, verify_tx_evidence

RECORDED = orjson.loads(
    (Path(__file__).parent / "vectors" / "cometbft" / "recorded.json").read_bytes()
)
TRUSTED = trusted_validator_set({"validators": RECORDED["genesis_validators"]})


def evidence_of(index: int) -> dict[str, Any]:
    found = RECORDED["txs"][index]
    first, second = RECORDED["heights"][0], RECORDED["heights"][1]
    outcomes = [
        TxOutcome(
            int(r["code"]),
            base64.b64decode(r["data"] or ""),
            int(r["gas_wanted"]),
            int(r["gas_used"]),
        )
        for r in first["results"]
    ]
    raw = base64.b64decode(found["tx"])
    proof = found["proof"]["proof"]
    return {
        "tx": raw.hex(),
        "height": int(found["height"]),
        "tx_proof": {
            "index": int(proof["index"]),
            "total": int(proof["total"]),
            "leaf": sha256(raw).hex(),
            "aunts": [base64.b64decode(a).hex() for a in proof["aunts"]],
        },
        "result": outcomes[index].to_json(),
        "result_proof": result_inclusion_proof(outcomes, index).to_json(),
        "block": {
            "consensus": "cometbft",
            "header": first["block"]["header"],
            "next_header": second["commit"]["header"],
            "commit": second["commit"]["commit"],
            "validators": second["validators"],
        },
    }


def test_recorded_evidence_of_a_successful_transaction_verifies() -> None:
    verified = verify_tx_evidence(evidence_of(2), TRUSTED)
    assert verified.index == 2 and verified.result.ok
    assert verified.block.block_hash == RECORDED["heights"][0]["block_id"]["hash"]
    assert verified.block.trusted_by == "the trusted validator set"
    assert verified.tx.tx.type == "identity/register_patient"


def test_recorded_evidence_of_a_failed_transaction_is_refused() -> None:
    with pytest.raises(ProofError, match=r"failed on chain: result code 10 \(CONFLICT\)"):
        verify_tx_evidence(evidence_of(1), TRUSTED)


def test_another_transactions_success_cannot_be_paired_with_a_failed_one() -> None:
    failed, succeeded = evidence_of(1), evidence_of(2)
    failed["result"], failed["result_proof"] = succeeded["result"], succeeded["result_proof"]
    with pytest.raises(ProofError, match="different positions"):
        verify_tx_evidence(failed, TRUSTED)
    failed["result_proof"]["index"] = 1  # claimed at the failed one's position
    with pytest.raises(ProofError, match="results root"):
        verify_tx_evidence(failed, TRUSTED)


def test_a_set_of_strangers_as_trusted_set_is_refused() -> None:
    strangers = ValidatorSet.canonical(
        [Validator(Identity.generate().signing_public, 10) for _ in range(4)]
    )
    with pytest.raises(ProofError, match="not more than 1/3"):
        verify_tx_evidence(evidence_of(0), strangers)


HOSTILE: tuple[Any, ...] = (
    None,
    "",
    "zz",
    "0" * 3,
    -1,
    0,
    2**62,
    2**40,
    [],
    {},
    [1],
    {"a": 1},
    True,
    1.5,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value[:2]):  # the first two of each list suffice
            yield from _paths(child, (*path, i))


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = orjson.loads(orjson.dumps(value))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return copy


def test_hostile_values_anywhere_give_a_proof_error_or_change_nothing() -> None:
    honest = evidence_of(0)
    expected = verify_tx_evidence(honest, TRUSTED)
    checked = 0
    for path in _paths(honest):
        for new in HOSTILE:
            forged = _replaced(honest, path, new)
            try:
                verified = verify_tx_evidence(forged, TRUSTED)
            except ProofError:
                continue
            finally:
                checked += 1
            # Accepted only where the value meant the same (a 0 for a 0, {} for an empty
            # block id) or is not committed to (a validator's proposer_priority).
            assert verified == expected, (path, new)
    assert checked > 1000
