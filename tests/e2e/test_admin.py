"""Accounts end to end: an admin manages agents and permissions in the admin screens, the
console follows live, the server refuses what the console hides (called directly over the
protocol), a disabled agent is signed out mid-share, and every share is in the audit
trail and its CSV export."""

from __future__ import annotations

import csv
import io
import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Server, login, make_server
from .flows import go_live, open_console, open_shop, unique

PASSWORD = "e2e-carol-password-1"

#: Speak the protocol by hand from the console's origin, with its session cookie: what a
#: script would do to get around the console's hidden buttons.
RAW_PROTOCOL = """async (msg) => await new Promise((resolve) => {
  const ws = new WebSocket(`ws://${location.host}/ws`);
  ws.onopen = () => ws.send(JSON.stringify({type: "handshake", versions: ["1"], role: "agent"}));
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.type === "welcome") ws.send(JSON.stringify(msg));
    if (m.type === "error" || m.type === "phone_share_key" || m.type === "history") {
      ws.close(); resolve(m);
    }
  };
  setTimeout(() => resolve({type: "timeout"}), 10000);
})"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of this module's own: its many sign-ins stay clear of the shared server's
    per-address login throttle, and its audit trail holds only this module's shares."""
    srv = make_server(tmp_path_factory.mktemp("server"))
    yield srv
    srv.stop()


def admin_page(ctx: BrowserContext, server: Server) -> Page:
    page = ctx.new_page()
    login(page, server, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.get_by_role("link", name="Agents").click()
    expect(page.get_by_role("heading", name="Agents", exact=True)).to_be_visible()
    return page


def create_agent(page: Page, email: str, name: str, password: str = PASSWORD) -> None:
    form = page.get_by_role("region", name="New account")
    form.get_by_label("Email").fill(email)
    form.get_by_label("Name").fill(name)
    form.get_by_label("Password").fill(password)
    form.get_by_role("button", name="Create account").click()


def row(page: Page, name: str) -> Any:
    return page.get_by_role("row").filter(has=page.get_by_role("rowheader", name=name, exact=True))


def test_admin_manages_agents_and_permissions_are_enforced(contexts: Any, server: Server) -> None:
    admin = admin_page(contexts(), server)
    name = unique("Carol")
    email = name.split()[1] + "@coview.test"

    # Malformed input: a clear error, and no account made.
    create_agent(admin, email, name, password="short")
    expect(admin.get_by_role("alert")).to_contain_text("Password")
    expect(row(admin, name)).to_have_count(0)
    expect(admin.get_by_role("region", name="New account").get_by_label("Email")).to_have_value(
        email
    )

    create_agent(admin, email, name)
    expect(admin.get_by_role("status")).to_contain_text(f"Created the account of {name}")
    expect(row(admin, name)).to_contain_text("Allowed")

    carol = open_console(contexts(), server, email=email, password=PASSWORD)
    phone = carol.page.get_by_role("button", name="Start a phone share")
    expect(phone).to_be_visible()
    expect(carol.page.get_by_role("link", name="Audit trail")).to_have_count(0)

    # Blocked: the console hides the actions at once, and the server refuses them anyway.
    row(admin, name).get_by_role("button", name=f"Block screen sharing for {name}").click()
    expect(row(admin, name)).to_contain_text("Not allowed")
    expect(phone).to_be_hidden()
    expect(carol.page.get_by_text("An administrator has not allowed you")).to_be_visible()
    refused = carol.page.evaluate(RAW_PROTOCOL, {"type": "phone_share_start"})
    assert refused["code"] == "forbidden", refused
    assert "not allowed you" in refused["text"]

    visitor = open_shop(contexts(), server)
    hello = unique("Need a hand")
    visitor.say(hello)
    carol.open_conversation(hello)
    carol.share_tab()
    expect(carol.page.get_by_role("button", name="Request screen share")).to_be_hidden()

    # The company-wide switch overrides a per-agent allowance, for every console at once.
    row(admin, name).get_by_role("button", name=f"Allow screen sharing for {name}").click()
    expect(carol.page.get_by_role("button", name="Request screen share")).to_be_visible()
    admin.get_by_role("button", name="Turn screen sharing off for everyone").click()
    expect(admin.get_by_role("status")).to_contain_text("now off for the whole company")
    expect(carol.page.get_by_role("button", name="Request screen share")).to_be_hidden()
    expect(phone).to_be_hidden()
    refused = carol.page.evaluate(RAW_PROTOCOL, {"type": "phone_share_start"})
    assert refused["code"] == "forbidden" and "whole company" in refused["text"], refused
    admin.get_by_role("button", name="Turn screen sharing on for everyone").click()
    expect(carol.page.get_by_role("button", name="Request screen share")).to_be_visible()
    expect(phone).to_be_visible()

    # An agent changes their own password; the old one stops working.
    page = carol.page
    page.get_by_role("button", name="Account").click()
    page.get_by_role("link", name="Change my password").click()
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill("e2e-carol-password-2")
    page.get_by_label("Repeat new password").fill("e2e-carol-password-3")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("alert")).to_contain_text("differ")
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill("e2e-carol-password-2")
    page.get_by_label("Repeat new password").fill("e2e-carol-password-2")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("status")).to_contain_text("Your password was changed")
    fresh = contexts().new_page()
    fresh.goto(server.url + "/login")
    fresh.get_by_label("Email").fill(email)
    fresh.get_by_label("Password").fill(PASSWORD)
    fresh.get_by_role("button", name="Sign in").click()
    expect(fresh.get_by_role("alert")).to_have_text("Wrong email or password.")


