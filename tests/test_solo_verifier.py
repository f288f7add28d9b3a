"""The solo intake's signature verifier process (consensus/solo/verifier.py).

- The worker answers exactly as `verify_signature` (the consensus rule) does, for good,
  forged and malformed signatures and keys.
- A killed worker changes no answer: the intake verifies inline from then on.
- No worker outlives its node: stopped with the node, and gone when the node is killed.
- One CPU: no worker at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import time
from pathlib import Path

import pytest

from careledger.chain.auth import SignatureCheck, verify_checks
from careledger.chain.codes import Code
from careledger.consensus.solo import intake as intake_module
from careledger.consensus.solo import verifier as verifier_module
from careledger.consensus.solo.blockstore import BlockStore
from careledger.consensus.solo.intake import INTAKE_BATCH
from careledger.consensus.solo.producer import SoloProducer
from careledger.consensus.solo.verifier import SignatureVerifier
from careledger.crypto.keys import Identity, verify_signature
from nodeutil import CHAIN_ID, NodeProcess, free_port, make_app, register_patient_tx
from test_check_batch import answers, mixed_batch


def signature_cases() -> list[SignatureCheck]:
    signer = Identity.generate()
    message = b"a transaction body"
    good = signer.sign(message)
    key = signer.signing_public
    return [
        SignatureCheck(b"", key, good, message),
        SignatureCheck(b"", key, good, message + b"!"),  # other bytes
        SignatureCheck(b"", Identity.generate().signing_public, good, message),  # other key
        SignatureCheck(b"", key, good[:-1] + bytes([good[-1] ^ 1]), message),  # forged
        SignatureCheck(b"", key[:31], good, message),  # a key of the wrong length
        SignatureCheck(b"", key, good + b"\0", message),  # a signature of the wrong length
        SignatureCheck(b"", b"", b"", b""),
        SignatureCheck(b"", key, signer.sign(b""), b""),  # an empty message, signed
    ]


def test_the_worker_answers_as_verify_signature_does() -> None:
    checks = signature_cases()
    expected = [verify_signature(c.public_key, c.signature, c.message) for c in checks]
    assert expected == [True, False, False, False, False, False, False, True]

    async def scenario() -> tuple[list[bool] | None, list[bool] | None]:
        verifier = await SignatureVerifier.start()
        try:
            first, second = verifier.verify(checks), verifier.verify(checks[::-1])
            return await first, await second  # answered in the order sent
        finally:
            await verifier.close()

    first, second = asyncio.run(scenario())
    assert first == expected and second == expected[::-1]


def test_requests_reach_the_worker_while_the_loop_is_busy() -> None:
    """Batches sent before the event loop makes a block must all be in the kernel's pipe (the
    loop writes nothing while it makes a block): with a pipe's default 64 KiB, all but the
    first third of one batch waited in the loop's write buffer and the worker sat idle."""
    signer = Identity.generate()
    message = bytes(480)  # about a registration's two signed statements, per check
    check = SignatureCheck(b"", signer.signing_public, signer.sign(message), message)
    batches = [[check] * INTAKE_BATCH for _ in range(4)]  # about 600 KB of requests

    async def scenario() -> tuple[int, int, list[list[bool] | None]]:
        verifier = await SignatureVerifier.start()
        try:
            stdin = verifier._process.stdin
            assert stdin is not None
            answers = [verifier.verify(batch) for batch in batches]
            # No await since the writes: nothing has left the loop but what the pipe took.
            unsent = stdin.transport.get_write_buffer_size()
            pipe = stdin.get_extra_info("pipe")
            size = fcntl.fcntl(pipe.fileno(), fcntl.F_GETPIPE_SZ)
            return unsent, size, [await a for a in answers]
        finally:
            await verifier.close()

    allowed = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    if os.geteuid() != 0 and allowed < verifier_module.REQUESTS_PIPE_BYTES:
        pytest.skip(f"this host lets a process widen a pipe to {allowed} bytes only")
    unsent, size, verdicts = asyncio.run(scenario())
    assert size == verifier_module.REQUESTS_PIPE_BYTES
    assert unsent == 0
    assert verdicts == [[True] * INTAKE_BATCH] * 4


