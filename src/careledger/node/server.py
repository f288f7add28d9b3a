"""The HTTP server a node runs under: uvicorn, with two things a node process needs.

- `ServerControl`: who runs beside the server (`careledger node start`'s CometBFT child) can
  stop it, and can take the first SIGTERM or SIGINT to stop itself first (CometBFT stops
  before the application it talks to); a second signal stops the server at once.
- uvicorn stops gracefully on a signal, then raises the signal again under the handler it
  found, which by default kills the process before the caller's clean-up (close the state
  store, stop CometBFT) runs. `run` puts a handler in place that lets serving simply return.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn

log = logging.getLogger(__name__)


class ServerControl:
    def __init__(self, server: NodeServer) -> None:
        self._server = server
        self.on_signal: Callable[[], None] | None = None  # takes over the first signal

    def stop(self) -> None:
        self._server.should_exit = True

    @property
    def stopping(self) -> bool:
        return bool(self._server.should_exit)


class NodeServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.control = ServerControl(self)
        self._signalled = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        take_over = self.control.on_signal
        if take_over is not None and not self._signalled:
            self._signalled = True
            log.info("%s: stopping what runs beside the server first", signal.Signals(sig).name)
            take_over()
            return
        super().handle_exit(sig, frame)

    def run_until_stopped(self) -> None:
        with _signals_end_the_server_only():
            self.run()


@contextlib.contextmanager
def _signals_end_the_server_only() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _noted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _noted(signum: int, frame: FrameType | None) -> None:
    log.info("%s: the server has stopped", signal.Signals(signum).name)
