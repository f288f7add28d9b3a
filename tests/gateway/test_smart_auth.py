"""SMART Backend Services against a real `careledger up` process over HTTP: the token
endpoint (each RFC 6749 error provoked by the attack it stops), the three signing algorithms,
a client whose keys are at a JWKS URL, and the bearer-token middleware in front of /fhir."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import JWKRegistry, OctKey

from careledger.gateway.smart.assertion import JWT_BEARER, jws_registry
from careledger.gateway.smart.backend_client import (
    new_private_jwk,
    public_jwk,
    sign_assertion,
    token_request,
)
from careledger.gateway.smart.tokens import TokenStore
from gatewayutil import GatewayClient, GatewayProcess
from nodeutil import free_port


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One gateway for the tests that only talk to the token endpoint."""
    process = GatewayProcess(tmp_path_factory.mktemp("auth") / "data", free_port())
    process.start("--block-interval", "0.05")
    try:
        yield process
    finally:
        process.stop()


def post_token(gateway: GatewayProcess, form: dict[str, str], **options: Any) -> httpx.Response:
    return httpx.post(gateway.token_url, data=form, timeout=30, **options)


def signed(
    key: dict[str, Any],
    claims: dict[str, Any],
    header: dict[str, Any] | None = None,
) -> str:
    """An assertion with exactly these claims (and header members), signed with `key`."""
    head = {"alg": key["alg"]} | ({"kid": key["kid"]} if "kid" in key else {}) | (header or {})
    private = JWKRegistry.import_key(key)
    return jwt.encode(head, claims, private, registry=jws_registry(head["alg"]))


def claims_for(client: GatewayClient, **changes: Any) -> dict[str, Any]:
    claims = {
        "iss": client.client_id,
        "sub": client.client_id,
        "aud": client.token_url,
        "exp": int(time.time()) + 120,
        "jti": str(uuid.uuid4()),
    }
    return {name: value for name, value in (claims | changes).items() if value is not None}


def refused(reply: httpx.Response, status: int, error: str, says: str = "") -> None:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["error"] == error, body
    assert says in body["error_description"], body
    assert reply.headers["cache-control"] == "no-store"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- tokens for every algorithm ------------------------------------------------------------


