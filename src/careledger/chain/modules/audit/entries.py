"""Access entries and the compact batch that carries them on chain: the one wire format.

An **access entry** is one decision of a node's consent interceptor: who read (`reader`, the
organisation it acted for), which record and version of which patient, when (the serving
node's clock, unix seconds), for which purpose, and the outcome. The node journals each one
before serving a byte; its batcher sends them in `audit/record_batch` transactions; the
patient lists them (`audit/log`) and checks each against its batch.

On chain a record is named by its first 16 bytes (32 hex, `compact()`): enough to tell a
patient's records apart, half the bytes of the full name. The leaf of an entry (the Merkle
leaf of its batch, and what a node's receipt digests) is always over its compact form, so a
full entry and its compact form have the same leaf.

A batch payload, as `encode_batch` writes it (RFC 8785 on the wire, like every payload):

    {"node": <did of the serving node: the sender>, "seq": <1, 2, ...: this node's batches>,
     "time": <unix seconds: the earliest entry's>,
     "parties": [did, ...],        readers, their organisations and patients, each once
     "records": [32 hex, ...],     record-name prefixes, each once
     "entries": [[patient_i, reader_i, org_i, record_i, version, dt, purpose_i, outcome_i],
                 ...]}

Indexes point into `parties`, `records`, PURPOSE_CODES and OUTCOMES; -1 is "none" for the
patient, organisation and record; `dt` = at - time, 0..MAX_DT. `decode_batch` refuses (BadBatch,
saying what is wrong) any other shape: an unknown field, a bad index, a table entry that no
entry uses, a table or a batch over its bound, an allowed outcome without patient and record.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from careledger.chain.modules.purposes import PURPOSES
from careledger.chain.tx import MAX_TX_BYTES
from careledger.crypto.canonical import canonical_bytes
from careledger.crypto.hashing import sha256

LEAF_DOMAIN = b"careledger-access-entry-v1"
OUTCOMES = (
    # allowed (the blob was served), by the basis of the consent decision
    "patient",
    "author",
    "grant",
    "delegate",
    "emergency",
    # refused
    "denied",
    "not_found",
    "erased",
    "malformed",
    "unavailable",
)
ALLOWED_OUTCOMES = OUTCOMES[:5]
PURPOSE_CODES: tuple[str, ...] = ("", *PURPOSES)  # index 0: no purpose stated

MAX_BATCH_ENTRIES = 2_000
MAX_BATCH_PARTIES = 4_000
MAX_BATCH_RECORDS = 2_000
MAX_DT = 3_600  # an entry is at most an hour after its batch's time
MAX_TIME = 2**40  # unix seconds, as consent periods
MAX_VERSION = 2**32 - 1
RECORD_PREFIX_HEX = 32  # 16 bytes of the record name
RECORD_NAME_HEX = 64
BATCH_FIELDS = frozenset({"node", "seq", "time", "parties", "records", "entries"})
MAX_SEQ = 2**53 - 1
# The largest batch payload a transaction carries: MAX_TX_BYTES less the envelope (chain id,
# type, sender, nonce: under 400 bytes; the signature: 64). A batch of MAX_BATCH_ENTRIES
# entries of a few records fits; one of distinct records holds about 1,000 (each record prefix
# costs 35 bytes in the table): the batcher cuts its batches with `fitting_batch`.
MAX_BATCH_PAYLOAD_BYTES = MAX_TX_BYTES - 1024

_DID = re.compile(r"did:key:z[1-9A-HJ-NP-Za-km-z]{1,119}")
_HEX = re.compile(r"[0-9a-f]*")


class BadBatch(ValueError):
    """An access entry or batch payload that is not in the one format (the message says why)."""


@dataclass(frozen=True)
class AccessEntry:
    patient: str  # did; "" when the blob anchors no record
    record: str  # record name, 64 hex, or its 32-hex prefix (compact); "" likewise
    version: int  # 0 likewise
    reader: str  # did of the caller
    org: str  # the organisation the reader acted for ("" for a patient)
    purpose: str  # "" or a PURPOSES code
    outcome: str  # one of OUTCOMES
    at: int  # unix seconds, the serving node's clock

    @property
    def allowed(self) -> bool:
        return self.outcome in ALLOWED_OUTCOMES

    def check(self) -> None:
        """BadBatch unless every field has its shape and the fields agree."""
        if not _DID.fullmatch(self.reader):
            raise BadBatch(f"reader {self.reader[:80]!r} is not a did:key")
        for name, did in (("patient", self.patient), ("org", self.org)):
            if did and not _DID.fullmatch(did):
                raise BadBatch(f"{name} {did[:80]!r} is not a did:key")
        if self.record and (
            len(self.record) not in (RECORD_PREFIX_HEX, RECORD_NAME_HEX)
            or not _HEX.fullmatch(self.record)
        ):
            raise BadBatch(f"record {self.record[:80]!r} is not a record name (lowercase hex)")
        if self.outcome not in OUTCOMES:
            raise BadBatch(f"outcome {self.outcome[:32]!r} is not one of {', '.join(OUTCOMES)}")
        if self.purpose not in PURPOSE_CODES:
            raise BadBatch(f"purpose {self.purpose[:32]!r} is not a PurposeOfUse code")
        if type(self.at) is not int or not 0 <= self.at <= MAX_TIME:
            raise BadBatch(f"at must be unix seconds in 0..{MAX_TIME}")
        _check_anchor(bool(self.patient), bool(self.record), self.version, self.outcome)

    def compact(self) -> AccessEntry:
        """The entry as the chain holds it: the record named by its 16-byte prefix."""
        return replace(self, record=self.record[:RECORD_PREFIX_HEX])

    def to_json(self) -> dict[str, Any]:
        return {
            "patient": self.patient,
            "record": self.record,
            "version": self.version,
            "reader": self.reader,
            "org": self.org,
            "purpose": self.purpose,
            "outcome": self.outcome,
            "at": self.at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AccessEntry:
        """An entry from its JSON form (`to_json`); BadBatch for any other shape."""
        if not isinstance(data, Mapping) or set(data) != set(_ENTRY_FIELDS):
            raise BadBatch(f"an access entry has exactly the fields {', '.join(_ENTRY_FIELDS)}")
        texts = [data[n] for n in _ENTRY_FIELDS if n not in ("version", "at")]
        if not all(isinstance(t, str) for t in texts) or type(data["version"]) is not int:
            raise BadBatch("an access entry's fields are strings, 'version' and 'at' integers")
        entry = cls(**{n: data[n] for n in _ENTRY_FIELDS})
        entry.check()
        return entry

    def leaf(self) -> bytes:
        """This entry's Merkle leaf: SHA-256 of the domain and the RFC 8785 bytes of its
        compact form's JSON."""
        return sha256(LEAF_DOMAIN + canonical_bytes(self.compact().to_json()))


