"""Several Coview processes serve one deployment (docs/deploy.md, "Several Coview
processes"; issue 6, "Scale out").

Two ``coview serve`` processes share a throw-away PostgreSQL (``COVIEW_DATABASE_URL``) and
redis-server (``COVIEW_REDIS_URL``, ``COVIEW_REDIS_PREFIX``), both on unix sockets
(tests/services.py), each on a port of its own:

* the visitor's pages (demo shop, widget, share window) come from process A and the
  agent's console from process B (the agent signs in on B: sessions live in the shared
  database): they chat both ways, the agent requests a share, the visitor goes live, the
  agent sees the shop's pixels, and the visitor's stop reaches the agent within 2 s;
* the process that runs the shares (the holder of the Redis lease ``hub``: key
  ``<prefix>_lease:hub``, value ``<token>:<node id>`` as ``coview_server.broker`` writes
  it) is killed with SIGKILL mid-share. The pages reconnect, the share resumes on the
  surviving process within 30 s without a new pick, pixels keep arriving, chat works,
  and a stop reaches the visitor within 2 s.

A page reconnects to the origin it was loaded from, so for the second test each side
reaches the deployment through a "front" of its own, a loopback TCP forwarder standing for
the reverse proxy of docs/deploy.md: the visitor's front forwards to A (to B once A
refuses connections), the agent's to B (then A).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from playwright.sync_api import BrowserContext, Page, expect

from coview_server.testing.flows import HasUrl
from tests import services
from tests.services import RedisServer

from .conftest import OUR_ORIGINS, Server, make_server
from .flows import (
    Agent,
    Visitor,
    assert_sees_shop,
    go_live,
    start_chat_at,
    unique,
    wait_frames_advance,
)
from .test_resume import COUNT_PICKS

# The throw-away PostgreSQL (a fresh database per test) and redis-server of tests/services.py.
postgres_server = services.postgres_server
postgres_database = services.postgres_database
redis_server = services.redis_server

#: The resource the hub's leader holds (coview_server.broker: key ``<prefix>_lease:<name>``).
HUB_LEASE = "hub"
#: How long a killed leader's shares may take to resume on the surviving process.
TAKEOVER_S = 30.0
#: How long, after start-up, until some process leads.
ELECTION_S = 15.0

# --- the deployment ----------------------------------------------------------------------


@dataclass
class Cluster:
    """Process A (the visitor's) and process B (the agent's) of one deployment."""

    a: Server
    b: Server
    redis_url: str
    prefix: str
    #: The process started first, which leads ("a" or "b").
    first: str = "a"

    @property
    def servers(self) -> tuple[Server, Server]:
        return (self.a, self.b)

    def wait_leader(self, timeout_s: float, among: tuple[Server, ...] | None = None) -> Server:
        """Wait until one of ``among`` (default: both) holds the hub's lease."""
        return _wait_leader(self.redis_url, self.prefix, self.servers, among, timeout_s)


def _lease_key(prefix: str) -> str:
    return f"{prefix}_lease:{HUB_LEASE}"


def _leader_node(redis_url: str, prefix: str) -> str | None:
    """The node id holding the hub's lease now (None: nobody), read from Redis."""
    with contextlib.closing(redis.Redis.from_url(redis_url, socket_timeout=5)) as r:
        value = r.get(_lease_key(prefix))
    return None if value is None else value.decode().partition(":")[2]


def _leases(redis_url: str, prefix: str) -> list[str]:
    with contextlib.closing(redis.Redis.from_url(redis_url, socket_timeout=5)) as r:
        return sorted(k.decode() for k in r.scan_iter(match=f"{prefix}_lease:*"))


def _full_log(server: Server) -> str:
    try:
        return (server.tmp / "server.log").read_text(errors="replace")
    except OSError:
        return ""


def _server_of(node: str, servers: tuple[Server, ...]) -> Server | None:
    """The process whose node id ``node`` is: named in its log ("serving as node …"), or
    by its pid (the broker's default node id is ``host-pid-random``)."""
    for server in servers:
        if node in _full_log(server):
            return server
    for server in servers:
        if server.proc is not None and f"-{server.proc.pid}-" in node:
            return server
    return None


def _wait_leader(
    redis_url: str,
    prefix: str,
    servers: tuple[Server, ...],
    among: tuple[Server, ...] | None,
    timeout_s: float,
) -> Server:
    among = among or servers
    deadline = time.monotonic() + timeout_s
    node = None
    while time.monotonic() < deadline:
        node = _leader_node(redis_url, prefix)
        server = _server_of(node, servers) if node else None
        if server is not None and server in among:
            return server
        time.sleep(0.2)  # polling Redis: there is nothing to wait on
    raise AssertionError(
        f"no process among {[s.port for s in among]} holds {_lease_key(prefix)!r} after "
        f"{timeout_s:.0f} s (holder: {node!r}; leases: {_leases(redis_url, prefix)})\n"
        + "\n".join(f"--- server :{s.port}\n{s.log()}" for s in servers)
    )


