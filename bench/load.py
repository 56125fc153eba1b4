#!/usr/bin/env python3
"""Coview signaling load: many concurrent share sessions, or many idle sockets, on one process.

    .venv/bin/python bench/load.py                       # 1 000 share sessions, held 30 s
    .venv/bin/python bench/load.py --sessions 250,500,1000 --chat-every 20
    .venv/bin/python bench/load.py --sessions 0 --idle 10000 --duration 40 --ramp 80
    .venv/bin/python bench/load.py --sessions 0 --idle 5000,10000,19000 --ramp 80

Needs root: like bench/run.py it creates a throw-away network namespace that has only
``lo`` (``ip netns add cvload-<pid>``), re-runs itself inside it and deletes it at the end.
Every run starts a fresh ``python -m coview_server serve`` (own SQLite database, media
relay off: its media path is bench/relay.py's business) and drives it from this process with
plain asyncio clients (the ``websockets`` library, permessage-deflate on as browsers have it):

* **sessions**: agents (``--agents``, created in the database, then logged in through the
  real ``/login`` form) hold one console socket each; every session is a visitor socket
  (``handshake`` visitor, ``visitor_info`` with a desktop user agent, ``chat_send``), the
  agent's ``conversation_take`` and ``share_request``, the visitor's ``share_accept``, a
  sharer socket (``handshake`` sharer with the token from ``share_invite.popup_url``),
  ``share_watch``, ``share_media``, then ``offer``/``answer``/``ice`` routed by ``pc`` and
  ``peer_status``.  When every session is live they are all held for ``--duration``
  seconds, chatting both ways and pinging, then each ends with ``share_stop``.
* **idle**: handshaken visitor sockets (``visitor_info`` sent, nothing else) that ping every
  ``--ping-every`` seconds, held for ``--duration``.

Each visitor (and its popup) comes from its own loopback source address (127.1.x.y, all
on ``lo``; the server listens on 127.0.0.1 only), as visitors do from their own networks,
so the server's per-address limits apply with their default values (``--per-address``
packs more sockets per address).

Every routed message (chat, offer, answer, ice) carries a unique nonce; it must arrive
exactly once at each intended socket and at no other.  Every message any socket gets is
also checked against what that socket belongs to (its conversation, share, peer
connection).  Reported per run: sessions/sockets held, setup time, message latency
percentiles (send to receipt, same clock), ping round trips, lost / misrouted / duplicated
messages, errors, server RSS per connection (``/proc/<pid>/status`` VmRSS before and at
peak), server CPU.  Results go to bench/results/load-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import ipaddress
import itertools
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
BENCH = SCRIPT.parent
ROOT = BENCH.parent
for _p in (ROOT / "server", ROOT / "web"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from coview import protocol as P  # noqa: E402
from coview_server.testing.server import Server  # noqa: E402

RESULTS = BENCH / "results"
DESKTOP_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
AGENT_PASSWORD = "load-agent-password-1"
SESSION_COOKIE = "coview_session"
CSRF_COOKIE = "coview_csrf"
VISITOR_NET = ipaddress.IPv4Address("127.1.0.1")  # visitors and popups: 127.1.0.1 + k
AGENT_NET = ipaddress.IPv4Address("127.2.0.1")  # agents: 127.2.0.1 + k
SDP = (
    "v=0\r\no=- {n} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:{ufrag}\r\n"
    "a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\na=setup:{setup}\r\na=mid:0\r\na={dir}\r\n"
    "a=rtpmap:96 VP8/90000\r\na=x-load:{tag}\r\n"
)
CANDIDATES_PER_SIDE = 3
_TAG = re.compile(r"L\|(\d+)\|")


def tag(nonce: int) -> str:
    return f"L|{nonce}|"


def source(net: ipaddress.IPv4Address, k: int) -> str:
    return str(net + k)


# --- measurements -----------------------------------------------------------------------


@dataclass
class Routed:
    """One routed message: who sent it, who must get it, who did."""

    kind: str
    sender: str
    to: frozenset[str]
    sent: float
    phase: str
    got: Counter[str] = field(default_factory=Counter)


class Stats:
    """Everything a run counts; shared by every client socket of the run."""

    def __init__(self) -> None:
        self.nonces = itertools.count(1)
        self.routed: dict[int, Routed] = {}
        self.pending = 0  # (nonce, recipient) pairs not delivered yet
        self.settled = asyncio.Event()
        self.latency: dict[str, list[float]] = {}
        self.misrouted = 0  # a nonce at a socket it was not meant for, or an unknown nonce
        self.duplicated = 0
        self.foreign = 0  # any message naming a conversation/share/pc the socket is not in
        self.samples: list[str] = []
        self.errors: Counter[str] = Counter()
        self.setup: list[float] = []
        self.open_sockets = 0
        self.peak_sockets = 0
        self.phases: dict[str, float] = {}
        #: setup (sessions being set up), hold (all held), end: latency is kept per phase.
        self.phase = "setup"

    def new(self, kind: str, sender: str, to: set[str] | frozenset[str]) -> int:
        nonce = next(self.nonces)
        self.routed[nonce] = Routed(kind, sender, frozenset(to), time.perf_counter(), self.phase)
        self.pending += len(to)
        self.settled.clear()
        return nonce

    def receipt(self, client: str, nonce: int, now: float) -> None:
        r = self.routed.get(nonce)
        if r is None or client not in r.to:
            self.misrouted += 1
            self.sample(f"nonce {nonce} at {client} (meant for {r.to if r else 'nobody'})")
            return
        r.got[client] += 1
        if r.got[client] > 1:
            self.duplicated += 1
            return
        self.pending -= 1
        if client != r.sender:
            self.latency.setdefault(r.kind, []).append(now - r.sent)
            self.latency.setdefault(r.phase + ":routed", []).append(now - r.sent)
        if self.pending == 0:
            self.settled.set()

    def ping(self, rtt: float) -> None:
        self.latency.setdefault("ping", []).append(rtt)
        self.latency.setdefault(self.phase + ":ping", []).append(rtt)

    def error(self, what: str, detail: str = "") -> None:
        self.errors[what] += 1
        if detail:
            self.sample(f"{what}: {detail}")

    def wrong_place(self, client: str, msg: dict[str, Any]) -> None:
        self.foreign += 1
        self.sample(f"{client} got {json.dumps(msg)[:200]}")

    def sample(self, text: str) -> None:
        if len(self.samples) < 20:
            self.samples.append(text)

    def opened(self) -> None:
        self.open_sockets += 1
        self.peak_sockets = max(self.peak_sockets, self.open_sockets)

    def lost(self) -> int:
        return sum(1 for r in self.routed.values() for c in r.to if not r.got[c])

    def delivered(self) -> int:
        return sum(1 for r in self.routed.values() for c in r.to if r.got[c])


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    s = sorted(values)

    def at(q: float) -> float:
        return s[min(len(s) - 1, int(q * len(s)))]

    return {
        "n": len(s),
        "p50_ms": round(at(0.50) * 1000, 2),
        "p90_ms": round(at(0.90) * 1000, 2),
        "p99_ms": round(at(0.99) * 1000, 2),
        "max_ms": round(s[-1] * 1000, 2),
        "mean_ms": round(statistics.fmean(s) * 1000, 2),
    }


# --- one client socket --------------------------------------------------------------------


class StepFailed(Exception):
    pass


Pred = Callable[[dict[str, Any]], bool]


class Client:
    """A signaling socket that checks what it gets and lets a flow wait for a message."""

    def __init__(self, name: str, role: str, stats: Stats) -> None:
        self.name = name
        self.role = role
        self.stats = stats
        self.ws: ClientConnection | None = None
        self.waiters: list[tuple[Pred, asyncio.Future[dict[str, Any]]]] = []
        self.reader: asyncio.Task[None] | None = None
        self.closing = False
        self.closed = False
        self.received = 0
        # What this socket belongs to, learnt as the flow goes (see ``belongs``).
        self.conv: int | None = None
        self.share: str | None = None
        self.owned: set[int] = set()  # agent: conversations it took
        self.shares: set[str] = set()  # agent: shares of those conversations
        self.pcs: set[str] = set()
        self.user_id: int | None = None
        self._tasks: set[asyncio.Future[None]] = set()

    async def connect(
        self, url: str, src: str, cookie: str | None = None, deflate: bool = True
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        headers = {"Cookie": f"{SESSION_COOKIE}={cookie}"} if cookie else None
        self.ws = await connect(
            f"ws://{parts.netloc}/ws",
            origin=f"{parts.scheme}://{parts.netloc}",
            additional_headers=headers,
            user_agent_header=DESKTOP_UA,
            compression="deflate" if deflate else None,
            max_size=2 * P.MAX_MESSAGE_BYTES,
            ping_interval=None,  # liveness is the protocol's ping, as in the browser
            open_timeout=60,
            close_timeout=5,
            local_addr=(src, 0),
        )
        self.stats.opened()
        self.reader = asyncio.create_task(self._read())

    async def handshake(self, token: str | None = None) -> dict[str, Any]:
        welcome = self.expect(lambda m: m["type"] == "welcome")
        await self.send(P.make("handshake", versions=["1"], role=self.role, token=token))
        msg = await self.wait(welcome, "welcome")
        if self.role == "agent":
            self.user_id = msg["info"]["user"]["id"]
        return msg

    async def send(self, msg: dict[str, Any]) -> None:
        if self.ws is None or self.closed:
            raise StepFailed(f"{self.name} is closed")
        try:
            await self.ws.send(P.encode(msg))
        except ConnectionClosed:
            raise StepFailed(f"{self.name} closed while sending") from None

    async def ping(self) -> None:
        await self.send(P.make("ping", t=time.perf_counter()))

    def expect(self, pred: Pred) -> asyncio.Future[dict[str, Any]]:
        """Register before sending what triggers the message, so it cannot be missed."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if self.closed:
            fut.set_exception(StepFailed(f"{self.name} is closed"))
        else:
            self.waiters.append((pred, fut))
        return fut

    async def wait(
        self, fut: asyncio.Future[dict[str, Any]], step: str, limit_s: float = 60.0
    ) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(fut, limit_s)
        except TimeoutError:
            raise StepFailed(f"timeout:{step}") from None

    async def close(self) -> None:
        self.closing = True
        if self.ws is not None:
            try:
                await self.ws.close()
            except Exception:
                pass
        if self.reader is not None:
            try:
                await asyncio.wait_for(self.reader, 10)
            except (TimeoutError, asyncio.CancelledError):
                self.reader.cancel()

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                self._on(raw)
        except ConnectionClosed:
            pass
        except Exception as exc:  # a bug in the bench must show, not hang it
            self.stats.error("client-bug", repr(exc))
        finally:
            self.closed = True
            self.stats.open_sockets -= 1
            if not self.closing:
                code = self.ws.close_code
                self.stats.error(f"closed-by-server:{self.role}:{code}", self.name)
            for _, fut in self.waiters:
                if not fut.done():
                    fut.set_exception(StepFailed(f"{self.name} closed"))
            self.waiters.clear()

    def _on(self, raw: str | bytes) -> None:
        now = time.perf_counter()
        self.received += 1
        try:
            msg = P.decode(raw, P.S2C)
        except P.ProtocolError as exc:
            self.stats.error("invalid-from-server", f"{exc.code}: {str(raw)[:100]}")
            return
        mtype = msg["type"]
        if mtype == "ping":
            if self.ws is not None and not self.closed:
                task = asyncio.ensure_future(self._pong(msg.get("t")))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        elif mtype == "pong":
            t = msg.get("t")
            if isinstance(t, float):
                self.stats.ping(now - t)
        elif mtype == "error":
            self.stats.error(f"server-error:{msg['code']}", f"{self.name}: {msg['text']}")
        nonce = _nonce(msg)
        if nonce is not None:
            if self.role == "visitor" and self.conv is None and mtype == "chat":
                r = self.stats.routed.get(nonce)
                if r is not None and r.sender == self.name:
                    self.conv = msg["conversation"]
            self.stats.receipt(self.name, nonce, now)
        elif not self.belongs(msg):
            self.stats.wrong_place(self.name, msg)
        if self.waiters:
            keep = []
            for pred, fut in self.waiters:
                if fut.done():
                    continue
                if pred(msg):
                    fut.set_result(msg)
                else:
                    keep.append((pred, fut))
            self.waiters = keep

    async def _pong(self, t: Any) -> None:
        try:
            await self.send(P.make("pong", t=t))
        except StepFailed:
            pass

    def belongs(self, msg: dict[str, Any]) -> bool:
        """Whether a message without a nonce is one this socket may get."""
        mtype = msg["type"]
        conv = msg.get("conversation")
        share = msg.get("share")
        pc = msg.get("pc")
        if self.role == "visitor":
            if mtype in ("offer", "answer", "ice", "peer", "peer_gone", "restart"):
                return False
            if conv is not None and conv != self.conv:
                return False
            if mtype == "share_invite" and self.share is None:
                self.share = share
            return share is None or share == self.share
        if self.role == "sharer":
            if mtype in ("chat", "history", "visitor", "conversations", "conversation_update"):
                return False
            if share is not None and share != self.share:
                return False
            if mtype == "peer" and share == self.share:
                self.pcs.add(msg["pc"])
                return True
            return pc is None or pc in self.pcs
        # agent
        if mtype in ("chat", "history", "visitor"):
            return conv in self.owned
        if mtype == "conversation_update":
            item = msg["item"]
            mine = item.get("agent_id") in (None, self.user_id)
            return mine or not item.get("last_text")  # another's: the bare item only
        if mtype == "share_state":
            if conv not in self.owned:
                return False
            self.shares.add(msg["share"])
            return True
        if mtype in ("peer", "peer_gone", "phone_share_key"):
            if share not in self.shares:
                return False
            if mtype == "peer":
                self.pcs.add(msg["pc"])
            return True
        if pc is not None:
            return pc in self.pcs
        return True


