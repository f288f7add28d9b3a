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
another height, a second plan while one is open; enrolments: two dids enrolled at once and
registered by enrolment, and refused: an enrolment by a practitioner, by a removed member, of
a registered did, a registration naming a member that did not enrol it, a second one) and
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
GOLDEN_RULES_VERSION = 7
GOLDEN = [
    ("2a941749f35282f85cdc8c4ad9402926a344e57cf9689e82e0377db836c68d29", []),
    ("5b7da73787a7c25a04a06bd85a3ec7cf5d6e295d04bfbe196af89f1419c8d2b8", [0, 0, 0, 10, 13, 8]),
    (
        "8e568b7770cb9d60d833c3a4df240dcd170768db160e4dc35607d40ba7511ddd",
        [0, 0, 8, 0, 8, 0, 8, 0, 0, 0, 8, 7, 0, 8, 0],
    ),
    (
        "9ae4b2a29f6006e096b31e9bb68c3f3598d88dfc711ac4c5ac3f52893d66e5f9",
        [0, 0, 0, 14, 6, 0, 8, 8, 0, 0, 8, 8],
    ),
    (
        "cc86d6b4a7b4029dd01e72656678ac1f2e128164cb2056727b7b6a0e7f88463c",
        [0, 8, 10, 0, 10, 0, 0, 10, 0, 0, 16, 17, 0],
    ),
    (
        "315b9409c234229cf3ad47602e08ca0064d9cb5fc9e4725c86cc923e6c961748",
        [0, 12, 13, 0, 13, 8, 0, 10, 13, 12, 14, 0, 0, 13, 10, 0, 10],
    ),
    (
        "cbf19cb62f494888fe206b73164ec300f5b7bdad199f80693e019a497638247c",
        [0, 8, 13, 10, 0, 8, 0, 10],
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
