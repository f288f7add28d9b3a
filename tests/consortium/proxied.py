"""A four-host consortium whose P2P links all pass through Toxiproxy, and a steady load
that measures commit latency on it (bench/consortium_latency.py prints the figures,
tests/consortium/test_latency.py checks that commits continue).

Each host runs a toxiproxy-server with one proxy per other node, listening on a loopback
address of its own (127.0.0.<10+j>:26656: distinct addresses, so CometBFT's
one-connection-per-IP rule holds) and forwarding to node j's real P2P address; each node's
`--peers` name those listeners, so whichever side dials, the connection passes through the
dialer's proxy. `bypassing_links` checks, with CometBFT's `net_info`, that every outbound P2P
connection of every node goes to such a listener.

Latency is measured per transaction: a patient registration submitted with `wait` to one of
the four node APIs (from the observer), from the call to its answer, which comes when the
block holding it is committed: broadcast to commit.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
from hostnet import CHAIN_ID, P2P_PORT, HostConsortium, registration
from hosts import Hosts
from toxiproxy import Toxiproxy

TOXIPROXY_API_PORT = 8474
NODES = 4


def listener(peer_index: int) -> str:
    """Where a host's proxy to node `peer_index` listens: a loopback address of its own."""
    return f"127.0.0.{10 + peer_index}:{P2P_PORT}"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Phase:
    name: str
    latencies: list[float]
    failures: int
    heights: tuple[int, int]  # node 0's height at the phase's start and end
    seconds: float

    def row(self) -> str:
        p50, p99 = (percentile(self.latencies, q) * 1000 for q in (0.5, 0.99))
        blocks = self.heights[1] - self.heights[0]
        return (
            f"| {self.name} | {len(self.latencies)} | {self.failures} | {p50:,.0f} | "
            f"{p99:,.0f} | {max(self.latencies, default=0) * 1000:,.0f} | "
            f"{blocks} ({blocks / self.seconds:.2f}/s) |"
        )


HEADER = (
    "| phase | committed txs | failed | p50 commit ms | p99 commit ms | max ms | blocks |\n"
    "|---|---|---|---|---|---|---|"
)


class ProxiedConsortium:
    """The four-host consortium with a Toxiproxy on every host between it and its peers."""

    def __init__(self, hosts: Hosts, root: Path) -> None:
        self.hosts = hosts
        self.network = HostConsortium(hosts, root)
        self.proxies: list[Toxiproxy] = []
        self._stack = ExitStack()

    def start(self) -> None:
        self.network.ceremony()
        orgs = self.network.orgs
        for i, host in enumerate(self.hosts):
            proxy = Toxiproxy(host.address, TOXIPROXY_API_PORT, orgs[i].root / "toxi.log", host)
            self.proxies.append(self._stack.enter_context(proxy))
            for j, peer in enumerate(orgs):
                if j != i:
                    proxy.proxy(f"to_{j}", listener(j), peer.member.p2p_address)
        for i in range(NODES):
            peers = [f"{p.member.node_id}@{listener(j)}" for j, p in enumerate(orgs) if j != i]
            self.network.start(i, peers)
        self.network.wait_for_height(range(NODES), 2, timeout=180)

    def add_latency(self, milliseconds: int) -> None:
        for proxy in self.proxies:
            for name in proxy.proxies():
                proxy.add_latency(name, milliseconds)

    def bypassing_links(self) -> list[str]:
        """Outbound P2P connections that do not go to a proxy listener (should be none)."""
        found = []
        for i, host in enumerate(self.hosts):
            rpc = host.run(
                [
                    sys.executable,
                    "-c",
                    "import httpx;print(httpx.get('http://127.0.0.1:26657/net_info').text)",
                ],
                timeout=30,
            )
            peers = httpx.Response(200, content=rpc.stdout).json()["result"]["peers"]
            for peer in peers:
                if peer["is_outbound"] and not peer["remote_ip"].startswith("127."):
                    found.append(f"node {i} -> {peer['remote_ip']}")
        return found

    def close(self) -> None:
        self._stack.close()


def steady_load(network: HostConsortium, seconds: float, rate: float, name: str) -> Phase:
    """Registrations at `rate` per second for `seconds`, each waited for until committed."""
    keys = [org.key for org in network.orgs]
    txs = [registration(CHAIN_ID, keys[i % NODES]) for i in range(int(seconds * rate))]
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()

    def submit(index: int, raw: bytes) -> None:
        client = network.orgs[index].client()
        started = time.monotonic()
        try:
            answer = client.submit(raw, wait=True)
            ok = answer.get("code") == 0 and answer.get("height")
        except Exception:  # a failure is counted, not fatal: the figure says how many
            ok = False
        finally:
            client.close()
        with lock:
            if ok:
                latencies.append(time.monotonic() - started)
            else:
                failures[0] += 1

    start_height = network.height(0)
    began = time.monotonic()
    threads = []
    for n, raw in enumerate(txs):
        time.sleep(max(0.0, began + n / rate - time.monotonic()))
        thread = threading.Thread(target=submit, args=(n % NODES, raw), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(120)
    elapsed = time.monotonic() - began
    return Phase(name, latencies, failures[0], (start_height, network.height(0)), elapsed)


def measure(
    root: Path, seconds: float, rate: float, latency_ms: int, baseline: bool = True
) -> list[Phase]:
    """Both phases on one consortium (or only the latency phase); raises if a link bypasses
    the proxies."""
    phases = []
    with Hosts(NODES) as hosts:
        consortium = ProxiedConsortium(hosts, root)
        try:
            consortium.start()
            if baseline:
                phases.append(steady_load(consortium.network, seconds, rate, "no added latency"))
            consortium.add_latency(latency_ms)
            phases.append(
                steady_load(
                    consortium.network, seconds, rate, f"{latency_ms} ms each way on every link"
                )
            )
            bypassing = consortium.bypassing_links()
            if bypassing:
                raise RuntimeError(f"P2P links bypassing the proxies: {bypassing}")
            consortium.network.assert_no_fork(range(NODES))
        finally:
            consortium.close()
    return phases
