"""The `careledger` commands of keys: `keys new|restore|show` (a patient's keys, made on
their own device) and `claim` (a patient takes over the identity a clinic enrolled)."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

import typer

from careledger.cli_output import DEFAULT_NODE, console
from careledger.cli_output import fail as _fail
from careledger.crypto.keyfile import KeyFile, KeyFileError
from careledger.crypto.keys import KeyError_

keys_app = typer.Typer(help="Make, recover and inspect key files.", no_args_is_help=True)


def register_key_commands(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
    app.command("claim")(claim_package)


@keys_app.command("new")
def keys_new(
    out: Path = typer.Option(..., help="Key file to write (mode 0600)."),
    kind: str = typer.Option("patient", help="patient, practitioner or organisation."),
    name: str = typer.Option("", help="A label kept in the file."),
) -> None:
    """Make new keys from a fresh 24-word recovery phrase, shown once."""
    from careledger.wallet.custody import new_patient_keys

    keyfile, phrase = new_patient_keys(name)
    if kind != "patient":
        keyfile = KeyFile(keyfile.did, kind, keyfile.identity, name)
    _save_keyfile(out, keyfile)
    console.print("Recovery phrase (write it down; it is shown only now):")
    console.print(f"[bold]{phrase}[/bold]")


@keys_app.command("restore")
def keys_restore(
    out: Path = typer.Option(..., help="Key file to write (mode 0600)."),
    kind: str = typer.Option("patient", help="patient, practitioner or organisation."),
) -> None:
    """Restore keys from a recovery phrase, read from standard input (or asked for, hidden)."""
    from careledger.wallet.custody import restore_patient_keys

    phrase = _read_secret("Recovery phrase")
    try:
        keyfile = restore_patient_keys(phrase)
    except KeyError_ as exc:
        raise _fail(str(exc)) from None
    if kind != "patient":
        keyfile = KeyFile(keyfile.did, kind, keyfile.identity)
    _save_keyfile(out, keyfile)
    if kind == "patient":
        console.print(
            "If this identity was claimed from a clinic's package, keep the key file the claim "
            "wrote: it, not the phrase, holds the keys of the records written before the claim."
        )


# The command's name before `restore`; kept so that scripts using it keep working.
keys_app.command("recover", hidden=True)(keys_restore)


def claim_package(
    package: Path = typer.Argument(..., help="The claim package the clinic gave you."),
    out: Path = typer.Option(..., help="Your new key file (mode 0600)."),
    node: str = typer.Option(DEFAULT_NODE, help="Node API URL."),
) -> None:
    """Claim your identity from a clinic's package: the claim code is read from standard
    input (or asked for, hidden); then your keys are replaced by new ones the clinic never
    saw, and your new recovery phrase is shown once."""
    import httpx

    from careledger.crypto.claim import ClaimError
    from careledger.wallet.custody import claim
    from careledger.wallet.node_client import NodeClient, NodeError

    if out.exists():
        raise _fail(f"{out} exists: refusing to overwrite a key file")
    code = _read_secret("Claim code (6 words)")
    try:
        claimed = claim(NodeClient(node), package, code, save_to=out)
    except ClaimError as exc:
        raise _fail(str(exc)) from None
    except (NodeError, httpx.HTTPError) as exc:
        hint = f" (your new keys are in {out}: keep it)" if out.exists() else ""
        raise _fail(f"the node at {node} did not complete the claim: {exc}{hint}") from None
    console.print(f"Claimed {claimed.keyfile.did}; new keys from epoch {claimed.epoch} on.")
    if claimed.revoked:
        console.print(
            f"Revoked {len(claimed.revoked)} grant(s) made before your claim with the clinic's "
            "copy of the keys (grant again what you want: careledger consent grant)."
        )
    console.print(f"Key file: {out} (it also holds the keys of your earlier records: keep it)")
    console.print("Recovery phrase (write it down; it is shown only now):")
    console.print(f"[bold]{claimed.phrase}[/bold]")


@keys_app.command("show")
def keys_show(path: Path) -> None:
    """Show a key file's did and public keys (never the secret)."""
    try:
        keyfile = KeyFile.load(path)
    except KeyFileError as exc:
        raise _fail(str(exc)) from None
    console.print(f"did: {keyfile.did}")
    console.print(f"kind: {keyfile.kind}")
    if keyfile.name:
        console.print(f"name: {keyfile.name}")
    console.print(f"signing key: {keyfile.identity.signing_public.hex()}")
    console.print(f"encryption key: {keyfile.identity.encryption_public.hex()}")


def _save_keyfile(out: Path, keyfile: KeyFile) -> None:
    try:
        keyfile.save(out)
        KeyFile.load(out)
    except KeyFileError as exc:
        raise _fail(str(exc)) from None
    console.print(f"did: {keyfile.did}")
    console.print(f"written to {out}")


def _read_secret(prompt: str) -> str:
    """A secret from the terminal (not echoed) or from standard input: never from an argument,
    which any user of the machine sees in `ps`."""
    if sys.stdin.isatty():
        return getpass.getpass(f"{prompt}: ")
    return sys.stdin.readline().strip()
