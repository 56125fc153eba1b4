"""The ``/ws`` endpoint through Starlette's TestClient: Origin, handshake, errors, rate limit."""

from __future__ import annotations

import json
import re
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, make_settings
from starlette.testclient import TestClient, WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from coview import protocol as P
from coview_server import signaling
from coview_server.app import create_app

pytestmark = pytest.mark.timeout(30)  # a missing reply would otherwise block forever

ORIGIN = {"origin": "http://testserver"}
DESKTOP_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)


@pytest.fixture(autouse=True)
def _isolated(isolated_app: None) -> None:
    pass


def login(client: TestClient, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> None:
    page = client.get("/login")
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match is not None
    response = client.post(
        "/login",
        data={"email": email, "password": password, "csrf": match.group(1)},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text


class Sock:
    """A test socket that validates what the server sends and remembers the server's close."""

    def __init__(self, ws: WebSocketTestSession) -> None:
        self.ws = ws
        self.close_code: int | None = None

    def send(self, mtype: str, **fields: Any) -> None:
        self.ws.send_text(P.encode(P.make(mtype, **fields)))

    def send_text(self, text: str) -> None:
        self.ws.send_text(text)

    def send_bytes(self, data: bytes) -> None:
        self.ws.send_bytes(data)

    def recv(self) -> dict[str, Any]:
        message = self.ws.receive()
        if message["type"] == "websocket.close":
            self.close_code = int(message.get("code", 1000))
            raise WebSocketDisconnect(self.close_code)
        return P.decode(message["text"], P.S2C)  # every server message obeys the table


@contextmanager
def connect(client: TestClient, headers: dict[str, str] | None = None) -> Iterator[Sock]:
    with client.websocket_connect(
        "/ws", headers=dict(ORIGIN if headers is None else headers)
    ) as ws:
        sock = Sock(ws)
        try:
            yield sock
        finally:
            if sock.close_code is None:
                # Leave like a browser does and wait for the server to finish with the socket:
                # TestClient cancels the endpoint on exit, which could interrupt the hub mid-way.
                ws.close(1000)
                for _ in range(100_000):
                    if ws.receive()["type"] == "websocket.close":
                        break


def handshake(ws: Sock, role: str, token: str | None = None) -> dict[str, Any]:
    ws.send("handshake", versions=["1"], role=role, token=token)
    welcome = ws.recv()
    assert welcome["type"] == "welcome", welcome
    assert welcome["role"] == role and welcome["version"] == P.PROTOCOL_VERSION
    return welcome


def until(ws: Sock, pred: Callable[[dict[str, Any]], bool], limit: int = 100) -> dict[str, Any]:
    for _ in range(limit):
        msg = ws.recv()
        if pred(msg):
            return msg
    raise AssertionError("expected message never arrived")


def of_type(ws: Sock, mtype: str) -> dict[str, Any]:
    return until(ws, lambda m: m["type"] == mtype)


def expect_closed(ws: Sock) -> int:
    with pytest.raises(WebSocketDisconnect):
        for _ in range(1000):
            ws.recv()
    assert ws.close_code is not None
    return ws.close_code


def refused_at_handshake(client: TestClient, first: str, code: str) -> dict[str, Any]:
    with connect(client) as ws:
        ws.send_text(first)
        err = ws.recv()
        assert err["type"] == "error" and err["code"] == code, err
        assert err.get("fatal") is True
        assert expect_closed(ws) == 1008
        return err


def assert_still_serving(client: TestClient) -> None:
    with connect(client) as ws:
        welcome = handshake(ws, "visitor")
        assert welcome["info"]["visitor"]
        ws.send("ping", t=7)
        assert ws.recv() == P.make("pong", t=7)


def pinged(ws: Sock) -> None:
    """Round trip: the socket is open and has answered everything sent before."""
    ws.send("ping", t=42)
    assert until(ws, lambda m: m["type"] == "pong") == P.make("pong", t=42)


# --- Origin and handshake ---------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://evil.example"},
        {"origin": "http://testserver.evil.example"},
        {"origin": "http://testserver:8080"},
        {"origin": "null"},
        {},
    ],
    ids=["foreign", "lookalike", "port", "null", "missing"],
)
def test_foreign_or_missing_origin_refused(client: TestClient, headers: dict[str, str]) -> None:
    with pytest.raises(WebSocketDisconnect) as refused:
        with connect(client, headers):
            pass  # pragma: no cover - never accepted
    assert refused.value.code == 1008
    assert_still_serving(client)


