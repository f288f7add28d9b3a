"""Golden app hashes: the rules cannot change unnoticed.

`golden.py` runs a fixed block sequence (fixed test-vector keys, fixed times and expiries;
vouched registrations, a practitioner's consent, membership votes, anchors, a key rotation, a
tombstone, a replay, a conflict, an erasure; refused: a reused voucher, an expired one, one
by a non-member, a consent given to another organisation, an unknown sender, a removed
organisation and its practitioner, another member's tombstone on a record it did not start,
a rotation to a key already taken, one member of two removing the other) and
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
    ("a3d5781c94900c50b476a63776322f84d9a1af5b1738e50d23c2d9111d7c4347", []),
    ("d0b94fd53ca7259197e650abc7b7901f1030017a34d62bb27d25ce144564614a", [0, 0, 0, 10, 13, 8]),
    ("8b77cb82f42dd426ed6429df45a5895f45a78fa3825b02e8756c2146fd97ee24", [0, 0, 0, 8, 0, 8]),
    ("4c55bbd48777cee7c7a1a042de4dd5e2d6b87a12568c1fc0d522c0c52c8cb31d", [0, 0, 0, 6, 0]),
    ("4e25f3dcc995d422d9025ebbac3ce26698c9b0ab7aced81fc17b30125fa01c07", [0, 8, 10, 0, 10, 0, 0]),
    ("b583d8df35f86fcdc2a74405485fa2b73d3d23c3de70684bf43a449520b4f885", [0, 12, 13, 0, 13, 8, 0]),
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
