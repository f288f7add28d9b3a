"""Helpers of the portal's end-to-end tests: a real browser (Debian's chromium driven by
Playwright) against a real `careledger up` process.

Imported by the tests as `portalutil` (beside `nodeutil`; not `conftest`, see nodeutil's
docstring). The fixtures that use these live in tests/portal/conftest.py.

What every page is held to, whatever the test: no console error, no uncaught exception, no
Content-Security-Policy violation (`PortalPage.assert_clean`, also checked when the fixture
closes the page); axe-core finds no serious or critical violation (`check_axe`); and no
request the page sends carries a secret (`RequestRecorder.assert_never_sent`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_plus

import httpx
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Request

from careledger.crypto.claim import open_claim_package
from careledger.crypto.keyfile import NAMING_KEY_LABEL, SCOPE_ROOT_LABEL, KeyFile
from careledger.crypto.keys import (
    ENCRYPTION_LABEL,
    SIGNING_LABEL,
    Identity,
    derive_secret,
    identity_from_phrase,
)
from nodeutil import NodeProcess

REPO = Path(__file__).resolve().parents[2]
PORTAL = REPO / "portal"
AXE_SCRIPT = PORTAL / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = REPO / "test-output" / "portal"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
# Chromium in a container: no sandbox (no user namespaces), no GPU, and nothing that calls
# out to Google's services (the tests run offline and must not wait for them).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

SIZES: dict[str, dict[str, Any]] = {
    "phone": {
        "viewport": {"width": 390, "height": 844},
        "is_mobile": True,
        "has_touch": True,
        "device_scale_factor": 1,
    },
    "desktop": {"viewport": {"width": 1280, "height": 800}, "device_scale_factor": 1},
}

# How long the page may take to show something after an action. Generous: the machine is
# shared and slow, and a claim runs Argon2id in WebAssembly. Not a timing assertion: a
# slow page passes, only a page that never gets there fails.
UI_TIMEOUT_MS = int(os.environ.get("CARELEDGER_E2E_TIMEOUT_MS", "60000"))
DEMO_TIMEOUT_S = 240.0

# Reported by the page through console.error when the browser enforces the CSP (an init
# script, which the CSP does not govern, adds the listener).
_CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error("CSP violation: " + event.violatedDirective + " blocked " + event.blockedURI);
});
"""


def chromium_path() -> str:
    return os.environ.get("CHROMIUM_BIN") or DEFAULT_CHROMIUM


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


# --- the node ---------------------------------------------------------------------------------


