"""The `careledger` commands of the FHIR gateway: `gateway` (the gateway alone, in front of a
remote node), `clients add|list|remove`, `token` and `import` (the work is in gateway/)."""

from __future__ import annotations

from pathlib import Path

import typer

from careledger.cli_output import DEFAULT_DATA_DIR, DEFAULT_NODE, console, err
from careledger.cli_output import fail as _fail
from careledger.cli_output import load_key as _load_key

clients_app = typer.Typer(
    help="SMART backend clients of the FHIR gateway: add, list, remove.", no_args_is_help=True
)


def register_fhir_commands(app: typer.Typer) -> None:
    app.command("gateway")(gateway_command)
    app.add_typer(clients_app, name="clients")
    app.command()(token)
    app.command("import")(import_)


def gateway_command(
    node: str = typer.Option(..., help="Node API URL of the node to talk to."),
    as_: Path = typer.Option(..., "--as", help="The organisation's key file."),
    data_dir: Path = typer.Option(..., help="The gateway's own files (index, directory)."),
    keys: Path | None = typer.Option(None, help="Where its practitioners' key files are."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, min=1, max=65535, help="Port of the FHIR API."),
    base_url: str | None = typer.Option(None, help="Public base URL of /fhir (for links)."),
) -> None:
    """Serve the FHIR R4 gateway alone, in front of a node that runs elsewhere."""
    from careledger.gateway.standalone import GatewayStartError, check_node, serve_gateway

    organisation = _load_key(as_)
    try:
        chain_id = check_node(node)
    except GatewayStartError as exc:
        raise _fail(str(exc)) from None
    url = f"http://{host}:{port}"
    console.print(f"FHIR R4 gateway of {organisation.did} for chain {chain_id} via {node}")
    console.print(f"FHIR R4 API: {url}/fhir  (SMART Backend Services tokens: {url}/auth/token)")
    serve_gateway(node, organisation, data_dir, keys, host, port, base_url)


@clients_app.command("add")
def clients_add(
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, help="Data directory of the gateway."),
    jwks: Path | None = typer.Option(None, help="The client's public JWKS file."),
    jwk: Path | None = typer.Option(None, help="The client's public JWK file."),
    jwks_url: str | None = typer.Option(None, help="Where the gateway fetches its JWKS."),
    new_key: Path | None = typer.Option(
        None, help="Make a key pair; write the private key, client id and token URL here."
    ),
    alg: str = typer.Option("EdDSA", help="With --new-key: EdDSA, ES384 or RS384."),
    practitioner: str | None = typer.Option(
        None, help="Act as this practitioner (did; default: the organisation)."
    ),
    scope: str = typer.Option("system/*.cruds", help="The most its tokens may carry."),
    purpose: str = typer.Option("TREAT", help="Purpose of use its reads state."),
    name: str = typer.Option("", help="A label."),
    keys: Path | None = typer.Option(None, help="Practitioners' key files (default DIR/keys)."),
    token_url: str = typer.Option(
        DEFAULT_NODE + "/auth/token", help="With --new-key: the token URL to write."
    ),
) -> None:
    """Register a SMART backend client; prints its client id."""
    from careledger.gateway import clients_cli as cc

    sources = cc.KeySource(jwks, jwk, jwks_url, new_key, alg)
    binding = cc.Binding(practitioner, scope, purpose, name)
    try:
        console.print(cc.add_client(data_dir, sources, binding, keys, token_url))
    except cc.CommandError as exc:
        raise _fail(str(exc)) from None


@clients_app.command("list")
def clients_list(
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, help="Data directory of the gateway."),
) -> None:
    """The registered clients: id, name, who they act as, scopes, purpose, keys."""
    from careledger.gateway import clients_cli as cc

    try:
        cc.list_clients(data_dir, console)
    except cc.CommandError as exc:
        raise _fail(str(exc)) from None


@clients_app.command("remove")
def clients_remove(
    client_id: str = typer.Argument(..., help="The client's id."),
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, help="Data directory of the gateway."),
) -> None:
    """Remove a client; its tokens stop working at once."""
    from careledger.gateway import clients_cli as cc

    try:
        cc.remove_client(data_dir, client_id)
    except cc.CommandError as exc:
        raise _fail(str(exc)) from None
    err.print(f"Removed client {client_id}.")


def token(
    key: Path = typer.Option(..., help="The client key file (clients add --new-key)."),
    scope: str | None = typer.Option(None, help="Scopes to ask for (default: all its own)."),
    url: str | None = typer.Option(None, help="Token URL, or the FHIR base URL to ask."),
) -> None:
    """Get a bearer token the SMART way (a signed assertion) and print it, alone."""
    from careledger.gateway import clients_cli as cc

    try:
        print(cc.get_token(key, scope, url))
    except cc.CommandError as exc:
        raise _fail(str(exc)) from None


def import_(
    paths: list[Path] = typer.Argument(..., help="FHIR Bundle files, or folders of them."),
    key: Path = typer.Option(..., help="The backend client's key file (clients add --new-key)."),
    url: str = typer.Option(DEFAULT_NODE + "/fhir", help="The gateway's FHIR base URL."),
    state: Path = typer.Option(
        Path(".careledger-import.json"), help="Which bundles are done (for resuming)."
    ),
) -> None:
    """Post FHIR bundles to a gateway, one transaction each (directory bundles first),
    resuming after an interruption without duplicating anything. Each enrolled patient's
    claim code is printed once, here: give it to the patient out of band."""
    from careledger.gateway import import_cli

    with import_cli.errors(_fail):
        import_cli.run(paths, key, url, state, console)