def test_allowed_origin_from_settings(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, allowed_origins="https://shop.example")
    with TestClient(create_app(settings)) as client:
        with connect(client, {"origin": "https://shop.example"}) as ws:
            handshake(ws, "visitor")


def test_handshake_required_first(client: TestClient) -> None:
    err = refused_at_handshake(client, P.encode(P.make("ping")), P.HANDSHAKE_REQUIRED)
    assert err["ref"] == "handshake"
    refused_at_handshake(
        client,
        P.encode(P.make("chat_send", text="hi", client_id="c1")),
        P.HANDSHAKE_REQUIRED,
    )
    refused_at_handshake(client, "{nope", P.BAD_JSON)
    assert_still_serving(client)


def test_unsupported_version(client: TestClient) -> None:
    text = P.encode(P.make("handshake", versions=["0", "2"], role="visitor"))
    err = refused_at_handshake(client, text, P.UNSUPPORTED_VERSION)
    assert "1" in err["text"]


def test_agent_without_session_is_unauthorized(client: TestClient) -> None:
    refused_at_handshake(
        client, P.encode(P.make("handshake", versions=["1"], role="agent")), P.UNAUTHORIZED
    )
    client.cookies.set("coview_session", "forged-session-token")
    refused_at_handshake(
        client, P.encode(P.make("handshake", versions=["1"], role="agent")), P.UNAUTHORIZED
    )


def test_agent_with_session_is_welcomed(client: TestClient) -> None:
    login(client)
    with connect(client) as ws:
        welcome = handshake(ws, "agent")
        assert welcome["info"]["user"]["role"] == "admin"
        assert "token" not in welcome["info"]
        assert of_type(ws, "conversations")["items"] == []


def test_visitor_token_keeps_identity_and_history(client: TestClient) -> None:
    with connect(client) as ws:
        welcome = handshake(ws, "visitor")
        token = welcome["info"]["token"]
        visitor = welcome["info"]["visitor"]
        assert token and visitor
        ws.send("chat_send", text="where is my order?", client_id="m1")
        chat = of_type(ws, "chat")
        assert chat["message"]["text"] == "where is my order?"
    with connect(client) as ws:
        again = handshake(ws, "visitor", token=token)
        assert again["info"]["visitor"] == visitor
        assert "token" not in again["info"]  # nothing new to store
        history = of_type(ws, "history")
        assert history["conversation"] == chat["conversation"]
        assert [m["text"] for m in history["messages"]] == ["where is my order?"]
    with connect(client) as ws:  # an unknown token is a new visitor, not an error
        other = handshake(ws, "visitor", token="not-a-real-token")
        assert other["info"]["visitor"] != visitor and other["info"]["token"] != token


# --- the sharer's one-time token ---------------------------------------------------------


def _invite(agent: Sock, visitor: Sock) -> dict[str, Any]:
    """Visitor chats, the agent takes the conversation and asks for a share."""
    handshake(visitor, "visitor")
    visitor.send("visitor_info", page="/shop", user_agent=DESKTOP_UA, can_share=True)
    visitor.send("chat_send", text="help", client_id="m1")
    conv = of_type(visitor, "chat")["conversation"]
    agent.send("conversation_take", conversation=conv)
    until(agent, lambda m: m["type"] == "visitor" and m["record"]["can_share"] is True)
    agent.send("share_request", conversation=conv)
    invite = of_type(visitor, "share_invite")
    assert invite["conversation"] == conv
    return invite


