"""The purposes of use a grant names and a reader states: FHIR v3 PurposeOfUse codes
(http://terminology.hl7.org/CodeSystem/v3-ActReason): treatment, emergency treatment, payment,
operations, research, public health, patient request, coverage, legal.

A module of its own so that consent (grants, the read decision) and audit (access entries)
share one list without importing each other.
"""

PURPOSES = (
    "TREAT",
    "ETREAT",
    "HPAYMT",
    "HOPERAT",
    "HRESCH",
    "PUBHLTH",
    "PATRQT",
    "COVERAGE",
    "HLEGAL",
)