@dataclass
class DemoNode:
    """A `careledger up --demo` process and the demo's files (DATA_DIR/demo/)."""

    process: NodeProcess

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def demo(self) -> Path:
        return self.process.data_dir / "demo"

    @property
    def log(self) -> Path:
        return self.process.data_dir.parent / f"node-{self.process.port}.log"

    def file(self, name: str) -> Path:
        path = self.demo / name
        if not path.exists():
            raise AssertionError(f"the demo did not write {path}")
        return path

    def claim_code(self) -> str:
        return self.file("claim-patient-3.code").read_text().strip()

    def wait_ready(self, timeout: float = DEMO_TIMEOUT_S) -> None:
        """Until the demo's data is in: DATA_DIR/demo/ready (written last by the demo), or,
        on a demo that writes no marker, patient-1.json and the demo's closing line."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.demo / "ready").exists():
                return
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            if "Demo records not imported" in log:
                raise AssertionError(f"the demo failed to load its records:\n{log[-3000:]}")
            if (self.demo / "patient-1.json").exists() and "\nDemo: " in log:
                return
            assert self.process.process is not None
            if self.process.process.poll() is not None:
                raise AssertionError(f"the demo node exited:\n{log[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"the demo data was not in after {timeout:.0f} s")


def require_built_portal() -> None:
    """The portal must be built into the package the node serves (`npm run build`)."""
    from careledger.web.app import STATIC

    if not (STATIC / "index.html").is_file():
        raise AssertionError(
            f"the portal is not built ({STATIC}/index.html missing): run `npm ci && npm run"
            " build` in portal/ (make test does)"
        )


# --- what a page must never do ----------------------------------------------------------------


@dataclass
class ConsoleWatch:
    """Console errors, uncaught exceptions and CSP violations of one page. A test that
    expects a browser error (the node down: "Failed to load resource") allows it by pattern
    for the steps that cause it (`allowing`)."""

    problems: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self._add(f"uncaught exception: {error}"))

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            where = message.location.get("url", "") if message.location else ""
            self._add(f"console error: {message.text}" + (f" ({where})" if where else ""))

    def _add(self, problem: str) -> None:
        if not any(pattern.search(problem) for pattern in self.allowed):
            self.problems.append(problem)

    @contextmanager
    def allowing(self, pattern: str) -> Iterator[None]:
        compiled = re.compile(pattern)
        self.allowed.append(compiled)
        try:
            yield
        finally:
            self.allowed.remove(compiled)

    def assert_clean(self) -> None:
        assert not self.problems, "the page reported errors:\n  " + "\n  ".join(self.problems)


@dataclass(frozen=True)
class SentRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes

    def describe(self) -> str:
        return f"{self.method} {self.url}"


@dataclass
class RequestRecorder:
    """Every request the pages of one browser context send, with all headers and the body."""

    pending: list[Request] = field(default_factory=list)
    sent: list[SentRequest] = field(default_factory=list)

    def attach(self, context: BrowserContext) -> None:
        context.on("request", self._record)

    def _record(self, request: Request) -> None:
        self.pending.append(request)

    def collect(self) -> list[SentRequest]:
        """Resolve what was recorded so far (all_headers needs a round trip to the browser,
        which an event handler must not make)."""
        for request in self.pending:
            try:
                headers = request.all_headers()
            except Exception:  # the page went away: the headers known at send time
                headers = request.headers
            self.sent.append(
                SentRequest(request.method, request.url, headers, request.post_data_buffer or b"")
            )
        self.pending.clear()
        return self.sent

    def assert_never_sent(self, secrets: Secrets) -> None:
        requests = self.collect()
        assert requests, "no request was recorded: the recorder is not attached"
        leaks = [
            f"{request.describe()}: {what} in {part}"
            for request in requests
            for part, text in _searchable_parts(request)
            for what in secrets.found_in(text)
        ]
        assert not leaks, "a secret left the page:\n  " + "\n  ".join(leaks)


def _searchable_parts(request: SentRequest) -> Iterator[tuple[str, str]]:
    """The request as text, decoded every way a secret might be encoded in it."""
    yield "url", request.url
    yield "url (decoded)", unquote_plus(request.url)
    for name, value in request.headers.items():
        yield f"header {name}", value
        yield f"header {name} (decoded)", unquote(value)
    body = request.body.decode("latin-1")
    yield "body", body
    yield "body (form-decoded)", unquote_plus(body)


@dataclass
class Secrets:
    """What must never leave the page: secret bytes (in every usual text encoding and raw)
    and word sequences (the recovery phrase, the claim code), matched whatever separates the
    words (spaces, "+", "%20", JSON punctuation) and also in part (any 4 words in a row of a
    phrase)."""

    byte_secrets: dict[str, bytes] = field(default_factory=dict)
    word_secrets: dict[str, list[str]] = field(default_factory=dict)

    def add_bytes(self, what: str, secret: bytes) -> None:
        self.byte_secrets[what] = secret

    def add_words(self, what: str, words: str) -> None:
        self.word_secrets[what] = words.lower().split()

    def add_identity(self, what: str, identity: Identity) -> None:
        """An identity's master secret and every private key derived from it."""
        master = identity.master
        self.add_bytes(f"{what} master secret", master)
        self.add_bytes(f"{what} signing key", derive_secret(master, SIGNING_LABEL))
        self.add_bytes(f"{what} encryption key", derive_secret(master, ENCRYPTION_LABEL))
        self.add_bytes(f"{what} naming key", identity.secret(NAMING_KEY_LABEL))
        self.add_bytes(f"{what} scope root", identity.secret(SCOPE_ROOT_LABEL))

    def add_key_file(self, what: str, path: Path) -> None:
        keyfile = KeyFile.load(path)
        self.add_identity(what, keyfile.identity)
        if keyfile.naming_key is not None:
            self.add_bytes(f"{what} naming key (file)", keyfile.naming_key)
        for number, previous in enumerate(keyfile.previous, start=1):
            self.add_identity(f"{what} previous key {number}", previous.identity)

    def add_phrase(self, what: str, phrase: str) -> None:
        self.add_words(f"{what} recovery phrase", phrase)
        self.add_identity(f"{what} (from its phrase)", identity_from_phrase(phrase))

    def found_in(self, text: str) -> Iterator[str]:
        for what, secret in self.byte_secrets.items():
            if any(form in text for form in _encodings(secret)):
                yield what
        lowered = text.lower()
        for what, words in self.word_secrets.items():
            if any(re.search(pattern, lowered) for pattern in _word_runs(words)):
                yield what


def _encodings(secret: bytes) -> set[str]:
    b64 = base64.b64encode(secret).decode()
    b64url = base64.urlsafe_b64encode(secret).decode()
    return {
        secret.hex(),
        secret.hex().upper(),
        b64,
        b64.rstrip("="),
        b64url,
        b64url.rstrip("="),
        secret.decode("latin-1"),
    }


