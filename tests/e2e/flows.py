"""Steps of the visitor/agent flows, shared by the end-to-end tests.

Elements are found by role and accessible name, as a person would find them.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from playwright.sync_api import BrowserContext, FrameLocator, Page, expect

from .conftest import Server, login

# Known colours of the demo shop's swatches (CSS): the agent must see them.
SHOP_COLOURS = {"red": (255, 0, 0), "green": (0, 192, 0), "blue": (0, 0, 255)}


@dataclass
class Visitor:
    page: Page
    widget: FrameLocator

    def say(self, text: str) -> None:
        self.widget.get_by_label("Message").fill(text)
        self.widget.get_by_role("button", name="Send").click()
        expect(self.widget.get_by_role("log")).to_contain_text(text)

    def accept(self) -> Page:
        with self.page.expect_popup() as info:
            self.widget.get_by_role("button", name="Accept").last.click()
        popup = info.value
        popup.wait_for_selector("body[data-ready='1']", timeout=20000)
        return popup

    def decline(self) -> None:
        self.widget.get_by_role("button", name="Decline").last.click()


@dataclass
class Agent:
    page: Page

    title: str = ""

    def open_conversation(self, text: str) -> None:
        """Open the conversation whose list entry shows ``text`` (its latest message)."""
        self.page.get_by_role("button", name=re.compile(re.escape(text))).click()
        expect(self.page.get_by_role("log", name="Messages")).to_contain_text(text)
        self.title = self.page.locator("#conv-title").inner_text()

    def reopen(self) -> None:
        """Open again, by its visitor label, the conversation opened last."""
        assert self.title
        self.page.get_by_role("button", name=re.compile("^" + re.escape(self.title))).click()
        expect(self.page.locator("#conv-title")).to_have_text(self.title)

    def share_tab(self) -> None:
        self.page.get_by_role("tab", name="Screen sharing").click()

    def share_status(self) -> Any:
        return self.page.get_by_role("status", name="Screen share status")

    def request_share(self) -> None:
        self.share_tab()
        self.page.get_by_role("button", name="Request screen share").click()
        expect(self.share_status()).to_contain_text("Requested")

    def wait_live(self, timeout: float = 20000) -> None:
        expect(self.share_status()).to_contain_text("Live", timeout=timeout)
        # Wider than a 2×2 placeholder: an ended track's last "frame" is not the screen.
        self.page.wait_for_function(
            "() => { const v = document.getElementById('remote');"
            " return v && v.videoWidth > 16 && !v.closest('[hidden]'); }",
            timeout=timeout,
        )

    def frames_decoded(self) -> float:
        value = self.page.locator("#stage").get_attribute("data-frames-decoded")
        return float(value or 0)

    def colours(self) -> dict[str, float]:
        """Share of the agent's video pixels close to each known shop colour."""
        result: dict[str, float] = self.page.evaluate(
            """(colours) => {
              const v = document.getElementById('remote');
              if (!v || !v.videoWidth) return {};  // no frame yet (e.g. a path switch)
              const c = document.createElement('canvas');
              c.width = v.videoWidth; c.height = v.videoHeight;
              const g = c.getContext('2d');
              g.drawImage(v, 0, 0);
              const d = g.getImageData(0, 0, c.width, c.height).data;
              const out = {}; const n = d.length / 4;
              for (const [name, rgb] of Object.entries(colours)) {
                let hits = 0;
                for (let i = 0; i < d.length; i += 4) {
                  if (Math.abs(d[i] - rgb[0]) < 40 && Math.abs(d[i+1] - rgb[1]) < 40
                      && Math.abs(d[i+2] - rgb[2]) < 40) hits++;
                }
                out[name] = hits / n;
              }
              return out;
            }""",
            SHOP_COLOURS,
        )
        return result


def open_shop(ctx: BrowserContext, server: Server) -> Visitor:
    page = ctx.new_page()
    page.goto(server.url + "/demo")
    widget = page.frame_locator("iframe[title='Support chat']")
    expect(widget.get_by_role("status")).to_have_text("Online", timeout=20000)
    return Visitor(page, widget)


def open_console(ctx: BrowserContext, server: Server, **creds: str) -> Agent:
    page = ctx.new_page()
    login(page, server, **creds)
    return Agent(page)


def unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex[:6]}"


