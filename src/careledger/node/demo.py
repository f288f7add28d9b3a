"""Demo data for `careledger up --demo`: a practitioner and a few pseudonymous patients."""

from __future__ import annotations

import asyncio

from careledger.chain.tx import Tx
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.node.embedded import EmbeddedNode

DEMO_PATIENTS = 3


def seed_demo(node: EmbeddedNode, organisation: KeyFile) -> list[KeyFile]:
    """Register a demo practitioner and patients on a fresh chain; their key files go to keys/."""
    if node.app.info().last_height > 0:
        return []
    chain_id = node.app.chain_id
    doctor = Identity.generate()
    practitioner = KeyFile(doctor.did, "practitioner", doctor, "Dr. Demo")
    patients = [
        KeyFile(ident.did, "patient", ident, f"demo patient {i + 1}")
        for i, ident in enumerate(Identity.generate() for _ in range(DEMO_PATIENTS))
    ]
    txs = [
        Tx(
            chain_id,
            "identity/register_practitioner",
            organisation.did,
            1,
            {
                "did": practitioner.did,
                "encryption_key": practitioner.identity.encryption_public.hex(),
                "name": practitioner.name,
            },
        ).sign(organisation.identity)
    ]
    txs += [
        Tx(
            chain_id,
            "identity/register_patient",
            p.did,
            1,
            {"encryption_key": p.identity.encryption_public.hex()},
        ).sign(p.identity)
        for p in patients
    ]
    asyncio.run(_submit_all(node, txs))
    for keyfile in [practitioner, *patients]:
        keyfile.save(node.data.keys / f"{keyfile.kind}-{keyfile.did[-8:]}.json")
    return [practitioner, *patients]


async def _submit_all(node: EmbeddedNode, txs: list[bytes]) -> None:
    for raw in txs:
        await node.producer.submit(raw, wait=False)
    node.producer.produce_block()
