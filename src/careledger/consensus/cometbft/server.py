"""The ABCI socket server: CometBFT's four connections driving one Application.

This module owns the connections: the Unix socket and where it lives, each connection's
reader (read ahead up to READ_AHEAD_BYTES, frames decoded, answers written in order and
flushed, a fair slice of the loop each), and the halt. What each request is answered with is
handler.py's (`AbciHandler`); the thread FinalizeBlock runs in is block_thread.py's.

CometBFT opens four connections (consensus, mempool, query, snapshot) and sends requests on
each, followed now and then by a Flush that asks for the buffered answers. Answers go back in
request order on each connection. All four share one event loop and the Application's calls
are synchronous, so the application sees one call at a time, as CometBFT's own socket server
guarantees with its mutex. (FinalizeBlock runs in a thread of its own, so that the loop keeps
reading the sockets meanwhile; every other request waits until it is done.)

Any exception while answering becomes a ResponseException on that connection. When
FinalizeBlock or Commit fails (a LocalFault: disk, memory, a bug) the application has not
committed the block and must not go on: the server closes every CometBFT connection and stops
listening, which makes CometBFT stop too; both restart once the cause is fixed, and CometBFT
replays the block.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from careledger.chain.app import UpgradeRequired
from careledger.consensus.cometbft import messages as m
from careledger.consensus.cometbft.block_thread import BlockThread
from careledger.consensus.cometbft.codec import (
    FrameReader,
    decode_check_tx,
    decode_request,
    encode_response,
)
from careledger.consensus.cometbft.handler import AbciHandler
from careledger.consensus.cometbft.protowire import encode_uvarint

log = logging.getLogger(__name__)

# sun_path holds 108 bytes; leave room. The ABCI connection is unauthenticated (whoever can
# connect drives the state machine), so it is only ever a Unix socket in a private directory,
# never a TCP port.
UNIX_PATH_LIMIT = 100

READ_CHUNK = 1 << 20
# How much a connection's reader buffers before it stops reading the socket (asyncio pauses
# at twice the StreamReader limit). Large, because CometBFT burns CPU whenever its writes to
# us block: its ABCI socket client re-arms a "20 ms" flush timer that is in fact 20 ns
# (v0.38 abci/client/socket_client.go passes the constant 20 as a time.Duration), so while
# its sender goroutine is stuck in a write to a full socket the timer fires back to back,
# each time in a new goroutine (pprof under load: a third of node0's CometBFT CPU). With
# asyncio's default 64 KiB limit the mempool connection's socket was full whenever
# CheckTx piled up. CometBFT is the only peer on this private socket and its mempool is
# bounded, so buffering what it sends costs at most this much memory per connection.
READ_AHEAD_BYTES = 64 << 20
# Answers are flushed on Flush; past this much buffered output they are sent anyway.
WRITE_HIGH_WATER = 1 << 20
# A connection that has been answering for this long lets the others have the event loop
# (see AbciServer._answer): CometBFT floods the mempool connection with CheckTx under load,
# and the consensus connection's PrepareProposal, ProcessProposal and FinalizeBlock waited
# behind whole socket buffers of them (hundreds of milliseconds per request), which stalled
# heights for seconds.
FAIR_SLICE_SECONDS = 0.002
# The first two bytes of a Request that is a FinalizeBlock (field 20, length-delimited).
_FINALIZE_BLOCK_REQUEST = encode_uvarint(20 << 3 | 2)
# Consecutive CheckTx requests answered as one batch (AbciServer._respond_from): their state
# read ahead in one query. Small, so that a batch stays near one fair slice (new
# registrations take about 0.2-0.4 ms each to check).
CHECK_TX_BATCH = 8


Recorder = Callable[[str, bytes], None]  # ("request" | "response", frame body)

# A node stopping at a planned upgrade's height (UpgradeRequired) keeps CometBFT waiting this
# many seconds for FinalizeBlock's answer before it closes the connections. Meanwhile
# CometBFT's gossip goes on sending this node's precommit for the block (its vote gossip
# runs every 100 ms): without the wait, the first validators to commit the block stopped
# within milliseconds and took their precommits with them, and the others, short of two
# thirds, waited at the height for ever instead of committing the block and stopping there
# too (seen on a 4-validator network: two of four stopped, two hung).
UPGRADE_HALT_GRACE = 5.0


# --- the socket server -----------------------------------------------------------------------


class AbciServer:
    def __init__(self, handler: AbciHandler, recorder: Recorder | None = None) -> None:
        self.handler = handler
        self.recorder = recorder
        self._server: asyncio.AbstractServer | None = None
        self._socket: Path | None = None
        self.connections = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self.on_halt: Callable[[], None] | None = None  # e.g. stop the node's API too
        self.halted = False
        self.upgrade_grace = UPGRADE_HALT_GRACE
        self._grace: asyncio.Task[None] | None = None
        # FinalizeBlock runs in this thread (see _finalize_block_off_loop); while it does,
        # no other request reaches the application.
        self._block_thread = BlockThread()

    async def start(self, address: str) -> None:
        """Listen on `unix:///path` (no TCP: the ABCI connection has no authentication)."""
        if not address.startswith("unix://"):
            raise ValueError(f"the ABCI server listens on a Unix socket only, not {address!r}")
        path = Path(address.removeprefix("unix://"))
        _check_private_dir(path.parent)
        path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(path), limit=READ_AHEAD_BYTES // 2
        )
        self._socket = path
        path.chmod(0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        if self._socket is not None:
            self._socket.unlink(missing_ok=True)  # Python 3.11 leaves the file behind
        # A FinalizeBlock still running (its connection gone or cancelled) ends before the
        # node goes on to close the state store under it.
        await self._block_thread.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.handler.halted is not None:
            writer.close()
            return
        self.connections += 1
        self._writers.add(writer)
        try:
            await self._answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("ABCI connection failed")
        finally:
            self.connections -= 1
            self._writers.discard(writer)
            writer.close()

    def _halt(self) -> None:
        """Close every connection and the listener: CometBFT stops when its app goes away."""
        if self.halted:
            return
        self.halted = True
        log.critical(
            "the application failed to execute or commit a block (%s); closing every CometBFT"
            " connection so that CometBFT stops rather than this node diverging. Restart both"
            " once the cause is fixed: CometBFT replays the block.",
            self.handler.halted,
        )
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self.on_halt is not None:
            self.on_halt()

    async def _let_votes_out(self) -> None:
        """Before answering a planned upgrade's halt: UPGRADE_HALT_GRACE for this node's
        votes to reach its peers (see the constant). Every connection waits for the same
        grace, so that none closes the others early."""
        fault = self.handler.halted
        if not isinstance(fault, UpgradeRequired):
            return
        if self._grace is not None:
            await self._grace
            return
        self._grace = asyncio.create_task(asyncio.sleep(self.upgrade_grace))
        log.warning(
            "stopping at upgrade plan %r's height %d in %.0f s, once this node's votes for the"
            " block have reached its peers (they then reach the height and stop there too)",
            fault.plan.name,
            fault.plan.height,
            self.upgrade_grace,
        )
        await self._grace

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer this connection's requests in order. Every FAIR_SLICE_SECONDS of work the
        loop yields, so that a request on another connection waits for at most one slice
        (CometBFT needs each connection's answers in order, not the connections in step).

        Each read takes every byte waiting (CometBFT pipelines its requests: under load the
        mempool connection holds hundreds of CheckTx), and a run of consecutive CheckTx
        among them is answered as one batch of at most CHECK_TX_BATCH."""
        frames = FrameReader()
        out = bytearray()
        slice_end = time.monotonic() + FAIR_SLICE_SECONDS
        while chunk := await reader.read(READ_CHUNK):
            bodies = frames.feed(chunk)
            first = 0
            while first < len(bodies):
                if time.monotonic() > slice_end:
                    await asyncio.sleep(0)
                    if self.halted:
                        return  # another connection's block failed meanwhile
                    slice_end = time.monotonic() + FAIR_SLICE_SECONDS
                await self._block_thread.idle()  # another connection's FinalizeBlock runs
                if bodies[first][:2] == _FINALIZE_BLOCK_REQUEST:
                    answers, flush = [await self._finalize_block_off_loop(bodies[first])], False
                    first += 1
                else:
                    first, answers, flush = self._respond_from(bodies, first)
                for encoded in answers:
                    self._record("response", encoded)
                    out += encode_uvarint(len(encoded))
                    out += encoded
                halted = self.handler.halted is not None
                if halted:
                    await self._let_votes_out()
                if flush or len(out) > WRITE_HIGH_WATER or halted:
                    writer.write(bytes(out))
                    out.clear()
                    await writer.drain()
                if halted:
                    self._halt()
                    return

    async def _finalize_block_off_loop(self, body: bytes) -> bytes:
        """FinalizeBlock in the block thread, the event loop free meanwhile to read every
        connection (block_thread.py says why, and why the application still sees one ABCI
        call at a time)."""
        self._record("request", body)
        request = self._decode(body)
        if request is None:
            return encode_response(m.ResponseException("undecodable request"))
        return await self._block_thread.run(self.handler.respond, request)

    def _respond_from(self, bodies: list[bytes], first: int) -> tuple[int, list[bytes], bool]:
        """Answer bodies[first] and, when it is a CheckTx, the CheckTx of the same kind right
        behind it (at most CHECK_TX_BATCH in all): (the index after the last one answered,
        their encoded responses in order, whether the request answered was a Flush)."""
        check = decode_check_tx(bodies[first])  # the mempool's requests, without the tables
        if check is None:
            encoded, flush = self._respond(bodies[first])
            return first + 1, [encoded], flush
        tx, kind = check
        txs = [tx]
        end = first + 1
        while end < len(bodies) and len(txs) < CHECK_TX_BATCH:
            following = decode_check_tx(bodies[end])
            if following is None or following[1] != kind:
                break
            txs.append(following[0])
            end += 1
        for body in bodies[first:end]:
            self._record("request", body)
        return end, self.handler.check_tx_responses(txs, kind), False

    def _respond(self, body: bytes) -> tuple[bytes, bool]:
        """(the encoded response, whether the request was a Flush) of a request that is not
        a CheckTx in CometBFT's shape (decode_check_tx said None)."""
        self._record("request", body)
        request = self._decode(body)
        if request is None:
            return encode_response(m.ResponseException("undecodable request")), False
        return self.handler.respond(request), isinstance(request, m.RequestFlush)

    def _decode(self, body: bytes) -> Any:
        try:
            return decode_request(body)
        except ValueError:
            log.exception("undecodable ABCI request of %d bytes", len(body))
            return None

    def _record(self, direction: str, body: bytes) -> None:
        if self.recorder is not None:
            self.recorder(direction, body)


