"""A default route for Firefox that leads nowhere, and guards that see anything using it.

Firefox gathers no ICE candidate in a network namespace that has no default route, and
the test namespace (``scripts/test``: only ``lo``) has none.  :class:`DeadEndRoute` gives
it one: a veth pair to a *gateway* namespace this test run creates, which has no other
interface and forwards nothing.  Firefox then gathers a host candidate on the veth
address (the peer, in the same namespace, reaches it locally: no packet crosses the veth),
and any packet that would leave the test namespace crosses the veth instead and is
recorded there by a packet listener: :meth:`DeadEndRoute.leaks` must stay empty.

:class:`DnsGuard` covers name look-ups that stay on loopback: when ``/etc/resolv.conf``
names a loopback resolver (e.g. ``127.0.0.53``), it listens there and records every
query (answering none).  A non-loopback resolver is reached through the dead-end route,
so its queries show up in :meth:`DeadEndRoute.leaks`, with the name asked.

Only inside a namespace the test run made itself (``COVIEW_NETNS``, as ``scripts/test``
sets it): never in the host's namespace.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

IP = shutil.which("ip") or "/usr/sbin/ip"
#: The test namespace's end and the gateway's end of the veth (a /30 of their own).
LOCAL, GATEWAY = "10.79.0.2", "10.79.0.1"
IFACES = ("cvfx0", "cvfx1")

_LISTENER = r"""import socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
print("ready", flush=True)
while True:
    f, addr = s.recvfrom(65535)
    if addr[2] == socket.PACKET_OUTGOING:
        continue
    kind = struct.unpack("!H", f[12:14])[0]
    if kind == 0x0806:
        print("ARP who-has", socket.inet_ntoa(f[38:42]), flush=True)
    elif kind == 0x0800:
        ihl = (f[14] & 15) * 4
        proto = {1: "icmp", 2: "igmp", 6: "tcp", 17: "udp"}.get(f[23], str(f[23]))
        dst = socket.inet_ntoa(f[30:34])
        port = struct.unpack("!H", f[14 + ihl + 2:14 + ihl + 4])[0] if f[23] in (6, 17) else 0
        name = ""
        if proto == "igmp" and f[14 + ihl] == 0x22:  # IGMPv3 report: the first group joined
            name = " join " + socket.inet_ntoa(f[14 + ihl + 12:14 + ihl + 16])
        if proto == "udp" and port == 53:
            q, labels = f[14 + ihl + 8 + 12:], []
            while q and q[0]:
                labels.append(q[1:1 + q[0]].decode(errors="replace"))
                q = q[1 + q[0]:]
            name = " DNS " + ".".join(labels)
        print(f"{proto} to {dst}:{port}{name}", flush=True)
    else:
        print(f"ethertype {kind:#06x}", flush=True)
"""


def has_default_route() -> bool:
    """Whether this process's namespace has an IPv4 default route."""
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(line.split()[1] == "00000000" for line in lines if line.split())


def _netns_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def test_namespace() -> str | None:
    """``COVIEW_NETNS`` if this process really runs in that (non-host) namespace."""
    name = os.environ.get("COVIEW_NETNS", "")
    if not name:
        return None
    try:
        ours = _netns_id("/proc/self/ns/net")
        if ours != _netns_id(f"/run/netns/{name}"):
            return None
        if ours == _netns_id("/proc/1/ns/net"):
            return None
    except PermissionError:
        return name  # init's namespace unreadable (containers): ours matched the name
    except OSError:
        return None
    return name


