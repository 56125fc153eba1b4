"""A network interruption on the media path, with signaling untouched (docs/protocol.md,
Reconnect and resume, last paragraph; Negotiation; Path selection and the media relay).

A share goes live across the lab through coturn (TURN over UDP; see ``test_lab.py``).
Mid-share the visitor's namespace stops reaching coturn over UDP: its listening port and
its relay ports, so no TURN path is left for the visitor (the visitor's host candidate
would otherwise reach the agent's TURN relay).  The server's WebSocket (TCP) and its
media relay (other UDP ports, and the server host's other address) stay reachable.

What the protocol promises, observed in the pages rather than read from flags:

* the peer connection leaves ``connected`` (``disconnected``, then ``failed``);
* the share window (the offerer) ICE-restarts it: a ``createOffer`` with ``iceRestart``
  whose offer has a new ``ice-ufrag``;
* the share moves to the server's media relay: the console's quality panel says
  "Relayed (server)" and each browser's selected pair ends at the server host;
* the agent sees the shop again, frames advancing, and the visitor picked only once.
"""

from __future__ import annotations

import re
import shutil
import time
from typing import Any

from playwright.sync_api import Page, expect

from .conftest import Server
from .flows import (
    Agent,
    Visitor,
    assert_sees_shop,
    start_chat_at,
    wait_frames_advance,
    wait_selected_pair,
)
from .lab import ROLES, Lab, lab_fixture  # noqa: F401
from .test_lab import SECRET, candidate_types, share_through_turn
from .test_resume import COUNT_PICKS

#: Every offer a page creates and every connection state its peer connections go through,
#: with the time (``performance.timeOrigin + now()``, ms): ``window.__coviewObserved``.
OBSERVE = """(() => {
  const Base = window.RTCPeerConnection;
  if (!Base || window.__coviewObserved) return;
  const seen = { offers: [], states: [] };
  Object.defineProperty(window, '__coviewObserved', { value: seen });
  const at = () => performance.timeOrigin + performance.now();
  const made = [];
  const createOffer = Base.prototype.createOffer;
  Base.prototype.createOffer = async function (options) {
    const offer = await createOffer.call(this, options);
    const ufrag = (/a=ice-ufrag:(\\S+)/.exec(offer.sdp) || [])[1] || null;
    seen.offers.push({ pc: made.indexOf(this), t: at(), ufrag,
                       iceRestart: !!(options && options.iceRestart) });
    return offer;
  };
  class Observed extends Base {
    constructor(...args) {
      super(...args);
      made.push(this);
      const pc = made.length - 1;
      this.addEventListener('connectionstatechange', () =>
        seen.states.push({ pc, t: at(), state: this.connectionState }));
    }
  }
  window.RTCPeerConnection = Observed;
})();"""

NFT = shutil.which("nft") or "/usr/sbin/nft"
#: coturn's relay ports in the lab (``lab.coturn``: ``auth_config(..., (42000, 42999))``).
TURN_RELAY_PORTS = "42000-42999"


def _observed(page: Page) -> dict[str, list[dict[str, Any]]]:
    seen: dict[str, list[dict[str, Any]]] = page.evaluate("window.__coviewObserved")
    return seen


def _now_ms(page: Page) -> float:
    return float(page.evaluate("performance.timeOrigin + performance.now()"))


def _cut_turn(lab: Lab, host: str, port: int) -> None:
    """In the visitor's namespace, drop UDP to and from coturn (``host``): its listening
    port and its relay ports.  TCP (signaling) and every other UDP port stay open."""
    ports = f"{{ {port}, {TURN_RELAY_PORTS} }}"
    rules = (
        "table inet coview_cut {\n"
        f"  chain output {{ type filter hook output priority 0; "
        f"ip daddr {host} udp dport {ports} drop; }}\n"
        f"  chain input {{ type filter hook input priority 0; "
        f"ip saddr {host} udp sport {ports} drop; }}\n"
        "}\n"
    )
    rules_file = lab.tmp / "cut-turn.nft"
    rules_file.write_text(rules)
    lab.in_ns("visitor", NFT, "-f", str(rules_file))


