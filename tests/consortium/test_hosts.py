"""The test-host harness itself: hosts reach each other and only each other's addresses,
link_down and nftables drops cut what they say, and nothing is left behind."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hosts import Hosts

pytestmark = pytest.mark.hosts

# A one-shot TCP echo server and client, run in the hosts with this interpreter.
SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen()
print("listening", flush=True)
while True:
    c, _ = s.accept(); c.sendall(c.recv(100).upper()); c.close()
"""
CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
c.sendall(b"hello"); print(c.recv(100).decode())
"""


def namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.strip()}


# Reachability without ping (not installed here): a TCP connection to a closed port is
# refused when the address is reachable and times out when packets are lost.
PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], 9), timeout=1.5)
except ConnectionRefusedError:
    print("reached")
except OSError as exc:
    print("unreachable", exc)
"""


def pings(hosts: Hosts, source: int, address: str) -> bool:
    done = hosts[source].run([sys.executable, "-c", PROBE, address], timeout=15)
    return done.stdout.startswith("reached")


def tcp_echo(hosts: Hosts, client: int, server: int, port: int) -> str:
    done = hosts[client].run(
        [sys.executable, "-c", CLIENT, hosts[server].address, str(port)], timeout=15
    )
    return done.stdout.strip() if done.returncode == 0 else f"failed: {done.stderr[-200:]}"


def start_echo(hosts: Hosts, index: int, port: int, log: Path) -> None:
    hosts[index].popen([sys.executable, "-c", SERVER, hosts[index].address, str(port)], log)
    deadline = time.monotonic() + 20
    while "listening" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "echo server did not start"
        time.sleep(0.05)


def test_hosts_reach_each_other_over_the_bridge_and_share_no_loopback(tmp_path: Path) -> None:
    with Hosts(3) as hosts:
        assert len({h.address for h in hosts}) == 3
        assert pings(hosts, 0, hosts[1].address)
        assert pings(hosts, 2, hosts[0].address)
        assert pings(hosts, 0, hosts.observer_address)
        start_echo(hosts, 1, 7000, tmp_path / "echo.log")
        assert tcp_echo(hosts, 0, 1, 7000) == "HELLO"
        # The observer (this process, in the root namespace) reaches a host's server too.
        with socket.create_connection((hosts[1].address, 7000), timeout=5) as conn:
            conn.sendall(b"observer")
            assert conn.recv(100) == b"OBSERVER"
        # A host's loopback is its own: host 0 has nothing listening on 127.0.0.1:7000.
        local = hosts[0].run([sys.executable, "-c", CLIENT, "127.0.0.1", "7000"], timeout=15)
        assert local.returncode != 0 and "ConnectionRefused" in local.stderr


def test_link_down_cuts_the_host_and_link_up_restores_it(tmp_path: Path) -> None:
    with Hosts(2) as hosts:
        start_echo(hosts, 1, 7001, tmp_path / "echo.log")
        assert tcp_echo(hosts, 0, 1, 7001) == "HELLO"
        hosts[1].link_down()
        assert not pings(hosts, 0, hosts[1].address)
        assert tcp_echo(hosts, 0, 1, 7001).startswith("failed")
        hosts[1].link_up()
        assert pings(hosts, 0, hosts[1].address)
        assert tcp_echo(hosts, 0, 1, 7001) == "HELLO"


@pytest.mark.nft
def test_drop_from_cuts_that_pair_only_and_undrop_heals(tmp_path: Path) -> None:
    with Hosts(3) as hosts:
        start_echo(hosts, 0, 7002, tmp_path / "echo.log")
        hosts[0].drop_from(hosts[1])
        # Both directions of the pair are cut: 1 -> 0 is dropped, and 0 -> 1 gets no reply.
        assert tcp_echo(hosts, 1, 0, 7002).startswith("failed")
        assert not pings(hosts, 1, hosts[0].address)
        assert not pings(hosts, 0, hosts[1].address)
        # Everyone else still reaches host 0, and hosts 1 and 2 still reach each other.
        assert tcp_echo(hosts, 2, 0, 7002) == "HELLO"
        assert pings(hosts, 1, hosts[2].address)
        with socket.create_connection((hosts[0].address, 7002), timeout=5) as conn:
            conn.sendall(b"x")
            assert conn.recv(100) == b"X"
        hosts[0].undrop(hosts[1])
        assert tcp_echo(hosts, 1, 0, 7002) == "HELLO"


def test_close_stops_processes_and_leaves_no_namespace_even_after_a_failure(
    tmp_path: Path,
) -> None:
    with pytest.raises(RuntimeError, match="the test failed"), Hosts(2) as hosts:
        made = {h.name for h in hosts} | {hosts.switch}
        assert made <= namespaces()
        # A process that ignores SIGTERM and has a child in another process group.
        stubborn = hosts[0].popen(
            ["sh", "-c", "trap '' TERM; setsid sleep 6017 & sleep 6017"], tmp_path / "s.log"
        )
        raise RuntimeError("the test failed")
    assert stubborn.poll() is not None
    assert not (made & namespaces())
    observer = subprocess.run(["ip", "link", "show", hosts.observer_device], capture_output=True)
    assert observer.returncode != 0
    orphans = subprocess.run(["pgrep", "-f", "sleep 6017"], capture_output=True)
    assert orphans.returncode != 0, "a process started in a host outlived it"


@pytest.mark.toxiproxy
def test_toxiproxy_forwards_between_hosts_and_adds_latency(tmp_path: Path) -> None:
    """A proxy on host 0 forwards to host 1's server; with the latency toxic a round trip
    through it takes at least the added delay (a lower bound only: no upper timing bound)."""
    from toxiproxy import Toxiproxy

    with Hosts(2) as hosts:
        start_echo(hosts, 1, 7003, tmp_path / "echo.log")
        api = (hosts[0].address, 8474)
        with Toxiproxy(*api, tmp_path / "toxiproxy.log", host=hosts[0]) as toxiproxy:
            toxiproxy.proxy("to_h1", f"{hosts[0].address}:7103", f"{hosts[1].address}:7003")
            assert tcp_echo(hosts, 0, 0, 7103) == "HELLO"  # host 0 -> its proxy -> host 1
            toxiproxy.add_latency("to_h1", 300)
            started = time.monotonic()
            with socket.create_connection((hosts[0].address, 7103), timeout=10) as conn:
                conn.sendall(b"slow")
                assert conn.recv(100) == b"SLOW"
            assert time.monotonic() - started >= 0.6  # 300 ms each way, at least
            assert "to_h1" in toxiproxy.proxies()


def test_a_run_killed_before_its_clean_up_is_swept_by_the_next(tmp_path: Path) -> None:
    """A run that died without closing (SIGKILL) leaves namespaces; the next run deletes
    those of runs whose process is gone, and leaves live runs' alone."""
    from hosts import RUNS_DIR

    dead = subprocess.Popen(["true"])
    dead.wait()
    abandoned = Hosts(2).__enter__()  # never closed, as if its process had been killed
    left = {h.name for h in abandoned} | {abandoned.switch}
    (RUNS_DIR / abandoned.run_id).write_text(str(dead.pid))
    try:
        with Hosts(1) as live, Hosts(1) as another:
            assert not (left & namespaces())
            assert live[0].name in namespaces() and another[0].name in namespaces()
    finally:
        abandoned.close()
