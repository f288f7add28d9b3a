"""Local faults (a disk error, memory exhausted, a bug) halt the node; they never become results.

Issue 7, attack 2: the application turned any exception in a handler into an INTERNAL result
and committed it, so a disk error or MemoryError on one node gave that node an app hash the
others did not compute. A fault is injected here by a test-only module registered with the
real Application (its handler raises the way a failing disk or allocator does), by a real
SQLite store on a full file system under a running `careledger up`, and through the real ABCI
socket server.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from careledger.chain.app import DEFAULT_MODULES, Application, BlockContext, LocalFault
from careledger.chain.codes import Code
from careledger.chain.genesis import Genesis
from careledger.chain.modules.base import Message, Module, Payload, TxContext
from careledger.chain.modules.identity import rotation_payload
from careledger.chain.store import StateStore
from careledger.chain.tx import Tx, tx_hash
from careledger.consensus.cometbft import messages as m
from careledger.consensus.cometbft.codec import FrameReader, decode_response, encode_request, frame
from careledger.consensus.cometbft.handler import AbciHandler
from careledger.consensus.cometbft.server import AbciServer
from careledger.consensus.solo.blockstore import BlockStore
from careledger.consensus.solo.producer import SoloProducer
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.node.datadir import DataDir, initialise
from careledger.wallet.node_client import NodeClient
from nodeutil import CHAIN_ID, GENESIS_TIME, NodeProcess, free_port, run_verify

# --- a test-only module whose handler fails the way the machine can ---------------------------

FAULTS = {
    "disk": lambda: OSError(errno.EIO, "Input/output error"),
    "full": lambda: OSError(errno.ENOSPC, "No space left on device"),
    "memory": MemoryError,
}


@dataclass(frozen=True)
class Fail:
    fault: str

    @classmethod
    def parse(cls, p: Payload) -> Fail:
        msg = cls(p.choice("fault", tuple(FAULTS)))
        p.done()
        return msg


def fail_after_writing(ctx: TxContext, msg: Fail) -> None:
    ctx.kv("faulty").set("written-before-the-fault", 1)
    raise FAULTS[msg.fault]()


def parse_fails(p: Payload) -> Fail:
    raise OSError(errno.EIO, "Input/output error")


FAULTY = Module(
    name="faulty",
    messages={
        "fail": Message(Fail.parse, fail_after_writing),
        "unparseable": Message(parse_fails, fail_after_writing),
    },
    queries={},
    init_genesis=lambda ctx, genesis: None,
)


def faulty_app(path: Path, org: Identity) -> Application:
    app = Application(StateStore(path), modules=(*DEFAULT_MODULES, FAULTY))
    genesis = Genesis.for_organisations(CHAIN_ID, [("Org", org)])
    app.init_chain(Genesis(CHAIN_ID, GENESIS_TIME, genesis.organisations))
    return app


def signed(org: Identity, type_: str, nonce: int, payload: dict[str, object]) -> bytes:
    return Tx(CHAIN_ID, type_, org.did, nonce, payload).sign(org)


def good_tx(org: Identity, nonce: int) -> bytes:
    """A valid transaction that spends its nonce (a state write) and fails in its handler."""
    payload = {"did": Identity.generate().did}
    return signed(org, "identity/deregister_practitioner", nonce, payload)


def snapshot(app: Application) -> tuple[object, ...]:
    return (app.info(), dict(app.store.all_rows()), list(app.store.commits()))


# --- the state machine ---------------------------------------------------------------------


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_local_fault_in_a_handler_raises_and_commits_nothing(
    tmp_path: Path, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    org = Identity.generate()
    app = faulty_app(tmp_path / "s.sqlite", org)
    before = snapshot(app)
    failing = signed(org, "faulty/fail", 2, {"fault": fault})
    assert app.check_tx(failing).code == Code.OK  # the handler does not run in the mempool

    with caplog.at_level(logging.CRITICAL), pytest.raises(LocalFault) as raised:
        app.finalize_block(BlockContext(1, 1_800_000_000_000_000_001), [good_tx(org, 1), failing])
    assert f"block 1, transaction {tx_hash(failing).hex()}" in str(raised.value)
    assert type(raised.value.__cause__) is type(FAULTS[fault]())
    critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1
    assert tx_hash(failing).hex() in critical[0]
    assert "the node stops here to avoid diverging" in critical[0]

    with pytest.raises(RuntimeError, match="commit without finalize_block"):
        app.commit()  # nothing is pending: the failed block can never be committed
    assert snapshot(app) == before

    # The same state machine restarted on the same file is unharmed by the attempt.
    app.store.close()
    again = faulty_app(tmp_path / "s.sqlite", org)
    assert snapshot(again) == before


def test_check_tx_answers_a_local_fault_with_a_code(tmp_path: Path) -> None:
    org = Identity.generate()
    app = faulty_app(tmp_path / "s.sqlite", org)
    before = snapshot(app)
    result = app.check_tx(signed(org, "faulty/unparseable", 1, {}))
    assert result.code == Code.INTERNAL
    assert app.check_tx(good_tx(org, 1)).code == Code.OK  # the mempool goes on
    assert snapshot(app) == before


# --- the solo producer ---------------------------------------------------------------------


def test_the_solo_producer_halts_and_takes_no_more_writes(tmp_path: Path) -> None:
    org = Identity.generate()
    app = faulty_app(tmp_path / "state.sqlite", org)
    blocks = BlockStore(tmp_path / "blocks.sqlite")
    halted: list[bool] = []
    # One block of exactly these two, made when both wait (not on a timer: a block between
    # the two admissions would commit the first).
    producer = SoloProducer(
        app, blocks, block_interval=60, max_block_txs=2, on_halt=lambda: halted.append(True)
    )

    async def scenario() -> tuple[int | None, int | None, int]:
        running = asyncio.create_task(producer.run())
        waiting = await producer.admit(good_tx(org, 1), wait=True)
        failing = await producer.admit(signed(org, "faulty/fail", 2, {"fault": "full"}), True)
        outcomes = await asyncio.wait_for(
            asyncio.gather(waiting.outcome(), failing.outcome()), timeout=30
        )
        await asyncio.wait_for(running, timeout=30)  # run() returns: it makes no more blocks
        later = await producer.submit(good_tx(org, 3), wait=True)
        return outcomes[0].check_code, outcomes[1].check_code, later.check_code

    assert asyncio.run(scenario()) == (Code.INTERNAL, Code.INTERNAL, Code.INTERNAL)
    assert halted == [True]
    assert isinstance(producer.halted, LocalFault)
    assert blocks.height() == 0 and app.info().last_height == 0  # nothing stored, nothing committed
    blocks.close()


# --- the ABCI server -----------------------------------------------------------------------


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: object
) -> list[object]:
    writer.write(frame(encode_request(request)) + frame(encode_request(m.RequestFlush())))
    await writer.drain()
    frames, answers = FrameReader(), []
    while len(answers) < 2:
        chunk = await asyncio.wait_for(reader.read(1 << 16), timeout=30)
        if not chunk:
            break
        answers += [decode_response(body) for body in frames.feed(chunk)]
    return answers


def test_the_abci_server_closes_every_connection_when_a_block_fails(tmp_path: Path) -> None:
    org = Identity.generate()
    app = faulty_app(tmp_path / "state.sqlite", org)
    handler = AbciHandler(app)
    server = AbciServer(handler)
    halted: list[bool] = []
    server.on_halt = lambda: halted.append(True)
    failing = signed(org, "faulty/fail", 1, {"fault": "disk"})
    socket_dir = tempfile.mkdtemp(prefix="abci", dir="/tmp")  # a unix socket path is short

    async def scenario() -> tuple[list[object], bytes, bytes]:
        path = f"{socket_dir}/app.sock"
        await server.start(f"unix://{path}")
        consensus = await asyncio.open_unix_connection(path)
        mempool = await asyncio.open_unix_connection(path)
        assert [type(a) for a in await _request(*mempool, m.RequestCheckTx(failing))] == [
            m.ResponseCheckTx,
            m.ResponseFlush,
        ]
        block = m.RequestFinalizeBlock(txs=[failing], height=1)
        answers = await _request(*consensus, block)
        # Both connections are closed by the server: CometBFT stops when its app goes away.
        consensus_rest = await asyncio.wait_for(consensus[0].read(), timeout=30)
        mempool_rest = await asyncio.wait_for(mempool[0].read(), timeout=30)
        with pytest.raises(ConnectionRefusedError):  # and it listens no more
            await asyncio.open_unix_connection(path)
        await server.close()
        return answers, consensus_rest, mempool_rest

    try:
        answers, consensus_rest, mempool_rest = asyncio.run(scenario())
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
    assert isinstance(answers[0], m.ResponseException)
    assert "LocalFault" in answers[0].error
    assert (consensus_rest, mempool_rest) == (b"", b"")
    assert halted == [True] and isinstance(handler.halted, LocalFault)
    assert app.info().last_height == 0


# --- a real node whose state store's disk fills up ----------------------------------------


@contextlib.contextmanager
def tiny_tmpfs(size: str) -> Iterator[Path]:
    """A small tmpfs (needs root); the test is skipped where it cannot be mounted."""
    mount_point = Path(tempfile.mkdtemp(prefix="careledger-full-"))
    if os.geteuid() != 0 or shutil.which("mount") is None:
        mount_point.rmdir()
        pytest.skip("mounting a tmpfs to fill needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
        mount_point.rmdir()


def fill(directory: Path) -> Path:
    """Write a file until the file system has not one byte left."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    return filler


