"""A node's data directory: where its genesis, state, blocks, blobs and keys live."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from careledger.chain.genesis import Genesis
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.crypto.privatefs import make_private_dir, write_private_file


@dataclass(frozen=True)
class DataDir:
    root: Path

    @property
    def genesis(self) -> Path:
        return self.root / "genesis.json"

    @property
    def state(self) -> Path:
        return self.root / "state.sqlite"

    @property
    def blocks(self) -> Path:
        return self.root / "blocks.sqlite"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def organisation_key(self) -> Path:
        return self.keys / "organisation.json"

    @property
    def node_key(self) -> Path:
        """The node's own key (kind "node"): it signs the node's audit batches. Registered at
        genesis for a founder's node, with identity/register_node for a later member's."""
        return self.keys / "node.json"

    def exists(self) -> bool:
        return self.genesis.exists()

    def load_genesis(self) -> Genesis:
        return Genesis.from_json(self.genesis.read_bytes())


def initialise(root: Path, organisation: str = "Demo Hospital") -> KeyFile:
    """A fresh one-organisation chain: its genesis, the organisation's key file and its
    node's (registered at genesis); the organisation's key file."""
    data = DataDir(root)
    make_private_dir(root)  # 0700 and every file in it 0600, whatever the umask
    keyfile, node = write_organisation_keys(data, organisation)
    chain_id = "careledger-" + os.urandom(3).hex()
    genesis = Genesis.for_organisations(
        chain_id, [(organisation, keyfile.identity)], nodes=[node.identity]
    )
    write_private_file(data.genesis, genesis.to_json())
    return keyfile


def write_organisation_keys(data: DataDir, organisation: str) -> tuple[KeyFile, KeyFile]:
    """New key files for an organisation and its node, saved in the data directory."""
    identity, node_identity = Identity.generate(), Identity.generate()
    keyfile = KeyFile(did=identity.did, kind="organisation", identity=identity, name=organisation)
    node = KeyFile(node_identity.did, "node", node_identity, f"{organisation} node")
    keyfile.save(data.organisation_key)
    node.save(data.node_key)
    return keyfile, node
