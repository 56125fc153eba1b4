"""A visitor shares the demo shop tab with an agent: the whole flow, in real Chromium.

Media is proven by pixels: the shop shows solid red, green and blue swatches, and the
agent's decoded video must contain them, with framesDecoded still rising.
"""

from __future__ import annotations

import re
import time

from playwright.sync_api import expect

from .conftest import make_server
from .flows import assert_sees_shop, go_live, start_chat


def test_live_share_shows_the_shop_with_quality(contexts, server):
    visitor, agent, _ = start_chat(contexts(), contexts(), server)
    agent.share_tab()
    expect(agent.page.get_by_role("button", name="Request screen share")).to_be_enabled()
    popup = go_live(visitor, agent)

    # The visitor sees what they share.
    popup.wait_for_function("() => document.getElementById('preview').videoWidth > 0")
    assert_sees_shop(agent)
    expect(agent.share_status()).to_contain_text("a browser tab")

    quality = agent.page.get_by_role("table", name="Connection quality")
    expect(quality).to_be_visible()
    expect(quality.get_by_role("row", name=re.compile("Resolution"))).to_contain_text(
        re.compile(r"\d+ × \d+")
    )
    expect(quality.get_by_role("row", name=re.compile("Path"))).to_contain_text("Direct")
    expect(quality.get_by_role("row", name=re.compile("Round-trip"))).to_contain_text("ms")
    expect(quality.get_by_role("row", name=re.compile("Bitrate"))).to_contain_text("kbit/s")

    first = agent.frames_decoded()
    # Moving to another section of the console must not end the share.
    agent.page.get_by_role("button", name="Account").click()
    expect(agent.page.get_by_role("region", name="Account")).to_be_visible()
    agent.page.wait_for_timeout(1500)
    agent.page.get_by_role("button", name="Conversations").click()
    expect(agent.share_status()).to_contain_text("Live")
    agent.page.wait_for_function(
        "(n) => Number(document.getElementById('stage').dataset.framesDecoded) > n",
        arg=first + 5,
        timeout=10000,
    )
    assert_sees_shop(agent)

    # The agent can go fullscreen.
    agent.page.get_by_role("button", name="Fullscreen").click()
    agent.page.wait_for_function("() => document.fullscreenElement !== null")


def test_closing_the_popup_ends_the_share_within_two_seconds(contexts, server):
    visitor, agent, _ = start_chat(contexts(), contexts(), server)
    popup = go_live(visitor, agent)
    started = time.monotonic()
    popup.close()
    expect(agent.share_status()).to_contain_text("closed the share window", timeout=2000)
    assert time.monotonic() - started < 2.0
    expect(visitor.widget.get_by_role("log")).to_contain_text("window was closed")

    # A new request after an end works without reloading anything.
    go_live(visitor, agent)
    assert_sees_shop(agent)


def test_reloading_the_popup_ends_the_share(contexts, server):
    visitor, agent, _ = start_chat(contexts(), contexts(), server)
    popup = go_live(visitor, agent)
    started = time.monotonic()
    popup.reload()
    expect(agent.share_status()).to_contain_text("closed the share window", timeout=2000)
    assert time.monotonic() - started < 2.0
    expect(popup.get_by_role("alert")).to_contain_text("Reloading this window ended", timeout=20000)
    expect(popup.get_by_role("button", name="Share my screen")).to_be_disabled()


def test_agent_stops_the_share(contexts, server):
    visitor, agent, _ = start_chat(contexts(), contexts(), server)
    popup = go_live(visitor, agent)
    started = time.monotonic()
    agent.page.get_by_role("button", name="Stop screen share").click()
    expect(popup.get_by_role("status")).to_contain_text("The agent ended", timeout=2000)
    assert time.monotonic() - started < 2.0
    expect(agent.share_status()).to_contain_text("You stopped")
    expect(popup.get_by_role("button", name="Share something else")).to_be_disabled()
    # The capture itself is stopped, not only hidden.
    popup.wait_for_function("() => document.getElementById('preview').srcObject === null")


