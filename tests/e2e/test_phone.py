"""A caller on the phone opens a screen share with a key the agent reads to them.

Real Chromium on both ends: the agent's console makes the key and shows it; the caller, in
a browser context of their own, opens ``/share``, types it and lands in the same popup as
a chat visitor.  Media is proven by pixels, as in test_share.py: the caller's context has
the demo shop open, which the capture picks by its title.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from .conftest import BASE_ARGS, CHROMIUM, OUR_ORIGINS, OriginGuard, Server, make_server
from .flows import Agent, assert_sees_shop, open_console

IP = shutil.which("ip") or "/usr/sbin/ip"
INVALID = "That key is not valid. Check the digits with the agent."


@pytest.fixture(scope="module")
def phone_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Every browser here comes from 127.0.0.1: leave the per-address limit out of the way.
    srv = make_server(tmp_path_factory.mktemp("phone"), COVIEW_SHARE_KEY_ADDRESS_LIMIT="200")
    yield srv
    srv.stop()


def start_phone_share(agent: Agent, button: str = "Start a phone share") -> str:
    """Click ``button`` and read the key the console shows (digits only)."""
    key = agent.page.get_by_role("status", name="Key for the caller")
    old = key.inner_text() if key.is_visible() else ""
    agent.page.get_by_role("button", name=button).click()
    expect(key).to_have_text(re.compile(r"^\d{3} \d{3}$"))
    expect(key).not_to_have_text(old)
    expect(agent.share_status()).to_contain_text("Waiting for the caller to type the key")
    return key.inner_text().replace(" ", "")


def type_key(page: Page, server: Server, key: str, base: str | None = None) -> None:
    if not page.url.endswith("/share"):
        page.goto((base or server.url) + "/share")
    page.get_by_label("Key").fill(key)
    page.get_by_role("button", name="Continue").click()


def refused(page: Page, words: str) -> None:
    expect(page.get_by_role("alert")).to_contain_text(words)
    expect(page.get_by_label("Key")).to_have_value("")  # a refused key is never echoed


def wrong_key(key: str, n: int = 1) -> str:
    return f"{(int(key) + n) % 10**6:06d}"


def caller(contexts, server: Server, base: str | None = None) -> tuple[BrowserContext, Page]:
    """A caller's browser: the shop they will show (picked by title) and the key page."""
    ctx: BrowserContext = contexts()
    shop = ctx.new_page()
    shop.goto((base or server.url) + "/demo")
    return ctx, ctx.new_page()


def reaches_popup(page: Page) -> None:
    page.wait_for_url(re.compile(r"/popup"))
    page.wait_for_selector("body[data-ready='1']", timeout=20000)
    expect(page.get_by_role("button", name="Share my screen")).to_be_enabled(timeout=20000)
    assert "t=" not in page.url, "the popup drops its token from the address bar"


def test_the_key_opens_the_callers_screen_to_the_agent(contexts, phone_server):
    agent = open_console(contexts(), phone_server)
    key = start_phone_share(agent)
    expect(agent.page.locator("#phone-address")).to_have_text(phone_server.url + "/share")
    expect(agent.page.get_by_role("button", name=re.compile("^Phone caller"))).to_be_visible()
    expect(agent.page.get_by_role("log", name="Messages")).to_contain_text(
        "gave the caller a screen share key, valid for 5 minutes"
    )

    ctx, page = caller(contexts, phone_server)
    type_key(page, phone_server, key[:3] + " " + key[3:])  # as the agent reads it
    reaches_popup(page)
    # The agent sees, live, that the key was entered, then the screen.
    expect(agent.share_status()).to_contain_text("The caller entered the key")
    expect(agent.page.get_by_role("status", name="Key for the caller")).to_be_hidden()
    expect(page.get_by_text("from support asks to see your screen")).to_be_visible()
    page.get_by_role("button", name="Share my screen").click()
    expect(page.get_by_role("button", name="Stop sharing")).to_be_visible()
    agent.wait_live()
    assert_sees_shop(agent)
    expect(agent.share_status()).to_contain_text("watching the caller's screen")
    expect(agent.page.locator("#rec-browser")).to_contain_text("Chrom")

    # The key worked once: this browser is told so; another browser is told nothing more.
    again = ctx.new_page()
    type_key(again, phone_server, key)
    refused(again, "You have already used this key")
    other = contexts().new_page()
    type_key(other, phone_server, key)
    refused(other, INVALID)
    agent.wait_live()  # the share runs on

    page.get_by_role("button", name="Stop sharing").click()
    expect(agent.share_status()).to_contain_text("The caller stopped sharing", timeout=2000)


