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
    ("c8ce0a1b10cf433f22d4474da76902536e6841eeffdc6b4bf66dc13c28c15474", [0, 0, 0, 10, 13, 8]),
    (
        "6661fcd1f4413a2bbb48a58fcf6bb054e373016aa24e5747f8d640578524c230",
        [0, 0, 8, 0, 8, 0, 8, 0, 0, 0, 8, 7],
    ),
    ("ea01e5fb7d9d74f778c7abe81db28010863fa10a72fb40ae0d5afeec8903a533", [0, 0, 0, 14, 6, 8, 0]),
    (
        "27870a2261d4c081b875711b5c75802f7b59ebab8433123c4f2446b7d735e6bb",
        [0, 8, 10, 0, 10, 0, 10, 0, 0],
    ),
    (
        "d7c50dc115211d5c0ae9faa046561703d90ceb21a7e2125c1cea4c5dd49377b8",
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
