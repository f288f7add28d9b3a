"""The records module's state: its keys and the only code that reads or writes them.

Layout under the `records/` prefix (`<v>` is the version as 10 zero-padded digits, so that
prefix iteration returns versions in order):
  rec/<patient>/<record>          a record: resource type, number of versions, erasure height,
                                  `org`: the organisation version 1's author acted for (""
                                  if the patient wrote it), the only one that may add more
  ver/<patient>/<record>/<v>      one version's anchor: blob hash, commitment, recipient
                                  labels, scope, author, `org` (the organisation the author
                                  wrote this version for, "" for the patient), tombstone
                                  flag, height
  blob/<blob hash>                which record version a blob belongs to (for the node's blob
                                  routes, for `careledger verify`, and so a blob anchors once)
  scope/<patient>/<scope>/<e>     a published scope public key (`<e>`: epoch, zero-padded)

`<record>` is the record's pseudonymous name, 32 bytes in hex, opaque to the chain: writers
key it with the patient's naming key (`crypto/naming.py`), so the FHIR logical id never
appears on-chain and nobody without the key can tell which name stands for a known id.
Nothing here is secret or identifying: dids are pseudonyms, the rest are hashes and labels.
"""

from __future__ import annotations

from typing import Any

from careledger.chain.state import KV

MODULE = "records"


def _v(number: int) -> str:
    return f"{number:010d}"


class RecordsKeeper:
    def __init__(self, kv: KV) -> None:
        self.kv = kv

    # --- records and versions -------------------------------------------------------------

    def record(self, patient: str, record: str) -> dict[str, Any] | None:
        value = self.kv.get(f"rec/{patient}/{record}")
        return value if isinstance(value, dict) else None

    def put_record(self, patient: str, rec: dict[str, Any]) -> None:
        self.kv.set(f"rec/{patient}/{rec['record']}", rec)

    def record_by_prefix(self, patient: str, prefix: str) -> dict[str, Any] | None:
        """The patient's record whose name starts with `prefix` (hex; the audit's 16-byte
        prefixes), if any: one index seek."""
        for _, value in self.kv.items(f"rec/{patient}/{prefix}"):
            return value if isinstance(value, dict) else None
        return None

    def records_of(self, patient: str) -> list[dict[str, Any]]:
        return [value for _, value in self.kv.items(f"rec/{patient}/")]

    def version(self, patient: str, record: str, number: int) -> dict[str, Any] | None:
        value = self.kv.get(f"ver/{patient}/{record}/{_v(number)}")
        return value if isinstance(value, dict) else None

    def put_version(self, patient: str, record: str, anchor: dict[str, Any]) -> None:
        self.kv.set(f"ver/{patient}/{record}/{_v(anchor['version'])}", anchor)

    def versions(self, patient: str, record: str) -> list[dict[str, Any]]:
        return [value for _, value in self.kv.items(f"ver/{patient}/{record}/")]

    # --- blobs ----------------------------------------------------------------------------

    def blob(self, blob_hash: str) -> dict[str, Any] | None:
        value = self.kv.get(f"blob/{blob_hash}")
        return value if isinstance(value, dict) else None

    def put_blob(self, blob_hash: str, patient: str, record: str, version: int) -> None:
        self.kv.set(f"blob/{blob_hash}", {"patient": patient, "record": record, "version": version})

    def blobs(self) -> list[tuple[str, dict[str, Any]]]:
        """Every anchored blob hash and the record version it belongs to."""
        return [(key[len("blob/") :], value) for key, value in self.kv.items("blob/")]

    # --- scope keys -----------------------------------------------------------------------

    def scope_key(self, patient: str, scope: str, epoch: int) -> dict[str, Any] | None:
        value = self.kv.get(f"scope/{patient}/{scope}/{_v(epoch)}")
        return value if isinstance(value, dict) else None

    def current_scope_key(self, patient: str, scope: str) -> dict[str, Any] | None:
        found = None
        for _, value in self.kv.items(f"scope/{patient}/{scope}/"):
            found = value  # keys sort by epoch; the last one is current
        return found

    def put_scope_key(self, patient: str, key: dict[str, Any]) -> None:
        self.kv.set(f"scope/{patient}/{key['scope']}/{_v(key['epoch'])}", key)

    def scope_keys(self, patient: str) -> list[dict[str, Any]]:
        return [value for _, value in self.kv.items(f"scope/{patient}/")]
