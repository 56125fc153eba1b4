from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from coview_server.bootstrap import ensure_admin
from coview_server.migrations import alembic_config
from coview_server.models import Base
from coview_server.store import AuthError, ShareRow, Store, StoreError, database_url
from coview_server.tokens import new_token, token_hash

pytestmark = pytest.mark.anyio

PW = "correct horse battery"
T0 = 1_700_000_000.0
TABLES = {
    "users",
    "auth_sessions",
    "visitors",
    "conversations",
    "messages",
    "shares",
    "share_keys",
    "company_settings",
}


async def _agent(store: Store, email: str = "agent@example.com", role: str = "agent") -> int:
    return (await store.create_user(email, "Agent", PW, role=role)).id


# --- schema and migrations ---------------------------------------------------------


def _head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def test_open_creates_all_tables_and_is_rerunnable(db_url: str, tmp_path: Path) -> None:
    sqlite = db_url.startswith("sqlite")
    assert not (tmp_path / "coview.db").exists()
    store = await Store.open(db_url)
    assert (tmp_path / "coview.db").exists() == sqlite
    await store.create_user("a@example.com", "A", PW)
    await store.close()

    store = await Store.open(db_url)  # second start: migration is a no-op, data kept
    try:
        async with store.engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        assert TABLES | {"alembic_version"} == tables
        assert version == _head()
        assert await store.count_users() == 1
    finally:
        await store.close()


async def test_open_creates_missing_parent_directory(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'a' / 'b' / 'c.db'}")
    await store.close()
    assert (tmp_path / "a" / "b" / "c.db").exists()


async def test_migrations_match_models(store: Store) -> None:
    def diff(conn: Connection) -> list[object]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))

    async with store.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_backend_settings(store: Store) -> None:
    """SQLite: WAL and enforced foreign keys; PostgreSQL: READ COMMITTED, which the
    Store's concurrency (conditional UPDATEs, row locks, unique constraints) is built for."""
    async with store.engine.connect() as conn:
        if store.engine.dialect.name == "sqlite":
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
        else:
            assert store.engine.dialect.name == "postgresql"
            assert store.engine.dialect.driver == "asyncpg"
            level = (await conn.execute(text("SHOW transaction_isolation"))).scalar()
            assert level == "read committed"


async def test_concurrent_first_starts_migrate_once(db_url: str) -> None:
    """Several processes of one deployment start together on an empty database."""
    stores = await asyncio.gather(*(Store.open(db_url) for _ in range(3)))
    try:
        await stores[0].create_user("a@example.com", "A", PW)
        assert [await s.count_users() for s in stores] == [1, 1, 1]
    finally:
        for s in stores:
            await s.close()


async def test_sqlite_first_starts_take_turns(tmp_path: Path) -> None:
    """Three processes opening a new SQLite file at once used to fail 1 time in 10 with
    ``database is locked`` (SQLite refuses to wait out what it sees as a deadlock)."""
    for i in range(25):
        url = f"sqlite+aiosqlite:///{tmp_path}/first-{i}.db"
        stores = await asyncio.gather(*(Store.open(url) for _ in range(3)))
        try:
            assert [await s.count_users() for s in stores] == [0, 0, 0]
        finally:
            for s in stores:
                await s.close()
    assert (tmp_path / "first-0.db.lock").is_file()


def test_database_url_picks_the_async_driver() -> None:
    url = database_url("postgresql://u:p%40ss@db/coview")
    assert url.render_as_string(hide_password=False) == "postgresql+asyncpg://u:p%40ss@db/coview"
    assert url.password == "p@ss"
    assert str(database_url("postgres://db/coview")) == "postgresql+asyncpg://db/coview"
    assert str(database_url("postgresql+psycopg://db/x")) == "postgresql+psycopg://db/x"
    assert str(database_url("sqlite:///var/c.db")) == "sqlite+aiosqlite:///var/c.db"
    assert str(database_url("sqlite+aiosqlite:///:memory:")) == "sqlite+aiosqlite:///:memory:"


