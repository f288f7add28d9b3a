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
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from careledger.chain import auth
from careledger.chain.answers import (
    AppInfo,
    BlockContext,
    CommitListener,
    CommittedBlock,
    FinalizeResult,
    QueryResult,
    TxResult,
)
from careledger.chain.apphash import changes_hash, next_app_hash
from careledger.chain.block import parse_time_ns
from careledger.chain.codes import Code, TxFailure
from careledger.chain.decoded import DecodeCache, Decoded, Decoder, PreparedBatch
from careledger.chain.faults import LocalFault, local_fault
from careledger.chain.genesis import Genesis
from careledger.chain.modules.audit import audit_module
from careledger.chain.modules.base import (
    Module,
    TxContext,
    ValidatorUpdate,
)
from careledger.chain.modules.consent import consent_module
from careledger.chain.modules.identity import identity_module
from careledger.chain.modules.identity.enrolments import ENROLMENT_TYPE, Enrolment, Vouching
from careledger.chain.modules.identity.vouchers import SELF_REGISTRATIONS, Voucher
from careledger.chain.modules.records import records_module
from careledger.chain.modules.upgrade import MODULE as UPGRADE
from careledger.chain.modules.upgrade import handler as upgrade
from careledger.chain.modules.upgrade import upgrade_module
from careledger.chain.queries import answer_query
from careledger.chain.rules import (
    STATE_MACHINE_VERSION,
    SUPPORTED_RULES_VERSIONS,
    IncompatibleState,
    RulesGate,
    UpgradeRequired,
)
from careledger.chain.state import KV, Overlay
from careledger.chain.store import StateStore
from careledger.chain.tx import SignedTx, tx_hash

# Re-exported: these lived here before chain/rules.py, chain/faults.py and chain/decoded.py.
__all__ = [
    "STATE_MACHINE_VERSION",
    "SUPPORTED_RULES_VERSIONS",
    "AppInfo",
    "Application",
    "BlockContext",
    "CommitListener",
    "CommittedBlock",
    "DecodeCache",
    "Decoded",
    "FinalizeResult",
    "IncompatibleState",
    "LocalFault",
    "PreparedBatch",
    "QueryResult",
    "TxResult",
    "UpgradeRequired",
]

log = logging.getLogger(__name__)

DEFAULT_MODULES: tuple[Module, ...] = (
    identity_module,
    records_module,
    consent_module,
    audit_module,
    upgrade_module,
)


