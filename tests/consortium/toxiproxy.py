"""Toxiproxy (Shopify's fault-injection TCP proxy) for latency between test hosts.

The kernel of the project's machines has no `netem` qdisc, so latency is added by a real
proxy between peers: a proxy listens on one address and forwards to an upstream, and a
`latency` toxic delays the data of each direction. `make toxiproxy` builds the server into
.bin/toxiproxy-server; TOXIPROXY_BIN overrides where it is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import httpx
from hosts import Host

REPO = Path(__file__).resolve().parents[2]


class ToxiproxyNotFound(RuntimeError):
    """No runnable toxiproxy-server."""


class ToxiproxyError(RuntimeError):
    """The server refused a request, or did not come up."""


def toxiproxy_binary() -> str:
    """TOXIPROXY_BIN, else the project's .bin/toxiproxy-server, else toxiproxy-server on PATH."""
    candidates = [
        os.environ.get("TOXIPROXY_BIN", ""),
        str(REPO / ".bin" / "toxiproxy-server"),
        shutil.which("toxiproxy-server") or "",
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ToxiproxyNotFound(
        "no toxiproxy-server: run `make toxiproxy` (needs Go) or set TOXIPROXY_BIN"
    )


class Toxiproxy:
    """A toxiproxy-server process, in a test host or (host None) in the root namespace, and
    its HTTP API. The API address must be reachable from the test process (the observer)."""

    def __init__(self, api_host: str, api_port: int, log_path: Path, host: Host | None = None):
        self.api_url = f"http://{api_host}:{api_port}"
        argv = [toxiproxy_binary(), "-host", api_host, "-port", str(api_port)]
        if host is not None:
            self._proc = host.popen(argv, log_path)  # the Hosts stop it with the host
        else:
            with log_path.open("ab") as log:
                self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self._owned = host is None
        self._http = httpx.Client(base_url=self.api_url, timeout=10)

    def __enter__(self) -> Toxiproxy:
        try:
            self.wait_ready()
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

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ToxiproxyError(f"toxiproxy-server exited with {self._proc.returncode}")
            try:
                self._http.get("/version").raise_for_status()
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise ToxiproxyError(f"toxiproxy-server at {self.api_url} did not answer")

    def proxy(self, name: str, listen: str, upstream: str) -> None:
        """A proxy accepting on `listen` (HOST:PORT) and forwarding to `upstream`."""
        self._post("/proxies", {"name": name, "listen": listen, "upstream": upstream})

    def add_latency(self, name: str, milliseconds: int, jitter: int = 0) -> None:
        """Delay the proxy's data by `milliseconds` in each direction (a round trip gains
        twice that)."""
        for stream in ("upstream", "downstream"):
            toxic = {
                "name": f"latency_{stream}",
                "type": "latency",
                "stream": stream,
                "toxicity": 1.0,
                "attributes": {"latency": milliseconds, "jitter": jitter},
            }
            self._post(f"/proxies/{name}/toxics", toxic)

    def remove_latency(self, name: str) -> None:
        for stream in ("upstream", "downstream"):
            found = self._http.delete(f"/proxies/{name}/toxics/latency_{stream}")
            if found.status_code not in (204, 404):
                raise ToxiproxyError(f"removing latency of {name}: {found.text}")

    def proxies(self) -> dict[str, object]:
        listed = self._http.get("/proxies")
        listed.raise_for_status()
        return dict(listed.json())

    def _post(self, path: str, body: Mapping[str, object]) -> None:
        answer = self._http.post(path, json=body)
        if answer.status_code >= 300:
            raise ToxiproxyError(f"POST {path}: {answer.status_code} {answer.text.strip()}")

    def close(self) -> None:
        self._http.close()
        if self._owned and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
