#!/usr/bin/env python3
"""Coview start-up and click-to-first-frame bench, against same-run baselines.

    .venv/bin/python bench/run.py [--runs 7] [--only popup,c2f,console]

Needs root: it creates a loopback-only network namespace, re-runs itself inside it, starts
the real Coview server there (bench/server.py: ``create_app(settings)`` plus the plain-JS
baseline pages under /bench), drives headless Chromium through the real visitor/agent flow,
prints a table with the budgets and writes bench/results/<timestamp>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))  # the bench drives the same server process as the e2e tests

from tests.e2e.conftest import (  # noqa: E402
    AGENT_EMAIL,
    AGENT_PASSWORD,
    Server as E2EServer,
)

RESULTS = BENCH / "results"
# The popup and its baselines: ours, the plain-JS page (the ratio's denominator), and the
# PyScript floor (/popup with bench/baseline/popup_floor.py as its script: PyScript's
# MicroPython doing only the handshake, the time before any Coview code can matter).
POPUP_PAGES = {"py": "/popup", "js": "/bench/popup.html", "floor": "/bench/popup-mpy.html"}
POPUP_VARIANTS = tuple(POPUP_PAGES)
PROBE = (BENCH / "probe.js").read_text(encoding="utf-8")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

SESSION_COOKIE = "coview_session"
WAIT_MS = 30_000  # a page that has not got there by then is broken, not slow

# Budgets from the issue: (key in the results, limit, unit). Ratios are against the JS baseline.
BUDGETS = {
    "popup_cold_ms": 250.0,
    "popup_warm_ms": 150.0,
    "c2f_ratio": 1.1,
    "console_warm_ms": 2000.0,
    "console_cold_ms": 4000.0,
}


# --- namespace --------------------------------------------------------------------------


def outside(argv: list[str]) -> int:
    """Create the namespace, run this script inside it, always delete it."""
    if os.geteuid() != 0:
        print(
            "bench/run.py must run as root: it creates a loopback-only network namespace "
            "(ip netns) so that neither Chromium nor WebRTC can reach any other address.\n"
            "Run it as root, e.g. `sudo .venv/bin/python bench/run.py`.",
            file=sys.stderr,
        )
        return 2
    if shutil.which("ip") is None:
        print("bench/run.py needs `ip` (Debian package iproute2).", file=sys.stderr)
        return 2
    ns = f"cvbench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        cmd = ["ip", "netns", "exec", ns, sys.executable, str(Path(__file__).resolve())]
        return subprocess.call([*cmd, "--inside", *argv])
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def assert_loopback_only() -> None:
    interfaces = sorted(os.listdir("/sys/class/net"))
    if interfaces != ["lo"]:
        raise SystemExit(f"refusing to run: this namespace has {interfaces}, not only lo")


# --- server -----------------------------------------------------------------------------


@dataclass
class Server(E2EServer):
    """The e2e suite's server process, run through bench/server.py (adds /bench, latency)."""

    latency_ms: float = 0.0

    def command(self) -> list[str]:
        port, latency = str(self.port), str(self.latency_ms)
        return [sys.executable, str(BENCH / "server.py"), "--port", port, "--latency", latency]

    def start(self) -> None:
        super().start()
        self.cli(
            "create-user",
            AGENT_EMAIL,
            "--name",
            "Bench Agent",
            "--password-stdin",
            stdin=AGENT_PASSWORD + "\n",
        )

    def answers_since(self, mark: int) -> tuple[int, list[list[Any]]]:
        """HTTP answers of the server after ``mark``: (new mark, [[path, status, coding]])."""
        with urllib.request.urlopen(f"{self.url}/_bench/log?since={mark}", timeout=10) as r:
            data = json.loads(r.read())
        return int(data["next"]), data["entries"]


# --- browser helpers --------------------------------------------------------------------


def await_in_page(page: Any, expression: str, timeout_ms: int = WAIT_MS) -> Any:
    """Await a promise the probe exposes, with a deadline (no polling)."""
    return page.evaluate(
        "([expr, ms]) => Promise.race([window.__bench[expr], new Promise((_, reject) =>"
        " setTimeout(() => reject(new Error('bench: timed out waiting for ' + expr)), ms))])",
        [expression, timeout_ms],
    )