async def test_in_memory_database_works() -> None:
    store = await Store.open("sqlite+aiosqlite:///:memory:")
    try:
        assert await store.count_users() == 0
        await store.create_user("m@example.com", "M", PW)
        assert await store.count_users() == 1
    finally:
        await store.close()


# --- users -------------------------------------------------------------------------------


async def test_create_user_normalises_email_and_rejects_duplicates(store: Store) -> None:
    user = await store.create_user("  Alice@Example.COM ", "Alice", PW)
    assert user.email == "alice@example.com"
    assert user.role == "agent" and not user.is_admin and not user.disabled
    assert await store.get_user(user.id) == user
    assert await store.get_user_by_email("ALICE@example.com") == user
    with pytest.raises(StoreError) as err:
        await store.create_user("alice@EXAMPLE.com", "Other", PW)
    assert err.value.code == "email_taken"
    assert await store.count_users() == 1


async def test_create_user_validates_input(store: Store) -> None:
    with pytest.raises(ValueError):
        await store.create_user("not-an-email", "X", PW)
    with pytest.raises(ValueError):
        await store.create_user("x@example.com", "X", PW, role="root")
    with pytest.raises(ValueError):
        await store.create_user("x@example.com", "X", "")
    assert await store.count_users() == 0


async def test_password_hash_is_not_plaintext(store: Store) -> None:
    await store.create_user("a@example.com", "A", PW)
    async with store.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT password_hash FROM users"))).scalar()
    assert isinstance(stored, str) and stored.startswith("scrypt$") and PW not in stored


async def test_authenticate(store: Store) -> None:
    uid = await _agent(store)
    user = await store.authenticate("AGENT@example.com", PW)
    assert user.id == uid
    for email, password in [("agent@example.com", "wrong"), ("nobody@example.com", PW), ("", PW)]:
        with pytest.raises(AuthError) as err:
            await store.authenticate(email, password)
        assert err.value.code == "bad_credentials"


async def test_five_failures_lock_then_unlock_after_five_minutes(store: Store) -> None:
    uid = await _agent(store)
    for i in range(5):
        with pytest.raises(AuthError) as err:
            await store.authenticate("agent@example.com", "wrong", now=T0 + i)
        assert err.value.code == "bad_credentials"
    locked = await store.get_user(uid)
    assert locked is not None and locked.locked_until == pytest.approx(T0 + 4 + 300)

    # Even the right password is refused while locked, and does not extend the lock.
    with pytest.raises(AuthError) as err:
        await store.authenticate("agent@example.com", PW, now=T0 + 200)
    assert err.value.code == "locked"

    user = await store.authenticate("agent@example.com", PW, now=T0 + 305)
    assert user.failed_logins == 0 and user.locked_until is None


async def test_success_resets_failure_count(store: Store) -> None:
    await _agent(store)
    for _ in range(4):
        with pytest.raises(AuthError):
            await store.authenticate("agent@example.com", "wrong", now=T0)
    await store.authenticate("agent@example.com", PW, now=T0)
    for _ in range(4):
        with pytest.raises(AuthError):
            await store.authenticate("agent@example.com", "wrong", now=T0)
    # Four fresh failures after a success do not lock.
    await store.authenticate("agent@example.com", PW, now=T0)


async def test_repeated_lockouts_double(store: Store) -> None:
    uid = await _agent(store)
    for _ in range(5):
        with pytest.raises(AuthError):
            await store.authenticate("agent@example.com", "wrong", now=T0)
    t1 = T0 + 301
    for _ in range(5):
        with pytest.raises(AuthError) as err:
            await store.authenticate("agent@example.com", "wrong", now=t1)
        assert err.value.code == "bad_credentials"
    user = await store.get_user(uid)
    assert user is not None and user.locked_until == pytest.approx(t1 + 600)


