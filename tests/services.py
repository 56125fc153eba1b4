"""Real, throw-away PostgreSQL and Redis servers for tests (unit and end-to-end).

Both come from Debian's packages (``postgresql``, ``redis-server``, installed by
``scripts/bootstrap --test``) and listen on a unix socket in a private temporary
directory only: no TCP port to collide with another test run, and nothing reachable from
outside the machine.

* :class:`PostgresServer`: ``initdb`` into a temporary directory (trust authentication,
  no fsync: it is thrown away), then ``postgres`` started by ``pg_ctl -w``, which returns
  once the server accepts connections. PostgreSQL refuses to run as root, so under root it
  runs as Debian's ``postgres`` system user (``subprocess``'s ``user=``/``group=``: no
  sudo, no su); as any other user it runs as that user. :meth:`PostgresServer.new_database`
  gives each test a fresh, empty database (``CREATE DATABASE`` is a file copy of
  ``template0``, a few milliseconds without fsync).
* :class:`RedisServer`: ``redis-server --port 0 --unixsocket …`` without persistence;
  ready once its log says so. :meth:`RedisServer.restart` stops and starts it again on the
  same socket, for tests of what clients do when Redis goes away.

pytest fixtures (session-scoped servers, and ``postgres_database``: a fresh database per
test) are defined at the end; a conftest or test module imports them
(``from tests.services import postgres_server, redis_server  # noqa: F401``). A test
that needs a server it cannot find is skipped with the reason, except under CI
(``CI=true``), where bootstrap installs both and a missing binary fails the test instead
of silently skipping it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

__all__ = [
    "PostgresServer",
    "RedisServer",
    "ServiceUnavailable",
    "find_postgres_bin",
    "find_redis_server",
    "postgres_database",
    "postgres_server",
    "redis_server",
    "require",
]

START_TIMEOUT_S = 30.0
PG_SUPERUSER = "postgres"


class ServiceUnavailable(Exception):
    """The binaries a test server needs are not installed."""


def find_postgres_bin() -> Path:
    """The directory with ``initdb``, ``pg_ctl`` and ``postgres``: Debian keeps them off
    PATH in ``/usr/lib/postgresql/VERSION/bin``; the newest version wins."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise ServiceUnavailable("PostgreSQL is not installed (Debian package postgresql)")


def find_redis_server() -> Path:
    found = shutil.which("redis-server")
    if found is None:
        raise ServiceUnavailable("redis-server is not installed (Debian package redis-server)")
    return Path(found)


def require(finder: Any) -> Any:
    """``finder()``, or skip the test (fail it under CI) when the binaries are missing."""
    try:
        return finder()
    except ServiceUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(f"{e}; scripts/bootstrap --test installs it")
        pytest.skip(str(e))


def _run_as() -> dict[str, Any]:
    """``subprocess`` arguments that drop root to the ``postgres`` user; empty otherwise."""
    if os.geteuid() != 0:
        return {}
    try:
        pw = pwd.getpwnam(PG_SUPERUSER)
    except KeyError:
        raise ServiceUnavailable(
            "running as root and there is no 'postgres' user to run PostgreSQL as"
        ) from None
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