def test_disabled_mid_share_ends_the_share_and_is_audited(contexts: Any, server: Server) -> None:
    admin = admin_page(contexts(), server)
    name = unique("Dave")
    email = name.split()[1] + "@coview.test"
    create_agent(admin, email, name)
    expect(admin.get_by_role("status")).to_contain_text("Created the account")

    visitor = open_shop(contexts(), server)
    hello = unique("Please look at my cart")
    visitor.say(hello)
    dave = open_console(contexts(), server, email=email, password=PASSWORD)
    dave.open_conversation(hello)
    popup = go_live(visitor, dave)
    quality = dave.page.get_by_role("table", name="Connection quality")
    expect(quality).to_contain_text("Direct", timeout=10000)  # the media path is recorded

    # Another agent cannot watch, stop or read Dave's share and conversation, even by
    # speaking the protocol directly.
    with sqlite3.connect(f"file:{server.db}?mode=ro", uri=True) as db:
        share_id, conv_id = db.execute(
            "SELECT s.id, s.conversation_id FROM shares s JOIN users u ON u.id = s.requested_by"
            " WHERE u.email = ? AND s.ended_at IS NULL",
            (email,),
        ).fetchone()
    alice = open_console(contexts(), server)
    for msg in (
        {"type": "share_watch", "share": share_id},
        {"type": "share_stop", "share": share_id},
        {"type": "conversation_open", "conversation": conv_id},
        {"type": "chat_send", "conversation": conv_id, "text": "hi", "client_id": "x1"},
    ):
        answer = alice.page.evaluate(RAW_PROTOCOL, msg)
        assert answer["type"] == "error" and answer["code"] == "forbidden", (msg, answer)
    dave.wait_live()  # untouched

    row(admin, name).get_by_role("button", name=f"Disable {name}").click()
    expect(row(admin, name)).to_contain_text("Disabled")
    # Signed out at once, share ended on both sides, and no way back in.
    expect(dave.page.get_by_role("status").filter(has_text="disabled")).to_be_visible()
    expect(dave.share_status()).to_contain_text("Ended", timeout=5000)
    expect(popup.get_by_role("status")).to_contain_text("The agent left", timeout=5000)
    dave.page.reload()
    dave.page.wait_for_url("**/login")
    dave.page.get_by_label("Email").fill(email)
    dave.page.get_by_label("Password").fill(PASSWORD)
    dave.page.get_by_role("button", name="Sign in").click()
    expect(dave.page.get_by_role("alert")).to_contain_text("disabled")

    # The audit trail has the share: who, for whom, what, how it ended and by whom.
    admin.get_by_role("link", name="Audit trail").click()
    admin.get_by_label("Agent").select_option(label=name)
    admin.get_by_role("button", name="Filter").click()
    expect(admin.get_by_role("status", name="Result count")).to_have_text("1 share.")
    table = admin.get_by_role("table", name="Screen shares")
    entry = table.get_by_role("row").nth(1)
    for text in (name, "Visitor", "tab", "requester_left", "admin", "direct"):
        expect(entry).to_contain_text(text)
    expect(entry).to_contain_text(re.compile(r"0:00:\d\d"))

    with admin.expect_download() as info:
        admin.get_by_role("link", name="Export CSV").click()
    download = info.value
    assert download.suggested_filename.startswith("coview-audit-")
    path = download.path()
    assert path is not None
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert len(rows) == 1, rows  # the same filter as the table
    got = rows[0]
    assert got["agent"] == name and got["agent_email"] == email
    assert got["surface"] == "tab" and got["end_reason"] == "requester_left"
    assert got["ended_by"] == "admin" and got["started_at"] and got["ended_at"]
    assert got["visitor"].startswith("Visitor ")
