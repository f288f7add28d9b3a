"""`careledger node rotate-key`: move the organisation's did to a new key (docs/operations.md).

The chain's `identity/rotate_key` takes a certificate by the current key and a proof by the
new one (chain/modules/identity/handler.py). The did stays; from the rotation's block on the
chain accepts only the new key, and what members wrap to the organisation uses its new
encryption key. The key file keeps the old master secret in `previous` (KeyFile.rotated), so
grants wrapped to the old encryption key still open (wallet/keyring.encryption_keys).

Order, so that no crash loses the organisation's identity:
1. the new key file is written beside the current one (`organisation.json.pending`, 0600)
   before the transaction is sent: once the chain knows the new key it exists on disk;
2. after the chain's answer, the node is asked which key the did now has: the new one, or a
   refusal or the old key (the pending file is removed, nothing changed);
3. the current file is kept as `organisation.json.previous-<height>` (0600), the pending file
   renamed over `organisation.json` (atomic). member.json stays what the members agreed
   (the genesis names it so); NodeHome.member accepts its encryption key from `previous`.
A running node keeps signing with the key it loaded: it must be restarted (the command says
so); until then its requests to the other nodes are refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from careledger.chain.modules.identity.messages import rotation_payload
from careledger.consortium.home import NodeHome
from careledger.consortium.members import ConsortiumError
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.wallet.node_client import NodeClient, NodeError, Signer

TIMEOUT = 60.0


@dataclass(frozen=True)
class Rotated:
    did: str
    height: int
    previous_file: Path
    signing_key: str  # the new public signing key (hex)


def rotate_organisation_key(home: NodeHome, node_url: str) -> Rotated:
    home.member()  # keys and member file of one home
    current = home.organisation_key()
    pending = home.app.organisation_key.with_name("organisation.json.pending")
    if pending.exists():
        raise ConsortiumError(
            f"{pending} exists: an earlier rotation did not finish. Compare its key with the "
            "did's key on chain (query identity/identity) before removing or installing it"
        )
    client = NodeClient(node_url, current, timeout=TIMEOUT)
    status = client.status()
    new = Identity.generate()
    rotated = current.rotated(new, _first_epoch(current, int(status["height"])))
    rotated.save(pending)
    payload = rotation_payload(current.identity, new, str(status["chain_id"]), did=current.did)
    try:
        result = Signer(client, current.did, current.identity).send("identity/rotate_key", payload)
    except NodeError as exc:
        if exc.status < 500:  # refused: the chain has not changed
            pending.unlink()
        raise ConsortiumError(f"the node refused the key rotation: {exc.message}") from None
    _require_on_chain(node_url, current.did, new, pending)
    height = int(result.get("height") or status["height"])
    kept = _install(home, pending, height)
    home.member()  # the home is consistent again
    return Rotated(current.did, height, kept, new.signing_public.hex())


def _first_epoch(current: KeyFile, height: int) -> int:
    """KeyFile.rotated's bound for the old master: organisations have no scope epochs, so the
    height is used (increasing across rotations)."""
    last = current.previous[-1].below_epoch if current.previous else 0
    return max(height + 1, last + 1)


def _require_on_chain(node_url: str, did: str, new: Identity, pending: Path) -> None:
    """The committed block said yes; the chain is asked which key the did has, with a request
    only the new key can sign (the node authenticates with the did's current key)."""
    client = NodeClient(node_url, new, did=did, timeout=TIMEOUT)
    try:
        ident = client.query("identity/identity", did=did)
    except NodeError as exc:
        if exc.status != 401:
            raise ConsortiumError(
                f"cannot confirm the rotation ({exc.message}); {pending} holds the new key: "
                "keep it until the chain's answer is known"
            ) from None
        ident = {}
    if ident.get("signing_key") != new.signing_public.hex():
        pending.unlink()
        raise ConsortiumError(f"the chain does not show {did} with the new key: nothing changed")


def _install(home: NodeHome, pending: Path, height: int) -> Path:
    path = home.app.organisation_key
    kept = path.with_name(f"organisation.json.previous-{height}")
    fd = os.open(kept, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(path.read_bytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(pending, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return kept
