"""Golden app hashes: the rules cannot change unnoticed.

`golden.py` runs a fixed block sequence (fixed test-vector keys, fixed times and expiries;
vouched registrations, a practitioner's consent, membership votes, signed scope keys, write
and read grants, anchors under write consent, a key rotation with certificate and proof, a
tombstone, a replay, a conflict, a revocation, an erasure; refused: a reused voucher, an
expired one, one by a non-member, a consent given to another organisation, an unknown sender,
a removed organisation and its practitioner, another member's tombstone on a record it did
not start, a rotation to a key already taken, a rotation without proof of possession, a scope
key signed by another key, a grant by a non-patient, an expired grant, an anchor without write
consent, a revocation twice, keys for a revoked grant, one member of two removing the other;
node identities: a founder's at genesis, one registered with its consent and one refused with
a practitioner's consent; audit batches recorded, and refused: from an organisation, naming
another node, replayed, skipped, from a removed organisation's node; batches of anchors: one
naming an erased record and one without write consent refused whole, then one committed) and
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
GOLDEN_RULES_VERSION = 5
GOLDEN = [
    ("de699b5399c73765d7a88d4d531bcd73f23ace3a53f87ee455d1a634c7c9f7ea", []),
    ("f469ef1f7af45d364c6bf4812b710446a29adee87229dbc600aa14e3273663e7", [0, 0, 0, 10, 13, 8]),
    (
        "7c1b0cc9b06552fc02ad67b35e95a08e9ce624d6a3d595c1a15a1968004461df",
        [0, 0, 8, 0, 8, 0, 8, 0, 0, 0, 8, 7, 0, 8, 0],
    ),
    (
        "041dbfbbc03119851ad6b0d0e9fe940e1b75a9f1cc56b54bc6b4e55b02f10110",
        [0, 0, 0, 14, 6, 0, 8, 8, 0, 0, 8, 8],
    ),
    (
        "1aaf5146ed7aca8de810444557d7719952e9b289c3dd0895d4b85e9d1f216e3a",
        [0, 8, 10, 0, 10, 0, 0, 10, 0, 0, 16, 17, 0],
    ),
    (
        "4d03c3ea928e18f9e45407b412a57f373776bfa1307bf65be6c8279830b54b44",
        [0, 12, 13, 0, 13, 8, 0, 10, 13, 12, 14, 0],
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