_ENTRY_FIELDS = ("patient", "record", "version", "reader", "org", "purpose", "outcome", "at")


def _check_anchor(has_patient: bool, has_record: bool, version: int, outcome: str) -> None:
    """A record is named with its patient and a version (1..), or none of the three is."""
    if has_patient != has_record:
        raise BadBatch("an entry names a patient and a record together, or neither")
    if has_record and (type(version) is not int or not 1 <= version <= MAX_VERSION):
        raise BadBatch(f"version must be 1..{MAX_VERSION} for an entry with a record")
    if not has_record and (type(version) is not int or version != 0):
        raise BadBatch("version must be 0 for an entry without a record")
    if outcome in ALLOWED_OUTCOMES and not has_record:
        raise BadBatch(f"an allowed read ({outcome}) names its patient and record")


# --- encoding (the serving node) --------------------------------------------------------------


def encode_batch(node: str, seq: int, entries: Sequence[AccessEntry]) -> dict[str, Any]:
    """The `audit/record_batch` payload carrying these entries, in order.

    ValueError (BadBatch) for what the chain would refuse: no entries, too many, entries more
    than MAX_DT seconds apart (split them into several batches), a malformed entry.
    """
    if not 1 <= len(entries) <= MAX_BATCH_ENTRIES:
        raise BadBatch(f"a batch holds 1 to {MAX_BATCH_ENTRIES} entries, not {len(entries)}")
    if not _DID.fullmatch(node) or type(seq) is not int or not 1 <= seq <= MAX_SEQ:
        raise BadBatch("a batch names its node (a did) and a sequence number 1..")
    for entry in entries:
        entry.check()
    time = min(e.at for e in entries)
    if max(e.at for e in entries) - time > MAX_DT:
        raise BadBatch(f"the entries of one batch lie within {MAX_DT} seconds of each other")
    parties, records = _Table(), _Table()
    rows = [
        [
            parties.index(e.patient),
            parties.index(e.reader),
            parties.index(e.org),
            records.index(e.record[:RECORD_PREFIX_HEX]),
            e.version,
            e.at - time,
            PURPOSE_CODES.index(e.purpose),
            OUTCOMES.index(e.outcome),
        ]
        for e in entries
    ]
    return {
        "node": node,
        "seq": seq,
        "time": time,
        "parties": parties.values,
        "records": records.values,
        "entries": rows,
    }