RESOURCES_JS = """() => {
  const out = [];
  for (const e of performance.getEntriesByType('resource')) {
    out.push({url: e.name.replace(location.origin, ''), start: e.startTime, end: e.responseEnd,
              transfer: e.transferSize, encoded: e.encodedBodySize, decoded: e.decodedBodySize,
              status: e.responseStatus, type: e.initiatorType, delivery: e.deliveryType});
  }
  const nav = performance.getEntriesByType('navigation')[0];
  return {resources: out, marks: window.__bench.marks, nav: nav ? {responseEnd: nav.responseEnd,
          domInteractive: nav.domInteractive, domContentLoaded: nav.domContentLoadedEventEnd,
          load: nav.loadEventEnd} : null};
}"""


def summarize_requests(resources: dict[str, Any], answers: list[list[Any]]) -> dict[str, Any]:
    """One page load: what the page saw (Resource Timing) and what the server answered."""
    res = resources["resources"]
    urls = [r["url"] for r in res]
    return {
        "requests": len(res) + 1,  # + the document
        "server_answers": len(answers),
        "transferred_bytes": sum(r["transfer"] for r in res),
        "from_cache": sum(1 for r in res if r["transfer"] == 0 and r["decoded"] > 0),
        "revalidated_304": [a[0] for a in answers if a[1] == 304],
        "fetched_twice": sorted({u for u in urls if urls.count(u) > 1}),
        "plugin_chunks": [
            u
            for u in urls
            if re.search(r"/(py-editor|py-game|py-terminal|donkey|deprecations-manager)-", u)
        ],
        "encodings": sorted({a[2] or "identity" for a in answers if a[1] == 200}),
        "nav": resources["nav"],
        "marks": {k: round(v, 1) for k, v in resources["marks"].items() if isinstance(v, float)},
        "waterfall": [
            [r["url"], round(r["start"], 1), round(r["end"], 1), r["transfer"], r["decoded"]]
            for r in res
        ],
    }


def watch_console(page: Any) -> list[str]:
    """Warnings and errors the page logs (kept in the results: e.g. unused preloads)."""
    out: list[str] = []
    page.on(
        "console",
        lambda m: (
            out.append(f"{m.type}: {m.text[:300]}") if m.type in ("warning", "error") else None
        ),
    )
    page.on("pageerror", lambda e: out.append(f"pageerror: {str(e)[:300]}"))
    return out


@dataclass
class Flow:
    """The real visitor/agent flow: the shop with its chat widget, the console, invitations."""

    server: Server
    browser: Any
    trace_dir: Path | None = None  # --trace: a CDP trace of every measured load, saved there
    shop: Any = None
    widget: Any = None
    console: Any = None
    visitor_ctx: Any = None
    agent_ctx: Any = None
    session_cookie: dict[str, Any] | None = None
    shop_console: list[str] = field(default_factory=list)
    console_console: list[str] = field(default_factory=list)

    def new_context(self, browser: Any = None) -> Any:
        ctx = (browser or self.browser).new_context(viewport={"width": 1280, "height": 720})
        self.prepare(ctx)
        return ctx

    def prepare(self, ctx: Any) -> None:
        # Without these grants Chromium hides host candidates behind mDNS names.
        ctx.grant_permissions(["camera", "microphone"], origin=self.server.url)
        ctx.add_init_script(PROBE)

    def start(self) -> None:
        from playwright.sync_api import expect

        self.visitor_ctx = self.new_context()
        self.shop = self.visitor_ctx.new_page()
        self.shop_console = watch_console(self.shop)
        self.shop.goto(self.server.url + "/demo")
        self.widget = self.shop.frame_locator("iframe[title='Support chat']")
        expect(self.widget.get_by_role("status")).to_have_text("Online", timeout=WAIT_MS)
        hello = f"Bench hello {os.getpid()}"
        self.widget.get_by_label("Message").fill(hello)
        self.widget.get_by_role("button", name="Send").click()
        expect(self.widget.get_by_role("log")).to_contain_text(hello)

        self.agent_ctx = self.new_context()
        self.console = self.agent_ctx.new_page()
        self.console_console = watch_console(self.console)
        self.console.goto(self.server.url + "/login")
        self.console.get_by_label("Email").fill(AGENT_EMAIL)
        self.console.get_by_label("Password").fill(AGENT_PASSWORD)
        self.console.get_by_role("button", name="Sign in").click()
        self.console.wait_for_url("**/console")
        await_in_page(self.console, "ready")
        self.session_cookie = next(
            c for c in self.agent_ctx.cookies() if c["name"] == SESSION_COOKIE
        )
        self.console.get_by_role("button", name=re.compile(re.escape(hello))).click()
        expect(self.console.get_by_role("log", name="Messages")).to_contain_text(hello)
        self.console.get_by_role("tab", name="Screen sharing").click()
        self.request_button().wait_for(state="visible")

    def request_button(self) -> Any:
        return self.console.get_by_role("button", name="Request screen share")

    def invite(self) -> str:
        """Ask for a share from the console; the popup URL the visitor's widget got."""
        from playwright.sync_api import expect

        invites = self.widget.locator("li.invite")
        before = invites.count()
        expect(self.request_button()).to_be_enabled(timeout=WAIT_MS)
        self.request_button().click()
        invites.nth(before).wait_for(timeout=WAIT_MS)
        url = invites.nth(before).get_attribute("data-url")
        if not url or "#share=" not in url:
            raise RuntimeError(f"the invitation carries no popup URL: {url!r}")
        return str(url)

    def end(self, popup: Any) -> None:
        """Close the popup: the server ends the share; wait until the console can ask again."""
        from playwright.sync_api import expect

        popup.close()
        expect(self.request_button()).to_be_visible(timeout=WAIT_MS)
        expect(self.request_button()).to_be_enabled(timeout=WAIT_MS)

    def popup_url(self, invite: str, variant: str) -> str:
        path, _, fragment = invite.partition("#")
        return f"{self.server.url}{POPUP_PAGES[variant]}#{fragment}"


