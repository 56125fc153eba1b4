"""A real ``coview serve`` process for a test run: a free port, a throw-away database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coview_server.settings import REPO_DIR

ADMIN_EMAIL = "admin@coview.test"
ADMIN_PASSWORD = "e2e-admin-password-1"
AGENT_EMAIL = "agent@coview.test"
AGENT_PASSWORD = "e2e-agent-password-1"
AGENT_NAME = "Alice Agent"

#: Origins of the Coview servers this test session started: the only ones pages may reach
#: (:class:`coview_server.testing.browsers.OriginGuard`).  Tests that reach a server at
#: another address (e.g. through a network namespace) add that origin here.
OUR_ORIGINS: set[str] = set()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A ``coview serve`` process with its own throw-away database in ``tmp``."""

    tmp: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db(self) -> Path:
        return self.tmp / "coview.db"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            COVIEW_ADMIN_EMAIL=ADMIN_EMAIL,
            COVIEW_ADMIN_PASSWORD=ADMIN_PASSWORD,
            COVIEW_DATABASE_URL=f"sqlite+aiosqlite:///{self.db}",
            # aioice never gathers on loopback by itself, and loopback is all there is here.
            COVIEW_RELAY_ADDRESSES="127.0.0.1",
        )
        env.update(self.env_extra)
        return env

    def cli(self, *args: str, stdin: str | None = None) -> str:
        """Run ``coview ARGS`` against this server's database; returns its output."""
        out = subprocess.run(
            [sys.executable, "-m", "coview_server", *args],
            input=stdin.encode() if stdin else None,
            env=self.env(),
            capture_output=True,
            check=True,
            cwd=REPO_DIR,
        )
        return out.stdout.decode()

    def create_agent(
        self, email: str = AGENT_EMAIL, password: str = AGENT_PASSWORD, name: str = AGENT_NAME
    ) -> None:
        self.cli("create-user", email, "--name", name, "--password-stdin", stdin=password + "\n")

    def command(self) -> list[str]:
        return [sys.executable, "-m", "coview_server", "serve", "--port", str(self.port)]

    def start(self) -> None:
        if not self.port:
            self.port = free_port()
        with open(self.tmp / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_DIR,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + self.log())
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)  # polling a process that is starting: nothing to wait on
        raise RuntimeError("server did not start:\n" + self.log())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        try:
            return (self.tmp / "server.log").read_text(errors="replace")[-5000:]
        except OSError:
            return ""


def make_server(tmp: Path, *, create_agent: bool = True, **env: str) -> Server:
    """Start a server (``env``: ``COVIEW_*`` settings on top of the test defaults) with the
    admin and one agent (:data:`AGENT_EMAIL`); its origin joins :data:`OUR_ORIGINS`.

    ``create_agent=False`` skips the agent: for a further process of a deployment whose
    shared database (``COVIEW_DATABASE_URL``) has it already."""
    server = Server(tmp=tmp, env_extra=env)
    server.start()
    OUR_ORIGINS.add(server.url)
    if create_agent:
        server.create_agent()
    return server


@contextmanager
def serve_app(app: Any, timeout_s: float = 15.0) -> Iterator[str]:
    """Serve an ASGI ``app`` (no lifespan) on a free loopback port in a thread, for
    tests that need a page server of their own; yields its origin."""
    import uvicorn  # only the tests that serve an app of their own need it

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test app's server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
