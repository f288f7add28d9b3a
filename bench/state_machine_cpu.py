"""CPU per patient registration in the state machine alone: check_tx, finalize_block, commit.

No event loop, no block store, no HTTP: the application driven as the solo producer drives it
(intake batches of 256 through prepare_batch + check_batch, then one block of `--block` txs
finalized and committed), timed phase by phase with `time.process_time()`. What a validator
pays per transaction in the state machine, whichever driver.

The keys are fixed test vectors, so the run is reproducible: it prints the final app hash and
a digest of every result (code, log, events), which must not change when the code is made
faster (compare the two lines before and after).

Run: .venv/bin/python -m bench.state_machine_cpu [--txs 20000] [--block 2000] [--preverified]
  --preverified  verify the signatures ahead (PreparedBatch.verify, untimed), as a verifier
                 thread or process does: what remains is the Python of the state machine
                 (prepare_batch, which then lists the signatures, and check_batch).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import tempfile
import time
from pathlib import Path

from careledger.chain.app import Application, BlockContext
from careledger.chain.genesis import Genesis, founder
from careledger.chain.modules.identity.vouchers import sign_voucher
from careledger.chain.store import StateStore
from careledger.chain.tx import Tx
from careledger.consensus.solo.intake import INTAKE_BATCH
from careledger.crypto.hashing import sha256
from careledger.crypto.keys import Identity

CHAIN_ID = "bench-state-machine"
GENESIS_TIME = "2026-01-01T00:00:00Z"
GENESIS_NS = 1_767_225_600_000_000_000
ORG = Identity(sha256(b"careledger/test-vector/bench/org"))


def registrations(count: int) -> list[bytes]:
    """`count` signed patient registrations with ORG's voucher, cached on disk (signing them
    takes longer than checking them)."""
    cache = Path(tempfile.gettempdir()) / f"careledger-bench-sm-{count}.pickle"
    if cache.exists():
        txs: list[bytes] = pickle.loads(cache.read_bytes())
        return txs
    txs = []
    for i in range(count):
        patient = Identity(sha256(b"careledger/test-vector/bench/patient/" + str(i).encode()))
        voucher = sign_voucher(ORG, CHAIN_ID, "register_patient", patient.did, 10**9)
        payload = {"encryption_key": patient.encryption_public.hex(), "voucher": voucher}
        txs.append(Tx(CHAIN_ID, "identity/register_patient", patient.did, 1, payload).sign(patient))
    cache.write_bytes(pickle.dumps(txs))
    return txs


def run(
    txs: list[bytes], block: int, preverified: bool, unverified: bool = False
) -> dict[str, float | str]:
    with tempfile.TemporaryDirectory() as scratch:
        store = StateStore(Path(scratch) / "state.sqlite")
        app = Application(store)
        app.init_chain(Genesis(CHAIN_ID, GENESIS_TIME, (founder("Org", ORG),)))
        spent = {"check": 0.0, "finalize": 0.0, "commit": 0.0}
        results = hashlib.sha256()
        ok = 0
        for height, start in enumerate(range(0, len(txs), block), start=1):
            raws = txs[start : start + block]
            for i in range(0, len(raws), INTAKE_BATCH):
                chunk = raws[i : i + INTAKE_BATCH]
                cpu = time.process_time()
                prepared = app.prepare_batch(chunk, signatures=preverified)
                if preverified:  # as a verifier thread or process would, not counted here
                    spent["check"] += time.process_time() - cpu
                    if unverified:  # valid by construction: only the state machine counted
                        prepared.valid = [True] * len(prepared.checks)
                    else:
                        prepared.verify()
                    cpu = time.process_time()
                checked = app.check_batch(prepared)
                spent["check"] += time.process_time() - cpu
                assert all(r.ok for r in checked), [r.log for r in checked if not r.ok][:1]
            cpu = time.process_time()
            result = app.finalize_block(BlockContext(height, GENESIS_NS + height * 10**9), raws)
            spent["finalize"] += time.process_time() - cpu
            cpu = time.process_time()
            app.commit()
            spent["commit"] += time.process_time() - cpu
            for r in result.tx_results:
                ok += r.ok
                results.update(repr((int(r.code), r.log, r.data, r.events)).encode())
        assert ok == len(txs), f"{ok} of {len(txs)} committed"
        app_hash = store.last_commit().app_hash.hex()
        store.close()
    per_tx = {k: v * 1e6 / len(txs) for k, v in spent.items()}
    return {
        **per_tx,
        "total": sum(per_tx.values()),
        "app_hash": app_hash,
        "results": results.hexdigest(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=20000)
    parser.add_argument("--block", type=int, default=2000)
    parser.add_argument("--preverified", action="store_true")
    parser.add_argument(
        "--unverified",
        action="store_true",
        help="with --preverified: take the (valid) signatures as verified without libsodium,"
        " to count the state machine's own instructions (valgrind) without the verifier's",
    )
    parser.add_argument("--profile", type=str, default="", help="write a cProfile to this file")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs; each phase's least CPU is reported"
    )
    args = parser.parse_args()
    txs = registrations(args.txs)
    if args.profile:
        import cProfile

        with cProfile.Profile() as profiler:
            figures = run(txs, args.block, args.preverified, args.unverified)
        profiler.dump_stats(args.profile)
    else:
        runs = [run(txs, args.block, args.preverified, args.unverified) for _ in range(args.repeat)]
        figures = runs[0]
        for key in ("check", "finalize", "commit", "total"):
            figures[key] = min(float(r[key]) for r in runs)
        assert len({(r["app_hash"], r["results"]) for r in runs}) == 1, "runs disagree"
    load = os.getloadavg()[0]
    print(
        f"us/tx check {figures['check']:.1f} finalize {figures['finalize']:.1f} "
        f"commit {figures['commit']:.1f} total {figures['total']:.1f} "
        f"(load {load:.1f}{', preverified' if args.preverified else ''})"
    )
    print(f"app hash {figures['app_hash']} results {figures['results']}")


if __name__ == "__main__":
    main()
