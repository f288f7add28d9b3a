"""A stopped node's CometBFT block store, read through `cometbft inspect`.

CometBFT keeps its blocks and their results in its own goleveldb stores. `cometbft inspect
--home DIR` (part of the pinned v0.38.25 binary) serves the read-only part of CometBFT's RPC
(`block`, `block_results`, `blockchain`, `commit`, `validators`, ...) over those stores while
the node is stopped, so we read them with CometBFT's own code rather than a second decoder of
its database format. It listens on a Unix socket in a private temporary directory: nothing
else on the machine can reach it.

goleveldb locks its files: while the node runs, inspect cannot open them, and `InspectError`
says so.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import orjson

from careledger.consensus.cometbft.binary import cometbft_binary
from careledger.consensus.cometbft.rpc import RpcError

START_TIMEOUT = 30.0


class InspectError(RuntimeError):
    """CometBFT's stores cannot be opened (no home, a running node, a damaged database)."""


class InspectedStore:
    """Context manager: `cometbft inspect` running on `home`, and calls to its RPC."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._scratch = tempfile.TemporaryDirectory(prefix="cl-inspect-")
        self._socket = Path(self._scratch.name) / "rpc.sock"
        self._log = Path(self._scratch.name) / "inspect.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._http: httpx.Client | None = None

    def __enter__(self) -> InspectedStore:
        if not (self.home / "config" / "config.toml").exists():
            raise InspectError(f"{self.home} is not a CometBFT home (no config/config.toml)")
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self) -> None:
        command = [
            cometbft_binary(),
            "inspect",
            "--home",
            str(self.home),
            "--rpc.laddr",
            f"unix://{self._socket}",
            "--log_level",
            "error",
        ]
        with open(self._log, "wb") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        transport = httpx.HTTPTransport(uds=str(self._socket))
        self._http = httpx.Client(transport=transport, base_url="http://inspect", timeout=60)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self._process.poll() is not None:
                raise InspectError(
                    f"cannot read CometBFT's stores in {self.home} (is the node still running?"
                    f" stop it first): {self._log_tail()}"
                )
            if time.monotonic() > deadline:
                raise InspectError(f"cometbft inspect did not answer within {START_TIMEOUT}s")
            time.sleep(0.05)

    def _answers(self) -> bool:
        if not self._socket.exists():
            return False
        try:
            self.call("blockchain")
        except httpx.TransportError:
            return False
        except RpcError:
            pass  # an answer, even an error, means it is serving
        return True

    def _log_tail(self) -> str:
        text = self._log.read_text(errors="replace").strip().splitlines()
        return " / ".join(text[-3:]) or "no output"

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        self._scratch.cleanup()

    # --- reads -----------------------------------------------------------------------------

    def call(self, method: str, **params: Any) -> Any:
        assert self._http is not None, "use InspectedStore as a context manager"
        body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        reply = orjson.loads(self._http.post("/", content=body).content)
        if reply.get("error"):
            raise RpcError(method, reply["error"])
        return reply["result"]

    def height(self) -> int:
        """The last height in the block store (0 before the first block)."""
        return int(self.call("blockchain")["last_height"])

    def block(self, height: int) -> dict[str, Any]:
        """`{"block_id", "block": {"header", "data": {"txs"}, "last_commit"}}` (RPC's JSON)."""
        found: dict[str, Any] = self.call("block", height=str(height))
        return found

    def block_results(self, height: int) -> dict[str, Any]:
        """`{"txs_results", "app_hash", ...}`: what the application answered to FinalizeBlock."""
        found: dict[str, Any] = self.call("block_results", height=str(height))
        return found
