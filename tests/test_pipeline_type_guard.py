"""The pre-submit pipeline's look before it decodes (node/pipeline.py `SubmitPipeline.refusal`).

The pipeline decodes a submission only when its bytes hold a checked type's JSON string
(`"records/anchor"`): sound only while every byte sequence `decode_tx` accepts as a
transaction of a checked type holds that string. It holds because a transaction decodes only
from its canonical (RFC 8785) bytes; a `decode_tx` made lenient (say, parsing without the
re-encoding it compares against) would let a validly signed anchor past the anchor guard
spelled `records\\/anchor`. These properties attack the guard through the real decoder:
envelopes of random types and payloads (keys beyond the Basic Multilingual Plane send the
whole body through the `rfc8785` encoder rather than orjson), then respelled the ways JSON
allows (escapes of any character, `\\/`, whitespace, a byte-order mark, a duplicate `type`
key ahead of the real one). Whenever the bytes decode to a checked type, the check must run.
"""

from __future__ import annotations

import os

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from careledger.chain.codes import Code, TxFailure
from careledger.chain.tx import MAX_NONCE, SIGNATURE_BYTES, SignedTx, Tx, decode_tx
from careledger.node.pipeline import Refusal, SubmitPipeline

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
SEEN = Refusal(Code.UNAUTHORISED, "the check ran")
# The records module's two, and types a later module might register: JSON escapes some of
# their characters (a control character, a quote, a backslash), others are beyond ASCII.
CHECKED = ("records/anchor", "records/anchor_batch", "consent/gr\u00e4nt", 'a"b\\c\t/\U0001f600')
SIGNATURE = bytes(range(SIGNATURE_BYTES))  # decode_tx does not verify it

_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_keys = st.one_of(_text, st.sampled_from(["type", "\U0001f600", "records/anchor"]))
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53) + 1, 2**53 - 1), _text, st.sampled_from(CHECKED)
)
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=3)),
    max_leaves=8,
)
_envelopes = st.builds(
    Tx,
    chain_id=_text,
    type=st.one_of(st.sampled_from(CHECKED), _text),
    sender=_text,
    nonce=st.integers(1, MAX_NONCE),
    payload=st.dictionaries(_keys, _json, max_size=4),
)


def _pipeline() -> SubmitPipeline:
    pipeline = SubmitPipeline()
    for tx_type in CHECKED:
        pipeline.register(tx_type, lambda stx: SEEN)
    return pipeline


def _escaped(char: str) -> bytes:
    """`char` as a JSON \\u escape (a surrogate pair beyond the Basic Multilingual Plane)."""
    units = char.encode("utf-16-be")
    return b"".join(b"\\u%04x" % int.from_bytes(units[i : i + 2]) for i in range(0, len(units), 2))


def _respellings(body: bytes, tx_type: str, data: st.DataObject) -> list[bytes]:
    """The body with its type's JSON string, or any other place, spelled another way."""
    text = body.decode()
    spelled = orjson.dumps(tx_type).decode()
    start = text.rindex('"type":' + spelled) + len('"type":')
    at = data.draw(st.integers(1, max(1, len(spelled) - 2)), label="character of the type")
    anywhere = data.draw(st.integers(0, len(text)), label="position in the body")
    ahead = data.draw(st.sampled_from(CHECKED), label="duplicate type")
    respelled = [
        text[: start + at] + _escaped(text[start + at]).decode() + text[start + at + 1 :],
        text[:start] + spelled.replace("/", "\\/") + text[start + len(spelled) :],
        text[:anywhere] + data.draw(st.sampled_from([" ", "\n", "\t", "\r"])) + text[anywhere:],
        "\ufeff" + text,
        text[:start] + orjson.dumps(ahead).decode() + ',"type":' + text[start:],
        '{"type":' + orjson.dumps(ahead).decode() + "," + text[1:],
    ]
    return [r.encode() for r in respelled if r != text]


def _decoded(raw: bytes) -> SignedTx | None:
    try:
        return decode_tx(raw)
    except TxFailure:
        return None


@FUZZ
@given(tx=_envelopes)
def test_a_canonical_envelope_of_a_checked_type_is_always_looked_at(tx: Tx) -> None:
    raw = tx.body() + SIGNATURE
    decoded = _decoded(raw)
    assert decoded is not None and decoded.tx == tx
    expected = SEEN if tx.type in CHECKED else None
    assert _pipeline().refusal(raw) == expected


@FUZZ
@given(tx=_envelopes.filter(lambda tx: tx.type in CHECKED), data=st.data())
def test_no_other_spelling_of_a_checked_type_decodes_past_the_look(
    tx: Tx, data: st.DataObject
) -> None:
    """Every respelling either does not decode (the driver's check_tx refuses it as
    MALFORMED) or is looked at: never a checked type the pipeline skipped."""
    pipeline = _pipeline()
    for body in _respellings(tx.body(), tx.type, data):
        raw = body + SIGNATURE
        decoded = _decoded(raw)
        if decoded is not None and decoded.tx.type in CHECKED:
            assert pipeline.refusal(raw) == SEEN, body