async def test_disabled_user_cannot_log_in_or_keep_sessions(store: Store) -> None:
    uid = await _agent(store)
    token, _ = await store.create_session(uid)
    assert await store.session_user(token) is not None

    await store.set_user_disabled(uid, True)
    assert await store.session_user(token) is None
    with pytest.raises(AuthError) as err:
        await store.authenticate("agent@example.com", PW)
    assert err.value.code == "disabled"
    with pytest.raises(AuthError) as err:  # wrong password does not reveal the state
        await store.authenticate("agent@example.com", "wrong")
    assert err.value.code == "bad_credentials"
    with pytest.raises(AuthError) as err:
        await store.create_session(uid)
    assert err.value.code == "disabled"

    await store.set_user_disabled(uid, False)
    assert await store.session_user(token) is None  # disabling ended it for good
    await store.authenticate("agent@example.com", PW)


async def test_outdated_hash_is_upgraded_on_login(store: Store) -> None:
    uid = await _agent(store)
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(PW.encode(), salt=salt, n=2**12, r=8, p=1, dklen=32)

    def b64(b: bytes) -> str:
        import base64

        return base64.b64encode(b).decode().rstrip("=")

    legacy = f"scrypt${2**12}$8$1${b64(salt)}${b64(digest)}"
    async with store.engine.begin() as conn:
        await conn.execute(text("UPDATE users SET password_hash = :h"), {"h": legacy})
    await store.authenticate("agent@example.com", PW)
    async with store.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT password_hash FROM users"))).scalar()
    assert isinstance(stored, str) and stored.startswith(f"scrypt${2**14}$")
    assert (await store.authenticate("agent@example.com", PW)).id == uid


async def test_set_password_replaces_password_ends_sessions_and_unlocks(store: Store) -> None:
    uid = await _agent(store)
    token, _ = await store.create_session(uid)
    for _ in range(5):
        with pytest.raises(AuthError):
            await store.authenticate("agent@example.com", "wrong", now=T0)

    await store.set_password(uid, "a brand new secret")
    assert await store.session_user(token) is None
    with pytest.raises(AuthError):
        await store.authenticate("agent@example.com", PW, now=T0 + 1)
    user = await store.authenticate("agent@example.com", "a brand new secret", now=T0 + 2)
    assert user.id == uid
    with pytest.raises(StoreError) as err:
        await store.set_password(9999, "whatever123")
    assert err.value.code == "not_found"


# --- sessions --------------------------------------------------------------------------


async def test_session_lifecycle_and_expiry(store: Store) -> None:
    uid = await _agent(store)
    token, csrf = await store.create_session(uid, ttl=600, now=T0)
    assert token != csrf and len(token) >= 43

    found = await store.session_user(token, now=T0 + 599)
    assert found is not None
    user, got_csrf = found
    assert user.id == uid and got_csrf == csrf

    assert await store.session_user(token, now=T0 + 600) is None
    assert await store.session_user(token, now=T0) is None  # expired sessions are deleted
    assert await store.session_user("") is None
    assert await store.session_user(new_token()) is None


async def test_only_token_hashes_are_stored(store: Store) -> None:
    uid = await _agent(store)
    token, _ = await store.create_session(uid)
    async with store.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT token_hash FROM auth_sessions"))).scalar()
    assert stored == token_hash(token) and stored != token


async def test_last_seen_slides(store: Store) -> None:
    uid = await _agent(store)
    token, _ = await store.create_session(uid, now=T0)

    async def last_seen() -> float:
        async with store.engine.connect() as conn:
            value = (await conn.execute(text("SELECT last_seen FROM auth_sessions"))).scalar()
        assert isinstance(value, float)
        return value

    await store.session_user(token, now=T0 + 10)
    assert await last_seen() == T0  # not rewritten on every request
    await store.session_user(token, now=T0 + 120)
    assert await last_seen() == T0 + 120


async def test_delete_session_and_purge(store: Store) -> None:
    uid = await _agent(store)
    a, _ = await store.create_session(uid, ttl=10, now=T0)
    b, _ = await store.create_session(uid, ttl=1000, now=T0)
    c, _ = await store.create_session(uid, ttl=1000, now=T0)
    await store.delete_session(a + "x")  # unknown: no error
    await store.delete_session(b)
    assert await store.session_user(b, now=T0) is None
    assert await store.purge_expired_sessions(now=T0 + 100) == 1
    assert await store.session_user(c, now=T0 + 100) is not None
    with pytest.raises(StoreError):
        await store.create_session(424242)


