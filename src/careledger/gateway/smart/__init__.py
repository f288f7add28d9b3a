"""SMART Backend Services for the gateway (https://hl7.org/fhir/smart-app-launch/backend-services.html):

scopes.py      SMART v1 and v2 scopes, parsed and checked
clients.py     registered backend clients (public JWK or JWKS, optional JWKS URL), each
               bound to a practitioner or the organisation
assertion.py   the client's private_key_jwt assertion, checked with joserfc
tokens.py      POST /auth/token and the bearer tokens it issues
middleware.py  every request but the public ones needs a valid bearer token
"""