@pytest.mark.parametrize("alg", ["EdDSA", "ES384", "RS384"])
def test_each_algorithm_gets_a_token_that_opens_the_fhir_api(
    shared: GatewayProcess, alg: str
) -> None:
    client = shared.add_client(alg=alg, scopes="system/*.rs")
    reply = post_token(
        shared, token_request(sign_assertion(client.key, client.client_id, client.token_url))
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 300
    assert body["scope"] == "system/*.rs"
    assert reply.headers["cache-control"] == "no-store"
    fhir = httpx.get(
        shared.fhir_url + "/Patient", headers={"authorization": f"Bearer {body['access_token']}"}
    )
    assert fhir.status_code != 401


def test_a_requested_scope_narrows_the_registered_ones(shared: GatewayProcess) -> None:
    client = shared.add_client(scopes="system/Observation.rs system/Patient.r")
    asked = client.token_response("system/*.read")
    assert asked["scope"] == "system/Observation.rs system/Patient.r"
    exact = client.token_response("system/Observation.rs")
    assert exact["scope"] == "system/Observation.rs"
    principal = TokenStore(shared.registry().db, "did:org").principal(exact["access_token"])
    assert principal is not None and principal.client_id == client.client_id
    assert principal.scopes.allows("Observation", "s")
    assert not principal.scopes.allows("Patient", "r")
    with pytest.raises(Exception, match="do not allow read Patient") as refused_read:
        principal.require("Patient", "r")
    assert getattr(refused_read.value, "status", None) == 403
    default = client.token_response()
    assert default["scope"] == "system/Observation.rs system/Patient.r"


def test_a_client_bound_to_a_practitioner_acts_as_them(shared: GatewayProcess) -> None:
    from careledger.crypto.keyfile import KeyFile
    from careledger.crypto.keys import Identity

    doctor = Identity.generate()
    KeyFile(doctor.did, "practitioner", doctor, "Dr. Token").save(
        shared.data_dir / "keys" / f"practitioner-{doctor.did[-8:]}.json"
    )
    client = shared.add_client(did=doctor.did, purpose="HOPERAT")
    token = client.token()
    principal = TokenStore(shared.registry().db, "did:org").principal(token)
    assert principal is not None
    assert (principal.did, principal.purpose) == (doctor.did, "HOPERAT")
    organisation = shared.add_client()
    principal = TokenStore(shared.registry().db, "did:org").principal(organisation.token())
    assert principal is not None and principal.did == "did:org"


def test_the_token_names_who_it_acts_as(shared: GatewayProcess) -> None:
    """A page signing in with a client key shows the practitioner's name, not a client id:
    the token response names the practitioner and the organisation (extra RFC 6749 5.1
    parameters, from the key files the gateway acts with)."""
    from careledger.crypto.keyfile import KeyFile
    from careledger.crypto.keys import Identity

    doctor = Identity.generate()
    KeyFile(doctor.did, "practitioner", doctor, "Dr. Named").save(
        shared.data_dir / "keys" / f"practitioner-{doctor.did[-8:]}.json"
    )
    organisation = KeyFile.load(shared.data_dir / "keys" / "organisation.json")
    bound = shared.add_client(did=doctor.did).token_response()
    assert bound["practitioner"] == doctor.did
    assert bound["practitioner_name"] == "Dr. Named"
    assert bound["organization"] == organisation.did
    assert bound["organization_name"] == organisation.name
    own = shared.add_client().token_response()
    assert "practitioner" not in own and "practitioner_name" not in own
    assert own["organization"] == organisation.did


# --- every token-endpoint error, provoked ----------------------------------------------------


def test_wrong_audience_is_invalid_client(shared: GatewayProcess) -> None:
    client = shared.client
    other = "https://another-gateway.example/auth/token"
    reply = post_token(shared, token_request(signed(client.key, claims_for(client, aud=other))))
    refused(reply, 401, "invalid_client", "aud")


def test_expired_assertion_is_invalid_client(shared: GatewayProcess) -> None:
    client = shared.client
    old = claims_for(client, exp=int(time.time()) - 600)
    refused(
        post_token(shared, token_request(signed(client.key, old))), 401, "invalid_client", "expired"
    )


def test_exp_more_than_five_minutes_ahead_is_invalid_client(shared: GatewayProcess) -> None:
    client = shared.client
    far = claims_for(client, exp=int(time.time()) + 3600)
    reply = post_token(shared, token_request(signed(client.key, far)))
    refused(reply, 401, "invalid_client", "seconds ahead")


def test_missing_exp_or_jti_is_invalid_client(shared: GatewayProcess) -> None:
    client = shared.client
    no_exp = claims_for(client, exp=None)
    refused(
        post_token(shared, token_request(signed(client.key, no_exp))), 401, "invalid_client", "exp"
    )
    no_jti = claims_for(client, jti=None)
    refused(
        post_token(shared, token_request(signed(client.key, no_jti))), 401, "invalid_client", "jti"
    )


def test_a_reused_jti_is_invalid_client(shared: GatewayProcess) -> None:
    client = shared.client
    assertion = signed(client.key, claims_for(client))
    assert post_token(shared, token_request(assertion)).status_code == 200
    refused(post_token(shared, token_request(assertion)), 401, "invalid_client", "used before")
    # The same jti in a new assertion (new exp) is the same replay.
    again = signed(
        client.key,
        claims_for(
            client,
            jti=json.loads(base64.urlsafe_b64decode(assertion.split(".")[1] + "=="))["jti"],
            exp=int(time.time()) + 200,
        ),
    )
    refused(post_token(shared, token_request(again)), 401, "invalid_client", "used before")


def test_unknown_client_is_invalid_client(shared: GatewayProcess) -> None:
    stranger = GatewayClient("0" * 32, new_private_jwk(), shared.token_url, shared.fhir_url)
    reply = post_token(shared, token_request(signed(stranger.key, claims_for(stranger))))
    refused(reply, 401, "invalid_client", "no client")


def test_iss_other_than_sub_is_invalid_client(shared: GatewayProcess) -> None:
    client = shared.client
    other = shared.add_client()
    mixed = claims_for(client, sub=other.client_id)
    refused(
        post_token(shared, token_request(signed(client.key, mixed))), 401, "invalid_client", "iss"
    )


def test_a_signature_by_another_key_is_invalid_client(shared: GatewayProcess) -> None:
    client = shared.client
    impostor = new_private_jwk("EdDSA") | {"kid": client.key["kid"]}  # same kid, other key
    reply = post_token(shared, token_request(signed(impostor, claims_for(client))))
    refused(reply, 401, "invalid_client", "signature")


def test_a_tampered_assertion_is_invalid_client(shared: GatewayProcess) -> None:
    client = shared.client
    header, _, signature = signed(client.key, claims_for(client)).split(".")
    forged = b64(json.dumps(claims_for(client)).encode())  # other claims, old signature
    reply = post_token(shared, token_request(f"{header}.{forged}.{signature}"))
    refused(reply, 401, "invalid_client", "signature")


def test_hs256_with_the_public_key_as_secret_is_refused(shared: GatewayProcess) -> None:
    """The key-confusion attack: the public JWK (known to anyone) used as an HMAC secret."""
    client = shared.client
    secret = OctKey.import_key(json.dumps(public_jwk(client.key)).encode())
    claims = claims_for(client)
    forged = jwt.encode(
        {"alg": "HS256", "kid": client.key["kid"]}, claims, secret, algorithms=["HS256"]
    )
    refused(post_token(shared, token_request(forged)), 401, "invalid_client", "alg 'HS256'")


def test_alg_none_is_refused(shared: GatewayProcess) -> None:
    client = shared.client
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims_for(client)).encode())
    for unsigned in (f"{header}.{body}.", f"{header}.{body}.{b64(b'x' * 64)}"):
        refused(post_token(shared, token_request(unsigned)), 401, "invalid_client", "alg 'none'")


