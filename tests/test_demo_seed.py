"""`careledger up --demo` seeds a practitioner the chain really accepts, a second organisation
that applied (admitted later, once the first demo patient escrowed: demo.seed_demo), and no
patient keys."""

from __future__ import annotations

from pathlib import Path

import orjson

from careledger.crypto.keyfile import KeyFile
from careledger.demo import seed_demo
from careledger.node.builder import Solo, build_node
from careledger.node.datadir import initialise


def test_the_demo_seed_registers_a_consenting_practitioner_and_makes_no_patient_keys(
    tmp_path: Path,
) -> None:
    org = initialise(tmp_path / "data")
    node = build_node(tmp_path / "data", Solo())
    try:
        made = seed_demo(node, org)
        assert [k.kind for k in made] == ["practitioner", "organisation", "practitioner"]
        keys = [
            *(tmp_path / "data" / "keys").glob("*.json"),
            *(tmp_path / "data" / "demo").glob("*.json"),
        ]
        kinds = [KeyFile.load(path).kind for path in keys]
        assert "patient" not in kinds and kinds.count("practitioner") == 2
        doctor, northside, _ = made
        found = node.app.query("identity/identity", orjson.dumps({"did": doctor.did}))
        assert found.code == 0, found.log
        ident = orjson.loads(found.value)
        assert (ident["kind"], ident["active"]) == ("practitioner", True)
        members = orjson.loads(node.app.query("identity/members", b"{}").value)
        assert northside.did not in str(members)  # applied; admitted once patient 1 escrowed
        proposals = orjson.loads(node.app.query("identity/proposals", b"{}").value)
        assert northside.did in str(proposals)
        assert seed_demo(node, org) == []  # only on a fresh chain
    finally:
        node.close()
