"""The ``/ws`` endpoint: Origin check, handshake first, then a reader and a writer.

This is the server's thin I/O shell around :mod:`coview.protocol` and
:class:`~coview_server.hub.Hub`: it turns frames into validated messages, enforces the
per-socket rate limit and liveness, and turns hub refusals into coded ``error`` messages.
A bad frame never ends the process, and only abuse or a failed handshake ends the socket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from asyncio import FIRST_COMPLETED
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from coview import protocol as P, share as S
from coview.liveness import DEAD, PING, Liveness

from .hub import Conn, HubError, HubFront
from .limits import AddressGate, fit_frame
from .security import check_origin
from .settings import Settings
from .store import ShareRow, Store, StoreError
from .tokens import new_token, token_hash

log = logging.getLogger("coview.signaling")

HANDSHAKE_TIMEOUT_S = 10.0
#: Refused messages a socket may send before it is closed as abusive.
MAX_ERRORS = 50

WS_1000_NORMAL = 1000
WS_1001_GOING_AWAY = 1001
WS_1008_POLICY = 1008
WS_1009_TOO_BIG = 1009
WS_1011_INTERNAL = 1011

SESSION_COOKIE = "coview_session"


class TokenBucket:
    """Average ``rate`` messages per second with bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Refused(Exception):
    def __init__(self, code: str, text: str, close_code: int = WS_1008_POLICY) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.close_code = close_code


async def endpoint(websocket: WebSocket) -> None:
    state = websocket.state
    hub: HubFront = state.hub
    settings: Settings = state.settings
    if not check_origin(
        dict(websocket.headers), set(settings.allowed_origins), websocket.headers.get("host", "")
    ):
        # Refuse before accepting: a cross-site page must not even learn the protocol.
        await websocket.close(code=WS_1008_POLICY)
        return
    gate: AddressGate = state.ws_gate
    address = websocket.client.host if websocket.client else "?"
    refusal = gate.admit(address, asyncio.get_running_loop().time())
    if refusal is not None:
        await websocket.accept()
        await _send(websocket, P.error(P.RATE_LIMITED, refusal, "handshake", fatal=True))
        await _close(websocket, WS_1008_POLICY)
        return
    try:
        await _serve(websocket, hub, settings, state.store)
    finally:
        gate.release(address)


async def _serve(websocket: WebSocket, hub: HubFront, settings: Settings, store: Store) -> None:
    await websocket.accept()
    conn: Conn | None = None
    try:
        conn = await _handshake(websocket, store, settings)
    except Refused as exc:
        await _send(websocket, P.error(exc.code, exc.text, "handshake", fatal=True))
        await _close(websocket, exc.close_code)
        return
    except WebSocketDisconnect:
        return
    # Set by the writer once the conn is closed (by the hub, the gateway or an admin): the
    # reader stops at once instead of at its next wake-up up to 5 s later, while the page
    # thinks it is still heard and cannot come back (a failover's rejoin closes so).
    closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    writer = asyncio.create_task(_writer(websocket, conn, closed))
    close_code = WS_1000_NORMAL
    # Whether the page itself left (closed, reloaded) or its connection was lost: a lost
    # share window or console may come back (docs/protocol.md, Reconnect and resume).
    left = True
    try:
        await hub.join(conn)
        close_code, left = await _reader(websocket, hub, conn, settings, closed)
    except WebSocketDisconnect as exc:
        left = exc.code in (WS_1000_NORMAL, WS_1001_GOING_AWAY)
    except Exception:  # a bug must cost one socket, never the server
        log.exception("signaling failure on %s", conn.id)
        left = False  # the page did nothing wrong: let it resume
    finally:
        await hub.leave(conn, left=left)
        conn.close()
        try:
            await asyncio.wait_for(writer, 2.0)
        except TimeoutError:
            pass  # wait_for cancelled the writer; a cancellation of ours propagates
        finally:
            writer.cancel()
        await _close(websocket, close_code)  # after the writer flushed the last error


