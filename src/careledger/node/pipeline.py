"""The pre-submit pipeline: this node's own checks on a transaction before consensus sees it.

Every transaction submitted through this node's API (`POST /tx`, `POST /txs`, streamed or
not) is decoded once and passed to the checks registered for its type, in registration order,
before the consensus driver's mempool. The first refusal answers the client (nothing enters
the mempool, no nonce is spent); with no refusal the driver takes the bytes unchanged.

A check is node policy, not a chain rule: another node may not have run it, so the state
machine never relies on it. It says what this node will not forward (an anchor whose blob it
does not hold; later, a read or write that consent or audit refuses). This is the one place
such cross-cutting checks live, the way HAPI FHIR interceptors sit in front of its storage:
routes stay free of them, and both drivers get them.

A transaction that does not decode passes through untouched: the driver's check_tx gives
the precise error, so a check only ever sees a well-formed envelope.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from careledger.chain.codes import Code, TxFailure
from careledger.chain.tx import SignedTx, decode_tx, tx_hash
from careledger.consensus.driver import Admission, ConsensusDriver, Submission


@dataclass(frozen=True)
class Refusal:
    """Why this node will not forward a transaction: a chain result code and a message."""

    code: Code
    log: str


class SubmitCheck(Protocol):
    def __call__(self, stx: SignedTx) -> Refusal | None:
        """None to let the transaction through, a Refusal to stop it here."""
        ...


class SubmitPipeline:
    def __init__(self) -> None:
        self._checks: dict[str, list[SubmitCheck]] = {}
        self._type_strings: tuple[bytes, ...] = ()

    def register(self, tx_type: str, check: SubmitCheck) -> None:
        """Run `check` on every submitted transaction of `tx_type` (e.g. "records/anchor")."""
        self._checks.setdefault(tx_type, []).append(check)
        self._type_strings = tuple(orjson.dumps(t) for t in self._checks)

    def checked_types(self) -> frozenset[str]:
        return frozenset(self._checks)

    def refusal(self, raw: bytes) -> Refusal | None:
        """The first registered check's refusal of these bytes, or None."""
        if not any(type_string in raw for type_string in self._type_strings):
            # Not a transaction of a checked type, whatever else it is: a transaction decodes
            # only from canonical JSON (RFC 8785 writes a string with the fewest escapes), so
            # one of type "records/anchor" holds these very bytes, `"records/anchor"`, and
            # bytes that spell it otherwise are refused by the driver's check_tx. Decoding
            # every submission to learn its type cost the event loop 7.7 us of its ~200 per
            # registration over HTTP; this look costs 1.2-1.6 us.
            return None
        try:
            stx = decode_tx(raw)
        except TxFailure:
            return None  # the driver's check_tx names the fault
        for check in self._checks.get(stx.tx.type, ()):
            refused = check(stx)
            if refused is not None:
                return refused
        return None


class CheckedDriver:
    """A consensus driver with the pipeline in front of its mempool.

    Submissions (`admit`, `submit`) go through the pipeline; every other member of the
    driver (status, blocks, transactions, queries, chain id) is the wrapped driver's own.
    """

    def __init__(self, driver: ConsensusDriver, pipeline: SubmitPipeline) -> None:
        self.inner = driver
        self.pipeline = pipeline

    async def admit(self, raw: bytes, wait: bool) -> Admission:
        refused = self.pipeline.refusal(raw)
        if refused is not None:
            return Admission(Submission(tx_hash(raw).hex(), int(refused.code), refused.log))
        return await self.inner.admit(raw, wait)

    async def submit(self, raw: bytes, wait: bool) -> Submission:
        return await (await self.admit(raw, wait)).outcome()

    def __getattr__(self, name: str) -> Any:
        # Reads are the driver's own: delegating keeps the wrapper from re-implementing (and
        # drifting from) each of them.
        return getattr(self.inner, name)