def test_sharer_token_valid_once_then_ended(client: TestClient) -> None:
    login(client)
    with connect(client) as agent, connect(client) as visitor:
        handshake(agent, "agent")
        invite = _invite(agent, visitor)
        share = invite["share"]
        token = invite["popup_url"].split("&t=", 1)[1]
        assert invite["popup_url"] == f"/popup#share={share}&t={token}"

        refused_at_handshake(
            client,
            P.encode(P.make("handshake", versions=["1"], role="sharer", token="forged" + token)),
            P.UNAUTHORIZED,
        )
        refused_at_handshake(
            client, P.encode(P.make("handshake", versions=["1"], role="sharer")), P.UNAUTHORIZED
        )
        with connect(client) as sharer:
            welcome = handshake(sharer, "sharer", token=token)
            assert welcome["info"]["share"] == share
            assert welcome["info"]["conversation"] == invite["conversation"]
            assert welcome["info"]["agent_name"] == "Administrator"
            assert of_type(sharer, "share_state")["state"] == "waiting"
            refused_at_handshake(
                client,
                P.encode(P.make("handshake", versions=["1"], role="sharer", token=token)),
                P.USED,
            )
            sharer.send("share_media", share=share, surface="monitor")
            assert until(agent, lambda m: m["type"] == "share_state" and m["state"] == "live")
            agent.send("share_stop", share=share)
            ended = until(sharer, lambda m: m["type"] == "share_state" and m["state"] == "ended")
            assert ended["reason"] == "stopped_by_viewer"
            refused_at_handshake(
                client,
                P.encode(P.make("handshake", versions=["1"], role="sharer", token=token)),
                P.ENDED,
            )
            # The ended share refuses further use from its own window too.
            sharer.send("share_stop", share=share)
            err = of_type(sharer, "error")
            assert err["code"] == P.ENDED and not err.get("fatal")


def _drop(sock: Sock, code: int) -> None:
    """Close like a lost connection (any code but 1000/1001) and wait for the server."""
    sock.ws.close(code)
    for _ in range(100_000):
        if sock.ws.receive()["type"] == "websocket.close":
            break
    sock.close_code = code


def _resume(sock: Sock, credential: str) -> dict[str, Any]:
    sock.send("handshake", versions=["1"], role="sharer", resume=credential)
    return sock.recv()


def test_a_lost_share_window_resumes_with_a_credential_that_works_once(
    client: TestClient,
) -> None:
    login(client)
    with connect(client) as agent, connect(client) as visitor:
        handshake(agent, "agent")
        invite = _invite(agent, visitor)
        share = invite["share"]
        token = invite["popup_url"].split("&t=", 1)[1]
        with connect(client) as sharer:
            first = handshake(sharer, "sharer", token=token)["info"]
            assert len(first["resume"]) >= 32 and "resumed" not in first
            sharer.send("share_media", share=share, surface="window")
            until(agent, lambda m: m["type"] == "share_state" and m["state"] == "live")
            _drop(sharer, 4000)
        away = until(agent, lambda m: m["type"] == "share_state" and m.get("away"))
        assert away["state"] == "live" and away["away"] == ["sharer"]

        with connect(client) as back:
            welcome = _resume(back, first["resume"])
            assert welcome["type"] == "welcome", welcome
            info = welcome["info"]
            assert info["resumed"] is True and info["share"] == share
            assert info["resume"] != first["resume"]
            assert of_type(back, "share_state")["away"] == []
            found = until(agent, lambda m: m["type"] == "share_state" and m.get("away") == [])
            assert found["state"] == "live"
            with connect(client) as thief:  # the spent credential is worth nothing
                err = _resume(thief, first["resume"])
                assert err["code"] == P.UNAUTHORIZED and err["fatal"] is True
                assert expect_closed(thief) == 1008
            agent.send("share_stop", share=share)
            until(back, lambda m: m["type"] == "share_state" and m["state"] == "ended")
        with connect(client) as late:
            err = _resume(late, info["resume"])
            assert err["code"] == P.ENDED and expect_closed(late) == 1008


