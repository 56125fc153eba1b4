"""Persistence for Coview: the only module that talks SQL.

Everything goes through SQLAlchemy Core/ORM constructs (no dialect-specific SQL),
so the same code runs on ``sqlite+aiosqlite`` (the default, zero-setup install) and
``postgresql+asyncpg`` (larger deployments). Methods return frozen ``*Row``
dataclasses from :mod:`coview_server.models`; no ORM object escapes a transaction.

Each public method is one short transaction. Slow work (password hashing) happens
outside transactions and off the event loop, so a login never blocks chat.

SQLite specifics, all set up in :meth:`Store.open`:

* WAL journal (readers never block the writer) and enforced foreign keys.
* SQLAlchemy emits ``BEGIN IMMEDIATE`` itself instead of relying on the sqlite3
  module's implicit transactions. This takes the write lock up front, so a
  read-then-write transaction can never fail half-way with "database is locked"
  when another process (e.g. the ``coview`` CLI) writes concurrently; it simply
  waits for the busy timeout instead. It also makes migrations transactional.
* Work from one process is serialised with an ``asyncio.Lock``: SQLite allows
  one writer anyway, and queueing in-process is cheaper and more predictable
  than contending for the file lock.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

from sqlalchemy import CursorResult, and_, delete, event, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Connection, Result, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import aliased

from .migrations import upgrade_connection
from .models import (
    MAX_BROWSER,
    MAX_CLIENT_MSG_ID,
    MAX_DISPLAY_NAME,
    MAX_EMAIL,
    MAX_END_REASON,
    MAX_ENDED_BY,
    MAX_MESSAGE_CHARS,
    MAX_OS,
    MAX_PAGE,
    MAX_PATH,
    MAX_SHARE_REASON,
    MAX_SHARE_STATE,
    MAX_SURFACE,
    MAX_USER_AGENT,
    MESSAGE_SENDERS,
    ROLES,
    AuditRow,
    AuthSession,
    CompanySetting,
    Conversation,
    ConversationRow,
    Message,
    MessageRow,
    Share,
    ShareKey,
    ShareKeyRow,
    ShareRow,
    User,
    UserRow,
    Visitor,
    VisitorRow,
)
from .passwords import hash_password, needs_rehash, verify_password
from .tokens import new_token, token_hash

__all__ = [
    "AuditRow",
    "AuthError",
    "ConversationRow",
    "MessageRow",
    "ShareKeyRow",
    "ShareRow",
    "Store",
    "StoreError",
    "UserRow",
    "VisitorRow",
    "migrate",
    "normalize_email",
]

# Lockout policy: every LOCK_AFTER consecutive failures lock the account, for
# LOCK_SECONDS the first time and twice as long on each further lockout (capped),
# so online guessing stays slow without letting a few typos lock someone out for long.
LOCK_AFTER = 5
LOCK_SECONDS = 300.0
MAX_LOCK_DOUBLINGS = 6
# Writing last_seen on every authenticated request would turn every page view into
# a write; a minute of resolution is plenty for "active sessions" views.
LAST_SEEN_RESOLUTION = 60.0
SQLITE_BUSY_TIMEOUT = 15.0

_SHARE_MUTABLE = frozenset(
    {
        "state",
        "token_hash",
        "token_expires_at",
        "token_used",
        "accepted_at",
        "started_at",
        "ended_at",
        "end_reason",
        "ended_by",
        "surface",
        "path",
        "resume_hash",
        "links",
    }
)
_SHARE_TRUNCATE = {
    "end_reason": MAX_END_REASON,
    "ended_by": MAX_ENDED_BY,
    "surface": MAX_SURFACE,
    "path": MAX_PATH,
}


class StoreError(Exception):
    """A refusal callers are expected to handle; ``code`` is stable and safe to show."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(message or code)
        self.code = code


class AuthError(StoreError):
    """Login refused: ``bad_credentials``, ``locked`` or ``disabled``."""


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _clip(value: str | None, limit: int) -> str | None:
    return None if value is None else value[:limit]


def normalize_email(email: str) -> str:
    """Emails are matched case-insensitively by storing them lowercased."""
    e = email.strip().lower()
    local, at, domain = e.partition("@")
    if not at or not local or not domain or len(e) > MAX_EMAIL or any(c.isspace() for c in e):
        raise ValueError("invalid_email")
    return e


def _rowcount(result: Result[Any]) -> int:
    return cast(CursorResult[Any], result).rowcount


_dummy_hash: str | None = None


