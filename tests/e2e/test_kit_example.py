"""Screen sharing works in our Coview: the QA suite of docs/testing.md, verbatim.

Run it with ``pytest --coview-browser all`` to check every browser; each test below that
names no browser runs once per ``--coview-browser``.
"""

import pytest
from playwright.sync_api import expect

from coview_server.testing import assert_sees_colours, go_live, wait_frames_advance

# The demo shop's swatches (red lamp, green chair, blue desk).
SHOP = {"red": (255, 0, 0), "green": (0, 192, 0), "blue": (0, 0, 255)}


def test_the_agent_sees_the_visitors_shop(coview_chat):
    visitor, agent, _ = coview_chat
    go_live(visitor, agent)
    assert_sees_colours(agent, SHOP)
    wait_frames_advance(agent)  # the video keeps playing


def test_the_agent_ends_the_share(coview_chat):
    visitor, agent, _ = coview_chat
    share_window = go_live(visitor, agent)
    agent.page.get_by_role("button", name="Stop screen share").click()
    expect(share_window.get_by_role("status")).to_contain_text("The agent ended")


@pytest.mark.coview_browser(visitor="firefox", agent="chromium")
def test_a_firefox_visitor_shares_with_a_chrome_agent(coview_chat):
    visitor, agent, _ = coview_chat
    go_live(visitor, agent)
    assert_sees_colours(agent, SHOP)
