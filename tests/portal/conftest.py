"""Fixtures of the portal's end-to-end tests: a real `careledger up` (with `--demo` where the
flows need its identities), Debian's chromium driven by Playwright, and pages at phone and
desktop sizes that fail the test on any console error, uncaught exception or CSP violation.

Costs are shared where the machine feels them: one browser per session, one node per module
(a demo node loads three Synthea patients), a fresh browser context per page.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Error, sync_playwright
from portalutil import (
    CHROMIUM_ARGS,
    DemoNode,
    OpenPortal,
    PortalPage,
    chromium_path,
    in_ci,
    open_portal,
    require_built_portal,
)

from nodeutil import NodeProcess, free_port


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless chromium (Debian's, or $CHROMIUM_BIN). Missing outside CI: the browser tests
    are skipped with the reason; missing in CI ($CI=true): they fail. One per module, not per
    session: Playwright's sync API keeps an event loop running in this thread while it is
    open, and the tests run after tests/portal/ call asyncio.run()."""
    executable = chromium_path()
    if not os.access(executable, os.X_OK):
        message = (
            f"chromium not found at {executable} (apt-get install chromium, or set CHROMIUM_BIN)"
        )
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        except Error as exc:
            pytest.fail(f"chromium at {executable} did not start: {exc}")
        try:
            yield launched
        finally:
            launched.close()


def _start_node(root: Path, *extra: str) -> NodeProcess:
    require_built_portal()
    process = NodeProcess(root / "data", free_port())
    process.start("--block-interval", "0.05", *extra)
    return process


@pytest.fixture(scope="module")
def plain_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A `careledger up` without demo data: for what needs only the pages to be served."""
    process = _start_node(tmp_path_factory.mktemp("portal-node"))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def demo_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoNode]:
    """`careledger up --demo` on a fresh data directory, once its demo data is in."""
    node = DemoNode(_start_node(tmp_path_factory.mktemp("portal-demo"), "--demo"))
    try:
        node.wait_ready()
        yield node
    finally:
        node.process.stop()


def _portal_factory(browser: Browser, url: str) -> Iterator[OpenPortal]:
    opened: list[PortalPage] = []

    def open_page(size: str = "desktop", base_url: str = url) -> PortalPage:
        portal = open_portal(browser, base_url, size)
        opened.append(portal)
        return portal

    yield open_page
    problems = [problem for portal in opened for problem in portal.console.problems]
    for portal in opened:
        portal.context.close()
    if problems:
        pytest.fail("the pages reported errors:\n  " + "\n  ".join(problems))


@pytest.fixture
def portal(browser: Browser, plain_node: NodeProcess) -> Iterator[OpenPortal]:
    """`portal("phone" | "desktop")`: a fresh browser context and page on a plain node."""
    yield from _portal_factory(browser, plain_node.url)


@pytest.fixture
def demo_portal(browser: Browser, demo_node: DemoNode) -> Iterator[OpenPortal]:
    """`demo_portal("phone" | "desktop")`: a fresh browser context and page on the demo node."""
    yield from _portal_factory(browser, demo_node.url)
