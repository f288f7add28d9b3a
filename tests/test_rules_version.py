"""A data directory written under older rules is refused, by `careledger up` and `verify`.

The rules changed in issue 7 (nonce jumps, local faults, JSON depth: version 2) and in issue 8
(consent, write consent, signed scope keys, one scope per anchor, proven key rotations:
version 3). Replaying a chain of an earlier version under these rules could compute other
results, so the node must refuse it with a clear message rather than diverge from its history.
"""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from careledger.chain.app import STATE_MACHINE_VERSION, SUPPORTED_RULES_VERSIONS
from careledger.node.builder import Solo, build_node
from careledger.node.datadir import DataDir, initialise
from nodeutil import careledger_command, free_port, run_verify

# The newest version this software no longer replays (it runs 6 and 7: the upgrade path).
PREVIOUS = min(SUPPORTED_RULES_VERSIONS) - 1


@pytest.mark.parametrize("older", [1, PREVIOUS])
def test_a_data_directory_from_earlier_rules_is_refused_by_up_and_verify(
    tmp_path: Path, older: int
) -> None:
    assert STATE_MACHINE_VERSION >= 3
    root = tmp_path / "data"
    initialise(root)
    build_node(root, Solo()).close()  # a real data directory, its store written by these rules
    assert run_verify(root).returncode == 0
    with sqlite3.connect(DataDir(root).state) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'state_machine_version'", (str(older),))

    up = subprocess.run(
        [*careledger_command(), "up", "--data-dir", str(root), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert up.returncode == 1, up.stdout + up.stderr
    said = " ".join(up.stderr.split())
    assert f"was written under state machine version {older}" in said
    assert f"this code runs version {STATE_MACHINE_VERSION}" in said
    assert "start a new chain" in said
    assert "Node API" not in up.stdout  # it never started serving

    verified = run_verify(root)
    assert verified.returncode == 1, verified.stdout + verified.stderr
    said = " ".join(verified.stderr.split())
    assert f"verification failed: the state was written under state machine version {older}" in said
    assert f"this code replays version {STATE_MACHINE_VERSION}" in said
