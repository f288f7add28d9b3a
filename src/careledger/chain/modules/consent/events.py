"""The consent module's events: what a committed block tells nodes (a revocation takes
effect at the next block) and wallets (keys to fetch, grants to show)."""

from __future__ import annotations

from dataclasses import dataclass

from careledger.chain.modules.base import TypedEvent


@dataclass(frozen=True)
class ConsentGranted(TypedEvent):
    TYPE = "consent.granted"
    patient: str
    grant: str
    grantee: str
    action: str


@dataclass(frozen=True)
class ConsentRevoked(TypedEvent):
    TYPE = "consent.revoked"
    patient: str
    grant: str
    grantee: str


@dataclass(frozen=True)
class ConsentKeysShared(TypedEvent):
    """More key wraps for a grant (new epochs after a revocation or a claim)."""

    TYPE = "consent.keys_shared"
    patient: str
    grant: str


@dataclass(frozen=True)
class EmergencyOpened(TypedEvent):
    """A patient escrowed its emergency keys (a new escrow replaces the previous one)."""

    TYPE = "consent.emergency_opened"
    patient: str
    escrow: str
    scopes: tuple[str, ...]