# --- where the socket lives ------------------------------------------------------------------


def abci_socket_path(node_dir: Path) -> Path:
    """The node's ABCI socket: `abci.sock` in its directory, or, when that path is too long
    for a Unix socket, a short one in a private (0700) directory named by a hash of it."""
    path = node_dir.resolve() / "abci.sock"
    if len(str(path)) <= UNIX_PATH_LIMIT:
        return path
    name = hashlib.sha256(str(path).encode()).hexdigest()[:32] + ".sock"
    for base in (os.environ.get("XDG_RUNTIME_DIR", ""), "/tmp"):
        short = Path(base) / f"careledger-{os.getuid()}" / name
        if base.startswith("/") and len(str(short)) <= UNIX_PATH_LIMIT:
            _check_private_dir(short.parent, closed=0o077)
            return short
    raise ValueError(f"no short path for the ABCI socket of {node_dir}")


def _check_private_dir(directory: Path, closed: int = 0o022) -> None:
    """The socket's directory must be ours, with the `closed` permission bits unset (created
    0700 if missing): in a shared /tmp another user could otherwise make it first and put a
    socket of theirs where CometBFT connects."""
    try:
        info = directory.lstat()
    except FileNotFoundError:
        directory.mkdir(mode=0o700)  # e.g. /tmp was cleaned since the network was created
        info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PermissionError(f"{directory} is not a directory of this user: refusing it")
    if info.st_mode & closed:
        raise PermissionError(
            f"{directory} is open to others (mode {oct(info.st_mode & 0o777)}): refusing it"
        )
