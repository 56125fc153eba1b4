"""Reconnect and resume, in the hub: parties lost and found, peer links kept or rebuilt,
and shares that outlive a server restart (docs/protocol.md, Reconnect and resume)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_hub import SDP, WALL0, Conn, Scene, World, drain, last_state, of, scene, world

from coview import protocol as P, share as S
from coview_server.hub import Hub

__all__ = ["scene", "world"]  # fixtures

pytestmark = pytest.mark.anyio


async def _live_watched(scene: Scene) -> tuple[str, Conn, str]:
    """A live share whose window holds a resume credential, watched by agent A: (share,
    window, pc)."""
    w = scene.w
    share, s = await scene.to_live()
    await w.hub.new_resume(share)  # what the endpoint does at the window's handshake
    await w.send(scene.a, "share_watch", share=share)
    pc = of(drain(s), "peer")[0]["pc"]
    await w.send(s, "offer", pc=pc, sdp=SDP)
    await w.send(scene.a, "answer", pc=pc, sdp=SDP)
    scene.clear(scene.a, scene.v, scene.b, s)
    return share, s, pc


async def _window_back(w: World, share: str) -> Conn:
    conn = Conn(id="s-back", role="sharer", share_id=share, resumed=True)
    await w.hub.join(conn)
    return conn


async def _routes(w: World, sender: Conn, receiver: Conn, pc: str) -> bool:
    await w.send(sender, "ice", pc=pc, candidate=None)
    return P.make("ice", pc=pc, candidate=None) in drain(receiver)


# --- the share window --------------------------------------------------------------------


async def test_a_lost_window_is_away_then_resumes_on_its_peer_connection(scene: Scene) -> None:
    w = scene.w
    share, s, pc = await _live_watched(scene)
    await w.hub.leave(s, left=False)
    seen = drain(scene.a)
    assert last_state(seen)["state"] == S.LIVE and last_state(seen)["away"] == ["sharer"]
    assert of(seen, "peer_gone") == []  # media may still flow: the link stays
    assert last_state(drain(scene.v))["away"] == ["sharer"]

    s2 = await _window_back(w, share)
    got = drain(s2)
    assert last_state(got)["state"] == S.LIVE and last_state(got)["away"] == []
    assert of(got, "peer") == []  # nothing to renegotiate
    assert last_state(drain(scene.a))["away"] == []
    assert await _routes(w, s2, scene.a, pc) and await _routes(w, scene.a, s2, pc)
    assert w.hub.shares[share].session.history == ["requested", "accepted", "waiting", "live"]


async def test_a_lost_window_that_does_not_return_ends_the_share(scene: Scene) -> None:
    w = scene.w
    share, s, pc = await _live_watched(scene)
    await w.hub.leave(s, left=False)
    w.clock.advance(w.settings.resume_grace_s - 0.01)
    await w.hub.tick()
    assert share in w.hub.shares
    w.clock.advance(0.01)
    await w.hub.tick()
    got = drain(scene.a)
    assert last_state(got)["reason"] == S.SHARER_LOST
    assert P.make("peer_gone", share=share, pc=pc) in got
    row = await w.store.get_share(share)
    assert row is not None and (row.end_reason, row.ended_by) == (S.SHARER_LOST, "sharer")
    texts = [m.text for m in await w.store.messages(scene.conv) if m.sender == "system"]
    assert texts[-1] == "The screen share window lost its connection and did not come back."


async def test_a_window_its_page_closed_ends_the_share_at_once(scene: Scene) -> None:
    share, s, _ = await _live_watched(scene)
    await scene.w.hub.leave(s, left=True)
    assert last_state(drain(scene.a))["reason"] == S.SHARER_LEFT
    assert share not in scene.w.hub.shares


async def test_a_window_back_while_its_old_socket_looks_alive_replaces_it(scene: Scene) -> None:
    """A half-open socket (its death not noticed yet) must not keep the share's routing."""
    w = scene.w
    share, s, pc = await _live_watched(scene)
    s2 = await _window_back(w, share)
    assert s.closed and w.hub.shares[share].sharer is s2
    await w.hub.leave(s, left=True)  # the old socket's endpoint finishes later
    assert share in w.hub.shares
    assert await _routes(w, scene.a, s2, pc)


