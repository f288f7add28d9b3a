"""One function builds a node, whichever consensus driver makes its blocks: `build_node`.

A node is, under either driver:
- the state store and the Application (the chain's rules);
- the consensus driver: `Solo` (this process makes the blocks: `careledger up`) or `CometBft`
  (CometBFT, a process of its own, drives this one over the ABCI socket:
  `python -m careledger.node.network`);
- the pre-submit pipeline (`node/pipeline.py`) in front of the driver, with the records
  module's checks;
- the blob store, the blob routes with the consent guard that decides every blob read
  (`node/consent_guard.py`), the eraser and, when the node has peers, the replicator;
- the audit (`node/audit/`): the journal every read decision is written to before the read
  is served, and the batcher that commits them on chain (when the node has its own key);
- the break-glass share release (`node/break_glass.py`), with the organisation's key file;
- the commit listeners, registered before any block can be replayed into the state, so that a
  replayed block erases and fetches blobs exactly as a live one does;
- the start-up sweeps;
- the ASGI app (`node/api.py`) whose lifespan runs the driver (the producer's task, or the ABCI
  server), the eraser's sweeps and retries, the replicator and the audit batcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from careledger.chain.app import Application, CommitListener
from careledger.chain.store import StateStore
from careledger.consensus.cometbft.driver import CometDriver
from careledger.consensus.cometbft.handler import AbciHandler
from careledger.consensus.cometbft.rpc import CometRpc
from careledger.consensus.cometbft.server import AbciServer, Recorder
from careledger.consensus.solo.blockstore import BlockStore
from careledger.consensus.solo.producer import SoloProducer
from careledger.crypto.keyfile import KeyFile
from careledger.node.anchor_guard import register_records_checks
from careledger.node.api import create_node_api
from careledger.node.audit import NodeAudit, node_audit, not_batching
from careledger.node.blobs import BlobService
from careledger.node.break_glass import ShareRelease
from careledger.node.consent_guard import ConsentGuard
from careledger.node.datadir import DataDir
from careledger.node.erasure import BlobEraser, sweep_erased
from careledger.node.pipeline import CheckedDriver, SubmitPipeline
from careledger.node.replay_cache import ReplayCache
from careledger.node.replication import BlobReplicator
from careledger.node.rules import supported_rules_versions
from careledger.node.server import NodeServer, ServerControl
from careledger.node.tls import TlsSettings
from careledger.storage.blobstore import BlobStore

log = logging.getLogger(__name__)
GRACEFUL_SHUTDOWN = 5  # seconds

D = TypeVar("D", SoloProducer, CometDriver)
Running = Callable[[], AbstractAsyncContextManager[None]]


@dataclass(frozen=True)
class Solo:
    """The embedded driver: this process makes a block every `block_interval` seconds."""

    block_interval: float = 0.25


@dataclass(frozen=True)
class CometBft:
    """The network driver: CometBFT connects to `abci_address`; its RPC is at `rpc_url`."""

    abci_address: str
    rpc_url: str
    recorder: Recorder | None = None  # every ABCI frame, for test vectors


@dataclass(eq=False)
class Node(Generic[D]):
    data: DataDir
    store: StateStore
    app: Application
    consensus: D  # the driver itself: SoloProducer or CometDriver
    driver: CheckedDriver  # what the API submits to: the pipeline, then `consensus`
    pipeline: SubmitPipeline
    blob_store: BlobStore
    blob_service: BlobService
    eraser: BlobEraser
    replicator: BlobReplicator | None
    replayed: int  # stored blocks replayed into the state at start (solo)
    audit: NodeAudit  # the read journal and the batcher
    _running: Running = field(repr=False)
    _close_consensus: Callable[[], None] = field(repr=False)
    _halts: Halts = field(repr=False)

    @property
    def consent_guard(self) -> ConsentGuard:
        """The read interceptor: `consent_guard.observers` hear every read decision."""
        return self.blob_service.guard

    def halted(self) -> BaseException | None:
        """The local fault the driver stopped on (the node must not go on), or None."""
        return self._halts.fault()

    def on_halt(self, stop: Callable[[], None]) -> None:
        """Call `stop` (e.g. end the HTTP server) when the driver halts on a local fault."""
        self._halts.notify(stop)

    def asgi(
        self, extra_routes: Sequence[BaseRoute] = (), replay: ReplayCache | None = None
    ) -> Starlette:
        """The node API; serving it runs the driver and the replicator for its lifetime.
        `replay`: a replay cache of other bounds than the default (tests)."""
        # The break-glass share release signs nothing: it needs the organisation's key only
        # to open its shares.
        shares: ShareRelease = ShareRelease(self.driver, _organisation_key(self.data))
        routes = [
            *self.blob_service.routes(),
            *shares.routes(),
            *self.audit.routes(),
            *extra_routes,
        ]
        replicator = self.replicator
        return create_node_api(
            self.driver,
            self.data,
            routes,
            lifespan=self._lifespan,
            replay=replay,
            status_extra=None if replicator is None else replicator.status,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, _: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as running:
            await running.enter_async_context(self._running())
            await running.enter_async_context(_background("eraser", self.eraser.run))
            if self.replicator is not None:
                await running.enter_async_context(_background("replicator", self.replicator.run))
            batcher = self.audit.batcher
            await running.enter_async_context(
                _background("audit batcher", batcher.run)
                if batcher is not None
                else not_batching(self.audit.why_not_batching)
            )
            yield

    def close(self) -> None:
        self._close_consensus()
        self.audit.close()
        self.store.close()
        self.blob_store.close()


# A node keeps tens of thousands of long-lived objects in its caches (decoded transactions,
# committed state, verified signatures): never garbage, yet every full pass of CPython's
# cyclic collector walks them all again, and with the default thresholds (700, 10, 10) a
# busy node ran one every ~3,000 transactions. Larger young generations make full passes
# rare: 10% less CPU per registration (BENCHMARKS.md, "Issue 7: the last line").
COLLECTOR_THRESHOLDS = (50_000, 50, 100)


@overload
def build_node(
    root: Path,
    consensus: Solo,
    *,
    peers: Sequence[str] = (),
    audit_interval: float | None = None,
    tls: TlsSettings | None = None,
) -> Node[SoloProducer]: ...


@overload
def build_node(
    root: Path,
    consensus: CometBft,
    *,
    peers: Sequence[str] = (),
    audit_interval: float | None = None,
    tls: TlsSettings | None = None,
) -> Node[CometDriver]: ...


def build_node(
    root: Path,
    consensus: Solo | CometBft,
    *,
    peers: Sequence[str] = (),
    audit_interval: float | None = None,
    tls: TlsSettings | None = None,
) -> Node[Any]:
    """The node of data directory `root` under this driver; `peers` are other nodes' API URLs
    to fetch anchored blobs from (a node without peers does not replicate); `audit_interval`
    the seconds between audit batches (None: CARELEDGER_AUDIT_INTERVAL or 0.25; 0: none);
    `tls`: what the replication client verifies peers with (node/tls.py).

    Raises FileNotFoundError for a directory without genesis.json, IncompatibleState for
    a state written under other rules and TlsConfigError for TLS settings that do not load or
    an http:// peer when TLS is required.
    """
    tls = tls or TlsSettings()
    tls.check(peers)  # before anything is opened
    gc.set_threshold(*COLLECTOR_THRESHOLDS)  # every node process builds its node here
    data = DataDir(root)
    if not data.exists():
        raise FileNotFoundError(f"{root} has no genesis.json: not a CareLedger data directory")
    store = StateStore(data.state)
    try:
        return _assemble(data, store, consensus, peers, audit_interval, tls)
    except BaseException:
        store.close()
        raise


def serve(
    node: Node[Any],
    host: str,
    port: int,
    beside: Callable[[ASGIApp], ASGIApp] | None = None,
    supervise: Callable[[ServerControl], None] | None = None,
    *,
    tls: TlsSettings | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM, or until the driver halts on a local fault. The
    lifespan is required: without it nothing would make blocks, so a failure to start (say,
    the ABCI socket) ends the process. `beside`: what serves other apps beside the node API
    in the same server (the FHIR gateway and the portal: careledger/site.py `compose`).
    `supervise`: given the server's control before it starts (`careledger node start`
    runs and watches its CometBFT process with it: node/server.py). `tls` with a
    certificate: HTTPS only, TLS 1.2 or newer (node/tls.py)."""
    app: ASGIApp = node.asgi()
    if beside is not None:
        app = beside(app)
    https: dict[str, Any] = {}
    if tls is not None and tls.serves_https:
        context = tls.server_context()  # loaded here: a bad file fails before serving
        https = {"ssl_context_factory": lambda *_: context}
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        # A stopping node waits this long for open requests, no longer: an idle TLS
        # connection a peer keeps in its pool would otherwise hold the shutdown up to
        # the transport's own SSL shutdown timeout (30 s).
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        **https,
    )
    server = NodeServer(config)
    node.on_halt(server.control.stop)
    if supervise is not None:
        supervise(server.control)
    server.run_until_stopped()


