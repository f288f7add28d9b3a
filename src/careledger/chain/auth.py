"""Who signed a transaction and whether it was seen before: signatures and nonces.

The key that must sign for a did is the identity module's current key for it (after a key
rotation, the new one), or the did's own key while it is unregistered; an unregistered did
may send only a self-registration vouched for by a member (`authenticate`).

Nonces are per sender, each usable once, with an anti-replay window (as IPsec's): a nonce
above the highest seen is accepted, and so is an unused one among the NONCE_WINDOW below it.
A gateway sending many transactions at once, or a network whose mempools receive them out of
order, need not serialise them; a replay is refused however it is ordered.

A nonce may be at most MAX_NONCE_JUMP above the sender's highest (a new sender's highest is
0), and the window never holds more than NONCE_WINDOW bits, so checking any nonce costs the
same small, fixed time and memory however far it jumps.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from careledger.chain.codes import Code, TxFailure
from careledger.chain.modules.identity import IdentityKeeper
from careledger.chain.modules.identity.enrolments import (
    Enrolment,
    Vouching,
    check_enrolment,
    enrolment_reads,
    vouching_of,
)
from careledger.chain.modules.identity.vouchers import (
    SignedStatement,
    Voucher,
    check_voucher,
    registration_reads,
    sender_key,
)
from careledger.chain.state import KV, Readable
from careledger.chain.tx import SignedTx
from careledger.crypto.hashing import sha256
from careledger.crypto.keys import verify_signature

MODULE = "auth"


NONCE_WINDOW = 1024
_WINDOW_MASK = (1 << NONCE_WINDOW) - 1

# How far above the sender's highest nonce a new one may be. An honest writer numbers its
# transactions one by one, so its nonces run ahead of the highest the chain has seen by at
# most what it has in flight: a records pipeline 3 chunks of 1,000 (wallet/writing.py), one
# POST /txs at most 10,000 (node/api.py MAX_BATCH). 2**16 leaves six times that, and with it
# a sender needs 2**37 transactions to exhaust the nonce space (MAX_NONCE = 2**53 - 1).
MAX_NONCE_JUMP = 2**16


def last_nonce(kv: KV, did: str) -> int:
    """The highest nonce the sender has used (0 for none)."""
    return _load_nonces(kv, did)[0]


def spend_nonce(kv: KV, did: str, nonce: int) -> None:
    """Record the nonce as used.

    TxFailure(REPLAY) if it was used or is below the window; TxFailure(NONCE_TOO_FAR) if it is
    more than MAX_NONCE_JUMP above the highest used (for a new sender, above 0).
    """
    last, seen = _load_nonces(kv, did)
    if nonce > last:
        jump = nonce - last
        if jump > MAX_NONCE_JUMP:
            raise TxFailure(
                Code.NONCE_TOO_FAR,
                f"nonce {nonce} is {jump} above the sender's highest ({last}); "
                f"the limit is {MAX_NONCE_JUMP}",
            )
        # A jump of a whole window or more leaves only the new nonce in it.
        seen = ((seen << jump) | 1) & _WINDOW_MASK if jump < NONCE_WINDOW else 1
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
    """Transactions already verified (by check_tx), by hash, with the key that signed them.

    A validator verifies each signature once: the mempool check and the block execution of
    the same bytes under the same key share the result. The block forgets the entry when it
    commits (its nonce is then spent, so the bytes never verify usefully again; a CheckTx of
    the same bytes between FinalizeBlock and Commit still finds it); what the mempool checked
    but no block carried ages out, least recently used first. An entry is a 32-byte hash and
    a 32-byte key (about 250 bytes with the dictionary's overhead), so the default bound
    holds about 16 MiB.

    A voucher's signature (inside a self-registration's payload) is cached the same way and
    tied to the transaction that carries it: the block that forgets the transaction forgets
    its voucher too (the voucher is then used, so it never verifies usefully again either).
    """

    def __init__(self, capacity: int = 65_536) -> None:
        self._seen: OrderedDict[bytes, bytes] = OrderedDict()
        # transaction hash -> the entry of the voucher it carries; its keys are always in _seen
        self._carried: dict[bytes, bytes] = {}
        self.capacity = capacity

    def __len__(self) -> int:
        return len(self._seen)

    def verify(self, stx: SignedTx, public_key: bytes) -> bool:
        return self._verify(stx.hash, public_key, stx.signature, stx.body)

    def verify_detached(
        self,
        public_key: bytes,
        signature: bytes,
        message: bytes,
        carried_by: SignedTx | None = None,
    ) -> bool:
        """A signature inside a payload (a voucher), cached like a transaction's; forgetting
        `carried_by` (the transaction whose payload holds it) forgets it too."""
        return self._verify_carried(
            sha256(message + signature), public_key, signature, message, carried_by
        )

    def verify_statement(
        self, public_key: bytes, statement: SignedStatement, carried_by: SignedTx | None = None
    ) -> bool:
        """`verify_detached` of a voucher's statement, whose cache entry it already holds."""
        return self._verify_carried(
            statement.entry, public_key, statement.signature, statement.message, carried_by
        )

    def _verify_carried(
        self,
        entry: bytes,
        public_key: bytes,
        signature: bytes,
        message: bytes,
        carried_by: SignedTx | None,
    ) -> bool:
        if not self._verify(entry, public_key, signature, message):
            return False
        if carried_by is not None and carried_by.hash in self._seen:
            self._carried[carried_by.hash] = entry
        return True

    def _verify(self, entry: bytes, public_key: bytes, signature: bytes, message: bytes) -> bool:
        if self._seen.get(entry) == public_key:
            return True
        if not verify_signature(public_key, signature, message):
            return False
        self._remember(entry, public_key)
        return True

    def _remember(self, entry: bytes, public_key: bytes) -> None:
        self._seen[entry] = public_key
        self._seen.move_to_end(entry)
        if len(self._seen) > self.capacity:
            evicted, _ = self._seen.popitem(last=False)
            self._carried.pop(evicted, None)

    def add_verified(self, checks: Sequence[SignatureCheck], valid: Sequence[bool]) -> None:
        """Remember the checks that `verify_checks` found valid (`valid[i]` for `checks[i]`),
        as `verify` would have. An entry names the hash of exactly the bytes verified and the
        key that verified them, so a later lookup under another key, or of other bytes,
        misses and verifies in full. Voucher checks are not tied to their transaction here:
        `verify_detached` ties them when authenticate looks them up."""
        for check, ok in zip(checks, valid, strict=True):
            if ok and self._seen.get(check.entry) != check.public_key:
                self._remember(check.entry, check.public_key)

    def forget(self, stx: SignedTx) -> None:
        """Drop the transaction's entry and that of the voucher it carries."""
        self._seen.pop(stx.hash, None)
        carried = self._carried.pop(stx.hash, None)
        if carried is not None:
            self._seen.pop(carried, None)


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """One signature to verify ahead of check_tx (off the event loop: libsodium releases
    the GIL), and the signature cache entry it makes when valid."""

    entry: bytes  # the cache's name for it: as SignatureCache.verify / verify_detached
    public_key: bytes
    signature: bytes
    message: bytes