# --- measurements -----------------------------------------------------------------------


@contextmanager
def traced(flow: Flow, page: Any, name: str) -> Iterator[None]:
    """With --trace: record what the browser does during the block (Chrome's trace format:
    load it in chrome://tracing or Perfetto) into <trace dir>/<name>-<n>.json."""
    if flow.trace_dir is None:
        yield
        return
    cdp = page.context.new_cdp_session(page)
    events: list[Any] = []
    complete: list[bool] = []
    cdp.on("Tracing.dataCollected", lambda e: events.extend(e["value"]))
    cdp.on("Tracing.tracingComplete", lambda e: complete.append(True))
    cdp.send("Tracing.start", {"categories": TRACE_CATEGORIES, "transferMode": "ReportEvents"})
    try:
        yield
    finally:
        cdp.send("Tracing.end")
        deadline = time.monotonic() + 30
        while not complete and time.monotonic() < deadline:
            page.wait_for_timeout(50)  # Playwright dispatches CDP events while it waits
        flow.trace_dir.mkdir(parents=True, exist_ok=True)
        n = len(list(flow.trace_dir.glob(f"{name}-*.json"))) + 1
        (flow.trace_dir / f"{name}-{n}.json").write_text(json.dumps(events))
        cdp.detach()


TRACE_CATEGORIES = ",".join(
    [
        "devtools.timeline",
        "disabled-by-default-devtools.timeline",
        "v8.execute",
        "v8",
        "loading",
        "blink.user_timing",
    ]
)


def load_popup(flow: Flow, ctx: Any, variant: str, kind: str) -> tuple[Any, float, dict[str, Any]]:
    url = flow.popup_url(flow.invite(), variant)
    page = ctx.new_page()
    messages = watch_console(page)
    mark, _ = flow.server.answers_since(1 << 60)
    with traced(flow, page, f"popup-{variant}-{kind}"):
        page.goto(url, wait_until="commit")
        ms = float(await_in_page(page, "interactive"))
    resources = page.evaluate(RESOURCES_JS)
    details = summarize_requests(resources, flow.server.answers_since(mark)[1])
    details["console"] = messages
    return page, ms, details


def rotated(variants: tuple[str, ...], i: int) -> tuple[str, ...]:
    """Run ``i``'s order: each variant goes first, middle and last equally often, so none
    always follows the same neighbour (a page load leaves work behind in the browser)."""
    k = i % len(variants)
    return variants[k:] + variants[:k]