def _nonce(msg: dict[str, Any]) -> int | None:
    mtype = msg["type"]
    text: Any = None
    if mtype == "chat":
        text = msg["message"].get("text")
    elif mtype in ("offer", "answer"):
        text = msg["sdp"]
    elif mtype == "ice" and msg.get("candidate"):
        text = msg["candidate"].get("candidate")
    if not isinstance(text, str):
        return None
    m = _TAG.search(text)
    return int(m.group(1)) if m else None


# --- HTTP login -------------------------------------------------------------------------------


def _cookie(response: http.client.HTTPResponse, name: str) -> str | None:
    for header in response.headers.get_all("Set-Cookie") or []:
        first = header.split(";", 1)[0]
        key, _, value = first.partition("=")
        if key.strip() == name and value:
            return value.strip().strip('"')
    return None


def login(url: str, email: str, password: str, src: str) -> str:
    """The session cookie from the real login form (GET for the CSRF token, then POST)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(
        parts.hostname or "127.0.0.1", parts.port or 80, timeout=60, source_address=(src, 0)
    )
    try:
        conn.request("GET", "/login")
        page = conn.getresponse()
        body = page.read().decode()
        csrf_cookie = _cookie(page, CSRF_COOKIE)
        found = re.search(r'name="csrf" value="([^"]+)"', body)
        if page.status != 200 or not csrf_cookie or not found:
            raise RuntimeError(f"login form: {page.status}")
        form = urllib.parse.urlencode({"email": email, "password": password, "csrf": found[1]})
        conn.request(
            "POST",
            "/login",
            body=form,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": f"{CSRF_COOKIE}={csrf_cookie}",
            },
        )
        answer = conn.getresponse()
        answer.read()
        session = _cookie(answer, SESSION_COOKIE)
        if answer.status != 303 or not session:
            raise RuntimeError(f"login of {email}: {answer.status}")
        return session
    finally:
        conn.close()


async def create_agents(db_url: str, count: int, prefix: str = "agent") -> list[str]:
    """Agent accounts, written straight to the database as ``coview create-user`` does."""
    from coview_server.store import Store

    store = await Store.open(db_url)
    emails = []
    try:
        for k in range(count):
            email = f"{prefix}{k}@coview.load"
            await store.create_user(email, f"Load Agent {k}", AGENT_PASSWORD)
            emails.append(email)
    finally:
        await store.close()
    return emails


# --- share sessions ---------------------------------------------------------------------------


@dataclass
class Options:
    duration: float = 30.0
    chat_every: float = 60.0
    ping_every: float = 20.0
    ramp: float = 50.0  # sessions (or idle sockets) started per second
    concurrency: int = 50  # set-ups in flight at once
    per_address: int = 1
    deflate: bool = True
    step_timeout: float = 60.0
    max_time: float = 900.0


class Session:
    def __init__(self, i: int, agent: Client, agents: list[Client], stats: Stats) -> None:
        self.i = i
        self.agent = agent
        self.agents = agents
        self.stats = stats
        self.visitor = Client(f"v{i}", "visitor", stats)
        self.sharer = Client(f"s{i}", "sharer", stats)
        self.conv = 0
        self.share = ""
        self.pc = ""
        self.live = False
        self.chats = itertools.count(1)

    async def setup(self, url: str, opts: Options) -> None:
        t0 = time.perf_counter()
        v, a, s, st = self.visitor, self.agent, self.sharer, self.stats
        limit = opts.step_timeout
        src = source(VISITOR_NET, self.i // opts.per_address)
        await v.connect(url, src, deflate=opts.deflate)
        await v.handshake()
        await v.send(
            P.make(
                "visitor_info",
                page="https://shop.example/cart",
                user_agent=DESKTOP_UA,
                can_share=True,
            )
        )
        # The first message of a waiting conversation goes to every agent.
        everyone = {v.name, *(x.name for x in self.agents)}
        n = st.new("broadcast", v.name, everyone)
        echo = v.expect(lambda m: m["type"] == "chat" and _nonce(m) == n)
        await v.send(P.make("chat_send", text=f"help me please {tag(n)}", client_id="c0"))
        self.conv = conv = (await v.wait(echo, "first-chat", limit))["conversation"]

        a.owned.add(conv)
        history = a.expect(lambda m: m["type"] == "history" and m["conversation"] == conv)
        record = a.expect(
            lambda m: (
                m["type"] == "visitor"
                and m["conversation"] == conv
                and m["record"].get("can_share") is True
            )
        )
        await a.send(P.make("conversation_take", conversation=conv))
        await a.wait(history, "take", limit)
        await a.wait(record, "visitor-record", limit)

        invite = v.expect(lambda m: m["type"] == "share_invite" and m["conversation"] == conv)
        await a.send(P.make("share_request", conversation=conv))
        inv = await v.wait(invite, "invite", limit)
        self.share = share = inv["share"]
        token = inv["popup_url"].split("&t=", 1)[1]

        def state(want: str) -> Pred:
            return lambda m: (
                m["type"] == "share_state" and m["share"] == share and m["state"] == want
            )

        accepted = v.expect(state("accepted"))
        await v.send(P.make("share_accept", share=share))
        await v.wait(accepted, "accepted", limit)

        s.share = share
        await s.connect(url, src, deflate=opts.deflate)
        waiting = s.expect(state("waiting"))
        await s.handshake(token)
        await s.wait(waiting, "waiting", limit)

        offerer = s.expect(lambda m: m["type"] == "peer" and m["role"] == "offerer")
        answerer = a.expect(lambda m: m["type"] == "peer" and m["share"] == share)
        await a.send(P.make("share_watch", share=share))
        self.pc = pc = (await s.wait(offerer, "peer", limit))["pc"]
        await a.wait(answerer, "peer-viewer", limit)

        live = a.expect(state("live"))
        await s.send(P.make("share_media", share=share, surface="monitor"))
        await a.wait(live, "live", limit)

        # Negotiation: offer, the offerer's candidates, answer, the answerer's candidates.
        n = st.new("negotiation", s.name, {a.name})
        got = a.expect(lambda m: m["type"] == "offer" and _nonce(m) == n)
        sdp = SDP.format(n=n, ufrag="off", setup="actpass", dir="sendonly", tag=tag(n))
        await s.send(P.make("offer", pc=pc, sdp=sdp))
        await self._candidates(s, {a.name})
        await a.wait(got, "offer", limit)
        n = st.new("negotiation", a.name, {s.name})
        got = s.expect(lambda m: m["type"] == "answer" and _nonce(m) == n)
        sdp = SDP.format(n=n, ufrag="ans", setup="active", dir="recvonly", tag=tag(n))
        await a.send(P.make("answer", pc=pc, sdp=sdp))
        await self._candidates(a, {s.name})
        await s.wait(got, "answer", limit)
        for end in (a, s):
            await end.send(P.make("peer_status", pc=pc, state="connected"))
        self.live = True
        st.setup.append(time.perf_counter() - t0)

    async def _candidates(self, sender: Client, to: set[str]) -> None:
        for k in range(CANDIDATES_PER_SIDE):
            n = self.stats.new("negotiation", sender.name, to)
            cand = f"candidate:{k} 1 udp 2122260223 127.0.0.1 {50000 + k} typ host {tag(n)}"
            await sender.send(
                P.make(
                    "ice",
                    pc=self.pc,
                    candidate={"candidate": cand, "sdpMid": "0", "sdpMLineIndex": 0},
                )
            )
        await sender.send(P.make("ice", pc=self.pc, candidate=None))  # end of candidates

    async def hold(self, until: float, opts: Options) -> None:
        """Chat both ways and ping until ``until`` (loop time)."""
        loop = asyncio.get_running_loop()
        v, a, s = self.visitor, self.agent, self.sharer
        next_chat = loop.time() + random.uniform(0, opts.chat_every)
        next_ping = loop.time() + random.uniform(0, opts.ping_every)
        while True:
            wake = min(next_chat, next_ping)
            if wake >= until:
                return
            await asyncio.sleep(max(0.0, wake - loop.time()))
            if loop.time() >= next_chat:
                next_chat += opts.chat_every
                for sender in (v, a):
                    n = self.stats.new("chat", sender.name, {v.name, a.name})
                    text = f"message {next(self.chats)} from {sender.role} {tag(n)}"
                    fields: dict[str, Any] = {"text": text, "client_id": f"c{n}"}
                    if sender is a:
                        fields["conversation"] = self.conv
                    await sender.send(P.make("chat_send", **fields))
            if loop.time() >= next_ping:
                next_ping += opts.ping_every
                await v.ping()
                await s.ping()

    async def end(self, limit_s: float) -> None:
        v, a, s, share = self.visitor, self.agent, self.sharer, self.share

        def ended(m: dict[str, Any]) -> bool:
            return m["type"] == "share_state" and m["share"] == share and m["state"] == "ended"

        waits = [(c.expect(ended), f"ended@{c.role}") for c in (v, a, s)] + [
            (c.expect(lambda m: m["type"] == "peer_gone" and m["pc"] == self.pc), f"gone@{c.role}")
            for c in (a, s)
        ]
        await s.send(P.make("share_stop", share=share))
        for fut, step in waits:
            msg = await s.wait(fut, step, limit_s)
            if msg["type"] == "share_state" and msg.get("reason") != "stopped_by_sharer":
                raise StepFailed(f"ended with {msg.get('reason')}")

    async def close(self) -> None:
        await asyncio.gather(self.sharer.close(), self.visitor.close())


async def _paced(
    count: int, opts: Options, make: Callable[[int], Awaitable[None]], deadline: float
) -> None:
    """Start ``make(i)`` for each i at ``opts.ramp`` per second, ``opts.concurrency`` at once."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(opts.concurrency)
    start = loop.time()

    async def one(i: int) -> None:
        async with gate:
            await make(i)

    tasks = []
    for i in range(count):
        if loop.time() > deadline:
            break
        delay = start + i / opts.ramp - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    if tasks:
        await asyncio.wait(tasks, timeout=max(1.0, deadline - loop.time()))