def verify_checks(checks: Sequence[SignatureCheck]) -> list[bool]:
    """Verify each check: pure, reads no state, safe in any thread."""
    return [verify_signature(c.public_key, c.signature, c.message) for c in checks]


def signature_checks(
    state: Readable, stx: SignedTx, vouching: Vouching | None = None
) -> list[SignatureCheck]:
    """The signatures authenticate would verify for this transaction against `state`: the
    envelope's under the sender's current key, and a self-registration's voucher under the
    vouching member's key (an enrolment has none: it is in the state). Empty when
    authenticate would refuse before any signature (the voucher's when it would refuse
    before that one). Only a hint: authenticate still looks each one up under the key the
    state names then, and verifies in full on a miss."""
    tx = stx.tx
    identities = IdentityKeeper(KV(state, "identity"))
    try:
        key, purpose = sender_key(identities, tx.sender, tx.type)
        checks = [SignatureCheck(stx.hash, key, stx.signature, stx.body)]
        if purpose:
            vouching = vouching if vouching is not None else vouching_of(tx.type, tx.payload)
            org = identities.acting_identity(vouching.org)
            if org is not None and isinstance(vouching, Voucher):
                statement = vouching.statement(tx.chain_id, purpose, tx.sender)
                org_key = bytes.fromhex(org["signing_key"])
                checks.append(
                    SignatureCheck(statement.entry, org_key, statement.signature, statement.message)
                )
    except TxFailure:
        return []
    return checks


def keys_read_first(stx: SignedTx, vouching: Vouching | None = None) -> list[bytes]:
    """The state keys check_tx reads first for a transaction, whoever sends it: the sender's
    identity and nonces, and for a self-registration carrying `vouching`, the rows its check
    reads (`vouchers.registration_reads`, `enrolments.enrolment_reads`). Read ahead for a
    batch (StateStore.prefetch): a hint, a key wrong here costs a wasted read, never a
    different answer."""
    tx = stx.tx
    keys = [KV.full_key("identity", f"id/{tx.sender}"), KV.full_key(MODULE, f"nonce/{tx.sender}")]
    if isinstance(vouching, Enrolment):
        keys += enrolment_reads(tx.sender, vouching)
    elif vouching is not None:
        keys += registration_reads(tx.chain_id, tx.type, tx.sender, vouching)
    return keys


def authenticate(
    state: Readable,
    stx: SignedTx,
    cache: SignatureCache,
    height: int,
    vouching: Vouching | None = None,
) -> None:
    """TxFailure unless the sender may send this transaction and its current key signed it.

    UNKNOWN_SENDER: the sender is not an identity that may act (unregistered; deregistered;
    a removed organisation or one of its practitioners) and the transaction is not a
    self-registration (`vouchers.SELF_REGISTRATIONS`) carrying a member's valid voucher for
    it at `height`, or naming a member that enrolled it (enrolments.py). Runs before any
    nonce is spent, in check_tx and finalize_block alike, so a refused transaction writes
    nothing, not even a nonce row. `vouching`: the payload's voucher or enrolment as the
    message already parsed it (else it is parsed from the payload here).
    """
    tx = stx.tx
    identities = IdentityKeeper(KV(state, "identity"))
    key, purpose = sender_key(identities, tx.sender, tx.type)
    if not cache.verify(stx, key):
        raise TxFailure(Code.BAD_SIGNATURE, "signature does not verify with the sender's key")
    if not purpose:
        return
    if vouching is None:
        vouching = vouching_of(tx.type, tx.payload)
    if isinstance(vouching, Enrolment):
        check_enrolment(identities, tx.sender, vouching)
        return
    verify = functools.partial(cache.verify_statement, carried_by=stx)
    check_voucher(identities, tx.chain_id, purpose, tx.sender, vouching, height, verify)