async def _handshake(websocket: WebSocket, store: Store, settings: Settings) -> Conn:
    try:
        text = await asyncio.wait_for(_receive_text(websocket), HANDSHAKE_TIMEOUT_S)
    except TimeoutError:
        raise Refused(P.HANDSHAKE_REQUIRED, "no handshake within 10 seconds") from None
    try:
        msg = P.decode(text, P.C2S)
    except P.ProtocolError as exc:
        raise Refused(exc.code, exc.text) from None
    if msg["type"] != "handshake":
        raise Refused(P.HANDSHAKE_REQUIRED, "the first message must be a handshake")
    if P.PROTOCOL_VERSION not in msg["versions"]:
        raise Refused(
            P.UNSUPPORTED_VERSION,
            "this server speaks protocol version " + ", ".join(P.SUPPORTED_VERSIONS),
        )
    role = msg["role"]
    conn = Conn(id=new_token(16), role=role)
    info: dict[str, Any] = {}
    if role == "agent":
        cookie = websocket.cookies.get(SESSION_COOKIE)
        found = await store.session_user(cookie) if cookie else None
        if found is None:
            raise Refused(P.UNAUTHORIZED, "please log in again")
        conn.user = found[0]
        info["user"] = {"id": conn.user.id, "name": conn.user.display_name, "role": conn.user.role}
    elif role == "visitor":
        token = msg.get("token")
        visitor = await store.visitor_by_secret(token) if token else None
        if visitor is None:
            visitor, secret = await store.create_visitor()
            info["token"] = secret
        conn.visitor_id = visitor.id
        info["visitor"] = visitor.id
    else:
        resume = msg.get("resume")
        info["resume"] = fresh = new_token()
        if resume:
            row = await _resume_share(store, resume, fresh)
            conn.resumed = True
            info["resumed"] = True
            asker = await store.get_user(row.requested_by)
            asker_name = asker.display_name if asker is not None else None
        else:
            row, asker_name = await _claim_share(store, msg.get("token"), fresh)
        conn.share_id = row.id
        info["share"] = row.id
        info["conversation"] = row.conversation_id
        info["agent_name"] = asker_name or "Support"
    info["ice_transport_policy"] = settings.ice_transport_policy
    await _send(
        websocket,
        P.make(
            "welcome",
            version=P.PROTOCOL_VERSION,
            role=role,
            conn=conn.id,
            ice_servers=websocket.state.ice_servers(conn),
            info=info,
        ),
    )
    return conn


async def _claim_share(store: Store, token: str | None, resume: str) -> tuple[ShareRow, str | None]:
    """Spend a popup token: valid once, before its expiry, for a share still running; the
    window's first resume credential (``resume``) is stored with it, in one transaction.
    Returns the share and the requester's name.

    Decided on the stored row, which the hub keeps current, so any process of a
    deployment can admit the window (``coview_server.cluster``)."""
    if not token:
        raise Refused(P.UNAUTHORIZED, "this link has no share token")
    try:
        claimed = await store.claim_share_token(token_hash(token), token_hash(resume), _admit)
    except StoreError as exc:  # a concurrent claim won the race
        if exc.code != "used":
            raise
        raise Refused(P.USED, "this share link has already been used") from None
    if claimed is None:
        raise Refused(P.UNAUTHORIZED, "this share link is not valid")
    return claimed


def _admit(row: ShareRow) -> None:
    if row.ended_at is not None or row.state == S.ENDED:
        raise Refused(P.ENDED, "this screen share has already ended")
    if row.token_used:
        raise Refused(P.USED, "this share link has already been used")
    if row.token_expires_at is not None and row.token_expires_at < time.time():
        raise Refused(P.EXPIRED, "this share link has expired")
    if row.state not in (S.REQUESTED, S.ACCEPTED):
        raise Refused(P.USED, "this share link has already been used")


async def _resume_share(store: Store, credential: str, fresh: str) -> ShareRow:
    """Spend a share window's resume credential; the window gets ``fresh`` instead."""
    row = await store.swap_resume_hash(token_hash(credential), token_hash(fresh))
    if row is None:
        raise Refused(P.UNAUTHORIZED, "this share window can no longer resume")
    if row.ended_at is not None or row.state == S.ENDED:
        raise Refused(P.ENDED, "this screen share has already ended")
    return row


