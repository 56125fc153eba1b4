"""Firefox ESR in the main share flow, both ways round, with pixels verified at the receiver.

Firefox runs headed on an Xvfb screen of its own (started inside the test namespace) and
shares that screen: the visitor's shop window is in front of it, so the agent must see
the shop's colours.  A Chromium visitor shares the shop tab, as in test_share.py.  The
kit's Firefox arrangement also proves network hygiene: Firefox's only route out leads to
a dead-end namespace that records every packet, and nothing may arrive there.
"""

from __future__ import annotations

import re
import socket

import pytest
from playwright.sync_api import expect

from coview_server.testing import Firefox
from coview_server.testing.network import GATEWAY

from .flows import Agent, Visitor, assert_sees_shop, go_live, wait_frames_advance


def quality_is_shown(agent: Agent) -> None:
    quality = agent.page.get_by_role("table", name="Connection quality")
    expect(quality).to_be_visible()
    expect(quality.get_by_role("row", name=re.compile("Resolution"))).to_contain_text(
        re.compile(r"\d+ × \d+")
    )
    expect(quality.get_by_role("row", name=re.compile("Frame rate"))).to_contain_text("fps")
    expect(quality.get_by_role("row", name=re.compile("Path"))).to_contain_text("Direct")
    expect(quality.get_by_role("row", name=re.compile("Round-trip"))).to_contain_text("ms")
    expect(quality.get_by_role("row", name=re.compile("Bitrate"))).to_contain_text("kbit/s")


@pytest.mark.coview_browser(visitor="firefox", agent="chromium")
def test_firefox_visitor_shares_its_screen_with_a_chromium_agent(
    coview_chat: tuple[Visitor, Agent, str],
) -> None:
    visitor, agent, _ = coview_chat
    popup = go_live(visitor, agent)
    popup.wait_for_function("() => document.getElementById('preview').videoWidth > 0")
    assert_sees_shop(agent)
    wait_frames_advance(agent)
    # Firefox does not report displaySurface: the share window infers the screen.
    expect(agent.share_status()).to_contain_text("entire screen")
    quality_is_shown(agent)

    popup.get_by_role("button", name="Stop sharing").click()
    expect(agent.share_status()).to_contain_text("The visitor stopped sharing", timeout=2000)


@pytest.mark.coview_browser(visitor="chromium", agent="firefox")
def test_firefox_agent_watches_a_chromium_visitor(
    coview_chat: tuple[Visitor, Agent, str],
) -> None:
    visitor, agent, _ = coview_chat
    popup = go_live(visitor, agent)
    assert_sees_shop(agent)
    wait_frames_advance(agent)
    expect(agent.share_status()).to_contain_text("a browser tab")
    quality_is_shown(agent)

    agent.page.get_by_role("button", name="Stop screen share").click()
    expect(popup.get_by_role("status")).to_contain_text("The agent ended", timeout=2000)


def test_firefox_tried_to_reach_nothing_but_loopback(coview_firefox_session: Firefox) -> None:
    """Runs after the shares above, in the same Firefox: its dead-end route saw nothing
    (and does see a packet that takes it: ours, to the gateway's own address)."""
    route = coview_firefox_session.route
    assert route is not None, "scripts/test runs Firefox in a namespace with no route out"
    assert coview_firefox_session.leaks() == []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"probe", (GATEWAY, 9))
    seen = [f"udp to {GATEWAY}:9"]
    route.wait_for(seen[0])
    assert route.leaks()[-1:] == seen
    route.forget()