class _Output(threading.Thread):
    """Drains a child's output (so a chatty server never blocks on a full pipe) and
    lets a caller wait until a given text has appeared."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self._stream = stream
        self._seen = b""
        self._cond = threading.Condition()
        self._ended = False

    def run(self) -> None:
        for line in self._stream:
            with self._cond:
                if len(self._seen) < 1 << 20:
                    self._seen += line
                self._cond.notify_all()
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def wait_for(self, needle: bytes, timeout: float) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: needle in self._seen or self._ended, timeout):
                raise RuntimeError(f"timed out waiting for {needle!r}:\n{self.text}")
            if needle not in self._seen:
                raise RuntimeError(f"server exited before {needle!r}:\n{self.text}")

    @property
    def text(self) -> str:
        return self._seen.decode(errors="replace")


def _scratch() -> str | None:
    """Memory-backed scratch space when there is some: creating and dropping a database
    per test is file churn that a disk (worse: one mounted with ``discard``) makes slow."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory, reachable only by its unix socket."""

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_postgres_bin()
        self._as = _run_as()
        self.dir = Path(tempfile.mkdtemp(prefix="coview-pg-", dir=_scratch()))
        if self._as:
            os.chown(self.dir, self._as["user"], self._as["group"])
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = 5432  # only names the socket file; nothing listens on TCP
        self._databases = 0
        self.started = False

    @property
    def socket_dir(self) -> str:
        return str(self.dir)

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            args, capture_output=True, cwd=self.dir, env=self._env(), check=False, **self._as
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(
                f"{args[0]} failed ({result.returncode}):\n"
                f"{result.stdout.decode(errors='replace')}{result.stderr.decode(errors='replace')}"
                f"{log}"
            )

    def _env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}

    def start(self) -> None:
        if not self.data.exists():
            self._run(
                str(self.bindir / "initdb"),
                "--pgdata",
                str(self.data),
                "--username",
                PG_SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C.UTF-8",
                "--no-sync",
                "--no-instructions",
            )
        options = " ".join(
            [
                "-c listen_addresses=''",  # unix socket only
                f"-c unix_socket_directories='{self.dir}'",
                f"-p {self.port}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c shared_buffers=16MB",
                "-c max_connections=200",
            ]
        )
        # -w: pg_ctl returns once the server accepts connections (or fails with its log).
        self._run(
            str(self.bindir / "pg_ctl"),
            "start",
            "-w",
            "-t",
            str(int(START_TIMEOUT_S)),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
        )
        self.started = True

    def stop(self) -> None:
        if self.started:
            self.started = False
            self._run(
                str(self.bindir / "pg_ctl"), "stop", "-w", "-m", "immediate", "-D", str(self.data)
            )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres", driver: str = "asyncpg") -> str:
        """An SQLAlchemy URL for ``database`` over the unix socket."""
        return f"postgresql+{driver}://{PG_SUPERUSER}@/{database}?host={self.dir}&port={self.port}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-h",
                str(self.dir),
                "-p",
                str(self.port),
                "-U",
                PG_SUPERUSER,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atqc",
                sql,
            ],
            capture_output=True,
            env=self._env(),
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.decode(errors='replace')}")
        return result.stdout.decode()

    def new_database(self, prefix: str = "test") -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        self._databases += 1
        name = f"{prefix}_{os.getpid()}_{self._databases}"
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by :meth:`new_database` (closing what still uses it)."""
        name = url.partition("@/")[2].partition("?")[0]
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisServer:
    """A redis-server without persistence, reachable only by its unix socket."""

    def __init__(self, binary: Path | None = None) -> None:
        self.binary = binary or find_redis_server()
        self.dir = Path(tempfile.mkdtemp(prefix="coview-redis-"))
        self.socket = self.dir / "redis.sock"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self._proc = subprocess.Popen(
            [
                str(self.binary),
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--daemonize",
                "no",
                "--loglevel",
                "notice",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.dir,
        )
        assert self._proc.stdout is not None
        self.output = _Output(self._proc.stdout)
        self.output.start()
        try:
            # "Ready to accept connections" (7.2+) or "…now ready to accept connections" (7.0)
            self.output.wait_for(b"eady to accept connections", START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()  # as a crash would: clients see their connections drop
        proc.wait(timeout=START_TIMEOUT_S)
        self.output.join(START_TIMEOUT_S)
        if proc.stdout is not None:
            proc.stdout.close()
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- pytest fixtures -------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the whole run; use ``new_database()`` per test."""
    bindir = require(find_postgres_bin)
    with PostgresServer(bindir) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole run. Tests that restart Redis make their own."""
    binary = require(find_redis_server)
    with RedisServer(binary) as server:
        yield server


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test: its SQLAlchemy URL over the unix socket
    (``postgresql+asyncpg://postgres@/NAME?host=DIR&port=5432``), which is also what a
    ``coview serve`` process takes as ``COVIEW_DATABASE_URL``. Dropped after the test,
    closing whatever still uses it."""
    url = postgres_server.new_database("e2e")
    yield url
    postgres_server.drop_database(url)
