"""Fuzzing the server's message handling through the real ``/ws`` endpoint.

A visitor, an agent and a share popup, authenticated and in a live share, send random and
mutated messages of every client type (aimed at their own ids and at a bystander's), frames
that are not JSON, binary frames, huge and deeply nested frames, server-to-client types and
second handshakes.  Whatever they send, the server must:

* answer only with messages that obey the protocol table, refusals with documented codes,
  never ``internal``, and log no error (an unhandled exception is logged by the endpoint);
* close a socket only as documented (1009 after ``too_large``, 1000 after a fatal error,
  1008 at a handshake), and keep serving;
* leave a bystander alone: another visitor and agent, with their own conversation and
  live share, whose chat and negotiation still work, whose stored history is intact.

Floods: a socket over its rate gets ``rate_limited`` and is closed; a chat flood stores at
most what the rate allows.  ``COVIEW_FUZZ_EXAMPLES`` sets the number of examples (default
60); ``bench/fuzz.py`` runs many more.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from hypothesis import HealthCheck, given, settings, strategies as st
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from test_signaling import DESKTOP_UA, Sock, connect

from coview import protocol as P
from coview_server.app import create_app
from coview_server.store import Store

EXAMPLES = int(os.environ.get("COVIEW_FUZZ_EXAMPLES", "60"))

pytestmark = pytest.mark.timeout(180 + EXAMPLES)
PASSWORD = "fuzz-agent-password-1"
MOBILE_UA = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36"
)
C2S_TYPES = sorted(t for t, (d, _) in P.MESSAGES.items() if d in (P.C2S, P.BOTH))
S2C_TYPES = sorted(t for t, (d, _) in P.MESSAGES.items() if d == P.S2C)
#: What each role's page really sends: fuzzed most often, with the other types mixed in.
ROLE_TYPES = {
    "visitor": ["visitor_info", "chat_send", "share_accept", "share_decline", "share_stop"],
    "agent": [
        "conversation_take",
        "conversation_open",
        "chat_send",
        "share_request",
        "share_watch",
        "share_stop",
        "share_path",
        "phone_share_start",
        "conversation_transfer",
        "colleague_share_request",
        "offer",
        "answer",
        "ice",
        "restart",
        "peer_status",
    ],
    "sharer": [
        "share_media",
        "share_pick_failed",
        "share_stop",
        "offer",
        "answer",
        "ice",
        "restart",
        "peer_status",
    ],
}
ALLOWED_CLOSES = {1000, 1008, 1009}


@pytest.fixture(autouse=True)
def _isolated(isolated_app: None) -> None:
    pass


class Closed(Exception):
    pass


#: Every socket a test opened: TestClient waits for each at exit, so each must be finished,
#: even when a test fails half-way (it would hang instead of failing).
_OPEN: list[Actor] = []


@dataclass
class Actor:
    """One page's socket: every message it gets is checked, whatever the test is doing."""

    client: TestClient
    role: str
    name: str
    cookie: str | None = None
    token: str | None = None
    sock: Sock | None = None
    cm: AbstractContextManager[Sock] | None = None
    got: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    welcome: dict[str, Any] = field(default_factory=dict)
    marks: Iterator[int] = field(default_factory=lambda: itertools.count(10_000))

    def open(self, token: str | None = None) -> dict[str, Any]:
        self.close()  # a socket the server closed is still TestClient's to finish
        headers = {"origin": "http://testserver"}
        if self.cookie:
            headers["cookie"] = f"coview_session={self.cookie}"
        self.got.clear()
        self.cm = connect(self.client, headers)
        self.sock = self.cm.__enter__()
        _OPEN.append(self)
        self.send("handshake", versions=["1"], role=self.role, token=token or self.token)
        self.welcome = self.until(lambda m: m["type"] == "welcome")
        if self.role == "visitor" and self.token is None:
            self.token = self.welcome["info"]["token"]
        return self.welcome

    @property
    def closed(self) -> bool:
        return self.sock is None or self.sock.close_code is not None

    def close(self) -> None:
        """Leave (or finish with a socket the server closed): TestClient waits for each."""
        if self.cm is not None:
            if self in _OPEN:
                _OPEN.remove(self)
            cm, self.cm, self.sock = self.cm, None, None
            cm.__exit__(None, None, None)

    def send(self, mtype: str, **fields: Any) -> None:
        self.send_text(P.encode(P.make(mtype, **fields)))

    def send_text(self, text: str) -> None:
        assert self.sock is not None
        self.sock.send_text(text)

    def send_bytes(self, data: bytes) -> None:
        assert self.sock is not None
        self.sock.send_bytes(data)

    def recv(self) -> dict[str, Any]:
        if self.sock is None or self.sock.close_code is not None:
            raise Closed
        try:
            msg = self.sock.recv()  # decodes with the protocol table: s2c messages only
        except WebSocketDisconnect:
            raise Closed from None
        self.got.append(msg)
        if msg["type"] == "error":
            assert msg["code"] in P.ERROR_CODES and msg["code"] != P.INTERNAL, msg
            self.errors.append(msg)
        return msg

    def until(self, pred: Any, limit: int = 500) -> dict[str, Any]:
        for _ in range(limit):
            msg = self.recv()
            if pred(msg):
                return msg
        raise AssertionError(f"{self.name}: expected message never arrived")

    def sync(self) -> list[dict[str, Any]]:
        """Everything the server sent up to now (a ping round trip)."""
        start = len(self.got)
        mark = next(self.marks)
        self.send("ping", t=mark)
        self.until(lambda m: m["type"] == "pong" and m.get("t") == mark, limit=10_000)
        return self.got[start:]

    def check_close(self) -> None:
        """A socket the server closed: only as documented."""
        assert self.sock is not None and self.sock.close_code is not None
        code = self.sock.close_code
        assert code in ALLOWED_CLOSES, (self.name, code, self.got[-3:])
        # This socket's last error says why (broadcasts may still slip in after it).
        mine = [m for m in self.got if m["type"] == "error"]
        last = mine[-1] if mine else None
        assert last is not None, (self.name, code, self.got[-5:])
        if code == 1009:
            assert last["code"] == P.TOO_LARGE
        else:
            assert last.get("fatal") is True, last


