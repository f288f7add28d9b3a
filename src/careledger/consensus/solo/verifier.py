"""Signatures verified ahead, in a worker process, while the event loop checks transactions.

The solo producer's intake sends each batch's signatures (`PreparedBatch.checks`) here before
it checks the batch; the worker (verify_worker.py) verifies them on the machine's other core
while the event loop checks the batches ahead of it. A process, not a thread: libsodium
releases the GIL, but a verifier thread must take it back after every signature and waits up
to the interpreter's switch interval (5 ms) each time while the loop runs Python (measured:
a thread gave the loop no gain on two cores, a process 0.35 -> 0.235 ms of loop CPU per
registration).

Talking to the worker happens on the event loop itself (asyncio pipes): no thread of this
process touches the GIL for it. The answers only fill the application's signature cache, under
the key each signature verified with; check_tx decides as before. If the worker dies, every
batch it has not answered, and every later one, is verified inline by check_tx (the node
logs it once and goes on).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import struct
import sys
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import careledger
from careledger.chain.auth import SignatureCheck
from careledger.consensus.solo.verify_worker import encode_request

log = logging.getLogger(__name__)

_U32 = struct.Struct(">I")
# The worker's requests wait in its stdin pipe while the event loop makes a block, and the
# loop writes nothing more until the block is done: a pipe's default 64 KiB holds a third of
# one batch (about 200 KB for 256 registrations), so the worker sat idle for most of every
# block and the loop then waited for it (20,000 registrations in process: 5.2-5.6 s -> 3.4-3.7
# s). 1 MiB, Linux's default /proc/sys/fs/pipe-max-size, holds about five batches.
REQUESTS_PIPE_BYTES = 1 << 20
# How long a closing verifier waits for its worker to exit on its own before killing it.
_EXIT_GRACE = 5.0


def _widen_requests_pipe(process: asyncio.subprocess.Process) -> None:
    """Give the worker's stdin pipe REQUESTS_PIPE_BYTES (Linux; elsewhere, or if refused, the
    default stays: slower, the same answers)."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    pipe = process.stdin.get_extra_info("pipe") if process.stdin is not None else None
    if set_size is None or pipe is None:
        return
    try:
        fcntl.fcntl(pipe.fileno(), set_size, REQUESTS_PIPE_BYTES)
    except OSError as error:  # above /proc/sys/fs/pipe-max-size, or the pipe is gone
        log.warning("the signature verifier's request pipe keeps its default size (%s)", error)


def worth_a_process() -> bool:
    """Whether this machine has a second core for the worker (with one, it would only take
    turns with the event loop, and the hand-off costs)."""
    usable = getattr(os, "sched_getaffinity", None)  # Linux: the CPUs this process may use
    return (len(usable(0)) if usable else os.cpu_count() or 1) >= 2


class SignatureVerifier:
    """A worker process verifying batches of signatures, answered in the order sent."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._waiting: deque[asyncio.Future[list[bool] | None]] = deque()
        self._alive = True
        self._reader = asyncio.create_task(self._read_answers(), name="signature verifier")

    @classmethod
    async def start(cls) -> SignatureVerifier:
        """Start the worker: the same interpreter and the same careledger code as this
        process (the verification is a consensus rule)."""
        source = str(Path(careledger.__file__).resolve().parent.parent)
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": source + (os.pathsep + path if path else "")}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",  # not the working directory first: a careledger/ there would verify instead
            "-m",
            "careledger.consensus.solo.verify_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        _widen_requests_pipe(process)
        return cls(process)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._alive

    def verify(self, checks: Sequence[SignatureCheck]) -> asyncio.Future[list[bool] | None]:
        """Send a batch; the future gives one verdict per check, or None when the worker could
        not answer (verify inline then). Never raises."""
        answer: asyncio.Future[list[bool] | None] = asyncio.get_running_loop().create_future()
        stdin = self._process.stdin
        if not checks or not self._alive or stdin is None or stdin.is_closing():
            answer.set_result([] if not checks and self._alive else None)
            return answer
        try:
            stdin.write(encode_request([(c.public_key, c.signature, c.message) for c in checks]))
        except (OSError, RuntimeError) as error:  # the pipe is gone: the reader says so too
            self._died(f"writing to it failed ({error})")
            answer.set_result(None)
            return answer
        self._waiting.append(answer)
        return answer

    async def _read_answers(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        try:
            while True:
                (count,) = _U32.unpack(await stdout.readexactly(4))
                verdicts = await stdout.readexactly(count)
                if not self._waiting:
                    raise ValueError("an answer to no request")
                answer = self._waiting.popleft()
                if not answer.done():
                    answer.set_result([v == 1 for v in verdicts])
        except asyncio.CancelledError:
            self._died(None)
            raise
        except (asyncio.IncompleteReadError, OSError, ValueError) as error:
            self._died(f"it stopped answering ({type(error).__name__})")

    def give_up(self, why: str) -> None:
        """Stop using a worker that is alive but does not answer: every batch it has not
        answered, and every later one, is verified inline; the process is killed (close
        still reaps it)."""
        self._died(why)
        self._kill()

    def _died(self, why: str | None) -> None:
        if self._alive and why is not None:
            log.error(
                "the signature verifier process (pid %d) failed: %s; verifying inline from now on",
                self._process.pid,
                why,
            )
        self._alive = False
        while self._waiting:
            answer = self._waiting.popleft()
            if not answer.done():
                answer.set_result(None)

    async def close(self) -> None:
        """Stop the worker and wait for it to exit (no process outlives the node)."""
        self._alive = False
        stdin = self._process.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()  # the worker exits at the end of its input
        try:
            await asyncio.wait_for(self._process.wait(), _EXIT_GRACE)
        except TimeoutError:
            self._kill()
            await self._process.wait()
        except BaseException:  # cancelled while closing: do not leave the worker running
            self._kill()
            raise
        finally:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._died(None)

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