@pytest.fixture
def cluster(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    postgres_database: str,
    redis_server: RedisServer,
) -> Iterator[Cluster]:
    """Two Coview processes of one deployment: one database, one Redis, one prefix.

    The process named by the test's parameter (``"a"``, the default, or ``"b"``) starts
    first and leads: the other starts once the first holds the hub's lease."""
    first = getattr(request, "param", "a")
    prefix = f"coview-{uuid.uuid4().hex[:8]}:"
    env = {
        "COVIEW_DATABASE_URL": postgres_database,
        "COVIEW_REDIS_URL": redis_server.url,
        "COVIEW_REDIS_PREFIX": prefix,
    }
    started: dict[str, Server] = {}
    try:
        for name in (first, "b" if first == "a" else "a"):
            (tmp_path / name).mkdir()
            # The first creates the admin and the agent in the shared database; the schema
            # is migrated by whichever gets there first (an advisory lock queues the other).
            started[name] = make_server(tmp_path / name, create_agent=not started, **env)
            if len(started) == 1:
                only = (started[name],)
                _wait_leader(redis_server.url, prefix, only, None, ELECTION_S)
        yield Cluster(started["a"], started["b"], redis_server.url, prefix, first)
    finally:
        for server in started.values():
            server.stop()


# --- a front: the reverse proxy's part --------------------------------------------------


