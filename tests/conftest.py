"""Fixtures shared by the tests: a real `careledger up` process on a fresh data directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeutil import NodeProcess, free_port


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    """A real `careledger up` process on a fresh data directory."""
    proc = NodeProcess(tmp_path / "data", free_port())
    proc.start("--block-interval", "0.05")
    try:
        yield proc
    finally:
        proc.stop()
