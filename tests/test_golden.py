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
naming an erased record and one without write consent refused whole, then one committed;
an upgrade plan proposed and scheduled, and refused: a removed member's vote, a vote naming
another height, a second plan while one is open) and
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
GOLDEN_RULES_VERSION = 6
GOLDEN = [
    ("a344ee148b84e3bf7559afb7d03535a1b7f77197cc9a6a4b9098f0af7e2d4435", []),
    ("acf20372f564928cd11dc5cb02357057ef69e2ac19a5871b719fbe8f2ee0e41e", [0, 0, 0, 10, 13, 8]),
    (
        "05d9d433800a983f4ec705ca8a33ad18da11073334579592fa7d25286c73a8d0",
        [0, 0, 8, 0, 8, 0, 8, 0, 0, 0, 8, 7, 0, 8, 0],
    ),
    (
        "0db519fefba8e391521151bc00ad89bca8d0e4bd9a565d0a559665a4a048855b",
        [0, 0, 0, 14, 6, 0, 8, 8, 0, 0, 8, 8],
    ),
    (
        "7648d19ad7d1514f8cd6f22c8954d5e4336285c271e424c2cd9b1f0354e03dfe",
        [0, 8, 10, 0, 10, 0, 0, 10, 0, 0, 16, 17, 0],
    ),
    (
        "853f129d995a513df93b0c4a83950ae2efee9dd00a8fba2c889ee3b0fd4659fe",
        [0, 12, 13, 0, 13, 8, 0, 10, 13, 12, 14, 0, 0, 13, 10, 0, 10],
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
