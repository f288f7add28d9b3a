"""What the read path caches (issue 13) is what it would have computed: a patient's scope
keys derived once per key file, one verifying TLS context per trust setting."""

from __future__ import annotations

import ssl

import certifi
import pytest

from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.wallet.keyring import OwnKeys
from careledger.wallet.node_client import NodeClient, default_tls


def _public(pair: object) -> bytes:
    return pair.public_bytes  # type: ignore[attr-defined, no-any-return]


def test_own_keys_are_the_key_files_and_follow_a_rotation() -> None:
    first = Identity.generate()
    keyfile = KeyFile(first.did, "patient", first)
    own = OwnKeys(keyfile)
    pair = own.scope_pair(first.did, "clinical", 1)
    assert pair is not None and _public(pair) == keyfile.scope_key("clinical", 1).public_bytes
    assert own.scope_pair(first.did, "clinical", 1) is pair  # derived once
    assert own.scope_pair(first.did, "mental-health", 1) is not pair
    assert own.scope_pair(Identity.generate().did, "clinical", 1) is None  # not its records

    rotated = keyfile.rotated(Identity.generate(), first_epoch=2)
    after = OwnKeys(rotated)
    new_pair = after.scope_pair(first.did, "clinical", 2)
    assert new_pair is not None and _public(new_pair) != _public(pair)
    old_pair = after.scope_pair(first.did, "clinical", 1)
    assert old_pair is not None and _public(old_pair) == _public(pair)
    with pytest.raises(AttributeError):  # the cache cannot be pointed at another key file
        own.keyfile = rotated  # type: ignore[misc]


def test_the_shared_tls_context_verifies_and_follows_the_trust_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    shared = default_tls()
    assert shared is default_tls()
    assert shared.verify_mode == ssl.CERT_REQUIRED and shared.check_hostname
    client = NodeClient("https://127.0.0.1:1")
    try:
        assert client.http._transport._pool._ssl_context is shared  # type: ignore[attr-defined]
    finally:
        client.close()
    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())
    other = default_tls()
    assert other is not shared and other.verify_mode == ssl.CERT_REQUIRED
