"""The shared core's unit tests pass inside the browser, on MicroPython and on Pyodide.

``tests/e2e/core_runner`` serves a PyScript page per interpreter (test-only Starlette app,
the product's CSP, runtimes from our own /vendor) that runs every portable module of
tests/unit/core through a small pytest (``core_runner/browser/minitest.py``, with
``pytest`` and ``hypothesis`` shims) and reports each test's outcome as JSON.  Here we check:

* every core test passed, but for known core gaps: KNOWN_GAPS (they must still fail) and
  core_runner.CRASHES (not run: they kill the interpreter);
* per test function, as many tests ran as CPython's pytest collects from the same modules,
  so a runner that silently skips or loses tests fails;
* the canary suite (``core_runner/browser/canary.py``) gets exactly the outcomes of CANARY,
  deliberate failures included, so the runner can fail;
* no request left our origin, no CSP violation, no page error.

Browsers come from the kit (``coview_browser``: ``--coview-browser chromium|firefox|all``).
Run it inside a loopback-only network namespace (scripts/test does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request

from coview_server.testing.server import serve_app

from .conftest import ROOT
from .core_runner import CRASHES, core_test_modules, core_test_paths, make_app

pytestmark = pytest.mark.e2e

#: Seed of the hypothesis shim's examples (set COVIEW_CORE_SEED to explore others).
SEED = int(os.environ.get("COVIEW_CORE_SEED", "1"))
INTERPRETERS = ["micropython", "pyodide"]

#: Core tests that fail on an interpreter because the CORE behaves differently there (not the
#: test): each must fail (so the entry goes once the core is fixed) and nothing else may.
KNOWN_GAPS: dict[str, dict[str, str]] = {
    "micropython": {
        # MicroPython's json.loads takes a trailing comma, leading zeros and unknown escapes
        # (and reads , and : as blanks); protocol.decode does not check the grammar there:
        # a check of it in Python costs 20-200x the parse on MicroPython.
        'test_protocol::test_malformed_json[{"type": "ping",}]': "json.loads is lax",
        'test_protocol::test_malformed_json[{"type": "ping", "t": 01}]': "json.loads is lax",
        'test_protocol::test_malformed_json[{"type": "ping\\x"}]': "json.loads is lax",
    },
    "pyodide": {},
}

#: Canary test id -> (outcome, text its report must contain).
CANARY: dict[str, tuple[str, str]] = {
    "canary::test_passes": ("passed", ""),
    "canary::test_assert_fails": ("failed", "canary: lists differ"),
    "canary::test_error_fails": ("failed", "RuntimeError: canary: boom"),
    "canary::test_raises_not_raised_fails": ("failed", "DID NOT RAISE KeyError"),
    "canary::test_raises_wrong_exception_fails": ("failed", "canary: not a KeyError"),
    "canary::test_raises_match": ("passed", ""),
    "canary::test_raises_match_mismatch_fails": ("failed", "'^other$'"),
    "canary::test_pytest_fail_fails": ("failed", "canary: failed on purpose"),
    "canary::test_approx": ("passed", ""),
    "canary::test_approx_mismatch_fails": ("failed", "AssertionError"),
    "canary::test_skip_is_skipped": ("skipped", "canary: skipped on purpose"),
    "canary::test_skipif_is_skipped": ("skipped", "canary"),
    "canary::test_xfail_is_xfailed": ("xfailed", "expected"),
    "canary::test_xpass_fails": ("failed", "XPASS(strict)"),
    "canary::test_param[1]": ("passed", ""),
    "canary::test_param[2]": ("failed", "AssertionError"),
    "canary::test_param[3]": ("passed", ""),
    "canary::test_stacked[1-2-x]": ("passed", ""),
    "canary::test_stacked[1-2-y]": ("passed", ""),
    "canary::test_stacked[three-x]": ("passed", ""),
    "canary::test_stacked[three-y]": ("passed", ""),
    "canary::test_fixture": ("passed", ""),
    "canary::test_fixture_was_torn_down": ("passed", ""),
    "canary::test_missing_fixture_fails": ("failed", "fixture 'nope' not found"),
    "canary::test_given_runs_max_examples": ("passed", ""),
    "canary::test_given_ran_that_many": ("passed", ""),
    "canary::test_given_fails": ("failed", "Falsifying example"),
}

# Records CSP violations in the page; init scripts are not subject to the page's CSP.
CSP_RECORDER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


class CPythonCollection:
    """``pytest --collect-only`` of the same modules, started at once in the background."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                "--collect-only",
                "-q",
                "-p",
                "no:cacheprovider",
                *[str(p.relative_to(ROOT)) for p in core_test_paths()],
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._counts: Counter[str] | None = None

    def counts(self) -> Counter[str]:
        """``{"test_module::test_function": number of collected tests}``."""
        if self._counts is None:
            out, _ = self.proc.communicate(timeout=120)
            assert self.proc.returncode == 0, "CPython collection failed:\n" + out[-3000:]
            counts: Counter[str] = Counter()
            for line in out.splitlines():
                if "::" not in line:
                    continue
                path, _, test = line.partition("::")
                module = path.rsplit("/", 1)[-1].removesuffix(".py")
                counts[module + "::" + test.split("[", 1)[0]] += 1
            self._counts = counts
        return self._counts