def _word_runs(words: list[str], run: int = 4) -> Iterable[str]:
    """Regexes for every `run` consecutive words (the whole sequence when shorter)."""
    run = min(run, len(words))
    separator = r"[^a-z]{1,8}"
    for start in range(len(words) - run + 1):
        yield r"\b" + separator.join(re.escape(w) for w in words[start : start + run]) + r"\b"


def claim_package_secrets(secrets: Secrets, package: Path, code: str, workdir: Path) -> None:
    """The claim code and the identity inside the package (opened on a copy: opening
    counts attempts in the file, and the page must get the untouched package)."""
    copy = workdir / "claim-package-copy.json"
    shutil.copyfile(package, copy)
    contents = open_claim_package(copy, code)
    secrets.add_words("claim code", code)
    secrets.add_identity("claimed identity (as enrolled)", contents.identity)


# --- a page in the browser --------------------------------------------------------------------


@dataclass
class PortalPage:
    """One browser context with one page on the portal, at one size."""

    base_url: str
    size: str
    context: BrowserContext
    page: Page
    console: ConsoleWatch
    requests: RequestRecorder

    @property
    def width(self) -> int:
        return int(SIZES[self.size]["viewport"]["width"])

    def goto(self, route: str) -> Page:
        """Open `route` (a hash route such as "/patient/start") and wait for its h1. From
        another route of the same page this is a hash change, rendered on a later frame: the
        old route's h1 is not taken for the new one."""
        self.page.goto(f"{self.base_url}/#{route}")
        self.page.evaluate(
            "() => new Promise((done) => requestAnimationFrame(() => setTimeout(done, 0)))"
        )
        self.page.locator("main h1").first.wait_for(timeout=UI_TIMEOUT_MS)
        return self.page

    def heading(self) -> str:
        return self.page.locator("main h1").first.inner_text()

    def assert_clean(self) -> None:
        self.console.assert_clean()

    def alert(self) -> str:
        """The text of the page's first visible role="alert" (waits for it)."""
        alert = self.page.get_by_role("alert").filter(has_text=re.compile(r"\S")).first
        alert.wait_for(timeout=UI_TIMEOUT_MS)
        return alert.inner_text()

    def screenshot(self, name: str) -> Path:
        return save_screenshot(self.page, name, self.width)

    def axe(self) -> None:
        check_axe(self.page)


# The fixtures `portal` and `demo_portal`: open a page at "phone" or "desktop" size.
OpenPortal = Callable[..., "PortalPage"]


def open_portal(browser: Browser, base_url: str, size: str) -> PortalPage:
    context = browser.new_context(**SIZES[size])
    context.set_default_timeout(UI_TIMEOUT_MS)
    context.add_init_script(_CSP_LISTENER)
    requests = RequestRecorder()
    requests.attach(context)
    page = context.new_page()
    console = ConsoleWatch()
    console.attach(page)
    return PortalPage(base_url, size, context, page, console, requests)


def save_screenshot(page: Page, name: str, width: int) -> Path:
    """test-output/portal/<name>-<width>.png: what a person sees first (the viewport); and
    <name>-<width>-full.png, the whole page, when it is longer than the screen."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}-{width}.png"
    page.screenshot(path=str(path))
    height = page.evaluate("() => document.documentElement.scrollHeight")
    full = SCREENSHOTS / f"{name}-{width}-full.png"
    if page.viewport_size and height > page.viewport_size["height"]:
        page.screenshot(path=str(full), full_page=True)
    else:
        full.unlink(missing_ok=True)
    return path


# --- axe-core ---------------------------------------------------------------------------------

_RUN_AXE = """async () => {
  const result = await axe.run(document, { resultTypes: ["violations"] });
  return result.violations.map((v) => ({
    id: v.id,
    impact: v.impact,
    help: v.help,
    nodes: v.nodes.map(
      (n) => n.target.join(" ") + " :: " + (n.failureSummary || "").replace(/\\s+/g, " "),
    ),
  }));
}"""


def check_axe(page: Page) -> None:
    """Run axe-core in the page and fail on any serious or critical violation. The script is
    evaluated through the DevTools protocol (the CSP rightly forbids an inline script tag)."""
    if not AXE_SCRIPT.is_file():
        raise AssertionError(f"axe-core is not installed ({AXE_SCRIPT}): run npm ci in portal/")
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate("() => {\n" + AXE_SCRIPT.read_text() + "\n}")
    violations: list[dict[str, Any]] = page.evaluate(_RUN_AXE)
    serious = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert not serious, f"axe-core on {page.url}:\n" + "\n".join(
        f"  [{v['impact']}] {v['id']}: {v['help']}\n      " + "\n      ".join(v["nodes"][:5])
        for v in serious
    )


# --- files for the page's file inputs ---------------------------------------------------------


def status(url: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(url + "/status", timeout=10).json()
    return answer


def dump(value: object) -> str:
    return json.dumps(value, indent=2)