@dataclass
class _PendingBlock:
    height: int
    app_hash: bytes
    changes_hash: bytes
    state: Overlay
    block: CommittedBlock
    # The transactions whose nonce the block spends: their signatures leave the cache at
    # commit, not while the block executes (Application._forget_committed).
    spent: list[SignedTx]
    switched_rules: bool = False


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
        self._rules = RulesGate(store, supported_versions)
        self._modules = {m.name: m for m in modules}
        self._signatures = auth.SignatureCache()
        self._decoder = Decoder(self._modules, lambda: self.chain_id, lambda: self._version)
        self._check_state = Overlay(store)  # mempool view: committed state + accepted txs
        self._pending: _PendingBlock | None = None
        self._chain_id = ""
        self._listeners: list[CommitListener] = []
        self._rules.check_store()
        # The rules the next block runs under, as far as this node knows: the committed
        # version, and from a switching block's start the plan's (decoding follows it).
        self._version = self._rules.active_version()

    @property
    def supported_versions(self) -> frozenset[int]:
        return self._rules.supported_versions

    @property
    def rules_version(self) -> int:
        """The chain's active rules version, as of the last commit (of a fresh store, the
        version init_chain will record)."""
        return self._rules.active_version()

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

    def init_chain(self, genesis: Genesis, rules_version: int = STATE_MACHINE_VERSION) -> bytes:
        """Write the genesis state as height 0; again with the same genesis, a no-op.

        `rules_version`: the rules the chain starts under, this software's newest by default
        (an older one it supports, for a consortium whose other nodes run older software)."""
        existing = self.store.app_hash_at(0)
        if existing is not None:
            if self.chain_id != genesis.chain_id:
                raise ValueError(f"store belongs to chain {self.chain_id!r}")
            return existing
        if rules_version not in self.supported_versions:
            raise ValueError(f"this software does not run rules version {rules_version}")
        state = Overlay(self.store)
        ctx = TxContext(state, sender="", height=0, time_ns=parse_time_ns(genesis.genesis_time))
        for module in self._modules.values():
            module.init_genesis(ctx, genesis)
        upgrade.record_version(KV(state, UPGRADE), rules_version)
        digest = changes_hash(state.changes)
        app_hash = next_app_hash(b"", digest)
        meta = {
            "chain_id": genesis.chain_id,
            "genesis": genesis.to_json().decode(),
            "state_machine_version": str(rules_version),
        }
        self.store.commit(0, app_hash, digest, state.changes, meta)
        self._version = rules_version
        self._check_state = Overlay(self.store)
        return app_hash

    # --- ABCI: mempool --------------------------------------------------------------------

    def check_tx(self, raw: bytes, *, recheck: bool = False) -> TxResult:
        """Admit a transaction to the mempool: well-formed, signed, fresh nonce, valid payload.

        `recheck`: the transaction was admitted before and a block has committed since (the
        drivers re-check what still waits, CometBFT with CheckTx of type RECHECK). Only what
        a committed block can change is done again: the sender's current key and standing,
        its voucher's (member, expiry, unused), the nonce and a registration's preconditions,
        all against the new state. The stateless checks (envelope, canonical form, chain,
        type, payload shape) come from the decode cache, keyed by these very bytes, and
        the signatures from the signature cache, keyed by their hash and the key that
        verified them; bytes not (or no longer) in a cache are checked in full.

        Never raises: any bytes get a code. A local fault here (the mempool is each node's
        own) refuses the transaction with INTERNAL and leaves the state as it was.
        """
        try:
            decoded = self._decoder.decode(raw)
        except TxFailure as failure:
            return TxResult(failure.code, failure.log)
        except Exception:
            return _internal(raw)
        return self._check_decoded(raw, decoded)

    def prepare_batch(self, raws: Sequence[bytes], *, signatures: bool = True) -> PreparedBatch:
        """check_tx's first half for a batch: decode each transaction and list the signatures
        it needs against the mempool view as it is now, to verify ahead (`PreparedBatch.verify`,
        in another thread). Never raises; nothing is admitted or cached yet."""
        generation = self._decoder.cache.generation
        decodings = [self._decoder.decode_or_failure(raw) for raw in raws]
        batch = PreparedBatch(list(raws), decodings, [], generation=generation)
        decoded = [d for d in batch.decoded if isinstance(d, Decoded)]
        try:
            self.store.prefetch(
                k for d in decoded for k in auth.keys_read_first(d.stx, _carried_vouching(d))
            )
            for d in decoded if signatures else ():
                batch.checks += auth.signature_checks(
                    self._check_state, d.stx, _carried_vouching(d)
                )
        except Exception:  # a local fault: check_batch meets it again and answers for it
            log.exception("reading ahead for a batch of transactions failed")
        return batch

    def check_batch(self, batch: PreparedBatch) -> list[TxResult]:
        """check_tx of each transaction of a prepared batch, in order, against the mempool
        view as it is now. The signatures found valid ahead are remembered under the keys
        that verified them; authenticate looks them up under the keys the state names now
        (a miss verifies in full), so the results are check_tx's whatever was verified."""
        if batch.valid is not None:
            self._signatures.add_verified(batch.checks, batch.valid)
        if batch.generation != self._decoder.cache.generation:
            # Decoded before the rules switched (a batch read ahead across the block that
            # switched them): decode again under the new rules, as check_tx would.
            return [self.check_tx(raw) for raw in batch.raws]
        results = []
        for raw, decoded in zip(batch.raws, batch.decoded, strict=True):
            if decoded is None:
                results.append(self.check_tx(raw))
            elif isinstance(decoded, TxFailure):
                results.append(TxResult(decoded.code, decoded.log))
            else:
                results.append(self._check_decoded(raw, decoded))
        return results

    def _check_decoded(self, raw: bytes, decoded: Decoded) -> TxResult:
        try:
            self._admit(decoded)
        except TxFailure as failure:
            return TxResult(failure.code, failure.log)
        except Exception:
            return _internal(raw)
        self._decoder.cache.keep(raw, decoded)
        return _ADMITTED

    def _admit(self, decoded: Decoded) -> None:
        """The stateful part of check_tx, into the mempool view (TxFailure refuses)."""
        stx = decoded.stx
        height = self.store.last_commit().height + 1
        auth.authenticate(
            self._check_state, stx, self._signatures, height, _carried_vouching(decoded)
        )
        view = Overlay(self._check_state)
        auth.spend_nonce(KV(view, auth.MODULE), stx.tx.sender, stx.tx.nonce)
        if stx.tx.type in _APPLIED_IN_MEMPOOL:
            # The mempool view takes the registration itself, so that the new identity's
            # next transactions (its scope keys, a clinic's first anchors) are admitted
            # behind it, and a second use of its voucher is refused here already; and an
            # enrolment, so that the registrations it vouches for may follow it at once.
            ctx = TxContext(
                view, stx.tx.sender, height, 0, chain_id=self.chain_id, keep_events=False
            )
            decoded.message.handle(ctx, decoded.parsed)
        view.write_into(self._check_state)

    # --- ABCI: blocks ---------------------------------------------------------------------

    def finalize_block(self, ctx: BlockContext, txs: Sequence[bytes]) -> FinalizeResult:
        """Execute a block's transactions in order.

        A transaction that breaks a rule fails with its code; the block goes on. Anything else
        raises LocalFault, with nothing pending: the node must stop, not commit.
        """
        self._pending = None
        block_state = Overlay(self.store)
        try:
            switched = self._switch_rules(block_state, ctx.height)
        except UpgradeRequired:
            raise
        except Exception as exc:
            raise local_fault(f"block {ctx.height}, the upgrade switch", exc) from exc
        results: list[TxResult] = []
        updates: list[ValidatorUpdate] = []
        spent: list[SignedTx] = []
        for index, raw in enumerate(txs):
            try:
                result, tx_updates = self._deliver(block_state, ctx, raw, index, spent)
            except Exception as exc:
                where = f"block {ctx.height}, transaction {tx_hash(raw).hex()}"
                raise local_fault(where, exc) from exc
            results.append(result)
            updates.extend(tx_updates)
        try:
            digest = changes_hash(block_state.changes)
            previous = self.store.last_commit().app_hash
        except Exception as exc:
            raise local_fault(f"block {ctx.height}", exc) from exc
        app_hash = next_app_hash(previous, digest)
        committed = CommittedBlock(ctx.height, ctx.time_ns, list(txs), results)
        self._pending = _PendingBlock(
            ctx.height, app_hash, digest, block_state, committed, spent, switched
        )
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
            raise local_fault(f"commit of block {pending.height}", exc) from exc
        self._check_state = Overlay(self.store)
        self._forget_committed(pending)
        if pending.switched_rules:
            # check_tx may run between finalize_block and commit (CometBFT's mempool
            # connection): what it decoded then was decoded under the old rules.
            self._decoder.cache.clear()
        for listener in self._listeners:
            try:
                listener(pending.block)
            except Exception:  # a node-side reaction must never stop the chain
                log.exception("commit listener failed at height %d", pending.height)

    def _forget_committed(self, pending: _PendingBlock) -> None:
        """The committed block's transactions leave the decode cache, and the signatures of
        those whose nonce it spent the signature cache: they never check usefully again.

        At commit, not while the block executes: CometBFT's mempool connection may CheckTx
        the very same bytes between FinalizeBlock and Commit (a transaction that reached this
        node in another validator's proposal before its gossip did), against the mempool
        view, which the block has not changed yet. Forgotten during the block, it was decoded
        and both of its signatures verified again: 578 of 12,000 registrations on node0 at
        2,000 tx/s offered (bench.abci_replay), about 6 us per committed transaction."""
        for raw in pending.block.txs:
            self._decoder.cache.pop(raw)
        for stx in pending.spent:
            self._signatures.forget(stx)

    def _switch_rules(self, block_state: Overlay, height: int) -> bool:
        """Whether this block switches the rules (then nothing decoded before is kept)."""
        if self._rules.switch(block_state, height):
            self._version = self._rules.version_in(block_state)
            self._decoder.cache.clear()  # decoded under the old rules: decode again under the new
            return True
        return False

    def _deliver(
        self,
        block_state: Overlay,
        block: BlockContext,
        raw: bytes,
        index: int,
        spent: list[SignedTx],
    ) -> tuple[TxResult, list[ValidatorUpdate]]:
        """One transaction's result; raises only for a local fault (never a TxFailure).
        A transaction that gets as far as spending its nonce is added to `spent`."""
        tx_state = Overlay(block_state)
        try:
            decoded = self._decoder.decode(raw)
            stx = decoded.stx
            vouching = _carried_vouching(decoded)
            auth.authenticate(block_state, stx, self._signatures, block.height, vouching)
            spent.append(stx)  # its signatures are forgotten at commit (_forget_committed)
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
            tx_hash=stx.hash.hex(),  # SHA-256 of these bytes (decode_tx)
            tx_index=index,
        )
        nonce_write = dict(tx_state.changes)
        try:
            decoded.message.handle(ctx, decoded.parsed)
        except TxFailure as failure:
            tx_state.changes = nonce_write  # keep only the spent nonce
            tx_state.write_into(block_state)
            return TxResult(failure.code, failure.log), []
        tx_state.write_into(block_state)
        return TxResult(Code.OK, events=tuple(ctx.events)), ctx.validator_updates

    # --- ABCI: query ----------------------------------------------------------------------

    def query(self, path: str, data: bytes = b"") -> QueryResult:
        """`<module>/<query>` with JSON parameters, answered from the last committed state."""
        return answer_query(self._modules, self.store, path, data)

    def query_snapshot(self, path: str, data: bytes = b"") -> QueryResult:
        """`query`, on a snapshot of the last commit read on the calling thread's own
        connection: safe in a worker thread while blocks commit on another (the consensus
        drivers run every query so, so that a long one never holds up the event loop)."""
        with self.store.snapshot() as snapshot:
            return answer_query(self._modules, snapshot, path, data)


# Transactions check_tx executes into the mempool view (not only their nonce): see _admit.
_APPLIED_IN_MEMPOOL = frozenset({*SELF_REGISTRATIONS, ENROLMENT_TYPE})

# check_tx's answer to every admitted transaction: one immutable value, not one per call.
_ADMITTED = TxResult(Code.OK)


def _carried_vouching(decoded: Decoded) -> Vouching | None:
    """A self-registration's voucher or enrolment as its message parsed it (the same parsers
    and fields `enrolments.vouching_of` reads), so that authenticate need not parse the
    payload again."""
    parsed = decoded.parsed
    vouching = getattr(parsed, "voucher", None) or getattr(parsed, "enrolment", None)
    return vouching if isinstance(vouching, Voucher | Enrolment) else None


def _internal(raw: bytes) -> TxResult:
    log.exception("check_tx of %s failed with a local fault", tx_hash(raw).hex())
    return TxResult(Code.INTERNAL, "the node could not check the transaction")
