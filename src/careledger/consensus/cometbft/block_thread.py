"""The ABCI server's block thread: FinalizeBlock run off the event loop, one block at a time.

A block of thousands of transactions takes a few hundred milliseconds; on the loop, the
mempool connection's socket filled behind it and CometBFT's client spun (server.py,
READ_AHEAD_BYTES). In this thread the loop stays free to read every connection meanwhile,
while nothing else reaches the application: each connection waits (`idle`) before its next
request, so the application still sees one ABCI call at a time, in the order the loop takes
them. (The driver's own `info()` reads for the node's status may run meanwhile: they read only
what the last commit wrote, which a block in progress does not change.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class BlockThread:
    """The one thread FinalizeBlock runs in; while it does, `_block` is its future."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="abci-block")
        self._block: asyncio.Future[bytes] | None = None

    @property
    def running(self) -> bool:
        """Whether a block runs (until it is over, even if its waiter was cancelled)."""
        return self._block is not None

    async def idle(self) -> None:
        """Return once no block runs. Again after each wait: by the time the waiting
        connection runs, the consensus connection may have started the next block."""
        while self._block is not None:
            await asyncio.wait([self._block])

    async def run(self, respond: Callable[[Any], bytes], request: Any) -> bytes:
        """respond(request) in the thread; the event loop reads the sockets meanwhile."""
        loop = asyncio.get_running_loop()
        block = loop.run_in_executor(self._thread, respond, request)
        self._block = block
        # Cleared when the block is over, not when this wait ends: cancelled (the server
        # closing), the thread still runs the block, and nothing may reach the app meanwhile.
        block.add_done_callback(self._over)
        await asyncio.wait([block])
        return block.result()

    def _over(self, block: asyncio.Future[bytes]) -> None:
        if self._block is block:
            self._block = None

    async def close(self) -> None:
        """Wait for a block still running (its connection gone or cancelled) to end."""
        await asyncio.to_thread(self._thread.shutdown, True)
