"""Adversarial blocks against two real state machines: nothing raises, both always agree.

Issue 7, attack 2: blocks of hostile transactions (random bytes, bodies nested hundreds deep,
valid signed envelopes with hostile payloads for every message type of every module, extreme
integers and nonces, unknown types, the wrong chain, odd unicode) go to `finalize_block` of two
independent Applications on real SQLite files. Neither may raise (a raise halts the node: on
every validator at once, for a transaction anyone can send), both must return the same results
and the same app hash at every height, and `check_tx` must answer every transaction with a
code. The second application runs with a tiny state cache and no mempool, so its caches never
hold what the first one's do: a result that depended on a cache would show here.

Reproducible in CI: `derandomize=True` draws the same examples on every run, with no example
database; raise FUZZ_EXAMPLES locally for a longer search.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from careledger.chain.app import DEFAULT_MODULES, Application, BlockContext
from careledger.chain.auth import MAX_NONCE_JUMP, last_nonce
from careledger.chain.codes import Code
from careledger.chain.modules.identity import IdentityKeeper
from careledger.chain.modules.records import record_name
from careledger.chain.state import KV
from careledger.chain.tx import MAX_NONCE, MAX_TX_BYTES, Tx
from careledger.crypto.hashing import sha256
from careledger.crypto.keys import Identity
from nodeutil import CHAIN_ID, make_app, run_block

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def actor(name: str) -> Identity:
    """Fixed keys from fixed seeds: test vectors, never real keys."""
    return Identity(sha256(b"careledger/test-vector/fuzz/" + name.encode()))


ORG_A, ORG_B, PATIENT, DOCTOR, STRANGER = (
    actor(n) for n in ("org-a", "org-b", "patient", "doctor", "stranger")
)
ACTORS = (ORG_A, ORG_B, PATIENT, DOCTOR, STRANGER)
ROTATED = (actor("rotated-1"), actor("rotated-2"))  # keys an actor may rotate to
SIGNERS = {i.signing_public: i for i in (*ACTORS, *ROTATED)}
MESSAGE_TYPES = tuple(f"{m.name}/{name}" for m in DEFAULT_MODULES for name in m.messages)
T0 = 1_800_000_000_000_000_000

# --- values --------------------------------------------------------------------------------

RECORDS = tuple(record_name(PATIENT.did, "Observation", rid) for rid in ("r1", "r2"))
HEX32 = ("11" * 32, "22" * 32, "ab" * 32, "AB" * 32, "ab" * 31, "zz" * 32, "ab" * 32 + " ")
ODD_STRINGS = (
    "",
    " ",
    "\x00",
    "\u202e",
    "\ufeff",
    "\U0001d518",
    "\ud800",  # a lone surrogate: not UTF-8 at all
    "did:key:z",
    "did:key:z" + "1" * 119,
    "did:key:z6Mk\u00e9",
    "did:key:z6Mk\U0001d518",
    "did:key:z" + "\u0660" * 40,
    "scope/clinical/1",
    "scope/clinical/4294967296",
    "scope/\u0661/1",
    "Observation",
    "observation",
    "x" * 300,
)
EXTREME_INTS = (
    -(2**63),
    -1,
    0,
    1,
    2,
    2**31,
    2**32 - 1,
    2**32,
    MAX_NONCE_JUMP,
    MAX_NONCE_JUMP + 1,
    MAX_NONCE - 1,
    MAX_NONCE,
    MAX_NONCE + 1,
    2**63,
    2**64,
    10**40,
)

ints = st.one_of(st.sampled_from(EXTREME_INTS), st.integers())
strings = st.one_of(
    st.sampled_from(ODD_STRINGS + HEX32 + RECORDS),
    st.sampled_from([a.did for a in ACTORS]),
    st.text(max_size=30),
)
leaves = st.one_of(st.none(), st.booleans(), ints, strings, st.floats())
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(strings, inner, max_size=4)
    ),
    max_leaves=10,
)

# Payloads good enough to reach the handlers, each field open to a hostile replacement.
TEMPLATES: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "identity/register_patient": {"encryption_key": st.sampled_from(HEX32[:3])},
    "identity/register_practitioner": {
        "did": st.sampled_from([DOCTOR.did, STRANGER.did, PATIENT.did]),
        "encryption_key": st.just("33" * 32),
        "name": st.sampled_from(["Dr A", "x" * 256]),
    },
    "identity/deregister_practitioner": {"did": st.sampled_from([DOCTOR.did, STRANGER.did])},
    "identity/rotate_key": {
        "signing_key": st.sampled_from([i.signing_public.hex() for i in ROTATED]),
        "encryption_key": st.sampled_from(HEX32[:3]),
    },
    "identity/apply_membership": {
        "name": st.sampled_from(["Org C", "y" * 200]),
        "encryption_key": st.just("44" * 32),
        "validator_pub_key": st.sampled_from(HEX32[:3]),
    },
    "identity/approve_membership": {
        "action": st.sampled_from(["admit", "remove"]),
        "subject": st.sampled_from([a.did for a in ACTORS]),
    },
    "records/anchor": {
        "patient": st.sampled_from([PATIENT.did] * 4 + [DOCTOR.did]),
        "resource_type": st.sampled_from(["Observation", "Condition"]),
        "record": st.sampled_from(RECORDS),
        "version": st.sampled_from([1, 1, 2, 3]),
        "blob_hash": st.sampled_from(HEX32[:3]),
        "commitment": st.just("55" * 32),
        "recipients": st.sampled_from([["scope/clinical/1"], [DOCTOR.did], ["scope/clinical/2"]]),
    },
    "records/publish_scope_key": {
        "scope": st.sampled_from(["clinical", "clinical", "diagnostics"]),
        "epoch": st.integers(1, 3),
        "public_key": st.just("66" * 32),
    },
    "records/erase": {"records": st.sampled_from([list(RECORDS[:1]), list(RECORDS)])},
}


def often(chance_in_ten: int) -> st.SearchStrategy[bool]:
    """True about chance_in_ten times in ten (integers() would lean towards its minimum)."""
    return st.sampled_from([True] * chance_in_ten + [False] * (10 - chance_in_ten))


ANCHOR_TOMBSTONE = ("patient", "resource_type", "record", "version")


@st.composite
def payloads(draw: st.DrawFn, type_: str) -> dict[str, Any]:
    """The message's fields with good values, now and then one replaced, dropped or added."""
    template = TEMPLATES.get(type_)
    if template is None:
        return draw(st.dictionaries(strings, values, max_size=6))
    payload = {name: draw(field) for name, field in template.items()}
    if type_ == "records/anchor" and draw(often(2)):  # a tombstone names no blob
        payload = {k: v for k, v in payload.items() if k in ANCHOR_TOMBSTONE} | {"tombstone": 1}
    if draw(often(3)):
        payload[draw(st.sampled_from([*template, "extra"]))] = draw(values)
    if draw(often(1)):
        del payload[draw(st.sampled_from(sorted(payload)))]
    return payload


