"""The node API's perimeter on a real `careledger up` process: who may call it, replays, bodies.

Each test performs the attack over real HTTP on loopback and shows it refused, with a JSON
error, while the node keeps serving.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from careledger.chain.codes import Code
from careledger.chain.modules.identity import rotation_payload
from careledger.chain.modules.identity.vouchers import sign_voucher
from careledger.chain.tx import Tx
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.crypto.requestsig import (
    MAX_FUTURE_MS,
    MAX_SKEW_MS,
    Audience,
    BadAuthorization,
    SignedRequest,
    authorization,
    check_signature,
    parse_authorization,
)
from careledger.node.builder import Solo, build_node
from careledger.node.datadir import initialise
from careledger.node.replay_cache import ReplayCache, ReplayCacheFull, Replayed
from careledger.protocol.frames import MAX_FETCH, unpack_results
from careledger.protocol.signing import RequestSigner
from careledger.wallet.node_client import NodeClient, NodeError, Signer
from nodeutil import (
    NodeProcess,
    free_port,
    practitioner_payload,
    register_patient_tx,
    serve_over_http,
)

MiB = 1024 * 1024


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def audience_of(node: NodeProcess) -> Audience:
    status = httpx.get(node.url + "/status").json()
    return Audience(status["chain_id"], status["node_id"])


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, str(response.json()["error"]["code"])


def signed_get(
    node: NodeProcess, who: KeyFile, target: str, audience: Audience | None = None
) -> httpx.Response:
    header = authorization(
        who.identity, who.did, audience or audience_of(node), "GET", target, b"", now_ms()
    )
    return httpx.get(node.url + target, headers={"authorization": header})


def registration(node: NodeProcess, patient: Identity, sender: str | None = None) -> bytes:
    """A patient's own registration, vouched for by the node's organisation."""
    chain_id = httpx.get(node.url + "/status").json()["chain_id"]
    payload = {
        "encryption_key": patient.encryption_public.hex(),
        "voucher": node.voucher(patient.did),
    }
    tx = Tx(chain_id, "identity/register_patient", sender or patient.did, 1, payload)
    return tx.sign(patient)


# --- who may call -------------------------------------------------------------------------


def test_only_status_answers_an_unsigned_request(node: NodeProcess) -> None:
    status = httpx.get(node.url + "/status").json()
    assert status["node_id"] == (node.data_dir / "node_id").read_text().strip()
    assert len(status["node_id"]) == 32 and status["chain_id"]

    plain = httpx.Client(base_url=node.url)
    tx_hash = "00" * 32
    for method, path, body in [
        ("GET", "/query/identity/members", None),
        ("GET", "/blocks/1", None),
        ("GET", f"/txs/{tx_hash}", None),
        ("GET", f"/blobs/{tx_hash}", None),
        ("POST", "/tx", b'{"tx": "AAAA"}'),
        ("POST", "/txs", b'{"txs": ["AAAA"]}'),
        ("POST", "/blobs/fetch", b'{"hashes": []}'),
        ("GET", "/nowhere", None),
    ]:
        response = plain.request(method, path, content=body)
        assert error_of(response) == (401, "unauthenticated"), path
        assert response.headers["www-authenticate"] == "CareLedger"
    assert plain.get("/status").status_code == 200  # still serving


def test_a_signed_request_of_an_unregistered_or_deactivated_identity_is_refused(
    node: NodeProcess,
) -> None:
    stranger = Identity.generate()
    stranger_key = KeyFile(stranger.did, "patient", stranger)
    refused = signed_get(node, stranger_key, "/query/identity/members")
    assert error_of(refused) == (401, "unauthenticated")
    assert "not a registered identity" in refused.json()["error"]["message"]

    org = node.organisation()
    doctor = Identity.generate()
    signer = Signer(node.client(), org.did, org.identity)
    chain_id = httpx.get(node.url + "/status").json()["chain_id"]
    payload = practitioner_payload(chain_id, org.did, doctor, name="B")
    signer.send("identity/register_practitioner", payload)
    doctor_key = KeyFile(doctor.did, "practitioner", doctor)
    assert signed_get(node, doctor_key, "/query/identity/members").status_code == 200
    signer.send("identity/deregister_practitioner", {"did": doctor.did})
    gone = signed_get(node, doctor_key, "/query/identity/members")
    assert error_of(gone) == (401, "unauthenticated")
    assert "no longer active" in gone.json()["error"]["message"]


def test_an_unregistered_did_may_only_submit_its_own_registration(node: NodeProcess) -> None:
    chain_id = node.client().status()["chain_id"]
    patient, other = Identity.generate(), Identity.generate()
    own = NodeClient(node.url, patient)

    for raw in (
        registration(node, other),  # someone else's registration, carried by the patient
        Tx(chain_id, "records/erase", patient.did, 1, {"all": True}).sign(patient),
    ):
        with pytest.raises(NodeError) as refused:
            own.submit(raw)
        assert (refused.value.status, refused.value.code) == (401, "unauthenticated")
    with pytest.raises(NodeError) as batch:
        own.submit_many([registration(node, patient)])  # only POST /tx, one transaction
    assert batch.value.status == 401
    with pytest.raises(NodeError) as read:
        own.query("auth/nonce", did=patient.did)
    assert read.value.status == 401

    result = own.submit(registration(node, patient), wait=True)
    assert result["code"] == 0
    assert own.query("identity/identity", did=patient.did)["kind"] == "patient"  # now it may


# --- replays --------------------------------------------------------------------------------


def test_a_captured_request_is_refused_when_replayed(node: NodeProcess) -> None:
    org = node.organisation()
    target = "/query/identity/members"
    header = authorization(org.identity, org.did, audience_of(node), "GET", target, b"", now_ms())
    first = httpx.get(node.url + target, headers={"authorization": header})
    assert first.status_code == 200
    again = httpx.get(node.url + target, headers={"authorization": header})
    assert error_of(again) == (401, "replayed")

    body = b'{"tx": "' + base64.b64encode(registration(node, Identity.generate())) + b'"}'
    header = authorization(org.identity, org.did, audience_of(node), "POST", "/tx", body, now_ms())
    sent = {"authorization": header, "content-type": "application/json"}
    assert httpx.post(node.url + "/tx", content=body, headers=sent).status_code in (200, 202)
    replayed = httpx.post(node.url + "/tx", content=body, headers=sent)
    assert error_of(replayed) == (401, "replayed")


def test_a_request_for_another_node_or_chain_or_time_is_refused(
    node: NodeProcess, tmp_path: Path
) -> None:
    """The same patient is registered on two chains; a request to one fails at the other."""
    other = NodeProcess(tmp_path / "other", free_port())
    other.start("--block-interval", "0.05")
    try:
        patient = Identity.generate()
        for n in (node, other):
            assert NodeClient(n.url, patient).submit(registration(n, patient))["code"] == 0
        me = KeyFile(patient.did, "patient", patient)
        target = f"/query/identity/identity?did={patient.did}"
        here, there = audience_of(node), audience_of(other)
        assert signed_get(node, me, target, here).status_code == 200

        for audience in (
            there,  # captured at the other node (and chain)
            Audience(here.chain_id, there.node_id),  # this chain, another node
            Audience(there.chain_id, here.node_id),  # this node id, another chain
        ):
            refused = signed_get(node, me, target, audience)
            assert error_of(refused) == (401, "unauthenticated"), audience

        stale = authorization(
            patient, patient.did, here, "GET", target, b"", now_ms() - MAX_SKEW_MS - 60_000
        )
        late = httpx.get(node.url + target, headers={"authorization": stale})
        assert error_of(late) == (401, "unauthenticated")
        assert "away from the node's clock" in late.json()["error"]["message"]

        tampered = authorization(patient, patient.did, here, "GET", target, b"", now_ms())
        moved = httpx.get(node.url + "/query/identity/members", headers={"authorization": tampered})
        assert error_of(moved) == (401, "unauthenticated")
    finally:
        other.stop()


def test_the_replay_cache_keeps_only_the_skew_window_and_fails_closed_when_full() -> None:
    cache = ReplayCache(window_ms=10_000, capacity=3)
    start = 1_800_000_000_000

    def request(ts_ms: int) -> SignedRequest:
        nonce = base64.urlsafe_b64encode(hashlib.sha256(str(ts_ms).encode()).digest()[:16])
        return SignedRequest("did:key:z6Mk", ts_ms, nonce.decode().rstrip("="), b"")

    first = request(start)
    cache.remember(first, start)
    with pytest.raises(Replayed):
        cache.check(first)
    with pytest.raises(Replayed):
        cache.remember(first, start + 5)
    cache.remember(request(start + 1), start + 1)
    cache.remember(request(start + 2_000), start + 2_000)
    with pytest.raises(ReplayCacheFull):  # full: refuse rather than forget a fresh nonce
        cache.remember(request(start + 3_000), start + 3_000)
    assert len(cache) == 3

    # Once the first second's timestamps are stale (the node refuses them anyway), their
    # nonces go, and there is room again; the later one stays.
    later = start + 11_000
    cache.remember(request(later), later)
    assert len(cache) == 2
    with pytest.raises(Replayed):
        cache.check(request(start + 2_000))


def test_a_request_signed_for_one_did_does_not_pass_as_another_with_the_same_key(
    node: NodeProcess,
) -> None:
    """A rotation could once name any key, so two dids could share one: a registered identity
    rotated to the organisation's public key, and a captured request of the organisation,
    relabelled with that did, passed as a request of it (and as a fresh nonce: the cache is
    keyed by did) while the did was not in the signed bytes. Three defences now: a rotation
    carries a proof by the new key (which the mimic cannot sign), the chain refuses a
    rotation to a key another identity holds, and the did is in the signed bytes."""
    org = node.organisation()
    mimic = Identity.generate()
    NodeClient(node.url, mimic).submit(registration(node, mimic), wait=True)
    chain_id = NodeClient(node.url, mimic).status()["chain_id"]
    rotation = rotation_payload(mimic, mimic, chain_id, encryption_key="")  # its own proof
    rotation["signing_key"] = org.identity.signing_public.hex()
    with pytest.raises(NodeError) as refused:
        Signer(NodeClient(node.url, mimic), mimic.did, mimic).send("identity/rotate_key", rotation)
    assert refused.value.code == f"code_{int(Code.UNAUTHORISED)}"
    target = "/query/identity/members"
    captured = authorization(org.identity, org.did, audience_of(node), "GET", target, b"", now_ms())
    relabelled = captured.replace(f"did={org.did},", f"did={mimic.did},")
    assert relabelled != captured
    answer = httpx.get(node.url + target, headers={"authorization": relabelled})
    assert answer.status_code == 401, f"passed as {mimic.did}: {answer.text[:80]}"
    assert error_of(answer) == (401, "unauthenticated")
    assert httpx.get(node.url + target, headers={"authorization": captured}).status_code == 200

    # The same, directly at the check: the key verifies only the did it signed for.
    signed = parse_authorization(captured)
    here, empty = audience_of(node), hashlib.sha256(b"").digest()
    check_signature(signed, org.identity.signing_public, here, "GET", target, empty)
    with pytest.raises(BadAuthorization, match="another did"):
        check_signature(
            replace(signed, did=mimic.did), org.identity.signing_public, here, "GET", target, empty
        )


@contextlib.contextmanager
def served_embedded(root: Path, replay: ReplayCache) -> Iterator[tuple[str, KeyFile]]:
    """An embedded node served over HTTP on loopback with these replay-cache bounds."""
    org = initialise(root)
    node = build_node(root, Solo(0.05))
    try:
        with serve_over_http(node.asgi(replay=replay)) as url:
            yield url, org
    finally:
        node.close()


def test_a_flood_of_self_registrations_never_crowds_out_registered_callers(
    tmp_path: Path,
) -> None:
    """Anyone can make keys: each fresh did could self-register with a signed request whose
    nonce filled the one global replay cache, until every signed request got 503. Their
    nonces are no longer cached; one registered did holds at most its share; a timestamp
    far ahead (which would keep its entry longer) is refused."""
    cache = ReplayCache(capacity=20, share=8)
    with served_embedded(tmp_path / "data", cache) as (url, org):
        status = httpx.get(url + "/status").json()
        here, chain_id = Audience(status["chain_id"], status["node_id"]), status["chain_id"]

        def signed(who: Identity, did: str, target: str, ts: int | None = None) -> int:
            header = authorization(who, did, here, "GET", target, b"", ts or now_ms())
            return httpx.get(url + target, headers={"authorization": header}).status_code

        for _ in range(3 * cache.capacity):  # each with a voucher no member signed
            flooder = Identity.generate()
            voucher = sign_voucher(
                Identity.generate(), chain_id, "register_patient", flooder.did, 9
            )
            payload = {"encryption_key": flooder.encryption_public.hex(), "voucher": voucher}
            raw = Tx(chain_id, "identity/register_patient", flooder.did, 1, payload).sign(flooder)
            with pytest.raises(NodeError) as refused:  # the chain refuses it, not the cache
                NodeClient(url, flooder).submit(raw)
            assert refused.value.status not in (401, 503), refused.value
        assert len(cache) == 0
        members = "/query/identity/members"
        assert signed(org.identity, org.did, members) == 200  # the registered caller

        patient = Identity.generate()
        NodeClient(url, patient).submit(register_patient_tx(chain_id, patient, org.identity))
        wait_for(lambda: signed(patient, patient.did, members) == 200)
        while cache.held_by(org.did) < cache.share:
            assert signed(org.identity, org.did, members) == 200
        over = authorization(org.identity, org.did, here, "GET", members, b"", now_ms())
        answer = httpx.get(url + members, headers={"authorization": over})
        assert error_of(answer) == (429, "rate_limited") and "retry-after" in answer.headers
        assert signed(patient, patient.did, members) == 200  # others keep their share

        ahead = authorization(
            patient, patient.did, here, "GET", members, b"", now_ms() + MAX_FUTURE_MS + 30_000
        )
        future = httpx.get(url + members, headers={"authorization": ahead})
        assert error_of(future) == (401, "unauthenticated")
        assert "ahead of the node's clock" in future.json()["error"]["message"]
        assert signed(patient, patient.did, members, now_ms() + 1_000) == 200  # a little is fine


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


# --- bodies ---------------------------------------------------------------------------------


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def stream_chunked(port: int, head: str, total: int) -> tuple[int, bytes]:
    """Send a request head, then up to `total` bytes of chunked body; stop as soon as the
    server answers or closes. (bytes sent, what the server answered)."""
    frame = b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024)
    sent, answer = 0, b""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head.encode())
        while sent < total:
            readable, writable, _ = select.select([sock], [sock], [], 60)
            if readable or not writable:
                break
            try:
                sock.sendall(frame)
            except OSError:  # reset: the server refused and closed
                break
            sent += 64 * 1024
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    return sent, answer


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:80]
    return int(answer.split(b" ", 2)[1])


def test_huge_chunked_bodies_are_refused_before_they_are_read(node: NodeProcess) -> None:
    org = node.organisation()
    client = node.client()
    client.query("identity/members")  # warm the routes the attack goes through
    before = vm_rss_kib(node.pid)
    host = f"Host: 127.0.0.1:{node.port}\r\n"
    chunked = "Transfer-Encoding: chunked\r\n"

    sent, answer = stream_chunked(
        node.port, f"GET /blobs/{'ab' * 32} HTTP/1.1\r\n{host}{chunked}\r\n", 400 * MiB
    )
    assert status_of(answer) in (401, 413) and b'"code"' in answer
    assert sent < 100 * MiB

    sent, answer = stream_chunked(node.port, f"POST /tx HTTP/1.1\r\n{host}{chunked}\r\n", 300 * MiB)
    assert status_of(answer) in (401, 413) and sent < 100 * MiB

    # Signed by a registered identity: read only up to the route's cap, then refused.
    header = authorization(
        org.identity, org.did, audience_of(node), "POST", "/tx", b"whatever", now_ms()
    )
    sent, answer = stream_chunked(
        node.port,
        f"POST /tx HTTP/1.1\r\n{host}{chunked}Authorization: {header}\r\n\r\n",
        300 * MiB,
    )
    assert status_of(answer) == 413 and b"oversized" in answer and sent < 100 * MiB

    grown_mib = (vm_rss_kib(node.pid) - before) / 1024
    assert grown_mib < 8, f"the server grew by {grown_mib:.1f} MiB"
    assert client.query("identity/members")  # still serving


def test_every_route_caps_its_body_and_a_get_takes_none(node: NodeProcess) -> None:
    org = node.organisation()
    http = httpx.Client(base_url=node.url, auth=RequestSigner(org.identity, org.did))
    with_body = http.request("GET", "/query/identity/members", content=b"{}")
    assert error_of(with_body) == (413, "oversized")
    assert "takes no body" in with_body.json()["error"]["message"]
    assert error_of(httpx.request("GET", node.url + "/status", content=b"x")) == (413, "oversized")

    for path, size in [("/txs", 17 * MiB), ("/blobs/fetch", 1 * MiB), ("/tx", 100_000)]:
        # a declared length over the cap: refused from the header, unsigned or signed
        for client in (http, httpx.Client(base_url=node.url)):
            response = client.post(path, content=b"{" + b" " * size + b"}")
            assert error_of(response) == (413, "oversized"), path
            assert "limit" in response.json()["error"]["message"]
    largest_fetch = {"hashes": ["ab" * 32] * MAX_FETCH}  # the most a fetch may ask fits
    fetched = http.post("/blobs/fetch", content=json.dumps(largest_fetch, indent=1).encode())
    assert fetched.status_code == 200 and len(unpack_results(fetched.content)) == MAX_FETCH
    assert http.get("/query/identity/members").status_code == 200


def test_a_websocket_is_refused_before_any_route(tmp_path: Path) -> None:
    """No route takes a websocket; one added later must not bypass authentication."""
    initialise(tmp_path / "data")
    node = build_node(tmp_path / "data", Solo())
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/status", "raw_path": b"/status", "headers": []}
    try:
        asyncio.run(node.asgi()(scope, receive, send))
    finally:
        node.close()
    assert sent == [{"type": "websocket.close", "code": 1008}]
