"""Joining a running consortium, and voting on members.

1. The new organisation runs `node init` and sends its member file to a sponsor (a member).
2. The sponsor signs a voucher for it (`voucher`): an application without one is refused.
3. The new organisation applies (`apply`) with its validator key; it starts its node with
   `--join`: a full node, not a validator, that block-syncs and fetches blobs.
4. Two thirds of the members approve (`approve`); the chain adds its validator key at power
   10 in that block, and its node starts signing blocks. The new member then registers its
   node's key (`register_node`), which signs its audit batches.
Removal is the same vote with `--remove`: the member's validator power goes to 0, its
practitioners and node lose their authority, and other nodes refuse its blob requests.
"""

from __future__ import annotations

from typing import Any

from careledger.chain.modules.identity.vouchers import (
    NODE_CONSENT_PURPOSE,
    sign_consent,
    sign_voucher,
)
from careledger.consortium.home import NodeHome
from careledger.consortium.members import MemberFile
from careledger.crypto.keyfile import KeyFile
from careledger.wallet.node_client import NodeClient, Signer

VOUCHER_BLOCKS = 100_000  # how long a membership voucher or node consent stays valid
TIMEOUT = 60.0


def membership_voucher(sponsor: KeyFile, member: MemberFile, node_url: str) -> dict[str, Any]:
    """The sponsor's voucher for `member` to apply, valid for VOUCHER_BLOCKS blocks."""
    status = NodeClient(node_url, timeout=TIMEOUT).status()
    expires_at = int(status["height"]) + VOUCHER_BLOCKS
    voucher = sign_voucher(
        sponsor.identity,
        str(status["chain_id"]),
        "apply_membership",
        member.did,
        expires_at,
        sponsor.did,
    )
    return {"chain_id": status["chain_id"], "applicant": member.did, "voucher": voucher}


def apply_for_membership(home: NodeHome, voucher: dict[str, Any], node_url: str) -> dict[str, Any]:
    """Submit this organisation's application (its name, keys and validator key)."""
    member = home.member()
    org = home.organisation_key()
    client = NodeClient(node_url, org.identity, timeout=TIMEOUT)
    signer = Signer(client, org.did, org.identity, last_nonce=0)  # not registered yet
    return signer.send(
        "identity/apply_membership",
        {
            "name": member.name,
            "encryption_key": member.encryption_key,
            "validator_pub_key": member.validator_pub_key,
            "voucher": voucher["voucher"],
        },
    )


def vote(organisation: KeyFile, node_url: str, subject: str, remove: bool) -> dict[str, Any]:
    client = NodeClient(node_url, organisation, timeout=TIMEOUT)
    return Signer(client, organisation.did, organisation.identity).send(
        "identity/approve_membership",
        {"action": "remove" if remove else "admit", "subject": subject},
    )


def register_own_node(home: NodeHome, node_url: str) -> dict[str, Any]:
    """After admission: the organisation registers its node's key, with the node's consent."""
    member = home.member()
    org = home.organisation_key()
    node = KeyFile.load(home.app.node_key)
    client = NodeClient(node_url, org, timeout=TIMEOUT)
    status = client.status()
    expires_at = int(status["height"]) + VOUCHER_BLOCKS
    consent = sign_consent(
        node.identity,
        str(status["chain_id"]),
        org.did,
        member.node_encryption_key,
        expires_at,
        purpose=NODE_CONSENT_PURPOSE,
    )
    return Signer(client, org.did, org.identity).send(
        "identity/register_node",
        {
            "did": node.did,
            "encryption_key": member.node_encryption_key,
            "name": f"{member.name[:190]} node",
            "consent": consent,
        },
    )
