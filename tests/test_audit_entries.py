"""The access entry codec (chain/modules/audit/entries.py): what a node encodes the chain
decodes back exactly, and every other shape of batch is refused with the reason."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest

from careledger.chain.modules.audit.entries import (
    ALLOWED_OUTCOMES,
    LEAF_DOMAIN,
    MAX_BATCH_ENTRIES,
    MAX_BATCH_PARTIES,
    MAX_BATCH_RECORDS,
    MAX_DT,
    OUTCOMES,
    PURPOSE_CODES,
    AccessEntry,
    BadBatch,
    batch_bytes,
    decode_batch,
    encode_batch,
    entries_fitting,
    fitting_batch,
)
from careledger.crypto.canonical import canonical_bytes
from careledger.crypto.keys import Identity

NODE, PATIENT, OTHER_PATIENT, DOCTOR, ORG = (Identity.generate().did for _ in range(5))
RECORD = "ab" * 32
OTHER_RECORD = "cd" * 32
T = 1_800_000_000


def entry(**changes: Any) -> AccessEntry:
    fields: dict[str, Any] = {
        "patient": PATIENT,
        "record": RECORD,
        "version": 1,
        "reader": DOCTOR,
        "org": ORG,
        "purpose": "TREAT",
        "outcome": "grant",
        "at": T,
    }
    fields.update(changes)
    return AccessEntry(**fields)


def mixed_entries() -> list[AccessEntry]:
    return [
        entry(),
        entry(record=OTHER_RECORD, version=3, at=T + 5, outcome="denied", purpose="HRESCH"),
        entry(reader=PATIENT, org="", purpose="", outcome="patient", at=T + 1),
        entry(patient=OTHER_PATIENT, record="ef" * 32, outcome="emergency", purpose="ETREAT"),
        entry(patient="", record="", version=0, outcome="not_found", at=T + MAX_DT),
        entry(patient="", record="", version=0, org="", outcome="malformed", purpose=""),
    ]


def test_a_batch_decodes_to_the_compact_entries_it_was_encoded_from() -> None:
    entries = mixed_entries()
    payload = encode_batch(NODE, 7, entries)
    assert (payload["node"], payload["seq"], payload["time"]) == (NODE, 7, T)
    assert decode_batch(payload) == [e.compact() for e in entries]
    assert all(len(r) == 32 for r in payload["records"])
    # each party and record prefix once; -1 where an entry names none
    assert len(payload["parties"]) == len(set(payload["parties"])) == 4
    assert payload["entries"][4][0] == payload["entries"][4][3] == -1


def test_the_leaf_is_over_the_compact_entry_in_rfc8785_form() -> None:
    full = entry()
    expected = hashlib.sha256(LEAF_DOMAIN + canonical_bytes(full.compact().to_json())).digest()
    assert full.leaf() == full.compact().leaf() == expected
    assert entry(at=T + 1).leaf() != full.leaf()
    assert full.compact().record == RECORD[:32]


def test_the_json_form_round_trips_and_is_checked() -> None:
    e = entry()
    assert AccessEntry.from_json(e.to_json()) == e
    with pytest.raises(BadBatch, match="exactly the fields"):
        AccessEntry.from_json({**e.to_json(), "extra": 1})
    with pytest.raises(BadBatch, match="outcome"):
        AccessEntry.from_json({**e.to_json(), "outcome": "maybe"})


def test_the_tables_name_every_outcome_and_purpose() -> None:
    allowed = ("patient", "author", "grant", "delegate", "emergency")
    assert OUTCOMES[:5] == ALLOWED_OUTCOMES == allowed
    assert PURPOSE_CODES[0] == "" and "ETREAT" in PURPOSE_CODES
    for i, outcome in enumerate(OUTCOMES):
        [decoded] = decode_batch(encode_batch(NODE, 1, [entry(outcome=outcome)]))
        assert decoded.outcome == outcome
        assert encode_batch(NODE, 1, [entry(outcome=outcome)])["entries"][0][7] == i


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (entry(outcome="grant", patient="", record="", version=0), "allowed read"),
        (entry(patient="", version=1), "a patient and a record together"),
        (entry(record=""), "a patient and a record together"),
        (entry(version=0), "version must be 1"),
        (entry(patient="", record="", version=2, outcome="denied"), "version must be 0"),
        (entry(reader="alice"), "reader"),
        (entry(org="did:web:x"), "org"),
        (entry(record="AB" * 32), "record"),
        (entry(purpose="TRAET"), "purpose"),
        (entry(outcome="ok"), "outcome"),
        (entry(at=-1), "unix seconds"),
    ],
)
def test_encode_refuses_a_malformed_entry(bad: AccessEntry, message: str) -> None:
    with pytest.raises(BadBatch, match=message):
        encode_batch(NODE, 1, [bad])


def test_encode_refuses_what_the_chain_would_refuse() -> None:
    with pytest.raises(BadBatch, match="1 to 2000 entries"):
        encode_batch(NODE, 1, [])
    with pytest.raises(BadBatch, match="within 3600 seconds"):
        encode_batch(NODE, 1, [entry(), entry(at=T + MAX_DT + 1)])
    with pytest.raises(BadBatch, match="sequence number"):
        encode_batch(NODE, 0, [entry()])


def good() -> dict[str, Any]:
    return encode_batch(NODE, 3, mixed_entries())


def changed(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    payload = copy.deepcopy(good())
    target: Any = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return payload


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({**good(), "extra": 1}, "unknown field"),
        ({k: v for k, v in good().items() if k != "records"}, "missing field"),
        (changed(("node",), "node-1"), "'node' must be a did"),
        (changed(("seq",), 0), "'seq' must be an integer"),
        (changed(("seq",), True), "'seq' must be an integer"),
        (changed(("time",), -5), "'time' must be an integer"),
        (changed(("time",), 1.5), "'time' must be an integer"),
        (changed(("parties",), "x"), "'parties' must be a list"),
        (changed(("parties", 0), "not-a-did"), "'parties' must hold dids"),
        (changed(("records", 0), "AB" * 16), "'records' must hold 32 hex"),
        (changed(("records", 0), "ab" * 32), "'records' must hold 32 hex"),
        (changed(("entries",), []), "'entries' must be a list of 1"),
        (changed(("entries", 0), [0, 1, 2]), "entry 0 must be a list of 8 integers"),
        (changed(("entries", 0, 4), "1"), "entry 0 must be a list of 8 integers"),
        (changed(("entries", 1, 0), 99), "entry 1: patient index 99"),
        (changed(("entries", 1, 0), -2), "entry 1: patient index -2"),
        (changed(("entries", 1, 1), -1), "entry 1: reader index -1"),
        (changed(("entries", 1, 2), 4), "entry 1: org index 4"),
        (changed(("entries", 1, 3), 3), "entry 1: record index 3"),
        (changed(("entries", 1, 5), MAX_DT + 1), "entry 1: 'dt'"),
        (changed(("entries", 1, 5), -1), "entry 1: 'dt'"),
        (changed(("entries", 1, 6), len(PURPOSE_CODES)), "entry 1: purpose index"),
        (changed(("entries", 1, 7), len(OUTCOMES)), "entry 1: outcome index"),
        (changed(("entries", 1, 4), 0), "entry 1: version must be 1"),
        (changed(("entries", 0, 3), -1), "entry 0: an entry names a patient and a record"),
        (changed(("entries", 4, 7), 2), "entry 4: an allowed read (grant)"),
    ],
)
def test_decode_refuses_every_malformed_shape(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(BadBatch, match=message.replace("(", r"\(").replace(")", r"\)")):
        decode_batch(payload)


def test_decode_refuses_table_items_no_entry_uses() -> None:
    spare_party = good()
    spare_party["parties"].append(Identity.generate().did)
    with pytest.raises(BadBatch, match="'parties' has 1 item"):
        decode_batch(spare_party)
    spare_record = good()
    spare_record["records"].append("00" * 16)
    with pytest.raises(BadBatch, match="'records' has 1 item"):
        decode_batch(spare_record)
    twice = good()
    twice["records"].append(twice["records"][0])
    with pytest.raises(BadBatch, match="'records' names one item twice"):
        decode_batch(twice)


def test_decode_refuses_oversized_tables_and_batches() -> None:
    many_parties = good()
    many_parties["parties"] = [NODE] * (MAX_BATCH_PARTIES + 1)
    with pytest.raises(BadBatch, match="at most 4000"):
        decode_batch(many_parties)
    many_records = good()
    many_records["records"] = ["00" * 16] * (MAX_BATCH_RECORDS + 1)
    with pytest.raises(BadBatch, match="at most 2000"):
        decode_batch(many_records)
    many_entries = good()
    many_entries["entries"] = many_entries["entries"][:1] * (MAX_BATCH_ENTRIES + 1)
    with pytest.raises(BadBatch, match="1 to 2000 entries"):
        decode_batch(many_entries)
    with pytest.raises(BadBatch, match="1 to 2000 entries"):
        encode_batch(NODE, 1, [entry()] * (MAX_BATCH_ENTRIES + 1))


def test_a_full_batch_of_repeated_entries_round_trips() -> None:
    entries = [entry(at=T + i % MAX_DT) for i in range(MAX_BATCH_ENTRIES)]
    payload = encode_batch(NODE, 1, entries)
    assert decode_batch(payload) == [e.compact() for e in entries]
    assert len(payload["records"]) == 1


def test_entries_fitting_finds_the_longest_prefix_under_a_size() -> None:
    entries = [entry(record=f"{i:064x}") for i in range(300)]
    limit = 4_000
    n = entries_fitting(NODE, 1, entries, limit)
    assert 0 < n < 300
    assert batch_bytes(encode_batch(NODE, 1, entries[:n])) <= limit
    assert batch_bytes(encode_batch(NODE, 1, entries[: n + 1])) > limit
    assert entries_fitting(NODE, 1, entries, 10) == 0
    assert entries_fitting(NODE, 1, entries) == 300  # 300 distinct records fit one transaction


@pytest.mark.parametrize("limit", [1_000, 4_000, 20_000, 30_000])
def test_fitting_batch_is_the_longest_fitting_prefix_and_its_payload(limit: int) -> None:
    # Sizes that do not grow evenly (parties and records new at some entries only) still give
    # the exact boundary the interpolating search looks for.
    entries = [
        entry(record=f"{i // (1 + i % 3):064x}", reader=(DOCTOR, ORG)[i % 7 == 0], org="")
        for i in range(MAX_BATCH_ENTRIES)
    ]
    n, payload = fitting_batch(NODE, 1, entries, limit)
    assert 0 < n < MAX_BATCH_ENTRIES
    assert payload == encode_batch(NODE, 1, entries[:n])
    assert batch_bytes(payload) <= limit < batch_bytes(encode_batch(NODE, 1, entries[: n + 1]))
    assert fitting_batch(NODE, 1, entries, 10) == (0, None)
