"""Accounts in the hub: permissions are enforced on the protocol (whatever the console
shows), read fresh on every action, and a disabled agent is signed out of every socket at
once, with the shares they hold ended and recorded."""

# The fixtures come from test_hub; pytest hands them in under their own names.
# ruff: noqa: F811

from __future__ import annotations

import pytest
from test_hub import Scene, World, drain, last_state, of, scene, world  # noqa: F401

from coview import protocol as P, share as S
from coview_server import accounts
from coview_server.accounts import AccountError

pytestmark = pytest.mark.anyio


async def test_agent_gets_permissions_after_joining(world: World) -> None:
    alice = await world.user("Alice")
    a = await world.agent(alice)
    msgs = drain(a)
    assert msgs[0] == P.make("permissions", screen_share=True, reason=None)


async def test_agent_without_permission_is_refused_on_the_protocol(scene: Scene) -> None:
    w = scene.w
    await accounts.set_screen_share(w.store, w.hub, scene.alice.id, False)
    pushed = of(drain(scene.a), "permissions")
    assert pushed == [P.make("permissions", screen_share=False, reason=accounts.AGENT_OFF_TEXT)]
    assert of(drain(scene.b), "permissions") == []  # only Alice's consoles hear of it
    assert await w.refused(scene.a, "share_request", conversation=scene.conv) == P.FORBIDDEN
    assert await w.refused(scene.a, "phone_share_start") == P.FORBIDDEN
    assert w.hub.shares == {}
    assert await w.store.audit_shares() == []  # nothing was stored

    await accounts.set_screen_share(w.store, w.hub, scene.alice.id, True)
    share = await scene.request()
    assert w.hub.shares[share].row.requested_by == scene.alice.id


async def test_company_switch_refuses_everyone_including_admins(world: World) -> None:
    admin = await world.user("Ada", role="admin")
    conn = await world.agent(admin)
    drain(conn)
    await accounts.set_company_screen_sharing(world.store, world.hub, False)
    assert of(drain(conn), "permissions")[0]["reason"] == accounts.COMPANY_OFF_TEXT
    assert await world.refused(conn, "phone_share_start") == P.FORBIDDEN
    await accounts.set_company_screen_sharing(world.store, world.hub, True)
    await world.send(conn, "phone_share_start")
    assert of(drain(conn), "phone_share_key")


async def test_disabling_mid_share_ends_it_and_signs_out_every_socket(scene: Scene) -> None:
    w = scene.w
    admin = await w.user("Ada", role="admin")
    second = await w.agent(scene.alice)  # Alice has two consoles open
    share, sharer = await scene.to_live()
    await w.send(scene.a, "share_watch", share=share)
    token, _ = await w.store.create_session(scene.alice.id)
    scene.clear(scene.v, second, sharer)

    await accounts.set_disabled(w.store, w.hub, admin, scene.alice.id, True)

    for conn in (scene.a, second):
        msgs = drain(conn)
        errors = of(msgs, "error")
        assert errors[-1]["code"] == P.UNAUTHORIZED and errors[-1]["fatal"] is True
        assert "disabled" in errors[-1]["text"]
        assert conn.closed and conn.evicted
        assert conn.id not in w.hub.conns
    ended = last_state(drain(sharer))
    assert ended["state"] == S.ENDED and ended["reason"] == S.REQUESTER_LEFT
    assert last_state(drain(scene.v))["state"] == S.ENDED
    assert w.hub.shares == {}
    row = await w.store.get_share(share)
    assert row is not None and row.ended_by == "admin" and row.end_reason == S.REQUESTER_LEFT
    assert await w.store.session_user(token) is None  # cannot reconnect
    # The endpoint's own leave afterwards changes nothing.
    await w.hub.leave(scene.a)
    assert scene.b.id in w.hub.conns


