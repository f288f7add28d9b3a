"""A member file: the public half of one organisation's node, exchanged before genesis.

`careledger node init` writes it on the organisation's own machine; the founders send theirs to
whoever assembles the genesis, and every founder checks the genesis against the files that were
agreed. It holds public keys and addresses only: the private halves never leave the machine.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

import orjson

from careledger.crypto.keys import KeyError_, ed25519_from_did

MEMBER_FORMAT = 1
MAX_MEMBER_FILE = 16 * 1024  # a member file is a few hundred bytes
_HEX32 = re.compile(r"[0-9a-f]{64}")
_NODE_ID = re.compile(r"[0-9a-f]{40}")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*")
_NAME_MAX = 200


class ConsortiumError(ValueError):
    """A member file, genesis, peer list or data directory that cannot be used: the message
    says which and why, and nothing has been written."""


@dataclass(frozen=True)
class MemberFile:
    name: str
    did: str
    encryption_key: str  # hex X25519
    node_did: str  # the node's own key (signs its audit batches)
    node_encryption_key: str  # hex X25519
    validator_pub_key: str  # hex Ed25519 CometBFT consensus key
    node_id: str  # CometBFT's P2P node id (hex, 20 bytes)
    p2p_address: str  # HOST:PORT the other nodes dial
    api_url: str  # the node API, gateway and portal

    def __post_init__(self) -> None:
        _check_name(self.name)
        for field, did in (("did", self.did), ("node_did", self.node_did)):
            _check_did(field, did)
        for field in ("encryption_key", "node_encryption_key", "validator_pub_key"):
            if not _HEX32.fullmatch(getattr(self, field)):
                raise ConsortiumError(f"member file: {field} must be 32 bytes of lowercase hex")
        if not _NODE_ID.fullmatch(self.node_id):
            raise ConsortiumError("member file: node_id must be 20 bytes of lowercase hex")
        if self.did == self.node_did:
            raise ConsortiumError("member file: the node's did must differ from the organisation's")
        check_dialable("member file: p2p_address", self.p2p_address)
        scheme, sep, address = self.api_url.partition("://")
        if scheme not in ("http", "https") or not sep:
            raise ConsortiumError("member file: api_url must be http(s)://HOST:PORT")
        check_dialable("member file: api_url", address)

    @property
    def p2p_peer(self) -> str:
        """This node as a CometBFT peer: ID@HOST:PORT."""
        return f"{self.node_id}@{self.p2p_address}"

    def to_json(self) -> bytes:
        doc = {"careledger_member": MEMBER_FORMAT, **self.__dict__}
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"

    @classmethod
    def parse(cls, raw: bytes, source: str = "member file") -> MemberFile:
        if len(raw) > MAX_MEMBER_FILE:
            raise ConsortiumError(f"{source}: larger than {MAX_MEMBER_FILE} bytes")
        try:
            doc: Any = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ConsortiumError(f"{source}: not JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("careledger_member") != MEMBER_FORMAT:
            raise ConsortiumError(f"{source}: not a CareLedger member file (format 1)")
        fields = set(cls.__dataclass_fields__)
        missing = sorted(fields - set(doc))
        extra = sorted(set(doc) - fields - {"careledger_member"})
        if missing or extra:
            raise ConsortiumError(f"{source}: missing {missing} / unknown {extra} fields")
        if not all(isinstance(doc[f], str) for f in fields):
            raise ConsortiumError(f"{source}: every field is a string")
        try:
            return cls(**{f: doc[f] for f in fields})
        except ConsortiumError as exc:
            raise ConsortiumError(str(exc).replace("member file", source, 1)) from None


def _check_name(name: str) -> None:
    if not name.strip() or len(name) > _NAME_MAX or not name.isprintable():
        raise ConsortiumError(f"member file: name must be 1 to {_NAME_MAX} printable characters")


def _check_did(field: str, did: str) -> None:
    try:
        ed25519_from_did(did)
    except KeyError_:
        raise ConsortiumError(f"member file: {field} is not an Ed25519 did:key") from None


def check_host_port(what: str, value: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) with a port in 1..65535; ConsortiumError otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConsortiumError(f"{what}: {value!r} is not HOST:PORT")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        if not _HOSTNAME.fullmatch(bare):
            raise ConsortiumError(f"{what}: {host!r} is not a host name or address") from None
    return bare, int(port)


def check_dialable(what: str, value: str) -> None:
    """HOST:PORT the other members can dial: not 0.0.0.0 or :: (which each of them would
    read as itself), nor a multicast or broadcast address."""
    host, _ = check_host_port(what, value)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return  # a host name: resolved by each member
    if (
        address.is_unspecified
        or address.is_multicast
        or address == ipaddress.IPv4Address("255.255.255.255")
    ):
        raise ConsortiumError(f"{what}: {host} is not an address other members can reach")


def parse_peers(value: str, own_node_id: str = "") -> tuple[str, ...]:
    """A comma-separated ID@HOST:PORT list; refuses a malformed entry or this node itself."""
    peers = tuple(p.strip() for p in value.split(",") if p.strip())
    for peer in peers:
        node_id, sep, address = peer.partition("@")
        if not sep or not _NODE_ID.fullmatch(node_id):
            raise ConsortiumError(f"peer {peer!r}: expected ID@HOST:PORT with a 40-hex node id")
        check_host_port(f"peer {peer!r}", address)
        if node_id == own_node_id:
            raise ConsortiumError(f"peer {peer!r} is this node itself")
    return peers
