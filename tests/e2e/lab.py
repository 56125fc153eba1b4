"""A restrictive-network lab made of network namespaces, for end-to-end scenarios.

The test namespace that ``scripts/test`` runs pytest in (``COVIEW_NETNS``) is the *server
host*.  The lab adds two namespaces of its own, ``visitor`` and ``agent``, each joined to
the server host by a veth pair, with a default route through it and forwarding off on the
server host::

    visitor ns  10.77.1.2 ── 10.77.1.1 ┐
                                       ├─ server host (the test namespace, no forwarding)
    agent ns    10.77.2.2 ── 10.77.2.1 ┘

so visitor and agent reach the server host (either of its addresses) but not each other.
A Coview server and coturn started by the lab listen on the server host; a real Chromium
runs inside each lab namespace.  Everything is deleted when the test ends, pass or fail.

A scenario::

    def test_something(lab: Lab) -> None:
        server = lab.server(COVIEW_ICE_TRANSPORT_POLICY="all")
        visitor, agent, _ = lab.start_chat(server)
        go_live(visitor, agent)
        assert_sees_shop(agent)
        lab.in_ns("visitor", "nft", "list", "ruleset")

Import the fixture into the test module: ``from .lab import Lab, lab_fixture  # noqa: F401``.
"""

from __future__ import annotations

import itertools
import os
import select
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Playwright

from . import conftest
from .conftest import BASE_ARGS, CHROMIUM, OriginGuard, Server, make_server
from .coturn import Coturn, auth_config, free_udp_and_tcp_port, local_config, start_coturn
from .flows import RECORD_PEER_CONNECTIONS, Agent, Visitor, start_chat_at

IP = shutil.which("ip") or "/usr/sbin/ip"
ROLES = ("visitor", "agent")
#: Per role: the server host's address on that side, the lab namespace's own address.
NETS = {"visitor": ("10.77.1.1", "10.77.1.2"), "agent": ("10.77.2.1", "10.77.2.2")}
PREFIX = 24
_labs = itertools.count()

_TCP_PROBE = """import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
except OSError as exc:
    sys.exit(f"{type(exc).__name__}: {exc}")
"""
_STUN_PROBE = """import os, socket, struct, sys
tid = os.urandom(12)
request = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + tid
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.settimeout(float(sys.argv[3]))
    try:
        s.sendto(request, (sys.argv[1], int(sys.argv[2])))
        reply = s.recv(2048)
    except OSError as exc:
        sys.exit(f"{type(exc).__name__}: {exc}")
sys.exit(0 if reply[8:20] == tid else "not a reply to our STUN request")
"""
_LISTENER = """import socket, sys
s = socket.socket()
s.bind((sys.argv[1], 0))
s.listen(16)
print(s.getsockname()[1], flush=True)
while True:
    s.accept()[0].close()
"""


def _netns_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _write_sysctl(name: str, value: str) -> None:
    path = Path("/proc/sys") / name.replace(".", "/")
    path.write_text(value + "\n")
    if path.read_text().strip() != value:
        raise RuntimeError(f"{name} did not become {value}")


def _in_test_netns() -> str:
    """The name of the test namespace this process runs in; fails the test otherwise."""
    name = os.environ.get("COVIEW_NETNS", "")
    if not name:
        pytest.fail(
            "the network lab runs only inside the throw-away namespace of scripts/test "
            "(COVIEW_NETNS is not set): it never adds interfaces to the host namespace",
            pytrace=False,
        )
    try:
        ours = _netns_id("/proc/self/ns/net")
        named = _netns_id(f"/run/netns/{name}")
    except OSError as exc:
        pytest.fail(f"cannot check the network namespace {name!r}: {exc}", pytrace=False)
    try:  # init's namespace is the host's (unreadable in some containers: then skipped)
        host = _netns_id("/proc/1/ns/net")
    except PermissionError:
        host = None
    if ours != named or ours == host:
        pytest.fail(
            f"COVIEW_NETNS={name!r} but this process does not run in that namespace "
            "(or runs in the host's): the network lab refuses to start",
            pytrace=False,
        )
    return name


@dataclass
class _At(Server):
    """A server started by the lab as one side reaches it: only ``url`` differs, and it
    owns no process (stopping it does nothing)."""

    base_url: str = ""

    @property
    def url(self) -> str:
        return self.base_url


