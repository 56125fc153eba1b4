"""Chat between a visitor on the demo shop and an agent, and what survives a restart."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from .conftest import make_server
from .flows import go_live, open_console, open_shop, start_chat, unique


def test_chat_both_ways_and_visitor_record(contexts, server):
    visitor, agent, hello = start_chat(contexts(), contexts(), server)
    page = agent.page
    expect(page.get_by_role("button", name="Take conversation")).to_be_visible()
    page.get_by_role("button", name="Take conversation").click()
    expect(page.get_by_role("log", name="Messages")).to_contain_text("Alice Agent joined")
    expect(visitor.widget.get_by_role("log")).to_contain_text("Alice Agent joined")

    reply = unique("Happy to help")
    page.get_by_label("Reply").fill(reply)
    page.get_by_label("Reply").press("Enter")
    expect(visitor.widget.get_by_role("log")).to_contain_text(reply)

    again = unique("Thanks")
    visitor.say(again)
    expect(page.get_by_role("log", name="Messages")).to_contain_text(again)

    # The visitor record: browser, OS, current page, share capability.
    expect(page.get_by_role("tab", name="Details")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#rec-browser")).to_contain_text("Chrome")
    expect(page.locator("#rec-os")).to_contain_text("Linux")
    expect(page.locator("#rec-page")).to_contain_text("/demo")
    expect(page.locator("#rec-share")).to_have_text("Available")
    expect(page.locator("#rec-online")).to_have_text("Online")

    # Tabs work from the keyboard.
    page.get_by_role("tab", name="Details").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Screen sharing")).to_have_attribute(
        "aria-selected", "true"
    )
    expect(page.get_by_role("button", name="Request screen share")).to_be_visible()

    # An agent reload loses nothing.
    page.reload()
    page.wait_for_selector("body[data-ready='1']", timeout=30000)
    agent.reopen()
    log = page.get_by_role("log", name="Messages")
    for text in (hello, reply, again):
        expect(log).to_contain_text(text)


def test_history_survives_a_server_restart(contexts, tmp_path):
    srv = make_server(tmp_path)
    try:
        visitor, agent, hello = start_chat(contexts(), contexts(), srv)
        reply = unique("Still here")
        agent.page.get_by_label("Reply").fill(reply)
        agent.page.get_by_role("button", name="Send").click()
        expect(visitor.widget.get_by_role("log")).to_contain_text(reply)
        srv.restart()
        # Both sides reload (reconnection without reload is issue 6's work).
        visitor.page.reload()
        widget_log = visitor.widget.get_by_role("log")
        expect(widget_log).to_contain_text(hello, timeout=20000)
        expect(widget_log).to_contain_text(reply)
        agent2 = open_console(contexts(), srv)
        agent2.open_conversation(reply)
        expect(agent2.page.get_by_role("log", name="Messages")).to_contain_text(hello)
    finally:
        srv.stop()


def test_login_rejects_wrong_password_and_locks_after_repeats(contexts, tmp_path):
    srv = make_server(tmp_path)
    try:
        page = contexts().new_page()
        page.goto(srv.url + "/login")
        for _ in range(5):
            page.get_by_label("Email").fill("agent@coview.test")
            page.get_by_label("Password").fill("wrong-password")
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("alert")).to_be_visible()
        expect(page.get_by_role("alert")).to_contain_text(re.compile("locked|Wrong"))
        page.get_by_label("Email").fill("agent@coview.test")
        page.get_by_label("Password").fill("e2e-agent-password-1")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("locked")
    finally:
        srv.stop()


def test_share_request_times_out_and_shows_it(contexts, tmp_path):
    srv = make_server(tmp_path, COVIEW_SHARE_REQUEST_TIMEOUT_S="3")
    try:
        visitor, agent, _ = start_chat(contexts(), contexts(), srv)
        agent.request_share()
        expect(agent.share_status()).to_contain_text("did not answer in time", timeout=6000)
        expect(visitor.widget.get_by_role("button", name="Accept")).to_be_disabled()
        # And a fresh request still works afterwards.
        go_live(visitor, agent)
    finally:
        srv.stop()


def test_console_requires_login(contexts, server):
    page = contexts().new_page()
    page.goto(server.url + "/console")
    expect(page).to_have_url(re.compile("/login$"))
    shop = open_shop(contexts(), server)
    expect(shop.widget.get_by_label("Message")).to_be_enabled()
