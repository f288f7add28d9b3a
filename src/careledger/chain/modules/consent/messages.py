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
from careledger.crypto.scopekeys import SCOPES, SENSITIVE

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


# --- break-glass ----------------------------------------------------------------------------

ETREAT = "ETREAT"  # the purpose an emergency read states
# Genesis policy (consent module constants; docs/chain.md "Break-glass"): the scopes the
# wallet opens when the patient does not choose, the longest break-glass, and the threshold.
DEFAULT_EMERGENCY_SCOPES = ("clinical", "medications", "diagnostics")
MAX_BREAK_GLASS_SECONDS = 3600
MAX_REASON = 500
ESCROW_ID_BYTES = 16
MAX_ESCROW_MEMBERS = 255  # the escrow's shares are indexed by one byte
WRAPPED_SHARE_BYTES = 64  # HPKE enc (32) + a 16-byte share + tag (16)
# The sealed bundle: nonce + AES-GCM tag + about 115 bytes of JSON per escrowed scope key, so
# some 200 keys (epochs) in all, and room left in a transaction (MAX_TX_BYTES) for the shares.
MAX_SEALED_BYTES = 24 * 1024
MIN_SEALED_BYTES = 12 + 16 + 2


def emergency_threshold(members: int) -> int:
    """EMERGENCY_THRESHOLD: the least k of an escrow among `members` members, ceil(2n/3)
    and at least 1 (docs/crypto.md 11.2)."""
    return max(1, -(-2 * members // 3))


@dataclass(frozen=True)
class ShareWrap:
    """Share `index` of an escrow's secret, HPKE-wrapped to member organisation `org`."""

    org: str
    index: int
    wrapped: str  # hex

    @classmethod
    def parse(cls, p: Payload) -> ShareWrap:
        share = cls(
            p.did("org"),
            p.integer("index", 1, MAX_ESCROW_MEMBERS),
            p.hex_bytes("wrapped", WRAPPED_SHARE_BYTES),
        )
        p.done()
        return share

    def to_json(self) -> dict[str, object]:
        return {"org": self.org, "index": self.index, "wrapped": self.wrapped}


@dataclass(frozen=True)
class OpenEmergency:
    """A patient's escrow of its emergency keys (crypto/escrow.py): which scopes it opens to
    a break-glass, split k-of-n among `members` (all current members, sorted)."""

    scopes: tuple[str, ...]
    sensitive: bool
    threshold: int
    members: tuple[str, ...]
    shares: tuple[ShareWrap, ...]
    sealed: str
    epochs: tuple[tuple[str, int], ...]  # (scope, its current epoch), in `scopes` order
    escrow: str

    @classmethod
    def parse(cls, p: Payload) -> OpenEmergency:
        scopes, sensitive = _choices(p, "scopes", SCOPES), p.boolean("sensitive")
        members = tuple(p.text_list("members", MAX_ESCROW_MEMBERS, max_len=128))
        threshold = p.integer("threshold", 1, MAX_ESCROW_MEMBERS)
        shares = tuple(ShareWrap.parse(s) for s in p.objects("shares", MAX_ESCROW_MEMBERS, 1))
        msg = cls(
            scopes,
            sensitive,
            threshold,
            members,
            shares,
            _sealed(p),
            _epochs(p.nested("epochs"), scopes),
            p.hex_bytes("escrow", ESCROW_ID_BYTES),
        )
        p.done()
        msg._check()
        return msg

    def _check(self) -> None:
        if SENSITIVE in self.scopes and not self.sensitive:
            raise _fail('the sensitive scope is opened to emergencies only with "sensitive": true')
        if self.sensitive and SENSITIVE not in self.scopes:
            raise _fail('"sensitive": true, but the scopes do not name the sensitive scope')
        if list(self.members) != sorted(self.members):
            raise _fail("'members' must be sorted")
        if self.threshold > len(self.members):
            raise _fail(f"threshold {self.threshold} is above the {len(self.members)} members")
        expected = [(m, i) for i, m in enumerate(self.members, start=1)]
        if [(s.org, s.index) for s in self.shares] != expected:
            raise _fail("'shares' must hold share i of member i (in 'members' order), one each")


def _sealed(p: Payload) -> str:
    sealed = p.text("sealed", max_len=2 * MAX_SEALED_BYTES, min_len=2 * MIN_SEALED_BYTES)
    if len(sealed) % 2 or sealed.strip("0123456789abcdef"):
        raise _fail("'sealed' must be lowercase hex")
    return sealed


def _epochs(p: Payload, scopes: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """{scope: epoch} for exactly the opened scopes."""
    epochs = tuple((scope, p.integer(scope, 1, MAX_EPOCH)) for scope in scopes)
    p.done()
    return epochs


@dataclass(frozen=True)
class BreakGlass:
    """A practitioner's emergency access to a patient's opened scopes, for `seconds`."""

    patient: str
    reason: str
    scopes: tuple[str, ...]
    seconds: int

    @classmethod
    def parse(cls, p: Payload) -> BreakGlass:
        patient = p.did("patient")
        reason = p.text("reason", max_len=2000, optional=True, min_len=0)
        if not reason.strip():
            raise _fail("a break-glass states its reason ('reason': 1 to 500 characters)")
        if len(reason) > MAX_REASON:
            raise _fail(f"a break-glass reason is at most {MAX_REASON} characters")
        scopes = _choices(p, "scopes", SCOPES)
        seconds = p.integer("seconds", 0, 2**40)
        if not 0 < seconds <= MAX_BREAK_GLASS_SECONDS:
            raise _fail(
                f"a break-glass lasts 1 to {MAX_BREAK_GLASS_SECONDS} seconds, not {seconds}"
            )
        p.done()
        return cls(patient, reason, scopes, seconds)
