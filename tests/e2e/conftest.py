"""End-to-end fixtures: a real Coview server, real Chromium, real media.

``scripts/test`` runs this suite inside a network namespace that has only loopback, so
WebRTC can only pick 127.0.0.1; Chromium is also told to resolve no host names.  Every
page records its requests and a test fails if any left our server's origin.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOP_TITLE = "Coview Demo Shop"
ADMIN_EMAIL = "admin@coview.test"
ADMIN_PASSWORD = "e2e-admin-password-1"
AGENT_EMAIL = "agent@coview.test"
AGENT_PASSWORD = "e2e-agent-password-1"

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
]
#: Plus real WebRTC on loopback and screen capture of the demo shop tab, picked by title.
BASE_ARGS = [
    *HYGIENE_ARGS,
    "--allow-loopback-in-peer-connection",
    f"--auto-select-tab-capture-source-by-title={SHOP_TITLE}",
    "--enable-features=GetDisplayMediaRequiresUserActivation",
    "--autoplay-policy=no-user-gesture-required",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.e2e)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A ``coview serve`` process with its own throw-away database."""

    tmp: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db(self) -> Path:
        return self.tmp / "coview.db"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            COVIEW_ADMIN_EMAIL=ADMIN_EMAIL,
            COVIEW_ADMIN_PASSWORD=ADMIN_PASSWORD,
            COVIEW_DATABASE_URL=f"sqlite+aiosqlite:///{self.db}",
            # aioice never gathers on loopback by itself, and loopback is all there is here.
            COVIEW_RELAY_ADDRESSES="127.0.0.1",
        )
        env.update(self.env_extra)
        return env

    def cli(self, *args: str, stdin: str | None = None) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "coview_server", *args],
            input=stdin.encode() if stdin else None,
            env=self.env(),
            capture_output=True,
            check=True,
            cwd=ROOT,
        )
        return out.stdout.decode()

    def command(self) -> list[str]:
        return [sys.executable, "-m", "coview_server", "serve", "--port", str(self.port)]

    def start(self) -> None:
        if not self.port:
            self.port = free_port()
        log = open(self.tmp / "server.log", "ab")
        self.proc = subprocess.Popen(
            self.command(),
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + self.log())
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("server did not start:\n" + self.log())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        try:
            return (self.tmp / "server.log").read_text(errors="replace")[-5000:]
        except OSError:
            return ""


#: Origins of the Coview servers this test session started: the only ones pages may reach.
OUR_ORIGINS: set[str] = set()


def make_server(tmp: Path, **env: str) -> Server:
    server = Server(tmp=tmp, env_extra=env)
    server.start()
    OUR_ORIGINS.add(server.url)
    server.cli(
        "create-user",
        AGENT_EMAIL,
        "--name",
        "Alice Agent",
        "--password-stdin",
        stdin=AGENT_PASSWORD + "\n",
    )
    return server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("server"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=BASE_ARGS, headless=True)
    yield b
    b.close()


class OriginGuard:
    """Collects every request that is not to one of our own servers."""

    def __init__(self) -> None:
        self.foreign: list[str] = []

    def watch(self, context: BrowserContext) -> None:
        context.on("request", self._check)

    def _check(self, request: Any) -> None:
        url = request.url
        if url.startswith(("data:", "blob:", "about:")):
            return
        parts = url.split("/")
        if len(parts) < 3 or f"{parts[0]}//{parts[2]}" not in OUR_ORIGINS:
            self.foreign.append(url)


@pytest.fixture
def contexts(browser: Browser, server: Server) -> Iterator[Any]:
    """A factory of isolated browser contexts, each guarded against foreign requests."""
    made: list[BrowserContext] = []
    guard = OriginGuard()

    def make(init_script: str | None = None) -> BrowserContext:
        ctx = browser.new_context(viewport={"width": 1280, "height": 720})
        # Without these grants Chromium hides host candidates behind mDNS names, which
        # never resolve in our loopback-only namespace.
        for origin in sorted(OUR_ORIGINS):
            ctx.grant_permissions(["camera", "microphone"], origin=origin)
        if init_script:
            ctx.add_init_script(init_script)
        guard.watch(ctx)
        if os.environ.get("COVIEW_E2E_CONSOLE"):
            tag = f"ctx{len(made)}"
            ctx.on("console", lambda m: print(tag, m.type, m.text[:400]))
            ctx.on("weberror", lambda e: print(tag, "ERROR", str(e.error)[:400]))
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()
    assert guard.foreign == [], f"requests left our origin: {guard.foreign}"


def login(
    page: Page, server: Server, email: str = AGENT_EMAIL, password: str = AGENT_PASSWORD
) -> None:
    page.goto(server.url + "/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console")
    page.wait_for_selector("body[data-ready='1']", timeout=30000)
    page.get_by_role("status").filter(has_text="Connected").wait_for()
