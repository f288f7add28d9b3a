"""The consortium tests that run on separate hosts (network namespaces, marked `hosts`) need
root and `ip netns`; those that start nodes (marked `network`) need CometBFT as well. Without
them the tests are skipped with the reason, except in CI (env CI set), where a missing
capability fails the run rather than passing it silently, as in tests/network/."""

from __future__ import annotations

import os

import pytest
from hosts import hosts_unavailable, nft_unavailable

from careledger.localnet.network import NetError, cometbft_binary


def _missing_cometbft() -> str | None:
    try:
        cometbft_binary()
    except NetError as exc:
        return str(exc)
    return None


def _skip_or_fail(reason: str | None) -> pytest.MarkDecorator | None:
    if reason is None:
        return None
    if os.environ.get("CI"):
        raise pytest.UsageError(f"CI must run the consortium host tests: {reason}")
    return pytest.mark.skip(reason=reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    ours = [item for item in items if "tests/consortium/" in str(item.fspath)]
    needs = {
        "hosts": lambda: hosts_unavailable(),
        "nft": lambda: nft_unavailable(),
        "network": _missing_cometbft,
        "toxiproxy": _missing_toxiproxy,
    }
    probed: dict[str, pytest.MarkDecorator | None] = {}
    for item in ours:
        for marker, probe in needs.items():
            if item.get_closest_marker(marker) is None:
                continue
            if marker not in probed:
                probed[marker] = _skip_or_fail(probe())
            skip = probed[marker]
            if skip is not None:
                item.add_marker(skip)


def _missing_toxiproxy() -> str | None:
    from toxiproxy import ToxiproxyNotFound, toxiproxy_binary

    try:
        toxiproxy_binary()
    except ToxiproxyNotFound as exc:
        return str(exc)
    return None
