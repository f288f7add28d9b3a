"""`careledger up --demo` seeds a practitioner and patients that the chain really accepts."""

from __future__ import annotations

from pathlib import Path

import orjson

from careledger.demo import DEMO_PATIENTS, seed_demo
from careledger.node.builder import Solo, build_node
from careledger.node.datadir import initialise


def test_the_demo_seed_registers_a_consenting_practitioner_and_vouched_patients(
    tmp_path: Path,
) -> None:
    org = initialise(tmp_path / "data")
    node = build_node(tmp_path / "data", Solo())
    try:
        made = seed_demo(node, org)
        assert [k.kind for k in made] == ["practitioner"] + ["patient"] * DEMO_PATIENTS
        for keyfile in made:
            found = node.app.query("identity/identity", orjson.dumps({"did": keyfile.did}))
            assert found.code == 0, found.log
            ident = orjson.loads(found.value)
            assert (ident["kind"], ident["active"]) == (keyfile.kind, True)
        assert seed_demo(node, org) == []  # only on a fresh chain
    finally:
        node.close()