class _Table:
    """Values numbered in order of first use; "" is -1 (none)."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self._index: dict[str, int] = {}

    def index(self, value: str) -> int:
        if not value:
            return -1
        found = self._index.get(value)
        if found is None:
            found = self._index[value] = len(self.values)
            self.values.append(value)
        return found


def batch_bytes(payload: Mapping[str, Any]) -> int:
    """The size of a batch payload on the wire (its RFC 8785 bytes)."""
    return len(canonical_bytes(dict(payload)))


def entries_fitting(
    node: str,
    seq: int,
    entries: Sequence[AccessEntry],
    max_bytes: int = MAX_BATCH_PAYLOAD_BYTES,
) -> int:
    """How many of the leading entries one batch payload of at most max_bytes holds (0 if
    not even one): a transaction is at most chain.tx.MAX_TX_BYTES, and distinct records cost
    35 bytes each in the table, so a full MAX_BATCH_ENTRIES batch may not fit."""
    return fitting_batch(node, seq, entries, max_bytes)[0]


def fitting_batch(
    node: str,
    seq: int,
    entries: Sequence[AccessEntry],
    max_bytes: int = MAX_BATCH_PAYLOAD_BYTES,
) -> tuple[int, dict[str, Any] | None]:
    """`entries_fitting`'s count and the payload of that many entries (None for 0).

    Sizes grow with the count, nearly in proportion: the count is searched for by
    interpolating between the largest size known to fit and the smallest known not to, and
    halving the range after a guess that did not: a few encodings of the batch (each checks
    every entry) where bisecting 2,000 entries took twelve, never more than twice that."""
    high = min(len(entries), MAX_BATCH_ENTRIES)
    if not high:
        return 0, None
    payload = encode_batch(node, seq, entries[:high])
    over = batch_bytes(payload)
    if over <= max_bytes:
        return high, payload  # the usual case: one encoding, no search
    fits, fit_bytes, fit_payload = 0, 0, None
    too_many, bisect = high, False  # the count `too_many` is over max_bytes
    while too_many - fits > 1:
        width = too_many - fits
        if bisect:
            n = fits + width // 2
        else:
            n = fits + (max_bytes - fit_bytes) * width // (over - fit_bytes)
            n = min(max(n, fits + 1), too_many - 1)
        payload = encode_batch(node, seq, entries[:n])
        size = batch_bytes(payload)
        if size <= max_bytes:
            fits, fit_bytes, fit_payload = n, size, payload
        else:
            too_many, over = n, size
        bisect = not bisect and too_many - fits > width // 2  # it did not halve the range
    return fits, fit_payload


# --- decoding (the chain, the wallet) ---------------------------------------------------------


def decode_batch(payload: Mapping[str, Any]) -> list[AccessEntry]:
    """The entries of a batch payload, in order, each compact (record = 32-hex prefix).

    BadBatch, saying what is wrong, for anything `encode_batch` would not have written.
    """
    if not isinstance(payload, Mapping):
        raise BadBatch("a batch is a JSON object")
    unknown, missing = set(payload) - BATCH_FIELDS, BATCH_FIELDS - set(payload)
    if unknown or missing:
        what = "unknown field(s) " if unknown else "missing field(s) "
        raise BadBatch(what + ", ".join(sorted(unknown or missing)))
    node, seq, time = payload["node"], payload["seq"], payload["time"]
    if not isinstance(node, str) or not _DID.fullmatch(node):
        raise BadBatch("'node' must be a did:key")
    _integer("seq", seq, 1, MAX_SEQ)
    _integer("time", time, 0, MAX_TIME - MAX_DT)
    parties = _table("parties", payload["parties"], MAX_BATCH_PARTIES, _is_did, "dids")
    records = _table("records", payload["records"], MAX_BATCH_RECORDS, _is_prefix, "32 hex")
    rows = payload["entries"]
    if not isinstance(rows, list) or not 1 <= len(rows) <= MAX_BATCH_ENTRIES:
        raise BadBatch(f"'entries' must be a list of 1 to {MAX_BATCH_ENTRIES} entries")
    entries = [_entry(i, row, parties, records, time) for i, row in enumerate(rows)]
    _require_all_used(entries, parties, records)
    return entries


def _integer(name: str, value: object, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise BadBatch(f"{name!r} must be an integer in {low}..{high}")
    return value


def _is_did(value: str) -> bool:
    return _DID.fullmatch(value) is not None


def _is_prefix(value: str) -> bool:
    return len(value) == RECORD_PREFIX_HEX and _HEX.fullmatch(value) is not None


def _table(name: str, values: object, bound: int, valid: Any, shape: str) -> list[str]:
    if not isinstance(values, list) or len(values) > bound:
        raise BadBatch(f"{name!r} must be a list of at most {bound} items")
    if not all(isinstance(v, str) and valid(v) for v in values):
        raise BadBatch(f"{name!r} must hold {shape}")
    if len(set(values)) != len(values):
        raise BadBatch(f"{name!r} names one item twice")
    return values


def _entry(i: int, row: object, parties: list[str], records: list[str], time: int) -> AccessEntry:
    if not isinstance(row, list) or len(row) != 8 or not all(type(v) is int for v in row):
        raise BadBatch(f"entry {i} must be a list of 8 integers")
    patient_i, reader_i, org_i, record_i, version, dt, purpose_i, outcome_i = row
    try:
        patient = _pick(parties, patient_i, "patient", none=True)
        reader = _pick(parties, reader_i, "reader", none=False)
        org = _pick(parties, org_i, "org", none=True)
        record = _pick(records, record_i, "record", none=True)
        purpose = _pick(PURPOSE_CODES, purpose_i, "purpose", none=False)
        outcome = _pick(OUTCOMES, outcome_i, "outcome", none=False)
        _integer("dt", dt, 0, MAX_DT)
        _check_anchor(bool(patient), bool(record), version, outcome)
    except BadBatch as exc:
        raise BadBatch(f"entry {i}: {exc}") from None
    return AccessEntry(patient, record, version, reader, org, purpose, outcome, time + dt)


def _pick(table: Sequence[str], index: int, name: str, none: bool) -> str:
    if none and index == -1:
        return ""
    if not 0 <= index < len(table):
        allowed = "-1 or " if none else ""
        raise BadBatch(f"{name} index {index} is not {allowed}0..{len(table) - 1}")
    return table[index]


def _require_all_used(
    entries: Iterable[AccessEntry], parties: list[str], records: list[str]
) -> None:
    """Every table item is used by some entry: nothing rides along unaudited."""
    used_parties: set[str] = set()
    used_records: set[str] = set()
    for e in entries:
        used_parties.update((e.patient, e.reader, e.org))
        used_records.add(e.record)
    unused = [p for p in parties if p not in used_parties]
    if unused:
        raise BadBatch(f"'parties' has {len(unused)} item(s) no entry uses: {unused[0][:80]}")
    spare = [r for r in records if r not in used_records]
    if spare:
        raise BadBatch(f"'records' has {len(spare)} item(s) no entry uses: {spare[0]}")