@pytest.fixture(scope="module")
def cpython() -> Iterator[CPythonCollection]:
    collection = CPythonCollection()
    yield collection
    if collection.proc.poll() is None:
        collection.proc.kill()
        collection.proc.wait()


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    if not (ROOT / "web" / "vendor" / "manifest.json").is_file():
        pytest.fail("web/vendor is not built: run `python scripts/build_assets.py`")
    with serve_app(make_app()) as origin:
        yield origin


class PageWatch:
    """What the page did besides running the tests: requests, console, errors."""

    def __init__(self, page: Page, origin: str) -> None:
        self.origin = origin
        self.foreign: list[str] = []
        self.failed: list[str] = []
        self.csp_console: list[str] = []
        self.page_errors: list[str] = []
        self.booted: float | None = None  # seconds from navigation to the first test
        page.on("request", self._request)
        page.on("requestfailed", lambda r: self.failed.append(r.url))
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))

    def _request(self, request: Request) -> None:
        url = request.url
        if not (url.startswith(self.origin + "/") or url.startswith(("data:", "blob:"))):
            self.foreign.append(url)

    def _console(self, message: ConsoleMessage) -> None:
        text = message.text
        if "Content Security Policy" in text or "Content-Security-Policy" in text:
            self.csp_console.append(text)


class Run:
    """One runner page, from navigation to its report (or its failure)."""

    def __init__(self, browser: Browser, origin: str, interpreter: str) -> None:
        self.interpreter = interpreter
        self.context = browser.new_context()
        self.context.add_init_script(CSP_RECORDER)
        self.page = self.context.new_page()
        self.watch = PageWatch(self.page, origin)
        self.started = time.monotonic()
        self.page.goto(f"{origin}/runner/{interpreter}.html?seed={SEED}")
        self.report: Any = None
        self.error: str | None = None
        self.took = 0.0

    def poll(self) -> bool:
        """True once finished: a report, or a page error (e.g. the interpreter died)."""
        page, watch = self.page, self.watch
        text = page.locator("#result").text_content() or ""
        if watch.booted is None and page.locator("#progress").text_content():
            watch.booted = round(time.monotonic() - self.started, 1)
        if text:
            self.report = json.loads(text)
            self.report["csp_violations"] = page.evaluate("window.__cspViolations")
            self.report["py_errors"] = page.locator(".py-error").all_text_contents()
        elif watch.page_errors:
            self.fail()
        else:
            return False
        self.took = time.monotonic() - self.started
        return True

    def fail(self) -> None:
        progress = self.page.locator("#progress").text_content()
        banners = self.page.locator(".py-error").all_text_contents()
        self.error = (
            f"{self.interpreter}: no report (last test started: {progress!r}); page errors: "
            f"{self.watch.page_errors}; PyScript errors: {banners}"
        )


