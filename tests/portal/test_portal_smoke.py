"""The portal is served, safely, and its first page works in a real browser at both sizes."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from mnemonic import Mnemonic
from playwright.sync_api import Browser
from portalflows import restore_from_phrase
from portalutil import OpenPortal, PortalPage, open_portal

from nodeutil import NodeProcess, free_port

HOME_LINKS = ["I am a patient", "I am a clinician", "Explore the ledger"]


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_home_page_shows_three_ways_in_and_passes_axe(portal: OpenPortal, size: str) -> None:
    home = portal(size)
    page = home.goto("/")
    assert page.locator("h1").count() == 1
    for name in HOME_LINKS:
        link = page.get_by_role("link", name=re.compile(name))
        assert link.is_visible(), f"no visible link {name!r}"
    # The three choices sit inside the viewport's width: nothing to scroll sideways for.
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= home.width
    home.axe()
    home.screenshot("home")
    home.assert_clean()


def test_each_home_link_opens_a_page(portal: OpenPortal) -> None:
    home = portal("desktop")
    page = home.goto("/")
    for name, route in zip(
        HOME_LINKS, ("#/patient/start", "#/practitioner/sign-in", "#/explorer"), strict=True
    ):
        assert page.get_by_role("link", name=re.compile(name)).get_attribute("href") == route


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_unknown_route_says_page_not_found(portal: OpenPortal, size: str) -> None:
    lost = portal(size)
    lost.goto("/no/such/page")
    assert lost.heading() == "Page not found"
    assert lost.page.get_by_role("link", name="Go to the start page").is_visible()
    lost.axe()
    lost.assert_clean()


# On the first load of "#/race", once the app's module has rendered (module scripts run before
# DOMContentLoaded) and before Preact runs its effects (after the next paint), go elsewhere.
_HASH_CHANGE_BEFORE_EFFECTS = """
if (location.hash === "#/race") {
  document.addEventListener("DOMContentLoaded", () => { location.hash = "#/patient/start"; });
}
"""


def test_a_hash_change_before_the_first_effects_still_routes(portal: OpenPortal) -> None:
    """The router listens for hashchange from an effect, which runs a frame after the first
    render: a navigation in between (a test's hash change at once after a reload's load event
    did it, on a busy machine) must still change the page, not leave the first route shown."""
    patient = portal("desktop")
    page = patient.page
    page.add_init_script(_HASH_CHANGE_BEFORE_EFFECTS)
    page.goto(f"{patient.base_url}/#/race")
    assert page.url.endswith("#/patient/start")
    page.locator("main h1", has_text="Your health records").wait_for()
    control = page.get_by_role("tab", name="Create a new identity")
    control.wait_for()
    assert patient.heading() == "Your health records"
    patient.assert_clean()


def test_keyboard_reaches_skip_link_then_the_choices(portal: OpenPortal) -> None:
    home = portal("desktop")
    page = home.goto("/")
    page.keyboard.press("Tab")
    assert _focused_text(home) == "Skip to content"
    reached: list[str] = []
    for _ in range(10):
        page.keyboard.press("Tab")
        text = _focused_text(home)
        reached.extend(name for name in HOME_LINKS if text.startswith(name))
        if len(reached) == len(HOME_LINKS):
            break
    assert reached == HOME_LINKS
    # The skip link moves the focus to the content and leaves the page where it is (the
    # hash belongs to the router: following "#main" would open a page "main").
    page.reload()
    page.locator("main h1").wait_for()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement && document.activeElement.id") == "main"
    assert home.heading() != "Page not found"
    assert page.url.endswith("#/")
    home.assert_clean()


def _focused_text(home: PortalPage) -> str:
    text: str = home.page.evaluate(
        "() => (document.activeElement && document.activeElement.innerText || '').trim()"
    )
    return text


# --- served safely -------------------------------------------------------------------------


REQUIRED_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}


def _csp_directives(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0]] = words[1:]
    return directives


def _portal_paths(url: str) -> list[str]:
    """The index and every file it loads (the hashed bundles), and the icon."""
    html = httpx.get(url + "/").text
    assets = re.findall(r'(?:src|href)="(/assets/[^"]+)"', html)
    assert assets, "index.html loads no bundle from /assets/"
    return ["/", "/index.html", "/favicon.svg", *assets]


def test_portal_files_carry_the_security_headers(plain_node: NodeProcess) -> None:
    for path in _portal_paths(plain_node.url):
        answer = httpx.get(plain_node.url + path)
        assert answer.status_code == 200, path
        for name, value in REQUIRED_HEADERS.items():
            assert answer.headers.get(name) == value, f"{path}: {name}"
        csp = _csp_directives(answer.headers["content-security-policy"])
        assert csp["default-src"] == ["'none'"], path
        assert csp["script-src"] == ["'self'", "'wasm-unsafe-eval'"], path
        assert csp["style-src"] == ["'self'"], path
        assert csp["connect-src"] == ["'self'"], path
        assert csp["frame-ancestors"] == ["'none'"], path
        assert "'unsafe-inline'" not in str(csp) and "'unsafe-eval'" not in str(csp)


class _InlineCode(HTMLParser):
    """Collects what a strict CSP would refuse: inline scripts, event handler and style
    attributes, and scripts or styles from another origin."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name, _ in attrs:
            if name.startswith("on") or name == "style":
                self.found.append(f"<{tag} {name}=...>")
        source = values.get("src") or (values.get("href") if tag == "link" else None)
        if source and urlsplit(source).netloc:
            self.found.append(f"<{tag}> from another origin: {source}")
        if tag == "script":
            if not values.get("src"):
                self.found.append("<script> without src")
            self._in_script = True
        if tag == "style":
            self.found.append("<style> element")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.found.append(f"inline script: {data.strip()[:60]}")


