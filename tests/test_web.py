"""The portal's server side (web/): its files with the security headers, and open enrolment
(`POST /portal/voucher`) against a real `careledger up` process. The pages themselves are
tested in a real browser in tests/portal/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio.from_thread
import httpx
import pytest

from careledger.chain.tx import Tx
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.wallet.node_client import NodeClient, NodeError
from careledger.web.app import portal_app
from careledger.web.enrolment import PER_ADDRESS_PER_MINUTE, OpenEnrolment
from nodeutil import NodeProcess, free_port

BUILT = Path(__file__).parents[1] / "src" / "careledger" / "web" / "static" / "index.html"


@pytest.fixture(scope="module")
def open_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path_factory.mktemp("web") / "data", free_port())
    proc.start("--block-interval", "0.05", "--open-enrolment")
    try:
        yield proc
    finally:
        proc.stop()


def _register(node: NodeProcess, patient: Identity, voucher: dict[str, object]) -> int:
    chain_id = httpx.get(node.url + "/status").json()["chain_id"]
    payload = {"encryption_key": patient.encryption_public.hex(), "voucher": voucher}
    raw = Tx(chain_id, "identity/register_patient", patient.did, 1, payload).sign(patient)
    result = NodeClient(node.url, patient, did=patient.did).submit(raw)
    return int(result["code"])


def test_index_carries_a_strict_content_security_policy(open_node: NodeProcess) -> None:
    if not BUILT.exists():
        pytest.fail("the portal is not built: `make test` builds it (npm run build in portal/)")
    answer = httpx.get(open_node.url + "/")
    assert answer.status_code == 200
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self' 'wasm-unsafe-eval'" in policy
    assert "unsafe-inline" not in policy and "http" not in policy
    assert answer.headers["x-frame-options"] == "DENY"
    assert "<script>" not in answer.text  # no inline script: only `<script type=module src=`
    asset = answer.text.split('src="', 1)[1].split('"', 1)[0]
    bundle = httpx.get(open_node.url + asset)
    assert bundle.status_code == 200 and "immutable" in bundle.headers["cache-control"]


def test_portal_paths_do_not_escape_the_built_files(open_node: NodeProcess) -> None:
    for path in (
        "/assets/..%2f..%2fapp.py",
        "/assets/%2e%2e/%2e%2e/__init__.py",
        "/assets/nope.js",
    ):
        answer = httpx.get(open_node.url + path)
        assert answer.status_code == 404, path
    assert httpx.post(open_node.url + "/").status_code == 405


def test_open_enrolment_vouches_for_a_did_the_chain_then_registers(
    open_node: NodeProcess,
) -> None:
    patient = Identity.generate()
    answer = httpx.post(open_node.url + "/portal/voucher", json={"did": patient.did})
    assert answer.status_code == 200, answer.text
    assert _register(open_node, patient, answer.json()["voucher"]) == 0
    # The voucher names that did: another identity cannot use it.
    stranger = Identity.generate()
    with pytest.raises(NodeError, match="voucher"):
        _register(open_node, stranger, answer.json()["voucher"])


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"did": "did:web:example.org"}', 400),
        (b'{"did": "did:key:z6Mk", "extra": 1}', 400),
        (b"not json", 400),
        (b'{"did": "' + b"z" * 600 + b'"}', 413),
    ],
)
def test_open_enrolment_refuses_bad_requests(
    open_node: NodeProcess, body: bytes, status: int
) -> None:
    answer = httpx.post(
        open_node.url + "/portal/voucher",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == status, answer.text
    assert "error" in answer.json()


def test_open_enrolment_refuses_a_chunked_body(open_node: NodeProcess) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"did": "'
        yield b'x"}'

    answer = httpx.post(open_node.url + "/portal/voucher", content=chunks())
    assert answer.status_code == 411


def test_open_enrolment_is_rate_limited_per_address(open_node: NodeProcess) -> None:
    statuses = [
        httpx.post(
            open_node.url + "/portal/voucher", json={"did": Identity.generate().did}
        ).status_code
        for _ in range(8)
    ]
    assert 429 in statuses
    limited = httpx.post(open_node.url + "/portal/voucher", json={"did": Identity.generate().did})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


def test_one_address_flooding_enrolment_does_not_shut_it_for_others(
    open_node: NodeProcess,
) -> None:
    # 127.0.0.1 asks far more than the total allows a minute; its own bucket refuses it.
    flood = [
        httpx.post(
            open_node.url + "/portal/voucher", json={"did": Identity.generate().did}
        ).status_code
        for _ in range(40)
    ]
    assert flood.count(429) >= 35
    # Another address (127.0.0.2, still loopback) still gets its voucher: the refused requests
    # did not use up the shared total.
    other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with other:
        answer = other.post(
            open_node.url + "/portal/voucher", json={"did": Identity.generate().did}
        )
    assert answer.status_code == 200, answer.text


def test_one_ipv6_subscriber_counts_as_one_address(open_node: NodeProcess) -> None:
    # A subscriber holds a whole /64: a fresh address per request must not reset its bucket.
    organisation = KeyFile(Identity.generate().did, "organisation", Identity.generate())
    app = portal_app(OpenEnrolment(open_node.url, organisation, open=True))

    def ask(host: str) -> int:
        transport = httpx.ASGITransport(app=app, client=(host, 40000))
        with anyio.from_thread.start_blocking_portal() as portal:

            async def post() -> int:
                async with httpx.AsyncClient(transport=transport, base_url="http://node") as c:
                    did = Identity.generate().did
                    return (await c.post("/portal/voucher", json={"did": did})).status_code

            return portal.call(post)

    flood = [ask(f"2001:db8:1:2::{n:x}") for n in range(1, 9)]
    assert flood.count(200) == PER_ADDRESS_PER_MINUTE and flood.count(429) == 3
    assert ask("2001:db8:1:3::1") == 200  # the next /64 is another subscriber


def test_closed_enrolment_vouches_for_nobody(node: NodeProcess) -> None:
    answer = httpx.post(node.url + "/portal/voucher", json={"did": Identity.generate().did})
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "enrolment_closed"