# --- transactions --------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """A signed envelope to build once nonces are known (`nonce` None: the signer's next)."""

    signer: int
    sender: str | None  # None: the signer's own did
    chain_id: Any
    type: Any
    nonce: Any
    payload: Any
    ascii_escapes: bool
    drop_field: str | None


@st.composite
def valid_envelopes(draw: st.DrawFn) -> Envelope:
    """Signed by the sender, for this chain, the next nonce: these reach the handlers."""
    type_ = draw(st.sampled_from([*MESSAGE_TYPES, "records/anchor", "records/anchor"]))
    signer = draw(st.integers(0, len(ACTORS) - 1))
    return Envelope(signer, None, CHAIN_ID, type_, None, draw(payloads(type_)), False, None)


@st.composite
def hostile_envelopes(draw: st.DrawFn) -> Envelope:
    """Anything in any field: another's did, extreme or mistyped nonces, odd types, escapes."""
    type_ = draw(st.one_of(st.sampled_from(MESSAGE_TYPES), strings))
    return Envelope(
        signer=draw(st.integers(0, len(ACTORS) - 1)),
        sender=draw(st.one_of(st.none(), strings)),
        chain_id=draw(st.sampled_from([CHAIN_ID, "other-chain", "", 7])),
        type=type_,
        nonce=draw(st.one_of(st.none(), ints, leaves)),
        payload=draw(payloads(type_)) if draw(often(7)) else draw(values),
        ascii_escapes=draw(often(2)),
        drop_field=draw(st.sampled_from([None] * 12 + ["chain_id", "nonce", "payload"])),
    )