# --- visitors --------------------------------------------------------------------------


async def test_visitor_secret_roundtrip(store: Store) -> None:
    visitor, secret = await store.create_visitor(now=T0)
    assert len(visitor.id) == 16
    assert visitor.created_at == T0 and not visitor.can_share and visitor.current_page is None
    assert await store.visitor_by_secret(secret) == visitor
    assert await store.visitor_by_secret(secret + "x") is None
    assert await store.visitor_by_secret("") is None
    assert await store.get_visitor(visitor.id) == visitor
    async with store.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT secret_hash FROM visitors"))).scalar()
    assert stored == token_hash(secret)


async def test_update_visitor_truncates_browser_supplied_values(store: Store) -> None:
    visitor, _ = await store.create_visitor(now=T0)
    page = "https://example.com/" + "p" * 5000
    row = await store.update_visitor(
        visitor.id,
        user_agent="UA" * 1000,
        browser="Firefox",
        os="Linux",
        can_share=True,
        share_reason=None,
        current_page=page,
        now=T0 + 5,
    )
    assert row.current_page == page[:2048]
    assert len(row.user_agent) <= 1024
    assert (row.browser, row.os, row.can_share, row.last_seen) == ("Firefox", "Linux", True, T0 + 5)
    assert await store.get_visitor(visitor.id) == row
    with pytest.raises(StoreError):
        await store.update_visitor(
            "nope",
            user_agent="",
            browser="",
            os="",
            can_share=False,
            share_reason="x",
            current_page=None,
        )


# --- conversations -----------------------------------------------------------------------


async def test_open_conversation_reuses_current_until_closed(store: Store) -> None:
    visitor, _ = await store.create_visitor()
    assert await store.current_conversation(visitor.id) is None
    first = await store.open_conversation(visitor.id, now=T0)
    assert first.status == "waiting" and first.agent_id is None
    assert await store.open_conversation(visitor.id, now=T0 + 1) == first
    assert await store.current_conversation(visitor.id) == first

    closed = await store.close_conversation(first.id, now=T0 + 2)
    assert closed.status == "closed" and closed.updated_at == T0 + 2
    assert await store.close_conversation(first.id, now=T0 + 9) == closed  # idempotent
    assert await store.current_conversation(visitor.id) is None
    second = await store.open_conversation(visitor.id, now=T0 + 3)
    assert second.id != first.id
    with pytest.raises(StoreError):
        await store.open_conversation("no-such-visitor")


async def test_assign_conversation(store: Store) -> None:
    alice = await _agent(store, "alice@example.com")
    bob = await _agent(store, "bob@example.com")
    visitor, _ = await store.create_visitor()
    conv = await store.open_conversation(visitor.id, now=T0)

    taken = await store.assign_conversation(conv.id, alice, now=T0 + 1)
    assert (taken.status, taken.agent_id, taken.updated_at) == ("open", alice, T0 + 1)
    assert await store.assign_conversation(conv.id, alice, now=T0 + 5) == taken
    with pytest.raises(StoreError) as err:
        await store.assign_conversation(conv.id, bob)
    assert err.value.code == "taken"

    await store.close_conversation(conv.id)
    with pytest.raises(StoreError) as err:
        await store.assign_conversation(conv.id, alice)
    assert err.value.code == "closed"
    with pytest.raises(StoreError) as err:
        await store.assign_conversation(12345, alice)
    assert err.value.code == "not_found"


async def test_concurrent_claims_have_one_winner(store: Store) -> None:
    agents = [await _agent(store, f"a{i}@example.com") for i in range(5)]
    visitor, _ = await store.create_visitor()
    conv = await store.open_conversation(visitor.id)
    results = await asyncio.gather(
        *(store.assign_conversation(conv.id, a) for a in agents), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, StoreError) and r.code == "taken" for r in results if r not in winners)