async def _equalising_hash() -> str:
    """A real hash to verify against for unknown emails, so they cost the same time."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = await asyncio.to_thread(hash_password, new_token())
    return _dummy_hash


# --- engine setup ------------------------------------------------------------


def _is_memory_sqlite(database: str | None) -> bool:
    return not database or database == ":memory:" or "mode=memory" in database


#: Drivers for URLs that name only the database (``postgresql://…``, as hosting
#: providers hand them out): the asyncio driver the project depends on.
_ASYNC_DRIVERS = {"postgresql": "asyncpg", "postgres": "asyncpg", "sqlite": "aiosqlite"}
#: Key of the PostgreSQL advisory lock that serialises migrations of several processes
#: starting at once (any constant unique to Coview; "coview" in ASCII).
PG_MIGRATION_LOCK = 0x636F76696577


def database_url(url: str) -> URL:
    """``url`` with its asyncio driver: ``postgresql://`` and ``postgres://`` mean
    ``postgresql+asyncpg://``, ``sqlite://`` means ``sqlite+aiosqlite://``."""
    u = make_url(url)
    if u.drivername in _ASYNC_DRIVERS:
        backend = "postgresql" if u.drivername == "postgres" else u.drivername
        u = u.set(drivername=f"{backend}+{_ASYNC_DRIVERS[u.drivername]}")
    return u


def _create_engine(url: str) -> AsyncEngine:
    u = database_url(url)
    if u.get_backend_name() != "sqlite":
        # READ COMMITTED (PostgreSQL's default) is what the Store is written for: every
        # check-then-write it relies on is a conditional UPDATE, a row lock or a unique
        # constraint, never a read in an earlier statement (see the concurrency tests).
        return create_async_engine(u, pool_pre_ping=True, isolation_level="READ COMMITTED")
    db = u.database
    if not _is_memory_sqlite(db) and db is not None and not db.startswith("file:"):
        # First start with ``--db data/coview.db`` should just work.
        Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(u, connect_args={"timeout": SQLITE_BUSY_TIMEOUT})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (see module docstring).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _raw_sqlite(conn: Connection, sql: str) -> list[Any]:
    """Run a statement outside SQLAlchemy's transaction tracking (PRAGMAs that
    are ignored inside a transaction)."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _migrate_sync(conn: Connection) -> None:
    if conn.dialect.name != "sqlite":
        with conn.begin():
            if conn.dialect.name == "postgresql":
                # Several processes of one deployment start at once: the first migrates,
                # the others wait here and then find the schema at head (DDL is
                # transactional on PostgreSQL; the lock ends with the transaction).
                conn.execute(select(func.pg_advisory_xact_lock(PG_MIGRATION_LOCK)))
            upgrade_connection(conn)
        return
    # Batch migrations on SQLite rebuild tables (create copy, drop original). With
    # foreign keys enforced, dropping a parent table would cascade-delete child
    # rows, so enforcement is suspended and the result checked before commit.
    _raw_sqlite(conn, "PRAGMA foreign_keys=OFF")
    try:
        with conn.begin():
            upgrade_connection(conn)
            problems = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if problems:
                raise RuntimeError(f"migration left {len(problems)} foreign key violations")
    finally:
        _raw_sqlite(conn, "PRAGMA foreign_keys=ON")


def _sqlite_file(engine: AsyncEngine) -> str | None:
    """The path of the engine's SQLite file; None for PostgreSQL and in-memory databases."""
    db = engine.url.database
    if engine.dialect.name != "sqlite" or not db or _is_memory_sqlite(db) or db.startswith("file:"):
        return None
    return os.path.expanduser(db)