@dataclass(frozen=True)
class Deep:
    """A signed body whose payload is nested `depth` levels deep."""

    signer: int
    depth: int


@dataclass(frozen=True)
class RawBytes:
    raw: bytes


transactions = st.one_of(
    valid_envelopes(),
    valid_envelopes(),
    valid_envelopes(),
    valid_envelopes(),
    hostile_envelopes(),
    hostile_envelopes(),
    st.builds(
        Deep,
        st.integers(0, len(ACTORS) - 1),
        st.sampled_from([31, 32, 33, 254, 255, 256, 1023, 1025, 5000]),
    ),
    st.builds(RawBytes, st.binary(max_size=200)),
    st.builds(RawBytes, st.binary(max_size=100).map(lambda b: b"{" + b + b"}" + b"\0" * 64)),
    st.builds(RawBytes, st.sampled_from([b"", b"\0" * 65, b"x" * (MAX_TX_BYTES + 1)])),
)
blocks = st.lists(st.lists(transactions, min_size=1, max_size=8), min_size=1, max_size=3)


class Builder:
    """Turns drawn transactions into bytes as a wallet would: each signer's next nonce, signed
    by the key the state holds for it (after a rotation, the new one)."""

    def __init__(self, app: Application | None = None) -> None:
        self.app = app
        self.nonces = {a.did: self._last_nonce(a.did) for a in ACTORS}

    def _last_nonce(self, did: str) -> int:
        return 0 if self.app is None else last_nonce(KV(self.app.store, "auth"), did)

    def key_of(self, actor: Identity) -> Identity:
        if self.app is None:
            return actor
        current = IdentityKeeper(KV(self.app.store, "identity")).signing_key(actor.did)
        return SIGNERS.get(current, actor)

    def build(self, tx: Envelope | Deep | RawBytes) -> bytes:
        if isinstance(tx, RawBytes):
            return tx.raw
        signer = ACTORS[tx.signer]
        key = self.key_of(signer)
        if isinstance(tx, Deep):
            nonce = self._next(signer)
            body = (
                b'{"chain_id":"' + CHAIN_ID.encode() + b'","nonce":' + str(nonce).encode()
                + b',"payload":{"x":' + b"[" * tx.depth + b"]" * tx.depth
                + b'},"sender":"' + signer.did.encode() + b'","type":"records/erase"}'
            )  # fmt: skip
            return body + key.sign(body)
        fields = {
            "chain_id": tx.chain_id,
            "type": tx.type,
            "sender": signer.did if tx.sender is None else tx.sender,
            "nonce": self._next(signer) if tx.nonce is None else tx.nonce,
            "payload": tx.payload,
        }
        if tx.drop_field:
            del fields[tx.drop_field]
        text = json.dumps(
            fields, sort_keys=True, separators=(",", ":"), ensure_ascii=tx.ascii_escapes
        )
        body = text.encode("utf-8", "surrogatepass")
        return body + key.sign(body)

    def _next(self, signer: Identity) -> int:
        self.nonces[signer.did] += 1
        return self.nonces[signer.did]


# --- the state machines --------------------------------------------------------------------


def setup_block() -> list[bytes]:
    """Register the patient, the doctor and a scope key, so that the records rules run."""
    scope_key = {"scope": "clinical", "epoch": 1, "public_key": "77" * 32}
    return [
        Tx(
            CHAIN_ID,
            "identity/register_patient",
            PATIENT.did,
            1,
            {"encryption_key": PATIENT.encryption_public.hex()},
        ).sign(PATIENT),
        Tx(
            CHAIN_ID,
            "identity/register_practitioner",
            ORG_A.did,
            1,
            {"did": DOCTOR.did, "encryption_key": DOCTOR.encryption_public.hex()},
        ).sign(ORG_A),
        Tx(CHAIN_ID, "records/publish_scope_key", PATIENT.did, 2, scope_key).sign(PATIENT),
    ]


