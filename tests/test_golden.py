"""Golden app hashes: the rules cannot change unnoticed.

`golden.py` runs a fixed block sequence (fixed test-vector keys, fixed times; registrations,
membership votes, anchors, a key rotation, a tombstone, a replay, a conflict, an erasure) and
this test compares the app hash and the result codes at every height with the constants
below. Update the constants only together with STATE_MACHINE_VERSION (chain/app.py): run

    PYTHONPATH=src .venv/bin/python tests/golden.py

and paste its output here. A failure without a version bump means a rule changed by accident.
"""

from __future__ import annotations

from pathlib import Path

from careledger.chain.app import STATE_MACHINE_VERSION
from golden import run_golden

# Computed once by tests/golden.py; update only together with STATE_MACHINE_VERSION.
GOLDEN_RULES_VERSION = 2
GOLDEN = [
    ("b71b05755db235e35a30e57a67741dc94c6c24f833ed5ee0063f704be5b4b230", []),
    ("d180fa52fa04a5dd089ee4685916f52f1f66903b5ff7076371f618f8e59983f9", [0, 0, 0]),
    ("28ed2bae54ebf3accc4681a554d97618bb77c64c7616ad66d0b6f04ead52c137", [0, 0, 0]),
    ("94c8b0c08eb4ebecf1433568f74f8019a6fd4643a6dd9f9dccc0c0b09d629e1b", [0, 0, 6, 0]),
    ("07993fd6e1544bb7e56a2ce388cc43ddfe516b514d5f0905435e3b3ea736c772", [0, 0, 10, 0, 0]),
    ("ce4b6533cf9eecd94991e26fa8c7a7aa2e67c8342b3cab3bdc177eea1f7ca138", [0, 12]),
]


def test_the_golden_constants_belong_to_these_rules() -> None:
    assert STATE_MACHINE_VERSION == GOLDEN_RULES_VERSION, (
        "STATE_MACHINE_VERSION changed: regenerate GOLDEN with tests/golden.py"
    )


def test_the_golden_block_sequence_gives_the_golden_app_hash_at_every_height(
    tmp_path: Path,
) -> None:
    heights = run_golden(tmp_path / "golden.sqlite")
    for height, (found, expected) in enumerate(zip(heights, GOLDEN, strict=True)):
        assert found == expected, (
            f"height {height}: the rules changed (app hash or result codes). If on purpose, "
            "bump STATE_MACHINE_VERSION and regenerate GOLDEN with tests/golden.py"
        )