def test_a_careledger_folder_in_the_working_directory_does_not_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m` puts the working directory first on the path: a planted careledger/ there
    (answering "valid" to everything) must not become the code that verifies signatures."""
    worker = tmp_path / "careledger" / "consensus" / "solo"
    worker.mkdir(parents=True)
    for folder in (tmp_path / "careledger", worker.parent, worker):
        (folder / "__init__.py").write_text("")
    (worker / "verify_worker.py").write_text(
        "import struct, sys\n"
        "while len(h := sys.stdin.buffer.read(4)) == 4:\n"
        "    body = sys.stdin.buffer.read(struct.unpack('>I', h)[0])\n"
        "    n = struct.unpack('>I', body[:4])[0]\n"
        "    sys.stdout.buffer.write(struct.pack('>I', n) + bytes([1]) * n)\n"
        "    sys.stdout.buffer.flush()\n"
    )
    monkeypatch.chdir(tmp_path)
    checks = signature_cases()

    async def scenario() -> list[bool] | None:
        verifier = await SignatureVerifier.start()
        try:
            return await verifier.verify(checks)
        finally:
            await verifier.close()

    assert asyncio.run(scenario()) == [True, False, False, False, False, False, False, True]


def run_intake(producer: SoloProducer, txs: list[bytes], before: object = None) -> list[int]:
    """Submit `txs` at once to a running producer (after `before(producer)`); their codes."""

    async def scenario() -> list[int]:
        running = asyncio.create_task(producer.run())
        while producer.verify_ahead and producer.verifier is None:
            await asyncio.sleep(0.01)
        if callable(before):
            await before(producer)
        admitted = await asyncio.gather(*(producer.admit(raw, wait=False) for raw in txs))
        running.cancel()
        await asyncio.wait({running})
        return [a.checked.check_code for a in admitted]

    return asyncio.run(scenario())


def test_a_killed_worker_changes_no_answer(tmp_path: Path) -> None:
    org = Identity.generate()
    txs = mixed_batch(org) * 3  # several batches' worth, replays included
    txs += [register_patient_tx(CHAIN_ID, Identity.generate(), org) for _ in range(INTAKE_BATCH)]
    expected_app = make_app(tmp_path / "expected.sqlite", [org])
    expected = [int(r.code) for r in (expected_app.check_tx(raw) for raw in txs)]
    assert expected.count(Code.OK) > INTAKE_BATCH

    async def kill_the_worker(producer: SoloProducer) -> None:
        assert producer.verifier is not None
        os.kill(producer.verifier.pid, signal.SIGKILL)

    app = make_app(tmp_path / "s.sqlite", [org])
    blocks = BlockStore(tmp_path / "blocks.sqlite")
    producer = SoloProducer(app, blocks, block_interval=60, verify_ahead=True)
    try:
        assert run_intake(producer, txs, before=kill_the_worker) == expected
    finally:
        blocks.close()


def test_batches_verified_by_the_worker_answer_as_check_tx(tmp_path: Path) -> None:
    org = Identity.generate()
    txs = mixed_batch(org) * 30  # 14 transactions each: many batches in flight at once
    expected_app = make_app(tmp_path / "expected.sqlite", [org])
    expected = answers([expected_app.check_tx(raw) for raw in txs])
    app = make_app(tmp_path / "s.sqlite", [org])
    blocks = BlockStore(tmp_path / "blocks.sqlite")
    producer = SoloProducer(app, blocks, block_interval=60, verify_ahead=True)
    checked: list[int] = []
    original = app.check_batch

    def counting(batch):  # type: ignore[no-untyped-def]
        checked.append(sum(batch.valid or []))  # signatures the worker found valid
        return original(batch)

    app.check_batch = counting  # type: ignore[method-assign]
    try:
        codes = run_intake(producer, txs)
    finally:
        blocks.close()
    assert codes == [code for code, _ in expected]
    assert sum(checked) > 0  # the worker did verify them


def test_one_cpu_starts_no_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verifier_module.os, "sched_getaffinity", lambda _: {0})
    org = Identity.generate()
    app = make_app(tmp_path / "s.sqlite", [org])
    blocks = BlockStore(tmp_path / "blocks.sqlite")
    producer = SoloProducer(app, blocks, block_interval=60)
    assert producer.verify_ahead is False
    txs = [register_patient_tx(CHAIN_ID, Identity.generate(), org) for _ in range(20)]
    try:
        assert run_intake(producer, txs) == [Code.OK] * 20
        assert producer.verifier is None
    finally:
        blocks.close()


def verifier_children(pid: int) -> list[int]:
    """The node's child processes running the verify worker."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [c for c in children if b"verify_worker" in Path(f"/proc/{c}/cmdline").read_bytes()]


def gone(pid: int, within: float = 20) -> bool:
    """Whether the process exits (or becomes a zombie nobody waits for) within `within` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the worker needs a second CPU")
@pytest.mark.parametrize("how", ["stop", "kill"])
def test_no_worker_outlives_its_node(tmp_path: Path, how: str) -> None:
    node = NodeProcess(tmp_path / "data", free_port())
    node.start()
    try:
        workers = verifier_children(node.pid)
        assert len(workers) == 1
        (node.stop if how == "stop" else node.kill)()
        assert gone(workers[0])
    finally:
        node.stop()


def run_intake_bounded(
    producer: SoloProducer, txs: list[bytes], before: object, within: float
) -> list[int]:
    """run_intake, but give up (TimeoutError) when some submission is not answered in time."""

    async def scenario() -> list[int]:
        running = asyncio.create_task(producer.run())
        try:
            while producer.verify_ahead and producer.verifier is None:
                await asyncio.sleep(0.01)
            if callable(before):
                await before(producer)
            admitting = asyncio.gather(*(producer.admit(raw, wait=False) for raw in txs))
            admitted = await asyncio.wait_for(admitting, within)
            return [a.checked.check_code for a in admitted]
        finally:
            running.cancel()
            await asyncio.wait({running})

    return asyncio.run(scenario())


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the worker needs a second CPU")
def test_a_hung_worker_does_not_stall_the_intake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that stops answering (stopped, swapped out, stuck) without dying: the intake
    gives up on it and verifies inline, rather than waiting for its answer forever."""
    monkeypatch.setattr(intake_module, "VERDICT_PATIENCE", 0.5)
    org = Identity.generate()
    txs = [register_patient_tx(CHAIN_ID, Identity.generate(), org) for _ in range(3 * INTAKE_BATCH)]
    app = make_app(tmp_path / "s.sqlite", [org])
    blocks = BlockStore(tmp_path / "blocks.sqlite")
    producer = SoloProducer(app, blocks, block_interval=60, verify_ahead=True)
    stopped: list[int] = []

    async def stop_the_worker(producer: SoloProducer) -> None:
        assert producer.verifier is not None
        stopped.append(producer.verifier.pid)
        os.kill(producer.verifier.pid, signal.SIGSTOP)

    try:
        codes = run_intake_bounded(producer, txs, stop_the_worker, within=20)
        assert codes == [Code.OK] * len(txs)
    finally:
        for pid in stopped:  # a stopped worker the node failed to stop: let it go
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        blocks.close()
    assert gone(stopped[0])  # the worker given up on is not left behind either


def test_a_failed_batch_check_answers_every_submission(tmp_path: Path) -> None:
    """When checking a batch fails (a local fault), every submission still gets its answer,
    the batch that failed included: the intake checks them one by one."""
    org = Identity.generate()
    txs = [register_patient_tx(CHAIN_ID, Identity.generate(), org) for _ in range(2 * INTAKE_BATCH)]
    app = make_app(tmp_path / "s.sqlite", [org])
    blocks = BlockStore(tmp_path / "blocks.sqlite")
    producer = SoloProducer(app, blocks, block_interval=60, verify_ahead=False)

    def failing(batch):  # type: ignore[no-untyped-def]
        raise MemoryError("a local fault while checking a batch")

    app.check_batch = failing  # type: ignore[method-assign]
    try:
        codes = run_intake_bounded(producer, txs, None, within=20)
    finally:
        blocks.close()
    assert codes == [Code.OK] * len(txs)


@pytest.mark.parametrize("worker", ["answers", "fails"])
def test_a_batch_split_between_the_loop_and_the_worker_answers_as_check_tx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worker: str
) -> None:
    """The loop verifies a batch's first slices itself while it waits, the worker is sent
    the rest (or fails to answer: check_tx verifies the rest inline): check_tx's answers."""
    monkeypatch.setattr(intake_module, "STEAL_SLICE", 5)
    org = Identity.generate()
    txs = mixed_batch(org) * 2
    one_by_one = make_app(tmp_path / "one.sqlite", [org])
    expected = answers([one_by_one.check_tx(raw) for raw in txs])
    app = make_app(tmp_path / "s.sqlite", [org])
    ahead = intake_module._Ahead([], app.prepare_batch(txs))
    checks = list(ahead.prepared.checks)
    ahead.verify_slice()
    ahead.verify_slice()
    assert ahead.unsent() and len(ahead.rest()) == len(checks) - 10

    async def the_workers_answer() -> None:
        verdicts: asyncio.Future[list[bool] | None] = asyncio.get_running_loop().create_future()
        verdicts.set_result(verify_checks(ahead.rest()) if worker == "answers" else None)
        ahead.verdicts = verdicts

    asyncio.run(the_workers_answer())
    prepared = ahead.settled()
    verified = 10 if worker == "fails" else len(checks)
    assert prepared.checks == checks[:verified]
    assert prepared.valid == verify_checks(checks[:verified])
    assert answers(app.check_batch(prepared)) == expected


def test_a_batch_wholly_verified_on_the_loop_is_settled(tmp_path: Path) -> None:
    org = Identity.generate()
    app = make_app(tmp_path / "s.sqlite", [org])
    ahead = intake_module._Ahead([], app.prepare_batch(mixed_batch(org)))
    while ahead.unsent():
        ahead.verify_slice()
    assert ahead.verdicts is None  # never sent to the worker
    assert ahead.settled().valid == verify_checks(ahead.prepared.checks)
