"""Growing a node's state fast for bench/scale.py: synthetic patients and anchors, through the
state machine, in big blocks, in this process (the node's HTTP server stopped).

Every synthetic piece is a real signed transaction that the application checks and executes
as any other (signatures, nonces, the records rules, write consent) and the solo producer
stores in its block store, so the state, the block store and their sizes on disk are what the
same records written through the API would leave. What is skipped is what does not grow with
the state: the API, the pre-submit blob check (synthetic anchors have no blob: the measures
that read blobs use real records) and the mempool's check_tx (the block checks everything
again; the mempool would only double the build's cost).

Synthetic patients: each registers (the founder's voucher), publishes the one scope key its
records are wrapped to and grants the founder write consent: three transactions. Synthetic
records: `records/anchor_batch` transactions of 100 anchors by the founder, version 1, one
scope recipient and the founder, random record names, blob hashes and commitments;
`RECORDS_PER_PATIENT` records per synthetic patient, as a clinic's patients have.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from careledger.chain.modules.identity.vouchers import sign_voucher
from careledger.chain.modules.records import scope_key_payload
from careledger.chain.tx import Tx, tx_hash
from careledger.consensus.solo.producer import SoloProducer, _Pending
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.crypto.scopekeys import BROAD_SCOPES, wrap_naming_key
from careledger.node.builder import Node, Solo, build_node
from careledger.wallet.enrolment import write_consent

RECORDS_PER_PATIENT = 100
ANCHORS_PER_TX = 100  # records/anchor_batch's limit
TXS_PER_BLOCK = 50  # 5,000 anchors a block: big blocks, each under the producer's 5,000 txs
SCOPE = BROAD_SCOPES[0]
EPOCH = 1
VOUCHER_EXPIRY = 10**9


@dataclass
class Grown:
    """What the growing made so far (kept across sizes: the next growth continues it)."""

    patients: list[str]  # synthetic patients' dids, each with RECORDS_PER_PATIENT records
    anchors: int = 0
    seconds: float = 0.0


def grow(root: Path, founder: KeyFile, grown: Grown, anchors: int) -> None:
    """Add `anchors` synthetic records (and the patients they need) to the stopped node's
    data directory at `root`."""
    started = time.perf_counter()
    node = build_node(root, Solo(), audit_interval=0)
    try:
        asyncio.run(_grow(node, founder, grown, anchors))
    finally:
        node.close()
    grown.seconds += time.perf_counter() - started


async def _grow(node: Node[SoloProducer], founder: KeyFile, grown: Grown, anchors: int) -> None:
    producer = node.consensus
    chain_id = producer.chain_id
    nonce = _last_nonce(node, founder.did)
    pending: list[bytes] = []
    for patient, count in _plan(grown, anchors):
        if patient is None:
            patient_key = _new_patient()
            pending += _enrolment(chain_id, founder, patient_key, await producer.status())
            grown.patients.append(patient_key.did)
            continue
        for start in range(0, count, ANCHORS_PER_TX):
            nonce += 1
            size = min(ANCHORS_PER_TX, count - start)
            pending.append(_anchor_batch(chain_id, founder, nonce, patient, size))
            grown.anchors += size
        if len(pending) >= TXS_PER_BLOCK:
            _block(producer, pending)
            pending = []
    if pending:
        _block(producer, pending)


def _plan(grown: Grown, anchors: int) -> Iterator[tuple[str | None, int]]:
    """(None, 0) for "enrol a new patient", then (that patient, records to anchor)."""
    left = anchors
    while left > 0:
        yield None, 0
        count = min(RECORDS_PER_PATIENT, left)
        yield grown.patients[-1], count
        left -= count


def _last_nonce(node: Node[SoloProducer], did: str) -> int:
    found = node.app.query("auth/nonce", orjson.dumps({"did": did}))
    if found.code != 0:
        raise RuntimeError(f"auth/nonce of {did}: {found.log}")
    return int(orjson.loads(found.value)["last_nonce"])


def _new_patient() -> KeyFile:
    ident = Identity.generate()
    return KeyFile(ident.did, "patient", ident)


def _enrolment(
    chain_id: str, founder: KeyFile, patient: KeyFile, status: dict[str, Any]
) -> list[bytes]:
    """Registration, the one scope key the records use, write consent to the founder."""
    ident = patient.identity
    voucher = sign_voucher(
        founder.identity, chain_id, "register_patient", patient.did, VOUCHER_EXPIRY
    )
    register = {"encryption_key": ident.encryption_public.hex(), "voucher": voucher}
    public = patient.scope_key(SCOPE, EPOCH).public_bytes.hex()
    scope = scope_key_payload(ident, chain_id, SCOPE, EPOCH, public)
    naming = wrap_naming_key(
        patient.naming_key, patient.did, founder.did, founder.identity.encryption_public
    )
    consent = {**write_consent(patient.did, founder.did, status), "naming_key": naming.hex()}
    return [
        Tx(chain_id, type_, patient.did, nonce, payload).sign(ident)
        for nonce, (type_, payload) in enumerate(
            [
                ("identity/register_patient", register),
                ("records/publish_scope_key", scope),
                ("consent/grant", consent),
            ],
            start=1,
        )
    ]


def _anchor_batch(chain_id: str, founder: KeyFile, nonce: int, patient: str, size: int) -> bytes:
    payload = {"anchors": [_anchor(patient, founder.did) for _ in range(size)]}
    tx = Tx(chain_id, "records/anchor_batch", founder.did, nonce, payload)
    return tx.sign(founder.identity)


def _anchor(patient: str, writer: str) -> dict[str, Any]:
    return {
        "patient": patient,
        "resource_type": "Observation",
        "record": os.urandom(32).hex(),
        "version": 1,
        "blob_hash": os.urandom(32).hex(),
        "commitment": os.urandom(32).hex(),
        "recipients": [f"scope/{SCOPE}/{EPOCH}", writer],
    }


def _block(producer: SoloProducer, txs: list[bytes]) -> None:
    """One block of `txs`, every one of which must succeed. They go straight into the
    producer's queue: the mempool's check_tx would only check what the block checks again
    (a fifth of the build's time, profiled)."""
    for raw in txs:
        producer._mempool.append(_Pending(raw, tx_hash(raw), None))
    header = producer.produce_block()
    if header is None:
        raise RuntimeError("no block made")
    failed = [t for t in producer.blocks.block_txs(header.height) if t.code != 0]
    if failed:
        raise RuntimeError(f"synthetic transaction failed: {failed[0].code} {failed[0].log}")
