"""Helpers shared by the benchmarks: signed load, percentiles, the machine's description."""

from __future__ import annotations

import os
import platform
import statistics
from dataclasses import dataclass

from careledger.chain.modules.identity.enrolments import (
    ENROLLED_REGISTRATION_TYPE,
    ENROLMENT_TYPE,
    MAX_ENROLMENT_DIDS,
)
from careledger.chain.modules.identity.vouchers import sign_voucher
from careledger.chain.tx import Tx
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity

VOUCHER_EXPIRY = 10**9  # a height no benchmark reaches


def registrations(chain_id: str, count: int, org: KeyFile) -> list[bytes]:
    """`count` patient registrations, each signed by a different sender (many senders), each
    with member `org`'s enrolment voucher."""
    txs = []
    for _ in range(count):
        patient = Identity.generate()
        voucher = sign_voucher(
            org.identity, chain_id, "register_patient", patient.did, VOUCHER_EXPIRY, org.did
        )
        payload = {"encryption_key": patient.encryption_public.hex(), "voucher": voucher}
        txs.append(Tx(chain_id, "identity/register_patient", patient.did, 1, payload).sign(patient))
    return txs


def enrolled_registrations(
    chain_id: str, count: int, org: KeyFile, last_nonce: int = 0
) -> tuple[list[bytes], list[bytes]]:
    """(enrolments, registrations): member `org`'s enrolments of `count` new patients' dids,
    MAX_ENROLMENT_DIDS to a transaction (numbered from `last_nonce` + 1; they must commit
    first), and each patient's registration naming `org`, signed by its own sender."""
    patients = [Identity.generate() for _ in range(count)]
    enrolments = []
    for n, first in enumerate(range(0, count, MAX_ENROLMENT_DIDS)):
        dids = [p.did for p in patients[first : first + MAX_ENROLMENT_DIDS]]
        tx = Tx(chain_id, ENROLMENT_TYPE, org.did, last_nonce + 1 + n, {"dids": dids})
        enrolments.append(tx.sign(org.identity))
    txs = []
    for patient in patients:
        payload = {"encryption_key": patient.encryption_public.hex(), "enrolled_by": org.did}
        txs.append(Tx(chain_id, ENROLLED_REGISTRATION_TYPE, patient.did, 1, payload).sign(patient))
    return enrolments, txs


VOUCHINGS = ("enrolment", "voucher")


def offered_registrations(
    chain_id: str, total: int, org: KeyFile, vouching: str, last_nonce: int = 0
) -> tuple[list[bytes], list[bytes]]:
    """(what must commit first, the registrations to time) for `vouching` (VOUCHINGS)."""
    if vouching == "voucher":
        return [], registrations(chain_id, total, org)
    return enrolled_registrations(chain_id, total, org, last_nonce)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class Figures:
    name: str
    committed: int
    seconds: float
    latencies: list[float]

    @property
    def tps(self) -> float:
        return self.committed / self.seconds

    def row(self) -> str:
        p50 = percentile(self.latencies, 0.50) * 1000
        p99 = percentile(self.latencies, 0.99) * 1000
        mean = statistics.fmean(self.latencies) * 1000 if self.latencies else float("nan")
        return (
            f"| {self.name} | {self.committed} | {self.tps:,.0f} | {p50:,.0f} | {p99:,.0f} "
            f"| {mean:,.0f} |"
        )


HEADER = (
    "| run | committed txs | committed tx/s | p50 latency ms | p99 latency ms | mean ms |\n"
    "|---|---|---|---|---|---|"
)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {platform.system()}"
