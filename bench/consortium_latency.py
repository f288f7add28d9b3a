"""Commit latency of a four-host consortium with 100 ms added on every P2P link (Toxiproxy).

Four organisations on four hosts (network namespaces on a bridge, tests/consortium/hosts.py),
set up with the operator commands (`node init`, `consortium genesis`, `verify-genesis`,
`node start`). The kernel here has no `netem`, so the latency comes from a real proxy: each
host runs a toxiproxy-server with one proxy per other node, listening on a loopback address
of its own (127.0.0.<10+j>:26656, distinct so CometBFT's one-connection-per-IP rule holds)
and forwarding to node j's real P2P address; each node's `--peers` name those listeners, so
whichever side dials, the connection passes through the dialer's proxy, which delays each
direction by the latency. The run checks that every outbound P2P connection of every node
goes to such a listener (CometBFT's `net_info`): no link bypasses the proxies.

Load: patient registrations at a steady rate, spread over the four node APIs from the
observer, each submitted with `wait` (the API answers when its block is committed); latency
is that call's duration: broadcast to commit. First a phase without latency (the proxies in
place, no toxic), then the same with the latency toxics.

Run (root, `make toxiproxy cometbft`): .venv/bin/python -m bench.consortium_latency
     [--seconds 60] [--rate 2] [--latency-ms 100]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "consortium"))

from proxied import HEADER, measure

from bench.common import machine
from careledger.consensus.cometbft.config import NetSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=2.0, help="transactions per second")
    parser.add_argument("--latency-ms", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="consortium-latency-") as tmp:
        phases = measure(Path(tmp), args.seconds, args.rate, args.latency_ms)
    print(f"machine: {machine()}")
    print(f"date: {datetime.now(UTC).isoformat(timespec='seconds')}")
    print(f"settings: {NetSettings().as_dict()} (`careledger node start`'s defaults)")
    print(f"load: {args.rate} tx/s for {args.seconds:.0f} s per phase, over the four node APIs")
    print(HEADER)
    for phase in phases:
        print(phase.row())


if __name__ == "__main__":
    main()
