"""Fixtures of the gateway tests: a real `careledger up` process serving the FHIR API, with a
registered SMART backend client (tests/gatewayutil.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayutil import GatewayProcess
from nodeutil import free_port


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    """`careledger up` on a fresh data directory, its default client registered (every
    scope, bound to the organisation): `gateway.http.get("Patient")` sends its token."""
    process = GatewayProcess(tmp_path / "data", free_port())
    process.start("--block-interval", "0.05")
    try:
        yield process
    finally:
        process.stop()
