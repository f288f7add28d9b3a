"""Test helpers for the FHIR gateway: a real `careledger up` process with a registered SMART
backend client, tokens obtained the SMART way (a signed assertion posted to /auth/token).

    gateway = GatewayProcess(tmp_path / "data", free_port())
    gateway.start("--block-interval", "0.05")
    gateway.http.get("Patient")                      # /fhir/Patient with the bearer token
    gateway.token(scope="system/Observation.rs")     # another token, narrower
    doctor = gateway.add_client(did=practitioner.did, scopes="system/*.rs")
    doctor.http().get("Observation")

Clients are written into the running gateway's gateway.sqlite directly (ClientRegistry), or
through the real `careledger clients add` command (`via_cli=True`).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from careledger.gateway.context import SCHEMAS
from careledger.gateway.db import GatewayDb
from careledger.gateway.smart.backend_client import (
    ClientKey,
    new_private_jwk,
    public_jwk,
    request_token,
)
from careledger.gateway.smart.clients import ClientRegistry
from nodeutil import NodeProcess, careledger_command

ALL_SCOPES = "system/*.cruds"


@dataclass
class GatewayClient:
    """A registered backend client of a running gateway, with its private key."""

    client_id: str
    key: dict[str, Any] = field(repr=False)  # the private JWK
    token_url: str
    fhir_url: str

    @property
    def client_key(self) -> ClientKey:
        return ClientKey(self.client_id, self.token_url, self.key)

    def token_response(self, scope: str | None = None) -> dict[str, Any]:
        return request_token(self.client_key, scope)

    def token(self, scope: str | None = None) -> str:
        """A fresh access token (the client's registered scopes, or `scope` narrowed)."""
        return str(self.token_response(scope)["access_token"])

    def http(self, scope: str | None = None, **options: Any) -> httpx.Client:
        """An httpx client on the FHIR base URL, with a fresh bearer token (close it)."""
        headers = {"authorization": f"Bearer {self.token(scope)}"} | options.pop("headers", {})
        return httpx.Client(
            base_url=self.fhir_url + "/",
            headers=headers,
            timeout=options.pop("timeout", 60),
            **options,
        )


class GatewayProcess(NodeProcess):
    """A real `careledger up` process (node API + gateway on one port) and one registered
    backend client bound to the organisation, with every scope (`system/*.cruds`)."""

    _db: GatewayDb | None = None
    _http: httpx.Client | None = None
    _client: GatewayClient | None = None

    @property
    def fhir_url(self) -> str:
        return self.url + "/fhir"

    @property
    def token_url(self) -> str:
        return self.url + "/auth/token"

    @property
    def gateway_dir(self) -> Path:
        return self.data_dir / "gateway"

    def start(self, *extra: str) -> None:
        super().start(*extra)
        if self._client is None:
            self._client = self.add_client(name="gatewayutil")

    @property
    def client(self) -> GatewayClient:
        assert self._client is not None, "start the gateway first"
        return self._client

    @property
    def client_key(self) -> dict[str, Any]:
        """The default client's private JWK."""
        return self.client.key

    def token(self, scope: str | None = None) -> str:
        return self.client.token(scope)

    @property
    def http(self) -> httpx.Client:
        """An httpx client on /fhir/ (relative URLs: `.get("Patient")`) with the default
        client's bearer token (every scope); made once, closed by stop()."""
        if self._http is None:
            self._http = self.client.http()
        return self._http

    def registry(self) -> ClientRegistry:
        if self._db is None:
            self._db = GatewayDb.open(self.gateway_dir / "gateway.sqlite", SCHEMAS)
        return ClientRegistry(self._db)

    def add_client(
        self,
        *,
        alg: str = "EdDSA",
        did: str | None = None,
        scopes: str = ALL_SCOPES,
        purpose: str = "TREAT",
        name: str = "test client",
        via_cli: bool = False,
    ) -> GatewayClient:
        """Register another backend client (bound to practitioner `did`, or the
        organisation) with a fresh key pair; through `careledger clients add` if `via_cli`."""
        if via_cli:
            return self._add_client_via_cli(alg, did, scopes, purpose, name)
        key = new_private_jwk(alg)
        client_id = self.registry().register(
            jwk=public_jwk(key), did=did, scopes=scopes, purpose=purpose, name=name
        )
        return GatewayClient(client_id, key, self.token_url, self.fhir_url)

    def _add_client_via_cli(
        self, alg: str, did: str | None, scopes: str, purpose: str, name: str
    ) -> GatewayClient:
        key_file = self.data_dir.parent / f"client-{len(self.registry().list())}.json"
        command = [
            *careledger_command(), "clients", "add", "--data-dir", str(self.data_dir),
            "--new-key", str(key_file), "--alg", alg, "--scope", scopes,
            "--purpose", purpose, "--name", name, "--token-url", self.token_url,
        ]  # fmt: skip
        if did is not None:
            command += ["--practitioner", did]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        saved = ClientKey.load(key_file)
        assert done.stdout.strip() == saved.client_id
        return GatewayClient(saved.client_id, saved.key, saved.token_url, self.fhir_url)

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        super().stop()
        if self._db is not None:
            self._db.close()
            self._db = None
