"""Record proofs against a real `careledger up` node: what verify-record accepts and refuses.

Each attack takes a real proof (or a real failed anchor) from the node and changes what a
forger would change; verify_record_proof must refuse it and say which check failed.
"""

from __future__ import annotations

import contextlib
import copy
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from careledger.chain.codes import Code
from careledger.chain.modules.identity import rotation_payload
from careledger.crypto.hashing import sha256
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.wallet.node_client import NodeClient, Signer
from careledger.wallet.proofs import (
    PROOF_FORMAT,
    ProofError,
    TrustedHeaders,
    check_record_proof_untrusted,
    verify_record_proof,
)
from careledger.wallet.proving import author_key_evidence, tx_evidence
from careledger.wallet.records import RecordsClient, RecordsError, Written, stamp
from nodeutil import NodeProcess, careledger_command, enrol, write_without_naming_key
from proofutil import failed_tx_of, forged_solo_proof, fresh, observations


@dataclass
class Setup:
    node: NodeProcess
    api: NodeClient
    org: KeyFile
    writer: RecordsClient
    patient: KeyFile
    written: list[Written]

    def trust(self, proof: dict[str, Any]) -> TrustedHeaders:
        """What a user brings: the hash of the proof's block, as this (honest) node has it."""
        height = proof["anchor"]["height"]
        return TrustedHeaders({height: self.api.block(height)["hash"]})