Probe = Callable[[], dict[str, float]]


async def run_sessions(
    url: str,
    agent_emails: list[str],
    sessions: int,
    opts: Options,
    probe: Probe | None = None,
    password: str = AGENT_PASSWORD,
    log: Callable[[str], None] = lambda text: None,
) -> dict[str, Any]:
    """Drive ``sessions`` share sessions against the server at ``url``; returns the figures."""
    stats = Stats()
    loop = asyncio.get_running_loop()
    t_start = loop.time()
    deadline = t_start + opts.max_time
    base = probe() if probe else {}

    agents: list[Client] = []
    for k, email in enumerate(agent_emails):
        src = source(AGENT_NET, k)
        cookie = await asyncio.to_thread(login, url, email, password, src)
        agent = Client(f"a{k}", "agent", stats)
        await agent.connect(url, src, cookie=cookie, deflate=opts.deflate)
        listed = agent.expect(lambda m: m["type"] == "conversations")
        await agent.handshake()
        await agent.wait(listed, "conversations")
        agents.append(agent)
    log(f"  {len(agents)} agents logged in and connected")

    all_sessions = [Session(i, agents[i % len(agents)], agents, stats) for i in range(sessions)]
    failed: list[Session] = []

    async def start(i: int) -> None:
        sess = all_sessions[i]
        try:
            await sess.setup(url, opts)
        except StepFailed as exc:
            stats.error("setup-failed", f"session {i}: {exc}")
            failed.append(sess)
        except OSError as exc:
            stats.error(f"connect-failed:{type(exc).__name__}", f"session {i}: {exc}")
            failed.append(sess)

    t_setup = loop.time()
    ticker = asyncio.create_task(
        _progress(stats, probe, log, lambda: sum(1 for s in all_sessions if s.live))
    )
    await _paced(sessions, opts, start, deadline)
    setup_s = loop.time() - t_setup
    live = [s for s in all_sessions if s.live]
    peak = probe() if probe else {}
    log(f"  {len(live)}/{sessions} sessions live after {setup_s:.1f} s; holding {opts.duration} s")

    # Agents ping too, like every console.
    async def agent_pings(until: float) -> None:
        while loop.time() + opts.ping_every < until:
            await asyncio.sleep(opts.ping_every)
            for a in agents:
                if not a.closed:
                    await a.ping()

    until = min(deadline, loop.time() + opts.duration)
    t_hold = loop.time()
    stats.phase = "hold"
    holds = [asyncio.create_task(_guard(s.hold(until, opts), stats, "hold")) for s in live]
    holds.append(asyncio.create_task(_guard(agent_pings(until), stats, "hold")))
    await asyncio.wait(holds)
    held_end = sum(1 for s in live if not (s.visitor.closed or s.sharer.closed))
    held_peak = probe() if probe else {}
    for key in ("rss_kib", "fds"):
        if held_peak.get(key, 0) > peak.get(key, 0):
            peak[key] = held_peak[key]
    # Everything sent must have arrived before the sockets go away.
    t_drain = loop.time()
    try:
        await asyncio.wait_for(stats.settled.wait(), 15.0)
    except TimeoutError:
        pass

    ended = 0
    t_end = loop.time()
    stats.phase = "end"

    async def finish(i: int) -> None:
        nonlocal ended
        sess = live[i]
        try:
            await sess.end(opts.step_timeout)
            ended += 1
        except StepFailed as exc:
            stats.error("end-failed", f"session {sess.i}: {exc}")
        finally:
            await sess.close()

    await _paced(
        len(live), opts, finish, loop.time() + opts.step_timeout * 2 + len(live) / opts.ramp
    )
    await asyncio.gather(*(s.close() for s in failed))
    try:
        await asyncio.wait_for(stats.settled.wait(), 5.0)
    except TimeoutError:
        pass
    ticker.cancel()
    end_probe = probe() if probe else {}
    await asyncio.gather(*(a.close() for a in agents))
    if loop.time() > deadline:
        stats.error("max-time-reached")
    stats.phases = {
        "setup_s": t_hold - t_setup,
        "hold_s": t_drain - t_hold,
        "drain_s": t_end - t_drain,
        "end_s": loop.time() - t_end,
    }
    return _figures(
        "sessions",
        sessions,
        len(live),
        held_end,
        ended,
        stats,
        base,
        peak,
        end_probe,
        setup_s,
        loop.time() - t_start,
        sockets_per_unit=3,
        extra_sockets=len(agents),
    )