def login(client: TestClient, email: str) -> str:
    page = client.get("/login")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    r = client.post(
        "/login",
        data={"email": email, "password": PASSWORD, "csrf": found.group(1)},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    cookie = client.cookies.get("coview_session")
    assert cookie
    client.cookies.clear()
    return cookie


@dataclass
class Party:
    """A visitor, its agent and (while a share runs) the popup, with their ids."""

    visitor: Actor
    agent: Actor
    sharer: Actor
    conv: int = 0
    share: str = ""
    pc: str = ""
    chats: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def start(self) -> None:
        self.visitor.open()
        self.visitor.send("visitor_info", page="/shop", user_agent=DESKTOP_UA, can_share=True)
        self.visitor.send("chat_send", text="hello", client_id="first")
        self.conv = self.visitor.until(lambda m: m["type"] == "chat")["conversation"]
        self.agent.open()
        self.agent.send("conversation_take", conversation=self.conv)
        self.agent.until(lambda m: m["type"] == "visitor" and m["conversation"] == self.conv)
        self.new_share()

    def new_share(self) -> None:
        """End whatever share the party had (the fuzz may have left one half-open), start one."""
        v, a, s = self.visitor, self.agent, self.sharer
        s.close()
        v.send("visitor_info", page="/shop", user_agent=DESKTOP_UA, can_share=True)
        v.sync()
        running = {
            m["share"]: m["state"]
            for m in a.got
            if m["type"] == "share_state" and m["conversation"] == self.conv
        }
        for share, state in running.items():
            if state != "ended":
                a.send("share_stop", share=share)
        a.sync()
        a.send("share_request", conversation=self.conv)
        invite = v.until(lambda m: m["type"] == "share_invite" and m["conversation"] == self.conv)
        self.share = invite["share"]
        v.send("share_accept", share=self.share)
        s.open(token=invite["popup_url"].split("&t=", 1)[1])
        a.send("share_watch", share=self.share)
        self.pc = s.until(lambda m: m["type"] == "peer")["pc"]
        s.send("share_media", share=self.share, surface="monitor")
        a.until(
            lambda m: (
                m["type"] == "share_state" and m["share"] == self.share and m["state"] == "live"
            )
        )

    def share_live(self) -> bool:
        states = [
            m for m in self.agent.got if m["type"] == "share_state" and m["share"] == self.share
        ]
        return bool(states) and states[-1]["state"] == "live" and not self.sharer.closed

    def chat_both_ways(self) -> None:
        n = next(self.chats)
        self.visitor.send("chat_send", text=f"visitor says {n}", client_id=f"v{n}")
        self.agent.until(
            lambda m: m["type"] == "chat" and m["message"]["text"] == f"visitor says {n}"
        )
        self.agent.send(
            "chat_send", conversation=self.conv, text=f"agent says {n}", client_id=f"a{n}"
        )
        self.visitor.until(
            lambda m: m["type"] == "chat" and m["message"]["text"] == f"agent says {n}"
        )

    def negotiate(self) -> None:
        n = next(self.chats)
        self.sharer.send("offer", pc=self.pc, sdp=f"v=0 offer {n}")
        got = self.agent.until(lambda m: m["type"] == "offer")
        assert got == P.make("offer", pc=self.pc, sdp=f"v=0 offer {n}")
        self.agent.send("answer", pc=self.pc, sdp=f"v=0 answer {n}")
        got = self.sharer.until(lambda m: m["type"] == "answer")
        assert got == P.make("answer", pc=self.pc, sdp=f"v=0 answer {n}")

    def actors(self) -> tuple[Actor, Actor, Actor]:
        return self.visitor, self.agent, self.sharer


@contextmanager
def world(tmp_path: Path, **extra: Any) -> Iterator[tuple[TestClient, Party, Party]]:
    """The app, a fuzzed party and a bystander party, each with its own agent account."""
    # One TestClient address for every page: the per-address gate (test_limits.py) opened up.
    gate = {"ws_address_max": 10_000, "ws_address_rate": 1000.0, "ws_address_burst": 10_000.0}
    settings = make_settings(tmp_path, media_relay="off", **{**gate, **extra})

    async def users() -> None:
        store = await Store.open(settings.database_url)
        try:
            for name in ("fuzz", "bystander"):
                await store.create_user(f"{name}@example.com", name.title(), PASSWORD)
        finally:
            await store.close()

    asyncio.run(users())
    with TestClient(create_app(settings)) as client:
        try:
            parties = []
            for name in ("fuzz", "bystander"):
                cookie = login(client, f"{name}@example.com")
                party = Party(
                    Actor(client, "visitor", f"{name}-visitor"),
                    Actor(client, "agent", f"{name}-agent", cookie=cookie),
                    Actor(client, "sharer", f"{name}-sharer"),
                )
                party.start()
                parties.append(party)
            yield client, parties[0], parties[1]
        finally:
            while _OPEN:
                _OPEN[-1].close()


# --- what the fuzzed pages send ---------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


def nested(depth: int) -> str:
    return '{"type": "ping", "x": ' + "[" * depth + "]" * depth + "}"


def draw_value(
    data: st.DataObject, name: str, spec: tuple[Any, ...], ids: dict[str, list[Any]]
) -> Any:
    kind, _required, max_len, choices, _nullable = spec
    if name == "agent":  # a colleague: never a real other account (see the ids)
        return data.draw(st.sampled_from(ids[name]))
    if data.draw(st.integers(0, 9)) == 0:
        return data.draw(json_values)  # anything at all
    if name in ids:
        return data.draw(st.sampled_from(ids[name]))
    if choices:
        return data.draw(st.sampled_from([*choices, "nope", ""]))
    if kind == P.STR:
        cap = max_len or 64
        return data.draw(
            st.text(max_size=20) | st.sampled_from(["", " ", "x" * cap, "x" * (cap + 1)])
        )
    if kind in (P.INT, P.NUM):
        return data.draw(st.integers(-5, 5) | st.sampled_from([2**53, -(2**53), 1.5, True]))
    if kind == P.BOOL:
        return data.draw(st.booleans())
    if kind == P.CANDIDATE:
        return data.draw(
            st.none()
            | st.fixed_dictionaries(
                {"candidate": st.text(max_size=30)},
                optional={
                    "sdpMid": st.none() | st.text(max_size=3),
                    "sdpMLineIndex": st.integers(-1, 65),
                },
            )
        )
    return data.draw(json_values)


def draw_frame(data: st.DataObject, role: str, ids: dict[str, list[Any]]) -> str | bytes:
    what = data.draw(
        st.sampled_from(
            ["own"] * 8 + ["any"] * 3 + ["s2c", "handshake", "json", "text", "bytes", "deep", "big"]
        )
    )
    if what in ("own", "any", "s2c", "handshake"):
        pool = {"own": ROLE_TYPES[role], "any": C2S_TYPES, "s2c": S2C_TYPES}.get(
            what, ["handshake"]
        )
        mtype = data.draw(st.sampled_from(pool))
        msg: dict[str, Any] = {"type": mtype}
        for name, spec in P.MESSAGES[mtype][1].items():
            if spec[1] or data.draw(st.booleans()):
                msg[name] = draw_value(data, name, spec, ids)
        if data.draw(st.integers(0, 7)) == 0:
            msg[data.draw(st.text(max_size=6))] = data.draw(json_values)
        return json.dumps(msg)
    if what == "json":
        return json.dumps(data.draw(json_values))
    if what == "text":
        return data.draw(st.text(st.characters(exclude_categories=("Cs",)), max_size=200))
    if what == "bytes":
        return data.draw(st.binary(max_size=200))
    if what == "deep":
        return nested(data.draw(st.sampled_from([10, 1000, 30_000])))
    size = data.draw(st.sampled_from([P.MAX_MESSAGE_BYTES - 100, P.MAX_MESSAGE_BYTES + 1, 200_000]))
    return json.dumps({"type": "ping", "pad": "x" * size})


# --- the tests --------------------------------------------------------------------------------


def _logged_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    # (warnings are legitimate here: e.g. a fuzzed peer_status "failed" with the relay off)
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]


