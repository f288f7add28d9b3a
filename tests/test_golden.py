"""Golden app hashes: the rules cannot change unnoticed.

`golden.py` runs a fixed block sequence (fixed test-vector keys, fixed times and expiries;
vouched registrations, a practitioner's consent, membership votes, signed scope keys, write
and read grants, anchors under write consent, a key rotation with certificate and proof, a
tombstone, a replay, a conflict, a revocation, an erasure; refused: a reused voucher, an
expired one, one by a non-member, a consent given to another organisation, an unknown sender,
a removed organisation and its practitioner, another member's tombstone on a record it did
not start, a rotation to a key already taken, a rotation without proof of possession, a scope
key signed by another key, a grant by a non-patient, an expired grant, an anchor without write
consent, a revocation twice, keys for a revoked grant, one member of two removing the other) and
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
GOLDEN_RULES_VERSION = 3
GOLDEN = [
    ("a3d5781c94900c50b476a63776322f84d9a1af5b1738e50d23c2d9111d7c4347", []),
    ("d0b94fd53ca7259197e650abc7b7901f1030017a34d62bb27d25ce144564614a", [0, 0, 0, 10, 13, 8]),
    (
        "b09fd5ffdbc27c0707f6b4069627da103e86f346c79fb02d66b177b910610836",
        [0, 0, 8, 0, 8, 0, 8, 0, 0, 0, 8, 7, 0],
    ),
    (
        "219bedf7a77c9f4bd36bb18f1791bc6bfdb0fcc8f55de427d08e2e2b13b7862c",
        [0, 0, 0, 14, 6, 0, 8, 8, 0],
    ),
    (
        "bffb512bd611dab84158eed131ac61fbfbc8fef2f7c441e2e8e90a3f36809f3a",
        [0, 8, 10, 0, 10, 0, 0, 10, 0, 0],
    ),
    (
        "76f055364baaa8ec680650d102222075a6843e837fe967d50ff79a6ee022c96d",
        [0, 12, 13, 0, 13, 8, 0, 10],
    ),
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
