"""Break-glass on the real state machine (real SQLite), block by block: the escrow
(`consent/open_emergency`), the break-glass (`consent/break_glass`), its alert, and the read
decision's emergency allowance (asked through `records/read_access` as the node asks it).

Every refusal of the issue's "Bad input" is a transaction against the real application with
its own code and message, and nothing of it written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from careledger.chain.codes import Code
from careledger.chain.modules.audit.events import BreakGlassAlert
from careledger.chain.modules.consent import emergency_threshold
from careledger.chain.modules.consent.events import EmergencyOpened
from careledger.chain.modules.records import scope_key_payload
from test_consent import CHAIN_ID, Actor, T, World, blob

SHARE = "5e" * 64  # a wrapped share: the chain checks its shape only
SEALED = "5a" * 200


def escrow_payload(w: World, **extra: Any) -> dict[str, Any]:
    """An escrow of clinical and diagnostics (epoch 1) among the three members, k = 2."""
    members = sorted(m.did for m in (w.a, w.b, w.c))
    payload: dict[str, Any] = {
        "scopes": ["clinical", "diagnostics"],
        "sensitive": False,
        "threshold": 2,
        "members": members,
        "shares": [{"org": m, "index": i, "wrapped": SHARE} for i, m in enumerate(members, 1)],
        "sealed": SEALED,
        "epochs": {"clinical": 1, "diagnostics": 1},
        "escrow": "e5" * 16,
    }
    return payload | extra


def glass_payload(w: World, **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "patient": w.patient.did,
        "reason": "unconscious in A&E, no consent obtainable",
        "scopes": ["clinical"],
        "seconds": 600,
    }
    return payload | extra


@pytest.fixture
def opened(tmp_path: Path) -> World:
    """test_consent's world with records a1 (clinical), s1 (sensitive) by A's doctor, p1
    (clinical) by the patient, d1 (diagnostics) by A's doctor; the patient escrowed clinical
    and diagnostics."""
    w = World(tmp_path / "state.sqlite")
    w.granted(w.a, "write")
    written = w.codes(
        w.anchor(w.doctor, "a1"),
        w.anchor(w.doctor, "s1", scope="sensitive"),
        w.anchor(w.patient, "p1"),
        w.anchor(w.doctor, "d1", scope="diagnostics"),
        w.patient.tx("consent/open_emergency", escrow_payload(w)),
    )
    assert written == [0] * 5
    return w


def broke(w: World, requester: Actor, at: int = T, **extra: Any) -> dict[str, Any]:
    """`requester` breaks the glass at unix time `at`; the stored break-glass."""
    [result] = w.run(requester.tx("consent/break_glass", glass_payload(w, **extra)), at=at)
    assert result.code == 0, result.log
    [alert] = BreakGlassAlert.all_in(result.events)
    found: dict[str, Any] = w.query("consent/break_glass", id=alert.id)
    return found


def access(w: World, reader: Actor, rid: str, purpose: str = "ETREAT", at: int = T) -> Any:
    [answer] = w.query(
        "records/read_access", reader=reader.did, purpose=purpose, at=at, hashes=[blob(rid, 1)]
    )
    return answer


# --- the escrow ------------------------------------------------------------------------------


def test_the_patient_opens_emergency_access_and_anyone_sees_its_public_parts(
    tmp_path: Path,
) -> None:
    w = World(tmp_path / "state.sqlite")
    [result] = w.run(w.patient.tx("consent/open_emergency", escrow_payload(w)))
    assert result.code == 0, result.log
    assert EmergencyOpened.all_in(result.events) == [
        EmergencyOpened(w.patient.did, "e5" * 16, ("clinical", "diagnostics"))
    ]
    found = w.query("consent/emergency", patient=w.patient.did)
    members = sorted(m.did for m in (w.a, w.b, w.c))
    assert found == {
        "patient": w.patient.did,
        "escrow": "e5" * 16,
        "scopes": ["clinical", "diagnostics"],
        "sensitive": False,
        "threshold": 2,
        "members": members,
        "shares": [{"org": m, "index": i, "wrapped": SHARE} for i, m in enumerate(members, 1)],
        "sealed": SEALED,
        "epochs": {"clinical": 1, "diagnostics": 1},
        "height": w.app.info().last_height,
        "current_members": members,
    }
    # A new escrow replaces it.
    again = escrow_payload(w, escrow="e6" * 16, threshold=3)
    assert w.codes(w.patient.tx("consent/open_emergency", again)) == [0]
    assert w.query("consent/emergency", patient=w.patient.did)["escrow"] == "e6" * 16


def test_the_threshold_policy_is_ceil_two_thirds() -> None:
    assert [emergency_threshold(n) for n in (1, 2, 3, 4, 5, 6, 7)] == [1, 2, 2, 3, 4, 4, 5]


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        (
            {"scopes": ["clinical", "sensitive"], "epochs": {"clinical": 1, "sensitive": 1}},
            Code.INVALID_PAYLOAD,
            'the sensitive scope is opened to emergencies only with "sensitive": true',
        ),
        ({"sensitive": True}, Code.INVALID_PAYLOAD, "do not name the sensitive scope"),
        ({"threshold": 1}, Code.INVALID_PAYLOAD, "below the policy's 2 of 3 members"),
        ({"threshold": 4}, Code.INVALID_PAYLOAD, "threshold 4 is above the 3 members"),
        ({"epochs": {"clinical": 2, "diagnostics": 1}}, Code.CONFLICT, "current clinical epoch"),
        ({"epochs": {"clinical": 1}}, Code.INVALID_PAYLOAD, "missing field 'diagnostics'"),
        ({"scopes": ["medications"], "epochs": {"medications": 1}}, Code.CONFLICT, "is none"),
        ({"sealed": "5a" * 5}, Code.INVALID_PAYLOAD, "'sealed'"),
    ],
)
def test_a_bad_escrow_is_refused(
    tmp_path: Path, change: dict[str, Any], code: int, message: str
) -> None:
    w = World(tmp_path / "state.sqlite")
    w.refused(w.patient.tx("consent/open_emergency", escrow_payload(w, **change)), code, message)


def test_an_escrow_whose_members_are_not_the_current_members_is_refused(tmp_path: Path) -> None:
    w = World(tmp_path / "state.sqlite")
    two = sorted(m.did for m in (w.a, w.b))
    shares = [{"org": m, "index": i, "wrapped": SHARE} for i, m in enumerate(two, 1)]
    missing = escrow_payload(w, members=two, shares=shares)
    w.refused(
        w.patient.tx("consent/open_emergency", missing),
        Code.CONFLICT,
        "but the current members are",
    )
    four = sorted([*(m.did for m in (w.a, w.b, w.c)), w.stranger.did])
    shares = [{"org": m, "index": i, "wrapped": SHARE} for i, m in enumerate(four, 1)]
    extra = escrow_payload(w, members=four, shares=shares, threshold=3)
    w.refused(
        w.patient.tx("consent/open_emergency", extra), Code.CONFLICT, "but the current members"
    )
    shuffled = escrow_payload(w)
    shuffled["shares"] = list(reversed(shuffled["shares"]))
    w.refused(
        w.patient.tx("consent/open_emergency", shuffled),
        Code.INVALID_PAYLOAD,
        "'shares' must hold share i of member i",
    )


def test_only_the_patient_opens_emergency_access(tmp_path: Path) -> None:
    w = World(tmp_path / "state.sqlite")
    for sender in (w.a, w.doctor):
        w.refused(
            sender.tx("consent/open_emergency", escrow_payload(w)),
            Code.UNAUTHORISED,
            "only a patient opens emergency access",
        )


# --- breaking the glass ----------------------------------------------------------------------


def test_a_break_glass_is_recorded_with_its_alert_in_the_same_block(opened: World) -> None:
    w = opened
    [result] = w.run(w.rival.tx("consent/break_glass", glass_payload(w)), at=T)
    assert result.code == 0, result.log
    [alert] = BreakGlassAlert.all_in(result.events)
    height = w.app.info().last_height
    glass = w.query("consent/break_glass", id=alert.id)
    assert glass == {
        "id": alert.id,
        "patient": w.patient.did,
        "requester": w.rival.did,
        "org": w.b.did,
        "reason": "unconscious in A&E, no consent obtainable",
        "scopes": ["clinical"],
        "escrow": "e5" * 16,
        "epochs": {"clinical": 1, "diagnostics": 1},
        "start": T,
        "until": T + 600,
        "height": height,
    }
    assert alert == BreakGlassAlert(
        w.patient.did, alert.id, w.rival.did, w.b.did, ("clinical",), str(T + 600)
    )
    assert len(alert.id) == 32  # the transaction hash's first 16 bytes
    assert w.query("consent/break_glasses", patient=w.patient.did) == [glass]
    log = w.query("audit/log", patient=w.patient.did)
    assert [a["alert"]["id"] for a in log["alerts"]] == [alert.id]
    assert log["alerts"][0]["height"] == height


def test_an_emergency_read_covers_exactly_the_broken_scopes_for_etreat_in_the_window(
    opened: World,
) -> None:
    w = opened
    glass = broke(w, w.rival)
    before = access(w, w.rival, "a1", "ETREAT", at=T - 1)
    assert (before["status"], before["basis"]) == (403, "")
    assert before["reason"] == f"break-glass {glass['id']} starts at {T}"
    for rid in ("a1", "p1"):  # the clinical records, whoever wrote them
        answer = access(w, w.rival, rid)
        assert (answer["status"], answer["basis"], answer["grant"]) == (200, "emergency", "")
        assert answer["reason"] == f"break-glass {glass['id']}: emergency access until {T + 600}"
    last = access(w, w.rival, "a1", at=T + 599)
    assert last["status"] == 200
    # Diagnostics are opened by the patient but not broken into; sensitive is not opened.
    for rid, scope in (("d1", "diagnostics"), ("s1", "sensitive")):
        answer = access(w, w.rival, rid)
        assert (answer["status"], answer["basis"]) == (403, "")
        assert answer["reason"] == f"break-glass {glass['id']} covers clinical, not scope {scope}"
    # Not for another purpose, and not after the time limit.
    assert access(w, w.rival, "a1", "TREAT")["status"] == 403
    after = access(w, w.rival, "a1", at=T + 600)
    assert (after["status"], after["reason"]) == (
        403,
        f"break-glass {glass['id']} ended at {T + 600}",
    )
    # A colleague of the requester is not covered: the break-glass names one person.
    assert access(w, w.colleague, "a1")["status"] == 403
    assert access(w, w.b, "a1")["status"] == 403


def test_a_grant_keeps_its_basis_and_the_others_theirs(opened: World) -> None:
    w = opened
    grant_id = w.granted(w.b, purposes=["ETREAT"])
    broke(w, w.rival)
    answer = access(w, w.rival, "a1")
    assert (answer["status"], answer["basis"], answer["grant"]) == (200, "grant", grant_id)
    assert access(w, w.patient, "a1", "")["basis"] == "patient"
    assert access(w, w.doctor, "a1", "TREAT")["basis"] == "author"
    w.granted(w.guardian, "delegate")
    assert access(w, w.guardian, "a1", "")["basis"] == "delegate"


def test_the_sensitive_scope_is_broken_into_only_when_the_patient_opted_in(
    opened: World,
) -> None:
    w = opened
    w.refused(
        w.rival.tx("consent/break_glass", glass_payload(w, scopes=["clinical", "sensitive"])),
        Code.UNAUTHORISED,
        "the patient did not open the sensitive scope to emergency access (no opt-in)",
    )
    payload = escrow_payload(
        w,
        scopes=["clinical", "sensitive"],
        sensitive=True,
        epochs={"clinical": 1, "sensitive": 1},
        escrow="e7" * 16,
    )
    assert w.codes(w.patient.tx("consent/open_emergency", payload)) == [0]
    broke(w, w.rival, scopes=["sensitive"])
    assert access(w, w.rival, "s1")["basis"] == "emergency"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"reason": ""}, "a break-glass states its reason"),
        ({"reason": "   "}, "a break-glass states its reason"),
        ({"reason": "x" * 501}, "a break-glass reason is at most 500 characters"),
        ({"seconds": 3601}, "a break-glass lasts 1 to 3600 seconds, not 3601"),
        ({"seconds": 0}, "a break-glass lasts 1 to 3600 seconds, not 0"),
    ],
)
def test_a_bad_break_glass_is_refused_before_a_block(
    opened: World, change: dict[str, Any], message: str
) -> None:
    opened.refused(
        opened.rival.tx("consent/break_glass", glass_payload(opened, **change)),
        Code.INVALID_PAYLOAD,
        message,
    )


def test_a_break_glass_without_a_reason_field_is_refused(opened: World) -> None:
    payload = glass_payload(opened)
    del payload["reason"]
    opened.refused(
        opened.rival.tx("consent/break_glass", payload),
        Code.INVALID_PAYLOAD,
        "a break-glass states its reason",
    )


def test_a_scope_the_patient_did_not_open_is_refused(opened: World) -> None:
    opened.refused(
        opened.rival.tx("consent/break_glass", glass_payload(opened, scopes=["financial"])),
        Code.UNAUTHORISED,
        "scope(s) financial not opened to emergency access by the patient "
        "(opened: clinical, diagnostics)",
    )


def test_a_patient_or_an_organisation_cannot_break_the_glass(opened: World) -> None:
    w = opened
    w.refused(
        w.stranger.tx("consent/break_glass", glass_payload(w)),
        Code.UNAUTHORISED,
        "a patient cannot break the glass: only a practitioner of a member organisation",
    )
    w.refused(
        w.b.tx("consent/break_glass", glass_payload(w)),
        Code.UNAUTHORISED,
        "an organisation cannot break the glass",
    )


def test_a_practitioner_of_an_expelled_organisation_cannot_break_the_glass_nor_read(
    opened: World,
) -> None:
    w = opened
    broke(w, w.rival)
    assert access(w, w.rival, "a1")["status"] == 200
    votes = [
        org.tx("identity/approve_membership", {"action": "remove", "subject": w.b.did})
        for org in (w.a, w.c)
    ]
    assert w.codes(*votes) == [0, 0]
    # The running break-glass no longer reads: its organisation does not act.
    refused = access(w, w.rival, "a1")
    assert (refused["status"], refused["reason"]) == (403, "not acting for a member organisation")
    w.refused(
        w.colleague.tx("consent/break_glass", glass_payload(w)),
        Code.UNKNOWN_SENDER,
        "may no longer act: deregistered, removed, or its organisation was removed",
    )


def test_no_break_glass_without_an_escrow(tmp_path: Path) -> None:
    w = World(tmp_path / "state.sqlite")
    w.refused(
        w.rival.tx("consent/break_glass", glass_payload(w)),
        Code.NOT_FOUND,
        "opened no scope to emergency access (no escrow)",
    )
    w.refused(
        w.rival.tx("consent/break_glass", glass_payload(w, patient=w.a.did)),
        Code.NOT_FOUND,
        "is not a registered active patient",
    )


def test_one_running_break_glass_per_requester_and_patient(opened: World) -> None:
    w = opened
    glass = broke(w, w.rival)
    w.refused(
        w.rival.tx("consent/break_glass", glass_payload(w, scopes=["diagnostics"])),
        Code.CONFLICT,
        f"break-glass {glass['id']} of {w.rival.did} for this patient runs until {T + 600}",
        at=T + 10,
    )
    later = broke(w, w.rival, at=T + 600, scopes=["diagnostics"])
    assert access(w, w.rival, "d1", at=T + 601)["basis"] == "emergency"
    assert access(w, w.rival, "a1", at=T + 601)["status"] == 403
    listed = w.query("consent/break_glasses", patient=w.patient.did)
    assert [g["id"] for g in listed] == [later["id"], glass["id"]]
    latest = w.query("consent/break_glasses", patient=w.patient.did, limit="1")
    assert [g["id"] for g in latest] == [later["id"]]


def test_a_running_break_glass_makes_its_requester_a_party(opened: World) -> None:
    w = opened
    broke(w, w.rival)

    def party(at: int) -> bool:
        params = {"patient": w.patient.did, "did": w.rival.did, "org": w.b.did, "at": at}
        return bool(w.query("consent/party", **params)["party"])

    assert (party(T - 1), party(T), party(T + 599), party(T + 600)) == (False, True, True, False)


def test_the_break_glass_queries_refuse_bad_parameters(opened: World) -> None:
    result = opened.app.query("consent/break_glass", orjson.dumps({"id": "00" * 16}))
    assert (result.code, result.log) == (Code.NOT_FOUND, f"no break-glass {'00' * 16}")
    result = opened.app.query("consent/emergency", orjson.dumps({"patient": opened.a.did}))
    assert result.code == Code.NOT_FOUND


def test_a_new_scope_epoch_makes_the_escrow_stale_for_a_new_open(opened: World) -> None:
    w = opened
    key = scope_key_payload(w.patient.identity, CHAIN_ID, "clinical", 2, "33" * 32)
    assert w.codes(w.patient.tx("records/publish_scope_key", key)) == [0]
    w.refused(
        w.patient.tx("consent/open_emergency", escrow_payload(w, escrow="e8" * 16)),
        Code.CONFLICT,
        "the patient's current clinical epoch is 2",
    )
    fresh = escrow_payload(w, escrow="e8" * 16, epochs={"clinical": 2, "diagnostics": 1})
    assert w.codes(w.patient.tx("consent/open_emergency", fresh)) == [0]