def test_a_wrong_key_gets_a_clear_message_and_the_right_one_still_works(contexts, phone_server):
    agent = open_console(contexts(), phone_server)
    key = start_phone_share(agent)
    _, page = caller(contexts, phone_server)
    type_key(page, phone_server, "12")
    refused(page, "Type the 6 digits of the key")
    type_key(page, phone_server, wrong_key(key))
    refused(page, INVALID)
    expect(page.get_by_role("alert")).to_contain_text("ask the agent for a new one")
    expect(agent.share_status()).to_contain_text("Wrong keys entered so far: 1")
    type_key(page, phone_server, key)
    reaches_popup(page)
    expect(agent.share_status()).to_contain_text("The caller entered the key")


def test_five_wrong_keys_lock_the_key_and_the_agent_makes_a_new_one(contexts, phone_server):
    agent = open_console(contexts(), phone_server)
    key = start_phone_share(agent)
    _, page = caller(contexts, phone_server)
    for n in range(1, 5):
        type_key(page, phone_server, wrong_key(key, n))
        refused(page, INVALID)
        expect(agent.share_status()).to_contain_text(f"Wrong keys entered so far: {n}")
    type_key(page, phone_server, wrong_key(key, 5))
    refused(page, INVALID)
    expect(agent.share_status()).to_contain_text("The key was locked after 5 wrong attempts")
    # The sixth try, with the right key, fails the same way: the key is dead.
    type_key(page, phone_server, key)
    refused(page, INVALID)
    assert "/share" in page.url

    fresh = start_phone_share(agent, button="New key for the caller")
    type_key(page, phone_server, fresh)
    reaches_popup(page)
    page.get_by_role("button", name="Share my screen").click()
    agent.wait_live()
    assert_sees_shop(agent)


def test_an_expired_key_is_refused(contexts, tmp_path: Path):
    server = make_server(tmp_path, COVIEW_SHARE_KEY_TTL_S="2")
    try:
        agent = open_console(contexts(), server)
        key = start_phone_share(agent)
        expect(agent.share_status()).to_contain_text(
            "The key expired before the caller typed it", timeout=10000
        )
        expect(agent.page.get_by_role("log", name="Messages")).to_contain_text(
            "key expired before the caller entered it"
        )
        _, page = caller(contexts, server)
        type_key(page, server, key)
        refused(page, INVALID)
        expect(page.get_by_role("alert")).to_contain_text("A key works once, for 2 seconds")
    finally:
        server.stop()


def _only_loopback() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


@contextmanager
def second_loopback_address() -> Iterator[str]:
    """Connections to 127.0.0.2 come *from* 127.0.0.2 while this lasts.

    Linux picks 127.0.0.1 as the source of every loopback connection (the ``src`` of the
    ``127.0.0.0/8`` local route); a more specific local route gives 127.0.0.2 its own.
    Only ever done in the loopback-only test namespace, and undone after.
    """
    route = ["local", "127.0.0.2/32", "dev", "lo", "src", "127.0.0.2", "table", "local"]
    subprocess.run([IP, "route", "add", *route], check=True)
    try:
        yield "127.0.0.2"
    finally:
        subprocess.run([IP, "route", "del", *route], check=False)


def test_attempts_are_limited_per_address(contexts, playwright, tmp_path: Path):
    # A second caller address needs the server on every address, which is loopback only
    # in the test namespace: never start it so anywhere else.
    if not _only_loopback():
        pytest.skip("needs the loopback-only test namespace to listen on 127.0.0.2")
    with second_loopback_address() as address:
        _limited_per_address(contexts, playwright, tmp_path, address)


def _limited_per_address(contexts, playwright, tmp_path: Path, address: str) -> None:
    server = make_server(tmp_path, COVIEW_SHARE_KEY_ADDRESS_LIMIT="3", COVIEW_HOST="0.0.0.0")
    second = f"http://{address}:{server.port}"
    OUR_ORIGINS.add(second)
    # The shared browser resolves nothing but 127.0.0.1; this one may also reach 127.0.0.2.
    args = [
        a + f", EXCLUDE {address}" if a.startswith("--host-resolver-rules") else a
        for a in BASE_ARGS
    ]
    other_browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
    guard = OriginGuard()
    try:
        agent = open_console(contexts(), server)
        key = start_phone_share(agent)
        _, page = caller(contexts, server)
        for n in (1, 2, 3):
            type_key(page, server, wrong_key(key, n))
            refused(page, INVALID)
        type_key(page, server, key)
        refused(page, "Too many attempts from your address")
        # Refused before any comparison: the key counted three wrong tries, not four.
        expect(agent.share_status()).to_contain_text("Wrong keys entered so far: 3")
        # A caller at another address is not held back by the first one.
        ctx = other_browser.new_context()
        guard.watch(ctx)
        elsewhere = ctx.new_page()
        type_key(elsewhere, server, key, base=second)
        reaches_popup(elsewhere)
        expect(agent.share_status()).to_contain_text("The caller entered the key")
    finally:
        other_browser.close()
        server.stop()
    assert guard.foreign == [], f"requests left our origin: {guard.foreign}"