# --- assembly ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Halts:
    """How a driver reports that it stopped on a local fault (chain/app.py LocalFault)."""

    fault: Callable[[], BaseException | None]
    notify: Callable[[Callable[[], None]], None]


@dataclass
class _Consensus(Generic[D]):
    """What differs between the drivers."""

    driver: D
    listeners: list[CommitListener]  # the driver's own commit listeners
    catch_up: Callable[[], int]  # replay stored blocks the state lacks; how many
    running: Running
    close: Callable[[], None]
    halts: Halts


def _assemble(
    data: DataDir,
    store: StateStore,
    spec: Solo | CometBft,
    peers: Sequence[str],
    audit_interval: float | None,
    tls: TlsSettings,
) -> Node[Any]:
    app = Application(store, supported_versions=supported_rules_versions())
    consensus = _solo(app, data, spec) if isinstance(spec, Solo) else _cometbft(app, spec)
    blob_store = BlobStore(data.blobs)
    eraser = BlobEraser(blob_store, app.query)
    replicator = None
    if peers:
        organisation = KeyFile.load(data.organisation_key)
        replicator = BlobReplicator(
            blob_store, peers, organisation, eraser, verify=tls.client_context()
        )
    pipeline = SubmitPipeline()
    register_records_checks(pipeline, blob_store)
    driver = CheckedDriver(consensus.driver, pipeline)
    guard = ConsentGuard(driver)  # every blob read is decided there
    chain_id = data.load_genesis().chain_id
    audit = node_audit(data.root, data.node_key, chain_id, driver, audit_interval)
    guard.auditor = audit.observer  # ...and journaled before it is served
    blob_service = BlobService(
        blob_store,
        driver,
        on_missing=replicator.want if replicator else _no_peers,
        guard=guard,
    )
    listeners = [*consensus.listeners, eraser.on_commit]
    if replicator is not None:
        listeners.append(replicator.on_commit)
    for listener in listeners:
        app.on_commit(listener)
    try:
        replayed = _start_up(app, blob_store, consensus.catch_up)
    except BaseException:
        audit.close()
        raise
    return Node(
        data,
        store,
        app,
        consensus.driver,
        driver,
        pipeline,
        blob_store,
        blob_service,
        eraser,
        replicator,
        replayed,
        audit,
        consensus.running,
        consensus.close,
        consensus.halts,
    )