async def test_admin_rules_on_disabling(world: World) -> None:
    ada = await world.user("Ada", role="admin")
    with pytest.raises(AccountError, match="your own"):
        await accounts.set_disabled(world.store, world.hub, ada, ada.id, True)
    other = await world.user("Otto", role="admin")
    await accounts.set_disabled(world.store, world.hub, ada, other.id, True)
    with pytest.raises(AccountError, match="does not exist"):
        await accounts.set_disabled(world.store, world.hub, ada, 999, True)
    # Re-enabling works and keeps everything else.
    row = await accounts.set_disabled(world.store, world.hub, ada, other.id, False)
    assert not row.disabled and row.role == "admin"


async def test_create_account_validates_every_field(world: World) -> None:
    s = world.store
    cases = [
        (("not-an-email", "N", "long enough pw", "agent"), "Email"),
        (("n@example.com", "  ", "long enough pw", "agent"), "Name"),
        (("n@example.com", "x" * 201, "long enough pw", "agent"), "Name"),
        (("n@example.com", "N", "long enough pw", "root"), "Role"),
        (("n@example.com", "N", "short", "agent"), "Password"),
    ]
    for args, field in cases:
        with pytest.raises(AccountError) as caught:
            await accounts.create_account(s, *args)
        assert caught.value.text.startswith(field)
    assert [u.email for u in await s.list_users()] == []
    await accounts.create_account(s, "N@Example.com", "Nina", "long enough pw", "agent")
    with pytest.raises(AccountError, match="already exists"):
        await accounts.create_account(s, "n@example.com", "Nina 2", "long enough pw", "agent")
    assert [u.display_name for u in await s.list_users()] == ["Nina"]


# --- internal shares: an agent watches a colleague's screen -----------------------------


async def test_colleague_share_uses_the_same_share_machine(scene: Scene) -> None:
    w = scene.w
    await w.send(scene.a, "colleague_share_request", agent=scene.bob.id)
    msgs = drain(scene.a)
    item = of(msgs, "conversation_update")[0]["item"]
    assert item["channel"] == "internal" and item["visitor_label"] == "Colleague Bob"
    requested = last_state(msgs)
    share, conv = requested["share"], requested["conversation"]
    assert requested["state"] == S.REQUESTED and requested["colleague"] == scene.bob.id
    invite = of(drain(scene.b), "share_invite")[0]
    assert invite["agent_name"] == "Alice" and invite["popup_url"].startswith("/popup#share=")

    # Nobody else may answer it, and Bob cannot read Alice's conversation with him.
    carol = await w.user("Carol")
    c = await w.agent(carol)
    assert await w.refused(c, "share_accept", share=share) == P.FORBIDDEN
    assert await w.refused(scene.b, "conversation_open", conversation=conv) == P.FORBIDDEN
    assert await w.refused(scene.b, "share_watch", share=share) == P.FORBIDDEN

    await w.send(scene.b, "share_accept", share=share)
    assert last_state(drain(scene.a))["state"] == S.ACCEPTED
    sharer = await w.sharer(share)
    await w.send(scene.a, "share_watch", share=share)
    assert of(drain(sharer), "peer")[0]["role"] == "offerer"
    await w.send(sharer, "share_media", share=share, surface="window")
    assert last_state(drain(scene.b))["state"] == S.LIVE

    await w.send(scene.b, "share_stop", share=share)  # from Bob's console
    assert last_state(drain(scene.a))["reason"] == S.STOPPED_BY_SHARER
    [row] = await w.store.audit_shares(agent_id=scene.alice.id)
    assert row.channel == "internal" and row.colleague_name == "Bob"
    assert row.surface == "window" and row.ended_by == "visitor"


