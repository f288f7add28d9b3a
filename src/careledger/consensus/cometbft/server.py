"""The ABCI socket server: CometBFT's four connections driving one Application.

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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from careledger.chain.app import (
    Application,
    BlockContext,
    FinalizeResult,
    TxResult,
    UpgradeRequired,
)
from careledger.chain.codes import Code
from careledger.chain.genesis import Genesis
from careledger.chain.modules.base import Event
from careledger.chain.tx import MAX_TX_BYTES, SIGNATURE_BYTES
from careledger.consensus.cometbft import messages as m
from careledger.consensus.cometbft.answers import finalize_block_response
from careledger.consensus.cometbft.codec import (
    CHECK_TX_OK_RESPONSE,
    FrameReader,
    decode_check_tx,
    decode_request,
    encode_response,
)
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


class AbciHandler:
    """Turns each decoded ABCI request into its response by calling the Application."""

    def __init__(self, app: Application) -> None:
        self.app = app
        self.halted: BaseException | None = None  # set when a block failed to execute or commit

    def handle(self, request: Any) -> Any:
        method = getattr(self, "on_" + type(request).__name__.removeprefix("Request"), None)
        if method is None:
            return m.ResponseException(f"unsupported request {type(request).__name__}")
        return self._guarded(method, request)

    def respond(self, request: Any) -> bytes:
        """handle(request), encoded. FinalizeBlock's answer, the largest, is written straight
        from the application's results (answers.py: the same bytes as the generic path)."""
        if type(request) is m.RequestFinalizeBlock:
            answer = self._guarded(self._finalize_block_bytes, request)
            return answer if isinstance(answer, bytes) else encode_response(answer)
        return encode_response(self.handle(request))

    def _guarded(self, method: Callable[[Any], Any], request: Any) -> Any:
        """method(request), or a ResponseException for whatever it raises (the server must
        survive it); a failed FinalizeBlock or Commit halts (see the module's docstring)."""
        try:
            return method(request)
        except Exception as exc:
            log.exception("ABCI %s failed", type(request).__name__)
            if isinstance(request, m.RequestFinalizeBlock | m.RequestCommit):
                self.halted = exc
            return m.ResponseException(f"{type(exc).__name__}: {exc}")

    # --- connection-level ------------------------------------------------------------------

    def on_Echo(self, req: m.RequestEcho) -> m.ResponseEcho:
        return m.ResponseEcho(req.message)

    def on_Flush(self, req: m.RequestFlush) -> m.ResponseFlush:
        return m.ResponseFlush()

    # --- info and genesis ------------------------------------------------------------------

    def on_Info(self, req: m.RequestInfo) -> m.ResponseInfo:
        """Last committed height and app hash: CometBFT replays any block the app lacks.
        `app_version` is the chain's active rules version (it changes at a planned upgrade)."""
        info = self.app.info()
        return m.ResponseInfo(
            data="careledger",
            version="careledger/1",
            app_version=self.app.rules_version,
            last_block_height=info.last_height,
            last_block_app_hash=info.last_app_hash,
        )

    def on_InitChain(self, req: m.RequestInitChain) -> m.ResponseInitChain:
        genesis = Genesis.from_json(req.app_state_bytes)
        if genesis.chain_id != req.chain_id:
            raise ValueError(f"app_state is for chain {genesis.chain_id!r}, not {req.chain_id!r}")
        _check_genesis_validators(genesis, req.validators)
        # Empty validators in the answer keep CometBFT's genesis set, which we just checked.
        return m.ResponseInitChain(app_hash=self.app.init_chain(genesis))

    # --- mempool and queries ---------------------------------------------------------------

    def on_CheckTx(self, req: m.RequestCheckTx) -> m.ResponseCheckTx:
        result = self.app.check_tx(req.tx, recheck=req.type == m.CHECK_TX_RECHECK)
        return m.ResponseCheckTx(code=int(result.code), data=result.data, log=result.log)

    def check_tx_response(self, tx: bytes, kind: int) -> bytes:
        """on_CheckTx answered straight to bytes (the hot path: every transaction on every
        node, and every recheck): an OK answer, nearly all of them, is one constant."""
        return self.check_tx_responses([tx], kind)[0]

    def check_tx_responses(self, txs: Sequence[bytes], kind: int) -> list[bytes]:
        """The answers to a run of CheckTx requests of one kind, in order, as bytes.

        New transactions go through the application as one batch (`prepare_batch`, then
        `check_batch`: their senders' state read in one query, each then checked as check_tx
        checks it, in order, against the mempool view as the ones before it left it).
        Rechecks go to check_tx(recheck=True) one by one: their state is in the read cache
        already (read when they were new), and check_tx is where a recheck may do less."""
        try:
            if kind == m.CHECK_TX_RECHECK:
                results = [self.app.check_tx(tx, recheck=True) for tx in txs]
            else:
                results = self.app.check_batch(self.app.prepare_batch(txs, signatures=False))
        except Exception as exc:  # neither raises; as in handle(), survive it anyway
            log.exception("ABCI CheckTx failed")
            failed = encode_response(m.ResponseException(f"{type(exc).__name__}: {exc}"))
            return [failed] * len(txs)
        return [_check_tx_answer(result) for result in results]

    def on_Query(self, req: m.RequestQuery) -> m.ResponseQuery:
        result = self.app.query(req.path, req.data)
        return m.ResponseQuery(
            code=int(result.code), log=result.log, value=result.value, height=result.height
        )

    # --- proposals -------------------------------------------------------------------------

    def on_PrepareProposal(self, req: m.RequestPrepareProposal) -> m.ResponsePrepareProposal:
        """The mempool's transactions in order, as many as fit in max_tx_bytes."""
        chosen: list[bytes] = []
        used = 0
        for tx in req.txs:
            size = proto_size_in_block(tx)
            if used + size > req.max_tx_bytes:
                break
            chosen.append(tx)
            used += size
        return m.ResponsePrepareProposal(txs=chosen)

    def on_ProcessProposal(self, req: m.RequestProcessProposal) -> m.ResponseProcessProposal:
        """ACCEPT unless a transaction cannot be an envelope at all (always explicit).

        Only a cheap, deterministic shape check: every honest validator already ran CheckTx
        on these bytes, and FinalizeBlock fails a bad transaction with its code and no
        effect. Decoding each one here again would cost as much as the block itself.
        """
        for tx in req.txs:
            if not _envelope_shaped(tx):
                log.warning("rejecting proposal at height %d: malformed transaction", req.height)
                return m.ResponseProcessProposal(status=m.STATUS_REJECT)
        return m.ResponseProcessProposal(status=m.STATUS_ACCEPT)

    def on_ExtendVote(self, req: m.RequestExtendVote) -> m.ResponseExtendVote:
        return m.ResponseExtendVote()

    def on_VerifyVoteExtension(
        self, req: m.RequestVerifyVoteExtension
    ) -> m.ResponseVerifyVoteExtension:
        ok = not req.vote_extension  # we never extend votes, so only an empty one is valid
        return m.ResponseVerifyVoteExtension(status=m.STATUS_ACCEPT if ok else m.STATUS_REJECT)

    # --- blocks ----------------------------------------------------------------------------

    def on_FinalizeBlock(self, req: m.RequestFinalizeBlock) -> m.ResponseFinalizeBlock:
        return finalize_block_message(self._finalize_block(req))

    def _finalize_block_bytes(self, req: m.RequestFinalizeBlock) -> bytes:
        return finalize_block_response(self._finalize_block(req))

    def _finalize_block(self, req: m.RequestFinalizeBlock) -> FinalizeResult:
        return self.app.finalize_block(BlockContext(req.height, req.time.unix_ns), req.txs)

    def on_Commit(self, req: m.RequestCommit) -> m.ResponseCommit:
        self.app.commit()  # the application tells its commit listeners
        return m.ResponseCommit(retain_height=0)  # keep every block: they are the record

    # --- state sync: not offered -----------------------------------------------------------

    def on_ListSnapshots(self, req: m.RequestListSnapshots) -> m.ResponseListSnapshots:
        return m.ResponseListSnapshots()

    def on_OfferSnapshot(self, req: m.RequestOfferSnapshot) -> m.ResponseOfferSnapshot:
        return m.ResponseOfferSnapshot(result=m.SNAPSHOT_ABORT)

    def on_LoadSnapshotChunk(self, req: m.RequestLoadSnapshotChunk) -> m.ResponseLoadSnapshotChunk:
        return m.ResponseLoadSnapshotChunk()

    def on_ApplySnapshotChunk(
        self, req: m.RequestApplySnapshotChunk
    ) -> m.ResponseApplySnapshotChunk:
        return m.ResponseApplySnapshotChunk(result=m.SNAPSHOT_ABORT)


