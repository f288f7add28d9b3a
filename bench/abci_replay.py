"""The application's CPU per transaction in network mode, from node0's recorded ABCI frames.

A network node's application CPU is hard to measure under the network benchmark itself
(four nodes and their CometBFTs share two cores); replaying what CometBFT sent one node is
steady. `--record FILE` runs `bench.network_throughput`'s load on a fresh 4-validator network
(ours only) with node0 recording every ABCI frame it reads and writes (CARELEDGER_ABCI_RECORD),
and keeps node0's frames in FILE. Without it, FILE is replayed: the requests go into a fresh
Application and AbciHandler in this one process in the order node0 read them, grouped as
node0's server grouped them (a batch's CheckTx requests are recorded one after another before
their answers, so a run of requests between two answers is one batch), a run of CheckTx
through `check_tx_responses` as the server sends it. Each answer must be the recorded one,
byte for byte (checked outside the timing): the replay is the same work node0 did.

It prints CPU microseconds (time.process_time) per transaction committed in the replayed
blocks, per request kind (new CheckTx, recheck, FinalizeBlock, Commit, the rest), and per
request of each kind; `--repeat N` replays N times and keeps each kind's minimum; `--profile`
prints cProfile's top functions of one more replay; `--batch N` groups consecutive CheckTx of
one kind into runs of up to N instead of the recorded batches (then answers are not compared).

Run: .venv/bin/python -m bench.abci_replay [--record] FILE [--txs 12000] [--rate 2000]
     [--vouching enrolment|voucher] [--repeat 3] [--profile] [--batch N]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson

from bench.common import VOUCHINGS, machine, offered_registrations
from bench.network_throughput import free_base_port, run
from careledger.chain.app import Application
from careledger.chain.store import StateStore
from careledger.consensus.cometbft import messages as m
from careledger.consensus.cometbft.codec import decode_check_tx, decode_request
from careledger.consensus.cometbft.config import NetSettings
from careledger.consensus.cometbft.server import AbciHandler
from careledger.crypto.keyfile import KeyFile
from careledger.localnet.network import create_network
from careledger.node.builder import COLLECTOR_THRESHOLDS
from careledger.node.network import RECORD_ENV

FRAMES = "abci-frames.jsonl"  # relative: each node writes it in its own directory
KINDS = ("new CheckTx", "recheck", "FinalizeBlock", "Commit", "other")


@dataclass(frozen=True)
class Group:
    """Requests node0 answered together (a batch of CheckTx, or one other request) and the
    answers it recorded for them."""

    requests: list[bytes]
    answers: list[bytes]


@dataclass
class Tally:
    cpu: dict[str, float] = field(default_factory=lambda: dict.fromkeys(KINDS, 0.0))
    requests: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    committed: int = 0


def load(path: Path) -> list[Group]:
    groups: list[Group] = []
    for line in path.read_bytes().splitlines():
        record = orjson.loads(line)
        body = bytes.fromhex(record["hex"])
        if record["dir"] == "request":
            if not groups or groups[-1].answers:
                groups.append(Group([], []))
            groups[-1].requests.append(body)
        else:
            groups[-1].answers.append(body)
    return groups


def regrouped(groups: list[Group], size: int) -> list[Group]:
    """The same requests, consecutive CheckTx of one kind in runs of up to `size`."""
    out: list[Group] = []
    run_kind = None
    for body in (b for g in groups for b in g.requests):
        check = decode_check_tx(body)
        kind = None if check is None else check[1]
        if kind is not None and kind == run_kind and len(out[-1].requests) < size:
            out[-1].requests.append(body)
        else:
            out.append(Group([body], []))
        run_kind = kind
    return out


def replay(groups: list[Group], compare: bool) -> Tally:
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="abci-replay-") as scratch:
        handler = AbciHandler(Application(StateStore(Path(scratch) / "state.sqlite")))
        try:
            for group in groups:
                kind, answers, seconds, txs = _answer(handler, group.requests)
                tally.cpu[kind] += seconds
                tally.requests[kind] += len(group.requests)
                tally.committed += txs
                if compare and answers != group.answers:
                    raise SystemExit(f"the replay answered {kind} differently from node0")
        finally:
            handler.app.store.close()
    return tally


def _answer(handler: AbciHandler, requests: list[bytes]) -> tuple[str, list[bytes], float, int]:
    """(kind, answers, CPU seconds, transactions in a block) of one group, as the server
    answers it: a run of CheckTx decoded by decode_check_tx and checked as one batch."""
    cpu = time.process_time()
    checks = [decode_check_tx(body) for body in requests]
    if checks[0] is not None:
        kind = checks[0][1]
        answers = handler.check_tx_responses([c[0] for c in checks if c is not None], kind)
        seconds = time.process_time() - cpu
        return ("recheck" if kind == m.CHECK_TX_RECHECK else "new CheckTx"), answers, seconds, 0
    (body,) = requests
    request = decode_request(body)
    answer = handler.respond(request)
    seconds = time.process_time() - cpu
    if isinstance(request, m.RequestFinalizeBlock):
        return "FinalizeBlock", [answer], seconds, len(request.txs)
    return ("Commit" if isinstance(request, m.RequestCommit) else "other"), [answer], seconds, 0


def report(tallies: list[Tally]) -> None:
    first = tallies[0]
    total = min(sum(t.cpu.values()) for t in tallies)
    per_tx = 1e6 / max(1, first.committed)
    print(f"{first.committed:,} transactions committed in the replayed blocks")
    print(f"{'request kind':<14} {'requests':>9} {'us/committed tx':>16} {'us/request':>11}")
    for kind in KINDS:
        seconds = min(t.cpu[kind] for t in tallies)
        count = first.requests[kind]
        each = 1e6 * seconds / count if count else 0.0
        print(f"{kind:<14} {count:>9,} {seconds * per_tx:>16.1f} {each:>11.1f}")
    print(f"{'all':<14} {sum(first.requests.values()):>9,} {total * per_tx:>16.1f}")
    runs = ", ".join(f"{sum(t.cpu.values()) * per_tx:.1f}" for t in tallies)
    print(f"all, each replay: {runs} us/committed tx")


def record_frames(out: Path, txs: int, rate: float, vouching: str) -> None:
    """Run the network benchmark's load on our app (node0 recording) and keep node0's frames."""
    settings = replace(NetSettings(), log_level="*:error")
    os.environ[RECORD_ENV] = FRAMES
    with tempfile.TemporaryDirectory(prefix="abci-record-", dir="/tmp") as scratch:
        network = create_network(
            Path(scratch) / "net", 4, base_port=free_base_port(), settings=settings
        )
        org = KeyFile.load(network.app_data(0).organisation_key)
        setup, load_txs = offered_registrations(network.chain_id, txs, org, vouching)
        name = f"CareLedger app ({vouching}), node0 recording"
        result = run(name, network, load_txs, rate, setup=setup)
        print(result.figures.row())
        print(result.cpu_row())
        shutil.copyfile(network.node_dir(0) / FRAMES, out)
    print(f"node0's frames in {out}")


def profile(groups: list[Group]) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    replay(groups, compare=False)
    profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(40)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("frames", type=Path, help="node0's recorded frames (JSON lines)")
    parser.add_argument("--record", action="store_true", help="record FILE first, then replay")
    parser.add_argument("--txs", type=int, default=12_000, help="with --record: registrations")
    parser.add_argument("--rate", type=float, default=2_000, help="with --record: offered tx/s")
    parser.add_argument(
        "--vouching",
        choices=VOUCHINGS,
        default="enrolment",
        help="with --record: as network_throughput",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, help="regroup CheckTx runs into batches of N")
    parser.add_argument("--profile", action="store_true", help="cProfile one more replay")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if args.record:
        record_frames(args.frames, args.txs, args.rate, args.vouching)
    gc.set_threshold(*COLLECTOR_THRESHOLDS)  # as every node process does
    groups = load(args.frames)
    if args.batch:
        groups = regrouped(groups, args.batch)
    report([replay(groups, compare=not args.batch) for _ in range(args.repeat)])
    if args.profile:
        profile(groups)


if __name__ == "__main__":
    main()
