"""Golden app hashes: the rules cannot change unnoticed.

`golden.py` runs a fixed block sequence (fixed test-vector keys, fixed times and expiries;
vouched registrations, a practitioner's consent, membership votes, anchors, a key rotation, a
tombstone, a replay, a conflict, an erasure; refused: a reused voucher, an expired one, one
by a non-member, a consent given to another organisation, an unknown sender, a removed
organisation and its practitioner) and
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
    ("3ebd70cdcb904dfcc76bb81368a39925db3de39d33be9fef343c1ed9f8713128", []),
    ("04acbc4924e3d830bb114753f66954f03a37635f4fafb3ecde468fe2df51bed3", [0, 0, 0, 10, 13, 8]),
    ("d7c65b389462c844a767b50b297bf84f7d78683b2679dfcba7ebd69d8ef9f029", [0, 0, 0, 8, 0, 8]),
    ("cc3d7e814b3d2211df1f815b6373d15b0948266f2f684b1e4d65ba9a4f1ff9a3", [0, 0, 0, 6, 0]),
    ("45076ba28fd55e08e769db036c8037f51352c0f5e22ced2139f4080bf7325278", [0, 0, 10, 0, 0]),
    ("72a26861c86104acdd87170743752e072ebbbc2aa662ef38aba283246891368f", [0, 12, 13, 13, 8, 0]),
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
