"""The ABCI server's CheckTx fast path answers exactly as the generic path would.

Every transaction reaches CheckTx on every node (and again on each recheck), so the server
reads a CheckTx request's few bytes directly (`codec.decode_check_tx`) and answers an OK with
one constant. The attack on such a shortcut is a request the two paths read differently: a
duplicated field, an unknown one, a type past one byte, a truncated length, so that the
application checks other bytes than the ones CometBFT meant. Here the fast path must either
read what the generic decoder reads or step aside (None), for every mutant of real requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from careledger.chain.app import Application
from careledger.chain.genesis import Genesis
from careledger.chain.modules.identity.vouchers import sign_voucher
from careledger.chain.store import StateStore
from careledger.chain.tx import Tx
from careledger.consensus.cometbft import messages as m
from careledger.consensus.cometbft import server as server_module
from careledger.consensus.cometbft.codec import (
    CHECK_TX_OK_RESPONSE,
    FrameReader,
    decode_check_tx,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    frame,
)
from careledger.consensus.cometbft.handler import AbciHandler
from careledger.consensus.cometbft.protowire import CodecError, encode_uvarint
from careledger.consensus.cometbft.server import AbciServer
from careledger.crypto.keys import Identity
from nodeutil import CHAIN_ID, GENESIS_TIME

VECTORS = Path(__file__).parent / "vectors" / "abci" / "recorded.jsonl"


def _recorded_check_tx_bodies() -> list[bytes]:
    bodies = []
    for line in VECTORS.read_bytes().splitlines():
        vector = orjson.loads(line)
        if vector["direction"] == "request" and vector["type"] == "RequestCheckTx":
            bodies += FrameReader().feed(bytes.fromhex(vector["frame"]))
    return bodies


def _generic(body: bytes) -> tuple[bytes, int] | None:
    """What the table-driven decoder makes of the bytes, as (tx, type); None if not a CheckTx."""
    try:
        request = decode_request(body)
    except CodecError:
        return None
    if not isinstance(request, m.RequestCheckTx):
        return None
    return request.tx, request.type


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return encode_uvarint(number << 3 | wire) + payload


def _envelope(inner: bytes) -> bytes:
    return _field(8, 2, encode_uvarint(len(inner)) + inner)


def _crafted(rng: random.Random) -> list[bytes]:
    """Well-formed requests in shapes CometBFT does not write: both paths must agree."""
    tx = rng.randbytes(rng.choice([0, 1, 127, 128, 600]))
    tx_field = _field(1, 2, encode_uvarint(len(tx)) + tx)
    other = rng.randbytes(5)
    return [
        _envelope(tx_field + tx_field[:-1] + b"x"),  # the tx twice: the last one wins
        _envelope(_field(2, 0, b"\x01") + tx_field),  # type before tx
        _envelope(tx_field + _field(2, 0, b"\x01") + _field(2, 0, b"\x00")),  # type twice
        _envelope(tx_field + _field(2, 0, encode_uvarint(2**64 - 1))),  # type -1
        _envelope(tx_field + _field(2, 0, encode_uvarint(300))),  # a two-byte type
        _envelope(tx_field + _field(9, 2, encode_uvarint(len(other)) + other)),  # unknown field
        _envelope(tx_field + _field(2, 2, b"\x01\x01")),  # type with the wrong wire type
        _envelope(tx_field) + b"\x00",  # bytes after the envelope
        _envelope(b""),  # an empty CheckTx: no tx at all
    ]


def _mutants(body: bytes, rng: random.Random, count: int) -> list[bytes]:
    found = []
    for _ in range(count):
        data = bytearray(body)
        kind = rng.randrange(4)
        if kind == 0 and data:  # flip a byte near the front, where the tags and lengths are
            data[rng.randrange(min(len(data), 8))] ^= 1 << rng.randrange(8)
        elif kind == 1:  # cut it short
            del data[rng.randrange(len(data) + 1) :]
        elif kind == 2:  # append a few bytes
            data += rng.randbytes(rng.randrange(1, 4))
        elif data:  # any byte anywhere
            data[rng.randrange(len(data))] = rng.randrange(256)
        found.append(bytes(data))
    return found


def test_the_fast_path_reads_what_the_generic_decoder_reads_or_steps_aside() -> None:
    rng = random.Random(13)
    made = [
        encode_request(m.RequestCheckTx(tx=rng.randbytes(size), type=kind))
        for size in (0, 1, 127, 128, 553, 16_384)
        for kind in (m.CHECK_TX_NEW, m.CHECK_TX_RECHECK)
    ]
    originals = _recorded_check_tx_bodies() + made
    assert len(originals) > len(made)  # the recorded CometBFT frames are in
    for body in originals:  # every request as CometBFT writes it takes the fast path
        assert decode_check_tx(body) == _generic(body) is not None
    taken = refused = 0
    for body in [*originals, *_crafted(rng)]:
        for mutant in [body, *_mutants(body, rng, 300)]:
            fast = decode_check_tx(mutant)
            if fast is None:
                refused += 1
                continue
            taken += 1
            assert fast == _generic(mutant), mutant.hex()
    assert taken > 500 and refused > 500  # both outcomes were exercised


def _registration(org: Identity, chain_id: str = CHAIN_ID) -> bytes:
    patient = Identity.generate()
    voucher = sign_voucher(org, chain_id, "register_patient", patient.did, 10**9, org.did)
    payload = {"encryption_key": patient.encryption_public.hex(), "voucher": voucher}
    return Tx(chain_id, "identity/register_patient", patient.did, 1, payload).sign(patient)


def _handler(org: Identity, path: Path) -> AbciHandler:
    app = Application(StateStore(path))
    genesis = Genesis.for_organisations(CHAIN_ID, [("Org", org)])
    app.init_chain(Genesis(CHAIN_ID, GENESIS_TIME, genesis.organisations))
    return AbciHandler(app)


def test_the_fast_path_answers_byte_for_byte_as_the_handler_does(tmp_path: Path) -> None:
    """Two identical applications, the same requests: one through the fast path, one through
    decode -> handle -> encode. OKs, refusals (a replay, a wrong chain, garbage) and rechecks
    all come out as the same bytes."""
    org = Identity.generate()
    txs = [_registration(org) for _ in range(6)]
    wrong_chain = _registration(org, "another-chain")
    requests: list[tuple[bytes, int]] = [(tx, 0) for tx in txs]
    requests += [(txs[0], 0), (wrong_chain, 0), (b"not a transaction", 0), (b"", 0)]
    requests += [(tx, m.CHECK_TX_RECHECK) for tx in txs[:3]]
    fast, generic = _handler(org, tmp_path / "fast.sqlite"), _handler(org, tmp_path / "g.sqlite")
    answers: list[Any] = []
    for tx, kind in requests:
        body = encode_request(m.RequestCheckTx(tx=tx, type=kind))
        assert decode_check_tx(body) == (tx, kind)
        expected = encode_response(generic.handle(decode_request(body)))
        assert fast.check_tx_response(tx, kind) == expected
        answers.append(expected)
    assert answers[0] == CHECK_TX_OK_RESPONSE
    assert len({a for a in answers if a != CHECK_TX_OK_RESPONSE}) >= 3  # refusals with logs


class _OrderRecordingHandler(AbciHandler):
    """Records the order in which the application is asked (checks and Info)."""

    def __init__(self, handler: AbciHandler) -> None:
        super().__init__(handler.app)
        self.calls: list[str] = []
        self.checking = threading.Event()

    def check_tx_responses(self, txs: Sequence[bytes], kind: int) -> list[bytes]:
        self.calls += ["check"] * len(txs)
        self.checking.set()
        return super().check_tx_responses(txs, kind)

    def on_Info(self, req: m.RequestInfo) -> m.ResponseInfo:
        self.calls.append("info")
        return super().on_Info(req)


def _read_answers(sock: socket.socket, count: int) -> list[Any]:
    frames, answers = FrameReader(), list[Any]()
    while len(answers) < count:
        chunk = sock.recv(1 << 16)
        assert chunk, "the server closed the connection"
        answers += [decode_response(body) for body in frames.feed(chunk)]
    return answers


@contextlib.contextmanager
def _served(
    server: AbciServer, *, close: bool = True
) -> Iterator[tuple[str, asyncio.AbstractEventLoop]]:
    """The server listening on a fresh unix socket, its event loop in a thread of its own:
    (socket path, loop). On exit the server is closed (unless the test closes it itself) and
    the loop stopped."""
    loop = asyncio.new_event_loop()
    serving = threading.Thread(target=loop.run_forever, daemon=True)
    serving.start()
    directory = tempfile.mkdtemp(prefix="abci", dir="/tmp")  # a unix socket path is short
    path = f"{directory}/app.sock"
    try:
        asyncio.run_coroutine_threadsafe(server.start(f"unix://{path}"), loop).result(30)
        yield path, loop
    finally:
        if close:
            asyncio.run_coroutine_threadsafe(server.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        serving.join(30)
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def _connections(path: str) -> Iterator[tuple[socket.socket, socket.socket]]:
    """(consensus, mempool): two connections to the server, as CometBFT opens them."""
    with socket.socket(socket.AF_UNIX) as consensus, socket.socket(socket.AF_UNIX) as mempool:
        consensus.connect(path)
        mempool.connect(path)
        yield consensus, mempool


def test_a_flood_of_check_tx_does_not_hold_up_another_connection(tmp_path: Path) -> None:
    """CometBFT floods the mempool connection under load; the consensus connection's
    requests (here Info) used to wait until the server had answered every CheckTx it had
    read, which stalled heights for seconds. Now the server lets the other connections in
    every few milliseconds of work: Info is answered while the flood is still being checked."""
    org = Identity.generate()
    handler = _OrderRecordingHandler(_handler(org, tmp_path / "state.sqlite"))
    txs = [_registration(org) for _ in range(100)]  # ~100 x 0.3 ms of checking, far above a slice
    flood = b"".join(frame(encode_request(m.RequestCheckTx(tx=tx))) for tx in txs)
    server = AbciServer(handler)
    with _served(server) as (path, _), _connections(path) as (consensus, mempool):
        mempool.sendall(flood + frame(encode_request(m.RequestFlush())))
        assert handler.checking.wait(30)  # the server is inside the flood
        consensus.sendall(
            frame(encode_request(m.RequestInfo())) + frame(encode_request(m.RequestFlush()))
        )
        info = _read_answers(consensus, 2)
        checked = _read_answers(mempool, len(txs) + 1)
    assert isinstance(info[0], m.ResponseInfo)
    assert [type(a) for a in checked] == [m.ResponseCheckTx] * len(txs) + [m.ResponseFlush]
    assert all(a.code == 0 for a in checked[:-1])  # every registration admitted, in order
    assert handler.calls.count("check") == len(txs)
    assert "check" in handler.calls[handler.calls.index("info") :]  # Info did not wait for all


class _BatchRecordingHandler(AbciHandler):
    """Records the size of each batch of new transactions the server hands over."""

    def __init__(self, handler: AbciHandler) -> None:
        super().__init__(handler.app)
        self.batches: list[int] = []

    def check_tx_responses(self, txs: Sequence[bytes], kind: int) -> list[bytes]:
        if kind == m.CHECK_TX_NEW:
            self.batches.append(len(txs))
        return super().check_tx_responses(txs, kind)


def _pipelined_requests(org: Identity) -> list[bytes]:
    """What CometBFT's mempool connection pipelines under load, with every kind of answer in
    one stream: registrations, the same bytes twice, a second registration of one patient
    (its voucher used by the first, in the mempool view), a forged signature, the wrong
    chain, garbage, the recorded frames of a real CometBFT (kvstore's transactions:
    malformed here), rechecks among new ones, an Info between two runs, and Flushes."""
    patient = Identity.generate()
    voucher = sign_voucher(org, CHAIN_ID, "register_patient", patient.did, 10**9, org.did)
    payload = {"encryption_key": patient.encryption_public.hex(), "voucher": voucher}
    first = Tx(CHAIN_ID, "identity/register_patient", patient.did, 1, payload)
    again = Tx(CHAIN_ID, "identity/register_patient", patient.did, 2, payload).sign(patient)
    forged = first.body() + Identity.generate().sign(first.body())
    txs = [_registration(org) for _ in range(30)]
    news = [first.sign(patient), *txs[:12], first.sign(patient), again, forged]
    news += [_registration(org, "another-chain"), b"garbage", b"", *txs[12:20]]

    def checks(raws: list[bytes], kind: int = m.CHECK_TX_NEW) -> list[bytes]:
        return [encode_request(m.RequestCheckTx(tx=raw, type=kind)) for raw in raws]

    bodies = checks(news) + _recorded_check_tx_bodies()
    bodies += checks(txs[:5], m.CHECK_TX_RECHECK) + checks(txs[20:25])
    bodies += [encode_request(m.RequestInfo()), *checks(txs[25:]), *checks([again])]
    bodies += [*checks(txs[5:8], m.CHECK_TX_RECHECK), encode_request(m.RequestFlush())]
    return bodies


def test_a_pipelined_run_of_check_tx_is_checked_as_a_batch_with_one_by_one_answers(
    tmp_path: Path,
) -> None:
    """The server reads every request waiting on the connection and checks runs of CheckTx
    as batches (their state read in one query). The attack on that: an answer that differs
    from checking each transaction in turn, e.g. two transactions of one batch both admitted
    where the first one's effect on the mempool view refuses the second. Two identical
    applications get the same stream, one over the socket (batches), one request at a time
    through the generic decoder: the answers must be the same bytes, in the same order."""
    org = Identity.generate()
    bodies = _pipelined_requests(org)
    one_by_one = _handler(org, tmp_path / "one.sqlite")
    expected = [encode_response(one_by_one.handle(decode_request(b))) for b in bodies]
    handler = _BatchRecordingHandler(_handler(org, tmp_path / "batch.sqlite"))
    server = AbciServer(handler)
    with _served(server) as (path, _), socket.socket(socket.AF_UNIX) as mempool:
        mempool.connect(path)
        mempool.sendall(b"".join(frame(b) for b in bodies))  # all waiting at once
        answers = _read_answers(mempool, len(bodies))
    assert [encode_response(a) for a in answers] == expected
    refused = {a for a in expected if a != CHECK_TX_OK_RESPONSE}
    assert len(refused) >= 6  # replay, voucher reused, forged, wrong chain, garbage, kvstore
    assert max(handler.batches) > 1  # the runs were checked as batches
    # Every request but the 8 rechecks, the Info and the Flush went through a batch.
    assert sum(handler.batches) == len(bodies) - 8 - 2


class _SlowCheckingHandler(AbciHandler):
    """Each batch of checks takes a few milliseconds (the application's real cost, without
    the CPU): the server yields between batches, as it does under load."""

    def __init__(self, handler: AbciHandler) -> None:
        super().__init__(handler.app)
        self.answered = 0

    def check_tx_responses(self, txs: Sequence[bytes], kind: int) -> list[bytes]:
        time.sleep(0.003)
        self.answered += len(txs)
        return super().check_tx_responses(txs, kind)


def test_the_server_reads_ahead_so_that_cometbfts_writes_do_not_block(tmp_path: Path) -> None:
    """CometBFT's ABCI client spins (a "20 ms" flush timer that is 20 ns, re-armed in a new
    goroutine each time) while its writes to a full socket block: a third of its CPU under
    load. The server used to stop reading at asyncio's 64 KiB buffer limit, so the socket
    filled whenever CheckTx piled up. Now it reads ahead (READ_AHEAD_BYTES): a client's 4 MB
    of CheckTx requests are all taken off the socket while the server has checked only a
    few of them."""
    org = Identity.generate()
    handler = _SlowCheckingHandler(_handler(org, tmp_path / "state.sqlite"))
    garbage = encode_request(m.RequestCheckTx(tx=b"x" * 600))  # MALFORMED: cheap to answer
    flood = frame(garbage) * (4_000_000 // len(frame(garbage)))
    count = flood.count(frame(garbage))
    server = AbciServer(handler)
    with _served(server) as (path, _), socket.socket(socket.AF_UNIX) as mempool:
        mempool.connect(path)
        mempool.sendall(flood)  # returns once the server has taken every byte
        answered_when_sent = handler.answered
        mempool.sendall(frame(encode_request(m.RequestFlush())))
        answers = _read_answers(mempool, count + 1)
    assert answered_when_sent < count // 4
    assert len(answers) == count + 1 and all(a.code != 0 for a in answers[:-1])


class _HeldBlockHandler(AbciHandler):
    """FinalizeBlock waits until the test lets it go, and records when the application was
    called, so that the test can see what ran meanwhile."""

    def __init__(self, handler: AbciHandler) -> None:
        super().__init__(handler.app)
        self.calls: list[str] = []
        self.release = threading.Event()
        self.in_block = threading.Event()

    def on_FinalizeBlock(self, req: m.RequestFinalizeBlock) -> m.ResponseFinalizeBlock:
        raise AssertionError("the server answers FinalizeBlock through respond()")

    def _finalize_block_bytes(self, req: m.RequestFinalizeBlock) -> bytes:
        self.calls.append("block starts")
        self.in_block.set()
        assert self.release.wait(60)
        answer = super()._finalize_block_bytes(req)
        self.calls.append("block ends")
        return answer

    def check_tx_responses(self, txs: Sequence[bytes], kind: int) -> list[bytes]:
        self.calls += ["check"] * len(txs)
        return super().check_tx_responses(txs, kind)


def test_while_a_block_executes_the_server_reads_every_connection_and_checks_nothing(
    tmp_path: Path,
) -> None:
    """FinalizeBlock runs off the event loop, so that the mempool connection is still read
    (4 MB of CheckTx taken off the socket while the block is held), and the application
    still sees one call at a time: no CheckTx is checked until the block is done, and the
    block's answer is the generic one."""
    org = Identity.generate()
    handler = _HeldBlockHandler(_handler(org, tmp_path / "state.sqlite"))
    txs = [_registration(org) for _ in range(3)]
    block = encode_request(m.RequestFinalizeBlock(txs=txs, height=1))
    twin = _handler(org, tmp_path / "twin.sqlite")
    expected_block = encode_response(twin.handle(decode_request(block)))
    garbage = encode_request(m.RequestCheckTx(tx=b"x" * 600))
    flood = frame(garbage) * (4_000_000 // len(frame(garbage)))
    count = flood.count(frame(garbage))
    server = AbciServer(handler)
    flush = frame(encode_request(m.RequestFlush()))
    with _served(server) as (path, _):
        try:
            with _connections(path) as (consensus, pool):
                pool.settimeout(30)  # were the loop stuck in the block, sendall would time out
                consensus.sendall(frame(block) + flush)
                assert handler.in_block.wait(30)
                pool.sendall(flood + flush)  # all taken off the socket while the block is held
                checked_during_block = handler.calls.count("check")
                handler.release.set()
                block_answers = _read_answers(consensus, 2)
                pool_answers = _read_answers(pool, count + 1)
        finally:
            handler.release.set()
    assert checked_during_block == 0
    assert handler.calls.index("block ends") == 1  # every check came after the block
    assert handler.calls.count("check") == count
    assert encode_response(block_answers[0]) == expected_block
    assert len(pool_answers) == count + 1


def _connections_gone(server: AbciServer, within: float = 30) -> None:
    """Wait (bounded) until the server's connection tasks have seen their sockets close, so
    that none is left pending when the test stops the loop."""
    deadline = time.monotonic() + within
    while server.connections and time.monotonic() < deadline:
        time.sleep(0.01)


class _GatedBlockHandler(_HeldBlockHandler):
    """Each FinalizeBlock waits for a release of its own (a semaphore, one per block)."""

    def __init__(self, handler: AbciHandler) -> None:
        super().__init__(handler)
        self.gate = threading.Semaphore(0)
        self.started = threading.Semaphore(0)
        self.server: AbciServer | None = None

    def _finalize_block_bytes(self, req: m.RequestFinalizeBlock) -> bytes:
        self.calls.append("block starts")
        self.started.release()
        assert self.gate.acquire(timeout=60)
        answer = AbciHandler._finalize_block_bytes(self, req)
        self.calls.append("block ends")
        return answer

    def check_tx_responses(self, txs: Sequence[bytes], kind: int) -> list[bytes]:
        # What the application must never see: a check while the server has a block out.
        if self.server is not None and self.server._block_thread.running:
            self.calls.append("check during a block")
        return super().check_tx_responses(txs, kind)


def test_a_connection_woken_by_a_block_waits_for_the_next_block_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection that waited for one FinalizeBlock waits again when, by the time it runs,
    the consensus connection has started the next one (pipelined behind the first, and no
    fair slice between them): the application never sees a CheckTx while a block runs."""
    monkeypatch.setattr(server_module, "FAIR_SLICE_SECONDS", 3600.0)
    org = Identity.generate()
    handler = _GatedBlockHandler(_handler(org, tmp_path / "state.sqlite"))
    first = encode_request(m.RequestFinalizeBlock(txs=[_registration(org)], height=1))
    second = encode_request(m.RequestFinalizeBlock(txs=[], height=1))
    check = encode_request(m.RequestCheckTx(tx=_registration(org)))
    server = AbciServer(handler)
    handler.server = server
    flush = frame(encode_request(m.RequestFlush()))
    with _served(server) as (path, _):
        try:
            with _connections(path) as (consensus, pool):
                consensus.sendall(frame(first) + frame(second) + flush)
                assert handler.started.acquire(timeout=30)  # the first block runs
                pool.sendall(frame(check) + flush)
                time.sleep(0.3)  # the pool connection now waits for the first block
                handler.gate.release()  # the first block ends
                assert handler.started.acquire(timeout=30)  # the second block runs
                handler.gate.release()
                _read_answers(consensus, 3)
                _read_answers(pool, 2)
            _connections_gone(server)
        finally:
            for _ in range(2):
                handler.gate.release()
    assert "check during a block" not in handler.calls
    assert handler.calls.count("block ends") == 2 and handler.calls[-1] == "check"


def test_closing_the_server_waits_for_a_block_under_way(tmp_path: Path) -> None:
    """The node closes its state store once the ABCI server is closed: a FinalizeBlock still
    running in the block thread must be over by then, not reading a closed store."""
    org = Identity.generate()
    handler = _GatedBlockHandler(_handler(org, tmp_path / "state.sqlite"))
    block = encode_request(m.RequestFinalizeBlock(txs=[_registration(org)], height=1))
    server = AbciServer(handler)
    with _served(server, close=False) as (path, loop):
        try:
            with socket.socket(socket.AF_UNIX) as consensus:
                consensus.connect(path)
                consensus.sendall(frame(block))
                assert handler.started.acquire(timeout=30)
                closing = asyncio.run_coroutine_threadsafe(server.close(), loop)
                time.sleep(0.3)
                closed_during_block = closing.done()
                handler.gate.release()
                closing.result(30)
                assert handler.calls[-1] == "block ends"
            _connections_gone(server)
        finally:
            handler.gate.release()
    assert not closed_during_block
