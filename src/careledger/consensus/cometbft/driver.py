"""The CometBFT consensus driver: what the node API sees when the node is a network validator.

Submissions go to CometBFT's mempool (broadcast_tx_sync, which runs our CheckTx); blocks,
results and inclusion proofs come from CometBFT's block store and indexer over its RPC.
Waiting for a transaction's block needs no RPC subscription: the ABCI server runs in this
same process, so the driver hears every commit and resolves the waiters itself.

A transaction's proof ties it to CometBFT's own block hash and the validators' signatures, as
a light client checks it (protocol/cometbft/): the transaction under block H's
data_hash, its result under block H+1's last_results_hash, block H+1 naming block H's hash,
and the commit for H+1 signed by the validator set that H+1's validators_hash names.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from careledger.chain.app import Application, CommittedBlock, QueryResult
from careledger.chain.block import format_time_ns, parse_time_ns
from careledger.chain.codes import Code
from careledger.chain.results import TxOutcome, result_inclusion_proof
from careledger.chain.tx import tx_hash
from careledger.consensus.cometbft.rpc import CometRpc, RpcError
from careledger.consensus.driver import Admission, Submission

WAIT_FOR_BLOCK_SECONDS = 30.0
# A proof needs block H+1 (it commits to block H's results); CometBFT makes it within about
# one timeout_commit, or create_empty_blocks_interval when the chain is idle.
WAIT_FOR_NEXT_BLOCK_SECONDS = 10.0
VALIDATORS_PER_PAGE = 100  # CometBFT's maximum


class CometDriver:
    def __init__(self, app: Application, rpc: CometRpc) -> None:
        self.app = app
        self.rpc = rpc
        self._waiters: dict[bytes, list[asyncio.Future[Submission]]] = {}

    @property
    def chain_id(self) -> str:
        return self.app.chain_id

    # --- submissions -----------------------------------------------------------------------

    async def submit(self, raw: bytes, wait: bool) -> Submission:
        return await (await self.admit(raw, wait)).outcome()

    async def admit(self, raw: bytes, wait: bool) -> Admission:
        digest = tx_hash(raw)
        waiter = self._wait_for(digest) if wait else None
        try:
            checked = await self.rpc.broadcast_tx_sync(raw)
        except RpcError as exc:
            self._forget(digest, waiter)
            message = f"{exc.message} {exc.data}".strip()
            return Admission(Submission(digest.hex(), int(Code.CONFLICT), message))
        except BaseException:
            self._forget(digest, waiter)
            raise
        if int(checked["code"]) != 0:
            self._forget(digest, waiter)
            log = str(checked.get("log", ""))
            return Admission(Submission(digest.hex(), int(checked["code"]), log))
        if waiter is None:
            return Admission(Submission(digest.hex(), 0))
        return Admission(Submission(digest.hex(), 0), self._committed(digest, waiter))

    async def _committed(self, digest: bytes, waiter: asyncio.Future[Submission]) -> Submission:
        try:
            return await asyncio.wait_for(waiter, WAIT_FOR_BLOCK_SECONDS)
        except TimeoutError:
            self._forget(digest, waiter)
            return Submission(digest.hex(), 0, "accepted; not yet in a block")

    def _wait_for(self, digest: bytes) -> asyncio.Future[Submission]:
        future: asyncio.Future[Submission] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(digest, []).append(future)
        return future

    def _forget(self, digest: bytes, waiter: asyncio.Future[Submission] | None) -> None:
        waiting = self._waiters.get(digest, [])
        if waiter in waiting:
            waiting.remove(waiter)
        if not waiting:
            self._waiters.pop(digest, None)

    def on_commit(self, block: CommittedBlock) -> None:
        """An application commit listener: resolve who waits for these transactions."""
        if not self._waiters:
            return
        for raw, result in zip(block.txs, block.tx_results, strict=True):
            digest = tx_hash(raw)
            waiting = self._waiters.pop(digest, None)
            if not waiting:
                continue
            events = [{"type": e.type, "attributes": e.attributes} for e in result.events]
            outcome = Submission(
                digest.hex(), 0, "", block.height, int(result.code), result.log, events
            )
            for future in waiting:
                if not future.done():
                    future.set_result(outcome)

    # --- reads -----------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        info = self.app.info()
        comet = await self.rpc.status()
        sync = comet["sync_info"]
        unconfirmed = await self.rpc.call("num_unconfirmed_txs")
        return {
            "chain_id": info.chain_id,
            "height": info.last_height,
            "app_hash": info.last_app_hash.hex(),
            "latest_block_time": _normal_time(sync["latest_block_time"]),
            "mempool_size": int(unconfirmed["n_txs"]),
            "consensus": "cometbft",
            "cometbft_node_id": comet["node_info"]["id"],
            "validator_address": comet["validator_info"]["address"].lower(),
            "catching_up": bool(sync["catching_up"]),
        }

    async def block(self, height: int) -> dict[str, Any] | None:
        if height < 1:
            return None
        try:
            found, results = await asyncio.gather(
                self.rpc.block(height), self.rpc.block_results(height)
            )
        except RpcError:
            return None  # not yet committed (or pruned)
        txs = [base64.b64decode(t) for t in found["block"]["data"]["txs"] or []]
        outcomes = results.get("txs_results") or []
        pairs = enumerate(zip(txs, outcomes, strict=False))
        return {
            "hash": found["block_id"]["hash"].lower(),
            "header": _header(found["block"]["header"], len(txs)),
            "txs": [_tx_summary(tx_hash(tx), i, r) for i, (tx, r) in pairs],
        }

    async def transaction(self, digest: bytes) -> dict[str, Any] | None:
        try:
            found = await self.rpc.tx(digest, prove=True)
        except RpcError:
            return None
        height, index = int(found["height"]), int(found["index"])
        block, results = await asyncio.gather(
            self.rpc.block(height), self.rpc.block_results(height)
        )
        raw = base64.b64decode(found["tx"])
        proof = found["proof"]["proof"]
        tx_proof = {
            "index": int(proof["index"]),
            "total": int(proof["total"]),
            "leaf": tx_hash(raw).hex(),
            "aunts": [base64.b64decode(a).hex() for a in proof["aunts"] or []],
        }
        outcomes = [_outcome(r) for r in results.get("txs_results") or []]
        header = block["block"]["header"]
        certifying = await self._certifying_block(height + 1)
        # What wallet/proofs.py checks offline (docs/records.md, "Proofs"); None until
        # block H+1, which commits to this block's results, is there.
        evidence = certifying and {
            "tx": raw.hex(),
            "height": height,
            "tx_proof": tx_proof,
            "result": outcomes[index].to_json(),
            "result_proof": result_inclusion_proof(outcomes, index).to_json(),
            "block": {"consensus": "cometbft", "header": header, **certifying},
        }
        return {
            **_tx_summary(digest, index, found["tx_result"]),
            "tx": raw.hex(),
            "height": height,
            "header": _header(header, len(block["block"]["data"]["txs"] or [])),
            "proof": tx_proof,
            "evidence": evidence,
        }

    async def _certifying_block(self, height: int) -> dict[str, Any] | None:
        """Block `height`'s header, the commit signing it and the validators who signed."""
        deadline = asyncio.get_running_loop().time() + WAIT_FOR_NEXT_BLOCK_SECONDS
        while self.app.info().last_height < height:
            if asyncio.get_running_loop().time() > deadline:
                return None
            await asyncio.sleep(0.05)
        try:
            signed = (await self.rpc.call("commit", height=str(height)))["signed_header"]
            validators = await self._validators(height)
        except RpcError:
            return None
        return {
            "next_header": signed["header"],
            "commit": signed["commit"],
            "validators": validators,
        }

    async def _validators(self, height: int) -> list[dict[str, Any]]:
        """The whole validator set at a height, in CometBFT's order, page by page."""
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            answer = await self.rpc.call(
                "validators", height=str(height), page=str(page), per_page=str(VALIDATORS_PER_PAGE)
            )
            found += [
                {k: v[k] for k in ("address", "pub_key", "voting_power")}
                for v in answer["validators"]
            ]
            if len(found) >= int(answer["total"]) or not answer["validators"]:
                return found
            page += 1

    async def query(self, path: str, data: bytes, *, inline: bool = False) -> QueryResult:
        # On a snapshot, in a worker thread: a query may take a while (up to 5,000 hashes,
        # each decided against a patient's grants), and the event loop makes the blocks. A
        # point lookup asked `inline` costs less than the hand-off (ConsensusDriver.query).
        if inline:
            return self.app.query_snapshot(path, data)
        return await asyncio.to_thread(self.app.query_snapshot, path, data)


