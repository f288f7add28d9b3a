"""`careledger node tls ca|issue|bundle|show`: the certificates of TLS between nodes
(consortium/tls.py makes them; docs/operations.md, section 4)."""

from __future__ import annotations

from pathlib import Path

import typer

from careledger.cli_output import fail
from careledger.consortium.tls import (
    CA_CERT,
    CA_DAYS,
    CA_KEY,
    NODE_CERT,
    NODE_DAYS,
    NODE_KEY,
    TlsCertError,
    describe_file,
    issue_node_cert,
    make_bundle,
    make_ca,
)

tls_app = typer.Typer(
    help="TLS certificates for the node API port and blob replication.", no_args_is_help=True
)


@tls_app.command("ca")
def ca_command(
    out: Path = typer.Option(
        ..., help="Directory for ca.pem and ca-key.pem (keep it off the node)."
    ),
    name: str = typer.Option(..., help="The organisation's name."),
    permit: list[str] = typer.Option(
        ..., help="A host name, domain, address or network this CA may issue for (repeat)."
    ),
    days: int = typer.Option(CA_DAYS, help="Days the CA is valid."),
) -> None:
    """Make the organisation's TLS CA; send its ca.pem (public) to the other members."""
    try:
        info = make_ca(out, name, permit, days=days)
    except TlsCertError as exc:
        raise fail(str(exc)) from None
    typer.echo(info.describe())
    typer.echo(f"wrote {out / CA_CERT} (send to the other members) and {out / CA_KEY} (0600)")


@tls_app.command("issue")
def issue_command(
    ca: Path = typer.Option(..., help="The CA directory (ca.pem, ca-key.pem)."),
    host: list[str] = typer.Option(..., help="A host name or address of the node (repeat)."),
    out: Path = typer.Option(..., help="Directory for node.pem and node-key.pem."),
    days: int = typer.Option(NODE_DAYS, help="Days the certificate is valid."),
    replace: bool = typer.Option(False, help="Overwrite the current node.pem/node-key.pem."),
) -> None:
    """Issue the node's certificate (a new key each time); the node takes it on its next start."""
    try:
        info = issue_node_cert(ca, host, out, days=days, replace=replace)
    except TlsCertError as exc:
        raise fail(str(exc)) from None
    typer.echo(info.describe())
    typer.echo(f"wrote {out / NODE_CERT} and {out / NODE_KEY} (0600)")


@tls_app.command("bundle")
def bundle_command(
    ca_certs: list[Path] = typer.Argument(..., help="Every member's ca.pem."),
    out: Path = typer.Option(..., help="The bundle to write (for --tls-ca)."),
) -> None:
    """Write the trust bundle from the members' CA certificates."""
    try:
        infos = make_bundle(ca_certs, out)
    except TlsCertError as exc:
        raise fail(str(exc)) from None
    for info in infos:
        typer.echo(info.describe())
    typer.echo(f"wrote {out}: {len(infos)} CA certificates")


@tls_app.command("show")
def show_command(path: Path = typer.Argument(..., help="A PEM certificate or bundle.")) -> None:
    """Show the certificates of a PEM file: names, validity, SHA-256 fingerprints."""
    try:
        infos = describe_file(path)
    except TlsCertError as exc:
        raise fail(str(exc)) from None
    for info in infos:
        typer.echo(info.describe())