def start_chat(
    visitor_ctx: BrowserContext, agent_ctx: BrowserContext, server: Server
) -> tuple[Visitor, Agent, str]:
    visitor = open_shop(visitor_ctx, server)
    hello = unique("Hello, I need help")
    visitor.say(hello)
    agent = open_console(agent_ctx, server)
    agent.open_conversation(hello)
    return visitor, agent, hello


def go_live(visitor: Visitor, agent: Agent) -> Page:
    agent.request_share()
    popup = visitor.accept()
    expect(popup.get_by_role("button", name="Share my screen")).to_be_enabled(timeout=20000)
    popup.get_by_role("button", name="Share my screen").click()
    expect(popup.get_by_role("button", name="Stop sharing")).to_be_visible()
    agent.wait_live()
    return popup


def assert_sees_shop(agent: Agent) -> None:
    """The agent's video shows the shop's three colours (retry while frames settle)."""
    last: dict[str, float] = {}
    for _ in range(40):
        last = agent.colours()
        if last and all(share > 0.01 for share in last.values()):
            return
        agent.page.wait_for_timeout(250)
    raise AssertionError(f"agent's video lacks the shop colours: {last}")


def start_chat_at(
    visitor_ctx: BrowserContext,
    visitor_server: Server,
    agent_ctx: BrowserContext,
    agent_server: Server,
) -> tuple[Visitor, Agent, str]:
    """:func:`start_chat`, with visitor and agent reaching the server at different URLs
    (``server.url`` of each; e.g. the lab's two sides of the same server)."""
    visitor = open_shop(visitor_ctx, visitor_server)
    hello = unique("Hello, I need help")
    visitor.say(hello)
    agent = open_console(agent_ctx, agent_server)
    agent.open_conversation(hello)
    return visitor, agent, hello


def wait_frames_advance(agent: Agent, frames: int = 5, timeout: float = 10000) -> None:
    """Wait until the agent decoded ``frames`` more frames than now."""
    agent.page.wait_for_function(
        "(n) => Number(document.getElementById('stage').dataset.framesDecoded) > n",
        arg=agent.frames_decoded() + frames,
        timeout=timeout,
    )


#: Init script that keeps every ``RTCPeerConnection`` a page makes in
#: ``window.__coviewPeerConnections``, so a test can read its ``getStats()``.
RECORD_PEER_CONNECTIONS = """(() => {
  const Base = window.RTCPeerConnection;
  if (!Base || window.__coviewPeerConnections) return;
  const made = [];
  Object.defineProperty(window, '__coviewPeerConnections', { value: made });
  class Recorded extends Base {
    constructor(...args) { super(...args); made.push(this); }
  }
  window.RTCPeerConnection = Recorded;
})();"""


_SELECTED_PAIRS = """async () => {
  const fields = ['candidateType', 'protocol', 'relayProtocol', 'address', 'port'];
  const pick = (c) => Object.fromEntries(fields.map((f) => [f, c ? c[f] : null]));
  const out = [];
  for (const pc of window.__coviewPeerConnections || []) {
    if (pc.connectionState !== 'connected') continue;
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId)
        pair = stats.get(s.selectedCandidatePairId);
    });
    if (pair) out.push({ local: pick(stats.get(pair.localCandidateId)),
                         remote: pick(stats.get(pair.remoteCandidateId)) });
  }
  return out;
}"""


def selected_pairs(page: Page) -> list[dict[str, Any]]:
    """The selected ICE candidate pair of each connected peer connection of ``page`` (made
    in a context with :data:`RECORD_PEER_CONNECTIONS`): ``{"local": {...}, "remote": {...}}``
    with each candidate's ``candidateType``, ``protocol``, ``relayProtocol``, ``address``
    and ``port`` as ``getStats()`` reports them."""
    pairs: list[dict[str, Any]] = page.evaluate(_SELECTED_PAIRS)
    return pairs


def wait_selected_pair(page: Page, timeout: float = 10000) -> dict[str, Any]:
    """The selected candidate pair of the one connected peer connection of ``page``."""
    handle = page.wait_for_function(
        f"async () => {{ const p = await ({_SELECTED_PAIRS})(); "
        "return p.length === 1 ? p[0] : null; }",
        polling=100,
        timeout=timeout,
    )
    pair: dict[str, Any] = handle.json_value()
    return pair
