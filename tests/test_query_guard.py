"""Who may ask the node about consent: the parties of that consent, nobody else.

Consent says who treats whom. Through the node API, a patient's grants are listed only to the
patient and its delegates, a grantee's only to the grantee (or its organisation), one grant
only to its parties; the consent guard's own question (`records/read_access`) is not asked
over HTTP at all. Against a real `careledger up`.
"""

from __future__ import annotations

import httpx
import pytest

from accessutil import Consortium
from careledger.protocol.signing import RequestSigner
from careledger.wallet.node_client import NodeError
from nodeutil import NodeProcess


def test_a_patient_cannot_list_another_patients_grants_through_the_node(
    node: NodeProcess,
) -> None:
    """Patient X grants a clinic (the founder) the sensitive scope. Another registered
    patient asks who X granted what, whom the clinic treats, who may read X's sensitive
    records, and the grant itself by id: each is 403."""
    consortium = Consortium(node.url, node.organisation())
    clinic = consortium.founder
    x, stranger = consortium.patient(), consortium.patient()
    grant_id = consortium.grant(x, clinic.did, scopes=("sensitive",))
    nosy = consortium.client.signed_as(stranger)
    asked = {
        "consent/grants": {"patient": x.did},
        "consent/granted": {"grantee": clinic.did},
        "consent/readers": {"patient": x.did, "scope": "sensitive"},
        "consent/grant": {"id": grant_id},
    }
    for path, params in asked.items():
        with pytest.raises(NodeError) as refused:
            nosy.query(path, **params)
        assert refused.value.status == 403, (path, refused.value)
    # The parties are answered: the patient, the grantee, and a delegate the patient named.
    mine = consortium.client.signed_as(x)
    assert [g["id"] for g in mine.query("consent/grants", patient=x.did)] == [grant_id]
    assert grant_id in [
        g["id"] for g in consortium.client.query("consent/granted", grantee=clinic.did)
    ]
    assert consortium.client.query("consent/grant", id=grant_id)["patient"] == x.did
    guardian = consortium.patient()
    consortium.grant(x, guardian.did, action="delegate", scopes=("clinical",))
    as_guardian = consortium.client.signed_as(guardian)
    assert grant_id in [g["id"] for g in as_guardian.query("consent/grants", patient=x.did)]


def test_a_client_cannot_ask_read_access_for_a_reader_and_time_of_its_choosing(
    node: NodeProcess,
) -> None:
    """`records/read_access` takes the reader and the time from its caller (the guard):
    through the API a client would learn whose grants cover which blob, at any time."""
    consortium = Consortium(node.url, node.organisation())
    x, stranger = consortium.patient(), consortium.patient()
    consortium.grant(x, consortium.founder.did, action="write")
    record = consortium.write(consortium.founder, x.did)
    http = httpx.Client(base_url=node.url, timeout=30)
    response = http.get(
        "/query/records/read_access",
        params={"reader": consortium.founder.did, "purpose": "TREAT", "hashes": record.hash},
        auth=RequestSigner(stranger.identity, stranger.did),
    )
    assert response.status_code == 404, response.text
    assert x.did not in response.text


def test_a_patients_records_are_listed_only_to_the_parties_of_its_consent(
    node: NodeProcess,
) -> None:
    """`records/records` names the organisations that wrote a patient's records (who treats
    whom): a stranger is refused; the patient, a grantee and the writing organisation are
    answered."""
    consortium = Consortium(node.url, node.organisation())
    clinic = consortium.founder
    x, stranger = consortium.patient(), consortium.patient()
    consortium.grant(x, clinic.did, action="write")
    record = consortium.write(clinic, x.did)
    other = consortium.admit_member("Other Clinic")
    for path, params in (
        ("records/records", {"patient": x.did}),
        ("records/versions", {"patient": x.did, "record": record.name}),
    ):
        for outsider in (stranger, other):
            with pytest.raises(NodeError) as refused:
                consortium.client.signed_as(outsider).query(path, **params)
            assert refused.value.status == 403, (path, refused.value)
        assert consortium.client.signed_as(x).query(path, **params)  # the patient
    consortium.grant(x, other.did, scopes=("clinical",))  # now a party: answered
    assert consortium.client.signed_as(other).query("records/records", patient=x.did)
    # The writing organisation is answered for the records it wrote, grant or not.
    grants = consortium.client.signed_as(x).query("consent/grants", patient=x.did)
    (write,) = [g["id"] for g in grants if g["action"] == "write"]
    consortium.revoke(x, write)
    assert consortium.client.query("records/records", patient=x.did)[0]["org"] == clinic.did
