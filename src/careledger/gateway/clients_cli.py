"""`careledger clients add|list|remove` and `careledger token`: the bodies of the commands
(cli.py only declares their options).

Clients are written straight into the gateway's gateway.sqlite (the running gateway sees them
at the next token request): `--data-dir` is the data directory of `careledger up` (the
database in its gateway/ folder, practitioners' key files in its keys/ folder) or a gateway's
own data directory (gateway.sqlite in it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from careledger.crypto.keyfile import KeyFile, KeyFileError
from careledger.gateway.context import SCHEMAS
from careledger.gateway.db import GatewayDb
from careledger.gateway.smart.backend_client import (
    ClientKey,
    TokenRequestError,
    discover_token_url,
    new_private_jwk,
    public_jwk,
    request_token,
)
from careledger.gateway.smart.clients import ClientError, ClientRegistry


class CommandError(Exception):
    """What the command says on stderr before it exits 1."""


@dataclass(frozen=True)
class KeySource:
    """Exactly one of: a JWKS file, a JWK file, a JWKS URL, a new key pair written to a file."""

    jwks: Path | None = None
    jwk: Path | None = None
    jwks_url: str | None = None
    new_key: Path | None = None
    alg: str = "EdDSA"


@dataclass(frozen=True)
class Binding:
    practitioner: str | None = None
    scope: str = "system/*.cruds"
    purpose: str = "TREAT"
    name: str = ""


def database_path(data_dir: Path) -> Path:
    if (data_dir / "gateway.sqlite").exists():
        return data_dir / "gateway.sqlite"
    if (data_dir / "gateway").is_dir() or (data_dir / "keys").is_dir():
        return data_dir / "gateway" / "gateway.sqlite"
    raise CommandError(f"{data_dir} is not a data directory of careledger up or a gateway")


@contextlib.contextmanager
def registry_of(data_dir: Path) -> Iterator[ClientRegistry]:
    db = GatewayDb.open(database_path(data_dir), SCHEMAS)
    try:
        yield ClientRegistry(db)
    finally:
        db.close()


def add_client(
    data_dir: Path, keys: KeySource, binding: Binding, keys_dir: Path | None, token_url: str
) -> str:
    """Register a client; its id. With `new_key`, the key file is written (owner-only) only
    once the registration succeeded."""
    given = [keys.jwks, keys.jwk, keys.jwks_url, keys.new_key]
    if sum(source is not None for source in given) != 1:
        raise CommandError("give one of --jwks, --jwk, --jwks-url, --new-key")
    if keys.new_key is not None and keys.new_key.exists():
        raise CommandError(f"{keys.new_key} exists: a key file is never overwritten")
    if binding.practitioner is not None:
        _check_practitioner_key(binding.practitioner, keys_dir or data_dir / "keys")
    private = _new_key(keys.alg) if keys.new_key is not None else None
    jwks = _json_file(keys.jwks) if keys.jwks is not None else None
    jwk = _json_file(keys.jwk) if keys.jwk is not None else None
    if private is not None:
        jwk = public_jwk(private)
    with registry_of(data_dir) as registry:
        try:
            client_id = registry.register(
                jwks=jwks,
                jwk=jwk,
                jwks_url=keys.jwks_url,
                did=binding.practitioner,
                scopes=binding.scope,
                purpose=binding.purpose,
                name=binding.name,
            )
        except ClientError as exc:
            raise CommandError(str(exc)) from None
    if private is not None and keys.new_key is not None:
        ClientKey(client_id, token_url, private).save(keys.new_key)
    return client_id


def _new_key(alg: str) -> dict[str, Any]:
    try:
        return new_private_jwk(alg)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _check_practitioner_key(did: str, keys_dir: Path) -> None:
    """The gateway acts with the practitioner's key: it must hold it."""
    for path in sorted(keys_dir.glob("practitioner-*.json")):
        with contextlib.suppress(KeyFileError):
            if KeyFile.load(path).did == did:
                return
    raise CommandError(
        f"no practitioner key file for {did} in {keys_dir}: the gateway acts with the "
        "practitioner's key, so put their practitioner-*.json there first"
    )


def _json_file(path: Path) -> dict[str, Any]:
    try:
        value = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise CommandError(f"{path}: {exc}") from None
    if not isinstance(value, dict):
        raise CommandError(f"{path} is not a JSON object")
    return value


def list_clients(data_dir: Path, console: Console) -> None:
    with registry_of(data_dir) as registry:
        clients = registry.list()
    if not clients:
        console.print("No clients registered.")
        return
    for client in clients:
        keys = f"{len(client.jwks.get('keys', []))} key(s)"
        if client.jwks_url:
            keys += f" and {client.jwks_url}"
        console.print(f"{client.client_id}  {client.name}")
        console.print(f"  acts as  {client.did or 'the organisation'}")
        console.print(f"  scopes   {client.scopes.text}")
        console.print(f"  purpose  {client.purpose}")
        console.print(f"  keys     {keys}")


def remove_client(data_dir: Path, client_id: str) -> None:
    with registry_of(data_dir) as registry:
        if not registry.remove(client_id):
            raise CommandError(f"no client {client_id!r}")


def get_token(key_file: Path, scope: str | None, url: str | None) -> str:
    """An access token for the client in `key_file`. `url`: the token endpoint (ends in
    /auth/token) or a FHIR base URL, whose smart-configuration names it; default: the one
    the key file names."""
    try:
        client = ClientKey.load(key_file)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    try:
        token_url = None
        if url is not None:
            token_url = url if url.rstrip("/").endswith("/auth/token") else discover_token_url(url)
        answer = request_token(client, scope, token_url)
    except TokenRequestError as exc:
        raise CommandError(str(exc)) from None
    return str(answer["access_token"])