@pytest.fixture
def setup(node: NodeProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    org = KeyFile.load(node.data_dir / "keys" / "organisation.json")
    writer = RecordsClient(node.url, org, purpose="TREAT")  # it reads what it wrote, to treat
    patient = enrol(writer, "proof test")
    # One block of three records/anchor_batch transactions (2, 2, 1 anchors): proofs of a
    # transaction among several, and of an anchor among several in its batch.
    monkeypatch.setattr("careledger.wallet.writing.MAX_BATCH_ANCHORS", 2)
    written = writer.write_many(patient.did, observations(5))
    yield Setup(node, NodeClient(node.url, patient), org, writer, patient, written)
    writer.close()


def test_an_honest_proof_verifies_with_the_result_and_its_block(setup: Setup) -> None:
    target = setup.written[2]
    proof = fresh(setup.writer.proof(target.ref))
    assert proof["format"] == PROOF_FORMAT
    verified = verify_record_proof(proof, setup.trust(proof))
    assert verified.ref == target.ref and verified.author == setup.org.did
    assert verified.height == target.height and verified.rotations == 0
    assert verified.block.consensus == "solo"
    assert setup.api.block(target.height)["hash"] == verified.header_hash
    anchor = proof["anchor"]
    assert anchor["result"]["code"] == 0
    assert anchor["tx_proof"]["total"] == anchor["block"]["header"]["num_txs"] >= 3
    assert proof["anchor_index"] == 0  # the second batch's first anchor


def test_a_batch_proof_with_another_anchor_index_is_refused(setup: Setup) -> None:
    """A proof names its anchor in the batch; pointing it at a neighbour's anchor (or at
    none) fails: the resource and salt open only their own anchor's commitment."""
    proof = fresh(setup.writer.proof(setup.written[2].ref))
    for index, error in [(1, "commitment"), (2, "anchor_index"), ("0", "anchor_index")]:
        with pytest.raises(ProofError, match=error):
            verify_record_proof({**proof, "anchor_index": index}, setup.trust(proof))
    with pytest.raises(ProofError, match="anchor_index"):
        verify_record_proof(
            {k: v for k, v in proof.items() if k != "anchor_index"}, setup.trust(proof)
        )


def test_a_proof_of_an_anchor_the_chain_rejected_is_refused(setup: Setup) -> None:
    """A registered patient anchors a made-up record into another patient's record: the
    anchor reaches a block (the sender is registered, the payload well-formed) and fails
    there with UNAUTHORISED. Its proof is complete and honest, and must still be refused."""
    intruder = enrol(setup.writer, "intruder")
    made_up = {**observations(6)[5], "id": "made-up-condition"}
    intruder_client = RecordsClient(setup.node.url, intruder)
    with pytest.raises(RecordsError, match="may not write records"):
        write_without_naming_key(intruder_client, setup.patient.did, made_up)
    failed = failed_tx_of(setup.api, intruder.did)
    evidence = tx_evidence(setup.api, failed)
    assert evidence["result"]["code"] == Code.UNAUTHORISED
    proof = {
        "format": PROOF_FORMAT,
        "anchor": evidence,
        "author_key": author_key_evidence(setup.api, intruder.did, evidence),
        "resource": stamp(made_up, 1),
        "salt": "00" * 32,
    }
    with pytest.raises(ProofError, match=r"failed on chain: result code 8 \(UNAUTHORISED\)"):
        verify_record_proof(fresh(proof), setup.trust(proof))

    # The forger flips the result to success: the results root no longer matches.
    flipped = fresh(proof)
    flipped["anchor"]["result"]["code"] = 0
    flipped["anchor"]["result_proof"]["leaf"] = ""  # the encoding of a code-0 result
    with pytest.raises(ProofError, match=r"result proof does not lead to the results root"):
        verify_record_proof(flipped, setup.trust(flipped))
    # ... and keeping the old leaf with the new code is caught before that.
    mismatched = fresh(proof)
    mismatched["anchor"]["result"]["code"] = 0
    with pytest.raises(ProofError, match="result is not the result proof's leaf"):
        verify_record_proof(mismatched, setup.trust(mismatched))


def test_a_proof_whose_signature_is_replaced_by_random_bytes_is_refused(setup: Setup) -> None:
    proof = fresh(setup.writer.proof(setup.written[1].ref))
    forged = fresh(proof)
    raw = bytes.fromhex(forged["anchor"]["tx"])
    forged["anchor"]["tx"] = (raw[:-64] + os.urandom(64)).hex()
    with pytest.raises(ProofError, match="transaction is not the tx proof's leaf"):
        verify_record_proof(forged, setup.trust(forged))
    # With the leaf made to match, the leaf is in no block.
    forged["anchor"]["tx_proof"]["leaf"] = sha256(bytes.fromhex(forged["anchor"]["tx"])).hex()
    with pytest.raises(ProofError, match=r"tx proof does not lead to block .* data_hash"):
        verify_record_proof(forged, setup.trust(forged))


def test_a_proof_with_index_or_total_altered_is_refused(setup: Setup) -> None:
    proof = fresh(setup.writer.proof(setup.written[3].ref))
    total = proof["anchor"]["tx_proof"]["total"]
    index = proof["anchor"]["tx_proof"]["index"]

    more = fresh(proof)
    more["anchor"]["tx_proof"]["total"] = total + 1
    with pytest.raises(ProofError, match=f"not the header's transaction count num_txs={total}"):
        verify_record_proof(more, setup.trust(more))
    both = fresh(proof)  # both proofs' totals altered alike: still not the header's count
    for name in ("tx_proof", "result_proof"):
        both["anchor"][name]["total"] = total + 1
    with pytest.raises(ProofError, match="num_txs"):
        verify_record_proof(both, setup.trust(both))

    moved = fresh(proof)  # both indexes moved alike: the path leads elsewhere
    for name in ("tx_proof", "result_proof"):
        moved["anchor"][name]["index"] = (index + 1) % total
    with pytest.raises(ProofError, match="does not lead to"):
        verify_record_proof(moved, setup.trust(moved))

    paired = fresh(proof)  # the result of another position paired with this transaction
    paired["anchor"]["result_proof"]["index"] = (index + 1) % total
    with pytest.raises(ProofError, match="different positions"):
        verify_record_proof(paired, setup.trust(paired))
    header = fresh(proof)
    header["anchor"]["block"]["header"]["num_txs"] = total + 1  # the header is hashed too:
    verified = verify_record_proof(fresh(proof), setup.trust(proof))  # the hash one compares
    with pytest.raises(ProofError, match="num_txs"):
        verify_record_proof(header, setup.trust(header))
    assert verified.header_hash == setup.api.block(verified.height)["hash"]


def test_a_proof_of_altered_content_or_another_record_is_refused(setup: Setup) -> None:
    proof = fresh(setup.writer.proof(setup.written[0].ref))
    altered = fresh(proof)
    altered["resource"]["status"] = "entered-in-error"
    with pytest.raises(ProofError, match="commitment"):
        verify_record_proof(altered, setup.trust(altered))
    other = fresh(proof)
    other["resource"]["id"] = "another-id"  # the commitment binds the id (names are keyed)
    with pytest.raises(ProofError, match="anchored commitment"):
        verify_record_proof(other, setup.trust(other))
    other["resource"]["meta"]["versionId"] = "9"
    with pytest.raises(ProofError, match="not the anchored record"):
        verify_record_proof(other, setup.trust(other))
    with pytest.raises(ProofError, match="format"):
        verify_record_proof({**proof, "format": "careledger-record-proof-v1"}, setup.trust(proof))


def test_a_rotated_authors_proof_needs_the_rotation_that_registered_its_key(
    setup: Setup,
) -> None:
    """The organisation writes (own key), rotates its key, writes again (new key). The second
    anchor verifies only with the proven rotation; leaving it out or claiming the new key
    without it is refused, and a rotation after the anchor cannot vouch for it."""
    before = setup.written[0]
    new_identity = Identity.generate()
    payload = rotation_payload(setup.org.identity, new_identity, setup.api.status()["chain_id"])
    rotation = Signer(setup.api, setup.org.did, setup.org.identity).send(
        "identity/rotate_key", payload
    )
    rotated = setup.org.rotated(new_identity, 1)  # keeps the old key: grants were wrapped to it
    after = RecordsClient(setup.node.url, rotated).write(setup.patient.did, observations(7)[6])
    own = setup.org.identity.signing_public.hex()
    # The identity module's key history: each key since the height of the transaction that
    # registered it (genesis for the founding organisation), oldest first.
    history = setup.api.query("identity/identity", did=setup.org.did)["keys"]
    assert history == [
        {"since": 0, "signing_key": own},
        {"since": rotation["height"], **payload},  # the certificate and proof with it
    ]
    reader = RecordsClient(setup.node.url, setup.patient)  # the old org key signs no more
    proof = fresh(reader.proof(after.ref))  # the rotation gathered from the node's history
    gathered_rotations = proof["author_key"]["rotations"]
    assert [sha256(bytes.fromhex(r["tx"])).hex() for r in gathered_rotations] == [
        rotation["hash"].lower()
    ]
    verified = verify_record_proof(fresh(proof), setup.trust(proof))
    assert verified.rotations == 1 and verified.signing_key == new_identity.signing_public.hex()

    without = fresh(proof)
    without["author_key"] = {"signing_key": own, "rotations": []}
    with pytest.raises(ProofError, match=r"signature does not verify with .* key registered at"):
        verify_record_proof(without, setup.trust(without))
    unproven = fresh(proof)
    unproven["author_key"]["rotations"] = []
    with pytest.raises(ProofError, match="unknown origin"):
        verify_record_proof(unproven, setup.trust(unproven))

    earlier = fresh(reader.proof(before.ref))  # anchored before the rotation
    assert verify_record_proof(earlier, setup.trust(earlier)).rotations == 0
    earlier["author_key"] = copy.deepcopy(proof["author_key"])
    with pytest.raises(ProofError, match="not in order before the anchor"):
        verify_record_proof(earlier, setup.trust(earlier))
    # The gatherer itself leaves out a rotation that came after the anchor.
    gathered = author_key_evidence(setup.api, setup.org.did, earlier["anchor"])
    assert gathered == {"signing_key": own, "rotations": []}


def test_hostile_values_in_a_record_proof_give_a_proof_error_or_change_nothing(
    setup: Setup,
) -> None:
    """The anchor's evidence is fuzzed offline (test_tx_evidence.py); here the rest."""
    honest = fresh(setup.writer.proof(setup.written[4].ref))
    trust = setup.trust(honest)
    expected = verify_record_proof(honest, trust)
    hostile: tuple[Any, ...] = (None, "", "zz", -1, 0, 2**40, True, 1.5, [], {}, [1], {"a": 1})
    paths = [("format",), ("author_key",), ("author_key", "signing_key"), ("resource",)]
    paths += [
        ("author_key", "rotations"),
        ("salt",),
        *(("resource", k) for k in honest["resource"]),
    ]
    for path in paths:
        for new in hostile:
            forged = fresh(honest)
            target = forged
            for step in path[:-1]:
                target = target[step]
            target[path[-1]] = new
            with contextlib.suppress(ProofError):
                assert verify_record_proof(forged, trust) == expected, (path, new)


# --- the trust anchor: a consistent forgery -------------------------------------------------


def forged_proof(setup: Setup) -> dict[str, Any]:
    """The consistent forgery (tests/proofutil.py) of the first record's honest proof."""
    honest = fresh(setup.writer.proof(setup.written[0].ref))
    return forged_solo_proof(honest, setup.patient.did, setup.writer)


def test_a_consistent_forged_proof_is_refused_against_the_real_block_hash(setup: Setup) -> None:
    forged = forged_proof(setup)
    # Everything a proof can show by itself holds: that is why it proves nothing alone.
    alone = check_record_proof_untrusted(forged)
    assert alone.patient == setup.patient.did and str(alone.ref) == "Condition/made-up-condition"
    assert not alone.trusted and alone.block.trusted_by.startswith("nothing yet")
    with pytest.raises(TypeError):
        verify_record_proof(forged, None)  # type: ignore[arg-type]

    # Against the hash the honest node has at that height, it is refused.
    with pytest.raises(ProofError, match=r"not to the trusted .*not that chain's block"):
        verify_record_proof(forged, setup.trust(forged))
    # A hash for another height does not stand in for the proof's.
    height = forged["anchor"]["height"]
    elsewhere = TrustedHeaders({height + 1: setup.trust(forged).hashes[height]})
    with pytest.raises(ProofError, match=f"no trusted hash for block {height}"):
        verify_record_proof(forged, elsewhere)
    # The honest proof of the same block passes against the same hash.
    honest = fresh(setup.writer.proof(setup.written[0].ref))
    verified = verify_record_proof(honest, setup.trust(forged))
    assert verified.trusted and verified.block.trusted_by.startswith("the block hash trusted")


def test_verify_record_exits_2_without_a_trust_anchor_and_refuses_a_forgery_with_one(
    setup: Setup, tmp_path: Path
) -> None:
    forged_file, honest_file = tmp_path / "forged.json", tmp_path / "honest.json"
    forged = forged_proof(setup)
    forged_file.write_bytes(orjson.dumps(forged))
    honest_file.write_bytes(orjson.dumps(setup.writer.proof(setup.written[0].ref)))
    real_hash = setup.trust(forged).hashes[forged["anchor"]["height"]]
    key = tmp_path / "keys" / "patient.json"
    setup.patient.save(key)

    for proof in (forged_file, honest_file):
        unanchored = verify_record_cli(str(proof))
        assert unanchored.returncode == 2, unanchored.stdout + unanchored.stderr
        assert unanchored.stdout.startswith("UNVERIFIED: ") and "OK:" not in unanchored.stdout
        assert "--header-hash" in unanchored.stdout and "--node" in unanchored.stdout

    by_hash = verify_record_cli(str(forged_file), "--header-hash", real_hash)
    assert by_hash.returncode == 1 and "not that chain's block" in by_hash.stderr
    by_node = verify_record_cli(str(forged_file), "--node", setup.node.url, "--as", str(key))
    assert by_node.returncode == 1 and "not that chain's block" in by_node.stderr

    for anchor in (("--header-hash", real_hash), ("--node", setup.node.url, "--as", str(key))):
        checked = verify_record_cli(str(honest_file), *anchor)
        assert checked.returncode == 0, checked.stderr
        assert checked.stdout.startswith("OK: ") and "Trusted because: the block hash" in (
            checked.stdout
        )
    no_key = verify_record_cli(str(honest_file), "--node", setup.node.url)
    assert no_key.returncode == 1 and "--node needs --as" in no_key.stderr
    both = verify_record_cli(str(honest_file), "--header-hash", real_hash, "--node", "x")
    assert both.returncode == 1 and "give one trust anchor" in both.stderr


def verify_record_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*careledger_command(), "verify-record", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