@asynccontextmanager
async def _first_start_lock(db: str | None) -> AsyncIterator[None]:
    """Processes opening one SQLite file take turns to switch it to WAL and migrate it.

    When several open a new file together, SQLite can answer ``database is locked`` at
    once, without waiting its busy timeout: each holds a lock the others need, so it
    counts waiting as a deadlock (1 in 10 first starts of three processes failed so). A
    ``flock`` on ``<file>.lock`` beside it orders them; SQLite's own locks on the file
    itself are POSIX locks, which an extra descriptor of that file would release.
    """
    if db is None:
        yield
        return
    fd = os.open(db + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:  # not a blocking flock in a thread: a cancelled start must not hang
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.02)
        yield
    finally:
        os.close(fd)  # releases the lock


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision; a no-op when it already is."""
    async with engine.connect() as conn:
        await conn.run_sync(_migrate_sync)


# --- the store -----------------------------------------------------------------


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        """Use :meth:`open`; this does not migrate."""
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
        self._lock: asyncio.Lock | None = (
            asyncio.Lock() if engine.dialect.name == "sqlite" else None
        )

    @classmethod
    async def open(cls, url: str) -> Store:
        engine = _create_engine(url)
        try:
            async with _first_start_lock(_sqlite_file(engine)):
                await migrate(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine)

    async def close(self) -> None:
        await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncSession]:
        """One transaction: committed on normal exit, rolled back on exception."""
        if self._lock is None:
            async with self._sessions.begin() as session:
                yield session
        else:
            async with self._lock, self._sessions.begin() as session:
                yield session

    # --- users and auth ----------------------------------------------------------

    async def count_users(self) -> int:
        async with self._tx() as s:
            return (await s.scalar(select(func.count()).select_from(User))) or 0

    async def create_user(
        self, email: str, display_name: str, password: str, role: str = "agent"
    ) -> UserRow:
        """Raises ``StoreError("email_taken")``; ``ValueError`` for malformed input."""
        address = normalize_email(email)
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        name = display_name.strip()[:MAX_DISPLAY_NAME] or address.partition("@")[0]
        pw_hash = await asyncio.to_thread(hash_password, password)
        try:
            async with self._tx() as s:
                if await s.scalar(select(User.id).where(User.email == address)) is not None:
                    raise StoreError("email_taken")
                user = User(
                    email=address,
                    display_name=name,
                    password_hash=pw_hash,
                    role=role,
                    disabled=False,
                    failed_logins=0,
                    locked_until=None,
                    created_at=time.time(),
                )
                s.add(user)
                await s.flush()
                return UserRow.of(user)
        except IntegrityError:
            # Lost a race with a concurrent insert of the same email (PostgreSQL).
            raise StoreError("email_taken") from None

    async def get_user(self, user_id: int) -> UserRow | None:
        async with self._tx() as s:
            user = await s.get(User, user_id)
            return None if user is None else UserRow.of(user)

    async def get_user_by_email(self, email: str) -> UserRow | None:
        try:
            address = normalize_email(email)
        except ValueError:
            return None
        async with self._tx() as s:
            user = await s.scalar(select(User).where(User.email == address))
            return None if user is None else UserRow.of(user)

    async def list_users(self) -> list[UserRow]:
        async with self._tx() as s:
            users = await s.scalars(select(User).order_by(User.id))
            return [UserRow.of(u) for u in users]

    async def authenticate(self, email: str, password: str, now: float | None = None) -> UserRow:
        """Check a login. Unknown email, wrong password and a wrong password for a
        disabled account all give ``bad_credentials`` after the same amount of
        hashing work, so responses do not reveal which accounts exist. ``disabled``
        is only reported once the password is proven correct."""
        t = _now(now)
        try:
            address: str | None = normalize_email(email)
        except ValueError:
            address = None
        snapshot: tuple[int, str, bool, float | None] | None = None
        if address is not None:
            async with self._tx() as s:
                user = await s.scalar(select(User).where(User.email == address))
                if user is not None:
                    snapshot = (user.id, user.password_hash, user.disabled, user.locked_until)
        if snapshot is None:
            await asyncio.to_thread(verify_password, password, await _equalising_hash())
            raise AuthError("bad_credentials")

        user_id, pw_hash, disabled, locked_until = snapshot
        ok = await asyncio.to_thread(verify_password, password, pw_hash)
        if locked_until is not None and locked_until > t:
            # Checked after hashing so a locked account answers no faster.
            raise AuthError("locked")
        if not ok:
            await self._record_failure(user_id, t)
            raise AuthError("bad_credentials")
        if disabled:
            raise AuthError("disabled")

        new_hash = (
            await asyncio.to_thread(hash_password, password) if needs_rehash(pw_hash) else None
        )
        async with self._tx() as s:
            user = await s.get(User, user_id)
            if user is None:  # deleted between the two transactions
                raise AuthError("bad_credentials")
            user.failed_logins = 0
            user.locked_until = None
            if new_hash is not None:
                user.password_hash = new_hash
            await s.flush()
            return UserRow.of(user)

    async def _record_failure(self, user_id: int, t: float) -> None:
        async with self._tx() as s:
            # Increment in SQL so concurrent failures are all counted.
            await s.execute(
                update(User)
                .where(User.id == user_id)
                .values(failed_logins=User.failed_logins + 1)
                .execution_options(synchronize_session=False)
            )
            failures = await s.scalar(select(User.failed_logins).where(User.id == user_id))
            if failures and failures % LOCK_AFTER == 0:
                doublings = min(failures // LOCK_AFTER - 1, MAX_LOCK_DOUBLINGS)
                await s.execute(
                    update(User)
                    .where(User.id == user_id)
                    .values(locked_until=t + LOCK_SECONDS * 2**doublings)
                    .execution_options(synchronize_session=False)
                )

    async def set_password(self, user_id: int, password: str) -> None:
        """Also signs the user out everywhere and lifts any lockout: a password
        reset is the administrator's remedy for both a leak and a locked account."""
        pw_hash = await asyncio.to_thread(hash_password, password)
        async with self._tx() as s:
            result = await s.execute(
                update(User)
                .where(User.id == user_id)
                .values(password_hash=pw_hash, failed_logins=0, locked_until=None)
                .execution_options(synchronize_session=False)
            )
            if _rowcount(result) == 0:
                raise StoreError("not_found")
            await s.execute(delete(AuthSession).where(AuthSession.user_id == user_id))

    async def set_user_disabled(self, user_id: int, disabled: bool) -> UserRow:
        """Disabling also ends the user's sessions, so it takes effect immediately."""
        async with self._tx() as s:
            user = await s.get(User, user_id)
            if user is None:
                raise StoreError("not_found")
            user.disabled = disabled
            if disabled:
                await s.execute(delete(AuthSession).where(AuthSession.user_id == user_id))
            await s.flush()
            return UserRow.of(user)

    async def set_user_permissions(self, user_id: int, *, can_screen_share: bool) -> UserRow:
        """Change what an agent may do; read again by the hub on every action it guards."""
        async with self._tx() as s:
            user = await s.get(User, user_id)
            if user is None:
                raise StoreError("not_found")
            user.can_screen_share = can_screen_share
            await s.flush()
            return UserRow.of(user)

    async def count_active_admins(self) -> int:
        """Admins who can still log in: the last one may not be disabled or demoted."""
        async with self._tx() as s:
            n = await s.scalar(
                select(func.count())
                .select_from(User)
                .where(User.role == "admin", User.disabled.is_(False))
            )
            return n or 0

    # --- company settings ----------------------------------------------------------

    async def company_settings(self) -> dict[str, str]:
        """Stored company-wide settings by name; absent names mean their default."""
        async with self._tx() as s:
            rows = await s.scalars(select(CompanySetting))
            return {r.name: r.value for r in rows}

    async def set_company_setting(self, name: str, value: str) -> None:
        if not name or len(name) > 64 or len(value) > 256:
            raise ValueError("setting name or value too long")
        async with self._tx() as s:
            # One statement, so two admins saving at once cannot both insert (PostgreSQL
            # runs them concurrently; SQLite serialises them anyway). Both dialects
            # spell the upsert the same way.
            insert = sqlite_insert if s.bind.dialect.name == "sqlite" else pg_insert
            stmt = insert(CompanySetting).values(name=name, value=value)
            await s.execute(
                stmt.on_conflict_do_update(
                    index_elements=[CompanySetting.name], set_={"value": stmt.excluded.value}
                )
            )

    # --- sessions --------------------------------------------------------------------

    async def create_session(
        self, user_id: int, ttl: float = 12 * 3600, now: float | None = None
    ) -> tuple[str, str]:
        """Returns ``(token, csrf_token)``; only the token's hash is stored."""
        t = _now(now)
        token, csrf = new_token(), new_token()
        async with self._tx() as s:
            user = await s.get(User, user_id)
            if user is None:
                raise StoreError("not_found")
            if user.disabled:
                raise AuthError("disabled")
            s.add(
                AuthSession(
                    token_hash=token_hash(token),
                    user_id=user_id,
                    csrf_token=csrf,
                    created_at=t,
                    expires_at=t + ttl,
                    last_seen=t,
                )
            )
        return token, csrf

    async def session_user(
        self, token: str, now: float | None = None
    ) -> tuple[UserRow, str] | None:
        """The signed-in user and the session's CSRF token, or None when the token
        is unknown, expired, or belongs to a disabled user."""
        if not token:
            return None
        t = _now(now)
        async with self._tx() as s:
            found = (
                await s.execute(
                    select(AuthSession, User)
                    .join(User, AuthSession.user_id == User.id)
                    .where(AuthSession.token_hash == token_hash(token))
                )
            ).first()
            if found is None:
                return None
            session, user = found._tuple()
            if session.expires_at <= t:
                # A statement, not ORM delete: two requests may expire it at once.
                await s.execute(delete(AuthSession).where(AuthSession.id == session.id))
                return None
            if user.disabled:
                return None
            if t - session.last_seen >= LAST_SEEN_RESOLUTION:
                session.last_seen = t
            return UserRow.of(user), session.csrf_token

    async def delete_session(self, token: str) -> None:
        async with self._tx() as s:
            await s.execute(delete(AuthSession).where(AuthSession.token_hash == token_hash(token)))

    async def purge_expired_sessions(self, now: float | None = None) -> int:
        t = _now(now)
        async with self._tx() as s:
            result = await s.execute(delete(AuthSession).where(AuthSession.expires_at <= t))
            return _rowcount(result)

    # --- visitors ------------------------------------------------------------------

    async def create_visitor(self, now: float | None = None) -> tuple[VisitorRow, str]:
        """Returns ``(row, secret)``. The secret is the visitor's bearer credential
        and is not retrievable later; only its hash is stored."""
        t = _now(now)
        secret = new_token()
        visitor = Visitor(
            id=secrets.token_urlsafe(12),
            secret_hash=token_hash(secret),
            created_at=t,
            last_seen=t,
            user_agent="",
            browser="",
            os="",
            can_share=False,
            share_reason=None,
            current_page=None,
        )
        async with self._tx() as s:
            s.add(visitor)
            await s.flush()
            return VisitorRow.of(visitor), secret

    async def visitor_by_secret(self, secret: str) -> VisitorRow | None:
        if not secret:
            return None
        async with self._tx() as s:
            visitor = await s.scalar(
                select(Visitor).where(Visitor.secret_hash == token_hash(secret))
            )
            return None if visitor is None else VisitorRow.of(visitor)

    async def get_visitor(self, visitor_id: str) -> VisitorRow | None:
        async with self._tx() as s:
            visitor = await s.get(Visitor, visitor_id)
            return None if visitor is None else VisitorRow.of(visitor)

    async def update_visitor(
        self,
        visitor_id: str,
        *,
        user_agent: str,
        browser: str,
        os: str,
        can_share: bool,
        share_reason: str | None,
        current_page: str | None,
        now: float | None = None,
    ) -> VisitorRow:
        """Over-long values are truncated, not rejected: they come from browsers we
        do not control and losing the tail of a URL is harmless."""
        t = _now(now)
        async with self._tx() as s:
            visitor = await s.get(Visitor, visitor_id)
            if visitor is None:
                raise StoreError("not_found")
            visitor.user_agent = user_agent[:MAX_USER_AGENT]
            visitor.browser = browser[:MAX_BROWSER]
            visitor.os = os[:MAX_OS]
            visitor.can_share = can_share
            visitor.share_reason = _clip(share_reason, MAX_SHARE_REASON)
            visitor.current_page = _clip(current_page, MAX_PAGE)
            visitor.last_seen = t
            await s.flush()
            return VisitorRow.of(visitor)

    # --- conversations and messages -----------------------------------------------

    @staticmethod
    async def _current(s: AsyncSession, visitor_id: str) -> Conversation | None:
        conv: Conversation | None = await s.scalar(
            select(Conversation)
            .where(Conversation.visitor_id == visitor_id, Conversation.status != "closed")
            .order_by(Conversation.created_at.desc(), Conversation.id.desc())
            .limit(1)
        )
        return conv

    async def current_conversation(self, visitor_id: str) -> ConversationRow | None:
        async with self._tx() as s:
            conv = await self._current(s, visitor_id)
            return None if conv is None else ConversationRow.of(conv)

    async def open_conversation(self, visitor_id: str, now: float | None = None) -> ConversationRow:
        t = _now(now)
        async with self._tx() as s:
            # Lock the visitor first: two sockets of one visitor opening at once on
            # PostgreSQL would otherwise both find no conversation and both create one
            # (FOR UPDATE is a no-op on SQLite, whose write lock is already held).
            if await s.get(Visitor, visitor_id, with_for_update=True) is None:
                raise StoreError("not_found")
            conv = await self._current(s, visitor_id)
            if conv is None:
                conv = Conversation(
                    visitor_id=visitor_id,
                    status="waiting",
                    agent_id=None,
                    created_at=t,
                    updated_at=t,
                )
                s.add(conv)
                await s.flush()
            return ConversationRow.of(conv)

    async def create_phone_conversation(
        self, agent_id: int, now: float | None = None
    ) -> tuple[VisitorRow, ConversationRow]:
        """A caller on the phone: a visitor and a conversation already held by the agent."""
        return await self._held_conversation(agent_id, "phone", None, now)

    async def create_internal_conversation(
        self, agent_id: int, colleague_id: int, now: float | None = None
    ) -> ConversationRow:
        """An agent asks a colleague to share their screen: a conversation held by the agent."""
        _, conv = await self._held_conversation(agent_id, "internal", colleague_id, now)
        return conv

    async def _held_conversation(
        self, agent_id: int, channel: str, colleague_id: int | None, now: float | None
    ) -> tuple[VisitorRow, ConversationRow]:
        """A conversation whose other side never runs the widget (a caller, a colleague).

        The visitor row is required by the schema; its secret is drawn and thrown away, so
        nobody can connect as this visitor.
        """
        t = _now(now)
        visitor = Visitor(
            id=secrets.token_urlsafe(12),
            secret_hash=token_hash(new_token()),
            created_at=t,
            last_seen=t,
            user_agent="",
            browser="",
            os="",
            can_share=False,
            share_reason=None,
            current_page=None,
        )
        try:
            async with self._tx() as s:
                s.add(visitor)
                await s.flush()
                conv = Conversation(
                    visitor_id=visitor.id,
                    status="open",
                    agent_id=agent_id,
                    created_at=t,
                    updated_at=t,
                    channel=channel,
                    colleague_id=colleague_id,
                )
                s.add(conv)
                await s.flush()
                return VisitorRow.of(visitor), ConversationRow.of(conv)
        except IntegrityError:
            raise StoreError("not_found", "unknown agent") from None

    async def get_conversation(self, conversation_id: int) -> ConversationRow | None:
        async with self._tx() as s:
            conv = await s.get(Conversation, conversation_id)
            return None if conv is None else ConversationRow.of(conv)

    async def list_conversations(self, agent_id: int, is_admin: bool) -> list[ConversationRow]:
        """What an agent's inbox shows: the queue plus their own open chats
        (admins see every open chat), most recently active first."""
        not_closed = Conversation.status != "closed"
        mine_or_queue = or_(
            Conversation.status == "waiting",
            and_(Conversation.status == "open", Conversation.agent_id == agent_id),
        )
        async with self._tx() as s:
            convs = await s.scalars(
                select(Conversation)
                .where(not_closed if is_admin else mine_or_queue)
                .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
            )
            return [ConversationRow.of(c) for c in convs]

    async def assign_conversation(
        self, conversation_id: int, agent_id: int, now: float | None = None
    ) -> ConversationRow:
        """Claim a waiting conversation. A single conditional UPDATE makes the claim
        atomic on every backend, so two agents clicking at once cannot both win.
        Raises ``taken`` (another agent has it), ``closed`` or ``not_found``."""
        t = _now(now)
        try:
            async with self._tx() as s:
                await s.execute(
                    update(Conversation)
                    .where(
                        Conversation.id == conversation_id,
                        or_(
                            Conversation.status == "waiting",
                            # Orphaned by a deleted agent: up for grabs again.
                            and_(Conversation.status == "open", Conversation.agent_id.is_(None)),
                        ),
                    )
                    .values(status="open", agent_id=agent_id, updated_at=t)
                    .execution_options(synchronize_session=False)
                )
                conv = await s.get(Conversation, conversation_id, populate_existing=True)
                if conv is None:
                    raise StoreError("not_found")
                if conv.status == "closed":
                    raise StoreError("closed")
                if conv.agent_id != agent_id:
                    raise StoreError("taken")
                return ConversationRow.of(conv)
        except IntegrityError:
            raise StoreError("not_found", "unknown agent") from None

    async def transfer_conversation(
        self, conversation_id: int, from_agent: int, to_agent: int, now: float | None = None
    ) -> ConversationRow:
        """Hand an open conversation from ``from_agent`` to ``to_agent``, atomically: a
        conversation that changed hands meanwhile is not moved (``taken``)."""
        t = _now(now)
        try:
            async with self._tx() as s:
                await s.execute(
                    update(Conversation)
                    .where(
                        Conversation.id == conversation_id,
                        Conversation.status == "open",
                        Conversation.agent_id == from_agent,
                    )
                    .values(agent_id=to_agent, updated_at=t)
                    .execution_options(synchronize_session=False)
                )
                conv = await s.get(Conversation, conversation_id, populate_existing=True)
                if conv is None:
                    raise StoreError("not_found")
                if conv.status == "closed":
                    raise StoreError("closed")
                if conv.agent_id != to_agent:
                    raise StoreError("taken")
                return ConversationRow.of(conv)
        except IntegrityError:
            raise StoreError("not_found", "unknown agent") from None

    async def close_conversation(
        self, conversation_id: int, now: float | None = None
    ) -> ConversationRow:
        """Idempotent: closing a closed conversation returns it unchanged."""
        t = _now(now)
        async with self._tx() as s:
            conv = await s.get(Conversation, conversation_id)
            if conv is None:
                raise StoreError("not_found")
            if conv.status != "closed":
                conv.status = "closed"
                conv.updated_at = t
                await s.flush()
            return ConversationRow.of(conv)

    @staticmethod
    async def _by_client_id(
        s: AsyncSession, conversation_id: int, client_msg_id: str
    ) -> Message | None:
        msg: Message | None = await s.scalar(
            select(Message).where(
                Message.conversation_id == conversation_id,
                Message.client_msg_id == client_msg_id,
            )
        )
        return msg

    async def add_message(
        self,
        conversation_id: int,
        sender: str,
        text: str,
        *,
        agent_id: int | None = None,
        client_msg_id: str | None = None,
        now: float | None = None,
    ) -> tuple[MessageRow, bool]:
        """Returns ``(row, created)``. A resend with the same ``client_msg_id``
        (client retry after a dropped connection) returns the stored message with
        ``created=False`` instead of duplicating it. Also bumps the conversation's
        ``updated_at`` so inboxes sort by latest activity."""
        if sender not in MESSAGE_SENDERS:
            raise ValueError(f"sender must be one of {MESSAGE_SENDERS}")
        if len(text) > MAX_MESSAGE_CHARS:
            raise ValueError(f"message longer than {MAX_MESSAGE_CHARS} characters")
        if client_msg_id == "":
            client_msg_id = None
        if client_msg_id is not None and len(client_msg_id) > MAX_CLIENT_MSG_ID:
            raise ValueError(f"client_msg_id longer than {MAX_CLIENT_MSG_ID} characters")
        t = _now(now)
        try:
            async with self._tx() as s:
                if client_msg_id is not None:
                    existing = await self._by_client_id(s, conversation_id, client_msg_id)
                    if existing is not None:
                        return MessageRow.of(existing), False
                conv = await s.get(Conversation, conversation_id)
                if conv is None:
                    raise StoreError("not_found")
                msg = Message(
                    conversation_id=conversation_id,
                    sender=sender,
                    agent_id=agent_id,
                    text=text,
                    client_msg_id=client_msg_id,
                    created_at=t,
                )
                s.add(msg)
                conv.updated_at = max(conv.updated_at, t)
                await s.flush()
                return MessageRow.of(msg), True
        except IntegrityError:
            # A concurrent identical resend won the unique constraint (PostgreSQL).
            if client_msg_id is None:
                raise
            async with self._tx() as s:
                existing = await self._by_client_id(s, conversation_id, client_msg_id)
            if existing is None:
                raise
            return MessageRow.of(existing), False

    async def messages(self, conversation_id: int, limit: int = 500) -> list[MessageRow]:
        """The latest ``limit`` messages, oldest first (ready to render as a transcript)."""
        async with self._tx() as s:
            rows = await s.scalars(
                select(Message)
                .where(Message.conversation_id == conversation_id)
                .order_by(Message.id.desc())
                .limit(limit)
            )
            return [MessageRow.of(m) for m in reversed(rows.all())]

    # --- shares ----------------------------------------------------------------------

    async def create_share(
        self,
        conversation_id: int,
        requested_by: int,
        token_hash: str | None,
        token_expires_at: float | None,
        state: str,
        now: float | None = None,
    ) -> ShareRow:
        if len(state) > MAX_SHARE_STATE:
            raise ValueError("state too long")
        t = _now(now)
        share = Share(
            id=secrets.token_urlsafe(12),
            conversation_id=conversation_id,
            requested_by=requested_by,
            state=state,
            token_hash=token_hash,
            token_expires_at=token_expires_at,
            token_used=False,
            created_at=t,
        )
        try:
            async with self._tx() as s:
                if await s.get(Conversation, conversation_id) is None:
                    raise StoreError("not_found")
                s.add(share)
                await s.flush()
                return ShareRow.of(share)
        except IntegrityError:
            raise StoreError("conflict", "unknown user or duplicate token") from None

    async def get_share(self, share_id: str) -> ShareRow | None:
        async with self._tx() as s:
            share = await s.get(Share, share_id)
            return None if share is None else ShareRow.of(share)

    async def share_by_token_hash(self, token_hash: str) -> ShareRow | None:
        async with self._tx() as s:
            share = await s.scalar(select(Share).where(Share.token_hash == token_hash))
            return None if share is None else ShareRow.of(share)

    async def swap_resume_hash(self, old_hash: str, new_hash: str) -> ShareRow | None:
        """Spend a share window's resume credential for a new one (a compare-and-set):
        of two sockets presenting the same credential, exactly one gets the share."""
        async with self._tx() as s:
            share = await s.scalar(select(Share).where(Share.resume_hash == old_hash))
            if share is None:
                return None
            result = await s.execute(
                update(Share)
                .where(Share.id == share.id, Share.resume_hash == old_hash)
                .values(resume_hash=new_hash)
                .execution_options(synchronize_session=False)
            )
            if _rowcount(result) != 1:
                return None
            await s.refresh(share)
            return ShareRow.of(share)

    async def update_share(self, share_id: str, **fields: Any) -> ShareRow:
        """Set any of the share's mutable columns. Identity columns (id,
        conversation, requester, creation time) and unknown names raise
        ``ValueError``, so a typo cannot silently drop an update."""
        unknown = sorted(set(fields) - _SHARE_MUTABLE)
        if unknown:
            raise ValueError(f"cannot update share fields: {', '.join(unknown)}")
        if "state" in fields and len(fields["state"]) > MAX_SHARE_STATE:
            raise ValueError("state too long")
        for name, limit in _SHARE_TRUNCATE.items():
            if isinstance(fields.get(name), str):
                fields[name] = fields[name][:limit]
        try:
            async with self._tx() as s:
                share = await s.get(Share, share_id)
                if share is None:
                    raise StoreError("not_found")
                for name, value in fields.items():
                    setattr(share, name, value)
                await s.flush()
                return ShareRow.of(share)
        except IntegrityError:
            raise StoreError("conflict", "duplicate token") from None

    async def claim_share_token(
        self, popup_hash: str, resume_hash: str, admit: Callable[[ShareRow], None]
    ) -> tuple[ShareRow, str | None] | None:
        """A share window's handshake in one transaction (it made four round trips to the
        database, ~20 ms of every popup's start): find the share by its popup token, let
        ``admit`` refuse it (by raising; nothing is written then), spend the token with a
        compare-and-set in one UPDATE and store the window's first resume credential.

        Returns the share and its requester's display name; ``None`` if no share has this
        token. Raises ``StoreError("used")`` when a concurrent claim spent it first.
        """
        async with self._tx() as s:
            share = await s.scalar(select(Share).where(Share.token_hash == popup_hash))
            if share is None:
                return None
            admit(ShareRow.of(share))
            result = await s.execute(
                update(Share)
                .where(Share.id == share.id, Share.token_used.is_(False))
                .values(token_used=True, resume_hash=resume_hash)
                .execution_options(synchronize_session=False)
            )
            if _rowcount(result) != 1:
                raise StoreError("used", "the token was spent by another claim")
            await s.refresh(share)
            asker = await s.get(User, share.requested_by)
            return ShareRow.of(share), None if asker is None else asker.display_name

    async def open_shares(self) -> list[ShareRow]:
        """Shares not yet ended; the server uses this at startup to clean up
        sessions that a crash or restart left dangling."""
        async with self._tx() as s:
            shares = await s.scalars(
                select(Share).where(Share.ended_at.is_(None)).order_by(Share.created_at)
            )
            return [ShareRow.of(x) for x in shares]

    # --- phone share keys -------------------------------------------------------------

    async def create_share_key(
        self, share_id: str, key_hash: str, expires_at: float, now: float | None = None
    ) -> ShareKeyRow:
        """Record a phone share's key by its HMAC (``coview_server.keys``), never the key."""
        t = _now(now)
        key = ShareKey(
            share_id=share_id,
            key_hash=key_hash,
            created_at=t,
            expires_at=expires_at,
            wrong_attempts=0,
            used_at=None,
            locked_at=None,
        )
        try:
            async with self._tx() as s:
                s.add(key)
                await s.flush()
                return ShareKeyRow.of(key)
        except IntegrityError:
            raise StoreError("conflict", "unknown share, or it has a key already") from None

    async def spend_share_key(self, share_id: str, now: float | None = None) -> bool:
        """Record the phone key as used unless it was used or locked already; True for
        exactly one caller, whatever process they reached (a compare-and-set)."""
        t = _now(now)
        async with self._tx() as s:
            result = await s.execute(
                update(ShareKey)
                .where(
                    ShareKey.share_id == share_id,
                    ShareKey.used_at.is_(None),
                    ShareKey.locked_at.is_(None),
                )
                .values(used_at=t)
                .execution_options(synchronize_session=False)
            )
            return _rowcount(result) == 1

    async def get_share_key(self, share_id: str) -> ShareKeyRow | None:
        async with self._tx() as s:
            key = await s.get(ShareKey, share_id)
            return None if key is None else ShareKeyRow.of(key)

    async def update_share_key(
        self,
        share_id: str,
        *,
        wrong_attempts: int | None = None,
        used_at: float | None = None,
        locked_at: float | None = None,
    ) -> ShareKeyRow:
        """Record what happened to a key; fields left as None keep their value."""
        async with self._tx() as s:
            key = await s.get(ShareKey, share_id)
            if key is None:
                raise StoreError("not_found")
            if wrong_attempts is not None:
                key.wrong_attempts = wrong_attempts
            if used_at is not None:
                key.used_at = used_at
            if locked_at is not None:
                key.locked_at = locked_at
            await s.flush()
            return ShareKeyRow.of(key)

    # --- audit trail --------------------------------------------------------------------

    async def audit_shares(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        agent_id: int | None = None,
        end_reason: str | None = None,
        limit: int | None = 1000,
    ) -> list[AuditRow]:
        """Shares, newest first, with the requesting agent and the visitor or caller.

        ``since``/``until`` bound the time the share was asked for (``until`` excluded);
        ``end_reason`` matches exactly. The console's table and the CSV export both come
        from here, so they always agree.
        """
        colleague = aliased(User)
        query = (
            select(Share, Conversation, User, colleague.display_name)
            .join(Conversation, Share.conversation_id == Conversation.id)
            .join(User, Share.requested_by == User.id)
            .outerjoin(colleague, Conversation.colleague_id == colleague.id)
            .order_by(Share.created_at.desc(), Share.id)
        )
        if since is not None:
            query = query.where(Share.created_at >= since)
        if until is not None:
            query = query.where(Share.created_at < until)
        if agent_id is not None:
            query = query.where(Share.requested_by == agent_id)
        if end_reason is not None:
            query = query.where(Share.end_reason == end_reason)
        if limit is not None:
            query = query.limit(limit)
        async with self._tx() as s:
            rows = (await s.execute(query)).all()
            return [
                AuditRow(
                    share_id=share.id,
                    conversation_id=conv.id,
                    visitor_id=conv.visitor_id,
                    channel=conv.channel,
                    requested_by=user.id,
                    agent_name=user.display_name,
                    agent_email=user.email,
                    state=share.state,
                    created_at=share.created_at,
                    started_at=share.started_at,
                    ended_at=share.ended_at,
                    end_reason=share.end_reason,
                    ended_by=share.ended_by,
                    surface=share.surface,
                    path=share.path,
                    colleague_name=colleague_name,
                )
                for share, conv, user, colleague_name in (r._tuple() for r in rows)
            ]

    async def end_reasons(self) -> list[str]:
        """Every end reason recorded so far, for the audit filter's choices."""
        async with self._tx() as s:
            rows = await s.scalars(
                select(Share.end_reason).where(Share.end_reason.is_not(None)).distinct()
            )
            # Sorted here, by code point: PostgreSQL's ORDER BY follows the database's
            # collation (en_US ignores the underscores these names are full of).
            return sorted(r for r in rows if r)
