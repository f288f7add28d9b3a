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
        "2ece974bf48bb9b9b14ee551e79bf738a6de2ad6aa638f47d481b2e62b3024c8",
        [0, 0, 8, 0, 8, 0, 8, 0, 0, 0, 8, 7, 0],
    ),
    (
        "c392881f4f50610e73fc8bb053c0e573bcdfefd92ea91de04e9aff073b4dd721",
        [0, 0, 0, 14, 6, 0, 8, 8, 0],
    ),
    (
        "12311aab11e1667071ef0709d5ad3ab023a95acc1f8223755cb296fd96ea89b8",
        [0, 8, 10, 0, 10, 0, 0, 10, 0, 0],
    ),
    (
        "3a717d184b82d975e0ce184ef70b7f9a751a7d6b08494da168608e36e694ee4c",
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