async def _reader(
    websocket: WebSocket,
    hub: HubFront,
    conn: Conn,
    settings: Settings,
    closed: asyncio.Future[None],
) -> tuple[int, bool]:
    """Serve the socket until it ends; returns the close code to send, and whether the
    page left (False: its connection was lost)."""
    loop = asyncio.get_running_loop()
    bucket = TokenBucket(settings.ws_rate, settings.ws_burst, loop.time())
    alive = Liveness(loop.time())
    errors = 0
    receiving: asyncio.Future[str] | None = None
    try:
        while not conn.closed:
            if receiving is None:
                receiving = asyncio.ensure_future(_receive_text(websocket))
            either: set[asyncio.Future[Any]] = {receiving, closed}
            await asyncio.wait(either, timeout=5.0, return_when=FIRST_COMPLETED)
            if not receiving.done():
                if closed.done():
                    break  # closed by the hub or the gateway: the endpoint closes the socket
                verdict = alive.tick(loop.time())
                if verdict == PING:
                    conn.send(P.make("ping"))
                elif verdict == DEAD:
                    log.info("closing %s: silent for %.0f s", conn.id, alive.dead_after)
                    return WS_1000_NORMAL, False
                continue
            text = receiving.result()  # raises WebSocketDisconnect when the page went away
            receiving = None
            now = loop.time()
            alive.heard(now)
            if not bucket.take(now):
                errors += 1
                conn.send(P.error(P.RATE_LIMITED, "too many messages; slow down"))
            else:
                try:
                    msg = P.decode(text, P.C2S)
                    if msg["type"] in ("ping", "pong"):
                        # Liveness needs nothing of the hub: never queue it behind others' work.
                        if msg["type"] == "ping":
                            conn.send(P.make("pong", t=msg.get("t")))
                        continue
                    await hub.handle(conn, msg)
                    continue
                except P.ProtocolError as exc:
                    errors += 1
                    conn.send(P.error(exc.code, exc.text, exc.ref))
                    if exc.code == P.TOO_LARGE:
                        return WS_1009_TOO_BIG, True
                except HubError as exc:
                    errors += 1
                    conn.send(P.error(exc.code, exc.text, fatal=exc.fatal))
                    if exc.fatal:
                        return WS_1000_NORMAL, True
            if errors + conn.refused > MAX_ERRORS:
                conn.send(P.error(P.RATE_LIMITED, "too many refused messages", fatal=True))
                return WS_1000_NORMAL, True
        return WS_1000_NORMAL, True
    finally:
        if receiving is not None:
            receiving.cancel()  # a receive that no one will read (its message is discarded)


async def _receive_text(websocket: WebSocket) -> str:
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if text is None:
        data = message.get("bytes") or b""
        if len(data) > P.MAX_MESSAGE_BYTES:
            return "x" * (P.MAX_MESSAGE_BYTES + 1)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return "\ufffe"  # decodes to bad_json
    return str(text)


async def _writer(websocket: WebSocket, conn: Conn, closed: asyncio.Future[None]) -> None:
    while True:
        msg = await conn.queue.get()
        if msg is None:  # what was queued is out: the reader stops, the endpoint closes
            if not closed.done():
                closed.set_result(None)
            return
        if not await _send(websocket, msg):
            conn.close()
            return


async def _send(websocket: WebSocket, msg: dict[str, Any]) -> bool:
    if websocket.application_state != WebSocketState.CONNECTED:
        return False
    text = fit_frame(msg)  # a frame over the cap would be refused by the page: never sent
    if text is None:
        log.warning("not sending a '%s' message larger than one frame", msg["type"])
        return True
    try:
        await websocket.send_text(text)
        return True
    except Exception:
        return False


async def _close(websocket: WebSocket, code: int) -> None:
    if websocket.application_state == WebSocketState.CONNECTED:
        try:
            await websocket.close(code=code)
        except Exception:
            pass