async def test_list_conversations(store: Store) -> None:
    alice = await _agent(store, "alice@example.com")
    bob = await _agent(store, "bob@example.com")
    admin = await _agent(store, "root@example.com", role="admin")
    convs = []
    for i in range(4):
        visitor, _ = await store.create_visitor()
        convs.append(await store.open_conversation(visitor.id, now=T0 + i))
    waiting, for_alice, for_bob, closed = convs
    await store.assign_conversation(for_alice.id, alice, now=T0 + 10)
    await store.assign_conversation(for_bob.id, bob, now=T0 + 11)
    await store.close_conversation(closed.id, now=T0 + 12)
    await store.add_message(waiting.id, "visitor", "hello?", now=T0 + 20)

    assert [c.id for c in await store.list_conversations(alice, False)] == [
        waiting.id,
        for_alice.id,
    ]
    assert [c.id for c in await store.list_conversations(admin, True)] == [
        waiting.id,
        for_bob.id,
        for_alice.id,
    ]


# --- messages ----------------------------------------------------------------------------


async def test_messages_are_idempotent_on_client_id(store: Store) -> None:
    visitor, _ = await store.create_visitor()
    conv = await store.open_conversation(visitor.id, now=T0)
    first, created = await store.add_message(
        conv.id, "visitor", "hi", client_msg_id="c1", now=T0 + 1
    )
    assert created and first.text == "hi" and first.created_at == T0 + 1
    again, created = await store.add_message(
        conv.id, "visitor", "hi", client_msg_id="c1", now=T0 + 2
    )
    assert not created and again == first
    # The same client id in another conversation is a different message.
    other_visitor, _ = await store.create_visitor()
    other = await store.open_conversation(other_visitor.id)
    _, created = await store.add_message(other.id, "visitor", "hi", client_msg_id="c1")
    assert created
    # Messages without a client id never collapse.
    await store.add_message(conv.id, "system", "note")
    await store.add_message(conv.id, "system", "note")
    assert [m.text for m in await store.messages(conv.id)] == ["hi", "note", "note"]
    got = await store.get_conversation(conv.id)
    assert got is not None and got.updated_at >= T0 + 1


async def test_concurrent_resends_store_one_message(store: Store) -> None:
    visitor, _ = await store.create_visitor()
    conv = await store.open_conversation(visitor.id)
    results = await asyncio.gather(
        *(store.add_message(conv.id, "visitor", "x", client_msg_id="same") for _ in range(10))
    )
    assert sum(created for _, created in results) == 1
    assert len({row.id for row, _ in results}) == 1
    assert len(await store.messages(conv.id)) == 1


async def test_message_validation(store: Store) -> None:
    agent = await _agent(store)
    visitor, _ = await store.create_visitor()
    conv = await store.open_conversation(visitor.id)
    row, _ = await store.add_message(conv.id, "agent", "x" * 4000, agent_id=agent)
    assert len(row.text) == 4000 and row.agent_id == agent
    with pytest.raises(ValueError):
        await store.add_message(conv.id, "agent", "x" * 4001, agent_id=agent)
    with pytest.raises(ValueError):
        await store.add_message(conv.id, "robot", "hi")
    with pytest.raises(ValueError):
        await store.add_message(conv.id, "visitor", "hi", client_msg_id="c" * 65)
    with pytest.raises(StoreError):
        await store.add_message(98765, "visitor", "hi")
    assert len(await store.messages(conv.id)) == 1


async def test_messages_returns_latest_in_order(store: Store) -> None:
    visitor, _ = await store.create_visitor()
    conv = await store.open_conversation(visitor.id)
    for i in range(10):
        await store.add_message(conv.id, "visitor", str(i), now=T0 + i)
    assert [m.text for m in await store.messages(conv.id, limit=3)] == ["7", "8", "9"]
    assert [m.text for m in await store.messages(conv.id)] == [str(i) for i in range(10)]


# --- shares ------------------------------------------------------------------------------