def test_a_share_window_closed_by_its_page_ends_the_share(client: TestClient) -> None:
    login(client)
    with connect(client) as agent, connect(client) as visitor:
        handshake(agent, "agent")
        invite = _invite(agent, visitor)
        token = invite["popup_url"].split("&t=", 1)[1]
        with connect(client) as sharer:
            handshake(sharer, "sharer", token=token)
            _drop(sharer, 1001)  # what a browser sends when the window closes
        ended = until(agent, lambda m: m["type"] == "share_state" and m["state"] == "ended")
        assert ended["reason"] == "sharer_left"


def test_sharer_token_expired(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    login(client)
    with connect(client) as agent, connect(client) as visitor:
        handshake(agent, "agent")
        invite = _invite(agent, visitor)
        token = invite["popup_url"].split("&t=", 1)[1]
        later = time.time() + 3600
        monkeypatch.setattr(signaling, "time", types.SimpleNamespace(time=lambda: later))
        refused_at_handshake(
            client,
            P.encode(P.make("handshake", versions=["1"], role="sharer", token=token)),
            P.EXPIRED,
        )


# --- bad frames -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", P.BAD_JSON),
        ("", P.BAD_JSON),
        ("[1, 2, 3]", P.NOT_OBJECT),
        ('"handshake"', P.NOT_OBJECT),
        ('{"type": "teleport"}', P.UNKNOWN_TYPE),
        ('{"no": "type"}', P.BAD_FIELD),
        (P.encode(P.make("pong", t="soon")), P.BAD_FIELD),
        (P.encode(P.make("chat_send", text=5, client_id="c")), P.BAD_FIELD),
        (P.encode(P.make("chat_send", text="x" * 4001, client_id="c")), P.BAD_FIELD),
        (P.encode(P.make("chat_send", client_id="c")), P.BAD_FIELD),
        (P.encode(P.make("share_media", share="s", surface="tv")), P.BAD_FIELD),
        (
            P.encode(
                P.make("welcome", version="1", role="agent", conn="c", ice_servers=[], info={})
            ),
            P.WRONG_DIRECTION,
        ),
        (
            P.encode(P.make("share_state", share="s", conversation=1, state="live")),
            P.WRONG_DIRECTION,
        ),
        (P.encode(P.make("error", code="x", text="y")), P.WRONG_DIRECTION),
        # Validated, then refused by the hub: a visitor may not act as an agent.
        (P.encode(P.make("share_request", conversation=1)), P.FORBIDDEN),
        (P.encode(P.make("offer", pc="p", sdp="v=0")), P.FORBIDDEN),
        (P.encode(P.make("handshake", versions=["1"], role="visitor")), P.FORBIDDEN),
    ],
)
def test_bad_frames_answered_with_code(client: TestClient, frame: str, code: str) -> None:
    with connect(client) as ws:
        handshake(ws, "visitor")
        ws.send_text(frame)
        err = of_type(ws, "error")
        assert err["code"] == code, err
        assert not err.get("fatal")
        pinged(ws)  # the socket stays open
    assert_still_serving(client)


def test_binary_frames(client: TestClient) -> None:
    with connect(client) as ws:
        handshake(ws, "visitor")
        ws.send_bytes(b"\xff\xfe\x00garbage")
        err = of_type(ws, "error")
        assert err["code"] == P.BAD_JSON and not err.get("fatal")
        pinged(ws)
        ws.send_bytes(b"{")
        assert of_type(ws, "error")["code"] == P.BAD_JSON
        pinged(ws)
    with connect(client) as ws:
        handshake(ws, "visitor")
        ws.send_bytes(b"x" * (P.MAX_MESSAGE_BYTES + 1))
        err = of_type(ws, "error")
        assert err["code"] == P.TOO_LARGE
        assert expect_closed(ws) == 1009
    assert_still_serving(client)


