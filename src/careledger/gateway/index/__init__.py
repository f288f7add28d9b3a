"""The gateway's index of the records its organisation can decrypt (SQLite, in gateway.sqlite).

store.py   FHIR (type, id) -> the record (patient did, keyed name, version), versions
...        search parameters, queries and the chain follower that keeps it current
"""