class Front:
    """A TCP forwarder on 127.0.0.1: each connection goes to the first of ``ports`` that
    accepts it (an upstream with ``backup`` servers, as nginx does). When an upstream dies,
    its connections end and the pages' reconnections land on the next one."""

    def __init__(self, *ports: int) -> None:
        self.ports = ports
        self.used: list[int] = []  # the upstream port of each connection, in order
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name=f"front :{self.port}").start()
        OUR_ORIGINS.add(self.url)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _connect(self) -> tuple[socket.socket, int] | None:
        for port in self.ports:
            with contextlib.suppress(OSError):
                return socket.create_connection(("127.0.0.1", port), timeout=5), port
        return None

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = self._connect()
            if upstream is None:
                client.close()
                continue
            up, port = upstream
            up.settimeout(None)
            with self._lock:
                if self._closed:
                    client.close()
                    up.close()
                    return
                self.used.append(port)
                self._open.update((client, up))
            for src, dst in ((client, up), (up, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        # Either end went away (a killed upstream: FIN or RST): end both, as a proxy does.
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        with self._lock:
            for s in (src, dst):
                if s in self._open:
                    self._open.discard(s)
                    s.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._listener.close()
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._open.clear()
        OUR_ORIGINS.discard(self.url)


@pytest.fixture
def fronts(cluster: Cluster) -> Iterator[tuple[Front, Front]]:
    """(the visitor's front: A then B, the agent's front: B then A)."""
    visitor_front = Front(cluster.a.port, cluster.b.port)
    agent_front = Front(cluster.b.port, cluster.a.port)
    try:
        yield visitor_front, agent_front
    finally:
        visitor_front.close()
        agent_front.close()


# --- steps --------------------------------------------------------------------------------


def _chat_both_ways(
    visitor: Visitor, agent: Agent, *, take: bool = False, timeout_ms: float = 5000
) -> None:
    """The agent (taking the conversation first if ``take``) replies, the visitor answers:
    each sees the other's message."""
    page = agent.page
    if take:
        page.get_by_role("button", name="Take conversation").click()
        expect(page.get_by_role("log", name="Messages")).to_contain_text("Alice Agent joined")
        expect(visitor.widget.get_by_role("log")).to_contain_text("Alice Agent joined")
    reply = unique("Happy to help")
    page.get_by_label("Reply").fill(reply)
    page.get_by_label("Reply").press("Enter")
    expect(visitor.widget.get_by_role("log")).to_contain_text(reply, timeout=timeout_ms)
    again = unique("Thanks")
    visitor.say(again)
    expect(page.get_by_role("log", name="Messages")).to_contain_text(again, timeout=timeout_ms)


def _picks(popup: Page) -> int:
    return int(popup.evaluate("window.__coviewPicks"))


def _live(
    contexts: Callable[..., BrowserContext], visitor_at: HasUrl, agent_at: HasUrl
) -> tuple[Visitor, Agent, Page]:
    visitor, agent, _ = start_chat_at(
        contexts(COUNT_PICKS), visitor_at, contexts(COUNT_PICKS), agent_at
    )
    _chat_both_ways(visitor, agent, take=True)
    popup = go_live(visitor, agent)
    assert_sees_shop(agent)
    wait_frames_advance(agent)
    assert _picks(popup) == 1
    return visitor, agent, popup


def _until(done: Callable[[], bool], deadline: float, what: str) -> None:
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} before the deadline")
        time.sleep(0.1)  # polling the fronts' connection log: there is nothing to wait on


def _left_ms(deadline: float) -> float:
    return max(1000.0, (deadline - time.monotonic()) * 1000)


# --- tests --------------------------------------------------------------------------------


def test_a_visitor_on_one_process_shares_with_an_agent_on_another(
    contexts: Callable[..., BrowserContext], cluster: Cluster
) -> None:
    # Shop, widget and share window from A; the console (and its sign-in) from B.
    visitor, agent, popup = _live(contexts, cluster.a, cluster.b)
    assert visitor.page.url.startswith(cluster.a.url + "/")
    assert popup.url.startswith(cluster.a.url + "/")
    assert agent.page.url.startswith(cluster.b.url + "/")

    started = time.monotonic()
    popup.get_by_role("button", name="Stop sharing").click()
    expect(agent.share_status()).to_contain_text("The visitor stopped sharing", timeout=2000)
    assert time.monotonic() - started < 2.0
    expect(popup.get_by_role("status")).to_contain_text("You stopped sharing")
    assert cluster.a.proc is not None and cluster.a.proc.poll() is None
    assert cluster.b.proc is not None and cluster.b.proc.poll() is None


@pytest.mark.parametrize(
    "cluster", ["a", "b"], indirect=True, ids=["the-visitors-process", "the-agents-process"]
)
def test_killing_the_process_that_runs_the_share_moves_it_to_the_other(
    contexts: Callable[..., BrowserContext], cluster: Cluster, fronts: tuple[Front, Front]
) -> None:
    visitor_front, agent_front = fronts
    visitor, agent, popup = _live(contexts, visitor_front, agent_front)
    # Before the kill every connection went to its side's own process.
    assert set(visitor_front.used) == {cluster.a.port}
    assert set(agent_front.used) == {cluster.b.port}

    leader = cluster.wait_leader(ELECTION_S)
    assert leader is (cluster.a if cluster.first == "a" else cluster.b)  # it led from the start
    survivor = cluster.b if leader is cluster.a else cluster.a
    dead_side = visitor_front if leader is cluster.a else agent_front
    live_side = agent_front if dead_side is visitor_front else visitor_front
    before, before_live = len(dead_side.used), len(live_side.used)

    assert leader.proc is not None
    leader.proc.send_signal(signal.SIGKILL)  # a crash: no close frames, the lease not released
    leader.proc.wait(10)
    killed = time.monotonic()
    deadline = killed + TAKEOVER_S

    # The survivor takes the lease over, and every page is back and resumed on it.
    cluster.wait_leader(TAKEOVER_S, among=(survivor,))
    # The survivor's own pages were registered with the dead hub: it closes their sockets
    # and they come back (the shop's widget and the popup, or the console). Until then their
    # texts still show the state from before the kill, so the checks below would pass on
    # stale text (a stop in that gap once missed the popup: CI, session 11).
    rejoining = 2 if live_side is visitor_front else 1
    _until(lambda: len(live_side.used) - before_live >= rejoining, deadline, "rejoin")
    expect(agent.page.get_by_text("Connected", exact=True)).to_be_visible(
        timeout=_left_ms(deadline)
    )
    expect(popup.get_by_role("status")).to_have_text(
        "You are sharing your screen.", timeout=_left_ms(deadline)
    )
    expect(visitor.widget.get_by_role("status")).to_have_text("Online", timeout=_left_ms(deadline))
    expect(agent.share_status()).to_contain_text("Live", timeout=_left_ms(deadline))
    expect(agent.share_status()).not_to_contain_text("dropped", timeout=_left_ms(deadline))
    resumed_s = time.monotonic() - killed
    assert resumed_s < TAKEOVER_S, f"resumed after {resumed_s:.1f} s"
    # The killed side's pages reconnected, through their front, to the survivor.
    assert dead_side.used[before:], "no page reconnected after the kill"
    assert set(dead_side.used[before:]) == {survivor.port}

    # Pixels keep arriving, from the same capture (no new pick), and signaling works.
    wait_frames_advance(agent)
    assert_sees_shop(agent)
    assert _picks(popup) == 1
    _chat_both_ways(visitor, agent)

    started = time.monotonic()
    agent.page.get_by_role("button", name="Stop screen share").click()
    expect(popup.get_by_role("status")).to_contain_text("The agent ended", timeout=2000)
    assert time.monotonic() - started < 2.0
    expect(agent.share_status()).to_contain_text("You stopped")
    assert survivor.proc is not None and survivor.proc.poll() is None