def _header(header: dict[str, Any], num_txs: int) -> dict[str, Any]:
    """CometBFT's header in the node API's shape. Its app_hash is the state after the
    previous block (CometBFT's rule), which `app_hash_of` says explicitly."""
    height = int(header["height"])
    return {
        "chain_id": header["chain_id"],
        "height": height,
        "time": _normal_time(header["time"]),
        "previous_hash": header["last_block_id"]["hash"].lower(),
        "data_hash": header["data_hash"].lower(),
        "app_hash": header["app_hash"].lower(),
        "app_hash_of": height - 1,
        "num_txs": num_txs,
    }


def _tx_summary(digest: bytes, index: int, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "hash": digest.hex(),
        "index": index,
        "code": int(result.get("code") or 0),
        "log": str(result.get("log") or ""),
        "events": [_event(e) for e in result.get("events") or []],
    }


def _outcome(result: dict[str, Any]) -> TxOutcome:
    """The fields of a /block_results entry that last_results_hash commits to."""
    return TxOutcome(
        int(result.get("code") or 0),
        base64.b64decode(result.get("data") or ""),
        int(result.get("gas_wanted") or 0),
        int(result.get("gas_used") or 0),
    )


def _event(event: dict[str, Any]) -> dict[str, Any]:
    attributes = {str(a["key"]): str(a.get("value") or "") for a in event.get("attributes") or []}
    return {"type": event["type"], "attributes": attributes}


def _normal_time(text: str) -> str:
    """CometBFT trims trailing zeros of the nanoseconds; the node API always has nine."""
    return format_time_ns(parse_time_ns(text))
