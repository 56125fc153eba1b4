"""Several Coview processes serving one deployment: one hub, every process a gateway.

Every process accepts WebSockets: authentication, decoding, validation, rate limits and
liveness stay with the socket (``coview_server.signaling``). Exactly one process -- the
holder of the broker lease ``hub`` -- runs the :class:`~coview_server.hub.Hub`. A gateway
forwards each socket's join, messages and leave to it on the channel ``hub:in``; the hub
sees those sockets as :class:`RemoteConn` objects, whose ``send`` and ``close`` travel
back on the gateway's own channel ``node:<id>``. HTTP actions that need the hub (a phone
key typed at ``/share``, an admin signing an agent out or changing a permission) are
requests on ``hub:rpc``. The leader's own sockets take the same path, so there is one
way through.

Why one hub rather than shares spread over processes: the hub's work per message is small
next to the sockets' (TLS, framing, JSON, validation), and one owner keeps every rule of
the share machine in one place. Ordering holds: everything one gateway publishes reaches
the hub in order.

Failover is the restart path (docs/protocol.md, Reconnect and resume): a leader that dies
stops renewing its lease; when it runs out another process takes it, recovers the open
shares from the database with their parties away, and announces itself on ``hub:leader``.
Every gateway then closes the sockets it had registered with the old leader; the pages
reconnect on their backoff, the share windows resume with their credentials, and media
keeps flowing between the browsers meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from coview import protocol as P

from .broker import Broker, BrokerError, Lease, Rpc
from .hub import Conn, Hub, HubError, run_clock
from .keys import KeyClaim
from .store import Store

log = logging.getLogger("coview.cluster")

HUB_LEASE = "hub"
HUB_IN = "hub:in"
HUB_RPC = "hub:rpc"
HUB_LEADER = "hub:leader"
#: Seconds a leader's lease lasts without renewal: how long a dead leader's sockets wait.
LEASE_TTL_S = 6.0
#: Seconds a gateway holds a socket that no hub has heard of (a failover in progress)
#: before it gives up and closes it; and the most it queues for one meanwhile.
ORPHAN_HOLD_S = 30.0
ORPHAN_MAX_FRAMES = 256
RPC_TIMEOUT_S = 10.0


def node_channel(node: str) -> str:
    return "node:" + node


def _encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass(eq=False)
class RemoteConn(Conn):
    """The hub's handle on a socket that another process (or this one's gateway) holds."""

    node: str = ""
    publish: Callable[[str, bytes], None] | None = field(default=None, repr=False)

    def send(self, msg: dict[str, Any]) -> None:
        if not self.closed and self.publish is not None:
            self.publish(
                node_channel(self.node), _encode({"op": "send", "conn": self.id, "msg": msg})
            )

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.publish is not None:
            frame = {"op": "close", "conn": self.id, "evicted": self.evicted}
            self.publish(node_channel(self.node), _encode(frame))


class Cluster:
    """This process's part in a deployment of several: a gateway always, the hub's host
    while it holds the lease. Stands where the :class:`Hub` stands for the endpoints."""

    def __init__(
        self,
        broker: Broker,
        store: Store,
        make_hub: Callable[[], Hub],
        on_lead: Callable[[Hub], Any] | None = None,
        lease_ttl_s: float = LEASE_TTL_S,
    ) -> None:
        self.broker = broker
        self.store = store
        self.make_hub = make_hub
        #: Called with the hub each time this process becomes the leader (the relay
        #: attaches itself there: media through the server goes to the leader).
        self.on_lead = on_lead
        self.lease_ttl_s = lease_ttl_s
        self.node = broker.node_id
        self.rpc = Rpc(broker)
        #: Sockets this gateway holds, by conn id.
        self.local: dict[str, Conn] = {}
        #: The hub's node as last announced (None: none announced since we started).
        self.leader: str | None = None
        #: Per socket: the leader it joined under, once a hub heard its join.
        self._joined: dict[str, str | None] = {}
        #: Sockets whose join no hub heard (no leader for now), with what they sent since:
        #: replayed to the next hub as it announces itself, so a page that connects during
        #: a failover is served then instead of being closed and backing off.
        self._orphans: dict[str, list[dict[str, Any]]] = {}
        #: The hub while this process leads, else None.
        self.hub: Hub | None = None
        self.leading = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    # -- life -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.rpc.start()
        inbox = await self.broker.subscribe(node_channel(self.node))
        leaders = await self.broker.subscribe(HUB_LEADER)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._deliver(inbox), name="cluster inbox"),
            loop.create_task(self._watch_leaders(leaders), name="cluster leaders"),
            loop.create_task(self._lead(), name="cluster lead"),
        ]

    async def close(self) -> None:
        """Stop: a leader ends what cannot resume and gives its lease up at once."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, BrokerError):
                await task
        with contextlib.suppress(BrokerError):  # a broker that died already
            await self.rpc.close()

    # -- the gateway ------------------------------------------------------------------------

    async def join(self, conn: Conn) -> None:
        self.local[conn.id] = conn
        described = {
            "id": conn.id,
            "role": conn.role,
            "user": conn.user.id if conn.user is not None else None,
            "visitor_id": conn.visitor_id,
            "share_id": conn.share_id,
            "resumed": conn.resumed,
        }
        await self._to_hub(conn, {"op": "join", "node": self.node, "conn": described})

    async def handle(self, conn: Conn, msg: dict[str, Any]) -> None:
        await self._to_hub(conn, {"op": "msg", "conn": conn.id, "msg": msg})

    async def leave(self, conn: Conn, left: bool = True) -> None:
        self._joined.pop(conn.id, None)
        if self._orphans.pop(conn.id, None) is not None:
            self.local.pop(conn.id, None)
            return  # no hub ever knew it
        if self.local.pop(conn.id, None) is not None:
            await self._to_hub(None, {"op": "leave", "conn": conn.id, "left": left})

    async def _to_hub(self, conn: Conn | None, frame: dict[str, Any]) -> None:
        if conn is not None and conn.id in self._orphans:
            held = self._orphans[conn.id]
            held.append(frame)
            if len(held) > ORPHAN_MAX_FRAMES:
                self._drop_orphan(conn.id)
            return
        heard = await self._publish(frame)
        if conn is None or heard:
            if conn is not None and frame["op"] == "join":
                self._joined[conn.id] = self.leader
            return
        if frame["op"] == "join":
            # No hub right now (a failover): hold the socket for the next one.
            self._orphans[conn.id] = [frame]
            asyncio.get_running_loop().call_later(ORPHAN_HOLD_S, self._drop_orphan, conn.id)
            return
        # The hub that knew this socket is gone: the page must resume with the next one.
        log.info("no hub to take %s from %s: closing it", frame["op"], conn.id)
        self._close_local(conn)

    async def _publish(self, frame: dict[str, Any]) -> int:
        try:
            return await self.broker.publish(HUB_IN, _encode(frame))
        except BrokerError:
            return 0

    def _close_local(self, conn: Conn) -> None:
        self.local.pop(conn.id, None)
        self._joined.pop(conn.id, None)
        self._orphans.pop(conn.id, None)
        conn.close()

    def _drop_orphan(self, conn_id: str) -> None:
        conn = self.local.get(conn_id)
        if conn is not None and conn_id in self._orphans:
            log.info("no hub took %s in time: closing it", conn_id)
            self._close_local(conn)

    async def _deliver(self, inbox: Any) -> None:
        async for data in inbox:
            try:
                frame = json.loads(data)
                conn = self.local.get(frame["conn"])
                if conn is None:
                    continue
                if frame["op"] == "send":
                    if frame["msg"].get("type") == "error":
                        conn.refused += 1
                    conn.send(frame["msg"])
                elif frame["op"] == "close":
                    conn.evicted = bool(frame.get("evicted"))
                    self._close_local(conn)
            except (ValueError, KeyError, TypeError):
                log.warning("dropped a malformed frame for this gateway")

    async def _watch_leaders(self, leaders: Any) -> None:
        async for data in leaders:
            leader = data.decode(errors="replace")
            self.leader = leader
            stale = [
                c
                for c in self.local.values()
                if c.id not in self._orphans and self._joined.get(c.id) != leader
            ]
            log.info(
                "hub now on %s: closing %d sockets to rejoin, handing it %d held",
                leader,
                len(stale),
                len(self._orphans),
            )
            # Registered with a hub that is gone: the pages resume with this one.
            for conn in stale:
                self._close_local(conn)
            # Never heard by any hub: their frames go to this one, in order.
            for conn_id, frames in list(self._orphans.items()):
                self._orphans.pop(conn_id, None)
                for i, frame in enumerate(frames):
                    if not await self._publish(frame):
                        # Gone again already: keep what is left for the next one.
                        self._orphans[conn_id] = frames[i:]
                        break
                else:
                    self._joined[conn_id] = leader

    # -- HTTP actions that need the hub ------------------------------------------------------

    async def claim_key(
        self, key: str, address: str, proof: str | None = None, user_agent: str = ""
    ) -> KeyClaim:
        args = {"key": key, "address": address, "proof": proof, "user_agent": user_agent}
        return KeyClaim(**await self._call("claim_key", args))

    async def disconnect_user(self, user_id: int, text: str) -> None:
        await self._call("disconnect_user", {"user_id": user_id, "text": text})

    async def push_permissions(self, user_id: int | None) -> None:
        await self._call("push_permissions", {"user_id": user_id})

    async def _call(self, op: str, args: dict[str, Any]) -> Any:
        body = await self.rpc.request(HUB_RPC, _encode({"op": op, "args": args}), RPC_TIMEOUT_S)
        return json.loads(body)

    # -- the leader --------------------------------------------------------------------------

    async def _lead(self) -> None:
        while not self._closing:
            try:
                lease = await self.broker.acquire(HUB_LEASE, self.lease_ttl_s, wait_s=60.0)
            except BrokerError as exc:
                log.warning("cannot reach the broker for the hub lease: %s", exc)
                await asyncio.sleep(1.0)  # the broker reconnects by itself; try again then
                continue
            if lease is None:
                continue
            try:
                await self._run_hub(lease)
            finally:
                await lease.release()

    async def _run_hub(self, lease: Lease) -> None:
        hub = self.make_hub()
        await hub.recover()
        remote: dict[str, Conn] = {}
        inbox = await self.broker.subscribe(HUB_IN)
        service = await self.rpc.serve(HUB_RPC, lambda body: self._answer(hub, body))
        self.hub = hub
        if self.on_lead is not None:
            await self.on_lead(hub)
        self.leading.set()
        log.info("this process (%s) runs the hub", self.node)
        await self.broker.publish(HUB_LEADER, self.node.encode())
        loop = asyncio.get_running_loop()
        work = [
            loop.create_task(self._serve(hub, inbox, remote)),
            loop.create_task(run_clock(hub)),
            loop.create_task(lease.lost.wait()),
        ]
        try:
            await asyncio.wait(work, return_when=asyncio.FIRST_COMPLETED)
            if lease.lost.is_set():
                log.error("lost the hub lease (%s): another process takes over", lease.reason)
        finally:
            for task in work:
                task.cancel()
            for task in work:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self.leading.clear()
            self.hub = None
            await service.close()
            await inbox.close()
            if not lease.lost.is_set():
                await hub.shutdown()  # stopping cleanly: resumable shares stay open
            for conn in list(remote.values()):
                conn.closed = True  # never publish to gateways for a hub that is gone

    async def _serve(self, hub: Hub, inbox: Any, remote: dict[str, Conn]) -> None:
        publish = self.broker.publish_nowait
        async for data in inbox:
            try:
                frame = json.loads(data)
                op = frame["op"]
                if op == "join":
                    joined = await self._remote_conn(frame, publish)
                    remote[joined.id] = joined
                    await hub.join(joined)
                elif op == "msg":
                    conn: Conn = remote[frame["conn"]]
                    try:
                        # Decoded and validated by the gateway that holds the socket.
                        await hub.handle(conn, frame["msg"])
                    except HubError as exc:
                        conn.send(P.error(exc.code, exc.text, fatal=exc.fatal))
                        if exc.fatal:
                            conn.close()
                elif op == "leave":
                    conn = remote.pop(frame["conn"])
                    await hub.leave(conn, left=bool(frame["left"]))
            except (ValueError, KeyError, TypeError):
                log.warning("dropped a malformed or unknown frame for the hub")
            except Exception:  # a bug costs one frame, never the hub
                log.exception("hub failed on a frame from a gateway")

    async def _remote_conn(
        self, frame: dict[str, Any], publish: Callable[[str, bytes], None]
    ) -> RemoteConn:
        d = frame["conn"]
        user = await self.store.get_user(d["user"]) if d.get("user") is not None else None
        return RemoteConn(
            id=str(d["id"]),
            role=str(d["role"]),
            user=user,
            visitor_id=d.get("visitor_id"),
            share_id=d.get("share_id"),
            resumed=bool(d.get("resumed")),
            node=str(frame["node"]),
            publish=publish,
        )

    async def _answer(self, hub: Hub, body: bytes) -> bytes:
        request = json.loads(body)
        args = request["args"]
        op = request["op"]
        if op == "claim_key":
            return _encode(asdict(await hub.claim_key(**args)))
        if op == "disconnect_user":
            await hub.disconnect_user(int(args["user_id"]), str(args["text"]))
        elif op == "push_permissions":
            await hub.push_permissions(args["user_id"])
        else:
            raise ValueError("unknown hub request " + str(op))
        return b"null"
