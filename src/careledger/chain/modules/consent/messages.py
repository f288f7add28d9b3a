"""The consent module's transaction payloads: parsed, validated, typed.

What can be checked without the state is checked here, before a block: field shapes, known
scopes, actions and purposes, an ordered period, no duplicate key wraps, record lists only on
read grants. Who may grant, to whom, and which keys are published is the handler's business.
"""

from __future__ import annotations

from dataclasses import dataclass

from careledger.chain.codes import Code, TxFailure
from careledger.chain.modules.base import Payload
from careledger.chain.modules.purposes import PURPOSES as PURPOSES  # re-exported
from careledger.crypto.scopekeys import SCOPES

READ, WRITE, DELEGATE = "read", "write", "delegate"
ACTIONS = (READ, WRITE, DELEGATE)

MAX_PERIOD_END = 2**40  # unix seconds: about the year 36812, and well inside 2^53
MAX_GRANT_RECORDS = 100
MAX_GRANT_KEYS = 256
GRANT_ID_BYTES = 16
# An HPKE-wrapped 32-byte key: enc (32) + ciphertext (32) + tag (16).
WRAPPED_KEY_BYTES = 80
MAX_EPOCH = 2**32 - 1


def _fail(message: str) -> TxFailure:
    return TxFailure(Code.INVALID_PAYLOAD, message)


@dataclass(frozen=True)
class KeyWrap:
    """One scope private key (scope, epoch) HPKE-wrapped to the grantee."""

    scope: str
    epoch: int
    wrapped: str  # hex

    @classmethod
    def parse(cls, p: Payload) -> KeyWrap:
        wrap = cls(
            p.choice("scope", SCOPES),
            p.integer("epoch", 1, MAX_EPOCH),
            p.hex_bytes("wrapped", WRAPPED_KEY_BYTES),
        )
        p.done()
        return wrap

    def to_json(self) -> dict[str, object]:
        return {"scope": self.scope, "epoch": self.epoch, "wrapped": self.wrapped}


def _keys(p: Payload, min_items: int = 0) -> tuple[KeyWrap, ...]:
    if not p.has("keys"):
        if min_items:
            raise _fail("missing field 'keys'")
        return ()
    keys = tuple(KeyWrap.parse(k) for k in p.objects("keys", MAX_GRANT_KEYS, min_items))
    if len({(k.scope, k.epoch) for k in keys}) != len(keys):
        raise _fail("'keys' wraps one (scope, epoch) twice")
    return keys


def _naming_key(p: Payload) -> str:
    return p.hex_bytes("naming_key", WRAPPED_KEY_BYTES) if p.has("naming_key") else ""


def _choices(p: Payload, name: str, options: tuple[str, ...]) -> tuple[str, ...]:
    values = p.text_list(name, len(options), max_len=32)
    unknown = [v for v in values if v not in options]
    if unknown:
        raise _fail(f"{name!r}: unknown {', '.join(unknown)} (known: {', '.join(options)})")
    return tuple(values)


@dataclass(frozen=True)
class Grant:
    """A patient's (or their delegate's) grant of one action on some scopes, for a period.

    `records` narrows a read grant to named records; `purposes` are required for reads (the
    node serves a read only for a purpose the grant names).
    """

    id: str
    patient: str
    grantee: str
    action: str
    scopes: tuple[str, ...]
    records: tuple[str, ...]
    purposes: tuple[str, ...]
    start: int
    end: int
    keys: tuple[KeyWrap, ...]
    naming_key: str

    @classmethod
    def parse(cls, p: Payload) -> Grant:
        grant_id = p.hex_bytes("id", GRANT_ID_BYTES)
        patient, grantee = p.did("patient"), p.did("grantee")
        action = p.choice("action", ACTIONS)
        scopes = _choices(p, "scopes", SCOPES)
        records = _records(p, action)
        purposes = _purposes(p, action)
        start, end = p.integer("start", 0, MAX_PERIOD_END), p.integer("end", 0, MAX_PERIOD_END)
        if start >= end:
            raise _fail(f"expired or inverted period: start {start} is not before end {end}")
        keys, naming_key = _keys(p), _naming_key(p)
        p.done()
        for key in keys:
            if key.scope not in scopes:
                raise _fail(f"a key for scope {key.scope}, which the grant does not name")
        return cls(
            grant_id,
            patient,
            grantee,
            action,
            scopes,
            records,
            purposes,
            start,
            end,
            keys,
            naming_key,
        )


def _records(p: Payload, action: str) -> tuple[str, ...]:
    if not p.has("records"):
        return ()
    if action != READ:
        raise _fail("'records' narrows read grants only")
    records = tuple(p.text_list("records", MAX_GRANT_RECORDS, max_len=64))
    if any(len(r) != 64 or r.strip("0123456789abcdef") for r in records):
        raise _fail("'records' must hold record names (64 lowercase hex)")
    return records


def _purposes(p: Payload, action: str) -> tuple[str, ...]:
    if not p.has("purposes"):
        if action == READ:
            raise _fail("a read grant names its purposes ('purposes')")
        return ()
    return _choices(p, "purposes", PURPOSES)


@dataclass(frozen=True)
class Revoke:
    id: str

    @classmethod
    def parse(cls, p: Payload) -> Revoke:
        msg = cls(p.hex_bytes("id", GRANT_ID_BYTES))
        p.done()
        return msg


@dataclass(frozen=True)
class ShareKeys:
    """More key wraps for an active grant: new epochs after a revocation or a claim."""

    id: str
    keys: tuple[KeyWrap, ...]
    naming_key: str

    @classmethod
    def parse(cls, p: Payload) -> ShareKeys:
        grant_id = p.hex_bytes("id", GRANT_ID_BYTES)
        keys, naming_key = _keys(p), _naming_key(p)
        p.done()
        if not keys and not naming_key:
            raise _fail("nothing to share: give 'keys' (1 or more) or 'naming_key'")
        return cls(grant_id, keys, naming_key)