def test_an_algorithm_the_key_does_not_fit_is_refused(shared: GatewayProcess) -> None:
    """The client's key is Ed25519: an ES384 assertion (whatever key signed it) is refused,
    and an RS256 one is not an algorithm the gateway accepts at all."""
    client = shared.client
    p384 = new_private_jwk("ES384") | {"kid": client.key["kid"]}
    reply = post_token(shared, token_request(signed(p384, claims_for(client))))
    refused(reply, 401, "invalid_client", "no key for alg ES384")
    rsa = new_private_jwk("RS384")
    rs256 = signed(rsa | {"alg": "RS256"}, claims_for(client), {"alg": "RS256"})
    refused(post_token(shared, token_request(rs256)), 401, "invalid_client", "alg 'RS256'")


def test_garbage_assertion_is_invalid_client(shared: GatewayProcess) -> None:
    for garbage in ("not-a-jwt", "a.b.c", "x" * 10_000):
        refused(post_token(shared, token_request(garbage)), 401, "invalid_client")


def test_bad_scopes_are_invalid_scope(shared: GatewayProcess) -> None:
    client = shared.add_client(scopes="system/Observation.rs")
    for scope in (
        "patient/Observation.read",
        "system/Nothing.rs",
        "system/Observation.sr",
        "openid",
    ):
        form = token_request(sign_assertion(client.key, client.client_id, client.token_url), scope)
        refused(post_token(shared, form), 400, "invalid_scope")
    outside = token_request(
        sign_assertion(client.key, client.client_id, client.token_url), "system/Patient.rs"
    )
    refused(post_token(shared, outside), 400, "invalid_scope", "no more than system/Observation.rs")


def test_unknown_grant_type_is_unsupported_grant_type(shared: GatewayProcess) -> None:
    client = shared.client
    form = token_request(sign_assertion(client.key, client.client_id, client.token_url))
    for grant in ("password", "authorization_code", "urn:ietf:params:oauth:grant-type:jwt-bearer"):
        refused(post_token(shared, form | {"grant_type": grant}), 400, "unsupported_grant_type")
    del form["grant_type"]
    refused(post_token(shared, form), 400, "invalid_request", "grant_type")


