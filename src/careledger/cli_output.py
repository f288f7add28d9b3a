"""What every `careledger` command shares: the consoles, the defaults, how it fails."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from careledger.crypto.keyfile import KeyFile, KeyFileError

console = Console(emoji=False, highlight=False, soft_wrap=True)
err = Console(stderr=True, emoji=False, highlight=False, soft_wrap=True)

DEFAULT_DATA_DIR = Path("data")
DEFAULT_NODE = "http://127.0.0.1:8000"


def fail(message: str) -> typer.Exit:
    """Say what went wrong on standard error; the exit (code 1) for the caller to raise."""
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=1)


def load_key(path: Path) -> KeyFile:
    try:
        return KeyFile.load(path)
    except KeyFileError as exc:
        raise fail(str(exc)) from None
