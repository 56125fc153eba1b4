"""Internal sharing end to end: one agent asks a colleague to share their screen, the
colleague accepts in their console and shows a tab through the same share window a
visitor gets, and the share is in the audit trail as a colleague's."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Server, make_server
from .flows import assert_sees_shop, open_console, open_shop, unique

PASSWORD = "e2e-colleague-password-1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of this module's own: its many sign-ins stay clear of the shared server's
    per-address login throttle, and its audit trail holds only this module's shares."""
    srv = make_server(tmp_path_factory.mktemp("server"))
    yield srv
    srv.stop()


def test_an_agent_watches_a_colleagues_screen(contexts: Any, server: Server) -> None:
    name = unique("Erin")
    email = name.split()[1] + "@coview.test"
    server.cli("create-user", email, "--name", name, "--password-stdin", stdin=PASSWORD + "\n")

    # Erin: her console, and the shop tab she will show (the capture picks it by title).
    erin_ctx = contexts()
    erin = open_console(erin_ctx, server, email=email, password=PASSWORD)
    erin_ctx.new_page().goto(server.url + "/demo")
    admin = open_console(contexts(), server, email=ADMIN_EMAIL, password=ADMIN_PASSWORD)

    admin.page.get_by_role("button", name=f"Ask {name} to share their screen").click()
    expect(admin.share_status()).to_contain_text("waiting for your colleague to accept")
    expect(admin.page.locator("#conv-title")).to_have_text(f"Colleague {name}")

    invite = erin.page.get_by_role("region", name="Screen share request from a colleague")
    expect(invite).to_contain_text("asks to see your screen")
    with erin.page.expect_popup() as info:
        invite.get_by_role("button", name="Share my screen with them").click()
    popup = info.value
    popup.wait_for_selector("body[data-ready='1']", timeout=20000)
    expect(popup.get_by_role("button", name="Share my screen")).to_be_enabled(timeout=20000)
    popup.get_by_role("button", name="Share my screen").click()
    expect(popup.get_by_role("button", name="Stop sharing")).to_be_visible()

    admin.wait_live()
    assert_sees_shop(admin)
    expect(admin.share_status()).to_contain_text("watching your colleague's screen")
    expect(invite).to_contain_text("is watching your screen")

    # Erin stops from her console; both sides see it end.
    invite.get_by_role("button", name="Stop sharing my screen").click()
    expect(admin.share_status()).to_contain_text("Ended", timeout=3000)
    expect(invite).to_be_hidden()
    expect(popup.get_by_role("status")).to_contain_text("stopped", timeout=3000)

    audit = admin.page.context.new_page()
    audit.goto(server.url + "/admin/audit")
    entry = audit.get_by_role("row").filter(has_text=f"Colleague {name}")
    expect(entry).to_have_count(1)
    expect(entry).to_contain_text("tab")
    expect(entry).to_contain_text("stopped_by_sharer")
    expect(entry).to_contain_text(re.compile(r"0:00:\d\d"))


def test_a_conversation_is_transferred_to_a_colleague(contexts: Any, server: Server) -> None:
    name = unique("Finn")
    email = name.split()[1] + "@coview.test"
    server.cli("create-user", email, "--name", name, "--password-stdin", stdin=PASSWORD + "\n")
    visitor = open_shop(contexts(), server)
    hello = unique("Can someone else help")
    visitor.say(hello)
    alice = open_console(contexts(), server)
    alice.open_conversation(hello)
    alice.page.get_by_role("button", name="Take conversation").click()
    expect(alice.page.get_by_role("log", name="Messages")).to_contain_text("joined")
    finn = open_console(contexts(), server, email=email, password=PASSWORD)
    expect(finn.page.get_by_role("button", name=re.compile(re.escape(hello)))).to_have_count(0)

    alice.page.get_by_label("Transfer to").select_option(label=name)
    alice.page.get_by_role("button", name="Transfer", exact=True).click()
    expect(alice.page.get_by_role("button", name=re.compile(re.escape(hello)))).to_have_count(0)
    expect(alice.page.get_by_role("status").first).to_contain_text("now another agent's")
    finn.page.get_by_role("button", name=re.compile("transferred the conversation")).click()
    log = finn.page.get_by_role("log", name="Messages")
    expect(log).to_contain_text(hello)
    expect(log).to_contain_text(f"transferred the conversation to {name}")
    finn.page.get_by_label("Reply").fill("Hello, I am taking over.")
    finn.page.get_by_role("button", name="Send").click()
    expect(visitor.widget.get_by_role("log")).to_contain_text("I am taking over")