async def test_share_lifecycle(store: Store) -> None:
    agent = await _agent(store)
    visitor, _ = await store.create_visitor()
    conv = await store.open_conversation(visitor.id)
    h = token_hash(new_token())
    share = await store.create_share(conv.id, agent, h, T0 + 120, "requested", now=T0)
    assert len(share.id) == 16
    assert (share.state, share.token_used, share.ended_at) == ("requested", False, None)
    assert await store.get_share(share.id) == share
    assert await store.share_by_token_hash(h) == share
    assert await store.share_by_token_hash(token_hash("other")) is None
    assert await store.open_shares() == [share]

    live = await store.update_share(
        share.id, state="live", token_used=True, started_at=T0 + 5, path="/x" * 3000
    )
    assert live.state == "live" and live.token_used and live.started_at == T0 + 5
    assert live.path is not None and len(live.path) == 2048
    ended = await store.update_share(
        share.id, state="ended", ended_at=T0 + 60, end_reason="agent_stopped", ended_by="agent"
    )
    assert await store.get_share(share.id) == ended
    assert await store.open_shares() == []


async def test_claim_share_token_spends_once_and_stores_the_resume(store: Store) -> None:
    agent = await _agent(store)
    visitor, _ = await store.create_visitor()
    conv = await store.open_conversation(visitor.id)
    h = token_hash("popup-token")
    share = await store.create_share(conv.id, agent, h, T0 + 120, "requested", now=T0)
    seen: list[ShareRow] = []

    def refuse(row: ShareRow) -> None:
        seen.append(row)
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError):  # the admission check refuses: nothing is written
        await store.claim_share_token(h, "resume-1", refuse)
    assert seen == [share] and await store.get_share(share.id) == share
    assert await store.claim_share_token(token_hash("other"), "r", refuse) is None
    assert len(seen) == 1  # no row, no admission check

    claimed = await store.claim_share_token(h, "resume-1", seen.append)
    assert claimed is not None
    row, asker = claimed
    assert asker == "Agent" and row == await store.get_share(share.id)
    assert (row.token_used, row.resume_hash, row.state) == (True, "resume-1", "requested")
    with pytest.raises(StoreError) as again:  # the check let a spent token through
        await store.claim_share_token(h, "resume-2", seen.append)
    assert again.value.code == "used"
    assert (await store.get_share(share.id)) == row  # the first window's resume stands


async def test_update_share_rejects_unknown_and_identity_fields(store: Store) -> None:
    agent = await _agent(store)
    visitor, _ = await store.create_visitor()
    conv = await store.open_conversation(visitor.id)
    share = await store.create_share(conv.id, agent, "h", T0, "requested")
    for bad in ({"stat": "x"}, {"id": "x"}, {"conversation_id": 2}):
        with pytest.raises(ValueError):
            await store.update_share(share.id, **bad)
    assert await store.get_share(share.id) == share
    with pytest.raises(StoreError):
        await store.update_share("missing", state="x")
    with pytest.raises(StoreError):
        await store.create_share(4444, agent, "h2", T0, "requested")


async def test_share_token_hash_is_unique(store: Store) -> None:
    agent = await _agent(store)
    visitor, _ = await store.create_visitor()
    conv = await store.open_conversation(visitor.id)
    await store.create_share(conv.id, agent, "same", T0, "requested")
    with pytest.raises(StoreError):
        await store.create_share(conv.id, agent, "same", T0, "requested")


# --- several processes at once ------------------------------------------------------------
# On SQLite one process's transactions queue behind an asyncio lock and processes behind
# BEGIN IMMEDIATE; on PostgreSQL they really run concurrently (one connection each), so
# these are what keeps single-use things single-use there.


async def test_concurrent_token_claims_have_one_winner(db_url: str) -> None:
    """Two processes (two Stores: two connection pools) spend one popup token at once."""
    a, b = await Store.open(db_url), await Store.open(db_url)
    try:
        agent = await _agent(a)
        visitor, _ = await a.create_visitor()
        conv = await a.open_conversation(visitor.id)
        for i in range(5):
            share = await a.create_share(conv.id, agent, token_hash(new_token()), None, "req")
            results = await asyncio.gather(
                a.claim_share_token(share.token_hash, f"a{i}", lambda row: None),
                b.claim_share_token(share.token_hash, f"b{i}", lambda row: None),
                return_exceptions=True,
            )
            won = [r for r in results if isinstance(r, tuple)]
            lost = [r for r in results if isinstance(r, StoreError) and r.code == "used"]
            assert len(won) == 1 and len(lost) == 1, results
            row = await b.get_share(share.id)
            assert row is not None and row.token_used
            assert row.resume_hash == won[0][0].resume_hash in (f"a{i}", f"b{i}")
    finally:
        await a.close()
        await b.close()


