"""The FHIR R4 gateway of one organisation: the REST API an EHR, a SMART backend app and a
FHIR client library talk to (docs/gateway.md).

It holds the organisation's key files and acts through the node API and the wallet SDK only
(never the state store or consensus):

    app.py            the Starlette app: routes of each part, the bearer-token middleware, the
                      one exception-handler table; `careledger.site.compose` serves it beside the
                      node API
    context.py        `Gateway`: the node it talks to, the keys it acts with, its database
    db.py             the gateway's own SQLite file (index, directory, clients, tokens)
    outcome.py        FhirError and OperationOutcome responses
    http.py           FHIR JSON responses, request bodies, ETag and format negotiation
    principal.py      who a request acts as: the client, its practitioner or organisation, its
                      SMART scopes and purpose of use
    smart/            SMART Backend Services: clients, assertions, tokens, scopes, middleware
    capability.py     CapabilityStatement and .well-known/smart-configuration
    index/            the search index of the records the organisation can decrypt
    ...               interactions, bundles, search, views (AuditEvent, Consent, Provenance)
"""
