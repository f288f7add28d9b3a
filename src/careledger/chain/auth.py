"""Who signed a transaction and whether it was seen before: signatures and nonces.

The key that must sign for a did is the identity module's current key for it (after a key
rotation, the new one), or the did's own key while it is unregistered; an unregistered did
may send only a self-registration vouched for by a member (`authenticate`).

Nonces are per sender, each usable once, with an anti-replay window (as IPsec's): a nonce
above the highest seen is accepted, and so is an unused one among the NONCE_WINDOW below it.
A gateway sending many transactions at once, or a network whose mempools receive them out of
order, need not serialise them; a replay is refused however it is ordered.
"""

from __future__ import annotations

from collections import OrderedDict

from careledger.chain.codes import Code, TxFailure
from careledger.chain.modules.identity import IdentityKeeper
from careledger.chain.modules.identity.vouchers import Voucher, check_voucher, sender_key
from careledger.chain.state import KV, Readable
from careledger.chain.tx import SignedTx
from careledger.crypto.hashing import sha256
from careledger.crypto.keys import verify_signature

MODULE = "auth"


NONCE_WINDOW = 1024


def last_nonce(kv: KV, did: str) -> int:
    """The highest nonce the sender has used (0 for none)."""
    return _load_nonces(kv, did)[0]


def spend_nonce(kv: KV, did: str, nonce: int) -> None:
    """Record the nonce as used; TxFailure(REPLAY) if it was, or is below the window."""
    last, seen = _load_nonces(kv, did)
    if nonce > last:
        seen = ((seen << (nonce - last)) | 1) & ((1 << NONCE_WINDOW) - 1)
        last = nonce
    else:
        age = last - nonce
        if age >= NONCE_WINDOW or (seen >> age) & 1:
            raise TxFailure(Code.REPLAY, f"nonce {nonce} already used or too old (last {last})")
        seen |= 1 << age
    kv.set(f"nonce/{did}", {"last": last, "seen": format(seen, "x")})


def _load_nonces(kv: KV, did: str) -> tuple[int, int]:
    """(highest nonce used, bitmap of the window: bit i set when nonce last - i is used)."""
    value = kv.get(f"nonce/{did}")
    if value is None:
        return 0, 0
    return int(value["last"]), int(value["seen"], 16)


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

    def verify_detached(self, public_key: bytes, signature: bytes, message: bytes) -> bool:
        """A signature inside a payload (a voucher), cached like a transaction's."""
        entry = (sha256(message + signature), public_key)
        if entry in self._seen:
            return True
        if not verify_signature(public_key, signature, message):
            return False
        self._seen[entry] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True

    def forget(self, stx: SignedTx, public_key: bytes) -> None:
        self._seen.pop((stx.hash, public_key), None)


def authenticate(state: Readable, stx: SignedTx, cache: SignatureCache, height: int) -> None:
    """TxFailure unless the sender may send this transaction and its current key signed it.

    UNKNOWN_SENDER: the sender is not an identity that may act (unregistered; deregistered;
    a removed organisation or one of its practitioners) and the transaction is not a
    self-registration (`vouchers.SELF_REGISTRATIONS`) carrying a member's valid voucher for
    it at `height`. Runs before any nonce is spent, in check_tx and finalize_block alike, so
    a refused transaction writes nothing, not even a nonce row.
    """
    tx = stx.tx
    identities = IdentityKeeper(KV(state, "identity"))
    key, purpose = sender_key(identities, tx.sender, tx.type)
    if not cache.verify(stx, key):
        raise TxFailure(Code.BAD_SIGNATURE, "signature does not verify with the sender's key")
    if purpose:
        voucher = Voucher.of(tx.payload)
        check_voucher(
            identities, tx.chain_id, purpose, tx.sender, voucher, height, cache.verify_detached
        )
