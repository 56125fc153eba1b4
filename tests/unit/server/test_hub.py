"""The signaling hub, driven directly: ``Conn`` objects instead of sockets, a real SQLite store
and a fake clock, so share deadlines are tested by moving time and calling ``hub.tick()``."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coview import protocol as P, share as S
from coview_server import store as store_module
from coview_server.hub import Conn, Hub, HubError
from coview_server.passwords import hash_password
from coview_server.settings import Settings
from coview_server.store import Store, UserRow
from coview_server.tokens import token_hash

pytestmark = pytest.mark.anyio

DESKTOP_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)
MOBILE_UA = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36"
)
WALL0 = 1_700_000_000.0
SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"
CANDIDATE = {"candidate": "candidate:1 1 udp 2122260223 10.0.0.1 5000 typ host", "sdpMid": "0"}

_HASH: list[str] = []


@pytest.fixture(autouse=True)
def _fast_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    # scrypt costs ~50 ms per user; these tests never log in, so one real hash will do.
    if not _HASH:
        _HASH.append(hash_password("not used"))
    monkeypatch.setattr(store_module, "hash_password", lambda password: _HASH[0])


class FakeClock:
    def __init__(self) -> None:
        self.t = 500.0

    def __call__(self) -> float:
        return self.t

    def wall(self) -> float:
        return WALL0 + self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def drain(conn: Conn) -> list[dict[str, Any]]:
    """Everything queued for ``conn`` since the last drain; each must be a valid s2c message."""
    out: list[dict[str, Any]] = []
    while not conn.queue.empty():
        msg = conn.queue.get_nowait()
        if msg is None:
            continue
        P.validate(msg, P.S2C)
        assert P.decode(P.encode(msg), P.S2C) == msg
        out.append(msg)
    return out


def of(msgs: list[dict[str, Any]], mtype: str) -> list[dict[str, Any]]:
    return [m for m in msgs if m["type"] == mtype]


def states(msgs: list[dict[str, Any]]) -> list[str]:
    return [m["state"] for m in of(msgs, "share_state")]


def last_state(msgs: list[dict[str, Any]]) -> dict[str, Any]:
    found = of(msgs, "share_state")
    assert found, msgs
    return found[-1]


@dataclass
class World:
    hub: Hub
    store: Store
    clock: FakeClock
    settings: Settings

    _ids = itertools.count(1)

    def _cid(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}"

    async def user(self, name: str, role: str = "agent") -> UserRow:
        return await self.store.create_user(f"{name.lower()}@example.com", name, "pw", role=role)

    async def agent(self, user: UserRow) -> Conn:
        conn = Conn(id=self._cid("a"), role="agent", user=user)
        await self.hub.join(conn)
        return conn

    async def visitor(self, visitor_id: str | None = None, can_share: bool = True) -> Conn:
        if visitor_id is None:
            row, _secret = await self.store.create_visitor(now=self.clock.wall())
            visitor_id = row.id
        conn = Conn(id=self._cid("v"), role="visitor", visitor_id=visitor_id)
        await self.hub.join(conn)
        await self.send(
            conn,
            "visitor_info",
            page="https://shop.example/cart",
            user_agent=DESKTOP_UA if can_share else MOBILE_UA,
            can_share=can_share,
        )
        return conn

    async def sharer(self, share_id: str) -> Conn:
        # The endpoint spends the popup token and sets share_id; the hub trusts it.
        conn = Conn(id=self._cid("s"), role="sharer", share_id=share_id)
        await self.hub.join(conn)
        return conn

    async def send(self, conn: Conn, mtype: str, **fields: Any) -> None:
        msg = P.validate(P.make(mtype, **fields), P.C2S)
        await self.hub.handle(conn, msg)

    async def refused(self, conn: Conn, mtype: str, **fields: Any) -> str:
        with pytest.raises(HubError) as caught:
            await self.send(conn, mtype, **fields)
        return caught.value.code

    async def chat(self, conn: Conn, text: str, client_id: str, conv: int | None = None) -> None:
        await self.send(conn, "chat_send", conversation=conv, text=text, client_id=client_id)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = await Store.open("sqlite+aiosqlite:///" + str(tmp_path / "db.sqlite"))
    clock = FakeClock()
    settings = Settings.load(environ={})
    hub = Hub(store, settings, clock=clock, wall=clock.wall)
    try:
        yield World(hub, store, clock, settings)
    finally:
        await store.close()


@dataclass
class Scene:
    """A visitor chatting with agent A (who took the conversation); agent B is also online."""

    w: World
    alice: UserRow
    bob: UserRow
    a: Conn
    b: Conn
    v: Conn
    conv: int

    async def request(self) -> str:
        await self.w.send(self.a, "share_request", conversation=self.conv)
        share = last_state(drain(self.a))["share"]
        return str(share)

    async def to_waiting(self) -> tuple[str, Conn]:
        share = await self.request()
        await self.w.send(self.v, "share_accept", share=share)
        s = await self.w.sharer(share)
        return share, s

    async def to_live(self) -> tuple[str, Conn]:
        share, s = await self.to_waiting()
        await self.w.send(s, "share_media", share=share, surface="monitor")
        return share, s

    def clear(self, *conns: Conn) -> None:
        for c in conns or (self.a, self.b, self.v):
            drain(c)


@pytest.fixture
async def scene(world: World) -> Scene:
    alice = await world.user("Alice")
    bob = await world.user("Bob")
    a = await world.agent(alice)
    b = await world.agent(bob)
    v = await world.visitor()
    await world.chat(v, "Hello, my cart is empty", "m1")
    conv = drain(v)[-1]["conversation"]
    await world.send(a, "conversation_take", conversation=conv)
    for c in (a, b, v):
        drain(c)
    return Scene(world, alice, bob, a, b, v, conv)


# --- conversations and chat ------------------------------------------------------------


async def test_visitor_chat_creates_waiting_conversation_seen_by_every_agent(
    world: World,
) -> None:
    alice = await world.user("Alice")
    bob = await world.user("Bob")
    a, b = await world.agent(alice), await world.agent(bob)
    assert of(drain(a), "conversations") == [P.make("conversations", items=[])]
    drain(b)
    v = await world.visitor()
    await world.chat(v, "  Hello there  ", "m1")

    echoed = of(drain(v), "chat")
    assert len(echoed) == 1
    message = echoed[0]["message"]
    assert message["sender"] == "visitor"
    assert message["text"] == "Hello there"
    assert message["client_id"] == "m1"
    conv_id = echoed[0]["conversation"]
    row = await world.store.get_conversation(conv_id)
    assert row is not None and row.status == "waiting" and row.agent_id is None

    for agent in (a, b):
        got = drain(agent)
        assert [m["message"]["text"] for m in of(got, "chat")] == ["Hello there"]
        update = of(got, "conversation_update")[-1]["item"]
        assert update["id"] == conv_id
        assert update["status"] == "waiting"
        assert update["online"] is True
        assert update["last_text"] == "Hello there"

    # An agent connecting later finds it in the queue.
    carol = await world.agent(await world.user("Carol"))
    items = of(drain(carol), "conversations")[0]["items"]
    assert [i["id"] for i in items] == [conv_id]


async def test_visitor_reconnecting_gets_history(world: World) -> None:
    v = await world.visitor()
    await world.chat(v, "one", "m1")
    await world.chat(v, "two", "m2")
    conv = drain(v)[-1]["conversation"]
    await world.hub.leave(v)
    v2 = await world.visitor(v.visitor_id)
    history = of(drain(v2), "history")
    assert len(history) == 1 and history[0]["conversation"] == conv
    assert [m["text"] for m in history[0]["messages"]] == ["one", "two"]


async def test_empty_chat_is_refused(world: World) -> None:
    v = await world.visitor()
    assert await world.refused(v, "chat_send", text="   ", client_id="x") == P.BAD_FIELD


async def test_agent_takes_conversation_and_others_are_shut_out(world: World) -> None:
    alice = await world.user("Alice")
    bob = await world.user("Bob")
    a, b = await world.agent(alice), await world.agent(bob)
    v = await world.visitor()
    await world.chat(v, "help", "m1")
    conv = drain(v)[-1]["conversation"]
    drain(a), drain(b)

    await world.send(a, "conversation_take", conversation=conv)
    got_a = drain(a)
    system = [m["message"] for m in of(got_a, "chat") if m["message"]["sender"] == "system"]
    assert [m["text"] for m in system] == ["Alice joined the conversation"]
    assert of(got_a, "history")[0]["conversation"] == conv
    assert of(got_a, "visitor")[0]["record"]["online"] is True
    assert of(got_a, "conversation_update")[-1]["item"]["agent_name"] == "Alice"
    got_v = drain(v)
    assert [m["message"]["text"] for m in of(got_v, "chat")] == ["Alice joined the conversation"]
    # Bob may no longer see it: not even the system message.  He is told it was taken,
    # with no text, so his console can drop it from its list.
    got_b = drain(b)
    assert of(got_b, "chat") == []
    bare = [m["item"] for m in of(got_b, "conversation_update")]
    assert [(i["id"], i["status"], i["agent_id"], i["last_text"]) for i in bare] == [
        (conv, "open", alice.id, "")
    ]
    row = await world.store.get_conversation(conv)
    assert row is not None and row.status == "open" and row.agent_id == alice.id

    assert await world.refused(b, "conversation_take", conversation=conv) in (
        P.CONFLICT,
        P.FORBIDDEN,
    )
    assert await world.refused(b, "conversation_open", conversation=conv) == P.FORBIDDEN
    assert await world.refused(b, "chat_send", conversation=conv, text="mine!", client_id="b1") in (
        P.CONFLICT,
        P.FORBIDDEN,
    )
    assert await world.refused(b, "share_request", conversation=conv) in (
        P.CONFLICT,
        P.FORBIDDEN,
    )
    assert [m.text for m in await world.store.messages(conv)] == [
        "help",
        "Alice joined the conversation",
    ]
    assert drain(v) == [] and of(drain(a), "chat") == []

    # Taking it again is harmless for its owner and adds no second system message.
    await world.send(a, "conversation_take", conversation=conv)
    assert of(drain(a), "chat") == []


async def test_taking_unknown_conversation_is_not_found(world: World) -> None:
    a = await world.agent(await world.user("Alice"))
    assert await world.refused(a, "conversation_take", conversation=424242) == P.NOT_FOUND


async def test_agents_only_receive_what_they_may_see(scene: Scene) -> None:
    w = scene.w
    admin = await w.agent(await w.user("Root", role="admin"))
    carol = await w.agent(await w.user("Carol"))
    # Carol's inbox leaves out Alice's conversation; the admin's shows it.
    assert of(drain(carol), "conversations")[0]["items"] == []
    assert [i["id"] for i in of(drain(admin), "conversations")[0]["items"]] == [scene.conv]

    await w.chat(scene.v, "are you there?", "m2")
    await w.chat(scene.a, "yes!", "a1", conv=scene.conv)
    texts = ["are you there?", "yes!"]
    assert [m["message"]["text"] for m in of(drain(scene.a), "chat")] == texts
    assert [m["message"]["text"] for m in of(drain(admin), "chat")] == texts
    assert [m["message"]["text"] for m in of(drain(scene.v), "chat")] == texts
    for stranger in (scene.b, carol):
        assert drain(stranger) == []

    # A second visitor's new conversation is in the queue: everyone sees that one.
    v2 = await w.visitor()
    await w.chat(v2, "hi", "x1")
    conv2 = drain(v2)[-1]["conversation"]
    for agent in (scene.a, scene.b, carol, admin):
        got = drain(agent)
        assert [m["conversation"] for m in of(got, "chat")] == [conv2]
        assert {m["item"]["id"] for m in of(got, "conversation_update")} == {conv2}
    # The visitors never see each other's messages.
    assert drain(scene.v) == []


async def test_agent_chat_on_waiting_conversation_takes_it(world: World) -> None:
    alice = await world.user("Alice")
    a, b = await world.agent(alice), await world.agent(await world.user("Bob"))
    v = await world.visitor()
    await world.chat(v, "hi", "m1")
    conv = drain(v)[-1]["conversation"]
    drain(a), drain(b)
    await world.chat(a, "hello", "a1", conv=conv)
    row = await world.store.get_conversation(conv)
    assert row is not None and row.agent_id == alice.id and row.status == "open"
    assert [m["message"]["text"] for m in of(drain(v), "chat")] == ["hello"]
    assert of(drain(b), "chat") == []
    # An agent must say which conversation.
    assert await world.refused(a, "chat_send", text="where?", client_id="a2") == P.BAD_FIELD


async def test_chat_resend_with_same_client_id_is_idempotent(scene: Scene) -> None:
    w = scene.w
    await w.chat(scene.v, "double?", "dup")
    first = of(drain(scene.v), "chat")
    assert len(first) == 1
    drain(scene.a)
    await w.chat(scene.v, "double?", "dup")
    again = drain(scene.v)
    # Confirmed to the sender with the stored message, delivered to nobody else.
    assert of(again, "chat") == first
    assert drain(scene.a) == [] and drain(scene.b) == []
    texts = [m.text for m in await w.store.messages(scene.conv)]
    assert texts.count("double?") == 1

    await w.chat(scene.a, "once", "same", conv=scene.conv)
    drain(scene.v), drain(scene.a)
    await w.chat(scene.a, "once", "same", conv=scene.conv)
    assert of(drain(scene.a), "chat")[0]["message"]["text"] == "once"
    assert drain(scene.v) == []
    assert [m.text for m in await w.store.messages(scene.conv)].count("once") == 1


async def test_visitor_leaving_updates_agents_record(scene: Scene) -> None:
    await scene.w.hub.leave(scene.v)
    got = drain(scene.a)
    record = of(got, "visitor")[-1]["record"]
    assert record["online"] is False and record["can_share"] is False
    assert of(got, "conversation_update")[-1]["item"]["online"] is False
    assert of(drain(scene.b), "visitor") == []


async def test_ping_gets_pong(world: World) -> None:
    v = await world.visitor()
    drain(v)
    await world.send(v, "ping", t=12.5)
    assert drain(v) == [P.make("pong", t=12.5)]


async def test_role_may_not_send_other_roles_messages(scene: Scene) -> None:
    w = scene.w
    assert await w.refused(scene.v, "share_request", conversation=scene.conv) == P.FORBIDDEN
    assert await w.refused(scene.v, "conversation_take", conversation=scene.conv) == P.FORBIDDEN
    assert await w.refused(scene.v, "offer", pc="x", sdp=SDP) == P.FORBIDDEN
    assert await w.refused(scene.a, "visitor_info", page="p", user_agent="u", can_share=True) == (
        P.FORBIDDEN
    )
    assert await w.refused(scene.a, "share_accept", share="x") == P.FORBIDDEN


# --- share requests ----------------------------------------------------------------------


async def test_share_request_refused_when_browser_cannot_share(world: World) -> None:
    alice = await world.user("Alice")
    a = await world.agent(alice)
    v = await world.visitor(can_share=False)
    await world.chat(v, "I am on my phone", "m1")
    conv = drain(v)[-1]["conversation"]
    await world.send(a, "conversation_take", conversation=conv)
    record = of(drain(a), "visitor")[-1]["record"]
    assert record["can_share"] is False and "Mobile" in record["share_reason"]
    assert await world.refused(a, "share_request", conversation=conv) == P.UNSUPPORTED_BROWSER
    assert world.hub.shares == {}


async def test_share_request_refused_when_visitor_offline(scene: Scene) -> None:
    await scene.w.hub.leave(scene.v)
    code = await scene.w.refused(scene.a, "share_request", conversation=scene.conv)
    assert code == P.CONFLICT
    assert scene.w.hub.shares == {}


async def test_share_request_refused_while_one_runs(scene: Scene) -> None:
    await scene.request()
    code = await scene.w.refused(scene.a, "share_request", conversation=scene.conv)
    assert code == P.CONFLICT
    assert len(scene.w.hub.shares) == 1


async def test_share_request_refused_before_taking(world: World) -> None:
    a = await world.agent(await world.user("Alice"))
    v = await world.visitor()
    await world.chat(v, "hi", "m1")
    conv = drain(v)[-1]["conversation"]
    assert await world.refused(a, "share_request", conversation=conv) == P.FORBIDDEN
    assert world.hub.shares == {}
    assert of(drain(v), "share_invite") == []


async def test_share_request_sends_invite_and_system_message(scene: Scene) -> None:
    w = scene.w
    share = await scene.request()
    got_v = drain(scene.v)
    invite = of(got_v, "share_invite")
    assert len(invite) == 1
    assert invite[0]["share"] == share and invite[0]["conversation"] == scene.conv
    assert invite[0]["agent_name"] == "Alice"
    assert invite[0]["expires_in"] == w.settings.share_request_timeout_s
    url = invite[0]["popup_url"]
    assert url.startswith(f"/popup#share={share}&t=")
    token = url.split("&t=", 1)[1]
    row = await w.store.get_share(share)
    assert row is not None and row.token_hash == token_hash(token)
    assert row.state == S.REQUESTED and row.requested_by == scene.alice.id
    assert states(got_v) == [S.REQUESTED]
    system = [m["message"]["text"] for m in of(got_v, "chat")]
    assert system == ["Alice asked to see your screen"]
    assert drain(scene.b) == []

    # A visitor tab opened later gets the invitation too, with the time left.
    w.clock.advance(30)
    v2 = await w.visitor(scene.v.visitor_id)
    late = of(drain(v2), "share_invite")
    assert late and late[0]["expires_in"] == w.settings.share_request_timeout_s - 30


# --- the share lifecycle -------------------------------------------------------------------


async def test_full_share_lifecycle_state_sequences(scene: Scene) -> None:
    w = scene.w
    await w.send(scene.a, "share_request", conversation=scene.conv)
    share = last_state(drain(scene.a))["share"]
    seen_a = [S.REQUESTED]
    seen_v = states(drain(scene.v))
    assert seen_v == [S.REQUESTED]

    w.clock.advance(5)
    await w.send(scene.v, "share_accept", share=share)
    # A second click (or tab) changes nothing.
    await w.send(scene.v, "share_accept", share=share)
    w.clock.advance(2)
    s = await w.sharer(share)
    w.clock.advance(3)
    await w.send(s, "share_media", share=share, surface="window")
    w.clock.advance(60)
    await w.hub.tick()  # a live share has no deadline
    await w.send(scene.a, "share_stop", share=share)

    got_a, got_v, got_s = drain(scene.a), drain(scene.v), drain(s)
    full = [S.REQUESTED, S.ACCEPTED, S.WAITING, S.LIVE, S.ENDED]
    assert seen_a + states(got_a) == full
    assert seen_v + states(got_v) == full
    assert states(got_s) == [S.WAITING, S.LIVE, S.ENDED]
    for got in (got_a, got_v, got_s):
        msgs = of(got, "share_state")
        assert all(m["share"] == share and m["conversation"] == scene.conv for m in msgs)
        assert msgs[-1]["reason"] == S.STOPPED_BY_VIEWER
        assert msgs[-2]["surface"] == "window"
    assert drain(scene.b) == []
    assert share not in w.hub.shares

    row = await w.store.get_share(share)
    assert row is not None
    assert row.state == S.ENDED
    assert row.end_reason == S.STOPPED_BY_VIEWER and row.ended_by == "agent"
    assert row.surface == "window"
    assert row.accepted_at == WALL0 + 505
    assert row.started_at == WALL0 + 510
    assert row.ended_at == WALL0 + 570
    assert row.created_at == WALL0 + 500
    # The visitor's chat tells both ends what happened.
    system = [m["message"]["text"] for m in of(got_v, "chat")]
    assert system == ["The agent stopped the screen share."]
    assert [m["message"]["text"] for m in of(got_a, "chat")] == system
    stored = [m for m in await w.store.messages(scene.conv) if m.sender == "system"]
    assert [m.text for m in stored][-2:] == [
        "Alice asked to see your screen",
        "The agent stopped the screen share.",
    ]

    # Once ended, the share is gone for everyone.
    assert await w.refused(scene.a, "share_stop", share=share) == P.ENDED
    assert await w.refused(scene.v, "share_accept", share=share) == P.NOT_FOUND


async def test_sharer_joining_straight_from_request_implies_acceptance(scene: Scene) -> None:
    share = await scene.request()
    drain(scene.v)
    s = await scene.w.sharer(share)
    assert states(drain(scene.a)) == [S.WAITING]
    assert states(drain(scene.v)) == [S.WAITING]
    assert states(drain(s)) == [S.WAITING]


async def test_surface_switch_and_repick_while_live(scene: Scene) -> None:
    w = scene.w
    share, s = await scene.to_live()
    scene.clear(scene.a, scene.v, s)
    await w.send(s, "share_media", share=share, surface="browser")
    switched = last_state(drain(scene.a))
    assert switched["state"] == S.LIVE and switched["surface"] == "browser"
    await w.send(s, "share_pick_failed", share=share, reason="cancelled")
    back = last_state(drain(scene.a))
    assert back["state"] == S.WAITING and "picker" in back["note"]
    row = await w.store.get_share(share)
    assert row is not None and row.surface == "browser"


async def test_share_path_reported_to_everyone(scene: Scene) -> None:
    w = scene.w
    share, s = await scene.to_live()
    scene.clear(scene.a, scene.v, s)
    await w.send(scene.a, "share_path", share=share, path="turn")
    for c in (scene.a, scene.v, s):
        assert last_state(drain(c))["path"] == "turn"
    row = await w.store.get_share(share)
    assert row is not None and row.path == "turn"
    assert await w.refused(scene.b, "share_path", share=share, path="direct") == P.FORBIDDEN


async def _ended(scene: Scene, share: str, *also: Conn) -> dict[str, Any]:
    """The final share_state seen by the agent, visitor and ``also``; all must agree."""
    finals = []
    for c in (scene.a, scene.v, *also):
        msgs = drain(c)
        final = last_state(msgs)
        assert final["state"] == S.ENDED
        finals.append(final)
    assert all(f == finals[0] for f in finals)
    assert share not in scene.w.hub.shares
    return finals[0]


async def _row(scene: Scene, share: str) -> tuple[str | None, str | None]:
    row = await scene.w.store.get_share(share)
    assert row is not None and row.state == S.ENDED and row.ended_at is not None
    return row.end_reason, row.ended_by


async def _system_texts(scene: Scene) -> list[str]:
    return [m.text for m in await scene.w.store.messages(scene.conv) if m.sender == "system"]


async def test_end_declined(scene: Scene) -> None:
    share = await scene.request()
    await scene.w.send(scene.v, "share_decline", share=share)
    final = await _ended(scene, share)
    assert final["reason"] == S.DECLINED
    assert await _row(scene, share) == (S.DECLINED, "visitor")
    assert (await _system_texts(scene))[-1] == "The screen share request was declined."


async def test_end_declined_after_accepting(scene: Scene) -> None:
    share = await scene.request()
    await scene.w.send(scene.v, "share_accept", share=share)
    await scene.w.send(scene.v, "share_decline", share=share)
    assert (await _ended(scene, share))["reason"] == S.DECLINED


async def test_decline_once_waiting_is_out_of_order(scene: Scene) -> None:
    share, s = await scene.to_waiting()
    assert await scene.w.refused(scene.v, "share_decline", share=share) == P.OUT_OF_ORDER
    assert share in scene.w.hub.shares


async def test_end_stopped_by_agent(scene: Scene) -> None:
    share, s = await scene.to_live()
    await scene.w.send(scene.a, "share_stop", share=share)
    assert (await _ended(scene, share, s))["reason"] == S.STOPPED_BY_VIEWER
    assert await _row(scene, share) == (S.STOPPED_BY_VIEWER, "agent")
    assert s.closed is False  # the popup shows "ended" itself and may close


async def test_end_stopped_by_visitor_from_widget(scene: Scene) -> None:
    share, s = await scene.to_live()
    await scene.w.send(scene.v, "share_stop", share=share)
    assert (await _ended(scene, share, s))["reason"] == S.STOPPED_BY_SHARER
    assert await _row(scene, share) == (S.STOPPED_BY_SHARER, "visitor")
    assert (await _system_texts(scene))[-1] == "The visitor stopped sharing their screen."


async def test_end_stopped_by_visitor_before_answering(scene: Scene) -> None:
    share = await scene.request()
    await scene.w.send(scene.v, "share_stop", share=share)
    assert (await _ended(scene, share))["reason"] == S.STOPPED_BY_SHARER


async def test_end_stopped_from_sharer_window(scene: Scene) -> None:
    share, s = await scene.to_live()
    await scene.w.send(s, "share_stop", share=share)
    assert (await _ended(scene, share, s))["reason"] == S.STOPPED_BY_SHARER
    assert await _row(scene, share) == (S.STOPPED_BY_SHARER, "visitor")


async def test_end_sharer_left(scene: Scene) -> None:
    share, s = await scene.to_live()
    await scene.w.hub.leave(s)
    assert (await _ended(scene, share))["reason"] == S.SHARER_LEFT
    assert await _row(scene, share) == (S.SHARER_LEFT, "sharer")
    assert (await _system_texts(scene))[-1] == (
        "The screen share window was closed; the share ended."
    )


async def test_end_requester_left_only_with_last_conn(scene: Scene) -> None:
    w = scene.w
    a2 = await w.agent(scene.alice)  # Alice's second console tab
    share, s = await scene.to_waiting()
    drain(a2)
    await w.hub.leave(scene.a)
    assert share in w.hub.shares
    await w.hub.leave(a2)
    # A reloaded console cannot be told from a closed one: the share waits for it.
    for c in (scene.v, s):
        waiting = last_state(drain(c))
        assert waiting["state"] == S.WAITING and waiting["away"] == ["viewer"]
    w.clock.advance(w.settings.resume_grace_s - 0.01)
    await w.hub.tick()
    assert share in w.hub.shares
    w.clock.advance(0.01)
    await w.hub.tick()
    for c in (scene.v, s):
        final = last_state(drain(c))
        assert final["state"] == S.ENDED and final["reason"] == S.REQUESTER_LEFT
    assert share not in w.hub.shares
    assert await _row(scene, share) == (S.REQUESTER_LEFT, "agent")


async def test_agent_rejoining_sees_share_state(scene: Scene) -> None:
    share = await scene.request()
    a2 = await scene.w.agent(scene.alice)
    assert last_state(drain(a2))["share"] == share
    b2 = await scene.w.agent(scene.bob)
    assert of(drain(b2), "share_state") == []


async def test_unrelated_agent_leaving_does_not_end_share(scene: Scene) -> None:
    w = scene.w
    share, s = await scene.to_live()
    scene.clear(scene.a, scene.v, s)
    await w.hub.leave(scene.b)
    assert share in w.hub.shares
    assert of(drain(scene.a), "share_state") == []
    assert of(drain(s), "share_state") == []


async def test_end_viewer_left(scene: Scene) -> None:
    w = scene.w
    a2 = await w.agent(scene.alice)
    share, s = await scene.to_live()
    await w.send(a2, "share_watch", share=share)
    scene.clear(scene.a, scene.v, s, a2)
    await w.hub.leave(a2)  # the watching tab went away; Alice's other tab stays
    assert last_state(drain(s))["away"] == ["viewer"]
    w.clock.advance(w.settings.resume_grace_s)
    await w.hub.tick()
    final = last_state(drain(s))
    assert final["state"] == S.ENDED and final["reason"] == S.VIEWER_LEFT
    assert await _row(scene, share) == (S.VIEWER_LEFT, "agent")


@pytest.mark.parametrize(
    ("stage", "limit", "reason"),
    [
        ("requested", "share_request_timeout_s", S.REQUEST_TIMEOUT),
        ("accepted", "share_open_timeout_s", S.OPEN_TIMEOUT),
        ("waiting", "share_pick_timeout_s", S.PICK_TIMEOUT),
    ],
)
async def test_end_by_timeout(scene: Scene, stage: str, limit: str, reason: str) -> None:
    w = scene.w
    share = await scene.request()
    also: list[Conn] = []
    if stage in ("accepted", "waiting"):
        await w.send(scene.v, "share_accept", share=share)
    if stage == "waiting":
        also.append(await w.sharer(share))
    scene.clear(scene.a, scene.v, *also)
    seconds = getattr(w.settings, limit)

    w.clock.advance(seconds - 0.5)
    await w.hub.tick()
    assert share in w.hub.shares
    for c in (scene.a, scene.v, *also):
        assert drain(c) == []

    w.clock.advance(0.5)
    await w.hub.tick()
    final = await _ended(scene, share, *also)
    assert final["reason"] == reason
    assert await _row(scene, share) == (reason, "timeout")
    row = await w.store.get_share(share)
    assert row is not None and row.ended_at == w.clock.wall()
    assert (await _system_texts(scene))[-1] == {
        S.REQUEST_TIMEOUT: "The screen share request expired without an answer.",
        S.OPEN_TIMEOUT: "The screen share window was not opened in time.",
        S.PICK_TIMEOUT: "No screen was chosen in time; the share ended.",
    }[reason]
    # The conversation is free for a new request.
    drain(scene.a)
    await w.send(scene.a, "share_request", conversation=scene.conv)
    assert last_state(drain(scene.a))["state"] == S.REQUESTED


async def test_shutdown_ends_shares_that_cannot_resume(scene: Scene) -> None:
    """Without a resume credential (a window that never got one) nothing can resume."""
    share, s = await scene.to_live()
    await scene.w.hub.shutdown()
    assert (await _ended(scene, share, s))["reason"] == S.SERVER_SHUTDOWN
    assert await _row(scene, share) == (S.SERVER_SHUTDOWN, "server")


async def test_ended_share_row_after_sharer_never_picked(scene: Scene) -> None:
    share, s = await scene.to_waiting()
    await scene.w.send(s, "share_stop", share=share)
    row = await scene.w.store.get_share(share)
    assert row is not None
    assert row.started_at is None and row.surface is None
    assert row.accepted_at is not None and row.ended_at is not None


# --- peer connections -------------------------------------------------------------------


def _peer(msgs: list[dict[str, Any]]) -> dict[str, Any]:
    found = of(msgs, "peer")
    assert len(found) == 1, msgs
    return found[0]


async def test_peer_when_agent_watches_before_sharer_joins(scene: Scene) -> None:
    w = scene.w
    share = await scene.request()
    await w.send(scene.v, "share_accept", share=share)
    await w.send(scene.a, "share_watch", share=share)
    assert of(drain(scene.a), "peer") == []
    s = await w.sharer(share)
    offerer, answerer = _peer(drain(s)), _peer(drain(scene.a))
    assert offerer["role"] == "offerer" and answerer["role"] == "answerer"
    assert offerer["pc"] == answerer["pc"] and offerer["share"] == share
    assert of(drain(scene.v), "peer") == [] and drain(scene.b) == []


async def test_peer_when_sharer_joins_before_agent_watches(scene: Scene) -> None:
    w = scene.w
    share, s = await scene.to_live()
    scene.clear(scene.a, scene.v, s)
    await w.send(scene.a, "share_watch", share=share)
    got_a = drain(scene.a)
    offerer, answerer = _peer(drain(s)), _peer(got_a)
    assert offerer["role"] == "offerer" and answerer["role"] == "answerer"
    assert offerer["pc"] == answerer["pc"]
    assert last_state(got_a)["state"] == S.LIVE
    # Watching twice does not open a second peer connection.
    await w.send(scene.a, "share_watch", share=share)
    assert of(drain(s), "peer") == []


async def test_strangers_cannot_watch_or_stop(scene: Scene) -> None:
    w = scene.w
    share, s = await scene.to_live()
    other_v = await w.visitor()
    assert await w.refused(scene.b, "share_watch", share=share) == P.FORBIDDEN
    assert await w.refused(scene.b, "share_stop", share=share) == P.FORBIDDEN
    assert await w.refused(other_v, "share_stop", share=share) == P.NOT_FOUND
    assert await w.refused(other_v, "share_accept", share=share) == P.NOT_FOUND
    assert await w.refused(other_v, "share_decline", share=share) == P.NOT_FOUND
    assert await w.refused(scene.a, "share_watch", share="no-such-share") == P.NOT_FOUND
    assert await w.refused(scene.a, "share_stop", share="no-such-share") == P.NOT_FOUND
    assert share in w.hub.shares


async def test_admin_may_watch_any_share(scene: Scene) -> None:
    w = scene.w
    share, s = await scene.to_live()
    admin = await w.agent(await w.user("Root", role="admin"))
    drain(s)
    await w.send(admin, "share_watch", share=share)
    assert _peer(drain(admin))["role"] == "answerer"
    assert _peer(drain(s))["role"] == "offerer"


async def test_sharer_of_another_share_is_refused(scene: Scene) -> None:
    w = scene.w
    share, s = await scene.to_live()
    # A second visitor with their own share, to a second agent.
    v2 = await w.visitor()
    await w.chat(v2, "me too", "z1")
    conv2 = drain(v2)[-1]["conversation"]
    await w.send(scene.b, "conversation_take", conversation=conv2)
    await w.send(scene.b, "share_request", conversation=conv2)
    share2 = last_state(drain(scene.b))["share"]
    s2 = await w.sharer(share2)
    assert await w.refused(s2, "share_media", share=share, surface="monitor") == P.FORBIDDEN
    assert await w.refused(s2, "share_stop", share=share) == P.FORBIDDEN
    assert await w.refused(s2, "share_pick_failed", share=share, reason="error") == P.FORBIDDEN
    assert w.hub.shares[share].session.state == S.LIVE


async def test_negotiation_routed_between_the_two_ends(scene: Scene) -> None:
    w = scene.w
    share, s = await scene.to_live()
    await w.send(scene.a, "share_watch", share=share)
    pc = _peer(drain(s))["pc"]
    other_v = await w.visitor()
    admin = await w.agent(await w.user("Root", role="admin"))
    everyone = (scene.a, scene.b, scene.v, s, other_v, admin)
    for c in everyone:
        drain(c)

    # Answer and answerer's candidates before any offer are out of order.
    assert await w.refused(scene.a, "answer", pc=pc, sdp=SDP) == P.OUT_OF_ORDER
    assert await w.refused(scene.a, "ice", pc=pc, candidate=CANDIDATE) == P.OUT_OF_ORDER
    # Only the offerer offers.
    assert await w.refused(scene.a, "offer", pc=pc, sdp=SDP) == P.OUT_OF_ORDER

    await w.send(s, "offer", pc=pc, sdp=SDP)
    await w.send(s, "ice", pc=pc, candidate=CANDIDATE)
    await w.send(scene.a, "answer", pc=pc, sdp=SDP + "a=answer\r\n")
    await w.send(scene.a, "ice", pc=pc, candidate=None)
    await w.send(s, "restart", pc=pc)
    # A second answer to the same offer is out of order.
    assert await w.refused(scene.a, "answer", pc=pc, sdp=SDP) == P.OUT_OF_ORDER

    assert drain(scene.a) == [
        P.make("offer", pc=pc, sdp=SDP),
        P.make("ice", pc=pc, candidate=CANDIDATE),
        P.make("restart", pc=pc),
    ]
    assert drain(s) == [
        P.make("answer", pc=pc, sdp=SDP + "a=answer\r\n"),
        P.make("ice", pc=pc, candidate=None),
    ]

    # Strangers: another agent (even an admin who is not an end of this pc), other visitors.
    assert await w.refused(scene.b, "offer", pc=pc, sdp=SDP) == P.FORBIDDEN
    assert await w.refused(scene.b, "ice", pc=pc, candidate=CANDIDATE) == P.FORBIDDEN
    assert await w.refused(admin, "answer", pc=pc, sdp=SDP) == P.FORBIDDEN
    assert await w.refused(other_v, "offer", pc=pc, sdp=SDP) == P.FORBIDDEN
    assert await w.refused(scene.v, "ice", pc=pc, candidate=CANDIDATE) == P.FORBIDDEN
    assert await w.refused(scene.a, "offer", pc="nope", sdp=SDP) == P.NOT_FOUND
    for c in everyone:
        assert drain(c) == []


async def test_peer_gone_when_share_ends(scene: Scene) -> None:
    w = scene.w
    share, s = await scene.to_live()
    await w.send(scene.a, "share_watch", share=share)
    pc = _peer(drain(s))["pc"]
    drain(scene.a)
    await w.send(scene.v, "share_stop", share=share)
    assert P.make("peer_gone", share=share, pc=pc) in drain(scene.a)
    assert P.make("peer_gone", share=share, pc=pc) in drain(s)
    assert await w.refused(s, "offer", pc=pc, sdp=SDP) == P.NOT_FOUND


# --- recovery ----------------------------------------------------------------------------


async def test_recover_ends_shares_left_open(world: World) -> None:
    alice = await world.user("Alice")
    visitor, _ = await world.store.create_visitor()
    conv = await world.store.open_conversation(visitor.id)
    await world.store.assign_conversation(conv.id, alice.id)
    left = await world.store.create_share(
        conv.id, alice.id, token_hash("t1"), WALL0 + 999, S.LIVE, now=WALL0
    )
    done = await world.store.create_share(
        conv.id, alice.id, token_hash("t2"), WALL0 + 999, S.ENDED, now=WALL0
    )
    await world.store.update_share(done.id, ended_at=WALL0 + 1, end_reason=S.DECLINED)

    fresh = Hub(world.store, world.settings, clock=world.clock, wall=world.clock.wall)
    await fresh.recover()
    assert await world.store.open_shares() == []
    row = await world.store.get_share(left.id)
    assert row is not None
    assert row.state == S.ENDED and row.end_reason == S.SERVER_SHUTDOWN
    assert row.ended_at == world.clock.wall() and row.ended_by == "server"
    # The conversation says why, once, for the one share that was cut.
    texts = [m.text for m in await world.store.messages(conv.id) if m.sender == "system"]
    assert texts == ["The screen share ended because the server restarted."]
    untouched = await world.store.get_share(done.id)
    assert untouched is not None and untouched.end_reason == S.DECLINED
    assert untouched.ended_at == WALL0 + 1


async def test_each_peer_connection_gets_ice_servers_minted_for_its_end(scene: Scene) -> None:
    """TURN credentials age: every ``peer`` carries a fresh list for the socket it goes to."""
    w = scene.w
    minted: list[str] = []

    def ice_for(conn: Conn) -> list[dict[str, Any]]:
        minted.append(conn.id)
        return [{"urls": ["turn:127.0.0.1:3478"], "username": f"u-{len(minted)}"}]

    w.hub.ice_servers = ice_for
    share, s = await scene.to_live()
    scene.clear(scene.a, scene.v, s)
    await w.send(scene.a, "share_watch", share=share)
    offerer, answerer = _peer(drain(s)), _peer(drain(scene.a))
    assert minted == [s.id, scene.a.id]
    assert offerer["ice_servers"][0]["username"] == "u-1"
    assert answerer["ice_servers"][0]["username"] == "u-2"


async def test_turn_credentials_are_renewed_at_half_their_lifetime(scene: Scene) -> None:
    """A share that outlives its credentials can still ICE-restart through TURN."""
    w = scene.w
    w.hub.settings = Settings.load(
        environ={
            "COVIEW_TURN_URLS": "turn:127.0.0.1:3478",
            "COVIEW_TURN_SECRETS": "s" * 32,
            "COVIEW_TURN_TTL_S": "600",
            "COVIEW_MEDIA_RELAY": "off",
        }
    )
    minted = iter(range(1, 100))
    w.hub.ice_servers = lambda conn: [{"urls": ["turn:x"], "username": f"u-{next(minted)}"}]
    share, s, pc = await _direct_pc(scene)
    await w.send(scene.a, "peer_status", pc=pc, state="connected")
    drain(s), drain(scene.a)
    w.clock.advance(299)
    await w.hub.tick()
    assert of(drain(s), "peer_ice") == [] and of(drain(scene.a), "peer_ice") == []
    w.clock.advance(1)
    await w.hub.tick()
    to_s, to_a = of(drain(s), "peer_ice"), of(drain(scene.a), "peer_ice")
    assert [m["pc"] for m in to_s + to_a] == [pc, pc]
    assert {to_s[0]["ice_servers"][0]["username"], to_a[0]["ice_servers"][0]["username"]} == {
        "u-3",
        "u-4",
    }
    # Not again until another half lifetime has passed.
    w.clock.advance(299)
    await w.hub.tick()
    assert of(drain(s), "peer_ice") == []
    w.clock.advance(1)
    await w.hub.tick()
    assert len(of(drain(s), "peer_ice")) == 1


async def test_no_renewal_without_turn(scene: Scene) -> None:
    w = scene.w
    share, s, pc = await _direct_pc(scene)
    await w.send(scene.a, "peer_status", pc=pc, state="connected")
    w.clock.advance(10 * 3600)
    await w.hub.tick()
    assert of(drain(s), "peer_ice") == [] and of(drain(scene.a), "peer_ice") == []


# --- path selection: the relay fallback --------------------------------------------------


def _relay(w: World) -> Conn:
    relay = Conn(id="relay-test", role="relay")
    w.hub.relay = relay
    return relay


def _peers(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return of(msgs, "peer")


async def _direct_pc(scene: Scene) -> tuple[str, Conn, str]:
    share, s = await scene.to_live()
    await scene.w.send(scene.a, "share_watch", share=share)
    pc = _peer(drain(s))["pc"]
    await scene.w.send(s, "offer", pc=pc, sdp=SDP)
    scene.clear(scene.a, scene.v)
    return share, s, pc


def _assert_relayed(scene: Scene, share: str, s: Conn, relay: Conn, direct_pc: str) -> None:
    """The direct pc is gone for both ends; sharer → relay → viewer pcs exist, marked relay."""
    to_s, to_a, to_relay = drain(s), drain(scene.a), drain(relay)
    gone = P.make("peer_gone", share=share, pc=direct_pc)
    assert gone in to_s and gone in to_a
    up = [(m["pc"], m["role"], m.get("via")) for m in _peers(to_s)]
    down = [(m["pc"], m["role"], m.get("via")) for m in _peers(to_a)]
    assert up == [(f"{share}.up", "offerer", "relay")]
    assert down == [(f"{share}.{scene.a.id}.down", "answerer", "relay")]
    assert sorted((m["pc"], m["role"]) for m in _peers(to_relay)) == sorted(
        [(f"{share}.up", "answerer"), (f"{share}.{scene.a.id}.down", "offerer")]
    )
    # The gone pc comes before its replacements, so a page never holds two at once.
    assert to_a.index(gone) < to_a.index(_peers(to_a)[0])
    assert last_state(to_a)["path"] == "relay"


async def test_failed_report_moves_the_share_to_the_relay(scene: Scene) -> None:
    w = scene.w
    relay = _relay(w)
    share, s, pc = await _direct_pc(scene)
    await w.send(scene.a, "peer_status", pc=pc, state="failed")
    _assert_relayed(scene, share, s, relay, pc)
    row = await w.store.get_share(share)
    assert row is not None and row.path == "relay"
    # Negotiation then runs between the relay and each end like between two browsers.
    up, down = f"{share}.up", f"{share}.{scene.a.id}.down"
    await w.send(s, "offer", pc=up, sdp=SDP)
    assert drain(relay) == [P.make("offer", pc=up, sdp=SDP)]
    await w.send(relay, "answer", pc=up, sdp=SDP + "a=r\r\n")
    assert drain(s) == [P.make("answer", pc=up, sdp=SDP + "a=r\r\n")]
    await w.send(relay, "offer", pc=down, sdp=SDP)
    assert drain(scene.a) == [P.make("offer", pc=down, sdp=SDP)]
    # The viewer cannot speak on the uplink, nor the sharer on the downlink.
    assert await w.refused(scene.a, "ice", pc=up, candidate=CANDIDATE) == P.FORBIDDEN
    assert await w.refused(s, "answer", pc=down, sdp=SDP) == P.FORBIDDEN
    # The viewer's own stats (a direct pair, to the relay) do not change the path.
    await w.send(scene.a, "share_path", share=share, path="direct")
    assert drain(scene.a) == []
    # A second failure report changes nothing: the share is relayed once.
    assert await w.refused(s, "peer_status", pc=pc, state="failed") == P.NOT_FOUND


async def test_no_media_within_the_deadline_falls_back(scene: Scene) -> None:
    w = scene.w
    relay = _relay(w)
    share, s, pc = await _direct_pc(scene)
    w.clock.advance(w.settings.relay_fallback_s - 0.01)
    await w.hub.tick()
    assert drain(s) == [] and drain(relay) == []
    w.clock.advance(0.01)
    await w.hub.tick()
    _assert_relayed(scene, share, s, relay, pc)


async def test_connected_viewer_keeps_the_direct_path(scene: Scene) -> None:
    w = scene.w
    relay = _relay(w)
    share, s, pc = await _direct_pc(scene)
    # The sharer's own "connected" is not proof that the viewer receives anything.
    await w.send(s, "peer_status", pc=pc, state="connected")
    await w.send(scene.a, "peer_status", pc=pc, state="connected")
    w.clock.advance(60)
    await w.hub.tick()
    assert _peers(drain(s)) == [] and drain(relay) == []
    assert of(drain(scene.a), "peer_gone") == []


async def test_deadline_counts_from_the_first_offer(scene: Scene) -> None:
    """A visitor who takes a minute to pick has not failed to connect."""
    w = scene.w
    relay = _relay(w)
    share, s = await scene.to_waiting()
    await w.send(scene.a, "share_watch", share=share)
    pc = _peer(drain(s))["pc"]
    w.clock.advance(100)
    await w.hub.tick()
    assert drain(relay) == []
    await w.send(s, "share_media", share=share, surface="browser")
    await w.send(s, "offer", pc=pc, sdp=SDP)
    w.clock.advance(w.settings.relay_fallback_s)
    await w.hub.tick()
    assert len(_peers(drain(relay))) == 2


async def test_relay_off_or_missing_reports_the_failure(world: World) -> None:
    for relay_on in (False, True):
        policy = "off" if relay_on else "auto"  # a relay that is off, or none running
        settings = Settings.load(environ={"COVIEW_MEDIA_RELAY": policy})
        world.hub.settings = settings
        world.hub.relay = Conn(id="r", role="relay") if relay_on else None
        alice = await world.user(f"Ann{relay_on}")
        a = await world.agent(alice)
        v = await world.visitor()
        await world.chat(v, "hi", f"m{relay_on}")
        conv = drain(v)[-1]["conversation"]
        await world.send(a, "conversation_take", conversation=conv)
        scene = Scene(world, alice, alice, a, a, v, conv)
        share, s, pc = await _direct_pc(scene)
        await world.send(a, "peer_status", pc=pc, state="failed")
        st = last_state(drain(a))
        assert st["note"] == "The direct media connection failed and no relay is available."
        assert st.get("path") is None and _peers(drain(s)) == []
        await world.send(s, "share_stop", share=share)


async def test_always_relays_from_the_start_and_late_viewers_get_a_downlink(
    world: World,
) -> None:
    world.hub.settings = Settings.load(environ={"COVIEW_MEDIA_RELAY": "always"})
    relay = _relay(world)
    alice = await world.user("Alice")
    root = await world.user("Root", role="admin")
    a = await world.agent(alice)
    v = await world.visitor()
    await world.chat(v, "hi", "m1")
    conv = drain(v)[-1]["conversation"]
    await world.send(a, "conversation_take", conversation=conv)
    scene = Scene(world, alice, alice, a, a, v, conv)
    share = await scene.request()
    row = await world.store.get_share(share)
    assert row is not None and row.path == "relay"
    await world.send(a, "share_watch", share=share)
    await world.send(v, "share_accept", share=share)
    s = await world.sharer(share)
    assert [(m["pc"], m.get("via")) for m in _peers(drain(s))] == [(f"{share}.up", "relay")]
    assert [m["pc"] for m in _peers(drain(a))] == [f"{share}.{a.id}.down"]
    admin = await world.agent(root)
    await world.send(admin, "share_watch", share=share)
    # One uplink for any number of viewers.
    assert _peers(drain(s)) == []
    assert [m["pc"] for m in _peers(drain(admin))] == [f"{share}.{admin.id}.down"]
    assert sorted(m["pc"] for m in _peers(drain(relay))) == sorted(
        [f"{share}.up", f"{share}.{a.id}.down", f"{share}.{admin.id}.down"]
    )
    # The end closes every pc, the relay's included.
    await world.send(s, "share_stop", share=share)
    gone = sorted(m["pc"] for m in of(drain(relay), "peer_gone"))
    assert gone == sorted([f"{share}.up", f"{share}.{a.id}.down", f"{share}.{admin.id}.down"])


async def test_relay_link_failure_is_reported_not_retried(scene: Scene) -> None:
    w = scene.w
    relay = _relay(w)
    share, s, pc = await _direct_pc(scene)
    await w.send(scene.a, "peer_status", pc=pc, state="failed")
    scene.clear(scene.a, scene.v)
    drain(s), drain(relay)
    await w.send(relay, "peer_status", pc=f"{share}.up", state="failed")
    st = last_state(drain(scene.a))
    assert st["note"] == "The media connection failed, even through the server's relay."
    assert st["state"] == "live" and st["path"] == "relay"
    assert _peers(drain(s)) == [] and _peers(drain(relay)) == []


async def test_peer_status_from_strangers_is_refused(scene: Scene) -> None:
    w = scene.w
    _relay(w)
    share, s, pc = await _direct_pc(scene)
    assert await w.refused(scene.b, "peer_status", pc=pc, state="failed") == P.FORBIDDEN
    assert await w.refused(scene.v, "peer_status", pc=pc, state="failed") == P.FORBIDDEN
    assert await w.refused(scene.a, "peer_status", pc="nope", state="failed") == P.NOT_FOUND
    assert _peers(drain(s)) == []
