from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coview_server.store import Store


@pytest.fixture
def anyio_backend() -> str:
    # aiosqlite and asyncpg are asyncio-only.
    return "asyncio"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'coview.db'}"


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = await Store.open(db_url)
    try:
        yield s
    finally:
        await s.close()