def test_visitor_stops_from_the_popup_and_from_the_chat(contexts, server):
    visitor, agent, _ = start_chat(contexts(), contexts(), server)
    popup = go_live(visitor, agent)
    popup.get_by_role("button", name="Stop sharing").click()
    expect(agent.share_status()).to_contain_text("The visitor stopped sharing", timeout=2000)
    expect(popup.get_by_role("status")).to_contain_text("You stopped sharing")

    go_live(visitor, agent)
    # The visitor keeps browsing the shop: the share lives on in its own window, and the
    # reloaded widget shows it with its stop button.
    visitor.page.reload()
    expect(visitor.widget.get_by_text("You are sharing your screen")).to_be_visible(timeout=20000)
    expect(agent.share_status()).to_contain_text("Live")
    assert_sees_shop(agent)
    visitor.widget.get_by_role("button", name="Stop sharing").click()
    expect(agent.share_status()).to_contain_text("The visitor stopped sharing", timeout=2000)


def test_decline_is_shown_to_the_agent(contexts, server):
    visitor, agent, _ = start_chat(contexts(), contexts(), server)
    agent.request_share()
    visitor.decline()
    expect(agent.share_status()).to_contain_text("declined", timeout=2000)
    expect(agent.page.get_by_role("button", name="Request screen share")).to_be_enabled()


def test_closing_the_agent_tab_ends_the_share_and_tells_the_visitor(contexts, tmp_path):
    """A closed console cannot be told from a reloading one: the visitor hears at once
    that the agent dropped, and the share ends when the grace (here 4 s) runs out."""
    server = make_server(tmp_path, COVIEW_RESUME_GRACE_S="4")
    try:
        visitor, agent, _ = start_chat(contexts(), contexts(), server)
        popup = go_live(visitor, agent)
        agent.page.close()
        status = popup.get_by_role("status")
        expect(status).to_contain_text("The agent's connection dropped", timeout=2000)
        closed_at = time.monotonic()
        expect(status).to_contain_text("The agent left", timeout=4000 + 2000)
        assert time.monotonic() - closed_at > 2.0  # not before the grace
        expect(visitor.widget.get_by_role("log")).to_contain_text("The agent left")
    finally:
        server.stop()


def test_a_share_link_works_once(contexts, server):
    visitor, agent, _ = start_chat(contexts(), contexts(), server)
    agent.request_share()
    popup = visitor.accept()
    expect(popup.get_by_role("button", name="Share my screen")).to_be_enabled()
    assert "t=" not in popup.url, "the popup drops its token from the address bar"
    second = contexts().new_page()
    second.goto(popup_link(visitor))
    expect(second.get_by_role("alert")).to_contain_text("already been used", timeout=20000)
    expect(second.get_by_role("button", name="Share my screen")).to_be_disabled()
    # The first window is unaffected and still shares.
    popup.get_by_role("button", name="Share my screen").click()
    agent.wait_live()


def test_invalid_links_get_a_clear_message(contexts, server):
    page = contexts().new_page()
    page.goto(server.url + "/popup")
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    page.goto(server.url + "/popup#share=abc&t=forged-token")
    page.reload()
    expect(page.get_by_role("alert")).to_contain_text("not valid", timeout=20000)
    expect(page.get_by_role("button", name="Share my screen")).to_be_disabled()


def popup_link(visitor) -> str:
    """The invitation's popup URL, read from the widget's state as the server sent it."""
    frame = visitor.page.frame_locator("iframe[title='Support chat']")
    url = frame.locator("li.invite").last.get_attribute("data-url")
    assert url, "the invitation carries its popup URL"
    return visitor.page.url.split("/demo")[0] + url


def test_unsupported_browser_cannot_be_asked(contexts, server):
    no_capture = "delete MediaDevices.prototype.getDisplayMedia;"
    visitor, agent, _ = start_chat(contexts(no_capture), contexts(), server)
    agent.share_tab()
    button = agent.page.get_by_role("button", name="Request screen share")
    expect(button).to_be_disabled()
    expect(agent.page.locator("#share-reason")).to_contain_text("cannot share its screen")
    expect(agent.page.locator("#rec-share")).to_contain_text("Unavailable")