# --- the agent's console -----------------------------------------------------------------


async def test_a_lost_console_claims_its_peer_connection_back(scene: Scene) -> None:
    w = scene.w
    share, s, pc = await _live_watched(scene)
    await w.hub.leave(scene.a, left=False)
    got = drain(s)
    assert last_state(got)["away"] == ["viewer"] and of(got, "peer_gone") == []

    a2 = await w.agent(scene.alice)
    assert last_state(drain(a2))["share"] == share
    await w.send(a2, "share_watch", share=share, pc=pc)
    got = drain(s)
    assert of(drain(a2), "peer") == [] and of(got, "peer") == []
    assert last_state(got)["away"] == []
    assert await _routes(w, s, a2, pc) and await _routes(w, a2, s, pc)
    w.clock.advance(w.settings.resume_grace_s * 3)
    await w.hub.tick()
    assert w.hub.shares[share].session.state == S.LIVE


async def test_a_reloaded_console_gets_a_new_peer_connection_without_a_new_pick(
    scene: Scene,
) -> None:
    w = scene.w
    share, s, pc = await _live_watched(scene)
    await w.hub.leave(scene.a, left=True)  # the page went away: its pc with it
    assert P.make("peer_gone", share=share, pc=pc) in drain(s)
    a2 = await w.agent(scene.alice)
    await w.send(a2, "share_watch", share=share)
    offer_side, answer_side = of(drain(s), "peer"), of(drain(a2), "peer")
    assert len(offer_side) == len(answer_side) == 1
    assert offer_side[0]["pc"] == answer_side[0]["pc"] != pc
    assert offer_side[0]["role"] == "offerer" and w.hub.shares[share].session.state == S.LIVE


async def test_a_console_naming_an_unknown_pc_gets_a_new_one(scene: Scene) -> None:
    w = scene.w
    share, s, pc = await _live_watched(scene)
    await w.hub.leave(scene.a, left=False)
    a2 = await w.agent(scene.alice)
    drain(s)
    await w.send(a2, "share_watch", share=share, pc="not-" + pc)
    got = drain(s)
    assert P.make("peer_gone", share=share, pc=pc) in got  # the dead end's link goes
    assert of(got, "peer")[0]["pc"] == of(drain(a2), "peer")[0]["pc"]


async def test_nobody_else_can_claim_a_lost_consoles_peer_connection(scene: Scene) -> None:
    w = scene.w
    share, s, pc = await _live_watched(scene)
    await w.hub.leave(scene.a, left=False)
    admin = await w.agent(await w.user("Root", role="admin"))
    await w.send(admin, "share_watch", share=share, pc=pc)
    assert of(drain(admin), "peer")[0]["pc"] != pc  # a link of its own, not Alice's
    assert pc in w.hub.shares[share].links
    assert await w.refused(scene.b, "share_watch", share=share, pc=pc) == P.FORBIDDEN


# --- a server restart --------------------------------------------------------------------


async def _restarted(w: World) -> Hub:
    await w.hub.shutdown()
    fresh = Hub(w.store, w.settings, clock=w.clock, wall=w.clock.wall)
    await fresh.recover()
    w.hub = fresh
    return fresh