def _envelope_shaped(tx: bytes) -> bool:
    """A JSON object followed by a 64-byte signature, within the size limit."""
    body_end = len(tx) - SIGNATURE_BYTES
    return (
        SIGNATURE_BYTES < len(tx) <= MAX_TX_BYTES
        and tx[:1] == b"{"
        and tx[body_end - 1 : body_end] == b"}"
    )


def proto_size_in_block(tx: bytes) -> int:
    """Bytes a transaction takes in a block's Data message, as CometBFT counts max_tx_bytes."""
    return 1 + len(encode_uvarint(len(tx))) + len(tx)


def _check_tx_answer(result: TxResult) -> bytes:
    """A CheckTx answer's bytes: an OK, nearly every one, is one constant."""
    if result.code == Code.OK and not result.data and not result.log:
        return CHECK_TX_OK_RESPONSE
    response = m.ResponseCheckTx(code=int(result.code), data=result.data, log=result.log)
    return encode_response(response)


def finalize_block_message(result: FinalizeResult) -> m.ResponseFinalizeBlock:
    """FinalizeBlock's answer as a message: the definition that answers.py's direct
    encoding (`finalize_block_response`, what the server sends) must match byte for byte."""
    return m.ResponseFinalizeBlock(
        tx_results=[_exec_result(r) for r in result.tx_results],
        validator_updates=[
            m.ValidatorUpdate(m.PublicKey(ed25519=u.pub_key), u.power)
            for u in result.validator_updates
        ],
        app_hash=result.app_hash,
    )