def test_a_node_whose_state_disk_is_full_stops_and_recovers_on_restart(tmp_path: Path) -> None:
    with tiny_tmpfs("8m") as disk:
        root = tmp_path / "data"
        initialise(root)
        # The state store lives on the small disk; the block store stays on the large one.
        DataDir(root).state.symlink_to(disk / "state.sqlite")
        node = NodeProcess(root, free_port())
        node.start("--block-interval", "0.05")
        org = KeyFile.load(DataDir(root).organisation_key)
        client = NodeClient(node.url, org, timeout=60)  # the API answers signed requests only
        chain_id = client.status()["chain_id"]
        rotation = rotation_payload(org.identity, Identity.generate(), chain_id)
        raw = Tx(chain_id, "identity/rotate_key", org.did, 1, rotation).sign(org.identity)
        filler = fill(disk)
        try:
            try:
                [answer] = client.submit_many([raw], wait=True)
                # The block carrying it failed to commit: the node refuses it as halted.
                assert answer["check_code"] == Code.INTERNAL, answer
                assert "halted after a local fault" in answer["check_log"]
            except httpx.TransportError:
                pass  # the node stopped before its answer was sent
            assert node.process is not None
            exit_code = node.process.wait(60)
        finally:
            node.stop()
            client.close()
        log = (root.parent / f"node-{node.port}.log").read_text()
        assert exit_code == 1, log
        assert "commit of block 1: OperationalError: database or disk is full" in log
        assert "the node stops here to avoid diverging" in log
        assert "error: the node stopped after a local fault" in log

        # Once there is room again, the stored block is replayed and the chain verifies.
        filler.unlink()
        node.start("--block-interval", "0.05")
        try:
            status = NodeClient(node.url).status()
        finally:
            node.stop()
        assert status["height"] == 1
        assert "Replayed 1 stored block" in (root.parent / f"node-{node.port}.log").read_text()
        verified = run_verify(root)
        assert verified.returncode == 0, verified.stdout + verified.stderr
