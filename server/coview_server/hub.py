"""The signaling hub: who is connected, who may do what, and where each message goes.

Every message a socket sends arrives here already decoded and validated by
``coview.protocol``; the hub authorises it against the sender's role and membership,
changes stored state through :class:`~coview_server.store.Store`, drives each share's
:class:`coview.share.ShareSession`, and queues messages for the right sockets.  It knows
nothing of WebSockets: the signaling endpoint gives it :class:`Conn` objects, which
tests can create directly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from coview import protocol as P, share as S, useragent
from coview.negotiation import ANSWERER, OFFERER

from . import accounts, keys
from .keys import KeyClaim, KeyRing, PendingKey
from .security import AddressLimiter
from .settings import Settings
from .store import ConversationRow, MessageRow, ShareRow, Store, StoreError, UserRow
from .tokens import new_token, token_hash

log = logging.getLogger("coview.hub")

SEND_QUEUE_LIMIT = 512


class HubError(Exception):
    """Refuse one message; the sender gets an ``error`` with this code."""

    def __init__(self, code: str, text: str, fatal: bool = False) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.fatal = fatal


@dataclass(eq=False)
class Conn:
    """One authenticated socket, as the hub sees it."""

    id: str
    role: str
    user: UserRow | None = None
    visitor_id: str | None = None
    share_id: str | None = None
    queue: asyncio.Queue[dict[str, Any] | None] = field(
        default_factory=lambda: asyncio.Queue(SEND_QUEUE_LIMIT)
    )
    closed: bool = False
    #: Closed by the server for its account (disabled, password reset): the endpoint
    #: closes the socket as soon as the last message is out.
    evicted: bool = False
    #: A share window that came back with its resume credential (not its token).
    resumed: bool = False
    #: Refusals a hub in another process sent this socket (``coview_server.cluster``):
    #: they count towards the endpoint's abuse limit like its own.
    refused: int = 0

    def send(self, msg: dict[str, Any]) -> None:
        if self.closed:
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s -> %s %s %s",
                self.role,
                self.id,
                msg["type"],
                msg.get("state") or "",
                msg.get("pc") or msg.get("code") or "",
            )
        try:
            self.queue.put_nowait(msg)
        except asyncio.QueueFull:
            # A peer that does not read cannot be allowed to grow our memory: drop it.
            log.warning("closing %s: send queue full", self.id)
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.queue.full():  # a peer that stopped reading loses what it did not read
                while not self.queue.empty():
                    self.queue.get_nowait()
            self.queue.put_nowait(None)  # the writer sends what is queued, then stops


class HubFront(Protocol):
    """What the endpoints need of the hub: :class:`Hub` itself in one process, a
    :class:`~coview_server.cluster.Cluster` gateway when several processes serve."""

    async def join(self, conn: Conn) -> None: ...

    async def handle(self, conn: Conn, msg: dict[str, Any]) -> None: ...

    async def leave(self, conn: Conn, left: bool = True) -> None: ...

    async def claim_key(
        self, key: str, address: str, proof: str | None = None, user_agent: str = ""
    ) -> KeyClaim: ...

    async def disconnect_user(self, user_id: int, text: str) -> None: ...

    async def push_permissions(self, user_id: int | None) -> None: ...


async def new_resume(store: Store, share_id: str) -> str:
    """A fresh resume credential for a share window, replacing its last one (only the
    hash is stored: docs/protocol.md, Reconnect and resume)."""
    credential = new_token()
    await store.update_share(share_id, resume_hash=token_hash(credential))
    return credential


@dataclass(eq=False)
class PeerLink:
    """One peer connection: sharer to viewer, or through the relay (``via`` relay)."""

    id: str
    offerer: Conn
    answerer: Conn
    via: str = "direct"
    offer_pending: bool = False
    offered: bool = False
    #: When the first offer went through: the relay fallback deadline counts from here.
    offered_at: float | None = None
    #: The answerer reported ICE connected (``peer_status``).
    connected: bool = False
    #: When its ends last got ICE servers (their TURN credentials' age).
    ice_at: float = 0.0
    #: The viewing agent's user id: who may claim this link back after a reconnect.
    viewer: int | None = None

    def other(self, conn: Conn) -> Conn | None:
        if conn is self.offerer:
            return self.answerer
        if conn is self.answerer:
            return self.offerer
        return None


@dataclass(eq=False)
class LiveShare:
    row: ShareRow
    session: S.ShareSession
    visitor_id: str
    sharer: Conn | None = None
    links: dict[str, PeerLink] = field(default_factory=dict)  # by pc id
    note: str | None = None
    path: str | None = None
    #: The popup's token, kept only while the invitation may still be delivered.
    token: str | None = None
    #: Viewers who asked to watch before the share window connected.
    pending_viewers: list[Conn] = field(default_factory=list)
    #: Media goes through the server's relay (policy, or the direct path failed).
    relayed: bool = False
    #: A phone share's key, while the caller has not entered it (``coview_server.keys``).
    key: PendingKey | None = None
    #: An internal share: the user id of the colleague asked to show their screen.
    colleague: int | None = None
    #: Relayed peer connections that a restart killed: their ends are told when they return.
    stale: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.row.id

    def viewers(self) -> list[Conn]:
        return [link.answerer for link in self.links.values() if link.answerer.role != "relay"]


class Hub:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        ice_servers: Callable[[Conn], list[dict[str, Any]]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        self.ice_servers = ice_servers or (lambda conn: list(settings.ice_servers))
        self.clock = clock
        self.wall = wall
        self.conns: dict[str, Conn] = {}
        self.shares: dict[str, LiveShare] = {}
        #: The media relay's end of the protocol (``RelayBridge``), when it runs.
        self.relay: Conn | None = None
        #: Phone share keys, minted and checked under a secret of this process alone.
        self.keyring = KeyRing(settings.share_key_digits)
        self.key_limiter = AddressLimiter(keys.ADDRESS_WINDOW_S, settings.share_key_address_limit)
        self._lock = asyncio.Lock()
        #: Shares whose peer links changed since they were last written to the store.
        self._dirty: set[str] = set()

    # -- connection life ----------------------------------------------------------------

    async def recover(self) -> None:
        """Bring back the shares a stop left open, with both parties away.

        A share that was waiting for a pick or live, and whose window holds a resume
        credential, waits ``resume_grace_s`` for its ends to reconnect (docs/protocol.md,
        Reconnect and resume); any other ends honestly, since its invitation or token
        lived only in the stopped process.
        """
        now = self.clock()
        for row in await self.store.open_shares():
            conv = await self.store.get_conversation(row.conversation_id)
            if conv is None or row.state not in (S.WAITING, S.LIVE) or row.resume_hash is None:
                await self.store.update_share(
                    row.id,
                    state=S.ENDED,
                    ended_at=self.wall(),
                    end_reason=S.SERVER_SHUTDOWN,
                    ended_by="server",
                )
                await self.store.add_message(
                    row.conversation_id, "system", _END_TEXT[S.SERVER_SHUTDOWN], now=self.wall()
                )
                continue
            session = self._session(now, row.state)
            session.surface = row.surface
            live = LiveShare(row=row, session=session, visitor_id=conv.visitor_id)
            live.path = row.path
            live.relayed = row.path == "relay"
            if conv.channel == "internal":
                live.colleague = conv.colleague_id
            for entry in _links_of(row):
                if entry["via"] != "direct":
                    live.stale.append(entry["pc"])  # the relay's end died with its process
                    continue
                live.links[entry["pc"]] = PeerLink(
                    id=entry["pc"],
                    offerer=_gone("sharer"),
                    answerer=_gone("agent"),
                    offered=True,
                    offered_at=now,
                    connected=True,
                    ice_at=now,
                    viewer=entry["viewer"],
                )
            session.lost(S.SHARER, S.SHARER_LOST, now)
            session.lost(S.VIEWER, S.REQUESTER_LEFT, now)
            session.actions()
            self.shares[row.id] = live
            log.info("share %s: resumable for %.0f s", row.id, self.settings.resume_grace_s)

    def _session(
        self, now: float, state: str = S.REQUESTED, request_timeout: float | None = None
    ) -> S.ShareSession:
        session = S.ShareSession(
            now,
            state=state,
            request_timeout=self.settings.share_request_timeout_s
            if request_timeout is None
            else request_timeout,
            open_timeout=self.settings.share_open_timeout_s,
            pick_timeout=self.settings.share_pick_timeout_s,
            resume_timeout=self.settings.resume_grace_s,
        )
        session.actions()
        return session

    async def new_resume(self, share_id: str) -> str:
        return await new_resume(self.store, share_id)

    def conns_where(self, pred: Callable[[Conn], bool]) -> list[Conn]:
        return [c for c in self.conns.values() if pred(c)]

    def visitor_conns(self, visitor_id: str) -> list[Conn]:
        return self.conns_where(lambda c: c.role == "visitor" and c.visitor_id == visitor_id)

    def agent_conns(self, user_id: int | None = None) -> list[Conn]:
        return self.conns_where(
            lambda c: (
                c.role == "agent"
                and c.user is not None
                and (user_id is None or c.user.id == user_id)
            )
        )

    async def join(self, conn: Conn) -> None:
        """A socket finished its handshake (already authenticated by the endpoint)."""
        async with self._lock:
            self.conns[conn.id] = conn
            if conn.role == "agent":
                await self._send_permissions(conn)
                await self._send_conversations(conn)
                for live in list(self.shares.values()):
                    if conn.user is not None and live.row.requested_by == conn.user.id:
                        live.session.found(S.VIEWER, self.clock())
                        await self._apply(live, ended_by="agent")
                        conn.send(self._state_msg(live))
                    elif conn.user is not None and live.colleague == conn.user.id:
                        self._send_invite_or_state(conn, live)
            elif conn.role == "visitor" and conn.visitor_id is not None:
                await self._visitor_joined(conn)
            elif conn.role == "sharer":
                await self._sharer_joined(conn)

    async def leave(self, conn: Conn, left: bool = True) -> None:
        """A socket ended. ``left``: the page closed it (window closed, reloaded); False:
        its connection was lost, and the page may come back (Reconnect and resume)."""
        async with self._lock:
            self.conns.pop(conn.id, None)
            conn.close()
            now = self.clock()
            for live in list(self.shares.values()):
                if conn in live.pending_viewers:
                    live.pending_viewers.remove(conn)
                if live.sharer is conn:
                    live.sharer = None
                    if left or live.row.resume_hash is None:
                        await self._end(live, S.SHARER_LEFT, "sharer", now)
                    else:
                        live.session.lost(S.SHARER, S.SHARER_LOST, now)
                        await self._apply(live, ended_by="sharer")
                    continue
                was_viewer = False
                for link in list(live.links.values()):
                    if link.answerer is conn:
                        was_viewer = True
                        if left:  # the page is gone, and its peer connection with it
                            self._drop_link(live, link)
                if conn.role == "agent" and conn.user is not None:
                    # A reloaded console cannot be told from a closed one: wait for it.
                    if live.row.requested_by == conn.user.id and not self.agent_conns(conn.user.id):
                        live.session.lost(S.VIEWER, S.REQUESTER_LEFT, now)
                    elif was_viewer and live.session.state == S.LIVE and not self._viewers(live):
                        live.session.lost(S.VIEWER, S.VIEWER_LEFT, now)
                    await self._apply(live, ended_by="agent")
            if conn.role == "visitor" and conn.visitor_id is not None:
                await self._push_visitor_record(conn.visitor_id)
            await self._save_links()

    async def tick(self) -> None:
        """Run share deadlines; called a few times a second by the app."""
        async with self._lock:
            now = self.clock()
            for live in list(self.shares.values()):
                live.session.tick(now)
                await self._apply(
                    live, ended_by=_ENDED_BY.get(live.session.reason or "", "timeout")
                )
            self._refresh_ice(now)
            limit = self.settings.relay_fallback_s
            for live in list(self.shares.values()):
                if live.relayed:
                    continue
                for link in live.links.values():
                    started = link.offered_at
                    if started is not None and not link.connected and now - started >= limit:
                        await self._fall_back(live, f"no media within {limit:.0f} s")
                        break

    async def shutdown(self) -> None:
        """Stopping: shares the next start can resume stay open in the store (their
        sockets were closed with 1012, so every page reconnects); the others end now."""
        async with self._lock:
            now = self.clock()
            await self._save_links()
            for live in list(self.shares.values()):
                if live.session.state not in (S.WAITING, S.LIVE) or live.row.resume_hash is None:
                    await self._end(live, S.SERVER_SHUTDOWN, "server", now)

    # -- messages -----------------------------------------------------------------------

    async def handle(self, conn: Conn, msg: dict[str, Any]) -> None:
        """Act on one validated message; refusals become ``error`` messages."""
        mtype = msg["type"]
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s <- %s %s", conn.role, conn.id, mtype, msg.get("share") or msg.get("pc")
            )
        handler = self._handlers.get((conn.role, mtype)) or self._handlers.get(("*", mtype))
        if handler is None:
            raise HubError(P.FORBIDDEN, f"a {conn.role} may not send '{mtype}'")
        async with self._lock:
            try:
                await handler(self, conn, msg)
            finally:
                await self._save_links()

    async def _on_ping(self, conn: Conn, msg: dict[str, Any]) -> None:
        conn.send(P.make("pong", t=msg.get("t")))

    async def _on_pong(self, conn: Conn, msg: dict[str, Any]) -> None:
        return None

    # visitor ---------------------------------------------------------------------------

    async def _visitor_joined(self, conn: Conn) -> None:
        assert conn.visitor_id is not None
        conv = await self.store.current_conversation(conn.visitor_id)
        if conv is not None:
            conn.send(P.make("history", conversation=conv.id, messages=await self._history(conv)))
            for live in self.shares.values():
                if live.visitor_id == conn.visitor_id:
                    self._send_invite_or_state(conn, live)

    async def _on_visitor_info(self, conn: Conn, msg: dict[str, Any]) -> None:
        assert conn.visitor_id is not None
        ua = msg["user_agent"]
        info = useragent.parse(ua)
        can_share, reason = useragent.share_verdict(ua, msg["can_share"])
        if not can_share and reason is None:  # pragma: no cover - verdict always explains
            reason = "Screen sharing is unavailable."
        if msg["can_share"] is False and msg.get("share_reason"):
            reason = str(msg["share_reason"])
        await self.store.update_visitor(
            conn.visitor_id,
            user_agent=ua,
            browser=info["browser"],
            os=info["os"],
            can_share=can_share,
            share_reason=reason,
            current_page=msg["page"],
            now=self.wall(),
        )
        await self._push_visitor_record(conn.visitor_id)

    async def _on_visitor_chat(self, conn: Conn, msg: dict[str, Any]) -> None:
        assert conn.visitor_id is not None
        text = msg["text"].strip()
        if not text:
            raise HubError(P.BAD_FIELD, "a message cannot be empty")
        conv = await self.store.open_conversation(conn.visitor_id, now=self.wall())
        row, created = await self.store.add_message(
            conv.id, "visitor", text, client_msg_id=msg["client_id"], now=self.wall()
        )
        await self._deliver_chat(conv, row, echo_only=None if created else conn)

    async def _on_share_answer(self, conn: Conn, msg: dict[str, Any]) -> None:
        if conn.role == "agent":
            live = self._share_for_colleague(conn, msg["share"])
        else:
            live = self._share_for_visitor(conn, msg["share"])
        now = self.clock()
        if msg["type"] == "share_accept":
            if live.session.state in (S.ACCEPTED, S.WAITING, S.LIVE):
                return  # a second click or a second tab: already accepted
            self._step(lambda: live.session.accept(now))
            await self._apply(live, ended_by="visitor")
        else:
            self._step(lambda: live.session.decline(now))
            await self._apply(live, ended_by="visitor")

    # agent -----------------------------------------------------------------------------

    async def _on_take(self, conn: Conn, msg: dict[str, Any]) -> None:
        user = self._user(conn)
        conv = await self._conversation_for(user, msg["conversation"], taking=True)
        was_waiting = conv.status == "waiting"
        try:
            conv = await self.store.assign_conversation(conv.id, user.id, now=self.wall())
        except StoreError as exc:
            raise HubError(P.CONFLICT, "another agent has taken this conversation") from exc
        if was_waiting:
            row, _ = await self.store.add_message(
                conv.id, "system", f"{user.display_name} joined the conversation", now=self.wall()
            )
            await self._deliver_chat(conv, row)
        await self._broadcast_conversation(conv, was_waiting=was_waiting)
        await self._open(conn, conv)

    async def _on_open(self, conn: Conn, msg: dict[str, Any]) -> None:
        conv = await self._conversation_for(self._user(conn), msg["conversation"])
        await self._open(conn, conv)

    async def _open(self, conn: Conn, conv: ConversationRow) -> None:
        conn.send(P.make("history", conversation=conv.id, messages=await self._history(conv)))
        conn.send(P.make("visitor", conversation=conv.id, record=await self._record(conv)))
        for live in self.shares.values():
            if live.row.conversation_id == conv.id:
                conn.send(self._state_msg(live))

    async def _on_agent_chat(self, conn: Conn, msg: dict[str, Any]) -> None:
        user = self._user(conn)
        if msg.get("conversation") is None:
            raise HubError(P.BAD_FIELD, "an agent must name the conversation")
        conv = await self._conversation_for(user, msg["conversation"], taking=True)
        if conv.status == "waiting":
            conv = await self.store.assign_conversation(conv.id, user.id, now=self.wall())
            await self._broadcast_conversation(conv, was_waiting=True)
        text = msg["text"].strip()
        if not text:
            raise HubError(P.BAD_FIELD, "a message cannot be empty")
        row, created = await self.store.add_message(
            conv.id,
            "agent",
            text,
            agent_id=user.id,
            client_msg_id=msg["client_id"],
            now=self.wall(),
        )
        await self._deliver_chat(conv, row, echo_only=None if created else conn)

    async def _on_share_request(self, conn: Conn, msg: dict[str, Any]) -> None:
        user = self._user(conn)
        await self._require_share_permission(user)
        conv = await self._conversation_for(user, msg["conversation"], taking=True)
        if conv.agent_id != user.id:
            raise HubError(P.FORBIDDEN, "take the conversation before requesting a share")
        visitor = await self.store.get_visitor(conv.visitor_id)
        if visitor is None:  # pragma: no cover - foreign key
            raise HubError(P.NOT_FOUND, "visitor not found")
        if not visitor.can_share:
            raise HubError(
                P.UNSUPPORTED_BROWSER,
                visitor.share_reason or "The visitor's browser cannot share its screen.",
            )
        if not self.visitor_conns(conv.visitor_id):
            raise HubError(P.CONFLICT, "the visitor is not connected right now")
        for live in self.shares.values():
            if live.row.conversation_id == conv.id:
                raise HubError(P.CONFLICT, "a screen share is already in progress")
        token = new_token()
        live = await self._new_share(conv, user, self.settings.share_request_timeout_s, token)
        sys_row, _ = await self.store.add_message(
            conv.id, "system", f"{user.display_name} asked to see your screen", now=self.wall()
        )
        await self._deliver_chat(conv, sys_row)
        for vc in self.visitor_conns(conv.visitor_id):
            self._send_invite_or_state(vc, live)  # the invite, then the state
        state = self._state_msg(live)
        for c in self._share_audience(live):
            if c.role != "visitor":  # visitors got theirs with the invite
                c.send(state)

    async def _new_share(
        self, conv: ConversationRow, user: UserRow, request_timeout: float, token: str | None
    ) -> LiveShare:
        """A share in state ``requested``: every share starts here, whoever it is for.

        ``token`` is the popup's, minted with a chat visitor's invitation; a phone share
        gets its token only when the caller enters the key, so it passes None.
        """
        now = self.clock()
        hashed, expires = None, None
        if token is not None:
            hashed = token_hash(token)
            expires = self.wall() + request_timeout + self.settings.share_open_timeout_s
        row = await self.store.create_share(
            conv.id, user.id, hashed, expires, S.REQUESTED, now=self.wall()
        )
        session = self._session(now, request_timeout=request_timeout)
        live = LiveShare(row=row, session=session, visitor_id=conv.visitor_id, token=token)
        if self.settings.media_relay == "always" and self.relay is not None:
            live.relayed = True  # audit or recording wants every byte through the server
            live.path = "relay"
            live.row = await self.store.update_share(row.id, path="relay")
        self.shares[row.id] = live
        return live

    async def _on_share_watch(self, conn: Conn, msg: dict[str, Any]) -> None:
        live = self._share_for_agent(conn, msg["share"])
        user = self._user(conn)
        for link in live.links.values():
            if link.answerer is conn:
                return
        kept = live.links.get(msg.get("pc") or "")
        if kept is not None and kept.answerer.closed and kept.viewer == user.id:
            kept.answerer = conn  # a console that reconnected with its peer connection alive
            live.session.found(S.VIEWER, self.clock())
            await self._apply(live, ended_by="agent")
            conn.send(self._state_msg(live))
            return
        for link in list(live.links.values()):
            if link.answerer.closed and link.viewer == user.id:
                self._drop_link(live, link)  # its console end is gone: the sharer drops it too
        live.session.found(S.VIEWER, self.clock())
        await self._apply(live, ended_by="agent")
        if live.sharer is not None:
            self._link(live, conn)
        elif conn not in live.pending_viewers:
            live.pending_viewers.append(conn)
        conn.send(self._state_msg(live))

    async def _on_share_path(self, conn: Conn, msg: dict[str, Any]) -> None:
        live = self._share_for_agent(conn, msg["share"])
        if live.relayed:
            return  # the viewer sees a direct path to the relay; the server knows better
        if live.path != msg["path"]:
            live.path = msg["path"]
            await self.store.update_share(live.id, path=msg["path"])
            self._broadcast_state(live)

    # sharer ----------------------------------------------------------------------------

    async def _sharer_joined(self, conn: Conn) -> None:
        live = self.shares.get(conn.share_id or "")
        if live is None:  # the endpoint checked; a race with an end lands here
            conn.send(P.error(P.ENDED, "This screen share has ended.", fatal=True))
            conn.close()
            return
        now = self.clock()
        if conn.resumed:
            self._sharer_resumed(live, conn)
            live.session.found(S.SHARER, now)
            await self._apply(live, ended_by="sharer")
            conn.send(self._state_msg(live))
        else:
            live.sharer = conn
            self._step(lambda: live.session.sharer_joined(now))
            await self._apply(live, ended_by="sharer")
        live.token = None
        for viewer in live.pending_viewers:
            if not viewer.closed:
                self._link(live, viewer)
        live.pending_viewers = []

    def _sharer_resumed(self, live: LiveShare, conn: Conn) -> None:
        """The share window is back on a new socket: route its peer links to it."""
        old = live.sharer
        if old is not None and old is not conn:
            # The old socket is half-open (its death not noticed yet): this one replaces it.
            log.info("share %s: window resumed on %s, replacing %s", live.id, conn.id, old.id)
            old.close()
        live.sharer = conn
        for link in live.links.values():
            if link.offerer.role == "sharer":
                link.offerer = conn
        for pc in live.stale:
            conn.send(P.make("peer_gone", share=live.id, pc=pc))
        live.stale = []

    async def _on_share_media(self, conn: Conn, msg: dict[str, Any]) -> None:
        live = self._share_for_sharer(conn, msg["share"])
        now = self.clock()
        live.note = None
        self._step(lambda: live.session.media_started(msg["surface"], now))
        await self.store.update_share(live.id, surface=msg["surface"])
        await self._apply(live, ended_by="sharer")

    async def _on_pick_failed(self, conn: Conn, msg: dict[str, Any]) -> None:
        live = self._share_for_sharer(conn, msg["share"])
        live.note = {
            "cancelled": "The visitor closed the screen picker without choosing.",
            "unsupported": "The visitor's browser refused screen capture.",
            "error": "The visitor's browser could not start the capture.",
        }[msg["reason"]]
        if live.session.state == S.LIVE:
            self._step(lambda: live.session.media_stopped(self.clock()))
            await self._apply(live, ended_by="sharer")
        else:
            self._broadcast_state(live)

    # anyone in the share ---------------------------------------------------------------

    async def _on_share_stop(self, conn: Conn, msg: dict[str, Any]) -> None:
        live = self.shares.get(msg["share"])
        if live is None:
            await self._refuse_unknown_share(conn, msg["share"])
            return
        if conn.role == "sharer":
            self._share_for_sharer(conn, msg["share"])
            by_sharer = True
        elif conn.role == "visitor":
            self._share_for_visitor(conn, msg["share"])
            by_sharer = True
        elif conn.user is not None and live.colleague == conn.user.id:
            by_sharer = True  # the colleague who shows their screen, from their console
        else:
            self._share_for_agent(conn, msg["share"])
            by_sharer = False
        now = self.clock()
        self._step(lambda: live.session.stop(by_sharer, now))
        await self._apply(live, ended_by="visitor" if by_sharer else "agent")

    async def _on_negotiation(self, conn: Conn, msg: dict[str, Any]) -> None:
        _, link = self._find_link(msg["pc"])
        other = link.other(conn)
        if other is None:
            raise HubError(P.FORBIDDEN, "this peer connection is not yours")
        mtype = msg["type"]
        if mtype == "offer":
            if conn is not link.offerer:
                raise HubError(P.OUT_OF_ORDER, "only the offerer may send an offer")
            link.offer_pending = True
            link.offered = True
            if link.offered_at is None:
                link.offered_at = self.clock()
        elif mtype == "answer":
            if conn is not link.answerer or not link.offer_pending:
                raise HubError(P.OUT_OF_ORDER, "an answer needs a pending offer")
            link.offer_pending = False
        elif mtype == "ice" and not link.offered:
            if conn is link.answerer:
                raise HubError(P.OUT_OF_ORDER, "candidates before any offer")
        other.send(msg)

    # phone callers ---------------------------------------------------------------------

    async def _on_phone_share_start(self, conn: Conn, msg: dict[str, Any]) -> None:
        """A share for a caller on the phone: an ordinary share that waits for a key."""
        user = self._user(conn)
        await self._require_share_permission(user)
        if msg.get("conversation") is None:
            _caller, conv = await self.store.create_phone_conversation(user.id, now=self.wall())
            await self._broadcast_conversation(conv)
        else:
            conv = await self._conversation_for(user, msg["conversation"])
            if conv.channel != "phone":
                raise HubError(P.NOT_FOUND, "no such phone conversation (ask a chat visitor)")
            if conv.agent_id != user.id:
                raise HubError(P.FORBIDDEN, "this phone conversation belongs to another agent")
            if any(live.row.conversation_id == conv.id for live in self.shares.values()):
                raise HubError(P.CONFLICT, "a screen share is already in progress")
        key = self._fresh_key()
        ttl = self.settings.share_key_ttl_s
        live = await self._new_share(conv, user, ttl, token=None)
        live.key = PendingKey(self.keyring.digest(key), self.clock() + ttl)
        await self.store.create_share_key(
            live.id, live.key.digest, self.wall() + ttl, now=self.wall()
        )
        sys_row, _ = await self.store.add_message(
            conv.id,
            "system",
            f"{user.display_name} gave the caller a screen share key, "
            f"valid for {keys.duration(ttl)}.",
            now=self.wall(),
        )
        await self._deliver_chat(conv, sys_row)
        # To this socket only: the key is read aloud from here, and never sent again.
        conn.send(
            P.make("phone_share_key", share=live.id, conversation=conv.id, key=key, expires_in=ttl)
        )
        self._broadcast_state(live)

    def _fresh_key(self) -> str:
        """A key whose digest no waiting key has, so a typed key opens at most one share."""
        now = self.clock()
        taken = {
            live.key.digest
            for live in self.shares.values()
            if live.key is not None and live.key.usable(now)
        }
        for _ in range(100):
            key = self.keyring.mint()
            if self.keyring.digest(key) not in taken:
                return key
        raise HubError(P.CONFLICT, "too many phone shares wait for their key; try again shortly")

    async def claim_key(
        self, key: str, address: str, proof: str | None = None, user_agent: str = ""
    ) -> KeyClaim:
        """A caller typed ``key`` (normalised digits) at ``/share`` from ``address``.

        ``proof`` is the cookie of a browser that spent a key before (see
        :mod:`coview_server.keys` for the rules and what the page may say).
        """
        async with self._lock:
            now = self.clock()
            if not self.key_limiter.allow(address, now):
                return KeyClaim(keys.RATE_LIMITED)
            waiting: list[tuple[LiveShare, PendingKey]] = []
            for live in self.shares.values():
                if live.key is not None and live.session.state == S.REQUESTED:
                    waiting.append((live, live.key))
            found = keys.match(self.keyring, key, waiting, now)
            if found is not None:
                return await self._key_entered(found, key, now, user_agent)
            if proof and KeyRing.same(proof, self.keyring.proof(key)):
                return KeyClaim(keys.USED_HERE)  # the caller who spent it, again: no guess
            for live, pending in waiting:
                if pending.usable(now):
                    await self._wrong_key(live, pending, now)
            return KeyClaim(keys.WRONG)

    async def _key_entered(
        self, live: LiveShare, key: str, now: float, user_agent: str
    ) -> KeyClaim:
        assert live.key is not None
        live.key.used = True
        wall = self.wall()
        await self.store.update_share_key(live.id, used_at=wall)
        # The same single-use popup token as a chat visitor's, minted now, for the open timeout.
        token = new_token()
        live.row = await self.store.update_share(
            live.id,
            token_hash=token_hash(token),
            token_expires_at=wall + self.settings.share_open_timeout_s,
        )
        if user_agent:
            await self._caller_browser(live.visitor_id, user_agent)
        live.note = "The caller entered the key."
        self._step(lambda: live.session.accept(now))
        await self._apply(live, ended_by="visitor")
        conv = await self.store.get_conversation(live.row.conversation_id)
        if conv is not None:
            sys_row, _ = await self.store.add_message(conv.id, "system", live.note, now=wall)
            await self._deliver_chat(conv, sys_row)
        return KeyClaim(
            keys.OK,
            share=live.id,
            popup_url=f"/popup#share={live.id}&t={token}",
            proof=self.keyring.proof(key),
        )

    async def _wrong_key(self, live: LiveShare, pending: PendingKey, now: float) -> None:
        locked = pending.count_wrong()
        await self.store.update_share_key(
            live.id, wrong_attempts=pending.wrong, locked_at=self.wall() if locked else None
        )
        if locked:
            live.note = f"The key was locked after {keys.MAX_WRONG} wrong attempts."
            await self._end(live, S.KEY_LOCKED, "server", now)
            return
        live.note = (
            f"Wrong keys entered so far: {pending.wrong} (the key locks at {keys.MAX_WRONG})."
        )
        self._broadcast_state(live)

    async def _caller_browser(self, visitor_id: str, user_agent: str) -> None:
        """What the caller's browser says of itself, for the agent's visitor record."""
        ua = user_agent[:1024]
        info = useragent.parse(ua)
        can_share, reason = useragent.share_verdict(ua, True)
        await self.store.update_visitor(
            visitor_id,
            user_agent=ua,
            browser=info["browser"],
            os=info["os"],
            can_share=can_share,
            share_reason=reason,
            current_page="/share",
            now=self.wall(),
        )
        await self._push_visitor_record(visitor_id)

    async def _on_transfer(self, conn: Conn, msg: dict[str, Any]) -> None:
        """Hand a conversation to a colleague: from then on it is theirs, not ours."""
        user = self._user(conn)
        conv = await self._conversation_for(user, msg["conversation"])
        if conv.status != "open" or conv.agent_id is None:
            raise HubError(P.OUT_OF_ORDER, "take the conversation before transferring it")
        if conv.agent_id != user.id and not user.is_admin:
            raise HubError(P.FORBIDDEN, "this conversation belongs to another agent")
        target = await self.store.get_user(msg["agent"])
        if target is None or target.disabled:
            raise HubError(P.NOT_FOUND, "no such colleague")
        if target.id == conv.agent_id:
            raise HubError(P.CONFLICT, f"the conversation is already {target.display_name}'s")
        if any(live.row.conversation_id == conv.id for live in self.shares.values()):
            raise HubError(P.CONFLICT, "stop the screen share before transferring")
        try:
            conv = await self.store.transfer_conversation(
                conv.id, conv.agent_id, target.id, now=self.wall()
            )
        except StoreError as exc:
            raise HubError(P.CONFLICT, "the conversation changed hands meanwhile") from exc
        row, _ = await self.store.add_message(
            conv.id,
            "system",
            f"{user.display_name} transferred the conversation to {target.display_name}",
            now=self.wall(),
        )
        await self._deliver_chat(conv, row)
        # Everyone but the new holder and the admins gets the bare item, and drops it.
        await self._broadcast_conversation(conv, was_waiting=True)

    # colleagues --------------------------------------------------------------------------

    async def _on_colleague_share_request(self, conn: Conn, msg: dict[str, Any]) -> None:
        """An internal share: the same share machine and popup, with a colleague's screen.

        The asking agent holds a conversation of channel ``internal``; the colleague's
        consoles get the ``share_invite`` a visitor's widget would, and answer it.
        """
        user = self._user(conn)
        await self._require_share_permission(user)
        target = await self.store.get_user(msg["agent"])
        if target is None or target.disabled:
            raise HubError(P.NOT_FOUND, "no such colleague")
        if target.id == user.id:
            raise HubError(P.FORBIDDEN, "you cannot ask yourself to share your screen")
        if not self.agent_conns(target.id):
            raise HubError(P.CONFLICT, f"{target.display_name} is not signed in right now")
        for live in self.shares.values():
            if live.row.requested_by == user.id and live.colleague == target.id:
                raise HubError(P.CONFLICT, f"you already asked {target.display_name}")
        conv = await self.store.create_internal_conversation(user.id, target.id, now=self.wall())
        await self._broadcast_conversation(conv)
        token = new_token()
        live = await self._new_share(conv, user, self.settings.share_request_timeout_s, token)
        live.colleague = target.id
        sys_row, _ = await self.store.add_message(
            conv.id,
            "system",
            f"{user.display_name} asked {target.display_name} to share their screen",
            now=self.wall(),
        )
        await self._deliver_chat(conv, sys_row)
        for c in self.agent_conns(target.id):
            self._send_invite_or_state(c, live)
        state = self._state_msg(live)
        for c in self._share_audience(live):
            if c.user is None or c.user.id != target.id:
                c.send(state)

    # accounts --------------------------------------------------------------------------

    async def _require_share_permission(self, user: UserRow) -> None:
        refusal = await accounts.share_refusal(self.store, user.id)
        if refusal is not None:
            raise HubError(P.FORBIDDEN, refusal)

    async def _send_permissions(self, conn: Conn) -> None:
        refusal = await accounts.share_refusal(self.store, self._user(conn).id)
        conn.send(P.make("permissions", screen_share=refusal is None, reason=refusal))

    async def push_permissions(self, user_id: int | None) -> None:
        """An admin changed a permission (of one agent, or company-wide for None)."""
        async with self._lock:
            for conn in self.agent_conns(user_id):
                await self._send_permissions(conn)

    async def disconnect_user(self, user_id: int, text: str) -> None:
        """Sign an account out of every socket at once, ending the shares it holds.

        Its auth sessions are already gone (the store deletes them), so the consoles
        cannot reconnect; here the open sockets are told why and closed.
        """
        async with self._lock:
            gone = self.agent_conns(user_id)
            now = self.clock()
            # Shares end first, while the consoles still listen: they see why it ended.
            for live in list(self.shares.values()):
                if live.row.requested_by == user_id:
                    await self._end(live, S.REQUESTER_LEFT, "admin", now)
                elif live.colleague == user_id:  # their own screen, shown to a colleague
                    await self._end(live, S.SHARER_LEFT, "admin", now)
            for live in list(self.shares.values()):
                live.pending_viewers = [c for c in live.pending_viewers if c not in gone]
                was_viewer = False
                for link in list(live.links.values()):
                    if link.answerer in gone:
                        self._drop_link(live, link)
                        was_viewer = True
                if was_viewer and live.session.state == S.LIVE and not live.links:
                    await self._end(live, S.VIEWER_LEFT, "admin", now)
            for conn in gone:
                conn.send(P.error(P.UNAUTHORIZED, text, fatal=True))
                conn.evicted = True
                self.conns.pop(conn.id, None)
                conn.close()

    # -- helpers ------------------------------------------------------------------------

    def _user(self, conn: Conn) -> UserRow:
        if conn.user is None:  # pragma: no cover - agents always carry a user
            raise HubError(P.UNAUTHORIZED, "not logged in", fatal=True)
        return conn.user

    async def _conversation_for(
        self, user: UserRow, conversation_id: int, taking: bool = False
    ) -> ConversationRow:
        conv = await self.store.get_conversation(conversation_id)
        if conv is None or conv.status == "closed":
            raise HubError(P.NOT_FOUND, "no such open conversation")
        if user.role == "admin" or conv.agent_id == user.id:
            return conv
        if conv.status == "waiting":
            return conv
        raise HubError(P.FORBIDDEN, "this conversation belongs to another agent")

    def _share_for_agent(self, conn: Conn, share_id: str) -> LiveShare:
        user = self._user(conn)
        live = self.shares.get(share_id)
        if live is None:
            raise HubError(P.NOT_FOUND, "no such active screen share")
        if user.role != "admin" and live.row.requested_by != user.id:
            raise HubError(P.FORBIDDEN, "this screen share belongs to another agent")
        return live

    def _share_for_colleague(self, conn: Conn, share_id: str) -> LiveShare:
        live = self.shares.get(share_id)
        if live is None or live.colleague is None or live.colleague != self._user(conn).id:
            # An agent answers only a colleague's request made to them; to anyone else this
            # is a visitor's message.
            raise HubError(P.FORBIDDEN, "only the colleague asked may answer a share request")
        return live

    def _share_for_visitor(self, conn: Conn, share_id: str) -> LiveShare:
        live = self.shares.get(share_id)
        if live is None or live.visitor_id != conn.visitor_id:
            raise HubError(P.NOT_FOUND, "no such active screen share")
        return live

    def _share_for_sharer(self, conn: Conn, share_id: str) -> LiveShare:
        live = self.shares.get(share_id)
        if live is None or live.sharer is not conn:
            raise HubError(P.FORBIDDEN, "this window does not share for that session")
        return live

    async def _refuse_unknown_share(self, conn: Conn, share_id: str) -> None:
        row = await self.store.get_share(share_id)
        if row is not None and row.ended_at is not None:
            raise HubError(P.ENDED, "this screen share has already ended")
        raise HubError(P.NOT_FOUND, "no such active screen share")

    @staticmethod
    def _step(event: Callable[[], None]) -> None:
        try:
            event()
        except S.ShareError as exc:
            raise HubError(exc.code, exc.text) from exc

    def _link(self, live: LiveShare, viewer: Conn) -> None:
        """Connect a viewer: straight to the sharer, or through the relay."""
        assert live.sharer is not None
        if not live.relayed:
            self._open_link(live, f"{live.id}.{viewer.id}", live.sharer, viewer, "direct")
            return
        relay = self.relay
        assert relay is not None
        uplink = f"{live.id}.up"
        if uplink not in live.links:
            self._open_link(live, uplink, live.sharer, relay, "relay")
        self._open_link(live, f"{live.id}.{viewer.id}.down", relay, viewer, "relay")

    def _open_link(self, live: LiveShare, pc: str, offerer: Conn, answerer: Conn, via: str) -> None:
        viewer = answerer.user.id if answerer.user is not None else None
        live.links[pc] = PeerLink(
            id=pc, offerer=offerer, answerer=answerer, via=via, ice_at=self.clock(), viewer=viewer
        )
        self._dirty.add(live.id)
        # Fresh ICE servers with every peer connection: TURN credentials minted at the
        # handshake may have expired in a console that stayed open all day.
        for end, role in ((offerer, OFFERER), (answerer, ANSWERER)):
            fields: dict[str, Any] = {"ice_servers": self._ice_for(end)}
            if via == "relay":
                fields["via"] = via
            end.send(P.make("peer", share=live.id, pc=pc, role=role, **fields))

    def _refresh_ice(self, now: float) -> None:
        """New TURN credentials at half their lifetime, so a restart never uses dead ones."""
        if not self.settings.turn_urls:
            return
        half = self.settings.turn_ttl_s / 2
        for live in self.shares.values():
            for link in live.links.values():
                if now - link.ice_at < half:
                    continue
                link.ice_at = now
                for end in (link.offerer, link.answerer):
                    if end.role != "relay":
                        end.send(P.make("peer_ice", pc=link.id, ice_servers=self._ice_for(end)))

    def _ice_for(self, end: Conn) -> list[dict[str, Any]]:
        if end.role == "relay":  # the relay is the reachable end: STUN at most, never TURN
            stun = list(self.settings.stun_urls)
            return [{"urls": stun}] if stun else []
        return self.ice_servers(end)

    async def _fall_back(self, live: LiveShare, why: str) -> None:
        """The direct path failed: carry the share through the relay, or say it cannot."""
        if live.relayed:
            return
        if self.relay is None or self.settings.media_relay == "off":
            note = "The direct media connection failed and no relay is available."
            if live.note != note:
                log.warning("share %s: direct path failed (%s); relay is off", live.id, why)
                live.note = note
                self._broadcast_state(live)
            return
        log.info("share %s: falling back to the media relay (%s)", live.id, why)
        live.relayed = True
        live.path = "relay"
        viewers = live.viewers()
        for link in list(live.links.values()):
            self._drop_link(live, link)
        await self.store.update_share(live.id, path="relay")
        for viewer in viewers:
            if viewer.closed:
                continue
            if live.sharer is not None:
                self._link(live, viewer)
            elif viewer not in live.pending_viewers:
                live.pending_viewers.append(viewer)  # linked when the window is back
        self._broadcast_state(live)

    async def _on_peer_status(self, conn: Conn, msg: dict[str, Any]) -> None:
        live, link = self._find_link(msg["pc"])
        if link.other(conn) is None:
            raise HubError(P.FORBIDDEN, "this peer connection is not yours")
        if msg["state"] == "connected":
            if conn is link.answerer:
                link.connected = True
            return
        if link.via == "direct":
            await self._fall_back(live, f"{conn.role} reported failure")
        else:
            live.note = "The media connection failed, even through the server's relay."
            self._broadcast_state(live)

    def _find_link(self, pc: str) -> tuple[LiveShare, PeerLink]:
        for live in self.shares.values():
            link = live.links.get(pc)
            if link is not None:
                return live, link
        raise HubError(P.NOT_FOUND, "no such peer connection")

    def _drop_link(self, live: LiveShare, link: PeerLink) -> None:
        live.links.pop(link.id, None)
        self._dirty.add(live.id)
        for end in (link.offerer, link.answerer):
            end.send(P.make("peer_gone", share=live.id, pc=link.id))

    async def _apply(self, live: LiveShare, ended_by: str) -> None:
        """Persist and announce what the share machine did."""
        changes = live.session.actions()
        if not changes:
            return
        now = self.wall()
        fields: dict[str, Any] = {"state": live.session.state}
        states = [(c[1], c[2]) for c in changes if c[0] == "state"]
        if not states:  # only a party lost or found: nothing stored changes
            self._broadcast_state(live)
            return
        for state, reason in states:
            if state == S.ACCEPTED:
                fields["accepted_at"] = now
            elif state == S.LIVE and live.row.started_at is None:
                fields["started_at"] = now
            elif state == S.ENDED:
                fields.update(ended_at=now, end_reason=reason, ended_by=ended_by)
        live.row = await self.store.update_share(live.id, **fields)
        self._broadcast_state(live)
        if live.session.ended:
            for link in list(live.links.values()):
                self._drop_link(live, link)
            self.shares.pop(live.id, None)
            conv = await self.store.get_conversation(live.row.conversation_id)
            if conv is not None:
                text = _end_text(live)
                row, _ = await self.store.add_message(conv.id, "system", text, now=now)
                await self._deliver_chat(conv, row)

    async def _end(self, live: LiveShare, reason: str, by: str, now: float) -> None:
        live.session.end(reason, now)
        await self._apply(live, ended_by=by)

    def _state_msg(self, live: LiveShare) -> dict[str, Any]:
        return P.make(
            "share_state",
            share=live.id,
            conversation=live.row.conversation_id,
            state=live.session.state,
            reason=live.session.reason,
            surface=live.session.surface,
            path=live.path,
            note=live.note,
            colleague=live.colleague,
            away=sorted(live.session.away),
        )

    def _viewers(self, live: LiveShare) -> list[Conn]:
        """The viewers still connected (a lost one keeps its link until it comes back)."""
        return [c for c in live.viewers() if not c.closed]

    async def _save_links(self) -> None:
        """Write changed peer links to the store: what a restarted server rebinds."""
        dirty, self._dirty = self._dirty, set()
        for share_id in dirty:
            live = self.shares.get(share_id)
            if live is None:
                continue
            links = [
                {"pc": link.id, "via": link.via, "viewer": link.viewer}
                for link in live.links.values()
            ]
            live.row = await self.store.update_share(share_id, links=json.dumps(links))

    def _share_audience(self, live: LiveShare) -> list[Conn]:
        seen: dict[str, Conn] = {}
        for c in self.visitor_conns(live.visitor_id) + self.agent_conns(live.row.requested_by):
            seen[c.id] = c
        if live.colleague is not None:
            for c in self.agent_conns(live.colleague):
                seen[c.id] = c
        for c in live.viewers():
            seen[c.id] = c
        if live.sharer is not None:
            seen[live.sharer.id] = live.sharer
        return list(seen.values())

    def _broadcast_state(self, live: LiveShare) -> None:
        msg = self._state_msg(live)
        for c in self._share_audience(live):
            c.send(msg)

    def _send_invite_or_state(self, conn: Conn, live: LiveShare) -> None:
        token = live.token
        if live.session.state == S.REQUESTED and token is not None:
            remaining = max(0.0, (live.session.deadline() or 0.0) - self.clock())
            conn.send(
                P.make(
                    "share_invite",
                    share=live.id,
                    conversation=live.row.conversation_id,
                    agent_name=self._agent_name(live.row.requested_by),
                    popup_url=f"/popup#share={live.id}&t={token}",
                    expires_in=round(remaining, 1),
                )
            )
        conn.send(self._state_msg(live))

    def _agent_name(self, user_id: int) -> str:
        for c in self.agent_conns(user_id):
            if c.user is not None:
                return c.user.display_name
        return "Support"

    async def _history(self, conv: ConversationRow) -> list[dict[str, Any]]:
        return [await self._message_json(m) for m in await self.store.messages(conv.id)]

    async def _message_json(self, m: MessageRow) -> dict[str, Any]:
        name = None
        if m.agent_id is not None:
            user = await self.store.get_user(m.agent_id)
            name = user.display_name if user else None
        return {
            "id": m.id,
            "sender": m.sender,
            "text": m.text,
            "at": m.created_at,
            "agent_name": name,
            "client_id": m.client_msg_id,
        }

    async def _deliver_chat(
        self, conv: ConversationRow, row: MessageRow, echo_only: Conn | None = None
    ) -> None:
        msg = P.make("chat", conversation=conv.id, message=await self._message_json(row))
        if echo_only is not None:  # a resend of a stored message: confirm to the sender only
            echo_only.send(msg)
            return
        for c in self.visitor_conns(conv.visitor_id):
            c.send(msg)
        for c in self._agents_for(conv):
            c.send(msg)
        await self._broadcast_conversation(conv)

    def _agents_for(self, conv: ConversationRow) -> list[Conn]:
        def allowed(c: Conn) -> bool:
            u = c.user
            return u is not None and (
                u.role == "admin" or conv.status == "waiting" or conv.agent_id == u.id
            )

        return [c for c in self.agent_conns() if allowed(c)]

    async def _conversation_item(self, conv: ConversationRow) -> dict[str, Any]:
        visitor = await self.store.get_visitor(conv.visitor_id)
        msgs = await self.store.messages(conv.id, limit=500)
        agent_name = None
        if conv.agent_id is not None:
            agent = await self.store.get_user(conv.agent_id)
            agent_name = agent.display_name if agent else None
        last = msgs[-1].text[:140] if msgs else ""
        label = _visitor_label(visitor.browser if visitor else None, conv.visitor_id, conv.channel)
        if conv.channel == "internal":
            colleague = await self.store.get_user(conv.colleague_id or 0)
            label = "Colleague " + (colleague.display_name if colleague else "(deleted)")
        return {
            "id": conv.id,
            "status": conv.status,
            "visitor": conv.visitor_id,
            "visitor_label": label,
            "agent_id": conv.agent_id,
            "agent_name": agent_name,
            "updated_at": conv.updated_at,
            "last_text": last,
            "online": bool(self.visitor_conns(conv.visitor_id)),
            "channel": conv.channel,
        }

    async def _broadcast_conversation(
        self, conv: ConversationRow, was_waiting: bool = False
    ) -> None:
        """Tell the agents who may see it; when it was just taken, tell the others too.

        Every agent saw a waiting conversation in their list; once taken, the others get a
        bare item (no message text) so their console can drop it instead of offering a
        ``take`` the server would refuse.
        """
        conv = await self.store.get_conversation(conv.id) or conv
        item = await self._conversation_item(conv)
        msg = P.make("conversation_update", item=item)
        bare = P.make("conversation_update", item=dict(item, last_text="", visitor_label=""))
        for c in self.agent_conns():
            u = c.user
            if u is None:
                continue
            if u.role == "admin" or conv.status == "waiting" or conv.agent_id == u.id:
                c.send(msg)
            elif was_waiting:
                c.send(bare)

    async def _send_conversations(self, conn: Conn) -> None:
        user = self._user(conn)
        rows = await self.store.list_conversations(user.id, user.role == "admin")
        items = [await self._conversation_item(c) for c in rows]
        conn.send(P.make("conversations", items=items))

    async def _record(self, conv: ConversationRow) -> dict[str, Any]:
        v = await self.store.get_visitor(conv.visitor_id)
        online = bool(self.visitor_conns(conv.visitor_id))
        if v is None:  # pragma: no cover - foreign key
            return {"id": conv.visitor_id, "online": online}
        return {
            "id": v.id,
            "browser": v.browser or "Unknown browser",
            "os": v.os or "Unknown OS",
            "page": v.current_page,
            "can_share": bool(v.can_share) and online,
            "share_reason": v.share_reason
            if not v.can_share
            else (None if online else "The visitor is not connected right now."),
            "online": online,
            "first_seen": v.created_at,
            "last_seen": v.last_seen,
        }

    async def _push_visitor_record(self, visitor_id: str) -> None:
        conv = await self.store.current_conversation(visitor_id)
        if conv is None:
            return
        msg = P.make("visitor", conversation=conv.id, record=await self._record(conv))
        for c in self._agents_for(conv):
            c.send(msg)
        await self._broadcast_conversation(conv)

    _handlers: dict[tuple[str, str], Callable[[Hub, Conn, dict[str, Any]], Any]] = {}


TICK_S = 0.25


async def run_clock(hub: Hub) -> None:
    """Drive the share machines' deadlines a few times a second, until cancelled."""
    while True:
        await asyncio.sleep(TICK_S)
        try:
            await hub.tick()
        except Exception:  # the clock must keep running whatever one share does
            log.exception("share tick failed")


