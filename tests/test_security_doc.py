"""docs/security.md names a test for every defence: each named test must exist, so that the
table cannot point at a test that was renamed or never written."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAMED = re.compile(r"`(tests/[\w/]+\.py)::(\w+)")


def test_every_test_the_threat_model_names_exists() -> None:
    text = (ROOT / "docs" / "security.md").read_text()
    named = NAMED.findall(text)
    assert len(named) > 100  # the table is there and the pattern still reads it
    missing = [
        f"{path}::{name}"
        for path, name in named
        if not (ROOT / path).exists()
        or not re.search(rf"^(async )?def {name}\(", (ROOT / path).read_text(), re.M)
    ]
    assert missing == []


# Vitest tests (the portal's, run by `npm test` in `make test`) are named
# `portal/tests/<file>.test.ts` > describe > test, or the file followed by quoted test names.
VITEST_FILE = re.compile(r"portal/tests/([\w.-]+\.test\.ts)")
VITEST_NAMED = re.compile(r"`portal/tests/([\w.-]+\.test\.ts)((?: > [^`>]+)+)`")


def test_every_portal_test_the_threat_model_names_exists() -> None:
    text = (ROOT / "docs" / "security.md").read_text()
    files = set(VITEST_FILE.findall(text))
    assert files  # the portal's rows are there
    missing = [name for name in files if not (ROOT / "portal" / "tests" / name).exists()]
    assert missing == []
    unnamed = [
        f"{name}{path}"
        for name, path in VITEST_NAMED.findall(text)
        if path.rsplit(" > ", 1)[-1].strip() not in (ROOT / "portal" / "tests" / name).read_text()
    ]
    assert unnamed == []