def test_index_has_no_inline_script_or_style(plain_node: NodeProcess) -> None:
    parser = _InlineCode()
    parser.feed(httpx.get(plain_node.url + "/").text)
    assert parser.found == []


def _raw_get(port: int, path: str) -> tuple[int, bytes]:
    """A GET with the path sent exactly as written (an HTTP client would resolve `..`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        conn.sendall(request.encode())
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer


@pytest.mark.parametrize(
    "path",
    [
        "/assets/../../app.py",
        "/assets/../../../careledger/cli.py",
        "/assets/%2e%2e/%2e%2e/app.py",
        "/assets/..%2f..%2fapp.py",
        "/assets/%2e%2e%2f%2e%2e%2f__init__.py",
        "/assets/....//....//app.py",
    ],
)
def test_path_traversal_under_assets_is_not_found(plain_node: NodeProcess, path: str) -> None:
    status, answer = _raw_get(plain_node.port, path)
    assert status in (400, 404), path
    assert b"import" not in answer and b"def " not in answer
    # The node keeps serving.
    assert httpx.get(plain_node.url + "/").status_code == 200


def test_unknown_asset_is_not_found_with_headers(plain_node: NodeProcess) -> None:
    answer = httpx.get(plain_node.url + "/assets/no-such-file.js")
    assert answer.status_code == 404
    assert "content-security-policy" in answer.headers


# --- the node goes away mid-session ---------------------------------------------------------


@pytest.fixture
def doomed_node(tmp_path: Path) -> Iterator[NodeProcess]:
    """A node of this test's own, for the test to stop."""
    process = NodeProcess(tmp_path / "data", free_port())
    process.start("--block-interval", "0.05")
    try:
        yield process
    finally:
        process.stop()


def test_node_down_mid_session_shows_a_clear_message(
    browser: Browser, doomed_node: NodeProcess
) -> None:
    visitor = open_portal(browser, doomed_node.url, "phone")
    try:
        page = visitor.goto("/patient/start")
        doomed_node.stop()
        # the browser reports each refused connection in its console: expected here
        with visitor.console.allowing(r"Failed to load resource|ERR_CONNECTION_REFUSED"):
            phrase = Mnemonic("english").generate(256)
            restore_from_phrase(visitor, phrase)
            assert re.search(r"node|reach|connect", visitor.alert(), re.I)
            assert page.locator("main h1").is_visible()
            visitor.goto("/explorer")
            assert visitor.alert()
            assert page.locator("main h1").is_visible()
        visitor.assert_clean()
    finally:
        visitor.context.close()