def popup_loads(
    flow: Flow, pw: Any, runs: int, tmp: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    out: dict[str, Any] = {
        v: {"cold": [], "warm": [], "cold_details": [], "warm_details": []} for v in POPUP_VARIANTS
    }
    for i in range(runs):
        for variant in rotated(POPUP_VARIANTS, i):
            ctx = flow.new_context()
            try:
                page, ms, details = load_popup(flow, ctx, variant, "cold")
                flow.end(page)
            finally:
                ctx.close()
            out[variant]["cold"].append(ms)
            out[variant]["cold_details"].append(details)
            log(f"  popup {variant} cold #{i + 1}: {ms:.0f} ms, {details['requests']} requests")
    with persistent(pw, tmp / "warm-popup-profile", flow) as ctx:
        for variant in POPUP_VARIANTS:  # fill the HTTP cache
            page, ms, details = load_popup(flow, ctx, variant, "priming")
            flow.end(page)
            out[variant]["priming"] = {"ms": ms, **details}
        for i in range(runs):
            for variant in rotated(POPUP_VARIANTS, i):
                page, ms, details = load_popup(flow, ctx, variant, "warm")
                flow.end(page)
                out[variant]["warm"].append(ms)
                out[variant]["warm_details"].append(details)
                log(
                    f"  popup {variant} warm #{i + 1}: {ms:.0f} ms, "
                    f"{details['from_cache']} from cache, {len(details['revalidated_304'])} 304s"
                )
    return out


def click_to_first_frame(flow: Flow, runs: int, log: Callable[[str], None]) -> dict[str, Any]:
    out: dict[str, Any] = {"py": [], "js": [], "how": []}
    for i in range(runs):
        for variant in ("py", "js") if i % 2 == 0 else ("js", "py"):
            url = flow.popup_url(flow.invite(), variant)
            # The popup opens next to the shop tab, which the flags make getDisplayMedia pick.
            page = flow.visitor_ctx.new_page()
            page.goto(url, wait_until="commit")
            await_in_page(page, "interactive")
            flow.console.evaluate("() => { window.__bench.frame = window.__bench.armFrame(); }")
            page.locator("#share").click()
            frame_at = float(await_in_page(flow.console, "frame"))
            click_at = float(page.evaluate("() => window.__bench.clickAt"))
            how = flow.console.evaluate("() => window.__bench.marks.frameHow")
            ms = frame_at - click_at
            out[variant].append(ms)
            out["how"].append(how)
            # Where the time went, ms after the click (signaling messages of both pages).
            sharer = page.evaluate("() => [window.__bench.sent, window.__bench.received]")
            viewer = flow.console.evaluate("() => [window.__bench.sent, window.__bench.received]")
            steps = {
                "popup sent share_media": sharer[0].get("share_media"),
                "popup sent offer": sharer[0].get("offer"),
                "console got offer": viewer[1].get("offer"),
                "console sent answer": viewer[0].get("answer"),
                "popup got answer": sharer[1].get("answer"),
                "first frame": frame_at,
            }
            out.setdefault(f"{variant}_steps", []).append(
                {k: None if v is None else round(v - click_at, 1) for k, v in steps.items()}
            )
            log(f"  click-to-first-frame {variant} #{i + 1}: {ms:.0f} ms ({how})")
            flow.end(page)
    return out


def console_loads(
    flow: Flow, pw: Any, runs: int, tmp: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    out: dict[str, Any] = {"cold": [], "warm": [], "cold_details": [], "warm_details": []}

    def once(ctx: Any, kind: str) -> tuple[float, dict[str, Any]]:
        page = ctx.new_page()
        messages = watch_console(page)
        mark, _ = flow.server.answers_since(1 << 60)
        with traced(flow, page, f"console-{kind}"):
            page.goto(flow.server.url + "/console", wait_until="commit")
            ms = float(await_in_page(page, "ready"))
        resources = page.evaluate(RESOURCES_JS)
        details = summarize_requests(resources, flow.server.answers_since(mark)[1])
        details["console"] = messages
        page.close()
        return ms, details

    for i in range(runs):
        ctx = flow.new_context()
        try:
            ctx.add_cookies([flow.session_cookie])
            ms, details = once(ctx, "cold")
        finally:
            ctx.close()
        out["cold"].append(ms)
        out["cold_details"].append(details)
        log(f"  console cold #{i + 1}: {ms:.0f} ms, {details['transferred_bytes']} B")
    with persistent(pw, tmp / "warm-console-profile", flow) as ctx:
        ctx.add_cookies([flow.session_cookie])
        out["priming"] = once(ctx, "priming")[0]
        for i in range(runs):
            ms, details = once(ctx, "warm")
            out["warm"].append(ms)
            out["warm_details"].append(details)
            log(
                f"  console warm #{i + 1}: {ms:.0f} ms, {details['from_cache']} from cache, "
                f"{len(details['revalidated_304'])} 304s"
            )
    return out


@contextmanager
def persistent(pw: Any, profile: Path, flow: Flow) -> Iterator[Any]:
    """A browser with an on-disk profile: its HTTP cache survives between pages, as a real
    visitor's does (Playwright's incognito contexts start empty every time)."""
    from tests.e2e.conftest import BASE_ARGS

    ctx = pw.chromium.launch_persistent_context(
        str(profile),
        executable_path=CHROMIUM,
        args=BASE_ARGS,
        headless=True,
        viewport={"width": 1280, "height": 720},
    )
    try:
        flow.prepare(ctx)
        for page in ctx.pages:  # the blank start page
            page.close()
        yield ctx
    finally:
        ctx.close()


# --- report -----------------------------------------------------------------------------


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def verdict(value: float | None, limit: float) -> str:
    if value is None:
        return ""
    return "PASS" if value <= limit else "MISS"


def fmt(value: float | None, unit: str = "ms") -> str:
    if value is None:
        return "–"
    return f"{value:.2f}×" if unit == "x" else f"{value:.0f} ms"


def report(results: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    rows: list[tuple[str, str, str, str, str]] = []
    summary: dict[str, Any] = {}
    pop = results.get("popup")
    if pop:
        for kind in ("cold", "warm"):
            py, js = median(pop["py"][kind]), median(pop["js"][kind])
            ratio = py / js if py and js else None
            key = f"popup_{kind}_ms"
            summary[key] = py
            summary[f"popup_{kind}_js_ms"] = js
            summary[f"popup_{kind}_ratio"] = ratio
            rows.append(
                (
                    f"Visitor popup {kind} → interactive",
                    fmt(py),
                    fmt(js),
                    fmt(ratio, "x"),
                    f"≤ {BUDGETS[key]:.0f} ms {verdict(py, BUDGETS[key])}",
                )
            )
        for kind in ("cold", "warm"):
            if "floor" not in pop:
                continue
            floor, js = median(pop["floor"][kind]), median(pop["js"][kind])
            summary[f"popup_{kind}_floor_ms"] = floor
            rows.append(
                (
                    f"  PyScript floor {kind} (no Coview code)",
                    fmt(floor),
                    fmt(js),
                    fmt(floor / js if floor and js else None, "x"),
                    "reference",
                )
            )
    c2f = results.get("c2f")
    if c2f:
        py, js = median(c2f["py"]), median(c2f["js"])
        ratio = py / js if py and js else None
        summary.update(c2f_ms=py, c2f_js_ms=js, c2f_ratio=ratio)
        rows.append(
            (
                "Click → first frame at agent",
                fmt(py),
                fmt(js),
                fmt(ratio, "x"),
                f"≤ 1.1× JS {verdict(ratio, BUDGETS['c2f_ratio'])}",
            )
        )
    con = results.get("console")
    if con:
        for kind in ("cold", "warm"):
            value = median(con[kind])
            key = f"console_{kind}_ms"
            summary[key] = value
            rows.append(
                (
                    f"Agent console {kind} → ready",
                    fmt(value),
                    "",
                    "",
                    f"≤ {BUDGETS[key] / 1000:.0f} s {verdict(value, BUDGETS[key])}",
                )
            )
    head = (f"measure (median of {results['runs']})", "Python", "JS baseline", "ratio", "budget")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [head, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines), summary


MILESTONES = ("mpy:defined", "py:defined", "mpy:ready", "py:ready", "ws:new", "ws:first-message")


def describe(name: str, details: list[dict[str, Any]]) -> list[str]:
    """Two lines on a series of loads: requests and cache use, then median milestones."""
    if not details:
        return []
    last = details[-1]
    lines = [
        f"{name}: {last['requests']} requests ({last['server_answers']} reached the server, "
        f"{len(last['revalidated_304'])} of them 304), {last['from_cache']} from cache, "
        f"{last['transferred_bytes'] / 1024:.0f} KiB over the wire, codings "
        f"{'/'.join(last['encodings']) or '-'}, plugin chunks {len(last['plugin_chunks'])}, "
        f"fetched twice {len(last['fetched_twice'])}, console warnings {len(last['console'])}"
    ]
    steps = []
    for key in ("domContentLoaded",):
        values = [d["nav"][key] for d in details if d.get("nav")]
        if values:
            steps.append(f"DOMContentLoaded {statistics.median(values):.0f}")
    for key in MILESTONES:
        values = [d["marks"][key] for d in details if key in d.get("marks", {})]
        if (
            values
            and not (key == "py:defined" and "mpy" in name)
            and not (key == "mpy:defined" and "console" in name)
        ):
            steps.append(f"{key} {statistics.median(values):.0f}")
    if steps:
        lines.append("    milestones (median ms): " + ", ".join(steps))
    return lines


def detail_lines(results: dict[str, Any]) -> list[str]:
    out: list[str] = []
    c2f = results.get("c2f")
    if c2f:
        for variant, label in (("py", "mpy popup"), ("js", "js popup")):
            steps = c2f.get(f"{variant}_steps", [])
            if not steps:
                continue
            parts = []
            for key in steps[0]:
                values = [s[key] for s in steps if s.get(key) is not None]
                if values:
                    parts.append(f"{key} {statistics.median(values):.0f}")
            spread = f"{min(c2f[variant]):.0f}–{max(c2f[variant]):.0f}"
            out.append(
                f"click-to-first-frame {label} (range {spread} ms), median ms after the "
                "click: " + ", ".join(parts)
            )
    pop = results.get("popup")
    if pop:
        for variant, label in (("py", "popup mpy"), ("floor", "floor mpy"), ("js", "popup js")):
            for kind in ("cold", "warm"):
                if variant not in pop:
                    continue
                out += describe(f"{label} {kind}", pop[variant][f"{kind}_details"])
    con = results.get("console")
    if con:
        for kind in ("cold", "warm"):
            out += describe(f"console {kind}", con[f"{kind}_details"])
    return out


# --- main -------------------------------------------------------------------------------


def inside(args: argparse.Namespace) -> int:
    assert_loopback_only()
    from playwright.sync_api import sync_playwright

    from tests.e2e.conftest import BASE_ARGS

    only = set(args.only.split(",")) if args.only else {"popup", "c2f", "console"}
    started = time.strftime("%Y%m%d-%H%M%S")
    results: dict[str, Any] = {
        "started": started,
        "runs": args.runs,
        "latency_ms": args.latency,
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_before": os.getloadavg(),
            "python": platform.python_version(),
            "chromium": subprocess.run(
                [CHROMIUM, "--version"], capture_output=True, text=True
            ).stdout.strip(),
        },
        "budgets": BUDGETS,
        "chromium_args": BASE_ARGS,
    }

    def log(text: str) -> None:
        if not args.quiet:
            print(text, flush=True)

    with tempfile.TemporaryDirectory(prefix="coview-bench-") as tmpname:
        tmp = Path(tmpname)
        server = Server(tmp, latency_ms=args.latency)
        server.start()
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=CHROMIUM, args=BASE_ARGS, headless=True
                )
                try:
                    flow = Flow(server, browser, trace_dir=args.trace)
                    log("setting up the visitor chat and the agent console…")
                    flow.start()
                    if "popup" in only:
                        log("visitor popup loads:")
                        results["popup"] = popup_loads(flow, pw, args.runs, tmp, log)
                    if "c2f" in only:
                        log("click-to-first-frame:")
                        results["c2f"] = click_to_first_frame(flow, args.runs, log)
                    if "console" in only:
                        log("agent console loads:")
                        results["console"] = console_loads(flow, pw, args.runs, tmp, log)
                    # Warnings and errors of the long-lived pages (the widget logs to the shop).
                    results["shop_console"] = flow.shop_console
                    results["agent_console_console"] = flow.console_console
                finally:
                    browser.close()
        finally:
            server.stop()
    results["machine"]["loadavg_after"] = os.getloadavg()
    table, summary = report(results)
    results["summary"] = summary
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{started}.json"
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print()
    if args.latency:
        print(f"(simulated latency: {args.latency:.0f} ms per request and per WebSocket)")
    print(table)
    print()
    for line in detail_lines(results):
        print(line)
    load = results["machine"]
    print(
        f"\nload average before/after: {load['loadavg_before'][0]:.2f} / "
        f"{load['loadavg_after'][0]:.2f} on {load['cpus']} CPUs "
        f"(anything else running slows every figure); results: {path.relative_to(ROOT)}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per figure (median; default 7)")
    parser.add_argument("--only", default="", help="comma-separated subset: popup,c2f,console")
    parser.add_argument(
        "--trace",
        type=Path,
        metavar="DIR",
        help="save a CDP trace of every measured load in DIR (slows the loads: diagnosis only)",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="MS",
        help="simulated round trip: the server waits MS ms before serving each request "
        "(default 0: plain loopback, the figures the budgets are about)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the table")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not args.inside:
        return outside([a for a in argv if a != "--inside"])
    return inside(args)


if __name__ == "__main__":
    sys.exit(main())