def test_malformed_requests_are_invalid_request(shared: GatewayProcess) -> None:
    client = shared.client
    form = token_request(sign_assertion(client.key, client.client_id, client.token_url))
    without_type = {k: v for k, v in form.items() if k != "client_assertion_type"}
    refused(post_token(shared, without_type), 400, "invalid_request", "client_assertion_type")
    wrong_type = form | {
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"
    }
    refused(post_token(shared, wrong_type), 400, "invalid_request", "client_assertion_type")
    without = {k: v for k, v in form.items() if k != "client_assertion"}
    refused(post_token(shared, without), 400, "invalid_request", "client_assertion")
    as_json = httpx.post(shared.token_url, json=form, timeout=30)
    refused(as_json, 400, "invalid_request", "urlencoded")
    twice = httpx.post(
        shared.token_url,
        content="grant_type=client_credentials&grant_type=client_credentials",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    refused(twice, 400, "invalid_request", "twice")
    huge = form | {"padding": "x" * 20_000}
    refused(post_token(shared, huge), 400, "invalid_request", "bytes")


def test_a_client_whose_practitioner_key_is_gone_is_invalid_grant(shared: GatewayProcess) -> None:
    client = shared.add_client(did="did:careledger:no-such-practitioner")
    form = token_request(sign_assertion(client.key, client.client_id, client.token_url))
    refused(post_token(shared, form), 400, "invalid_grant", "no key")


# --- keys without kid, keys at a JWKS URL --------------------------------------------------


def test_a_key_registered_without_kid_or_alg(shared: GatewayProcess) -> None:
    key = new_private_jwk("ES384")
    bare = {k: v for k, v in public_jwk(key).items() if k not in ("kid", "alg", "use")}
    client_id = shared.registry().register(jwk=bare, scopes="system/*.rs")
    client = GatewayClient(client_id, key, shared.token_url, shared.fhir_url)
    without_kid = signed({k: v for k, v in key.items() if k != "kid"}, claims_for(client), {})
    assert "kid" not in json.loads(base64.urlsafe_b64decode(without_kid.split(".")[0] + "=="))
    assert post_token(shared, token_request(without_kid)).status_code == 200
    with_kid = signed(key, claims_for(client))  # a kid the gateway never heard of
    assert post_token(shared, token_request(with_kid)).status_code == 200
    stranger = new_private_jwk("ES384")  # same kind of key, not the client's
    reply = post_token(shared, token_request(signed(stranger, claims_for(client), {})))
    refused(reply, 401, "invalid_client", "signature")


class JwksServer:
    """A client's key server on loopback: serves whatever `document` is (bytes)."""

    def __init__(self, document: bytes) -> None:
        self.document = document
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(owner.document)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer(b"{}")
    try:
        yield server
    finally:
        server.close()


def test_a_client_with_a_jwks_url_gets_a_token(
    shared: GatewayProcess, jwks_server: JwksServer
) -> None:
    key = new_private_jwk("ES384")
    encryption_key = {"kty": "EC", "crv": "P-256", "x": "x", "y": "y", "use": "enc"}
    jwks_server.document = json.dumps({"keys": [encryption_key, public_jwk(key)]}).encode()
    client_id = shared.registry().register(jwks_url=jwks_server.url, scopes="system/*.rs")
    client = GatewayClient(client_id, key, shared.token_url, shared.fhir_url)
    assert client.token_response()["scope"] == "system/*.rs"
    assert client.token_response()["scope"] == "system/*.rs"
    assert jwks_server.hits == 1  # cached


def test_an_oversized_or_broken_jwks_is_invalid_client(
    shared: GatewayProcess, jwks_server: JwksServer
) -> None:
    key = new_private_jwk("EdDSA")
    jwks_server.document = json.dumps({"keys": [public_jwk(key)], "pad": "x" * 70_000}).encode()
    client_id = shared.registry().register(jwks_url=jwks_server.url)
    client = GatewayClient(client_id, key, shared.token_url, shared.fhir_url)
    form = token_request(sign_assertion(key, client_id, client.token_url))
    refused(post_token(shared, form), 401, "invalid_client", "over 64 KiB")
    jwks_server.document = b"<html>not json</html>"
    client_id = shared.registry().register(jwks_url=jwks_server.url + "?2")
    form = token_request(sign_assertion(key, client_id, client.token_url))
    refused(post_token(shared, form), 401, "invalid_client", "JSON")


# --- the bearer token in front of /fhir -----------------------------------------------------


def test_fhir_routes_need_a_bearer_token(shared: GatewayProcess) -> None:
    for method, path in [
        ("GET", "/fhir/Patient"),
        ("GET", "/fhir/Patient/123"),
        ("POST", "/fhir"),
        ("GET", "/fhir/NoSuchType/1"),
        ("GET", "/fhir/"),
        ("GET", "/auth/other"),
    ]:
        reply = httpx.request(method, shared.url + path)
        assert reply.status_code == 401, (path, reply.text)
        assert reply.headers["www-authenticate"].startswith("Bearer")
        outcome = reply.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "login"


def test_a_bad_token_is_401_invalid_token(shared: GatewayProcess) -> None:
    good = shared.token()
    for header in (
        "Bearer " + "A" * 43,  # well-formed, never issued
        "Bearer " + good[:-2],  # truncated
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer " + good + " extra",
    ):
        reply = httpx.get(shared.fhir_url + "/Patient", headers={"authorization": header})
        assert reply.status_code == 401, header
        assert 'error="invalid_token"' in reply.headers["www-authenticate"]
    ok = httpx.get(shared.fhir_url + "/Patient", headers={"authorization": f"bearer {good}"})
    assert ok.status_code != 401


def test_an_expired_token_is_401(shared: GatewayProcess) -> None:
    """A token issued six minutes ago (by the gateway's own TokenStore, on its database)."""
    registry = shared.registry()
    client = registry.get(shared.client.client_id)
    assert client is not None
    store = TokenStore(registry.db, "did:org")
    issued = store.issue(client, client.scopes, now=time.time() - 360)
    reply = httpx.get(
        shared.fhir_url + "/Patient", headers={"authorization": f"Bearer {issued.access_token}"}
    )
    assert reply.status_code == 401
    assert 'error="invalid_token"' in reply.headers["www-authenticate"]


def test_removing_a_client_ends_its_tokens_at_once(shared: GatewayProcess) -> None:
    client = shared.add_client()
    token = client.token()
    headers = {"authorization": f"Bearer {token}"}
    assert httpx.get(shared.fhir_url + "/Patient", headers=headers).status_code != 401
    assert shared.registry().remove(client.client_id)
    assert httpx.get(shared.fhir_url + "/Patient", headers=headers).status_code == 401
    form = token_request(sign_assertion(client.key, client.client_id, client.token_url))
    refused(post_token(shared, form), 401, "invalid_client", "no client")


def test_the_database_keeps_no_token(shared: GatewayProcess) -> None:
    token = shared.token()
    raw = (shared.gateway_dir / "gateway.sqlite").read_bytes()
    wal = shared.gateway_dir / "gateway.sqlite-wal"
    raw += wal.read_bytes() if wal.exists() else b""
    assert token.encode() not in raw


def test_a_used_jti_is_refused_after_a_restart(tmp_path: Path) -> None:
    process = GatewayProcess(tmp_path / "data", free_port())
    process.start("--block-interval", "0.05")
    try:
        client = process.client
        assertion = sign_assertion(client.key, client.client_id, client.token_url)
        assert post_token(process, token_request(assertion)).status_code == 200
        token = client.token()
        process.stop()
        process.start("--block-interval", "0.05")
        refused(post_token(process, token_request(assertion)), 401, "invalid_client", "used before")
        still = httpx.get(
            process.fhir_url + "/Patient", headers={"authorization": f"Bearer {token}"}
        )
        assert still.status_code != 401  # tokens outlive a restart (until they expire)
    finally:
        process.stop()


def test_the_assertion_type_constant_is_the_rfc_7523_one() -> None:
    assert JWT_BEARER == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
