"""Steps of the visitor and agent flows, as a person does them.

Elements are found by role and accessible name.  Media is proven by pixels: the demo
shop shows solid red, green and blue swatches (:data:`SHOP_COLOURS`), and the agent's
decoded video must contain them (:func:`assert_sees_colours`).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from playwright.sync_api import BrowserContext, FrameLocator, Locator, Page, expect

from .server import AGENT_EMAIL, AGENT_PASSWORD

#: Known colours of the demo shop's swatches (web/static/demo.css).
SHOP_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 192, 0),
    "blue": (0, 0, 255),
}


class HasUrl(Protocol):
    """Anything with the base ``url`` pages should use (a :class:`.server.Server`)."""

    @property
    def url(self) -> str: ...


def browser_name(page: Page) -> str:
    """``chromium`` or ``firefox``: the browser ``page`` runs in."""
    browser = page.context.browser
    return browser.browser_type.name if browser is not None else "chromium"


def login(
    page: Page, server: HasUrl, email: str = AGENT_EMAIL, password: str = AGENT_PASSWORD
) -> None:
    page.goto(server.url + "/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console")
    page.wait_for_selector("body[data-ready='1']", timeout=30000)
    page.get_by_role("status").filter(has_text="Connected").wait_for()


@dataclass
class Visitor:
    """A visitor on the demo shop, with its support-chat widget."""

    page: Page
    widget: FrameLocator

    def say(self, text: str) -> None:
        self.widget.get_by_label("Message").fill(text)
        self.widget.get_by_role("button", name="Send").click()
        expect(self.widget.get_by_role("log")).to_contain_text(text)

    def accept(self) -> Page:
        """Accept the agent's share request: returns the share window once it is ready."""
        with self.page.expect_popup() as info:
            self.widget.get_by_role("button", name="Accept").last.click()
        popup = info.value
        popup.wait_for_selector("body[data-ready='1']", timeout=20000)
        return popup

    def decline(self) -> None:
        self.widget.get_by_role("button", name="Decline").last.click()


_COLOURS_JS = """(colours) => {
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
}"""


@dataclass
class Agent:
    """An agent signed in to the console."""

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

    def share_status(self) -> Locator:
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

    def colours(self, colours: dict[str, tuple[int, int, int]] | None = None) -> dict[str, float]:
        """Share of the agent's video pixels close to each colour (default: the shop's)."""
        result: dict[str, float] = self.page.evaluate(_COLOURS_JS, colours or SHOP_COLOURS)
        return result


def open_shop(ctx: BrowserContext, server: HasUrl) -> Visitor:
    page = ctx.new_page()
    page.goto(server.url + "/demo")
    widget = page.frame_locator("iframe[title='Support chat']")
    expect(widget.get_by_role("status")).to_have_text("Online", timeout=20000)
    return Visitor(page, widget)


def open_console(ctx: BrowserContext, server: HasUrl, **creds: str) -> Agent:
    page = ctx.new_page()
    login(page, server, **creds)
    return Agent(page)


def unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex[:6]}"


def start_chat_at(
    visitor_ctx: BrowserContext,
    visitor_server: HasUrl,
    agent_ctx: BrowserContext,
    agent_server: HasUrl,
) -> tuple[Visitor, Agent, str]:
    """:func:`start_chat`, with visitor and agent reaching the server at different URLs
    (``server.url`` of each; e.g. the lab's two sides of the same server)."""
    visitor = open_shop(visitor_ctx, visitor_server)
    hello = unique("Hello, I need help")
    visitor.say(hello)
    agent = open_console(agent_ctx, agent_server)
    agent.open_conversation(hello)
    return visitor, agent, hello


def start_chat(
    visitor_ctx: BrowserContext, agent_ctx: BrowserContext, server: HasUrl
) -> tuple[Visitor, Agent, str]:
    """The visitor opens the shop and writes; the agent signs in and opens the chat."""
    return start_chat_at(visitor_ctx, server, agent_ctx, server)


def show_shop(popup: Page) -> None:
    """Move the share window to the right edge of the visitor's screen.

    Firefox shares a whole screen (in tests: its Xvfb screen), and the share window opens
    on top of the shop; moved aside, as a visitor would, it leaves the shop's swatches in
    view, and the agent sees their colours."""
    popup.evaluate("() => window.moveTo(screen.availWidth - window.outerWidth, 0)")
    popup.wait_for_function("() => window.screenX > 0")


def go_live(visitor: Visitor, agent: Agent) -> Page:
    """Request a share, accept it, share, and wait until the agent's video plays.

    Returns the visitor's share window.  A Firefox visitor shares its screen: the shop is
    moved aside, to the right (:func:`show_shop`)."""
    agent.request_share()
    popup = visitor.accept()
    share = popup.get_by_role("button", name="Share my screen")
    expect(share).to_be_enabled(timeout=20000)
    share.click()
    expect(popup.get_by_role("button", name="Stop sharing")).to_be_visible()
    if browser_name(visitor.page) == "firefox":
        show_shop(popup)
    agent.wait_live()
    return popup


def assert_sees_colours(
    agent: Agent,
    colours: dict[str, tuple[int, int, int]] | None = None,
    min_share: float = 0.01,
    timeout: float = 15000,
) -> dict[str, float]:
    """Wait until at least ``min_share`` of the agent's video pixels are close to each of
    ``colours`` (name → RGB; default :data:`SHOP_COLOURS`); returns the shares seen."""
    wanted = colours or SHOP_COLOURS
    try:
        handle = agent.page.wait_for_function(
            f"""([colours, min]) => {{
              const seen = ({_COLOURS_JS})(colours);
              const names = Object.keys(colours);
              return names.every((n) => (seen[n] || 0) > min) ? seen : null;
            }}""",
            arg=[wanted, min_share],
            polling=250,
            timeout=timeout,
        )
    except Exception as exc:
        raise AssertionError(
            f"the agent's video lacks the colours {sorted(wanted)}: {agent.colours(wanted)}"
        ) from exc
    seen: dict[str, float] = handle.json_value()
    return seen


def assert_sees_shop(agent: Agent) -> None:
    """The agent's video shows the shop's three colours."""
    assert_sees_colours(agent, SHOP_COLOURS)


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
