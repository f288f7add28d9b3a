"""Fixtures shared by the tests: a real `careledger up` process on a fresh data directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeutil import SHARED_DATA, NodeProcess, free_port


def pytest_sessionstart(session: pytest.Session) -> None:
    """Many tests read the shared FHIR data (Synthea bundles, the R4 examples): without it
    they would fail one by one for no visible reason, so the run stops here and says why."""
    if not (SHARED_DATA / "synthea-r4").is_dir():
        raise pytest.UsageError(
            "the shared FHIR test data (shared/data) was not found beside this checkout, nor"
            " beside the checkout it was cloned from: set CARELEDGER_SHARED_DATA to its path"
        )


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    """A real `careledger up` process on a fresh data directory."""
    proc = NodeProcess(tmp_path / "data", free_port())
    proc.start("--block-interval", "0.05")
    try:
        yield proc
    finally:
        proc.stop()
