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

    def exists(self) -> bool:
        return self.genesis.exists()

    def load_genesis(self) -> Genesis:
        return Genesis.from_json(self.genesis.read_bytes())


def initialise(root: Path, organisation: str = "Demo Hospital") -> KeyFile:
    """A fresh one-organisation chain: its genesis and the organisation's key file."""
    data = DataDir(root)
    make_private_dir(root)  # 0700 and every file in it 0600, whatever the umask
    identity = Identity.generate()
    keyfile = KeyFile(did=identity.did, kind="organisation", identity=identity, name=organisation)
    keyfile.save(data.organisation_key)
    chain_id = "careledger-" + os.urandom(3).hex()
    genesis = Genesis.for_organisations(chain_id, [(organisation, identity)])
    write_private_file(data.genesis, genesis.to_json())
    return keyfile