def _start_up(app: Application, blob_store: BlobStore, catch_up: Callable[[], int]) -> int:
    """The sweeps before a node serves, after a clean stop or a crash; returns blocks replayed.

    Listeners are registered by now, so replayed blocks erase and fetch blobs like live ones.
    """
    blob_store.remove_stale_temporaries()  # writes that a crash interrupted
    replayed = catch_up()  # solo; CometBFT replays its blocks by the ABCI handshake instead
    sweep_erased(blob_store, app)  # erasures whose listener a crash skipped
    # Orphans expire in the eraser's own sweep, which runs at start and every interval.
    return replayed


def _solo(app: Application, data: DataDir, spec: Solo) -> _Consensus[SoloProducer]:
    # Solo reads its genesis here; under CometBFT the same genesis arrives by InitChain.
    app.init_chain(data.load_genesis())
    blocks = BlockStore(data.blocks)
    producer = SoloProducer(app, blocks, block_interval=spec.block_interval)

    def running() -> AbstractAsyncContextManager[None]:
        return _background("block producer", producer.run)

    halts = Halts(lambda: producer.halted, lambda stop: setattr(producer, "on_halt", stop))
    return _Consensus(producer, [], producer.recover, running, blocks.close, halts)


def _cometbft(app: Application, spec: CometBft) -> _Consensus[CometDriver]:
    rpc = CometRpc(spec.rpc_url)
    driver = CometDriver(app, rpc)
    server = AbciServer(AbciHandler(app), spec.recorder)

    @contextlib.asynccontextmanager
    async def running() -> AsyncIterator[None]:
        await server.start(spec.abci_address)
        try:
            yield
        finally:
            await server.close()
            await rpc.close()

    halts = Halts(lambda: server.handler.halted, lambda stop: setattr(server, "on_halt", stop))
    return _Consensus(driver, [driver.on_commit], lambda: 0, running, lambda: None, halts)


def _organisation_key(data: DataDir) -> KeyFile | None:
    """The organisation key file of the node's data directory, if it has one."""
    return KeyFile.load(data.organisation_key) if data.organisation_key.exists() else None


def _no_peers(digest: str) -> None:
    """A node without peers has no one to fetch a missing blob from."""


@contextlib.asynccontextmanager
async def _background(
    name: str, work: Callable[[], Coroutine[Any, Any, None]]
) -> AsyncIterator[None]:
    """Run `work` as a task while the context is open; cancel it on the way out."""
    task = asyncio.create_task(work(), name=name)
    task.add_done_callback(_report_failure)
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait({task})  # a failure was reported when it happened


def _report_failure(task: asyncio.Task[None]) -> None:
    # Said when it happens, not at shutdown: a node whose producer died makes no more blocks.
    if not task.cancelled() and task.exception() is not None:
        log.critical("the %s stopped", task.get_name(), exc_info=task.exception())
