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

and paste its output here (it prints the constants of every version this software runs). A
failure without a version bump means a rule changed by accident.
"""

from __future__ import annotations

from pathlib import Path

from careledger.chain.app import STATE_MACHINE_VERSION, SUPPORTED_RULES_VERSIONS
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
# Version 6 as this software runs it (a chain started under version 6): heights 0 to 5 are
# the constants version 6 pinned before version 7 existed, unchanged; at height 6 the
# enrolments are unknown types (UNKNOWN_TYPE, nothing written).
GOLDEN_V6 = [
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
    ("3e5ca582e09fd4dcd05d183ad0193a034c6564e954f5213b78401ae7d07ca4f5", [4, 4, 4, 4, 4, 4, 4, 4]),
]


def test_the_golden_constants_belong_to_these_rules() -> None:
    assert STATE_MACHINE_VERSION == GOLDEN_RULES_VERSION, (
        "STATE_MACHINE_VERSION changed: regenerate GOLDEN with tests/golden.py"
    )


def test_version_6_runs_as_it_did_before_version_7(tmp_path: Path) -> None:
    """A chain started under version 6 (an older consortium's, before its planned upgrade)
    computes what version 6 computed: the new messages are unknown types there."""
    assert {6, STATE_MACHINE_VERSION} == SUPPORTED_RULES_VERSIONS
    heights = run_golden(tmp_path / "golden-v6.sqlite", 6)
    for height, (found, expected) in enumerate(zip(heights, GOLDEN_V6, strict=True)):
        assert found == expected, f"height {height}: version 6's rules changed"


def test_the_golden_block_sequence_gives_the_golden_app_hash_at_every_height(
    tmp_path: Path,
) -> None:
    heights = run_golden(tmp_path / "golden.sqlite")
    for height, (found, expected) in enumerate(zip(heights, GOLDEN, strict=True)):
        assert found == expected, (
            f"height {height}: the rules changed (app hash or result codes). If on purpose, "
            "bump STATE_MACHINE_VERSION and regenerate GOLDEN with tests/golden.py"
        )
