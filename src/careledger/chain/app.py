"""The CareLedger application: a deterministic state machine with an ABCI-shaped interface.

Both consensus drivers (the solo producer and the CometBFT ABCI server) drive this one object
through info, init_chain, check_tx, finalize_block, commit and query. It reads no clock and no
randomness: block height and time come from the driver.

A transaction that breaks a rule fails with a result code (TxFailure), the same on every
validator. Anything else raised while executing or committing a block (a disk error, memory
exhausted, a bug) is a local fault: committing it as a result would give this node an app
hash the others do not compute, so it raises LocalFault instead and the driver stops the node.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from careledger.chain import auth
from careledger.chain.apphash import changes_hash, next_app_hash
from careledger.chain.block import parse_time_ns
from careledger.chain.codes import Code, TxFailure
from careledger.chain.genesis import Genesis
from careledger.chain.modules.audit import audit_module
from careledger.chain.modules.base import (
    Event,
    Message,
    Module,
    Payload,
    TxContext,
    ValidatorUpdate,
)
from careledger.chain.modules.consent import consent_module
from careledger.chain.modules.identity import identity_module
from careledger.chain.modules.identity.vouchers import SELF_REGISTRATIONS
from careledger.chain.modules.records import records_module
from careledger.chain.modules.upgrade import MODULE as UPGRADE
from careledger.chain.modules.upgrade import Plan, UpgradeKeeper, upgrade_module
from careledger.chain.modules.upgrade import handler as upgrade
from careledger.chain.state import KV, Overlay, Readable
from careledger.chain.store import LastCommit, StateStore
from careledger.chain.tx import SignedTx, decode_tx, tx_hash

log = logging.getLogger(__name__)

DEFAULT_MODULES: tuple[Module, ...] = (
    identity_module,
    records_module,
    consent_module,
    audit_module,
    upgrade_module,
)

# The version of the rules. Any change to what a transaction does (including the layout of a
# state value) changes what a replay computes, so it bumps this: a store written under other
# rules is refused at start rather than diverging from its own history.
# Version 2: a nonce may jump at most MAX_NONCE_JUMP (NONCE_TOO_FAR); a handler's local fault
# halts the node instead of committing INTERNAL; JSON deeper than 32 levels is MALFORMED;
# only registered identities that may act send transactions (UNKNOWN_SENDER); patients and
# applicants register with a member's one-time voucher, practitioners with their consent;
# identities keep their key history; a signing key belongs to one identity for ever; a
# removal needs two approving members; only the patient or the organisation that wrote a
# record's version 1 add versions and tombstones.
# Version 3: the consent module (grants, revocations, key wraps); a new record of a patient
# needs the patient's write consent (NO_CONSENT); scope keys are signed by the patient; an
# anchor names exactly one scope key, and a record keeps its scope; version 1 is never a
# tombstone; rotate_key carries a certificate (old key) and a proof (new key).
# Version 4: node identities (kind "node", acting for their organisation while it is a
# member; founders' nodes registered at genesis, later ones with identity/register_node);
# the audit module (audit/record_batch: access entries batched and signed by the serving
# node, the patient's access log, alerts); TxContext carries the transaction's hash and index.
# Version 5: records/anchor_batch (up to 100 anchors of one author, each checked as a
# records/anchor is, all or nothing).
# Version 6: the upgrade module (upgrade/propose, approve, cancel: a planned upgrade agreed by
# two thirds of the members); the state records the chain's active rules version
# (`upgrade/version`, written at genesis); at a scheduled plan's height the block starts by
# switching to the plan's version, or the node stops before executing it (UpgradeRequired).
# tests/test_golden.py pins this version's app hashes.
STATE_MACHINE_VERSION = 6

# The rules versions this software can execute. Software that brings new rules keeps the
# old ones beside them (it replays the chain's history) and lists both here; the chain
# switches from one to the next at a planned upgrade's height (chain/modules/upgrade).
SUPPORTED_RULES_VERSIONS: frozenset[int] = frozenset({STATE_MACHINE_VERSION})


class IncompatibleState(RuntimeError):
    """A state store written by a different version of the rules."""


class LocalFault(RuntimeError):
    """Executing or committing a block failed for a reason that is not a rule of the chain.

    The block is not committed. The node must stop (the drivers do) and be restarted once
    the cause is fixed; the block is then executed again from the block store.
    """


class UpgradeRequired(LocalFault):
    """The chain switches to rules this software does not support at the next block.

    Raised before the block's first transaction (finalize_block) and at start while the
    store waits at that height: nothing of the block is executed or committed, so this node
    never computes an app hash under the old rules where the chain runs the new ones. The
    drivers stop the node as for any local fault; it goes on once restarted with software
    that supports the plan's version.
    """

    def __init__(self, plan: Plan, supported: Collection[int]) -> None:
        runs = ", ".join(str(v) for v in sorted(supported))
        super().__init__(
            f"upgrade plan {plan.name!r} switches the chain to rules version {plan.version} at"
            f" height {plan.height}; this software runs rules version {runs}. The node stops"
            f" before executing block {plan.height} (nothing of it is executed or committed):"
            f" install software that supports rules version {plan.version} and start the node"
            " again (docs/operations.md, section 6)"
        )
        self.plan = plan


@dataclass(frozen=True)
class TxResult:
    code: int
    log: str = ""
    data: bytes = b""
    events: tuple[Event, ...] = ()

    @property
    def ok(self) -> bool:
        return self.code == Code.OK


@dataclass(frozen=True)
class BlockContext:
    height: int
    time_ns: int


@dataclass(frozen=True)
class FinalizeResult:
    tx_results: list[TxResult]
    validator_updates: list[ValidatorUpdate]
    app_hash: bytes


@dataclass(frozen=True)
class AppInfo:
    last_height: int
    last_app_hash: bytes
    chain_id: str


@dataclass(frozen=True)
class QueryResult:
    code: int
    log: str = ""
    value: bytes = b""
    height: int = 0


@dataclass(frozen=True)
class CommittedBlock:
    """What a commit listener is told: the block's transactions and each one's result."""

    height: int
    time_ns: int
    txs: list[bytes]
    tx_results: list[TxResult]


CommitListener = Callable[[CommittedBlock], None]


@dataclass
class _PendingBlock:
    height: int
    app_hash: bytes
    changes_hash: bytes
    state: Overlay
    block: CommittedBlock


class DecodeCache:
    """Transactions admitted by check_tx, decoded, kept for the block that will carry them.

    The bytes are the key, so a block's copy is decoded from the very bytes it holds. Only
    admitted transactions are kept (a flood of well-formed but unsigned bodies costs nothing
    here), the block takes its own out, and the cache is bounded by bytes as well as by
    entries: each entry is charged four times its wire size (the bytes, the body slice and
    the decoded JSON objects: 3.5 times for a 52 KB payload of short strings, measured with
    tracemalloc; admitted payloads follow their message's schema) plus ENTRY_OVERHEAD.
    """

    ENTRY_OVERHEAD = 1024

    def __init__(self, max_entries: int = 100_000, max_bytes: int = 32 * 1024 * 1024) -> None:
        self._by_raw: OrderedDict[bytes, SignedTx] = OrderedDict()
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._by_raw)

    def get(self, raw: bytes) -> SignedTx:
        """The cached decoding, or a fresh one (TxFailure for bytes that are not a tx)."""
        found = self._by_raw.get(raw)
        return found if found is not None else decode_tx(raw)

    def keep(self, raw: bytes, stx: SignedTx) -> None:
        if raw in self._by_raw:
            return
        self._by_raw[raw] = stx
        self.bytes += self._cost(raw)
        while len(self._by_raw) > self.max_entries or self.bytes > self.max_bytes:
            evicted, _ = self._by_raw.popitem(last=False)
            self.bytes -= self._cost(evicted)

    def pop(self, raw: bytes) -> SignedTx:
        found = self._by_raw.pop(raw, None)
        if found is None:
            return decode_tx(raw)
        self.bytes -= self._cost(raw)
        return found

    def _cost(self, raw: bytes) -> int:
        return 4 * len(raw) + self.ENTRY_OVERHEAD


class Application:
    def __init__(
        self,
        store: StateStore,
        modules: Sequence[Module] = DEFAULT_MODULES,
        supported_versions: Collection[int] = SUPPORTED_RULES_VERSIONS,
    ) -> None:
        """`supported_versions`: the rules versions this process executes (the node passes
        node/rules.py `supported_rules_versions()`, which only a test hook extends)."""
        self.store = store
        self.supported_versions = frozenset(supported_versions)
        self._modules = {m.name: m for m in modules}
        self._signatures = auth.SignatureCache()
        self._decoded = DecodeCache()
        self._check_state = Overlay(store)  # mempool view: committed state + accepted txs
        self._pending: _PendingBlock | None = None
        self._chain_id = ""
        self._listeners: list[CommitListener] = []
        self._check_rules_version()

    def _check_rules_version(self) -> None:
        """Refuse a store this software cannot carry on: begun under rules it does not
        replay, now running rules it does not support, or stopped at a planned upgrade to
        such rules (UpgradeRequired: the old software restarted refuses again)."""
        if self.store.app_hash_at(0) is None:
            return  # a fresh store: init_chain records the version
        found = self.store.get_meta("state_machine_version")
        if found not in {str(v) for v in self.supported_versions}:
            raise IncompatibleState(
                f"{self.store.path} was written under state machine version {found or 'unknown'}"
                f", this code runs version {STATE_MACHINE_VERSION}: start a new chain (a new"
                " data directory) or migrate this one"
            )
        active = self.rules_version
        if active not in self.supported_versions:
            raise IncompatibleState(
                f"{self.store.path}: the chain runs rules version {active} (upgrade history:"
                f" query upgrade/history), this software runs version"
                f" {', '.join(map(str, sorted(self.supported_versions)))}: install software"
                " that supports it"
            )
        plan = UpgradeKeeper(KV(self.store, UPGRADE)).scheduled()
        next_height = self.store.last_commit().height + 1
        if plan is not None and plan.height <= next_height and not self._supports(plan):
            self._refuse(plan)

    @property
    def rules_version(self) -> int:
        """The chain's active rules version, as of the last commit (of a fresh store, the
        version init_chain will record)."""
        found = upgrade.active_version(KV(self.store, UPGRADE))
        if found is None and self.store.app_hash_at(0) is None:
            return STATE_MACHINE_VERSION
        if found is None:
            raise IncompatibleState(f"{self.store.path} records no rules version")
        return found

    def _supports(self, plan: Plan) -> bool:
        return plan.version in self.supported_versions

    def _refuse(self, plan: Plan) -> None:
        """Stop here: the next block runs rules this software does not have."""
        required = UpgradeRequired(plan, self.supported_versions)
        log.critical("%s", required)
        raise required

    def on_commit(self, listener: CommitListener) -> None:
        """Call `listener` after each commit, outside the state machine.

        This is how a node acts on what the chain decided (fetching or erasing blobs), under
        either driver. Listeners must not raise; what they do never changes the state.
        """
        self._listeners.append(listener)

    # --- ABCI: info and genesis -----------------------------------------------------------

    @property
    def chain_id(self) -> str:
        if not self._chain_id:
            self._chain_id = self.store.get_meta("chain_id") or ""
        return self._chain_id

    def info(self) -> AppInfo:
        last = self.store.last_commit()
        return AppInfo(last.height, last.app_hash, self.chain_id)

    def init_chain(self, genesis: Genesis) -> bytes:
        """Write the genesis state as height 0; again with the same genesis, a no-op."""
        existing = self.store.app_hash_at(0)
        if existing is not None:
            if self.chain_id != genesis.chain_id:
                raise ValueError(f"store belongs to chain {self.chain_id!r}")
            return existing
        state = Overlay(self.store)
        ctx = TxContext(state, sender="", height=0, time_ns=parse_time_ns(genesis.genesis_time))
        for module in self._modules.values():
            module.init_genesis(ctx, genesis)
        upgrade.record_version(KV(state, UPGRADE), STATE_MACHINE_VERSION)
        digest = changes_hash(state.changes)
        app_hash = next_app_hash(b"", digest)
        meta = {
            "chain_id": genesis.chain_id,
            "genesis": genesis.to_json().decode(),
            "state_machine_version": str(STATE_MACHINE_VERSION),
        }
        self.store.commit(0, app_hash, digest, state.changes, meta)
        self._check_state = Overlay(self.store)
        return app_hash

    # --- ABCI: mempool --------------------------------------------------------------------

    def check_tx(self, raw: bytes, *, recheck: bool = False) -> TxResult:
        """Admit a transaction to the mempool: well-formed, signed, fresh nonce, valid payload.

        `recheck`: the transaction was admitted before and a block has committed since (the
        drivers re-check what still waits, CometBFT with CheckTx of type RECHECK): only what
        a committed block can change needs checking again.

        Never raises: any bytes get a code. A local fault here (the mempool is each node's
        own) refuses the transaction with INTERNAL and leaves the state as it was.
        """
        try:
            stx = self._decoded.get(raw)
            message, parsed = self._validate(stx)
            height = self.store.last_commit().height + 1
            auth.authenticate(self._check_state, stx, self._signatures, height)
            view = Overlay(self._check_state)
            auth.spend_nonce(KV(view, auth.MODULE), stx.tx.sender, stx.tx.nonce)
            if stx.tx.type in SELF_REGISTRATIONS:
                # The mempool view takes the registration itself, so that the new identity's
                # next transactions (its scope keys, a clinic's first anchors) are admitted
                # behind it, and a second use of its voucher is refused here already.
                ctx = TxContext(view, stx.tx.sender, height, 0, chain_id=self.chain_id)
                message.handle(ctx, parsed)
            view.write_into(self._check_state)
        except TxFailure as failure:
            return TxResult(failure.code, failure.log)
        except Exception:
            log.exception("check_tx of %s failed with a local fault", tx_hash(raw).hex())
            return TxResult(Code.INTERNAL, "the node could not check the transaction")
        self._decoded.keep(raw, stx)
        return TxResult(Code.OK)

    # --- ABCI: blocks ---------------------------------------------------------------------

    def finalize_block(self, ctx: BlockContext, txs: Sequence[bytes]) -> FinalizeResult:
        """Execute a block's transactions in order.

        A transaction that breaks a rule fails with its code; the block goes on. Anything else
        raises LocalFault, with nothing pending: the node must stop, not commit.
        """
        self._pending = None
        block_state = Overlay(self.store)
        try:
            self._switch_rules(block_state, ctx.height)
        except UpgradeRequired:
            raise
        except Exception as exc:
            raise _local_fault(f"block {ctx.height}, the upgrade switch", exc) from exc
        results: list[TxResult] = []
        updates: list[ValidatorUpdate] = []
        for index, raw in enumerate(txs):
            try:
                result, tx_updates = self._deliver(block_state, ctx, raw, index)
            except Exception as exc:
                where = f"block {ctx.height}, transaction {tx_hash(raw).hex()}"
                raise _local_fault(where, exc) from exc
            results.append(result)
            updates.extend(tx_updates)
        try:
            digest = changes_hash(block_state.changes)
            previous = self.store.last_commit().app_hash
        except Exception as exc:
            raise _local_fault(f"block {ctx.height}", exc) from exc
        app_hash = next_app_hash(previous, digest)
        committed = CommittedBlock(ctx.height, ctx.time_ns, list(txs), results)
        self._pending = _PendingBlock(ctx.height, app_hash, digest, block_state, committed)
        return FinalizeResult(results, updates, app_hash)

    def commit(self) -> None:
        """Persist the last finalized block atomically and reset the mempool view.

        LocalFault when the store cannot write it (nothing is written: the store rolls back).
        """
        pending, self._pending = self._pending, None
        if pending is None:
            raise RuntimeError("commit without finalize_block")
        try:
            self.store.commit(
                pending.height, pending.app_hash, pending.changes_hash, pending.state.changes
            )
        except Exception as exc:
            raise _local_fault(f"commit of block {pending.height}", exc) from exc
        self._check_state = Overlay(self.store)
        for listener in self._listeners:
            try:
                listener(pending.block)
            except Exception:  # a node-side reaction must never stop the chain
                log.exception("commit listener failed at height %d", pending.height)

    def _switch_rules(self, block_state: Overlay, height: int) -> None:
        """Before the block's first transaction: a plan scheduled for this height switches
        the chain to its rules version, or stops this node when it does not support them.
        Read from the committed state only, so nothing in the block (a proposer's choice of
        transactions, a cancel in this very block) can skip or move the switch."""
        plan = upgrade.due(KV(block_state, UPGRADE), height)
        if plan is None:
            return
        if not self._supports(plan):
            self._refuse(plan)
        upgrade.apply(KV(block_state, UPGRADE), plan)
        log.warning(
            "upgrade plan %r applied at height %d: the chain runs rules version %d from this"
            " block on",
            plan.name,
            height,
            plan.version,
        )

    def _deliver(
        self, block_state: Overlay, block: BlockContext, raw: bytes, index: int
    ) -> tuple[TxResult, list[ValidatorUpdate]]:
        """One transaction's result; raises only for a local fault (never a TxFailure)."""
        tx_state = Overlay(block_state)
        try:
            stx = self._decoded.pop(raw)
            message, parsed = self._validate(stx)
            auth.authenticate(block_state, stx, self._signatures, block.height)
            self._signatures.forget(stx)  # its nonce is spent below: it never verifies again
            # From here on the nonce is spent even if the message fails: no replay either way.
            auth.spend_nonce(KV(tx_state, auth.MODULE), stx.tx.sender, stx.tx.nonce)
        except TxFailure as failure:
            return TxResult(failure.code, failure.log), []
        ctx = TxContext(
            tx_state,
            stx.tx.sender,
            block.height,
            block.time_ns,
            chain_id=self.chain_id,
            tx_hash=tx_hash(raw).hex(),
            tx_index=index,
        )
        nonce_write = dict(tx_state.changes)
        try:
            message.handle(ctx, parsed)
        except TxFailure as failure:
            tx_state.changes = nonce_write  # keep only the spent nonce
            tx_state.write_into(block_state)
            return TxResult(failure.code, failure.log), []
        tx_state.write_into(block_state)
        return TxResult(Code.OK, events=tuple(ctx.events)), ctx.validator_updates

    def _validate(self, stx: SignedTx) -> tuple[Message[Any], Any]:
        """Stateless checks: chain, type, payload shape. The message and its parsed payload
        (parsed once: the handler gets the same immutable value)."""
        tx = stx.tx
        if tx.chain_id != self.chain_id:
            raise TxFailure(Code.WRONG_CHAIN, f"transaction is for chain {tx.chain_id[:64]!r}")
        module_name, _, message_name = tx.type.partition("/")
        module = self._modules.get(module_name)
        message = module.messages.get(message_name) if module else None
        if message is None:
            raise TxFailure(Code.UNKNOWN_TYPE, f"unknown transaction type {tx.type[:64]!r}")
        # A bad payload is refused here, before it reaches a block.
        return message, message.parse(Payload(tx.payload))

    # --- ABCI: query ----------------------------------------------------------------------

    def query(self, path: str, data: bytes = b"") -> QueryResult:
        """`<module>/<query>` with JSON parameters, answered from the last committed state."""
        return self._query(self.store, path, data)

    def query_snapshot(self, path: str, data: bytes = b"") -> QueryResult:
        """`query`, on a snapshot of the last commit read on the calling thread's own
        connection: safe in a worker thread while blocks commit on another (the consensus
        drivers run every query so, so that a long one never holds up the event loop)."""
        with self.store.snapshot() as snapshot:
            return self._query(snapshot, path, data)

    def _query(self, state: CommittedState, path: str, data: bytes) -> QueryResult:
        height = state.last_commit().height
        try:
            params = orjson.loads(data) if data else {}
            if not isinstance(params, dict):
                raise TxFailure(Code.MALFORMED, "query parameters must be a JSON object")
            value = self._answer(state, path, Payload(params, Code.MALFORMED))
        except orjson.JSONDecodeError as exc:
            return QueryResult(
                Code.MALFORMED, f"query parameters are not JSON: {exc}", height=height
            )
        except TxFailure as failure:
            return QueryResult(failure.code, failure.log, height=height)
        return QueryResult(Code.OK, value=orjson.dumps(value), height=height)

    def _answer(self, state: CommittedState, path: str, params: Payload) -> object:
        module_name, _, query_name = path.strip("/").partition("/")
        if module_name == auth.MODULE and query_name == "nonce":
            did = params.text("did", max_len=128)
            params.done()
            return {"did": did, "last_nonce": auth.last_nonce(KV(state, auth.MODULE), did)}
        module = self._modules.get(module_name)
        handler = module.queries.get(query_name) if module else None
        if module is None or handler is None:
            raise TxFailure(Code.NOT_FOUND, f"unknown query {path[:64]!r}")
        return handler(KV(state, module.name), params)


class CommittedState(Readable, Protocol):
    """What a query reads: the state store, or a snapshot of it."""

    def last_commit(self) -> LastCommit: ...


def _local_fault(where: str, exc: Exception) -> LocalFault:
    """Log the fault as the reason the node stops, and the exception to raise for it."""
    reason = f"{where}: {type(exc).__name__}: {exc}"
    log.critical(
        "%s. This is a local fault (disk, memory or a bug), not a rule of the chain: the node"
        " stops here to avoid diverging from the other validators; nothing of this block is"
        " committed. Fix the cause and restart: the block is executed again.",
        reason,
        exc_info=exc,
    )
    return LocalFault(reason)