def _exec_result(result: TxResult) -> m.ExecTxResult:
    return m.ExecTxResult(
        code=int(result.code),
        data=result.data,
        log=result.log,
        events=[_event(e) for e in result.events],
    )


def _event(event: Event) -> m.Event:
    attributes = [m.EventAttribute(k, v, index=True) for k, v in event.attributes.items()]
    return m.Event(event.type, attributes)


def _check_genesis_validators(genesis: Genesis, validators: list[m.ValidatorUpdate]) -> None:
    """CometBFT's genesis validators must be exactly the founding organisations' keys."""
    ours = {
        bytes.fromhex(o.validator_pub_key) for o in genesis.organisations if o.validator_pub_key
    }
    theirs = {v.pub_key.ed25519 for v in validators if v.pub_key.ed25519}
    if ours and ours != theirs:
        raise ValueError("CometBFT's genesis validators are not the founding organisations' keys")


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
        # `_block` is its future and no other request reaches the application.
        self._block_thread = ThreadPoolExecutor(1, thread_name_prefix="abci-block")
        self._block: asyncio.Future[bytes] | None = None

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
        await asyncio.to_thread(self._block_thread.shutdown, True)

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
                # Another connection's FinalizeBlock runs. Again after each wait: by the time
                # this connection runs, the consensus connection may have started the next.
                while self._block is not None:
                    await asyncio.wait([self._block])
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
        connection (nothing else reaches the application until it is done: each connection
        waits for `_block` before its next request). A block of thousands of transactions
        takes a few hundred milliseconds; on the loop, the mempool connection's socket filled
        behind it and CometBFT's client spun (see READ_AHEAD_BYTES). The application still
        sees one ABCI call at a time, in the order the loop takes them. (The driver's own
        `info()` reads for the node's status may run meanwhile: they read only what the last
        commit wrote, which a block in progress does not change.)"""
        self._record("request", body)
        request = self._decode(body)
        if request is None:
            return encode_response(m.ResponseException("undecodable request"))
        loop = asyncio.get_running_loop()
        block = loop.run_in_executor(self._block_thread, self.handler.respond, request)
        self._block = block
        # Cleared when the block is over, not when this wait ends: cancelled (the server
        # closing), the thread still runs the block, and nothing may reach the app meanwhile.
        block.add_done_callback(self._block_over)
        await asyncio.wait([block])
        return block.result()

    def _block_over(self, block: asyncio.Future[bytes]) -> None:
        if self._block is block:
            self._block = None

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
