"""CareLedger: FHIR R4 records, encrypted off-chain, anchored on a permissioned chain."""

__version__ = "0.1.0"
