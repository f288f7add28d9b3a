"""FinalizeBlock's answer, written straight from the results (consensus/cometbft/answers.py),
is byte for byte what the generic message encoder writes.

Every node sends CometBFT the results of every block; the direct encoding saves building
the message objects. The attack on such a shortcut is an answer that differs from the
definition for some result (an empty string written where proto3 leaves it out, a negative
power, a multi-byte length, non-ASCII text), so that this node's LastResultsHash, and with
it the next header the validators sign, differs from the other nodes'. Here random results
of every shape, and a real application's block, must encode to the same bytes both ways.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from careledger.chain.answers import FinalizeResult, TxResult
from careledger.chain.app import Application
from careledger.chain.genesis import Genesis
from careledger.chain.modules.base import Event, ValidatorUpdate
from careledger.chain.store import StateStore
from careledger.consensus.cometbft import messages as m
from careledger.consensus.cometbft.answers import finalize_block_response
from careledger.consensus.cometbft.codec import (
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from careledger.consensus.cometbft.handler import AbciHandler, finalize_block_message
from careledger.crypto.keys import Identity
from nodeutil import CHAIN_ID, GENESIS_TIME
from test_abci_check_tx_path import _registration

texts = st.text(max_size=300)  # unicode, empty, and past one length byte (127)
events = st.builds(Event, texts, st.dictionaries(texts, texts, max_size=4))
tx_results = st.builds(
    TxResult,
    st.integers(0, 2**32 - 1),
    texts,
    st.binary(max_size=200),
    st.lists(events, max_size=3).map(tuple),
)
updates = st.builds(ValidatorUpdate, st.binary(max_size=40), st.integers(-(2**63), 2**63 - 1))
results = st.builds(
    FinalizeResult,
    st.lists(tx_results, max_size=6),
    st.lists(updates, max_size=3),
    st.binary(max_size=40),
)


@settings(max_examples=400, deadline=None)
@given(results)
def test_the_direct_encoding_is_the_generic_one_for_any_results(result: FinalizeResult) -> None:
    assert finalize_block_response(result) == encode_response(finalize_block_message(result))


def test_many_results_cross_the_length_prefixes_multi_byte_boundaries() -> None:
    many = FinalizeResult(
        [TxResult(0, events=(Event("e", {"k": "v" * n}),)) for n in range(0, 20_000, 97)],
        [ValidatorUpdate(b"\x01" * 32, 10), ValidatorUpdate(b"\x02" * 32, 0)],
        b"\xaa" * 32,
    )
    assert finalize_block_response(many) == encode_response(finalize_block_message(many))


def test_a_real_block_is_answered_with_the_generic_bytes(tmp_path: Path) -> None:
    """Two identical applications execute the same block of registrations (one refused: the
    same bytes twice, so the second is a replay with a code and a log); the server's answer
    (AbciHandler.respond) equals the generic handle -> encode_response of the twin."""
    org = Identity.generate()
    txs = [_registration(org) for _ in range(5)]
    txs.append(txs[0])
    request = decode_request(
        encode_request(
            m.RequestFinalizeBlock(txs=txs, height=1, time=m.Timestamp(1_700_000_000, 5))
        )
    )
    answers = []
    for name in ("direct", "generic"):
        app = Application(StateStore(tmp_path / f"{name}.sqlite"))
        genesis = Genesis.for_organisations(CHAIN_ID, [("Org", org)])
        app.init_chain(Genesis(CHAIN_ID, GENESIS_TIME, genesis.organisations))
        handler = AbciHandler(app)
        if name == "direct":
            answers.append(handler.respond(request))
        else:
            answers.append(encode_response(handler.handle(request)))
    assert answers[0] == answers[1]
    decoded = decode_response(answers[0])
    assert isinstance(decoded, m.ResponseFinalizeBlock)
    assert [r.code for r in decoded.tx_results][:5] == [0] * 5
    assert decoded.tx_results[5].code != 0 and decoded.tx_results[5].log  # the replay
    assert decoded.tx_results[0].events  # each registration's event, with its attributes
    assert decoded.app_hash
