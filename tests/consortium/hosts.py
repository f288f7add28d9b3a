"""Separate test hosts on one machine: Linux network namespaces joined by a bridge.

`Hosts(n)` makes n namespaces `cl<run>-h<i>`, each with its own loopback and one veth
(`eth0`, address 10.<a>.<b>.<i+1>/24) into a bridge that lives in a "switch" namespace
`cl<run>-sw`, plus a veth from the root namespace into the same bridge (address .254), so
the test process is an observer host on the subnet and can call the hosts' HTTP APIs. The
hosts share no loopback: a process in one cannot reach another's 127.0.0.1.

Faults: `link_down()` takes a host's veth down (it is cut from everyone, observer included);
`drop_from(other)` makes the host's nftables drop every packet from `other` (that pair is
cut both ways, since no reply gets through; the observer still reaches the host).

Everything is undone on exit, also when the test failed: the processes started in the
namespaces are stopped (SIGTERM, then SIGKILL for what is left, children included), then the
namespaces are deleted, which deletes their veths and the bridge. Namespace setup needs root.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import random
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

OBSERVER_OCTET = 254
HOST_DEVICE = "eth0"  # the host's end of its veth, inside its own namespace
BRIDGE = "br0"
NFT_TABLE = "careledger_fault"
STOP_GRACE_SECONDS = 10.0
# Creating namespaces and picking a subnet is serialised across parallel test runs.
SETUP_LOCK = Path("/tmp/careledger-hosts.lock")
# One file per live run, holding its pid: a run killed before its clean-up (SIGKILL, a lost
# CI runner) leaves namespaces behind, which the next run deletes.
RUNS_DIR = Path("/tmp/careledger-hosts")


class HostsUnavailable(RuntimeError):
    """This machine cannot make test hosts (not root, or no `ip netns`)."""


def hosts_unavailable() -> str | None:
    """Why namespaces cannot be made here, or None when they can (probed for real)."""
    if os.geteuid() != 0:
        return "the consortium host tests make network namespaces and need root"
    if shutil.which("ip") is None:
        return "the consortium host tests need iproute2's `ip` (Debian: apt install iproute2)"
    probe = f"clprobe{os.getpid() % 100000}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def nft_unavailable() -> str | None:
    if shutil.which("nft") is None:
        return "the partition tests need nftables' `nft` (Debian: apt install nftables)"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise HostsUnavailable(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def _routed_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks the root namespace already routes (other runs, the machine's own)."""
    found: list[ipaddress.IPv4Network] = []
    for line in _ip("-4", "route", "show").stdout.splitlines():
        with contextlib.suppress(ValueError, IndexError):
            if line.split()[0] != "default":
                found.append(ipaddress.IPv4Network(line.split()[0], strict=False))
    return found