def test_random_and_mutated_messages_never_hurt_the_server_or_a_bystander(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with world(tmp_path) as (client, fuzz, bystander):
        history_before = _history(client, bystander)
        last_seen = [time.monotonic()]

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(data=st.data())
        def fuzz_once(data: st.DataObject) -> None:
            _ensure(fuzz)
            ids = {
                "conversation": [fuzz.conv, bystander.conv, 0, -1, 10**6],
                "share": [fuzz.share, bystander.share, "", "nope", "x" * 64],
                "pc": [fuzz.pc, bystander.pc, "", "p", "x" * 128],
                "client_id": ["c1", "c1", "", "x" * 65],
                # Handing the conversation to, or asking a share of, a real colleague is
                # allowed: it would change the world this test checks, so only the agent
                # itself and accounts that do not exist (and wrong kinds) are aimed at.
                "agent": [fuzz.agent.welcome["info"]["user"]["id"], 0, -1, 10**6, "1", None],
            }
            actor = data.draw(st.sampled_from(fuzz.actors()))
            # Drawn before anything is sent, so that replaying an example draws the same.
            frames = [
                draw_frame(data, actor.role, ids) for _ in range(data.draw(st.integers(1, 6)))
            ]
            for frame in frames:
                if isinstance(frame, bytes):
                    actor.send_bytes(frame)
                else:
                    actor.send_text(frame)
            for a in fuzz.actors():
                try:
                    a.sync()
                except Closed:
                    a.check_close()
            if time.monotonic() - last_seen[0] > 10:  # a quiet page is closed after 45 s
                for a in bystander.actors():
                    a.sync()
                last_seen[0] = time.monotonic()

        fuzz_once()
        # The fuzz did reach the server's checks (a guard against a fuzzer that only pings).
        codes = {e["code"] for actor in fuzz.actors() for e in actor.errors}
        assert len(codes) >= 3, codes
        # The bystander noticed nothing: no refusal, no close, and it still works.
        for actor in bystander.actors():
            actor.sync()
            assert actor.errors == [], actor.errors
        assert bystander.share_live()
        bystander.chat_both_ways()
        bystander.negotiate()
        after = _history(client, bystander)
        assert after[: len(history_before)] == history_before
        assert [m["text"] for m in after[len(history_before) :]] == [
            "visitor says 1",
            "agent says 1",
        ]
        # The fuzzed party recovers too: a fresh share, chat and negotiation.
        _reopen(fuzz)
        fuzz.chat_both_ways()
        fuzz.negotiate()
    assert _logged_errors(caplog) == []


def _ensure(party: Party) -> None:
    """Every socket of the party open (checking how the server closed any) and a live share."""
    for actor in party.actors():
        if not actor.closed:
            try:
                actor.sync()
            except Closed:
                actor.check_close()
    if not party.share_live() or any(a.closed for a in party.actors()):
        _reopen(party)


def _reopen(party: Party) -> None:
    for _attempt in range(3):
        try:
            for actor in (party.visitor, party.agent):
                if actor.closed:
                    actor.open()
                    if actor is party.agent:
                        actor.send("conversation_open", conversation=party.conv)
                        actor.until(lambda m: m["type"] == "visitor")
            party.new_share()
            return
        except Closed:  # one of them had used up its refusals (50) meanwhile: again
            continue
    raise AssertionError("could not set the fuzzed party up again")


def _history(client: TestClient, party: Party) -> list[dict[str, Any]]:
    """The conversation as stored: what a reloaded widget gets."""
    page = Actor(client, "visitor", "reload", token=party.visitor.token)
    page.open()
    try:
        history = page.until(lambda m: m["type"] == "history")
    finally:
        page.close()
    assert history["conversation"] == party.conv
    return [{k: m[k] for k in ("id", "sender", "text", "client_id")} for m in history["messages"]]


@pytest.mark.parametrize("mtype", ["ping", "chat_send", "share_watch", "offer"])
def test_a_flood_is_refused_then_closed_and_others_carry_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mtype: str
) -> None:
    caplog.set_level(logging.WARNING)
    # A slow rate, so that the flood outruns it even though each chat takes the server a while.
    with world(tmp_path, ws_rate=5.0, ws_burst=40.0) as (client, fuzz, bystander):
        who = fuzz.visitor if mtype == "chat_send" else fuzz.agent
        fields = {
            "ping": {},
            "chat_send": {"text": "spam"},
            "share_watch": {"share": fuzz.share},
            "offer": {"pc": fuzz.pc, "sdp": "v=0"},  # the agent is the answerer: refused
        }[mtype]
        for i in range(200):
            extra = {"client_id": f"f{i}"} if mtype == "chat_send" else {}
            who.send(mtype, **fields, **extra)
        with pytest.raises(Closed):
            for _ in range(5000):
                who.recv()
        who.check_close()
        assert who.sock is not None and who.sock.close_code == 1000
        limited = [e for e in who.errors if e["code"] == P.RATE_LIMITED]
        assert limited and limited[-1].get("fatal") is True
        assert not any(e.get("fatal") for e in who.errors[:-1])
        if mtype == "chat_send":
            stored = [m for m in _history(client, fuzz) if m["text"] == "spam"]
            # The burst (40, less what setting up the world spent) and what refilled meanwhile.
            assert 30 <= len(stored) <= 100
        # Nobody else lost anything.
        for actor in bystander.actors():
            actor.sync()
            assert actor.errors == []
        bystander.chat_both_ways()
        bystander.negotiate()
        _reopen(fuzz)
        fuzz.chat_both_ways()
    assert _logged_errors(caplog) == []


def test_a_history_too_long_for_one_frame_still_reaches_the_page(tmp_path: Path) -> None:
    """Found by the fuzzer: long chats made ``history`` larger than a frame, which every
    page's decoder refuses (``too_large``), so the widget and the console lost the whole
    conversation.  The server now sends the newest messages that fit."""
    with world(tmp_path) as (client, fuzz, _bystander):
        texts = [f"{i:02d} " + "x" * 3990 for i in range(30)]  # ~120 KB of chat
        for i, text in enumerate(texts):
            fuzz.visitor.send("chat_send", text=text, client_id=f"long{i}")
        fuzz.visitor.sync()
        history = _history(client, fuzz)  # a reloaded widget: Sock.recv decodes it
        got = [m["text"] for m in history]
        assert got[-1] == texts[-1]
        chats = [t for t in got if t in texts]  # (system messages come first)
        assert 10 < len(chats) < 30 and chats == texts[-len(chats) :]
        fuzz.agent.send("conversation_open", conversation=fuzz.conv)
        opened = fuzz.agent.until(lambda m: m["type"] == "history")
        assert opened["messages"][-1]["text"] == texts[-1]
