"""The ABCI request dispatch: each decoded request turned into its answer by the Application.

`AbciHandler` answers every request CometBFT sends (Info, InitChain, CheckTx and runs of
them as one batch, Query, the proposals, FinalizeBlock, Commit; state sync is not offered).
Any exception while answering becomes a ResponseException; when FinalizeBlock or Commit
fails (a LocalFault: disk, memory, a bug) the handler records it in `halted`, and the socket
server (server.py) then closes every CometBFT connection. The handler knows nothing of
sockets, frames or threads: server.py reads the requests and calls it, one call at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from careledger.chain.app import Application, BlockContext, FinalizeResult, TxResult
from careledger.chain.codes import Code
from careledger.chain.genesis import Genesis
from careledger.chain.modules.base import Event
from careledger.chain.tx import MAX_TX_BYTES, SIGNATURE_BYTES
from careledger.consensus.cometbft import messages as m
from careledger.consensus.cometbft.answers import finalize_block_response
from careledger.consensus.cometbft.codec import CHECK_TX_OK_RESPONSE, encode_response
from careledger.consensus.cometbft.protowire import encode_uvarint

log = logging.getLogger(__name__)


class AbciHandler:
    """Turns each decoded ABCI request into its response by calling the Application."""

    def __init__(self, app: Application) -> None:
        self.app = app
        self.halted: BaseException | None = None  # set when a block failed to execute or commit

    def handle(self, request: Any) -> Any:
        method = getattr(self, "on_" + type(request).__name__.removeprefix("Request"), None)
        if method is None:
            return m.ResponseException(f"unsupported request {type(request).__name__}")
        return self._guarded(method, request)

    def respond(self, request: Any) -> bytes:
        """handle(request), encoded. FinalizeBlock's answer, the largest, is written straight
        from the application's results (answers.py: the same bytes as the generic path)."""
        if type(request) is m.RequestFinalizeBlock:
            answer = self._guarded(self._finalize_block_bytes, request)
            return answer if isinstance(answer, bytes) else encode_response(answer)
        return encode_response(self.handle(request))

    def _guarded(self, method: Callable[[Any], Any], request: Any) -> Any:
        """method(request), or a ResponseException for whatever it raises (the server must
        survive it); a failed FinalizeBlock or Commit halts (see the module's docstring)."""
        try:
            return method(request)
        except Exception as exc:
            log.exception("ABCI %s failed", type(request).__name__)
            if isinstance(request, m.RequestFinalizeBlock | m.RequestCommit):
                self.halted = exc
            return m.ResponseException(f"{type(exc).__name__}: {exc}")

    # --- connection-level ------------------------------------------------------------------

    def on_Echo(self, req: m.RequestEcho) -> m.ResponseEcho:
        return m.ResponseEcho(req.message)

    def on_Flush(self, req: m.RequestFlush) -> m.ResponseFlush:
        return m.ResponseFlush()

    # --- info and genesis ------------------------------------------------------------------

    def on_Info(self, req: m.RequestInfo) -> m.ResponseInfo:
        """Last committed height and app hash: CometBFT replays any block the app lacks.
        `app_version` is the chain's active rules version (it changes at a planned upgrade)."""
        info = self.app.info()
        return m.ResponseInfo(
            data="careledger",
            version="careledger/1",
            app_version=self.app.rules_version,
            last_block_height=info.last_height,
            last_block_app_hash=info.last_app_hash,
        )

    def on_InitChain(self, req: m.RequestInitChain) -> m.ResponseInitChain:
        genesis = Genesis.from_json(req.app_state_bytes)
        if genesis.chain_id != req.chain_id:
            raise ValueError(f"app_state is for chain {genesis.chain_id!r}, not {req.chain_id!r}")
        _check_genesis_validators(genesis, req.validators)
        # Empty validators in the answer keep CometBFT's genesis set, which we just checked.
        return m.ResponseInitChain(app_hash=self.app.init_chain(genesis))

    # --- mempool and queries ---------------------------------------------------------------

    def on_CheckTx(self, req: m.RequestCheckTx) -> m.ResponseCheckTx:
        result = self.app.check_tx(req.tx, recheck=req.type == m.CHECK_TX_RECHECK)
        return m.ResponseCheckTx(code=int(result.code), data=result.data, log=result.log)

    def check_tx_response(self, tx: bytes, kind: int) -> bytes:
        """on_CheckTx answered straight to bytes (the hot path: every transaction on every
        node, and every recheck): an OK answer, nearly all of them, is one constant."""
        return self.check_tx_responses([tx], kind)[0]

    def check_tx_responses(self, txs: Sequence[bytes], kind: int) -> list[bytes]:
        """The answers to a run of CheckTx requests of one kind, in order, as bytes.

        New transactions go through the application as one batch (`prepare_batch`, then
        `check_batch`: their senders' state read in one query, each then checked as check_tx
        checks it, in order, against the mempool view as the ones before it left it).
        Rechecks go to check_tx(recheck=True) one by one: their state is in the read cache
        already (read when they were new), and check_tx is where a recheck may do less."""
        try:
            if kind == m.CHECK_TX_RECHECK:
                results = [self.app.check_tx(tx, recheck=True) for tx in txs]
            else:
                results = self.app.check_batch(self.app.prepare_batch(txs, signatures=False))
        except Exception as exc:  # neither raises; as in handle(), survive it anyway
            log.exception("ABCI CheckTx failed")
            failed = encode_response(m.ResponseException(f"{type(exc).__name__}: {exc}"))
            return [failed] * len(txs)
        return [_check_tx_answer(result) for result in results]

    def on_Query(self, req: m.RequestQuery) -> m.ResponseQuery:
        result = self.app.query(req.path, req.data)
        return m.ResponseQuery(
            code=int(result.code), log=result.log, value=result.value, height=result.height
        )

    # --- proposals -------------------------------------------------------------------------

    def on_PrepareProposal(self, req: m.RequestPrepareProposal) -> m.ResponsePrepareProposal:
        """The mempool's transactions in order, as many as fit in max_tx_bytes."""
        chosen: list[bytes] = []
        used = 0
        for tx in req.txs:
            size = proto_size_in_block(tx)
            if used + size > req.max_tx_bytes:
                break
            chosen.append(tx)
            used += size
        return m.ResponsePrepareProposal(txs=chosen)

    def on_ProcessProposal(self, req: m.RequestProcessProposal) -> m.ResponseProcessProposal:
        """ACCEPT unless a transaction cannot be an envelope at all (always explicit).

        Only a cheap, deterministic shape check: every honest validator already ran CheckTx
        on these bytes, and FinalizeBlock fails a bad transaction with its code and no
        effect. Decoding each one here again would cost as much as the block itself.
        """
        for tx in req.txs:
            if not _envelope_shaped(tx):
                log.warning("rejecting proposal at height %d: malformed transaction", req.height)
                return m.ResponseProcessProposal(status=m.STATUS_REJECT)
        return m.ResponseProcessProposal(status=m.STATUS_ACCEPT)

    def on_ExtendVote(self, req: m.RequestExtendVote) -> m.ResponseExtendVote:
        return m.ResponseExtendVote()

    def on_VerifyVoteExtension(
        self, req: m.RequestVerifyVoteExtension
    ) -> m.ResponseVerifyVoteExtension:
        ok = not req.vote_extension  # we never extend votes, so only an empty one is valid
        return m.ResponseVerifyVoteExtension(status=m.STATUS_ACCEPT if ok else m.STATUS_REJECT)

    # --- blocks ----------------------------------------------------------------------------

    def on_FinalizeBlock(self, req: m.RequestFinalizeBlock) -> m.ResponseFinalizeBlock:
        return finalize_block_message(self._finalize_block(req))

    def _finalize_block_bytes(self, req: m.RequestFinalizeBlock) -> bytes:
        return finalize_block_response(self._finalize_block(req))

    def _finalize_block(self, req: m.RequestFinalizeBlock) -> FinalizeResult:
        return self.app.finalize_block(BlockContext(req.height, req.time.unix_ns), req.txs)

    def on_Commit(self, req: m.RequestCommit) -> m.ResponseCommit:
        self.app.commit()  # the application tells its commit listeners
        return m.ResponseCommit(retain_height=0)  # keep every block: they are the record

    # --- state sync: not offered -----------------------------------------------------------

    def on_ListSnapshots(self, req: m.RequestListSnapshots) -> m.ResponseListSnapshots:
        return m.ResponseListSnapshots()

    def on_OfferSnapshot(self, req: m.RequestOfferSnapshot) -> m.ResponseOfferSnapshot:
        return m.ResponseOfferSnapshot(result=m.SNAPSHOT_ABORT)

    def on_LoadSnapshotChunk(self, req: m.RequestLoadSnapshotChunk) -> m.ResponseLoadSnapshotChunk:
        return m.ResponseLoadSnapshotChunk()

    def on_ApplySnapshotChunk(
        self, req: m.RequestApplySnapshotChunk
    ) -> m.ResponseApplySnapshotChunk:
        return m.ResponseApplySnapshotChunk(result=m.SNAPSHOT_ABORT)