def _gone(role: str) -> Conn:
    """A closed stand-in for an end that a restart disconnected, until it comes back."""
    conn = Conn(id="gone", role=role)
    conn.close()
    return conn


def _links_of(row: ShareRow) -> list[dict[str, Any]]:
    """The stored peer links of a share, skipping anything malformed (never trust a row)."""
    try:
        entries = json.loads(row.links or "[]")
    except ValueError:
        return []
    if not isinstance(entries, list):
        return []
    return [
        e
        for e in entries
        if isinstance(e, dict)
        and isinstance(e.get("pc"), str)
        and e.get("via") in ("direct", "relay")
        and (e.get("viewer") is None or isinstance(e.get("viewer"), int))
    ]


def _visitor_label(browser: str | None, visitor_id: str, channel: str = "chat") -> str:
    who = "Phone caller" if channel == "phone" else "Visitor"
    return f"{who} {visitor_id[:6]}" + (f" · {browser}" if browser else "")


def _end_text(live: LiveShare) -> str:
    """The system chat message recording why a share ended."""
    reason = live.session.reason or ""
    if live.key is not None and reason == S.REQUEST_TIMEOUT:
        return "The screen share key expired before the caller entered it."
    return _END_TEXT.get(reason, "The screen share ended.")


#: Who ended a share whose party did not come back in time.
_ENDED_BY = {S.SHARER_LOST: "sharer", S.REQUESTER_LEFT: "agent", S.VIEWER_LEFT: "agent"}

