"""Browsers for Coview tests: launch options per browser, and the origin guard.

* **Chromium** (Debian's ``/usr/bin/chromium``, headless): real WebRTC on loopback, and a
  visitor's ``getDisplayMedia`` captures the real pixels of the tab titled
  :data:`SHOP_TITLE` (the demo shop), with no picker.  No background traffic and no DNS
  look-ups at all (:data:`HYGIENE_ARGS`).
* **Firefox ESR** (Debian's ``/usr/bin/firefox-esr``), driven through WebDriver BiDi:
  headed on a virtual screen (:mod:`.display`), which its ``getDisplayMedia`` captures
  with no prompt, with the preferences of :mod:`.firefox`; Firefox's own test switch
  ``MOZ_DISABLE_NONLOCAL_CONNECTIONS`` refuses any connection that is not local.

Every context a test makes is watched by :class:`OriginGuard`: a request to any origin
but our servers' (:data:`.server.OUR_ORIGINS`) fails the test.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, BrowserContext, Playwright, Request

from .display import Xvfb
from .firefox import PREFS
from .network import DeadEndRoute, DnsGuard, has_default_route, test_namespace
from .server import OUR_ORIGINS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FIREFOX = shutil.which("firefox-esr") or "/usr/bin/firefox-esr"
BROWSERS = ("chromium", "firefox")
SHOP_TITLE = "Coview Demo Shop"

#: Flags every Chromium we launch gets: no background traffic, no DNS look-ups at all.
HYGIENE_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
    # Chromium 156 loads its omnibox popup (a WebUI page of ~300 files) with every new page,
    # even headless: a second of CPU that slowed the page under test (bench/README.md).
    "--disable-features=WebUIOmniboxPopup,WebUIOmniboxFullPopup,WebUIOmniboxAimPopup,"
    "PreloadTopChromeWebUI",
]
#: Plus real WebRTC on loopback and screen capture of the demo shop tab, picked by title.
BASE_ARGS = [
    *HYGIENE_ARGS,
    "--allow-loopback-in-peer-connection",
    f"--auto-select-tab-capture-source-by-title={SHOP_TITLE}",
    "--enable-features=GetDisplayMediaRequiresUserActivation",
    "--autoplay-policy=no-user-gesture-required",
]
#: Firefox's own switch (used by its test harness): connections to anything but local
#: addresses are refused, and remote settings accept the dummy server of :data:`PREFS`.
FIREFOX_ENV = {"MOZ_DISABLE_NONLOCAL_CONNECTIONS": "1"}


def launch_chromium(playwright: Playwright, args: list[str] | None = None) -> Browser:
    return playwright.chromium.launch(
        executable_path=CHROMIUM, args=BASE_ARGS if args is None else args, headless=True
    )


class OriginGuard:
    """Collects every request that is not to one of our own servers."""

    def __init__(self) -> None:
        self.foreign: list[str] = []

    def watch(self, context: BrowserContext) -> None:
        context.on("request", self._check)

    def _check(self, request: Request) -> None:
        url = request.url
        if url.startswith(("data:", "blob:", "about:")):
            return
        parts = url.split("/")
        if len(parts) < 3 or f"{parts[0]}//{parts[2]}" not in OUR_ORIGINS:
            self.foreign.append(url)


class Firefox:
    """Firefox ESR on its own Xvfb screen, with a dead-end default route when needed.

    ``start()`` returns the Playwright :class:`Browser`; ``leaks()`` lists what tried to
    leave (packets through the dead-end route, DNS queries to a loopback resolver);
    ``close()`` undoes everything."""

    def __init__(self, playwright: Playwright, tmp: Path) -> None:
        self.playwright = playwright
        self.tmp = tmp
        self.xvfb = Xvfb(tmp)
        self.route: DeadEndRoute | None = None
        self.dns = DnsGuard()
        self.browser: Browser | None = None

    def start(self, prefs: dict[str, Any] | None = None) -> Browser:
        if not os.path.exists(FIREFOX):
            raise RuntimeError("Firefox is missing: scripts/bootstrap --test installs firefox-esr")
        if not has_default_route():
            ns = test_namespace()
            if ns is None:
                raise RuntimeError(
                    "Firefox gathers no ICE candidates without a default route, and this "
                    "namespace has none; the kit adds one only inside a test namespace of "
                    "our own (COVIEW_NETNS, as scripts/test sets it), never to the host"
                )
            self.route = DeadEndRoute(ns, self.tmp)
            self.route.setup()
        self.dns.start()
        display = self.xvfb.start()
        env: dict[str, str | float | bool] = {**os.environ, **FIREFOX_ENV, "DISPLAY": display}
        env.pop("WAYLAND_DISPLAY", None)
        self.browser = self.playwright.firefox.launch(
            channel="moz-firefox",
            executable_path=FIREFOX,
            headless=False,  # getDisplayMedia needs a screen: headless gives NotFoundError
            firefox_user_prefs={**PREFS, **(prefs or {})},
            env=env,
        )
        return self.browser

    def leaks(self) -> list[str]:
        out = self.route.leaks() if self.route is not None else []
        return out + [f"DNS query for {name}" for name in self.dns.queries]

    def _close_browser(self) -> None:
        if self.browser is not None:
            self.browser.close()
            self.browser = None

    def close(self) -> None:
        errors: list[str] = []
        steps: list[Callable[[], None]] = [self._close_browser, self.xvfb.stop, self.dns.close]
        if self.route is not None:
            steps.append(self.route.close)
        for step in steps:
            try:
                step()
            except Exception as exc:  # keep tearing down
                errors.append(repr(exc))
        if errors:
            raise RuntimeError(f"Firefox tear-down: {errors}")


def new_context(
    browser: Browser, guard: OriginGuard, init_script: str | None = None
) -> BrowserContext:
    """A fresh 1280×720 context of ``browser``, guarded; in Chromium, camera and microphone
    are granted for our origins (without the grants Chromium hides host candidates behind
    mDNS names, which never resolve in a loopback-only namespace)."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 720})
    if browser.browser_type.name == "chromium":
        for origin in sorted(OUR_ORIGINS):
            ctx.grant_permissions(["camera", "microphone"], origin=origin)
    if init_script:
        ctx.add_init_script(init_script)
    guard.watch(ctx)
    if os.environ.get("COVIEW_E2E_CONSOLE"):
        tag = f"{browser.browser_type.name}-{id(ctx) % 1000}"
        ctx.on("console", lambda m: print(tag, m.type, m.text[:400]))
        ctx.on("weberror", lambda e: print(tag, "ERROR", str(e.error)[:400]))
    return ctx