def run_in_browser(browser: Browser, origin: str, interpreter: str) -> Run:
    """One page at a time: side by side, the other page counts as hidden and its timers
    (the runner's breaths) are throttled, which made a MicroPython run 3x slower."""
    run = Run(browser, origin, interpreter)
    try:
        deadline = time.monotonic() + 150
        # Poll from here: wait_for_function evaluates a string in the page, which our CSP
        # forbids.
        while not run.poll():
            if time.monotonic() > deadline:
                run.fail()
                break
            run.page.wait_for_timeout(200)
    finally:
        run.context.close()
    return run


def _short(tests: list[list[Any]]) -> str:
    return "\n".join(f"{t[0][:200]} {t[1]}\n{t[2][-1500:]}" for t in tests)


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_core_unit_tests_pass_in_the_browser(
    request: pytest.FixtureRequest,
    coview_browser: str,
    origin: str,
    cpython: CPythonCollection,
    interpreter: str,
) -> None:
    browser: Browser = request.getfixturevalue(
        "browser" if coview_browser == "chromium" else "firefox"
    )
    run = run_in_browser(browser, origin, interpreter)
    if run.error:
        pytest.fail(run.error)
    report, watch, took = run.report, run.watch, run.took

    assert report["interpreter"] == interpreter
    core = report["suites"]["core"]
    broken = {m: e["error"] for m, e in core["modules"].items() if e["error"]}
    assert broken == {}, f"{interpreter}: modules that did not load:\n{broken}"
    gaps = KNOWN_GAPS[interpreter]
    deselected = {t[0] for t in core["tests"] if t[1] == "deselected"}
    assert deselected == set(CRASHES[interpreter])
    ok = ("passed", "skipped", "deselected")
    bad = [t for t in core["tests"] if t[1] not in ok and t[0] not in gaps]
    assert bad == [], f"{interpreter} in {coview_browser}: failed core tests:\n{_short(bad)}"
    outcomes = {t[0]: t[1] for t in core["tests"]}
    fixed = {g: outcomes.get(g) for g in gaps if outcomes.get(g) != "failed"}
    assert fixed == {}, f"{interpreter}: known gaps that no longer fail, drop them: {fixed}"

    # As many tests as CPython's pytest collects, function by function.
    assert sorted(core["modules"]) == core_test_modules()
    ran = Counter(core["functions"])
    want = cpython.counts()
    assert sum(want.values()) > 1000
    diff = {k: (ran.get(k, 0), want.get(k, 0)) for k in set(ran) | set(want) if ran[k] != want[k]}
    assert diff == {}, f"{interpreter}: (ran, CPython collected) per function differ: {diff}"
    assert len(core["tests"]) == sum(want.values())

    # The runner can fail: the canary's deliberate failures are reported as failures.
    canary = {t[0]: (t[1], t[2]) for t in report["suites"]["canary"]["tests"]}
    assert sorted(canary) == sorted(CANARY)
    wrong = {
        name: canary[name]
        for name, (outcome, text) in CANARY.items()
        if canary[name][0] != outcome or text not in canary[name][1]
    }
    assert wrong == {}, f"{interpreter}: canary outcomes differ from CANARY: {wrong}"

    assert watch.foreign == [], f"requests outside our origin: {watch.foreign}"
    assert watch.failed == [], f"requests that failed: {watch.failed}"
    assert watch.csp_console == [], f"CSP console messages: {watch.csp_console}"
    assert report["csp_violations"] == [], f"CSP violations: {report['csp_violations']}"
    assert watch.page_errors == [], f"page errors: {watch.page_errors}"
    assert report["py_errors"] == [], f"PyScript error banners: {report['py_errors']}"
    slowest = sorted(core["tests"], key=lambda t: -t[3])[:5]
    print(
        f"\nslowest: {[(t[0][:80], t[3]) for t in slowest]}"
        f"\n{coview_browser}/{interpreter}: {len(core['tests'])} core tests "
        f"{core['counts']}, first test after {watch.booted} s, {report['ms']} ms in Python, "
        f"{took:.1f} s in all"
    )
