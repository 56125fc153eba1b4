"""Two processes of one deployment, in one: each a Cluster with its own broker on a shared
in-process bus and its own Store on one database. A visitor on one and an agent on the
other chat and share; the leader's death hands the hub to the other, whose sockets are
closed so their pages rejoin; HTTP actions reach the hub from either process.

"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_hub import _fast_hashing  # noqa: F401 - autouse: one real scrypt hash for all

from coview import protocol as P, share as S
from coview_server import keys
from coview_server.broker import Broker, InProcessBroker, InProcessBus
from coview_server.cluster import Cluster
from coview_server.hub import Conn, Hub, new_resume
from coview_server.settings import Settings
from coview_server.store import Store
from coview_server.tokens import new_token

pytestmark = pytest.mark.anyio

DESKTOP_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126"
SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"


@dataclass
class Node:
    cluster: Cluster
    store: Store
    broker: Broker


async def until(conn: Conn, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first message queued for ``conn`` that ``pred`` accepts (others are skipped)."""
    async with asyncio.timeout(5.0):
        while True:
            msg = await conn.queue.get()
            assert msg is not None, "closed while waiting"
            P.validate(msg, P.S2C)
            if pred(msg):
                return msg


def of(mtype: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["type"] == mtype and all(m.get(k) == v for k, v in fields.items())


async def closed(conn: Conn) -> None:
    async with asyncio.timeout(10.0):
        while not (conn.closed and conn.queue.empty()):
            msg = await conn.queue.get()
            if msg is None:
                return


class Deployment:
    def __init__(self, tmp: Path, make_broker: Callable[[str], Broker]) -> None:
        self.url = "sqlite+aiosqlite:///" + str(tmp / "db.sqlite")
        self.make_broker = make_broker
        self.settings = Settings.load(environ={})
        self.nodes: list[Node] = []

    async def node(self, name: str) -> Node:
        store = await Store.open(self.url)
        broker = self.make_broker(name)
        await broker.start()
        cluster = Cluster(broker, store, lambda: Hub(store, self.settings), lease_ttl_s=0.6)
        await cluster.start()
        node = Node(cluster, store, broker)
        self.nodes.append(node)
        return node

    async def leader(self) -> Node:
        async with asyncio.timeout(10):
            while True:
                for node in self.nodes:
                    if node.cluster.leading.is_set():
                        return node
                await asyncio.sleep(0.01)  # polling a flag another task sets

    async def close(self) -> None:
        for node in self.nodes:
            await node.cluster.close()
            await node.broker.close()
            await node.store.close()


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[Deployment]:
    bus = InProcessBus()
    d = Deployment(tmp_path, lambda name: InProcessBroker(bus, node_id=name))
    try:
        yield d
    finally:
        await d.close()


async def _visitor(node: Node) -> Conn:
    row, _ = await node.store.create_visitor()
    conn = Conn(id=new_token(16), role="visitor", visitor_id=row.id)
    await node.cluster.join(conn)
    return conn


async def _agent(node: Node, email: str) -> Conn:
    user = await node.store.get_user_by_email(email)
    if user is None:
        user = await node.store.create_user(email, email.split("@")[0].title(), "pw")
    conn = Conn(id=new_token(16), role="agent", user=user)
    await node.cluster.join(conn)
    return conn


async def _share_across(d: Deployment) -> tuple[Node, Node, Conn, Conn, Conn, str, str]:
    a, b = await d.node("a"), await d.node("b")
    await d.leader()
    visitor = await _visitor(a)
    agent = await _agent(b, "alice@example.com")
    await until(agent, of("conversations"))
    await a.cluster.handle(
        visitor, P.make("visitor_info", page="/shop", user_agent=DESKTOP_UA, can_share=True)
    )
    await a.cluster.handle(visitor, P.make("chat_send", text="my cart is empty", client_id="m1"))
    chat = await until(agent, of("chat"))  # from process a to an agent on process b
    conv = chat["conversation"]
    assert chat["message"]["text"] == "my cart is empty"
    await b.cluster.handle(agent, P.make("conversation_take", conversation=conv))
    await b.cluster.handle(agent, P.make("chat_send", conversation=conv, text="hi", client_id="r"))
    await until(visitor, lambda m: m["type"] == "chat" and m["message"]["sender"] == "agent")
    await b.cluster.handle(agent, P.make("share_request", conversation=conv))
    invite = await until(visitor, of("share_invite"))
    share = invite["share"]
    # As the endpoint admits the window: the token spent, a resume credential minted.
    await new_resume(a.store, share)
    sharer = Conn(id=new_token(16), role="sharer", share_id=share)
    await a.cluster.join(sharer)
    await until(agent, of("share_state", state=S.WAITING))
    await b.cluster.handle(agent, P.make("share_watch", share=share))
    pc = (await until(sharer, of("peer", role="offerer")))["pc"]
    assert (await until(agent, of("peer")))["pc"] == pc
    await a.cluster.handle(sharer, P.make("share_media", share=share, surface="monitor"))
    await until(agent, of("share_state", state=S.LIVE))
    await a.cluster.handle(sharer, P.make("offer", pc=pc, sdp=SDP))
    assert (await until(agent, of("offer")))["sdp"] == SDP
    await b.cluster.handle(agent, P.make("answer", pc=pc, sdp=SDP))
    await until(sharer, of("answer", pc=pc))
    return a, b, visitor, agent, sharer, share, pc


async def test_a_visitor_on_one_process_shares_with_an_agent_on_another(
    deployment: Deployment,
) -> None:
    a, b, visitor, agent, sharer, share, _pc = await _share_across(deployment)
    await a.cluster.handle(sharer, P.make("share_stop", share=share))
    ended = await until(agent, of("share_state", state=S.ENDED))
    assert ended["reason"] == S.STOPPED_BY_SHARER
    row = await b.store.get_share(share)
    assert row is not None and row.end_reason == S.STOPPED_BY_SHARER


async def test_refusals_come_back_to_the_socket_that_sent_them(deployment: Deployment) -> None:
    a, b, visitor, agent, sharer, share, pc = await _share_across(deployment)
    await a.cluster.handle(visitor, P.make("share_watch", share=share))  # not an agent's
    err = await until(visitor, of("error"))
    assert err["code"] == P.FORBIDDEN and not err.get("fatal")
    assert visitor.refused == 1  # counted towards the endpoint's abuse limit
    await a.cluster.handle(sharer, P.make("answer", pc=pc, sdp=SDP))  # the offerer answering
    assert (await until(sharer, of("error")))["code"] == P.OUT_OF_ORDER


async def test_a_socket_leaving_on_one_process_is_seen_by_the_hub(deployment: Deployment) -> None:
    a, b, visitor, agent, sharer, share, _pc = await _share_across(deployment)
    await a.cluster.leave(sharer, left=True)  # the window was closed
    assert (await until(agent, of("share_state", state=S.ENDED)))["reason"] == S.SHARER_LEFT


async def test_http_actions_reach_the_hub_from_any_process(deployment: Deployment) -> None:
    a, b, visitor, agent, sharer, share, _pc = await _share_across(deployment)
    follower = b if (await deployment.leader()) is a else a
    claim = await follower.cluster.claim_key("123456", "127.0.0.1")
    assert claim.outcome == keys.WRONG
    assert agent.user is not None
    await follower.cluster.disconnect_user(agent.user.id, "Your account was disabled.")
    err = await until(agent, of("error"))
    assert err["code"] == P.UNAUTHORIZED and err["fatal"] is True
    await closed(agent)
    assert agent.evicted


async def test_the_leader_dying_hands_the_hub_over_and_pages_rejoin(
    deployment: Deployment,
) -> None:
    a, b, visitor, agent, sharer, share, pc = await _share_across(deployment)
    leader = await deployment.leader()
    survivor = b if leader is a else a
    await leader.broker.abort()  # as a crashed process: the lease is not released
    async with asyncio.timeout(10):
        await survivor.cluster.leading.wait()
    # The survivor's own sockets were registered with the dead hub: closed, to rejoin.
    mine = [c for c in (visitor, agent, sharer) if c.id not in leader.cluster.local]
    assert mine
    for conn in mine:
        await closed(conn)
    # The share outlived it: open in the database, resumable by its window.
    hub = survivor.cluster.hub
    assert hub is not None and share in hub.shares
    assert sorted(hub.shares[share].session.away) == ["sharer", "viewer"]
    agent2 = await _agent(survivor, "alice@example.com")
    state = await until(agent2, of("share_state", share=share))
    assert state["state"] == S.LIVE and state["away"] == ["sharer"]


async def test_a_socket_that_connects_during_a_failover_is_held_for_the_next_hub(
    deployment: Deployment,
) -> None:
    """No hub hears it: the gateway keeps it (and what it sends) instead of closing it,
    and hands both to the new hub when it announces itself."""
    a, b, visitor, agent, sharer, share, pc = await _share_across(deployment)
    leader = await deployment.leader()
    survivor = b if leader is a else a
    await leader.broker.abort()
    late = await _visitor(survivor)  # while the lease of the dead hub still runs
    assert not survivor.cluster.leading.is_set() and late.id in survivor.cluster._orphans
    await survivor.cluster.handle(late, P.make("chat_send", text="anyone?", client_id="z1"))
    async with asyncio.timeout(10):
        await survivor.cluster.leading.wait()
    echo = await until(late, of("chat"))
    assert echo["message"]["text"] == "anyone?" and not late.closed
    assert late.id not in survivor.cluster._orphans