async def test_colleague_share_refusals(scene: Scene) -> None:
    w = scene.w
    assert await w.refused(scene.a, "colleague_share_request", agent=scene.alice.id) == (
        P.FORBIDDEN
    )
    assert await w.refused(scene.a, "colleague_share_request", agent=999) == P.NOT_FOUND
    carol = await w.user("Carol")  # exists, but has no console open
    assert await w.refused(scene.a, "colleague_share_request", agent=carol.id) == P.CONFLICT
    await accounts.set_screen_share(w.store, w.hub, scene.alice.id, False)
    assert await w.refused(scene.a, "colleague_share_request", agent=scene.bob.id) == (P.FORBIDDEN)
    await accounts.set_screen_share(w.store, w.hub, scene.alice.id, True)
    await w.send(scene.b, "colleague_share_request", agent=scene.alice.id)
    drain(scene.a)
    # Declined from Alice's console: ends like a visitor's decline.
    share = next(iter(w.hub.shares))
    await w.send(scene.a, "share_decline", share=share)
    assert last_state(drain(scene.b))["reason"] == S.DECLINED


# --- transfers: a conversation becomes another agent's -----------------------------------


async def test_transfer_hands_the_conversation_and_its_visibility_over(scene: Scene) -> None:
    w = scene.w
    # Bob cannot take it over by himself, nor give Alice's conversation away.
    assert await w.refused(scene.b, "conversation_transfer", conversation=scene.conv, agent=2) == (
        P.FORBIDDEN
    )
    await w.send(scene.a, "conversation_transfer", conversation=scene.conv, agent=scene.bob.id)
    bare = of(drain(scene.a), "conversation_update")[-1]["item"]
    assert bare["agent_id"] == scene.bob.id and bare["last_text"] == ""  # Alice drops it
    got = drain(scene.b)
    assert "transferred the conversation to Bob" in of(got, "chat")[-1]["message"]["text"]
    assert of(got, "conversation_update")[-1]["item"]["last_text"]
    # Now Bob's, not Alice's: she cannot read, write or share in it any more.
    assert await w.refused(scene.a, "conversation_open", conversation=scene.conv) == P.FORBIDDEN
    assert await w.refused(scene.a, "share_request", conversation=scene.conv) == P.FORBIDDEN
    await w.send(scene.b, "conversation_open", conversation=scene.conv)
    assert of(drain(scene.b), "history")
    await w.send(scene.b, "share_request", conversation=scene.conv)
    assert last_state(drain(scene.b))["state"] == S.REQUESTED
    # Not while a share runs in it, not to nobody, not to its holder.
    for agent, code in (
        (scene.alice.id, P.CONFLICT),
        (999, P.NOT_FOUND),
        (scene.bob.id, P.CONFLICT),
    ):
        assert (
            await w.refused(scene.b, "conversation_transfer", conversation=scene.conv, agent=agent)
            == code
        )
    conv = await w.store.get_conversation(scene.conv)
    assert conv is not None and conv.agent_id == scene.bob.id


async def test_waiting_conversation_cannot_be_transferred(world: World) -> None:
    alice = await world.user("Alice")
    bob = await world.user("Bob")
    a = await world.agent(alice)
    v = await world.visitor()
    await world.chat(v, "Hello", "m1")
    conv = drain(v)[-1]["conversation"]
    assert await world.refused(a, "conversation_transfer", conversation=conv, agent=bob.id) == (
        P.OUT_OF_ORDER
    )


async def test_disabling_the_colleague_who_shares_ends_the_share(scene: Scene) -> None:
    w = scene.w
    admin = await w.user("Ada", role="admin")
    await w.send(scene.a, "colleague_share_request", agent=scene.bob.id)
    share = last_state(drain(scene.a))["share"]
    await w.send(scene.b, "share_accept", share=share)
    sharer = await w.sharer(share)
    await w.send(sharer, "share_media", share=share, surface="monitor")
    drain(sharer)
    await accounts.set_disabled(w.store, w.hub, admin, scene.bob.id, True)
    assert last_state(drain(sharer))["reason"] == S.SHARER_LEFT
    assert last_state(drain(scene.a))["state"] == S.ENDED
    row = await w.store.get_share(share)
    assert row is not None and row.ended_by == "admin"
