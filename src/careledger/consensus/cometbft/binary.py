"""Where the CometBFT binary is: the local network runs it, `careledger verify` reads with it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PINNED_VERSION = "0.38.25"


class CometBftNotFound(RuntimeError):
    """No runnable cometbft binary."""


def cometbft_binary() -> str:
    """COMETBFT_BIN, else the project's .bin/cometbft (what `make cometbft` builds), else PATH."""
    candidates = [os.environ.get("COMETBFT_BIN", "")]
    candidates.append(str(Path(__file__).resolve().parents[4] / ".bin" / "cometbft"))
    candidates.append(shutil.which("cometbft") or "")
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise CometBftNotFound(
        f"no cometbft binary: run `make cometbft` (needs Go; builds v{PINNED_VERSION})"
        " or set COMETBFT_BIN"
    )
