"""A real coturn for the tests: started in the foreground on test addresses only.

Used by ``test_turn.py`` (on loopback) and by the restrictive-network lab (``lab.py``, on
the lab's gateway addresses).  Nothing here listens anywhere else.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from coview_server import turn as T

TURNSERVER = shutil.which("turnserver") or "/usr/bin/turnserver"
UCLIENT = shutil.which("turnutils_uclient") or "/usr/bin/turnutils_uclient"


def free_udp_and_tcp_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host`` (``0.0.0.0``: on every address)."""
    for _ in range(50):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            try:
                udp.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


@dataclass
class Coturn:
    tmp: Path
    port: int
    proc: subprocess.Popen[bytes]
    #: The address browsers and clients are given (one of its listening addresses).
    host: str = "127.0.0.1"

    def url(self, transport: str = "udp") -> str:
        url = f"turn:{self.host}:{self.port}"
        return url + "?transport=tcp" if transport == "tcp" else url

    def log(self) -> str:
        return (self.tmp / "turnserver.log").read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            log = self.log()
            if text in log or time.monotonic() > deadline:
                return log
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def local_config(
    tmp: Path,
    port: int,
    listening_ips: Sequence[str] = ("127.0.0.1",),
    relay_ip: str = "127.0.0.1",
    loopback_peers: bool = True,
) -> list[str]:
    """What only a test server needs, on top of a production-like config: where it listens
    and relays, no TLS/DTLS/CLI, a log file and a user database in ``tmp``."""
    return [
        *(f"listening-ip={ip}" for ip in listening_ips),
        f"relay-ip={relay_ip}",
        f"listening-port={port}",
        *(["allow-loopback-peers"] if loopback_peers else []),
        "no-tls",
        "no-dtls",
        "no-cli",
        f"log-file={tmp / 'turnserver.log'}",
        "simple-log",
        "verbose",
        f"userdb={tmp / 'turndb'}",
        f"pidfile={tmp / 'turnserver.pid'}",
    ]


def loopback_config(tmp: Path, port: int) -> list[str]:
    """What only a loopback test server needs, on top of a production-like config."""
    return local_config(tmp, port)


def auth_config(realm: str, secrets: Sequence[str], ports: tuple[int, int]) -> list[str]:
    """TURN REST credentials (``use-auth-secret``), current secret first, and a relay port
    range of its own."""
    return [
        f"min-port={ports[0]}",
        f"max-port={ports[1]}",
        f"realm={realm}",
        "use-auth-secret",
        *(f"static-auth-secret={s}" for s in secrets),
        "fingerprint",
        "no-multicast-peers",
    ]


def start_coturn(tmp: Path, config: list[str], port: int, host: str = "127.0.0.1") -> Coturn:
    """Run ``turnserver -c`` with ``config``; returns once it answers on ``host:port``."""
    conf = tmp / "turnserver.conf"
    conf.write_text("\n".join(config) + "\n")
    out = open(tmp / "turnserver.out", "ab")
    proc = subprocess.Popen([TURNSERVER, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    coturn = Coturn(tmp, port, proc, host)
    (tmp / "turnserver.log").touch()
    deadline = time.monotonic() + 15
    tid = os.urandom(12)
    binding = T.encode(T.BINDING, T.REQUEST, tid)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("turnserver exited:\n" + coturn.log()[-3000:])
        try:  # ready once it answers a STUN Binding over UDP and accepts TCP
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.settimeout(0.2)
                udp.sendto(binding, (host, port))
                if T.decode(udp.recv(2048)).tid == tid:
                    socket.create_connection((host, port), timeout=0.2).close()
                    return coturn
        except (OSError, T.StunError):
            time.sleep(0.1)
    coturn.stop()
    raise RuntimeError("turnserver did not start:\n" + coturn.log()[-3000:])
