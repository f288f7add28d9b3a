"""Consent grants to and from FHIR R4 ``Consent`` (docs/consent-fhir.md).

A grant is one permit: a patient lets one grantee (an organisation, one practitioner, or for a
delegation any identity) read or write the records of some scopes, or of some named records,
for some purposes, from ``start`` until ``end`` (unix seconds, end exclusive). The ledger shares
nothing without a grant, so it has no deny rules: a patient withdraws by revoking a grant.

``consent_from_grant`` writes a grant as a Consent of this shape (R4 says the root rule carries
no ``type`` and every nested rule does; the root holds what every nested rule shares):

    policyRule OPTIN                          nothing is shared unless a rule permits it
    provision                                 who, which action, why, when, which records
      period, actor, action, purpose, data
      provision[] type permit, class [resource types of the granted broad scopes]
        provision[] type deny, securityLabel  sensitive-labelled records are never in a broad scope
      provision[] type permit, class [urn:careledger:scope#sensitive]

``grant_from_consent`` reads that shape back, and the flat one (a root rule of type permit),
and refuses with ``ConsentMappingError`` (every reason found) whatever a grant cannot say
exactly. Nothing is dropped silently: a dropped deny or restriction would widen access.

Pure: no network, no clock, no chain state. The modules, by concern:

    vocabulary   code systems, record types, and the names taken from the ledger's owners
                 (actions and purposes: chain/modules/consent; scopes: crypto/scopekeys.py;
                 sensitive labels and the type -> scope table: wallet/scopes.py)
    grant        GrantSpec (what both directions map) and ConsentMappingError
    to_fhir      consent_from_grant: the Consent and its narrative
    from_fhir    grant_from_consent: the Consent as a whole and its rules
    conditions   the conditions of its permits, read as the grant's fields
    fhir_values  codings, References and dateTimes as the reader needs them
"""

from careledger.chain.modules.consent import ACTIONS, PURPOSES
from careledger.crypto.scopekeys import BROAD_SCOPES, SENSITIVE
from careledger.wallet.fhir_consent.conditions import ResolveParty, ResolveRecord
from careledger.wallet.fhir_consent.fhir_values import did_of_reference, record_of_reference
from careledger.wallet.fhir_consent.from_fhir import grant_from_consent
from careledger.wallet.fhir_consent.grant import ConsentMappingError, GrantSpec
from careledger.wallet.fhir_consent.to_fhir import consent_from_grant
from careledger.wallet.fhir_consent.vocabulary import (
    ACT_REASON,
    ACTION_CODES,
    CONSENT_ACTION,
    CONSENT_SCOPE,
    DELEGATE,
    DELEGATE_ROLES,
    EXCLUSION_LABELS,
    GRANT_SCOPES,
    GRANTEE_TYPES,
    LOINC,
    MAX_RECORDS,
    PARTICIPATION_TYPE,
    PERSON_TYPES,
    PRACTITIONER_TYPES,
    READ,
    RECIPIENT_ROLES,
    RECORD_NAME_SYSTEM,
    RECORD_TYPES,
    RESOURCE_TYPES,
    ROLE_CODE,
    SCOPE_SYSTEM,
    SENSITIVE_LABELS,
    URI,
    WRITE,
    ScopeOfType,
    types_of_scope,
)
from careledger.wallet.scopes import ACT_CODE, CONFIDENTIALITY

__all__ = [
    "ACTIONS",
    "ACTION_CODES",
    "ACT_CODE",
    "ACT_REASON",
    "BROAD_SCOPES",
    "CONFIDENTIALITY",
    "CONSENT_ACTION",
    "CONSENT_SCOPE",
    "DELEGATE",
    "DELEGATE_ROLES",
    "EXCLUSION_LABELS",
    "GRANTEE_TYPES",
    "GRANT_SCOPES",
    "LOINC",
    "MAX_RECORDS",
    "PARTICIPATION_TYPE",
    "PERSON_TYPES",
    "PRACTITIONER_TYPES",
    "PURPOSES",
    "READ",
    "RECIPIENT_ROLES",
    "RECORD_NAME_SYSTEM",
    "RECORD_TYPES",
    "RESOURCE_TYPES",
    "ROLE_CODE",
    "SCOPE_SYSTEM",
    "SENSITIVE",
    "SENSITIVE_LABELS",
    "URI",
    "WRITE",
    "ConsentMappingError",
    "GrantSpec",
    "ResolveParty",
    "ResolveRecord",
    "ScopeOfType",
    "consent_from_grant",
    "did_of_reference",
    "grant_from_consent",
    "record_of_reference",
    "types_of_scope",
]