async def test_a_restart_keeps_a_live_share_and_both_ends_rebind_their_link(
    scene: Scene,
) -> None:
    w = scene.w
    share, _s, pc = await _live_watched(scene)
    other_v = await w.visitor()
    await w.chat(other_v, "me too", "m9")
    conv2 = drain(other_v)[-1]["conversation"]
    await w.send(scene.a, "conversation_take", conversation=conv2)
    await w.send(scene.a, "share_request", conversation=conv2)
    pending = last_state(drain(scene.a))["share"]

    fresh = await _restarted(w)
    row = await w.store.get_share(share)
    assert row is not None and row.ended_at is None and row.state == S.LIVE
    assert json.loads(row.links or "") == [{"pc": pc, "via": "direct", "viewer": scene.alice.id}]
    cut = await w.store.get_share(pending)  # only an in-memory invitation: cannot resume
    assert cut is not None and cut.end_reason == S.SERVER_SHUTDOWN
    live = fresh.shares[share]
    assert sorted(live.session.away) == ["sharer", "viewer"] and live.session.surface == "monitor"

    a2 = await w.agent(scene.alice)
    assert last_state(drain(a2))["away"] == ["sharer"]
    await w.send(a2, "share_watch", share=share, pc=pc)
    s2 = await _window_back(w, share)
    got = drain(a2)
    assert of(drain(s2), "peer") == [] and of(got, "peer") == []
    assert last_state(got)["away"] == []
    assert await _routes(w, s2, a2, pc) and await _routes(w, a2, s2, pc)
    w.clock.advance(w.settings.resume_grace_s * 2)
    await fresh.tick()
    assert fresh.shares[share].session.state == S.LIVE


async def test_after_a_restart_a_reloaded_console_gets_a_fresh_link(scene: Scene) -> None:
    w = scene.w
    share, _s, pc = await _live_watched(scene)
    await _restarted(w)
    s2 = await _window_back(w, share)
    a2 = await w.agent(scene.alice)
    drain(s2)
    await w.send(a2, "share_watch", share=share)  # no pc: it lost it
    got = drain(s2)
    assert P.make("peer_gone", share=share, pc=pc) in got
    assert of(got, "peer")[0]["pc"] == of(drain(a2), "peer")[0]["pc"] != pc


async def test_after_a_restart_relayed_links_are_dropped_and_the_window_told(
    scene: Scene,
) -> None:
    w = scene.w
    share, _s, _pc = await _live_watched(scene)
    links: list[dict[str, Any]] = [
        {"pc": share + ".up", "via": "relay", "viewer": None},
        {"pc": share + ".x.down", "via": "relay", "viewer": scene.alice.id},
    ]
    await w.hub.shutdown()
    await w.store.update_share(share, links=json.dumps(links), path="relay")
    fresh = Hub(w.store, w.settings, clock=w.clock, wall=w.clock.wall)
    await fresh.recover()
    w.hub = fresh
    assert fresh.shares[share].links == {} and fresh.shares[share].relayed
    s2 = await _window_back(w, share)
    gone = of(drain(s2), "peer_gone")
    assert [m["pc"] for m in gone] == [share + ".up", share + ".x.down"]


async def test_after_a_restart_nobody_returning_ends_the_share(scene: Scene) -> None:
    w = scene.w
    share, _s, _pc = await _live_watched(scene)
    fresh = await _restarted(w)
    w.clock.advance(w.settings.resume_grace_s)
    await fresh.tick()
    row = await w.store.get_share(share)
    assert row is not None and row.end_reason == S.SHARER_LOST
    assert row.ended_at == WALL0 + w.clock.t


@pytest.mark.parametrize("links", ["not json", '{"pc": 1}', '[{"pc": 5, "via": "direct"}]', "[1]"])
async def test_malformed_stored_links_are_ignored(scene: Scene, links: str) -> None:
    w = scene.w
    share, _s, _pc = await _live_watched(scene)
    await w.hub.shutdown()
    await w.store.update_share(share, links=links)
    fresh = Hub(w.store, w.settings, clock=w.clock, wall=w.clock.wall)
    await fresh.recover()
    assert fresh.shares[share].links == {}


async def test_links_are_stored_as_they_change(scene: Scene) -> None:
    w = scene.w
    share, s, pc = await _live_watched(scene)
    row = await w.store.get_share(share)
    assert row is not None and json.loads(row.links or "")[0]["pc"] == pc
    await w.hub.leave(scene.a, left=True)
    row = await w.store.get_share(share)
    assert row is not None and json.loads(row.links or "") == []
    assert s is not None