class Lab:
    """The lab's namespaces, and the servers, browsers and processes started in them."""

    def __init__(self, tmp: Path, playwright: Playwright) -> None:
        self.tmp = tmp
        self.playwright = playwright
        self.test_ns = _in_test_netns()
        n = next(_labs)
        tag = f"{os.getpid()}-{n}"
        #: Role -> the name of its network namespace (for ``ip netns exec``).
        self.ns = {role: f"coview-lab-{tag}-{role}" for role in ROLES}
        self._links = {role: f"cvl{role[0]}{os.getpid() % 100000}{n}"[:15] for role in ROLES}
        self.guard = OriginGuard()
        self._servers: list[Server] = []
        self._coturns: list[Coturn] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._browsers: dict[str, Browser] = {}
        self._contexts: list[BrowserContext] = []
        self._origins: set[str] = set()
        self._made: list[str] = []

    # --- set-up and tear-down -------------------------------------------------------------

    def _ip(self, *args: str) -> None:
        done = subprocess.run([IP, *args], capture_output=True, text=True, timeout=10)
        if done.returncode:
            raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")

    def setup(self) -> None:
        # Forwarding off on the server host: the lab namespaces reach it, not each other.
        _write_sysctl("net.ipv4.ip_forward", "0")
        _write_sysctl("net.ipv6.conf.all.forwarding", "0")
        # Chromium joins the mDNS group (224.0.0.251) for WebRTC: no IGMP reports about it.
        _write_sysctl("net.ipv4.igmp_link_local_mcast_reports", "0")
        for role in ROLES:
            ns, link = self.ns[role], self._links[role]
            gateway, address = NETS[role]
            self._ip("netns", "add", ns)
            self._made.append(ns)
            # The peer end is created inside the lab namespace, so nothing appears elsewhere.
            self._ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
            # IPv4 only: no IPv6 link-local addresses on the lab links either.
            self._ip("link", "set", link, "addrgenmode", "none")
            self._ip("addr", "add", f"{gateway}/{PREFIX}", "dev", link)
            self._ip("link", "set", link, "up")
            self._ip("-n", ns, "link", "set", "lo", "up")
            self.sysctl(role, "net.ipv4.igmp_link_local_mcast_reports", "0")
            self._ip("-n", ns, "link", "set", "eth0", "addrgenmode", "none")
            self._ip("-n", ns, "addr", "add", f"{address}/{PREFIX}", "dev", "eth0")
            self._ip("-n", ns, "link", "set", "eth0", "up")
            self._ip("-n", ns, "route", "add", "default", "via", gateway)
        if Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() != "0":
            raise RuntimeError("forwarding is on in the test namespace")

    def close(self) -> None:
        """Close and delete everything, in order; safe to call after a partial set-up."""
        errors: list[str] = []

        def attempt(what: str, fn: Any) -> None:
            try:
                fn()
            except Exception as exc:  # keep tearing down
                errors.append(f"{what}: {exc}")

        for ctx in self._contexts:
            attempt("closing a context", ctx.close)
        for browser in self._browsers.values():
            attempt("closing a browser", browser.close)
        for server in self._servers:
            attempt("stopping a server", server.stop)
        for coturn in self._coturns:
            attempt("stopping coturn", coturn.stop)
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            attempt("waiting for a process", lambda p=proc: p.wait(10))
        for ns in reversed(self._made):  # deleting a namespace deletes its veth and rules
            attempt(f"deleting {ns}", lambda ns=ns: self._ip("netns", "del", ns))
        self._made.clear()
        conftest.OUR_ORIGINS.difference_update(self._origins)
        assert not errors, f"lab tear-down: {errors}"

    # --- addresses and commands -----------------------------------------------------------

    @staticmethod
    def gateway(role: str) -> str:
        """The server host's address on ``role``'s side (e.g. ``10.77.1.1``)."""
        return NETS[role][0]

    @staticmethod
    def address(role: str) -> str:
        """The address of ``role``'s own namespace (e.g. ``10.77.1.2``)."""
        return NETS[role][1]

    def command(self, role: str | None, *cmd: str) -> list[str]:
        """``cmd`` run in ``role``'s namespace (``None``: on the server host, here)."""
        return list(cmd) if role is None else [IP, "netns", "exec", self.ns[role], *cmd]

    def in_ns(
        self, role: str | None, *cmd: str, check: bool = True, timeout: float = 10.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` to its end in ``role``'s namespace, e.g.
        ``lab.in_ns("visitor", "nft", "add", "table", "inet", "lab")``."""
        done = subprocess.run(
            self.command(role, *cmd), capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode:
            raise AssertionError(
                f"{cmd} in {role or 'server host'} exited {done.returncode}:\n"
                f"{done.stdout}{done.stderr}"
            )
        return done

    def sysctl(self, role: str | None, name: str, value: str) -> None:
        """Set the sysctl ``name`` (per namespace, e.g. ``net.ipv4.ip_forward``) in
        ``role``'s namespace (``None``: the server host's)."""
        if role is None:
            _write_sysctl(name, value)
            return
        path = "/proc/sys/" + name.replace(".", "/")
        self.in_ns(
            role, "sh", "-c", 'echo "$1" > "$2" && [ "$(cat "$2")" = "$1" ]', "-", value, path
        )

    def popen(self, role: str | None, *cmd: str, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``cmd`` in ``role``'s namespace; it is killed when the lab closes."""
        proc = subprocess.Popen(self.command(role, *cmd), **kwargs)
        self._procs.append(proc)
        return proc

    def reachable(
        self,
        role: str | None,
        host: str,
        port: int,
        transport: str = "tcp",
        timeout: float = 1.0,
    ) -> bool:
        """Whether ``role``'s namespace reaches ``host:port``: a TCP connection, or
        (``transport="stun"``) an answer to a STUN Binding request over UDP."""
        probe = _STUN_PROBE if transport == "stun" else _TCP_PROBE
        done = self.in_ns(
            role,
            sys.executable,
            "-c",
            probe,
            host,
            str(port),
            str(timeout),
            check=False,
            timeout=timeout + 10,
        )
        return done.returncode == 0

    def listener(self, role: str) -> int:
        """A TCP listener on ``role``'s own address (accepts and closes); its port."""
        proc = self.popen(
            role,
            sys.executable,
            "-c",
            _LISTENER,
            self.address(role),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        if not select.select([proc.stdout], [], [], 10)[0]:
            raise RuntimeError(f"no TCP listener in {role}'s namespace after 10 s")
        return int(proc.stdout.readline())

    def drop_udp(self, role: str) -> None:
        """Drop every UDP datagram in and out of ``role``'s namespace (nftables)."""
        rules = (
            "table inet coview_lab {\n"
            "  chain input { type filter hook input priority 0; meta l4proto udp drop; }\n"
            "  chain output { type filter hook output priority 0; meta l4proto udp drop; }\n"
            "}\n"
        )
        rules_file = self.tmp / f"drop-udp-{role}.nft"
        rules_file.write_text(rules)
        self.in_ns(role, shutil.which("nft") or "/usr/sbin/nft", "-f", str(rules_file))

    # --- servers --------------------------------------------------------------------------

    def url(self, role: str, server: Server) -> str:
        return f"http://{self.gateway(role)}:{server.port}"

    def visitor_url(self, server: Server) -> str:
        return self.url("visitor", server)

    def agent_url(self, server: Server) -> str:
        return self.url("agent", server)

    def at(self, role: str, server: Server) -> Server:
        """``server`` as ``role`` reaches it, for the helpers of ``flows`` (``.url``)."""
        return _At(
            tmp=server.tmp,
            env_extra=server.env_extra,
            port=server.port,
            base_url=self.url(role, server),
        )

    def server(self, **env: str) -> Server:
        """A Coview server on the server host, listening on every address it has (loopback
        and the lab's veths), with ``env`` on top of the e2e defaults."""
        if self._browsers:
            # Chromium learns at launch which lab origins count as secure (see browser_args).
            raise RuntimeError("start the lab's servers before its first browser context")
        tmp = self.tmp / f"server{len(self._servers)}"
        tmp.mkdir()
        # The media relay offers the two lab gateways, which both sides reach.
        env.setdefault("COVIEW_RELAY_ADDRESSES", ",".join(self.gateway(r) for r in ROLES))
        # The media relay offers the two lab gateways, which both sides reach.
        env.setdefault("COVIEW_RELAY_ADDRESSES", ",".join(self.gateway(r) for r in ROLES))
        server = make_server(tmp, COVIEW_HOST="0.0.0.0", **env)
        self._servers.append(server)
        for role in ROLES:
            origin = self.url(role, server)
            self._origins.add(origin)
            conftest.OUR_ORIGINS.add(origin)
        return server

    def coturn(self, secrets: list[str], realm: str = "coview.test") -> Coturn:
        """coturn on the server host's lab addresses with TURN REST credentials.

        It relays on 10.77.1.1 only: both sides reach that address (the agent through its
        default route: a local address of the server host needs no forwarding).  Peers are
        10.77.x addresses, so no ``allow-loopback-peers``.  Browsers are given
        ``coturn.url()`` (``turn:10.77.1.1:PORT``)."""
        tmp = self.tmp / f"coturn{len(self._coturns)}"
        tmp.mkdir()
        port = free_udp_and_tcp_port("0.0.0.0")
        relay = self.gateway("visitor")
        config = [
            *local_config(
                tmp,
                port,
                listening_ips=[self.gateway(role) for role in ROLES],
                relay_ip=relay,
                loopback_peers=False,
            ),
            *auth_config(realm, secrets, (42000, 42999)),
        ]
        coturn = start_coturn(tmp, config, port, host=relay)
        self._coturns.append(coturn)
        return coturn

    # --- browsers -------------------------------------------------------------------------

    def browser(self, role: str) -> Browser:
        """Chromium running inside ``role``'s namespace (launched on first use)."""
        if role not in self._browsers:
            wrapper = self.tmp / f"chromium-{role}"
            wrapper.write_text(f'#!/bin/sh\nexec {IP} netns exec {self.ns[role]} {CHROMIUM} "$@"\n')
            wrapper.chmod(0o755)
            self._browsers[role] = self.playwright.chromium.launch(
                executable_path=str(wrapper), args=self.browser_args(), headless=True
            )
        return self._browsers[role]

    def browser_args(self) -> list[str]:
        """conftest's flags; the host resolver also leaves the lab's server addresses alone,
        and the lab origins (plain http) count as secure, as https ones would in production
        (getDisplayMedia needs a secure context)."""
        gateways = [self.gateway(role) for role in ROLES]
        args = []
        for arg in BASE_ARGS:
            if arg.startswith("--host-resolver-rules="):
                arg += "".join(f", EXCLUDE {g}" for g in gateways)
            args.append(arg)
        if self._origins:
            args.append(
                "--unsafely-treat-insecure-origin-as-secure=" + ",".join(sorted(self._origins))
            )
        return args

    def context(self, role: str, init_script: str | None = None) -> BrowserContext:
        """A fresh context of ``role``'s browser, guarded against requests to any origin but
        our servers', that records its peer connections (``flows.selected_pairs``)."""
        ctx = self.browser(role).new_context(viewport={"width": 1280, "height": 720})
        # Without the grants Chromium hides host candidates behind mDNS names.
        for origin in sorted(self._origins):
            ctx.grant_permissions(["camera", "microphone"], origin=origin)
        ctx.add_init_script(RECORD_PEER_CONNECTIONS)
        if init_script:
            ctx.add_init_script(init_script)
        self.guard.watch(ctx)
        if os.environ.get("COVIEW_E2E_CONSOLE"):
            tag = f"{role}{len(self._contexts)}"
            ctx.on("console", lambda m: print(tag, m.type, m.text[:400]))
            ctx.on("weberror", lambda e: print(tag, "ERROR", str(e.error)[:400]))
        self._contexts.append(ctx)
        return ctx

    def visitor_context(self, init_script: str | None = None) -> BrowserContext:
        return self.context("visitor", init_script)

    def agent_context(self, init_script: str | None = None) -> BrowserContext:
        return self.context("agent", init_script)

    def start_chat(self, server: Server) -> tuple[Visitor, Agent, str]:
        """The visitor (in its namespace) writes; the agent (in its own) opens the chat."""
        return start_chat_at(
            self.visitor_context(),
            self.at("visitor", server),
            self.agent_context(),
            self.at("agent", server),
        )


@pytest.fixture(name="lab")
def lab_fixture(playwright: Playwright, tmp_path: Path) -> Iterator[Lab]:
    """A fresh lab for one test, deleted afterwards (pass or fail); then no page of it may
    have requested anything but our servers."""
    lab = Lab(tmp_path, playwright)
    try:
        lab.setup()
        yield lab
    finally:
        lab.close()
    assert lab.guard.foreign == [], f"requests left our origin: {lab.guard.foreign}"