def two_state_machines(scratch: Path) -> tuple[Application, Application]:
    a = make_app(scratch / "a.sqlite", [ORG_A, ORG_B])
    b = make_app(scratch / "b.sqlite", [ORG_A, ORG_B])
    b.store.cache.max_bytes = 2048  # evicts nearly every read: a cache must change nothing
    for app in (a, b):
        assert run_block(app, setup_block()) == [Code.OK] * 3
    return a, b


@FUZZ
@given(blocks)
def test_adversarial_blocks_never_raise_and_two_state_machines_agree(
    drawn: list[list[Envelope | Deep | RawBytes]],
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        a, b = two_state_machines(Path(scratch))
        builder = Builder(a)
        assert a.info() == b.info()
        for specs in drawn:
            raws = [builder.build(spec) for spec in specs]
            checked = [a.check_tx(raw) for raw in raws]  # only a has a mempool view
            assert all(isinstance(r.code, Code) and (r.code == Code.OK or r.log) for r in checked)
            height = a.info().last_height + 1
            ctx = BlockContext(height, T0 + height)
            from_a = a.finalize_block(ctx, raws)
            a.commit()
            from_b = b.finalize_block(ctx, raws)
            b.commit()
            assert from_a == from_b
            assert all(isinstance(r.code, Code) for r in from_a.tx_results)
            assert Code.INTERNAL not in [r.code for r in from_a.tx_results]
            assert a.info() == b.info()
        assert dict(a.store.all_rows()) == dict(b.store.all_rows())
        a.store.close()
        b.store.close()


@FUZZ
@given(st.one_of(transactions, st.builds(RawBytes, st.binary(max_size=4000))))
def test_check_tx_answers_any_bytes_with_a_code(tx: Envelope | Deep | RawBytes) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        app = make_app(Path(scratch) / "s.sqlite", [ORG_A])
        raw = Builder().build(tx)
        first, again = app.check_tx(raw), app.check_tx(raw)
        assert isinstance(first.code, Code) and first.code != Code.INTERNAL
        if first.code == Code.OK:
            assert again.code == Code.REPLAY
        else:
            assert again == first
        app.store.close()


def test_the_hostile_shapes_named_in_the_issue_are_each_refused_with_a_code(
    tmp_path: Path,
) -> None:
    """The cases the fuzzer must cover, spelled out: each is answered, none raises."""
    app = make_app(tmp_path / "s.sqlite", [ORG_A])
    builder = Builder()
    cases = {
        "deep JSON (orjson cannot re-encode it)": (Deep(0, 300), Code.MALFORMED),
        "JSON past orjson's read limit": (Deep(0, 1100), Code.MALFORMED),
        "integer beyond 2**64": (_envelope(nonce=2**64), Code.MALFORMED),
        "not UTF-8": (RawBytes(b'{"a":"\xff"}' + b"\0" * 64), Code.MALFORMED),
        "lone surrogate": (_envelope(payload={"name": "\ud800"}), Code.MALFORMED),
        "odd unicode in a did": (
            _envelope(type="identity/deregister_practitioner", payload={"did": ODD_STRINGS[9]}),
            Code.INVALID_PAYLOAD,
        ),
        "float": (_envelope(payload={"epoch": 1.5}), Code.MALFORMED),
        "nonce beyond the jump": (_envelope(nonce=MAX_NONCE_JUMP + 5), Code.NONCE_TOO_FAR),
        "wrong chain": (_envelope(chain_id="other"), Code.WRONG_CHAIN),
        "unknown type": (_envelope(type="identity/make_me_admin"), Code.UNKNOWN_TYPE),
    }
    raws = {name: builder.build(tx) for name, (tx, _) in cases.items()}
    for name, (_, expected) in cases.items():
        assert app.check_tx(raws[name]).code == expected, name
    assert run_block(app, list(raws.values())) == [code for _, code in cases.values()]


def _envelope(**changes: Any) -> Envelope:
    base: dict[str, Any] = {
        "signer": 0,
        "sender": None,
        "chain_id": CHAIN_ID,
        "type": "records/publish_scope_key",
        "nonce": None,
        "payload": {"scope": "clinical", "epoch": 1, "public_key": "66" * 32},
        "ascii_escapes": False,
        "drop_field": None,
    }
    return Envelope(**(base | changes))
