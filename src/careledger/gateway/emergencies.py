"""The emergency keys of the break-glasses the gateway made, in memory only.

A practitioner-bound client's `$break-glass` (gateway/break_glass.py) gives the gateway the
keys of the patient's opened scopes (wallet/break_glass.py `EmergencyKeys`). They are held
here, by (practitioner, patient), and nowhere else: never written to disk, never logged
(`EmergencyKeys`'s repr shows no key), forgotten at the break-glass's `until` by a timer (and
at any lookup past it, should the timer be late). A restart forgets them all: the node would
refuse the reads past `until` anyway, and within the window a new break-glass is the way
back (the chain refuses a second one while the first runs: 409 names when it ends).

While held, that practitioner's reads of that patient go through a records client of their
own (`Gateway.records_for(principal, patient)`): purpose ETREAT, and a keyring that opens the
broken scopes with the emergency keys and anything else with what was granted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from careledger.crypto.scopekeys import ScopeKeyPair
from careledger.wallet.break_glass import EmergencyKeys
from careledger.wallet.keyring import Keyring
from careledger.wallet.records import RecordsClient


class EmergencyKeyring:
    """The emergency keys for the broken scopes of their patient; the holder's usual
    keyring (its grants, its organisation's) for everything else."""

    def __init__(self, keys: EmergencyKeys, usual: Keyring) -> None:
        self.keys = keys
        self.usual = usual

    def naming_key(self, patient: str) -> bytes:
        if patient == self.keys.patient:
            return self.keys.naming_key(patient)
        return self.usual.naming_key(patient)

    def scope_pair(self, patient: str, scope: str, epoch: int) -> ScopeKeyPair | None:
        found = self.keys.scope_pair(patient, scope, epoch)
        return found if found is not None else self.usual.scope_pair(patient, scope, epoch)


@dataclass
class Held:
    keys: EmergencyKeys = field(repr=False)
    client: RecordsClient | None = field(default=None, repr=False)  # made at the first read
    timer: threading.Timer | None = field(default=None, repr=False)


class Emergencies:
    """Emergency keys by (requester did, patient did), until each one's `until`."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._held: dict[tuple[str, str], Held] = {}
        self._lock = threading.Lock()

    def keep(self, requester: str, keys: EmergencyKeys) -> None:
        """Hold `keys` for `requester` until `keys.until` (replacing any earlier ones)."""
        key = (requester, keys.patient)
        held = Held(keys)
        delay = max(0.0, keys.until - self.clock())
        held.timer = threading.Timer(delay, self.forget, (requester, keys.patient, keys.glass))
        held.timer.daemon = True
        with self._lock:
            old = self._held.pop(key, None)
            self._held[key] = held
        _drop(old)
        held.timer.start()

    def active(self, requester: str, patient: str) -> Held | None:
        """The keys `requester` holds for `patient`, if their break-glass still runs."""
        with self._lock:
            held = self._held.get((requester, patient))
            if held is None or self.clock() < held.keys.until:
                return held
        self.forget(requester, patient, held.keys.glass)
        return None

    def forget(self, requester: str, patient: str, glass: str | None = None) -> None:
        """Drop the keys (those of break-glass `glass` only, when given)."""
        with self._lock:
            held = self._held.get((requester, patient))
            if held is None or (glass is not None and held.keys.glass != glass):
                return
            del self._held[(requester, patient)]
        _drop(held)

    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def close(self) -> None:
        with self._lock:
            every = list(self._held.values())
            self._held.clear()
        for held in every:
            _drop(held)


def _drop(held: Held | None) -> None:
    if held is None:
        return
    if held.timer is not None:
        held.timer.cancel()
    if held.client is not None:
        held.client.close()
