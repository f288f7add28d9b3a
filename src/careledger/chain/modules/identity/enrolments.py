"""Enrolments: a member's word for many patients at once, published on chain.

A voucher (vouchers.py) is a member's signed word for one did, handed to the patient; every
validator verifies its signature when the patient registers. A hospital that brings its
patient population onto the chain enrols them in bulk instead:

    identity/enrol_patients           {"dids": [<did:key>, ... up to MAX_ENROLMENT_DIDS]}

sent (and so signed, once) by a member organisation, records `enrolled/<did>/<org>` for each
did; the patient then registers itself with

    identity/register_enrolled_patient {"encryption_key": <hex>, "enrolled_by": <member did>}

which the chain accepts while that row exists and its organisation is still a member. The
registration deletes the row (one-time, as a voucher's used/ row makes a voucher), so a
registration costs one signature, the patient's own, instead of two.

- The row names the did, so it is as useless to anyone else as a voucher stolen from the
  mempool: only that did's key signs that did's registration.
- Rows are keyed by member too: one member enrolling a did never refuses or replaces
  another member's enrolment of it.
- An enrolment does not expire; it lasts while its member does (a removed member's rows
  authorise nothing). Rows of dids that never register stay, about 100 bytes each, written
  only by members' own signed transactions of at most MAX_ENROLMENT_DIDS each; so do the
  rows of a did that registered otherwise (by a voucher, or another member's enrolment),
  which serve no one (a registered did registers no more; `identity/enrolment` says so).
- A batch is all or nothing: a did already registered (or twice in the list) refuses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from careledger.chain.codes import Code, TxFailure
from careledger.chain.modules.base import Payload
from careledger.chain.modules.identity.keeper import IdentityKeeper
from careledger.chain.modules.identity.vouchers import Voucher
from careledger.crypto.keys import ed25519_from_did

ENROLMENT_TYPE = "identity/enrol_patients"
# The rules version that brought enrolments: a chain running older rules knows neither type.
ENROLMENTS_SINCE = 7
ENROLLED_REGISTRATION_TYPE = "identity/register_enrolled_patient"
# 500 did:keys are about 30 KB of payload, under half of MAX_TX_BYTES (chain/tx.py).
MAX_ENROLMENT_DIDS = 500


@dataclass(frozen=True)
class Enrolment:
    """A self-registration's reference to the member that enrolled its did on chain."""

    org: str

    @classmethod
    def of(cls, payload: Mapping[str, Any]) -> Enrolment:
        """The `enrolled_by` field of a registration's payload (INVALID_PAYLOAD if bad)."""
        return cls(Payload(payload).did("enrolled_by"))


# What vouches for a self-registration: a signed voucher or an on-chain enrolment.
Vouching = Voucher | Enrolment


def vouching_of(tx_type: str, payload: Mapping[str, Any]) -> Vouching:
    """The vouching a self-registration of `tx_type` carries in `payload`."""
    if tx_type == ENROLLED_REGISTRATION_TYPE:
        return Enrolment.of(payload)
    return Voucher.of(payload)


def check_enrolment(keeper: IdentityKeeper, subject: str, enrolment: Enrolment) -> None:
    """TxFailure unless a member that may still act enrolled `subject`."""
    org = keeper.acting_identity(enrolment.org)
    if org is None or org["kind"] != "organisation":
        raise TxFailure(
            Code.UNAUTHORISED, f"enrolled_by: {enrolment.org} is not a member organisation"
        )
    if not keeper.is_enrolled(subject, enrolment.org):
        raise TxFailure(Code.UNAUTHORISED, f"{enrolment.org} has not enrolled {subject}")


def redeem_enrolment(keeper: IdentityKeeper, subject: str, enrolment: Enrolment) -> None:
    """Delete the checked enrolment row: it registers one identity, once."""
    if not keeper.is_enrolled(subject, enrolment.org):
        raise TxFailure(Code.CONFLICT, f"{enrolment.org}'s enrolment of {subject} was used")
    keeper.unenrol(subject, enrolment.org)


def enrolment_reads(sender: str, enrolment: Enrolment) -> list[bytes]:
    """State keys a registration by enrolment reads besides the sender's identity and
    nonces (auth.keys_read_first): its enrolment row (present) and the sender's own key's
    key/ row (absent for an honest registration). A hint: [] for a sender that is no did."""
    try:
        own_key = ed25519_from_did(sender).hex()
    except ValueError:  # KeyError_ is one
        return []
    return [
        IdentityKeeper.full_key(f"enrolled/{sender}/{enrolment.org}"),
        IdentityKeeper.full_key(f"key/{own_key}"),
    ]