class DeadEndRoute:
    """The veth to a gateway namespace that swallows and records whatever reaches it."""

    def __init__(self, test_ns: str, tmp: Path) -> None:
        self.test_ns = test_ns
        self.gateway_ns = f"{test_ns}-gw"
        self.tmp = tmp
        self.listener: subprocess.Popen[bytes] | None = None
        self.log_path = tmp / "dead-end-route.log"
        self._made = False
        self._seen: list[str] = []
        self._changed = threading.Condition()

    def _ip(self, *args: str) -> None:
        subprocess.run([IP, *args], check=True, capture_output=True)

    def setup(self) -> None:
        here, there = IFACES
        self._ip("netns", "add", self.gateway_ns)
        self._made = True
        self._ip(
            "link", "add", here, "type", "veth", "peer", "name", there, "netns", self.gateway_ns
        )
        for ns, iface, addr in ((None, here, LOCAL), (self.gateway_ns, there, GATEWAY)):
            pre = ["-n", ns] if ns else []
            # No IPv6 on the veth: no router solicitations, no link-local chatter.
            subprocess.run(
                [
                    *([IP, "netns", "exec", ns] if ns else []),
                    "sysctl",
                    "-qw",
                    f"net.ipv6.conf.{iface}.disable_ipv6=1",
                ],
                check=True,
                capture_output=True,
            )
            self._ip(*pre, "addr", "add", f"{addr}/30", "dev", iface)
            self._ip(*pre, "link", "set", iface, "up")
        self._ip("route", "add", "default", "via", GATEWAY, "dev", here)
        with open(self.log_path, "wb") as log:
            self.listener = subprocess.Popen(
                [IP, "netns", "exec", self.gateway_ns, sys.executable, "-c", _LISTENER, there],
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert self.listener.stdout is not None
        first = self.listener.stdout.readline()
        if first.strip() != b"ready":
            raise RuntimeError(
                "the dead-end route's listener did not start: "
                + self.log_path.read_text(errors="replace")
            )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.listener is not None and self.listener.stdout is not None
        for line in self.listener.stdout:
            with self._changed:
                self._seen.append(line.decode(errors="replace").strip())
                self._changed.notify_all()

    def leaks(self) -> list[str]:
        """Every packet that tried to leave the test namespace so far, but IGMP reports.

        Chromium's WebRTC mDNS responder joins 224.0.0.251 on every interface, and the
        kernel announces the join (IGMP, to 224.0.0.22): bookkeeping of the link, which
        asks nothing of anyone.  mDNS itself (UDP to 224.0.0.251:5353) is a leak."""
        with self._changed:
            return [line for line in self._seen if not line.startswith("igmp ")]

    def seen(self) -> list[str]:
        """Everything recorded, IGMP reports included."""
        with self._changed:
            return list(self._seen)

    def wait_for(self, line: str, timeout: float = 5) -> None:
        """Wait until the listener recorded ``line`` (a self-test of the guard)."""
        with self._changed:
            if not self._changed.wait_for(lambda: line in self._seen, timeout):
                raise AssertionError(f"the dead-end route did not see {line!r}: {self._seen}")

    def forget(self) -> None:
        """Drop what was recorded so far (after a deliberate probe)."""
        with self._changed:
            self._seen.clear()

    def close(self) -> None:
        if self.listener is not None:
            self.listener.kill()
            self.listener.wait(10)
            self.listener = None
        if self._made:  # deleting the gateway namespace deletes both ends of the veth
            self._ip("netns", "del", self.gateway_ns)
            self._made = False


class DnsGuard:
    """Records DNS queries sent to a loopback resolver of ``/etc/resolv.conf``."""

    def __init__(self) -> None:
        self.queries: list[str] = []
        self._socks: list[socket.socket] = []
        self._stop = False

    @staticmethod
    def loopback_resolvers() -> list[str]:
        try:
            lines = Path("/etc/resolv.conf").read_text().splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                try:
                    if ipaddress.ip_address(parts[1]).is_loopback:
                        out.append(parts[1])
                except ValueError:
                    continue
        return out

    def start(self) -> None:
        for addr in self.loopback_resolvers():
            family = socket.AF_INET6 if ":" in addr else socket.AF_INET
            s = socket.socket(family, socket.SOCK_DGRAM)
            try:
                s.bind((addr, 53))
            except OSError:
                s.close()
                continue  # a real resolver listens there: nothing of ours to guard
            s.settimeout(0.5)
            self._socks.append(s)
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s: socket.socket) -> None:
        while not self._stop:
            try:
                data, _ = s.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            q, labels = data[12:], []
            while q and q[0]:
                labels.append(q[1 : 1 + q[0]].decode(errors="replace"))
                q = q[1 + q[0] :]
            self.queries.append(".".join(labels))

    def close(self) -> None:
        self._stop = True
        for s in self._socks:
            s.close()
        self._socks.clear()
