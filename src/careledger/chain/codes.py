"""Result codes of transactions and queries. 0 is success; every rejection has its own code."""

from enum import IntEnum


class Code(IntEnum):
    OK = 0
    MALFORMED = 1  # not a signed envelope, not canonical JSON, missing or mistyped fields
    OVERSIZED = 2
    WRONG_CHAIN = 3
    UNKNOWN_TYPE = 4
    BAD_SIGNATURE = 5
    REPLAY = 6  # nonce not above the sender's last one
    INVALID_PAYLOAD = 7
    UNAUTHORISED = 8
    NOT_FOUND = 9
    CONFLICT = 10
    NONCE_TOO_FAR = 11  # a nonce further above the sender's highest than MAX_NONCE_JUMP
    ERASED = 12  # the record is erased: it takes no new version and has no content
    UNKNOWN_SENDER = 13  # not a registered identity, and the transaction does not register it
    NO_CONSENT = 14  # a write (a new record for a patient) without the patient's write consent
    BAD_BATCH = 15  # an audit batch that is not in the one format, or out of its time window
    BATCH_REPLAYED = 16  # an audit batch whose sequence number this node already used
    BATCH_GAP = 17  # an audit batch that skips sequence numbers: the one before is missing
    INTERNAL = 99


class TxFailure(Exception):
    """Raised inside a handler to fail the transaction with a code; its writes are discarded."""

    def __init__(self, code: Code, log: str) -> None:
        super().__init__(log)
        self.code = code
        self.log = log
