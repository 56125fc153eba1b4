"""Both PyScript interpreters boot from our own /vendor files under our CSP, and coview_web.ffi
behaves the same on each.

A small Starlette app (``Assets`` at /vendor, /_test_pages and /coview_web, a WebSocket at
/_test_ws, all behind ``SecurityHeaders`` with the default CSP) runs under uvicorn in this
process. Chromium loads tests/e2e/pages/ffi_{mpy,py}.html, whose ffi_probe.py exercises every
ffi function and writes a JSON report. The test fails on any failed check, on any request that
leaves our origin, on any CSP violation and on any page error.

Run it inside a loopback-only network namespace (scripts/test does).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Request
from starlette.applications import Starlette
from starlette.routing import Mount, WebSocketRoute
from starlette.websockets import WebSocket

from coview_server.security import SecurityHeaders
from coview_server.static import Assets
from coview_server.testing.server import serve_app

from .conftest import HYGIENE_ARGS

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "web" / "vendor"
PAGES = Path(__file__).resolve().parent / "pages"
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = HYGIENE_ARGS
# Records CSP violations in the page; init scripts are not subject to the page's CSP.
CSP_RECORDER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


async def _echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


def make_app() -> SecurityHeaders:
    app = Starlette(
        routes=[
            WebSocketRoute("/_test_ws", _echo),
            Mount("/vendor", app=Assets(VENDOR, immutable=True)),
            Mount("/_test_pages", app=Assets(PAGES, immutable=False)),
            Mount("/coview_web", app=Assets(ROOT / "web" / "coview_web", immutable=False)),
        ]
    )
    return SecurityHeaders(app)


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    if not (VENDOR / "manifest.json").is_file():
        pytest.fail("web/vendor is not built: run `python scripts/build_assets.py`")
    with serve_app(make_app()) as origin:
        yield origin


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # The session's Playwright (conftest): a second sync_playwright() in the same thread
    # fails once the first has started.
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
    try:
        yield b
    finally:
        b.close()


class PageWatch:
    """Everything a page did that the test judges: requests, console, errors."""

    def __init__(self, page: Page, origin: str) -> None:
        self.origin = origin
        self.foreign: list[str] = []
        self.urls: list[str] = []
        self.csp_console: list[str] = []
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        page.on("request", self._request)
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))

    def _request(self, request: Request) -> None:
        url = request.url
        self.urls.append(url)
        if not (url.startswith(self.origin + "/") or url.startswith(("data:", "blob:"))):
            self.foreign.append(url)

    def _console(self, message: ConsoleMessage) -> None:
        text = message.text
        if "Content Security Policy" in text or "Content-Security-Policy" in text:
            self.csp_console.append(text)
        if message.type == "error":
            self.console_errors.append(text)


def _load_probe(browser: Browser, origin: str, name: str) -> tuple[dict[str, Any], PageWatch]:
    context = browser.new_context()
    context.add_init_script(CSP_RECORDER)
    page = context.new_page()
    watch = PageWatch(page, origin)
    try:
        page.goto(f"{origin}/_test_pages/{name}.html")
        # Poll from here: Playwright's wait_for_function evaluates a string in the page, which
        # our CSP forbids. Stop early on a page error (e.g. PyScript refused by the CSP).
        text = ""
        deadline = time.monotonic() + 90
        while not text and not watch.page_errors and time.monotonic() < deadline:
            page.wait_for_timeout(100)
            text = page.locator("#result").text_content() or ""
        if not text:
            progress = page.locator("#progress").text_content()
            pytest.fail(f"{name}: no result (last check: {progress}); errors: {watch.page_errors}")
        report: dict[str, Any] = json.loads(text)
        report["csp_violations"] = page.evaluate("window.__cspViolations")
        report["py_errors"] = page.locator(".py-error").all_text_contents()
        return report, watch
    finally:
        context.close()


@pytest.mark.parametrize(
    ("name", "interpreter", "runtime_files"),
    [
        ("ffi_mpy", "micropython", ["/vendor/micropython/micropython.wasm"]),
        (
            "ffi_py",
            "pyodide",
            [
                "/vendor/pyodide/pyodide.asm.wasm",
                "/vendor/pyodide/python_stdlib.zip",
                "/vendor/pyodide/snapshot.bin",
            ],
        ),
    ],
)
def test_ffi_probe(
    browser: Browser, origin: str, name: str, interpreter: str, runtime_files: list[str]
) -> None:
    report, watch = _load_probe(browser, origin, name)

    assert report["interpreter"] == interpreter
    failed = {k: v["detail"] for k, v in report["checks"].items() if not v["ok"]}
    assert not failed, f"{name}: failed ffi checks: {failed}"
    # Every function of the public API was exercised.
    covered = {key.split(".")[0] for key in report["checks"]}
    assert {
        "to_js",
        "create_proxy",
        "is_none",
        "prop",
        "length",
        "array_from",
        "now_ms",
        "set_prop",
        "add_listener",
        "await_js",
        "to_py",
        "js_error_text",
        "call_async",
        "new_async",
        "release_all",
        "set_timeout",
        "clear_timeout",
        "set_interval",
        "clear_interval",
    } <= covered

    assert watch.foreign == [], f"{name}: requests outside our origin: {watch.foreign}"
    for path in runtime_files:  # it really booted from our vendor copy
        assert f"{origin}{path}" in watch.urls
    assert watch.csp_console == [], f"{name}: CSP console messages: {watch.csp_console}"
    assert report["csp_violations"] == [], f"{name}: CSP violations: {report['csp_violations']}"
    assert watch.page_errors == [], f"{name}: page errors: {watch.page_errors}"
    assert report["py_errors"] == [], f"{name}: PyScript error banners: {report['py_errors']}"
    # The probe fetches one missing file on purpose; nothing else may fail to load.
    unexpected = [e for e in watch.console_errors if "404 (Not Found)" not in e]
    assert unexpected == [], f"{name}: console errors: {unexpected}"
    # The page config disables every plugin but "error": none of their chunks may load.
    unwanted = ("codemirror", "xterm", "py-editor-", "py-game-", "py-terminal-", "donkey-")
    assert not [u for u in watch.urls if any(part in u for part in unwanted)]
    assert not [u for u in watch.urls if "deprecations-manager-" in u]


def test_pages_restored_from_the_pyodide_snapshot_do_not_share_its_state(
    browser: Browser, origin: str
) -> None:
    """The snapshot froze one start-up: each page must still draw its own random numbers, and
    nothing of the build machine (node's script path) may show."""
    first, _ = _load_probe(browser, origin, "ffi_py")
    second, watch = _load_probe(browser, origin, "ffi_py")
    assert f"{origin}/vendor/pyodide/snapshot.bin" in watch.urls
    assert first["process"]["random"] != second["process"]["random"]
    for facts in (first["process"], second["process"]):
        assert facts["path"].count("") == 1, facts["path"]
        assert facts["executable"] == "/home/pyodide/this.program"
        assert facts["env_"] == "./this.program"
