"""`careledger clients add|list|remove` and `careledger token`, as separate processes against
a running `careledger up`; and smart-fetch, a real SMART Backend Services client, getting
its own token from the gateway with the key file `clients add --new-key` wrote."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.gateway.smart.backend_client import ClientKey, new_private_jwk, public_jwk
from gatewayutil import GatewayProcess
from nodeutil import careledger_command


def careledger(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*careledger_command(), *arguments], capture_output=True, text=True, timeout=120
    )


def add(gateway: GatewayProcess, *options: str) -> subprocess.CompletedProcess[str]:
    return careledger("clients", "add", "--data-dir", str(gateway.data_dir), *options)


def test_add_with_a_new_key_then_token_then_curl_like_use(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    key_file = tmp_path / "client.json"
    done = add(
        gateway,
        "--new-key", str(key_file), "--alg", "ES384", "--scope", "system/Patient.rs",
        "--name", "nightly export", "--token-url", gateway.token_url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    client_id = done.stdout.strip()
    assert len(client_id) == 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    saved = ClientKey.load(key_file)
    assert (saved.client_id, saved.token_url) == (client_id, gateway.token_url)
    assert saved.key["d"] not in done.stdout + done.stderr  # the private key is never shown
    assert saved.key["alg"] == "ES384"

    got = careledger("token", "--key", str(key_file))
    assert got.returncode == 0, got.stderr
    token = got.stdout.strip()
    assert got.stdout == token + "\n"  # the token alone: $(careledger token ...) works
    reply = httpx.get(gateway.fhir_url + "/Patient", headers={"authorization": f"Bearer {token}"})
    assert reply.status_code != 401

    narrower = careledger("token", "--key", str(key_file), "--scope", "system/Patient.r")
    assert narrower.returncode == 0, narrower.stderr
    via_discovery = careledger("token", "--key", str(key_file), "--url", gateway.fhir_url)
    assert via_discovery.returncode == 0, via_discovery.stderr
    too_wide = careledger("token", "--key", str(key_file), "--scope", "system/Observation.rs")
    assert too_wide.returncode == 1
    assert "invalid_scope" in too_wide.stderr


def test_list_and_remove(gateway: GatewayProcess, tmp_path: Path) -> None:
    key_file = tmp_path / "client.json"
    client_id = add(gateway, "--new-key", str(key_file), "--token-url", gateway.token_url)
    client_id_text = client_id.stdout.strip()
    listed = careledger("clients", "list", "--data-dir", str(gateway.data_dir))
    assert listed.returncode == 0, listed.stderr
    assert client_id_text in listed.stdout and "organisation" in listed.stdout
    assert gateway.client.client_id in listed.stdout
    token = careledger("token", "--key", str(key_file)).stdout.strip()

    removed = careledger("clients", "remove", client_id_text, "--data-dir", str(gateway.data_dir))
    assert removed.returncode == 0, removed.stderr
    reply = httpx.get(gateway.fhir_url + "/Patient", headers={"authorization": f"Bearer {token}"})
    assert reply.status_code == 401  # its tokens ended with it
    refused = careledger("token", "--key", str(key_file))
    assert refused.returncode == 1
    assert "invalid_client" in refused.stderr
    again = careledger("clients", "remove", client_id_text, "--data-dir", str(gateway.data_dir))
    assert again.returncode == 1 and "no client" in again.stderr
    assert (
        client_id_text
        not in careledger("clients", "list", "--data-dir", str(gateway.data_dir)).stdout
    )


def test_add_with_a_public_jwk_or_jwks_file(gateway: GatewayProcess, tmp_path: Path) -> None:
    private = new_private_jwk("RS384")
    (tmp_path / "public.jwk").write_text(json.dumps(public_jwk(private)))
    done = add(gateway, "--jwk", str(tmp_path / "public.jwk"), "--purpose", "HOPERAT")
    assert done.returncode == 0, done.stderr
    client = ClientKey(done.stdout.strip(), gateway.token_url, private)
    from careledger.gateway.smart.backend_client import request_token

    assert request_token(client)["scope"] == "system/*.cruds"
    (tmp_path / "public.jwks").write_text(json.dumps({"keys": [public_jwk(private)]}))
    assert add(gateway, "--jwks", str(tmp_path / "public.jwks")).returncode == 0


def test_add_refuses_what_it_should(gateway: GatewayProcess, tmp_path: Path) -> None:
    private = new_private_jwk("EdDSA")
    (tmp_path / "private.jwk").write_text(json.dumps(private))
    leaked = add(gateway, "--jwk", str(tmp_path / "private.jwk"))
    assert leaked.returncode == 1 and "private" in leaked.stderr
    assert private["d"] not in leaked.stdout + leaked.stderr
    cases = [
        (("--new-key", str(tmp_path / "k.json"), "--scope", "patient/*.read"), "scope"),
        (("--new-key", str(tmp_path / "k.json"), "--purpose", "MARKETING"), "purpose"),
        (("--new-key", str(tmp_path / "k.json"), "--alg", "HS256"), "alg"),
        (("--jwks-url", "http://example.org/jwks.json"), "https"),
        ((), "one of"),
        (("--new-key", str(tmp_path / "k.json"), "--practitioner", "did:careledger:x"), "key file"),
    ]
    for options, says in cases:
        done = add(gateway, *options)
        assert done.returncode == 1, options
        assert says in done.stderr, (options, done.stderr)
        assert not (tmp_path / "k.json").exists()  # nothing written on a refusal
    (tmp_path / "taken.json").write_text("{}")
    taken = add(gateway, "--new-key", str(tmp_path / "taken.json"))
    assert taken.returncode == 1 and "never overwritten" in taken.stderr
    assert (tmp_path / "taken.json").read_text() == "{}"
    missing = careledger("clients", "list", "--data-dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "not a data directory" in missing.stderr


def test_add_bound_to_a_practitioner_whose_key_the_gateway_holds(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    doctor = Identity.generate()
    KeyFile(doctor.did, "practitioner", doctor, "Dr. CLI").save(
        gateway.data_dir / "keys" / f"practitioner-{doctor.did[-8:]}.json"
    )
    client = gateway.add_client(did=doctor.did, scopes="system/*.rs", via_cli=True)
    assert client.token_response()["scope"] == "system/*.rs"
    listed = careledger("clients", "list", "--data-dir", str(gateway.data_dir)).stdout
    assert doctor.did in listed


def test_token_with_a_broken_key_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{}")
    done = careledger("token", "--key", str(tmp_path / "broken.json"))
    assert done.returncode == 1 and "not a client key file" in done.stderr


SMART_FETCH = Path(sys.executable).parent / "smart-fetch"  # a test dependency, in the venv


@pytest.mark.skipif(not SMART_FETCH.exists(), reason="smart-fetch (a dev dependency) missing")
def test_smart_fetch_gets_a_token_with_its_own_assertion(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    """smart-fetch reads .well-known/smart-configuration, signs its own assertion with the
    key `clients add --new-key` made (as a JWKS file) and asks for v1 scopes of the types it
    crawls; the gateway narrows them to the client's and answers. Its request for a
    resource then reaches the FHIR routes (404 here: no such patient), not a 401."""
    key_file = tmp_path / "client.json"
    done = add(gateway, "--new-key", str(key_file), "--alg", "RS384", "--scope", "system/*.rs")
    assert done.returncode == 0, done.stderr
    saved = ClientKey.load(key_file)
    jwks = tmp_path / "client.jwks"
    jwks.write_text(json.dumps({"keys": [saved.key]}))
    command = [
        str(SMART_FETCH), "single", "--fhir-url", gateway.fhir_url,
        "--smart-client-id", saved.client_id, "--smart-key", str(jwks), "--compact",
        "--verbose", "Patient/no-such-patient",
    ]  # fmt: skip
    ran = subprocess.run(command, capture_output=True, text=True, timeout=300)
    output = ran.stdout + ran.stderr
    assert "401" not in output and "Could not authenticate" not in output, output
    with gateway.registry().db.read() as connection:
        issued = connection.execute(
            "SELECT scopes FROM smart_tokens WHERE client_id = ?", (saved.client_id,)
        ).fetchall()
    assert issued, output  # the gateway issued smart-fetch a token
    assert "system/Patient.read" in issued[0][0].split()
    assert ran.returncode != 0 and '"code":"not-found"' in output, output  # past the token
