"""What a visitor gets in a browser that cannot share (docs/browsers.md).

Debian's WebKitGTK (and so the Linux builds of Epiphany and similar) has getDisplayMedia
but no RTCPeerConnection; Playwright cannot drive it, so Chromium without
RTCPeerConnection stands in for it: the widget tells the server, and the agent's console
says why no share can be asked instead of offering a request that would fail.
"""

from __future__ import annotations

from playwright.sync_api import expect

from .flows import start_chat

NO_WEBRTC = "delete window.RTCPeerConnection; delete window.webkitRTCPeerConnection;"


def test_a_browser_without_webrtc_cannot_be_asked(contexts, server):
    visitor, agent, _ = start_chat(contexts(NO_WEBRTC), contexts(), server)
    agent.share_tab()
    expect(agent.page.get_by_role("button", name="Request screen share")).to_be_disabled()
    expect(agent.page.locator("#rec-share")).to_contain_text("no WebRTC support")
    # The chat itself works as in any browser.
    agent.page.get_by_label("Reply").fill("We can talk here")
    agent.page.get_by_label("Reply").press("Enter")
    expect(visitor.widget.get_by_role("log")).to_contain_text("We can talk here")