@pytest.mark.parametrize("extra", [1, 1000])
def test_oversized_message_closes_socket(client: TestClient, extra: int) -> None:
    with connect(client) as ws:
        handshake(ws, "visitor")
        big = json.dumps({"type": "ping", "pad": "x" * (P.MAX_MESSAGE_BYTES + extra)})
        ws.send_text(big)
        err = of_type(ws, "error")
        assert err["code"] == P.TOO_LARGE
        assert expect_closed(ws) == 1009
    assert_still_serving(client)


def test_oversized_multibyte_message(client: TestClient) -> None:
    # Under the limit in characters, over it in UTF-8 bytes.
    with connect(client) as ws:
        handshake(ws, "visitor")
        ws.send_text(json.dumps({"type": "ping", "pad": "é" * 40000}, ensure_ascii=False))
        assert of_type(ws, "error")["code"] == P.TOO_LARGE
        assert expect_closed(ws) == 1009


def test_message_at_the_limit_is_accepted(client: TestClient) -> None:
    with connect(client) as ws:
        handshake(ws, "visitor")
        head = '{"type": "ping", "t": 3, "pad": "'
        frame = head + "x" * (P.MAX_MESSAGE_BYTES - len(head) - 2) + '"}'
        assert len(frame.encode()) == P.MAX_MESSAGE_BYTES
        ws.send_text(frame)
        assert ws.recv() == P.make("pong", t=3)


def test_oversized_handshake_refused(client: TestClient) -> None:
    big = json.dumps({"type": "handshake", "versions": ["1"], "role": "visitor", "p": "x" * 70000})
    with connect(client) as ws:
        ws.send_text(big)
        err = ws.recv()
        assert err["code"] == P.TOO_LARGE and err.get("fatal") is True
        expect_closed(ws)
    assert_still_serving(client)


# --- liveness and rate limiting ------------------------------------------------------------


def test_a_socket_the_hub_closes_is_closed_at_once(client: TestClient) -> None:
    """Not at the reader's next wake-up, up to 5 s later: until the page hears the close it
    cannot come back (a failover's rejoin closes every socket of the dead hub so; a share
    window stopped then missed its share's end in CI)."""
    with connect(client) as visitor:
        welcome = handshake(visitor, "visitor")
        conn = client.app_state["hub"].conns[welcome["conn"]]
        visitor.send("ping")  # a round trip: the reader is back waiting for the page
        of_type(visitor, "pong")
        assert client.portal is not None
        started = time.monotonic()
        client.portal.call(conn.close)
        assert expect_closed(visitor) == 1000
        assert time.monotonic() - started < 2.0


def test_ping_gets_pong(client: TestClient) -> None:
    with connect(client) as ws:
        handshake(ws, "visitor")
        ws.send("ping", t=123.5)
        assert ws.recv() == P.make("pong", t=123.5)
        ws.send("ping")
        assert ws.recv() == P.make("pong")
        ws.send("pong", t=1)  # an answer to our ping: no reply
        pinged(ws)


def test_flood_is_rate_limited_then_closed(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, ws_rate=0.5, ws_burst=5)
    with TestClient(create_app(settings)) as client:
        with connect(client) as ws:
            handshake(ws, "visitor")
            for i in range(80):
                ws.send("ping", t=i)
            got: list[dict[str, Any]] = []
            with pytest.raises(WebSocketDisconnect) as closed:
                for _ in range(200):
                    got.append(ws.recv())
            pongs = [m for m in got if m["type"] == "pong"]
            errors = [m for m in got if m["type"] == "error"]
            # The burst is served, then refused; never more than burst + refill.
            assert 5 <= len(pongs) <= 7
            assert [m["t"] for m in pongs] == list(range(len(pongs)))
            assert errors and all(m["code"] == P.RATE_LIMITED for m in errors)
            assert not any(m.get("fatal") for m in errors[:-1])
            assert errors[-1].get("fatal") is True
            assert got[-1] == errors[-1]
            assert closed.value.code == 1000
        # Other sockets are not affected.
        assert_still_serving(client)
