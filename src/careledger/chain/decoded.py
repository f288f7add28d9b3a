"""Transactions decoded and validated once (`Decoder`), kept from check_tx to their block.

A transaction's stateless checks (envelope, canonical JSON, chain, type, payload shape) give
the same answer for the same bytes every time, so check_tx, every recheck and the block that
carries the transaction share one decoding: `Decoded` holds the envelope, the message and its
parsed payload (an immutable value: no handler changes it).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from careledger.chain.auth import SignatureCheck, verify_checks
from careledger.chain.codes import Code, TxFailure
from careledger.chain.modules.base import Message, Module, Payload
from careledger.chain.tx import SignedTx, decode_tx


@dataclass(frozen=True, slots=True)
class Decoded:
    """A transaction that passed the stateless checks: its envelope, message and payload."""

    stx: SignedTx
    message: Message[Any]
    parsed: Any


class DecodeCache:
    """Admitted transactions' decodings, by their exact bytes.

    The bytes are the key, so a block's copy is the decoding of the very bytes it holds. Only
    admitted transactions are kept (a flood of well-formed but unsigned bodies costs nothing
    here), the block takes its own out, and the cache is bounded by bytes as well as by
    entries: each entry is charged four times its wire size (the bytes, the body slice and
    the decoded JSON objects: 3.5 times for a 52 KB payload of short strings, measured with
    tracemalloc; the parsed payload's objects hold the JSON's own strings, not copies) plus
    ENTRY_OVERHEAD. A patient registration (551 bytes) measured 3,447 bytes with the
    statement its voucher keeps (Voucher.statement, 672 of them), charged 3,484.
    """

    ENTRY_OVERHEAD = 1280

    def __init__(self, max_entries: int = 100_000, max_bytes: int = 32 * 1024 * 1024) -> None:
        self._by_raw: OrderedDict[bytes, Decoded] = OrderedDict()
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self.generation = 0

    def __len__(self) -> int:
        return len(self._by_raw)

    def get(self, raw: bytes) -> Decoded | None:
        """The kept decoding of these bytes, if any."""
        return self._by_raw.get(raw)

    def keep(self, raw: bytes, decoded: Decoded) -> None:
        if raw in self._by_raw:
            return
        self._by_raw[raw] = decoded
        self.bytes += self._cost(raw)
        while len(self._by_raw) > self.max_entries or self.bytes > self.max_bytes:
            evicted, _ = self._by_raw.popitem(last=False)
            self.bytes -= self._cost(evicted)

    def pop(self, raw: bytes) -> Decoded | None:
        """Take the kept decoding out (the block that carried the transaction, at commit)."""
        found = self._by_raw.pop(raw, None)
        if found is not None:
            self.bytes -= self._cost(raw)
        return found

    def clear(self) -> None:
        """Forget every decoding (the rules switched); `generation` counts the clears, so
        that a decoding made before one (a prepared batch) is not kept after it."""
        self._by_raw.clear()
        self.bytes = 0
        self.generation += 1

    def _cost(self, raw: bytes) -> int:
        return 4 * len(raw) + self.ENTRY_OVERHEAD


class Decoder:
    """The stateless checks of wire bytes (envelope, canonical JSON, chain, type, payload
    shape), answered from `cache` for the bytes check_tx admitted."""

    def __init__(
        self,
        modules: Mapping[str, Module],
        chain_id: Callable[[], str],
        rules_version: Callable[[], int],
    ) -> None:
        self._modules = modules
        self._chain_id = chain_id  # read when needed: a fresh store learns it at init_chain
        # The version whose messages exist (a switch of the rules clears the cache).
        self._rules_version = rules_version
        self.cache = DecodeCache()

    def decode(self, raw: bytes) -> Decoded:
        """The stateless checks' result for these bytes: kept by check_tx (until the block
        that carries them commits), or computed now (TxFailure for bytes that fail them)."""
        found = self.cache.get(raw)
        return found if found is not None else self._validate(decode_tx(raw))

    def decode_or_failure(self, raw: bytes) -> Decoded | TxFailure | None:
        """`decode`, its failure returned; None for a local fault (check_tx meets it again
        and answers INTERNAL)."""
        try:
            return self.decode(raw)
        except TxFailure as failure:
            return failure
        except Exception:
            return None

    def _validate(self, stx: SignedTx) -> Decoded:
        """Stateless checks: chain, type, payload shape. The message and its parsed payload
        (parsed once: every check of these bytes and the handler get the same immutable
        value)."""
        tx = stx.tx
        if tx.chain_id != self._chain_id():
            raise TxFailure(Code.WRONG_CHAIN, f"transaction is for chain {tx.chain_id[:64]!r}")
        module_name, _, message_name = tx.type.partition("/")
        module = self._modules.get(module_name)
        message = module.messages.get(message_name) if module else None
        if message is None or message.since > self._rules_version():
            raise TxFailure(Code.UNKNOWN_TYPE, f"unknown transaction type {tx.type[:64]!r}")
        # A bad payload is refused here, before it reaches a block.
        return Decoded(stx, message, message.parse(Payload(tx.payload)))


@dataclass
class PreparedBatch:
    """A batch of transactions for check_tx, decoded, with the signatures to verify ahead.

    `Application.prepare_batch` fills it on the state machine's thread, `verify` may run in
    another (it only calls libsodium, which releases the GIL), `Application.check_batch`
    then checks each transaction as check_tx does. `decoded[i]` is the decoding of
    `raws[i]`, the failure of its stateless checks, or None (check it from scratch).
    """

    raws: list[bytes]
    decoded: list[Decoded | TxFailure | None]
    checks: list[SignatureCheck]
    valid: list[bool] | None = None
    generation: int = 0  # the decode cache's generation when decoded (DecodeCache.clear)

    def verify(self) -> None:
        """Verify the batch's signatures: pure, safe in any thread."""
        self.valid = verify_checks(self.checks)
