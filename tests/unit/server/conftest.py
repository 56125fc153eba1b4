from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from coview_server import pages, passwords, store as store_module
from coview_server.app import create_app
from coview_server.settings import Settings
from coview_server.store import Store
from tests.services import PostgresServer, postgres_server, redis_server

__all__ = ["postgres_server", "redis_server"]  # session fixtures, shared with tests/e2e

ADMIN_EMAIL = "admin@coview.local"
ADMIN_PASSWORD = "a long enough admin password"


def make_settings(tmp_path: Path, **extra: Any) -> Settings:
    """Settings for an app under TestClient: its own database, no environment leaking in."""
    overrides = {
        "database_url": "sqlite+aiosqlite:///" + str(tmp_path / "db.sqlite"),
        "admin_email": ADMIN_EMAIL,
        "admin_password": ADMIN_PASSWORD,
        **extra,
    }
    return Settings.load(overrides=overrides, environ={})


@pytest.fixture
def isolated_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reset process-wide state an app test could leak, and make password hashing cheap."""
    # The per-address login throttle is process-wide; every test starts with a clean slate.
    monkeypatch.setattr(pages, "_limiter", pages.LoginLimiter())
    # Cheap scrypt (the hash format records its cost, so verification follows suit).
    monkeypatch.setattr(passwords, "N", 2**10)
    monkeypatch.setattr(store_module, "_dummy_hash", None)


@pytest.fixture
def client(tmp_path: Path, isolated_app: None) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path))) as c:
        yield c


@pytest.fixture
def anyio_backend() -> str:
    # aiosqlite and asyncpg are asyncio-only.
    return "asyncio"


#: The backends every Store test runs on: the embedded default, and PostgreSQL for
#: deployments of several processes (a real server from tests/services.py).
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'coview.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.new_database()
    yield url
    server.drop_database(url)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = await Store.open(db_url)
    try:
        yield s
    finally:
        await s.close()
