"""The embedded node of `careledger up`: one process, the solo producer, SQLite, blobs on disk."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from careledger.chain.app import Application
from careledger.chain.store import StateStore
from careledger.consensus.solo.blockstore import BlockStore
from careledger.consensus.solo.producer import SoloProducer
from careledger.node.anchor_guard import AnchorGuard
from careledger.node.api import exception_handlers, node_routes
from careledger.node.blobs import BlobService
from careledger.node.datadir import DataDir
from careledger.node.erasure import BlobEraser, sweep_erased
from careledger.storage.blobstore import BlobStore


class EmbeddedNode:
    def __init__(self, root: Path, *, block_interval: float = 0.25) -> None:
        self.data = DataDir(root)
        if not self.data.exists():
            raise FileNotFoundError(f"{root} has no genesis.json: not a CareLedger data directory")
        self.store = StateStore(self.data.state)
        self.app = Application(self.store)
        self.app.init_chain(self.data.load_genesis())
        self.blocks = BlockStore(self.data.blocks)
        self.producer = SoloProducer(self.app, self.blocks, block_interval=block_interval)
        self.blob_store = BlobStore(self.data.blobs)
        self.blob_store.remove_stale_temporaries()
        self.blob_service = BlobService(self.blob_store, self.producer)
        # Registered before the replay, so blocks replayed after a crash erase their blobs too.
        self.app.on_commit(BlobEraser(self.blob_store).on_commit)
        self.replayed = self.producer.recover()
        sweep_erased(self.blob_store, self.app)

    def close(self) -> None:
        self.blocks.close()
        self.store.close()

    def asgi(self, extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
        """The node API with the block producer running for the app's lifetime."""

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            task = asyncio.create_task(self.producer.run())
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        guarded = AnchorGuard(self.producer, self.blob_store)
        routes = [*node_routes(guarded), *self.blob_service.routes(), *extra_routes]
        return Starlette(routes=routes, exception_handlers=exception_handlers(), lifespan=lifespan)


def serve(app: Starlette, host: str, port: int, producer: SoloProducer | None = None) -> None:
    """Serve until stopped, or until the producer halts on a local fault."""
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    )
    if producer is not None:
        producer.on_halt = lambda: setattr(server, "should_exit", True)
    server.run()
