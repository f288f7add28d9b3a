"""The genesis document: the chain's name, start time and founding organisations.

Each founder may name its node (`node`: the did of the node's own key, `node_encryption_key`
its X25519 public key): the identity module registers it at genesis as a "node" identity
acting for the founder, so the node signs its audit batches from the first block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from careledger.crypto.keys import Identity


@dataclass(frozen=True)
class GenesisOrganisation:
    did: str
    name: str
    encryption_key: str  # hex X25519 public key
    validator_pub_key: str = ""  # hex Ed25519 consensus key; empty in solo mode
    node: str = ""  # did of the organisation's node key; "" for none
    node_encryption_key: str = ""  # hex X25519 public key of the node ("" without a node)

    def to_json(self) -> dict[str, str]:
        return {
            "did": self.did,
            "name": self.name,
            "encryption_key": self.encryption_key,
            "validator_pub_key": self.validator_pub_key,
            "node": self.node,
            "node_encryption_key": self.node_encryption_key,
        }


@dataclass(frozen=True)
class Genesis:
    chain_id: str
    genesis_time: str  # RFC 3339, UTC
    organisations: tuple[GenesisOrganisation, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        """Refuse founders that share a did (their own or their nodes') or a validator key:
        two members with one consensus key would, once both are removed, make CometBFT remove
        it twice and halt."""
        nodes = [o.node for o in self.organisations if o.node]
        dids = [o.did for o in self.organisations] + nodes
        keys = [o.validator_pub_key for o in self.organisations if o.validator_pub_key]
        for what, values in (("did", dids), ("validator key", keys)):
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"genesis: founding organisations share a {what}: {repeated[0]}")

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "chain_id": self.chain_id,
                "genesis_time": self.genesis_time,
                "organisations": [o.to_json() for o in self.organisations],
            },
            option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS,
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Genesis:
        try:
            data = orjson.loads(raw)
            orgs = tuple(
                GenesisOrganisation(
                    did=str(o["did"]),
                    name=str(o["name"]),
                    encryption_key=str(o["encryption_key"]),
                    validator_pub_key=str(o.get("validator_pub_key", "")),
                    node=str(o.get("node", "")),
                    node_encryption_key=str(o.get("node_encryption_key", "")),
                )
                for o in data["organisations"]
            )
            return cls(str(data["chain_id"]), str(data["genesis_time"]), orgs)
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"not a CareLedger genesis document: {exc}") from exc

    @classmethod
    def for_organisations(
        cls,
        chain_id: str,
        organisations: list[tuple[str, Identity]],
        validator_keys: list[str] | None = None,
        nodes: list[Identity | None] | None = None,
    ) -> Genesis:
        """A genesis naming each (name, identity) as a founding member, each with its node
        (`nodes`, in the same order; None or a None item: no node)."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        keys = validator_keys or [""] * len(organisations)
        node_keys = nodes or [None] * len(organisations)
        orgs = tuple(
            founder(name, ident, vkey, node)
            for (name, ident), vkey, node in zip(organisations, keys, node_keys, strict=True)
        )
        return cls(chain_id, now, orgs)


def founder(
    name: str, org: Identity, validator_pub_key: str = "", node: Identity | None = None
) -> GenesisOrganisation:
    """A founding organisation's genesis entry, with its node's did and key if it has one."""
    return GenesisOrganisation(
        org.did,
        name,
        org.encryption_public.hex(),
        validator_pub_key,
        node.did if node else "",
        node.encryption_public.hex() if node else "",
    )