async def test_concurrent_key_claims_have_one_winner(db_url: str) -> None:
    a, b = await Store.open(db_url), await Store.open(db_url)
    try:
        agent = await _agent(a)
        _, conv = await a.create_phone_conversation(agent)
        share = await a.create_share(conv.id, agent, None, None, "requested")
        await a.create_share_key(share.id, "ab" * 32, T0 + 300, now=T0)
        results = await asyncio.gather(
            a.spend_share_key(share.id, now=T0 + 1), b.spend_share_key(share.id, now=T0 + 1)
        )
        assert sorted(results) == [False, True]
        key = await b.get_share_key(share.id)
        assert key is not None and key.used_at == T0 + 1

        share2 = await a.create_share(conv.id, agent, None, None, "requested")
        await a.create_share_key(share2.id, "cd" * 32, T0 + 300, now=T0)
        await a.update_share_key(share2.id, locked_at=T0 + 2)
        assert await b.spend_share_key(share2.id) is False  # a locked key is not spent
    finally:
        await a.close()
        await b.close()


async def test_concurrent_opens_make_one_conversation(db_url: str) -> None:
    """A visitor's two tabs, on two processes, say hello at the same moment."""
    a, b = await Store.open(db_url), await Store.open(db_url)
    try:
        for _ in range(3):
            visitor, _ = await a.create_visitor()
            convs = await asyncio.gather(
                a.open_conversation(visitor.id),
                b.open_conversation(visitor.id),
                a.open_conversation(visitor.id),
            )
            assert len({c.id for c in convs}) == 1
    finally:
        await a.close()
        await b.close()


async def test_concurrent_claims_across_processes_have_one_winner(db_url: str) -> None:
    a, b = await Store.open(db_url), await Store.open(db_url)
    try:
        alice = await _agent(a, "alice@example.com")
        bob = await _agent(a, "bob@example.com")
        visitor, _ = await a.create_visitor()
        conv = await a.open_conversation(visitor.id)
        results = await asyncio.gather(
            a.assign_conversation(conv.id, alice),
            b.assign_conversation(conv.id, bob),
            return_exceptions=True,
        )
        winners = [r for r in results if not isinstance(r, BaseException)]
        losers = [r for r in results if isinstance(r, StoreError)]
        assert len(winners) == 1 and len(losers) == 1 and losers[0].code == "taken"
    finally:
        await a.close()
        await b.close()