def _envelope_shaped(tx: bytes) -> bool:
    """A JSON object followed by a 64-byte signature, within the size limit."""
    body_end = len(tx) - SIGNATURE_BYTES
    return (
        SIGNATURE_BYTES < len(tx) <= MAX_TX_BYTES
        and tx[:1] == b"{"
        and tx[body_end - 1 : body_end] == b"}"
    )


def proto_size_in_block(tx: bytes) -> int:
    """Bytes a transaction takes in a block's Data message, as CometBFT counts max_tx_bytes."""
    return 1 + len(encode_uvarint(len(tx))) + len(tx)


def _check_tx_answer(result: TxResult) -> bytes:
    """A CheckTx answer's bytes: an OK, nearly every one, is one constant."""
    if result.code == Code.OK and not result.data and not result.log:
        return CHECK_TX_OK_RESPONSE
    response = m.ResponseCheckTx(code=int(result.code), data=result.data, log=result.log)
    return encode_response(response)


def finalize_block_message(result: FinalizeResult) -> m.ResponseFinalizeBlock:
    """FinalizeBlock's answer as a message: the definition that answers.py's direct
    encoding (`finalize_block_response`, what the server sends) must match byte for byte."""
    return m.ResponseFinalizeBlock(
        tx_results=[_exec_result(r) for r in result.tx_results],
        validator_updates=[
            m.ValidatorUpdate(m.PublicKey(ed25519=u.pub_key), u.power)
            for u in result.validator_updates
        ],
        app_hash=result.app_hash,
    )


def _exec_result(result: TxResult) -> m.ExecTxResult:
    return m.ExecTxResult(
        code=int(result.code),
        data=result.data,
        log=result.log,
        events=[_event(e) for e in result.events],
    )


def _event(event: Event) -> m.Event:
    attributes = [m.EventAttribute(k, v, index=True) for k, v in event.attributes.items()]
    return m.Event(event.type, attributes)


def _check_genesis_validators(genesis: Genesis, validators: list[m.ValidatorUpdate]) -> None:
    """CometBFT's genesis validators must be exactly the founding organisations' keys."""
    ours = {
        bytes.fromhex(o.validator_pub_key) for o in genesis.organisations if o.validator_pub_key
    }
    theirs = {v.pub_key.ed25519 for v in validators if v.pub_key.ed25519}
    if ours and ours != theirs:
        raise ValueError("CometBFT's genesis validators are not the founding organisations' keys")