async def _guard(coro: Awaitable[None], stats: Stats, what: str) -> None:
    try:
        await coro
    except StepFailed as exc:
        stats.error(f"{what}-failed", str(exc))


async def _progress(
    stats: Stats, probe: Probe | None, log: Callable[[str], None], live: Callable[[], int]
) -> None:
    last_cpu = probe().get("cpu_s", 0.0) if probe else 0.0
    while True:
        await asyncio.sleep(5)
        extra = ""
        if probe:
            p = probe()
            cpu = p.get("cpu_s", 0.0)
            extra = (
                f", server RSS {p['rss_kib'] / 1024:.0f} MiB, fds {p['fds']:.0f}, "
                f"CPU {(cpu - last_cpu) / 5 * 100:.0f} %"
            )
            last_cpu = cpu
        log(
            f"    … {stats.phase}: {live()} live, {stats.open_sockets} sockets open{extra}, "
            f"errors {sum(stats.errors.values())}"
        )


# --- idle sockets -------------------------------------------------------------------------------


async def run_idle(
    url: str,
    count: int,
    opts: Options,
    probe: Probe | None = None,
    log: Callable[[str], None] = lambda text: None,
) -> dict[str, Any]:
    stats = Stats()
    loop = asyncio.get_running_loop()
    t_start = loop.time()
    deadline = t_start + opts.max_time
    base = probe() if probe else {}
    clients: list[Client] = []

    async def start(i: int) -> None:
        c = Client(f"i{i}", "visitor", stats)
        t0 = time.perf_counter()
        try:
            await c.connect(url, source(VISITOR_NET, i // opts.per_address), deflate=opts.deflate)
            await c.handshake()
            await c.send(
                P.make(
                    "visitor_info",
                    page="https://shop.example/",
                    user_agent=DESKTOP_UA,
                    can_share=True,
                )
            )
            # Set up once the server has stored it: a socket's messages are served in order.
            pong = c.expect(lambda m: m["type"] == "pong")
            await c.ping()
            await c.wait(pong, "visitor_info", opts.step_timeout)
            clients.append(c)
            stats.setup.append(time.perf_counter() - t0)
        except StepFailed as exc:
            stats.error("setup-failed", f"socket {i}: {exc}")
            await c.close()
        except OSError as exc:
            stats.error(f"connect-failed:{type(exc).__name__}", f"socket {i}: {exc}")

    ticker = asyncio.create_task(_progress(stats, probe, log, lambda: len(clients)))
    t_setup = loop.time()
    await _paced(count, opts, start, deadline)
    setup_s = loop.time() - t_setup
    log(f"  {len(clients)}/{count} idle sockets after {setup_s:.1f} s; holding {opts.duration} s")
    peak = probe() if probe else {}
    until = min(deadline, loop.time() + opts.duration)
    stats.phase = "hold"

    async def pinger(c: Client) -> None:
        await asyncio.sleep(random.uniform(0, opts.ping_every))
        while loop.time() < until and not c.closed:
            await c.ping()
            await asyncio.sleep(opts.ping_every)

    await asyncio.gather(*(_guard(pinger(c), stats, "ping") for c in clients))
    held_end = sum(1 for c in clients if not c.closed)
    later = probe() if probe else {}
    for key in ("rss_kib", "fds"):
        if later.get(key, 0) > peak.get(key, 0):
            peak[key] = later[key]
    ticker.cancel()
    for k in range(0, len(clients), 500):
        await asyncio.gather(*(c.close() for c in clients[k : k + 500]))
    end_probe = probe() if probe else {}
    return _figures(
        "idle",
        count,
        len(clients),
        held_end,
        held_end,
        stats,
        base,
        peak,
        end_probe,
        setup_s,
        loop.time() - t_start,
        sockets_per_unit=1,
        extra_sockets=0,
    )


def _figures(
    mode: str,
    target: int,
    held: int,
    held_end: int,
    ended: int,
    stats: Stats,
    base: dict[str, float],
    peak: dict[str, float],
    end: dict[str, float],
    setup_s: float,
    wall_s: float,
    sockets_per_unit: int,
    extra_sockets: int,
) -> dict[str, Any]:
    sockets = held * sockets_per_unit + extra_sockets
    out: dict[str, Any] = {
        "mode": mode,
        "target": target,
        "held": held,
        "held_at_end": held_end,
        "ended_cleanly": ended,
        "peak_sockets": stats.peak_sockets,
        "routed_sent": len(stats.routed),
        "deliveries": stats.delivered(),
        "lost": stats.lost(),
        "misrouted": stats.misrouted,
        "duplicated": stats.duplicated,
        "foreign": stats.foreign,
        "errors": dict(stats.errors),
        "samples": stats.samples,
        "setup": percentiles(stats.setup),
        "latency": {k: percentiles(v) for k, v in sorted(stats.latency.items())},
        "setup_s": round(setup_s, 1),
        "wall_s": round(wall_s, 1),
        "phases_s": {k: round(v, 2) for k, v in stats.phases.items()},
    }
    if base and peak:
        rss = peak["rss_kib"] - base["rss_kib"]
        out["server"] = {
            "rss_base_mib": round(base["rss_kib"] / 1024, 1),
            "rss_peak_mib": round(peak["rss_kib"] / 1024, 1),
            "rss_end_mib": round(end.get("rss_kib", 0) / 1024, 1),
            "kib_per_socket": round(rss / sockets, 1) if sockets else None,
            "fds_peak": peak.get("fds"),
            "cpu_s": round(end.get("cpu_s", 0) - base.get("cpu_s", 0), 1),
        }
    out["client_cpu_s"] = round(time.process_time(), 1)
    return out


# --- the server process -----------------------------------------------------------------------


class ServerProc(Server):
    """The kit's ``coview serve`` process (``coview_server.testing``), quiet, probed
    through /proc for memory, descriptors and CPU."""

    @property
    def db_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.db}"

    def command(self) -> list[str]:
        return [*super().command(), "--log-level", "warning"]

    def probe(self) -> dict[str, float]:
        assert self.proc is not None
        pid = self.proc.pid
        out: dict[str, float] = {}
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(("VmRSS:", "VmHWM:")):
                        out["rss_kib" if line.startswith("VmRSS") else "hwm_kib"] = float(
                            line.split()[1]
                        )
            out["fds"] = float(len(os.listdir(f"/proc/{pid}/fd")))
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out["cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
        return out

    def problems(self) -> list[str]:
        """Tracebacks and errors the server logged."""
        text = (self.tmp / "server.log").read_text(errors="replace")
        lines = text.splitlines()
        return [ln for ln in lines if "Traceback" in ln or ln.startswith(("ERROR", "CRITICAL"))]


# --- namespace (as bench/run.py) -------------------------------------------------------------


def outside(argv: list[str]) -> int:
    """Create the namespace, run this script inside it, always delete it."""
    if os.geteuid() != 0:
        print(
            "bench/load.py must run as root: it creates a loopback-only network namespace "
            "(ip netns) so that no load reaches any other address.\n"
            "Run it as root, e.g. `sudo .venv/bin/python bench/load.py`.",
            file=sys.stderr,
        )
        return 2
    if shutil.which("ip") is None:
        print("bench/load.py needs `ip` (Debian package iproute2).", file=sys.stderr)
        return 2
    ns = f"cvload-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        cmd = ["ip", "netns", "exec", ns, sys.executable, str(SCRIPT)]
        return subprocess.call([*cmd, "--inside", *argv])
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def assert_loopback_only() -> None:
    interfaces = sorted(os.listdir("/sys/class/net"))
    if interfaces != ["lo"]:
        raise SystemExit(f"refusing to run: this namespace has {interfaces}, not only lo")


def raise_fd_limit(want: int) -> int:
    """Sockets are files: lift RLIMIT_NOFILE for this process and the server it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- report ---------------------------------------------------------------------------------


def _ms(p: dict[str, float], key: str) -> str:
    return f"{p[key]:.1f}" if p else "-"


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'mode':<9}{'target':>7}{'held':>6}{'socks':>7}{'setup/s':>8}{'setup p50/p99 ms':>18}"
        f"{'ramp msg p50/p99':>18}{'held msg p50/p99/max':>22}{'held ping p50/p99':>19}"
        f"{'routed':>8}{'lost':>6}{'misr':>6}{'dup':>5}{'forgn':>6}{'errors':>7}"
        f"{'RSS MiB':>9}{'KiB/sock':>9}{'srv CPU s':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lat = r["latency"]
        ramp = lat.get("setup:routed", {})
        held = lat.get("hold:routed", {})
        ping = lat.get("hold:ping", {})
        srv = r.get("server", {})
        setup = r["setup"]
        rate = r["held"] / r["setup_s"] if r["setup_s"] else 0.0
        lines.append(
            f"{r['mode']:<9}{r['target']:>7}{r['held']:>6}{r['peak_sockets']:>7}{rate:>8.1f}"
            f"{_pair(setup):>18}{_pair(ramp):>18}"
            f"{_pair(held) + '/' + _ms(held, 'max_ms'):>22}{_pair(ping):>19}"
            f"{r['deliveries']:>8}{r['lost']:>6}{r['misrouted']:>6}{r['duplicated']:>5}"
            f"{r['foreign']:>6}{sum(r['errors'].values()):>7}"
            f"{srv.get('rss_peak_mib', '-'):>9}{srv.get('kib_per_socket', '-'):>9}"
            f"{srv.get('cpu_s', '-'):>10}"
        )
    return "\n".join(lines)


def _pair(p: dict[str, float]) -> str:
    return _ms(p, "p50_ms") + "/" + _ms(p, "p99_ms")


def counts(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--sessions",
        type=counts,
        default=[1000],
        help="share sessions per run, comma-separated for several runs (default 1000; 0 for none)",
    )
    parser.add_argument(
        "--idle", type=counts, default=[], help="idle sockets per run, comma-separated (e.g. 10000)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=30.0,
        help="seconds everything is held once set up (default 30)",
    )
    parser.add_argument("--agents", type=int, default=50, help="agent consoles (default 50)")
    parser.add_argument(
        "--ramp",
        type=float,
        default=50.0,
        help="sessions or sockets started per second (default 50)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=50, help="set-ups in flight at once (default 50)"
    )
    parser.add_argument(
        "--chat-every",
        type=float,
        default=60.0,
        help="seconds between chat messages of each side of a session (default 60)",
    )
    parser.add_argument(
        "--ping-every",
        type=float,
        default=20.0,
        help="seconds between pings of each socket (default 20)",
    )
    parser.add_argument(
        "--per-address",
        type=int,
        default=1,
        help="sessions or idle sockets per client source address (default 1)",
    )
    parser.add_argument("--no-deflate", action="store_true", help="no permessage-deflate")
    parser.add_argument(
        "--max-time", type=float, default=900.0, help="hard limit on one run, seconds (default 900)"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="COVIEW_X=V",
        help="extra server setting, e.g. COVIEW_WS_ADDRESS_MAX=1000",
    )
    args = parser.parse_args(argv)
    args.sessions = [n for n in args.sessions if n > 0]
    if not args.sessions and not args.idle:
        parser.error("nothing to do: give --sessions N and/or --idle N")
    return args


def inside(args: argparse.Namespace) -> int:
    assert_loopback_only()
    most = max([n * 3 for n in args.sessions] + args.idle + [0])
    limit = raise_fd_limit(most + args.agents + 1000)
    print(
        f"RLIMIT_NOFILE {limit}; {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} cores, load {os.getloadavg()}"
    )
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        print("client loop: uvloop")
    except ImportError:
        pass
    env_extra = dict(e.split("=", 1) for e in args.env)
    opts = Options(
        duration=args.duration,
        chat_every=args.chat_every,
        ping_every=args.ping_every,
        ramp=args.ramp,
        concurrency=args.concurrency,
        per_address=args.per_address,
        deflate=not args.no_deflate,
        max_time=args.max_time,
    )
    rows: list[dict[str, Any]] = []
    plan = [("sessions", n) for n in args.sessions] + [("idle", n) for n in args.idle]
    for mode, n in plan:
        with tempfile.TemporaryDirectory(prefix="cvload-") as tmp:
            server = ServerProc(Path(tmp), {"COVIEW_MEDIA_RELAY": "off", **env_extra})
            emails = []
            if mode == "sessions":
                emails = asyncio.run(create_agents(server.db_url, args.agents))
            server.start()
            print(
                f"\n{mode} {n}: server pid {server.proc.pid if server.proc else '?'} "
                f"on {server.url}"
            )
            try:
                if mode == "sessions":
                    row = asyncio.run(
                        run_sessions(server.url, emails, n, opts, server.probe, log=print)
                    )
                else:
                    row = asyncio.run(run_idle(server.url, n, opts, server.probe, log=print))
                row["server_log_problems"] = server.problems()[:20]
                row["server_alive"] = server.proc is not None and server.proc.poll() is None
            finally:
                server.stop()
            rows.append(row)
            _print_run(row)
    print("\n" + table(rows))
    print(
        "\nsetup/s: sessions (sockets) set up per second; ramp msg: routed messages (chat, "
        "offer/answer/ice) sent while sessions were being set up, send to receipt; held msg/ping: "
        "while everything was held;\nlost/misr/dup: (message, recipient) pairs; forgn: messages "
        "naming a conversation/share/pc the socket is not part of; KiB/sock: server RSS growth "
        "per socket held."
    )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"load-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps({"argv": sys.argv[1:], "load_after": os.getloadavg(), "runs": rows}, indent=1)
    )
    print(f"\nwrote {out.relative_to(ROOT)}")
    bad = any(r["lost"] or r["misrouted"] or r["duplicated"] or r["foreign"] for r in rows)
    return 1 if bad else 0


def _print_run(row: dict[str, Any]) -> None:
    print(
        f"  held {row['held']}/{row['target']} (still open at the end: {row['held_at_end']}), "
        f"ended cleanly {row['ended_cleanly']}, peak sockets {row['peak_sockets']}"
    )
    print(
        f"  routed deliveries {row['deliveries']}, lost {row['lost']}, misrouted "
        f"{row['misrouted']}, duplicated {row['duplicated']}, foreign {row['foreign']}"
    )
    for kind, p in row["latency"].items():
        print(f"  latency {kind:<12} {p}")
    print(f"  setup {row['setup']}")
    if row.get("server"):
        print(f"  server {row['server']}")
    if row["errors"]:
        print(f"  errors {row['errors']}")
    for s in row["samples"][:8]:
        print(f"    e.g. {s}")
    for p in row.get("server_log_problems", [])[:5]:
        print(f"    server log: {p}")


def main(argv: list[str]) -> int:
    args = parse(argv)
    if not args.inside:
        return outside(argv)
    return inside(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
