"""A data directory written under older rules is refused, by `careledger up` and `verify`.

The rules changed in issue 7 (nonce jumps, local faults, JSON depth), so STATE_MACHINE_VERSION
went from 1 to 2: replaying a version-1 chain under version-2 rules could compute other
results, so the node must refuse it with a clear message rather than diverge from its history.
"""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

from careledger.chain.app import STATE_MACHINE_VERSION
from careledger.node.builder import Solo, build_node
from careledger.node.datadir import DataDir, initialise
from nodeutil import careledger_command, free_port, run_verify


def test_a_data_directory_from_rules_version_1_is_refused_by_up_and_verify(
    tmp_path: Path,
) -> None:
    assert STATE_MACHINE_VERSION >= 2
    root = tmp_path / "data"
    initialise(root)
    build_node(root, Solo()).close()  # a real data directory, its store written by these rules
    assert run_verify(root).returncode == 0
    with sqlite3.connect(DataDir(root).state) as db:
        db.execute("UPDATE meta SET value = '1' WHERE key = 'state_machine_version'")

    up = subprocess.run(
        [*careledger_command(), "up", "--data-dir", str(root), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert up.returncode == 1, up.stdout + up.stderr
    said = " ".join(up.stderr.split())
    assert "was written under state machine version 1" in said
    assert f"this code runs version {STATE_MACHINE_VERSION}" in said
    assert "start a new chain" in said
    assert "Node API" not in up.stdout  # it never started serving

    verified = run_verify(root)
    assert verified.returncode == 1, verified.stdout + verified.stderr
    said = " ".join(verified.stderr.split())
    assert "verification failed: the state was written under state machine version 1" in said
    assert f"this code replays version {STATE_MACHINE_VERSION}" in said
