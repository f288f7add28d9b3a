"""A writer does not trust a node's word for the patient's keys.

A writer wraps each record's data key to the patient's current scope public key, which it
learns from a node. A malicious node (or anything between writer and node) answers with a key
of its own and reads everything written next. The writer checks each scope key against the
patient's signature, and the patient's current key against the chain of rotation certificates
that starts at the did itself (wallet/keyring.py): a substituted answer is refused and nothing
is uploaded or anchored.

The malicious node is the real node behind a transport that rewrites one kind of answer, so
every other request (signed, bound to the node) goes through untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from careledger.chain.modules.identity import rotation_payload
from careledger.chain.modules.records import scope_key_payload
from careledger.crypto.keys import Identity
from careledger.crypto.scopekeys import derive_scope_key
from careledger.wallet.keyring import UntrustedKey
from careledger.wallet.node_client import NodeClient
from careledger.wallet.records import RecordsClient
from nodeutil import NodeProcess, enrol

OBSERVATION = {
    "resourceType": "Observation",
    "id": "trust-1",
    "status": "final",
    "code": {"text": "heart rate"},
}
Rewrite = Callable[[str, Any], Any]


class LyingNode(httpx.BaseTransport):
    """The real node over HTTP, except that `rewrite(path, answer)` changes query answers."""

    def __init__(self, rewrite: Rewrite) -> None:
        self.inner = httpx.HTTPTransport()
        self.rewrite = rewrite

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        path = request.url.path
        if not path.startswith("/query/") or request.method != "GET":
            return response
        answer = orjson.loads(response.read())
        forged = self.rewrite(path[len("/query/") :], answer)
        return httpx.Response(response.status_code, json=forged)


@pytest.fixture()
def patient_and_clinic(node: NodeProcess) -> Iterator[tuple[str, Any]]:
    clinic = RecordsClient(node.url, node.organisation())
    yield enrol(clinic, "trust test").did, node


def writer_through(node: NodeProcess, rewrite: Rewrite) -> RecordsClient:
    http = httpx.Client(base_url=node.url, transport=LyingNode(rewrite), timeout=30)
    return RecordsClient(NodeClient(node.url, http=http), node.organisation())


def anchored(node: NodeProcess, patient: str) -> int:
    return len(NodeClient(node.url, node.organisation()).query("records/records", patient=patient))


def test_a_scope_key_substituted_by_the_node_is_refused(patient_and_clinic: Any) -> None:
    patient, node = patient_and_clinic
    own = Identity.generate()  # the node's own key, whose private half it keeps

    def substitute(path: str, answer: Any) -> Any:
        if path == "records/scope_keys":
            for row in answer:
                row["public_key"] = own.encryption_public.hex()
        return answer

    before = anchored(node, patient)
    with pytest.raises(UntrustedKey, match="not signed by the patient's current key"):
        writer_through(node, substitute).write(patient, OBSERVATION)
    assert anchored(node, patient) == before
    # The control: the honest answer is accepted, and the write goes through.
    assert writer_through(node, lambda path, answer: answer).write(patient, OBSERVATION).version


def test_a_key_the_node_signed_itself_is_refused(patient_and_clinic: Any) -> None:
    """The node also swaps the patient's current key for its own and signs its scope key
    with it: the rotation chain from the did does not lead there."""
    patient, node = patient_and_clinic
    thief = Identity.generate()
    chain_id = NodeClient(node.url).status()["chain_id"]
    forged_key = derive_scope_key(thief.secret("scope-keys"), "diagnostics", 9)

    def impersonate(path: str, answer: Any) -> Any:
        if path == "identity/identity":
            rotation = rotation_payload(thief, thief, chain_id, did=patient)
            answer["keys"].append({"since": 1, **rotation})  # a "rotation" without the old key
            answer["signing_key"] = thief.signing_public.hex()
        if path == "records/scope_keys":
            signed = scope_key_payload(
                thief, chain_id, "diagnostics", 9, forged_key.public_bytes.hex(), patient
            )
            answer.append({**signed, "height": 1})
        return answer

    with pytest.raises(UntrustedKey, match="rotation at height 1 is not signed"):
        writer_through(node, impersonate).write(patient, OBSERVATION)


def test_a_key_history_that_does_not_start_at_the_did_is_refused(
    patient_and_clinic: Any,
) -> None:
    patient, node = patient_and_clinic
    thief = Identity.generate()

    def rewrite_history(path: str, answer: Any) -> Any:
        if path == "identity/identity":
            answer["keys"] = [{"since": 0, "signing_key": thief.signing_public.hex()}]
            answer["signing_key"] = thief.signing_public.hex()
        return answer

    with pytest.raises(UntrustedKey, match="does not start at the did's own key"):
        writer_through(node, rewrite_history).write(patient, OBSERVATION)