_END_TEXT = {
    S.DECLINED: "The screen share request was declined.",
    S.STOPPED_BY_SHARER: "The visitor stopped sharing their screen.",
    S.STOPPED_BY_VIEWER: "The agent stopped the screen share.",
    S.SHARER_LEFT: "The screen share window was closed; the share ended.",
    S.SHARER_LOST: "The screen share window lost its connection and did not come back.",
    S.VIEWER_LEFT: "The agent left; the screen share ended.",
    S.REQUESTER_LEFT: "The agent left; the screen share ended.",
    S.REQUEST_TIMEOUT: "The screen share request expired without an answer.",
    S.OPEN_TIMEOUT: "The screen share window was not opened in time.",
    S.PICK_TIMEOUT: "No screen was chosen in time; the share ended.",
    S.SERVER_SHUTDOWN: "The screen share ended because the server restarted.",
    S.KEY_LOCKED: f"The screen share key was locked after {keys.MAX_WRONG} wrong attempts.",
}

Hub._handlers = {
    ("*", "ping"): Hub._on_ping,
    ("*", "pong"): Hub._on_pong,
    ("visitor", "visitor_info"): Hub._on_visitor_info,
    ("visitor", "chat_send"): Hub._on_visitor_chat,
    ("visitor", "share_accept"): Hub._on_share_answer,
    ("visitor", "share_decline"): Hub._on_share_answer,
    ("visitor", "share_stop"): Hub._on_share_stop,
    ("agent", "conversation_take"): Hub._on_take,
    ("agent", "conversation_open"): Hub._on_open,
    ("agent", "conversation_transfer"): Hub._on_transfer,
    ("agent", "chat_send"): Hub._on_agent_chat,
    ("agent", "share_request"): Hub._on_share_request,
    ("agent", "phone_share_start"): Hub._on_phone_share_start,
    ("agent", "colleague_share_request"): Hub._on_colleague_share_request,
    ("agent", "share_accept"): Hub._on_share_answer,
    ("agent", "share_decline"): Hub._on_share_answer,
    ("agent", "share_watch"): Hub._on_share_watch,
    ("agent", "share_stop"): Hub._on_share_stop,
    ("agent", "share_path"): Hub._on_share_path,
    ("sharer", "share_media"): Hub._on_share_media,
    ("sharer", "share_pick_failed"): Hub._on_pick_failed,
    ("sharer", "share_stop"): Hub._on_share_stop,
    ("sharer", "offer"): Hub._on_negotiation,
    ("sharer", "answer"): Hub._on_negotiation,
    ("sharer", "ice"): Hub._on_negotiation,
    ("sharer", "restart"): Hub._on_negotiation,
    ("agent", "offer"): Hub._on_negotiation,
    ("agent", "answer"): Hub._on_negotiation,
    ("agent", "ice"): Hub._on_negotiation,
    ("agent", "restart"): Hub._on_negotiation,
    ("sharer", "peer_status"): Hub._on_peer_status,
    ("agent", "peer_status"): Hub._on_peer_status,
    ("relay", "offer"): Hub._on_negotiation,
    ("relay", "answer"): Hub._on_negotiation,
    ("relay", "ice"): Hub._on_negotiation,
    ("relay", "restart"): Hub._on_negotiation,
    ("relay", "peer_status"): Hub._on_peer_status,
}
