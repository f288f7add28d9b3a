"""The identity module's events."""

from __future__ import annotations

from dataclasses import dataclass

from careledger.chain.modules.base import TypedEvent


@dataclass(frozen=True)
class IdentityRegistered(TypedEvent):
    TYPE = "identity.registered"
    did: str
    kind: str
    org: str = ""


@dataclass(frozen=True)
class PatientsEnrolled(TypedEvent):
    TYPE = "identity.patients_enrolled"
    org: str
    count: str


@dataclass(frozen=True)
class PractitionerDeregistered(TypedEvent):
    TYPE = "identity.deregistered"
    did: str
    org: str


@dataclass(frozen=True)
class KeyRotated(TypedEvent):
    TYPE = "identity.key_rotated"
    did: str


@dataclass(frozen=True)
class MembershipApplied(TypedEvent):
    TYPE = "identity.applied"
    did: str


@dataclass(frozen=True)
class MembershipApproved(TypedEvent):
    TYPE = "identity.approved"
    action: str
    subject: str
    voter: str


@dataclass(frozen=True)
class MemberAdmitted(TypedEvent):
    TYPE = "identity.admitted"
    did: str


@dataclass(frozen=True)
class MemberRemoved(TypedEvent):
    TYPE = "identity.removed"
    did: str
