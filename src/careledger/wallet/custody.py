"""Custody: a patient's keys made on the patient's own device, and claimed from a clinic.

    keyfile, phrase = new_patient_keys()      # `careledger keys new`: shown once, kept offline
    keyfile = restore_patient_keys(phrase)    # `careledger keys restore`

A patient's identity is a 24-word recovery phrase made where the patient is (this CLI, later
the portal); no server ever sees it. A clinic that enrols a patient who has no identity yet
makes a claim package instead (wallet/enrolment.py), which the patient claims (`claim` below):
the patient then holds keys the clinic never saw.
"""

from __future__ import annotations

from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import identity_from_phrase, new_recovery_phrase


def new_patient_keys(name: str = "") -> tuple[KeyFile, str]:
    """A new patient identity: its key file (version 2, naming key of this first master) and
    its recovery phrase (24 BIP-39 words), which the caller shows once and forgets."""
    phrase = new_recovery_phrase()
    identity = identity_from_phrase(phrase)
    return KeyFile(identity.did, "patient", identity, name), phrase


def restore_patient_keys(phrase: str, name: str = "") -> KeyFile:
    """The key file a recovery phrase gives (KeyError_ for a bad phrase).

    For an identity that never rotated (made by `keys new`) this is the whole key file. After
    a claim the phrase gives the current keys only; the did, the naming key and the previous
    masters (old epochs) are in the key file the claim wrote, which the patient must keep.
    """
    identity = identity_from_phrase(phrase)
    return KeyFile(identity.did, "patient", identity, name)
