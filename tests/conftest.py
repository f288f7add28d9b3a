"""Fixtures shared by the tests: a real `careledger up` process on a fresh data directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from careledger.consensus.cometbft.server import abci_socket_path
from nodeutil import SHARED_DATA, NodeProcess, free_port

# The files that take minutes (a node image built, consortia of CometBFT nodes, browsers),
# longest first as far as it is known: under pytest-xdist (`make test`: `--dist loadfile`,
# one file to one worker) they are handed out first, so no worker starts one near the end
# while the others have run out of work. Any file not named here follows in the usual order.
SLOW_FIRST = (
    # Measured (--junitxml, 4 workers, load ~15): test_image 630 s (its build 433 s), then
    # 310 s down to 130 s for the others named; the directories' files take 20-130 s each.
    "tests/test_image.py",
    "tests/consortium/test_operations.py",
    "tests/consortium/test_fifth_joins.py",
    "tests/consortium/test_review12.py",
    "tests/portal/test_portal_demo.py",
    "tests/gateway/test_clients_cli.py",
    "tests/consortium/test_backup_archive.py",
    "tests/consortium/test_node_start.py",
    "tests/network/test_tls_replication.py",
    "tests/consortium/test_ceremony.py",
    "tests/network/test_verify_network.py",
    "tests/gateway/test_gateway_bundles.py",
    "tests/consortium/test_node_tls.py",
    "tests/portal/test_onboarding.py",
    "tests/consortium/test_four_hosts.py",
    "tests/network/",
    "tests/portal/",
    "tests/consortium/",
    "tests/gateway/",
)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Many tests read the shared FHIR data (Synthea bundles, the R4 examples): without it
    they would fail one by one for no visible reason, so the run stops here and says why."""
    if not (SHARED_DATA / "synthea-r4").is_dir():
        raise pytest.UsageError(
            "the shared FHIR test data (shared/data) was not found beside this checkout, nor"
            " beside the checkout it was cloned from: set CARELEDGER_SHARED_DATA to its path"
        )
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        # The private directory of the ABCI sockets whose paths are too long (every node
        # under a worker's longer temporary path): made once here, before the workers start,
        # rather than raced for by two of them (the loser's mkdir would fail).
        abci_socket_path(Path("/" + "x" * 120))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist, the slow files first (SLOW_FIRST); each file's tests keep their
    order. A run in one process keeps pytest's order."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    items.sort(key=lambda item: _slowness_rank(item.nodeid))


def _slowness_rank(nodeid: str) -> int:
    path = "tests/" + nodeid.split("::")[0].removeprefix("tests/")
    for rank, prefix in enumerate(SLOW_FIRST):
        if path.startswith(prefix):
            return rank
    return len(SLOW_FIRST)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    """A real `careledger up` process on a fresh data directory."""
    proc = NodeProcess(tmp_path / "data", free_port())
    proc.start("--block-interval", "0.05")
    try:
        yield proc
    finally:
        proc.stop()
