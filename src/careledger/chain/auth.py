"""Who signed a transaction and whether it was seen before: signatures and nonces.

The key that must sign for a did is the identity module's current key for it (after a key
rotation, the new one), or the did's own key while it is unregistered. Nonces are per sender
and strictly increasing; gaps are allowed, so concurrent clients need not coordinate.
"""

from __future__ import annotations

from collections import OrderedDict

from careledger.chain.codes import Code, TxFailure
from careledger.chain.modules.identity import IdentityKeeper
from careledger.chain.state import KV, Readable
from careledger.chain.tx import SignedTx
from careledger.crypto.keys import KeyError_, verify_signature

MODULE = "auth"


def last_nonce(kv: KV, did: str) -> int:
    value = kv.get(f"nonce/{did}")
    return int(value) if value is not None else 0


class SignatureCache:
    """Transactions already verified (by check_tx), keyed by hash and the key that signed.

    A validator verifies each signature once: the mempool check and the block execution of
    the same bytes under the same key share the result.
    """

    def __init__(self, capacity: int = 200_000) -> None:
        self._seen: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
        self._capacity = capacity

    def verify(self, stx: SignedTx, public_key: bytes) -> bool:
        entry = (stx.hash, public_key)
        if entry in self._seen:
            return True
        if not verify_signature(public_key, stx.signature, stx.body):
            return False
        self._seen[entry] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True

    def forget(self, stx: SignedTx, public_key: bytes) -> None:
        self._seen.pop((stx.hash, public_key), None)


def authenticate(state: Readable, stx: SignedTx, cache: SignatureCache) -> None:
    """TxFailure(BAD_SIGNATURE) unless the sender's current key signed these bytes."""
    try:
        key = IdentityKeeper(KV(state, "identity")).signing_key(stx.tx.sender)
    except KeyError_ as exc:
        raise TxFailure(Code.MALFORMED, f"sender: {exc}") from None
    if not cache.verify(stx, key):
        raise TxFailure(Code.BAD_SIGNATURE, "signature does not verify with the sender's key")


def check_nonce(nonce: int, last: int) -> None:
    if nonce <= last:
        raise TxFailure(Code.REPLAY, f"nonce {nonce} already used (last was {last})")