async def test_concurrent_user_creation_reports_email_taken(db_url: str) -> None:
    a, b = await Store.open(db_url), await Store.open(db_url)
    try:
        results = await asyncio.gather(
            a.create_user("same@example.com", "A", PW),
            b.create_user("SAME@example.com", "B", PW),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        assert len(errors) == 1
        assert isinstance(errors[0], StoreError) and errors[0].code == "email_taken"
        assert await a.count_users() == 1
    finally:
        await a.close()
        await b.close()


async def test_company_settings_upsert_concurrently(db_url: str) -> None:
    a, b = await Store.open(db_url), await Store.open(db_url)
    try:
        await asyncio.gather(
            a.set_company_setting("screen_sharing", "off"),
            b.set_company_setting("screen_sharing", "on"),
            a.set_company_setting("other", "x"),
        )
        got = await a.company_settings()
        assert got["other"] == "x" and got["screen_sharing"] in ("on", "off")
        await b.set_company_setting("screen_sharing", "off")
        assert (await a.company_settings())["screen_sharing"] == "off"
    finally:
        await a.close()
        await b.close()


async def test_expired_session_seen_twice_at_once(store: Store) -> None:
    uid = await _agent(store)
    token, _ = await store.create_session(uid, ttl=10, now=T0)
    results = await asyncio.gather(*(store.session_user(token, now=T0 + 11) for _ in range(3)))
    assert results == [None, None, None]
    assert await store.purge_expired_sessions(now=T0 + 11) == 0


async def test_end_reasons_sort_by_code_point_on_every_backend(store: Store) -> None:
    agent = await _agent(store)
    visitor, _ = await store.create_visitor()
    conv = await store.open_conversation(visitor.id)
    for reason in ("visitor_stopped", "a_b", "ab", "Z", "agent_stopped", "a_b"):
        share = await store.create_share(conv.id, agent, None, None, "requested")
        await store.update_share(share.id, state="ended", end_reason=reason, ended_at=T0)
    assert await store.end_reasons() == ["Z", "a_b", "ab", "agent_stopped", "visitor_stopped"]


async def test_times_keep_full_precision(store: Store) -> None:
    """Epoch seconds with microseconds survive both backends unchanged (DOUBLE)."""
    t = 1_712_345_678.123456
    visitor, _ = await store.create_visitor(now=t)
    got = await store.get_visitor(visitor.id)
    assert got is not None and got.created_at == t and isinstance(got.created_at, float)


# --- several processes on one database ----------------------------------------------------


async def test_phone_conversation_and_share_key(store: Store) -> None:
    agent = await _agent(store)
    caller, conv = await store.create_phone_conversation(agent, now=T0)
    assert (conv.channel, conv.status, conv.agent_id) == ("phone", "open", agent)
    assert conv.visitor_id == caller.id
    assert await store.visitor_by_secret("") is None  # nobody holds the caller's secret
    with pytest.raises(StoreError):
        await store.create_phone_conversation(9999)
    chat_visitor, _ = await store.create_visitor()
    assert (await store.open_conversation(chat_visitor.id)).channel == "chat"

    share = await store.create_share(conv.id, agent, None, None, "requested", now=T0)
    assert share.token_hash is None and share.token_expires_at is None
    key = await store.create_share_key(share.id, "ab" * 32, T0 + 300, now=T0)
    assert (key.wrong_attempts, key.used_at, key.locked_at) == (0, None, None)
    with pytest.raises(StoreError):
        await store.create_share_key(share.id, "cd" * 32, T0 + 300)  # one key per share
    with pytest.raises(StoreError):
        await store.create_share_key("no-such-share", "cd" * 32, T0 + 300)
    key = await store.update_share_key(share.id, wrong_attempts=2)
    key = await store.update_share_key(share.id, used_at=T0 + 10)
    assert (key.wrong_attempts, key.used_at, key.locked_at) == (2, T0 + 10, None)
    assert await store.get_share_key(share.id) == key
    with pytest.raises(StoreError):
        await store.update_share_key("no-such-share", used_at=T0)


async def test_two_stores_on_one_database_do_not_trip_over_locks(db_url: str) -> None:
    """The server and the CLI (or two servers) may write the same database at once."""
    a = await Store.open(db_url)
    b = await Store.open(db_url)
    try:
        visitor, _ = await a.create_visitor()
        conv = await a.open_conversation(visitor.id)

        async def writer(store: Store, tag: str) -> None:
            for i in range(25):
                await store.add_message(conv.id, "visitor", f"{tag}{i}", client_msg_id=f"{tag}{i}")

        await asyncio.gather(writer(a, "a"), writer(b, "b"))
        assert len(await b.messages(conv.id)) == 50
    finally:
        await a.close()
        await b.close()


# --- bootstrap ---------------------------------------------------------------------------


async def test_ensure_admin_generates_password_once(store: Store) -> None:
    password = await ensure_admin(store, None, None)
    assert password is not None and len(password) >= 16
    admin = await store.authenticate("admin@coview.local", password)
    assert admin.is_admin
    assert await ensure_admin(store, None, None) is None
    assert await store.count_users() == 1


async def test_ensure_admin_uses_given_password(store: Store) -> None:
    assert await ensure_admin(store, "Boss@Example.com", "from-the-env") is None
    admin = await store.authenticate("boss@example.com", "from-the-env")
    assert admin.role == "admin"


async def test_ensure_admin_does_nothing_when_users_exist(store: Store) -> None:
    await _agent(store)
    assert await ensure_admin(store, None, None) is None
    assert await store.get_user_by_email("admin@coview.local") is None
