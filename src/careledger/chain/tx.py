"""The signed transaction envelope.

Wire form: the RFC 8785 bytes of `{chain_id, type, sender, nonce, payload}` followed by the
64-byte Ed25519 signature over exactly those bytes. The signature is a fixed-size suffix so a
validator verifies the bytes it received, without decoding and re-encoding them first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from careledger.chain.codes import Code, TxFailure
from careledger.crypto.canonical import (
    NotCanonical,
    canonical_bytes,
    parse_canonical_noting_floats,
)
from careledger.crypto.hashing import sha256
from careledger.crypto.keys import Identity

SIGNATURE_BYTES = 64
MAX_TX_BYTES = 64 * 1024
MAX_NONCE = 2**53 - 1  # exact in every JSON implementation
_FIELDS = frozenset({"chain_id", "type", "sender", "nonce", "payload"})


@dataclass(frozen=True)
class Tx:
    chain_id: str
    type: str
    sender: str
    nonce: int
    payload: dict[str, Any]

    def body(self) -> bytes:
        return canonical_bytes(
            {
                "chain_id": self.chain_id,
                "type": self.type,
                "sender": self.sender,
                "nonce": self.nonce,
                "payload": self.payload,
            }
        )

    def sign(self, signer: Identity) -> bytes:
        """The wire bytes of this transaction signed by the signer's current key."""
        body = self.body()
        return body + signer.sign(body)


@dataclass(frozen=True)
class SignedTx:
    tx: Tx
    body: bytes
    signature: bytes
    hash: bytes  # SHA-256 of the whole wire form, the transaction's name


def tx_hash(raw: bytes) -> bytes:
    return sha256(raw)


def decode_tx(raw: bytes) -> SignedTx:
    """Parse wire bytes; TxFailure(MALFORMED|OVERSIZED) for anything that is not an envelope."""
    if len(raw) > MAX_TX_BYTES:
        raise TxFailure(Code.OVERSIZED, f"transaction is {len(raw)} bytes, limit {MAX_TX_BYTES}")
    if len(raw) <= SIGNATURE_BYTES:
        raise TxFailure(Code.MALFORMED, "transaction too short to hold a signature")
    body, signature = raw[:-SIGNATURE_BYTES], raw[-SIGNATURE_BYTES:]
    try:
        value, has_float = parse_canonical_noting_floats(body)
    except NotCanonical as exc:
        raise TxFailure(Code.MALFORMED, f"transaction body: {exc}") from None
    return SignedTx(_envelope(value, has_float), body, signature, sha256(raw))


def _envelope(value: Any, has_float: bool) -> Tx:
    """The envelope's fields, checked in this order (the first failure is the log).
    `has_float`: the value holds a float somewhere; once the other four fields are checked
    (strings and an integer), it can only be in the payload."""
    if not isinstance(value, dict) or set(value) != _FIELDS:
        raise TxFailure(Code.MALFORMED, f"envelope must have exactly the fields {sorted(_FIELDS)}")
    chain_id, type_, sender = value["chain_id"], value["type"], value["sender"]
    nonce, payload = value["nonce"], value["payload"]
    if not all(isinstance(v, str) for v in (chain_id, type_, sender)):
        raise TxFailure(Code.MALFORMED, "chain_id, type and sender must be strings")
    if type(nonce) is not int or not 1 <= nonce <= MAX_NONCE:
        raise TxFailure(Code.MALFORMED, f"nonce must be an integer in 1..{MAX_NONCE}")
    if not isinstance(payload, dict):
        raise TxFailure(Code.MALFORMED, "payload must be an object")
    if has_float:
        raise TxFailure(Code.MALFORMED, "payload must not contain floating-point numbers")
    return Tx(chain_id, type_, sender, nonce, payload)
