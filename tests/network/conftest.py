"""Network tests need the CometBFT binary (`make cometbft`); without it they are skipped,
except in CI, where a missing binary must fail the run rather than pass it silently."""

from __future__ import annotations

import os

import pytest

from careledger.localnet.network import NetError, cometbft_binary


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    try:
        cometbft_binary()
        missing = None
    except NetError as exc:
        if os.environ.get("CI"):
            raise
        missing = pytest.mark.skip(reason=str(exc))
    for item in items:
        if "tests/network/" in str(item.fspath):
            item.add_marker(pytest.mark.network)
            if missing is not None:
                item.add_marker(missing)