class Host:
    """One namespace: a machine with its own loopback and one network interface."""

    def __init__(self, hosts: Hosts, index: int, namespace: str, address: str) -> None:
        self.index = index
        self.name = namespace
        self.address = address
        self._hosts = hosts
        self._filter_installed = False

    def __repr__(self) -> str:
        return f"Host({self.name}, {self.address})"

    def _exec(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def popen(
        self, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """A long-running process in this host, stdout and stderr to log_path; it is stopped
        when the Hosts close (env is added to the test process's environment)."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                self._exec(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # its own process group: stopped with its children
            )
        self._hosts.started.append(proc)
        return proc

    def run(
        self, argv: Sequence[str], timeout: float = 60, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run to completion in this host; output captured, the exit code not checked."""
        return subprocess.run(
            self._exec(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )

    def link_down(self) -> None:
        _ip("-n", self.name, "link", "set", HOST_DEVICE, "down")

    def link_up(self) -> None:
        _ip("-n", self.name, "link", "set", HOST_DEVICE, "up")

    def drop_from(self, other: Host | str) -> None:
        """Drop every packet arriving from `other` (a host or an address), by nftables here."""
        address = other.address if isinstance(other, Host) else other
        self._install_filter()
        self._nft(f"add element inet {NFT_TABLE} blocked {{ {address} }}")

    def undrop(self, other: Host | str | None = None) -> None:
        """Take back drop_from(other), or every drop of this host when other is None."""
        self._install_filter()
        if other is None:
            self._nft(f"flush set inet {NFT_TABLE} blocked")
            return
        address = other.address if isinstance(other, Host) else other
        self._nft(f"delete element inet {NFT_TABLE} blocked {{ {address} }}")

    def _install_filter(self) -> None:
        """An input hook dropping what comes from the addresses in the set `blocked`."""
        if self._filter_installed:
            return
        self._nft(
            f"add table inet {NFT_TABLE}\n"
            f"add set inet {NFT_TABLE} blocked {{ type ipv4_addr; }}\n"
            f"add chain inet {NFT_TABLE} input {{ type filter hook input priority 0; }}\n"
            f"add rule inet {NFT_TABLE} input ip saddr @blocked drop\n"
        )
        self._filter_installed = True

    def _nft(self, script: str) -> None:
        done = subprocess.run(
            self._exec(["nft", "-f", "-"]), input=script, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise HostsUnavailable(f"nft in {self.name}: {done.stderr.strip()}")


class Hosts:
    """N hosts on one bridge, and the test process as an observer on the same subnet."""

    def __init__(self, count: int) -> None:
        if not 1 <= count <= 200:
            raise ValueError("between 1 and 200 hosts")
        self.count = count
        self.run_id = secrets.token_hex(2)  # 4 hex digits: names stay under 15 characters
        self.switch = f"cl{self.run_id}-sw"
        self.observer_device = f"cl{self.run_id}-ob"
        self.observer_address = ""
        self.hosts: list[Host] = []
        self.started: list[subprocess.Popen[bytes]] = []
        self._namespaces: list[str] = []

    def __enter__(self) -> Hosts:
        try:
            with _setup_lock():
                _sweep_dead_runs()
                self._claim_run()
                self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __getitem__(self, index: int) -> Host:
        return self.hosts[index]

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def _build(self) -> None:
        a, b = _free_subnet()
        self.observer_address = f"10.{a}.{b}.{OBSERVER_OCTET}"
        self._add_namespace(self.switch)
        _ip("-n", self.switch, "link", "add", BRIDGE, "type", "bridge")
        _ip("-n", self.switch, "link", "set", BRIDGE, "up")
        for i in range(self.count):
            namespace = f"cl{self.run_id}-h{i}"
            self._add_namespace(namespace)
            self._plug(namespace, f"h{i}")
            address = f"10.{a}.{b}.{i + 1}"
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", HOST_DEVICE)
            _ip("-n", namespace, "link", "set", HOST_DEVICE, "up")
            self.hosts.append(Host(self, i, namespace, address))
        # The observer: a veth from the root namespace into the bridge.
        _ip(
            "link", "add", self.observer_device, "type", "veth",
            "peer", "name", "observer", "netns", self.switch,
        )  # fmt: skip
        _ip("-n", self.switch, "link", "set", "observer", "master", BRIDGE, "up")
        _ip("addr", "add", f"{self.observer_address}/24", "dev", self.observer_device)
        _ip("link", "set", self.observer_device, "up")

    def _claim_run(self) -> None:
        """Record this run (under the setup lock); a new id if another live run has this one."""
        RUNS_DIR.mkdir(exist_ok=True)
        while (RUNS_DIR / self.run_id).exists():
            self.run_id = secrets.token_hex(2)
        self.switch = f"cl{self.run_id}-sw"
        self.observer_device = f"cl{self.run_id}-ob"
        (RUNS_DIR / self.run_id).write_text(str(os.getpid()))

    def _add_namespace(self, namespace: str) -> None:
        _ip("netns", "add", namespace)
        self._namespaces.append(namespace)
        _ip("-n", namespace, "link", "set", "lo", "up")

    def _plug(self, namespace: str, switch_port: str) -> None:
        """A veth made inside the switch namespace, its other end moved into the host."""
        _ip(
            "-n", self.switch, "link", "add", switch_port, "type", "veth",
            "peer", "name", HOST_DEVICE, "netns", namespace,
        )  # fmt: skip
        _ip("-n", self.switch, "link", "set", switch_port, "master", BRIDGE, "up")

    def close(self) -> None:
        """Stop what runs in the hosts and delete the namespaces; safe to call twice."""
        self._stop_processes()
        for namespace in reversed(self._namespaces):
            self._kill_remaining(namespace)
            _ip("netns", "del", namespace, check=False)
        self._namespaces.clear()
        _ip("link", "del", self.observer_device, check=False)
        (RUNS_DIR / self.run_id).unlink(missing_ok=True)

    def _stop_processes(self) -> None:
        running = [p for p in self.started if p.poll() is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for proc in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group: children left behind too
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)

    @staticmethod
    def _kill_remaining(namespace: str) -> None:
        """Anything still in the namespace (a process that left its group) is killed."""
        pids = _ip("netns", "pids", namespace, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)


def _sweep_dead_runs() -> None:
    """Delete the namespaces (and observer veth) of runs whose process is gone."""
    if not RUNS_DIR.is_dir():
        return
    listed = _ip("netns", "list", check=False).stdout.split("\n")
    for record in RUNS_DIR.iterdir():
        try:
            os.kill(int(record.read_text()), 0)
            continue  # that run is alive
        except (ProcessLookupError, ValueError):
            pass
        except PermissionError:
            continue
        prefix = f"cl{record.name}-"
        for namespace in (line.split()[0] for line in listed if line.startswith(prefix)):
            Hosts._kill_remaining(namespace)
            _ip("netns", "del", namespace, check=False)
        _ip("link", "del", f"{prefix}ob", check=False)
        record.unlink(missing_ok=True)


def _free_subnet() -> tuple[int, int]:
    """A random 10.a.b.0/24 that nothing on this machine routes yet."""
    routed = _routed_networks()
    for _ in range(500):
        a, b = random.randrange(100, 250), random.randrange(0, 256)
        candidate = ipaddress.IPv4Network(f"10.{a}.{b}.0/24")
        if not any(candidate.overlaps(net) for net in routed):
            return a, b
    raise HostsUnavailable("no free 10.a.b.0/24 subnet for the test hosts")


@contextlib.contextmanager
def _setup_lock() -> Iterator[None]:
    with SETUP_LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