def test_a_media_interruption_restarts_ice_then_falls_back_to_the_relay(
    lab: Lab, monkeypatch: Any
) -> None:
    servers: list[Server] = []

    def start_chat(server: Server) -> tuple[Visitor, Agent, str]:
        servers.append(server)
        return start_chat_at(
            lab.visitor_context(COUNT_PICKS + OBSERVE),
            lab.at("visitor", server),
            lab.agent_context(OBSERVE),
            lab.at("agent", server),
        )

    monkeypatch.setattr(lab, "start_chat", start_chat)  # the same flow, observed
    coturn = lab.coturn([SECRET])
    agent, popup = share_through_turn(lab, coturn, coturn.url("udp"))
    (server,) = servers
    before = wait_selected_pair(popup)
    assert "relay" in candidate_types(before), before
    assert int(popup.evaluate("window.__coviewPicks")) == 1
    seen = _observed(popup)
    assert [o["iceRestart"] for o in seen["offers"]] == [False], seen
    first_ufrag = seen["offers"][0]["ufrag"]
    assert lab.reachable("visitor", coturn.host, coturn.port, transport="stun")

    # The cut: TURN is gone for the visitor; signaling and the server's relay are not.
    cut_ms = _now_ms(popup)
    cut = time.monotonic()
    _cut_turn(lab, coturn.host, coturn.port)
    assert not lab.reachable("visitor", coturn.host, coturn.port, transport="stun")
    assert lab.reachable("visitor", lab.gateway("visitor"), server.port)

    # The share ends up on the server's relay, and the picture comes back.
    quality = agent.page.get_by_role("table", name="Connection quality")
    expect(quality.get_by_role("row", name=re.compile("Path"))).to_contain_text(
        "Relayed (server)", timeout=120000
    )
    assert_sees_shop(agent)
    wait_frames_advance(agent)
    back = time.monotonic() - cut
    expect(popup.get_by_text("Connection: through the support server's relay.")).to_be_visible()

    log = server.log()
    # On the way: the direct connection dropped, and the share window ICE-restarted it.
    seen = _observed(popup)
    direct = [s for s in seen["states"] if s["pc"] == 0 and s["t"] > cut_ms]
    restarts = [o for o in seen["offers"] if o["pc"] == 0 and o["iceRestart"]]
    agent_states = _observed(agent.page)["states"]
    agent_direct = [s for s in agent_states if s["pc"] == 0]
    relayed = [s for s in agent_states if s["pc"] > 0 and s["state"] == "connected"]
    print(
        "\nafter the cut (s): visitor's direct pc",
        [(round(s["t"] - cut_ms) / 1000, s["state"]) for s in direct],
        "ICE restarts",
        [round(o["t"] - cut_ms) / 1000 for o in restarts],
        "agent's direct pc",
        [(round(s["t"] - cut_ms) / 1000, s["state"]) for s in agent_direct if s["t"] > cut_ms],
        "agent's relayed pc connected",
        [round(s["t"] - cut_ms) / 1000 for s in relayed],
    )
    print(f"from the cut to pixels again: {back:.1f} s")
    assert any(s["state"] in ("disconnected", "failed") for s in direct), direct
    # Two restarts (each with a new ICE username fragment), then failed: the fallback.
    assert len(restarts) == 2, seen["offers"]
    ufrags = {first_ufrag, *(o["ufrag"] for o in restarts)}
    assert all(o["t"] > cut_ms for o in restarts) and len(ufrags) == 3, restarts
    assert re.search(r"falling back to the media relay \((sharer|agent) reported failure\)", log)
    # Chromium notices after ~6 s; then 3 × 4 s of grace (docs/protocol.md, Negotiation)
    # and the relay's negotiation. Its own ICE verdict (~30 s) is not waited for.
    assert back < 40, back
    # The relay uplink is a new peer connection of the same capture: no new pick.
    assert int(popup.evaluate("window.__coviewPicks")) == 1
    for page in (agent.page, popup):
        pair = wait_selected_pair(page)
        assert pair["remote"]["address"] in [lab.gateway(r) for r in ROLES], pair
