"""Shares across a restrictive network: the visitor and the agent in namespaces of their own
that reach the server host but not each other (see ``lab.py``).

* with TURN offered (ICE policy "all"), the share goes through coturn: the direct path
  cannot work, and the agent's selected candidate pair has a relay candidate;
* with every UDP datagram dropped in the visitor's namespace as well, the visitor relays
  over TURN/TCP;
* with no TURN at all, the direct attempt fails and the share moves by itself to the
  server's media relay, which both sides reach.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from playwright.sync_api import Page, expect

from .coturn import Coturn
from .flows import Agent, assert_sees_shop, go_live, wait_frames_advance, wait_selected_pair
from .lab import ROLES, Lab, lab_fixture  # noqa: F401

SECRET = "e2e-lab-turn-" + secrets.token_hex(8)


def share_through_turn(lab: Lab, coturn: Coturn, turn_urls: str) -> tuple[Agent, Page]:
    """The full flow across the lab with TURN offered; returns once the agent sees the shop
    and keeps decoding frames, the agent's path relayed by TURN."""
    server = lab.server(
        COVIEW_TURN_URLS=turn_urls,
        COVIEW_TURN_SECRETS=SECRET,
        COVIEW_ICE_TRANSPORT_POLICY="all",
    )
    for role in ROLES:  # each side reaches the server
        assert lab.reachable(role, lab.gateway(role), server.port)
    visitor, agent, _ = lab.start_chat(server)
    popup = go_live(visitor, agent)
    assert_sees_shop(agent)
    wait_frames_advance(agent)

    pair = wait_selected_pair(agent.page)
    assert "relay" in (pair["local"]["candidateType"], pair["remote"]["candidateType"]), pair
    quality = agent.page.get_by_role("table", name="Connection quality")
    expect(quality.get_by_role("row", name=re.compile("Path"))).to_contain_text(
        "Relayed (TURN)", timeout=10000
    )
    assert "TURN check failed" not in server.log()
    assert coturn.log().count("incoming packet ALLOCATE processed, success") >= 2
    return agent, popup


def candidate_types(pair: dict[str, Any]) -> tuple[str, str]:
    return pair["local"]["candidateType"], pair["remote"]["candidateType"]


def tcp_clients(coturn: Coturn) -> set[str]:
    """Addresses that opened TCP connections to coturn (its readiness check's: 10.77.1.1)."""
    found = re.findall(r"tcp or tls connected to: ([\d.]+):\d+", coturn.log())
    return set(found)


def test_share_crosses_the_lab_through_turn(lab: Lab) -> None:
    # The premise: visitor and agent cannot reach each other, though each one listens.
    for role, other in (("visitor", "agent"), ("agent", "visitor")):
        port = lab.listener(other)
        assert lab.reachable(None, lab.address(other), port)  # from the server host: yes
        assert not lab.reachable(role, lab.address(other), port)

    coturn = lab.coturn([SECRET])
    agent, popup = share_through_turn(lab, coturn, coturn.url("udp"))
    for page in (agent.page, popup):
        pair = wait_selected_pair(page)
        assert "relay" in candidate_types(pair), pair
        assert pair["local"]["protocol"] == pair["remote"]["protocol"] == "udp", pair
    assert tcp_clients(coturn) <= {lab.gateway("visitor")}


def test_share_crosses_the_lab_over_turn_tcp_when_udp_is_dropped(lab: Lab) -> None:
    coturn = lab.coturn([SECRET])
    lab.drop_udp("visitor")
    # The premise: the visitor reaches coturn over TCP only; the agent over UDP too.
    assert not lab.reachable("visitor", coturn.host, coturn.port, transport="stun")
    assert lab.reachable("visitor", coturn.host, coturn.port)
    assert lab.reachable("agent", coturn.host, coturn.port, transport="stun")

    agent, popup = share_through_turn(lab, coturn, f"{coturn.url('udp')},{coturn.url('tcp')}")
    # The visitor's side of the path is its own relay, reached over TCP.
    visitor_pair = wait_selected_pair(popup)
    assert visitor_pair["local"]["candidateType"] == "relay", visitor_pair
    assert visitor_pair["local"]["relayProtocol"] == "tcp", visitor_pair
    assert lab.address("visitor") in tcp_clients(coturn)
    # The agent's path ends at a relayed address: the visitor's relay (or its own).
    agent_pair = wait_selected_pair(agent.page)
    assert "relay" in candidate_types(agent_pair), agent_pair


def test_share_falls_back_to_the_media_relay_when_nothing_else_connects(lab: Lab) -> None:
    fallback_s = 4
    server = lab.server(COVIEW_MEDIA_RELAY="auto", COVIEW_RELAY_FALLBACK_S=str(fallback_s))
    visitor, agent, _ = lab.start_chat(server)
    started = time.monotonic()
    popup = go_live(visitor, agent)
    quality = agent.page.get_by_role("table", name="Connection quality")
    expect(quality.get_by_role("row", name=re.compile("Path"))).to_contain_text(
        "Relayed (server)", timeout=(fallback_s + 15) * 1000
    )
    assert_sees_shop(agent)
    wait_frames_advance(agent)
    elapsed = time.monotonic() - started
    expect(popup.get_by_text("Connection: through the support server's relay.")).to_be_visible()
    # Each browser's media goes to an address of the server host: the relay's, not the
    # other browser's (which it cannot reach).
    for page, other in ((agent.page, "visitor"), (popup, "agent")):
        pair = wait_selected_pair(page)
        assert pair["remote"]["address"] in (lab.gateway("visitor"), lab.gateway("agent")), pair
        assert pair["remote"]["address"] != lab.address(other), pair
        assert pair["local"]["candidateType"] == "host", pair
    assert "falling back to the media relay" in server.log()
    # The fallback came from the deadline (no ICE failure is that fast), not much later.
    assert elapsed < fallback_s + 20, elapsed
