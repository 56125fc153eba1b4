"""Database schema (SQLAlchemy 2 declarative) and the plain rows the Store hands out.

Callers never see ORM instances: the Store converts them to the frozen ``*Row``
dataclasses below before its session closes, so no code outside ``store.py`` can
trigger a lazy load, hold a session open, or mutate persistent state by accident.

Times are epoch seconds as floats everywhere (``Double``: REAL on SQLite, DOUBLE
PRECISION on PostgreSQL) so they compare and serialise without timezone handling.

Any change here needs a matching Alembic revision in ``migrations/versions``;
``tests/unit/server/test_store.py`` fails when models and migrations drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AuditRow",
    "CHANNELS",
    "CONVERSATION_STATUSES",
    "MAX_MESSAGE_CHARS",
    "MESSAGE_SENDERS",
    "ROLES",
    "AuthSession",
    "CompanySetting",
    "Base",
    "Conversation",
    "ConversationRow",
    "Message",
    "MessageRow",
    "Share",
    "ShareKey",
    "ShareKeyRow",
    "ShareRow",
    "User",
    "UserRow",
    "Visitor",
    "VisitorRow",
]

ROLES = ("admin", "agent")
CONVERSATION_STATUSES = ("waiting", "open", "closed")
#: How the visitor reached support: the chat widget, or a phone call (a screen share key);
#: ``internal`` is an agent asking a colleague (``colleague_id``) to share their screen.
CHANNELS = ("chat", "phone", "internal")
MESSAGE_SENDERS = ("visitor", "agent", "system")

MAX_MESSAGE_CHARS = 4000
MAX_CLIENT_MSG_ID = 64
MAX_EMAIL = 254
MAX_DISPLAY_NAME = 200
MAX_USER_AGENT = 1024
MAX_BROWSER = 64
MAX_OS = 64
MAX_SHARE_REASON = 256
MAX_PAGE = 2048
MAX_SHARE_STATE = 32
MAX_END_REASON = 256
MAX_ENDED_BY = 64
MAX_SURFACE = 32
MAX_PATH = 2048

# Deterministic constraint names: Alembic can only alter or drop what it can name,
# and SQLite batch migrations need names to recreate tables faithfully.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_in("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(MAX_EMAIL), unique=True)
    display_name: Mapped[str] = mapped_column(String(MAX_DISPLAY_NAME))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[float | None] = mapped_column(Double)
    created_at: Mapped[float] = mapped_column(Double)
    #: Permission to ask visitors and callers for their screen (admins may switch it off).
    can_screen_share: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")


class CompanySetting(Base):
    """Company-wide switches an admin changes in the console (``coview_server.accounts``).

    One row per setting; a missing row means the default, so a new switch needs no
    data migration.
    """

    __tablename__ = "company_settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class AuthSession(Base):
    __tablename__ = "auth_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double, index=True)
    last_seen: Mapped[float] = mapped_column(Double)


class Visitor(Base):
    __tablename__ = "visitors"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Double)
    last_seen: Mapped[float] = mapped_column(Double)
    user_agent: Mapped[str] = mapped_column(String(MAX_USER_AGENT), default="")
    browser: Mapped[str] = mapped_column(String(MAX_BROWSER), default="")
    os: Mapped[str] = mapped_column(String(MAX_OS), default="")
    can_share: Mapped[bool] = mapped_column(Boolean, default=False)
    share_reason: Mapped[str | None] = mapped_column(String(MAX_SHARE_REASON))
    current_page: Mapped[str | None] = mapped_column(String(MAX_PAGE))


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        CheckConstraint(_in("status", CONVERSATION_STATUSES), name="status"),
        CheckConstraint(_in("channel", CHANNELS), name="channel"),
        Index("ix_conversations_visitor_id_status", "visitor_id", "status"),
        Index("ix_conversations_status_updated_at", "status", "updated_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    visitor_id: Mapped[str] = mapped_column(ForeignKey("visitors.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    agent_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)
    channel: Mapped[str] = mapped_column(String(16), default="chat", server_default="chat")
    #: For an ``internal`` conversation: the colleague whose screen is shown.
    colleague_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint(_in("sender", MESSAGE_SENDERS), name="sender"),
        UniqueConstraint(
            "conversation_id", "client_msg_id", name="uq_messages_conversation_id_client_msg_id"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    sender: Mapped[str] = mapped_column(String(16))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    text: Mapped[str] = mapped_column(Text)
    client_msg_id: Mapped[str | None] = mapped_column(String(MAX_CLIENT_MSG_ID))
    created_at: Mapped[float] = mapped_column(Double)


class Share(Base):
    __tablename__ = "shares"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    requested_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    state: Mapped[str] = mapped_column(String(MAX_SHARE_STATE))
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    token_expires_at: Mapped[float | None] = mapped_column(Double)
    token_used: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Double)
    accepted_at: Mapped[float | None] = mapped_column(Double)
    started_at: Mapped[float | None] = mapped_column(Double)
    ended_at: Mapped[float | None] = mapped_column(Double, index=True)
    end_reason: Mapped[str | None] = mapped_column(String(MAX_END_REASON))
    ended_by: Mapped[str | None] = mapped_column(String(MAX_ENDED_BY))
    surface: Mapped[str | None] = mapped_column(String(MAX_SURFACE))
    path: Mapped[str | None] = mapped_column(String(MAX_PATH))
    #: The share window's resume credential, hashed like the token (docs/protocol.md,
    #: Reconnect and resume): it outlives a server restart, the window's socket may not.
    resume_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    #: The share's peer connections as JSON ``[{"pc", "via", "viewer"}]``: what a
    #: restarted server rebinds when both ends come back.
    links: Mapped[str | None] = mapped_column(Text)


class ShareKey(Base):
    """The key a phone caller types to open a share (``coview_server.keys``).

    Only an HMAC of the key is kept, never the key; the record says when it was made,
    how many wrong attempts counted against it, and whether it was used or locked.
    """

    __tablename__ = "share_keys"

    share_id: Mapped[str] = mapped_column(
        ForeignKey("shares.id", ondelete="CASCADE"), primary_key=True
    )
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double)
    wrong_attempts: Mapped[int] = mapped_column(Integer, default=0)
    used_at: Mapped[float | None] = mapped_column(Double)
    locked_at: Mapped[float | None] = mapped_column(Double)


# --- rows handed to callers -------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserRow:
    """A user without the password hash, so it is safe to serialise or log."""

    id: int
    email: str
    display_name: str
    role: str
    disabled: bool
    failed_logins: int
    locked_until: float | None
    created_at: float
    can_screen_share: bool = True

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @classmethod
    def of(cls, u: User) -> UserRow:
        return cls(
            id=u.id,
            email=u.email,
            display_name=u.display_name,
            role=u.role,
            disabled=u.disabled,
            failed_logins=u.failed_logins,
            locked_until=u.locked_until,
            created_at=u.created_at,
            can_screen_share=u.can_screen_share,
        )


@dataclass(frozen=True, slots=True)
class VisitorRow:
    """A visitor without its secret hash; the secret is only ever returned at creation."""

    id: str
    created_at: float
    last_seen: float
    user_agent: str
    browser: str
    os: str
    can_share: bool
    share_reason: str | None
    current_page: str | None

    @classmethod
    def of(cls, v: Visitor) -> VisitorRow:
        return cls(
            id=v.id,
            created_at=v.created_at,
            last_seen=v.last_seen,
            user_agent=v.user_agent,
            browser=v.browser,
            os=v.os,
            can_share=v.can_share,
            share_reason=v.share_reason,
            current_page=v.current_page,
        )


@dataclass(frozen=True, slots=True)
class ConversationRow:
    id: int
    visitor_id: str
    status: str
    agent_id: int | None
    created_at: float
    updated_at: float
    channel: str = "chat"
    colleague_id: int | None = None

    @classmethod
    def of(cls, c: Conversation) -> ConversationRow:
        return cls(
            id=c.id,
            visitor_id=c.visitor_id,
            status=c.status,
            agent_id=c.agent_id,
            created_at=c.created_at,
            updated_at=c.updated_at,
            channel=c.channel,
            colleague_id=c.colleague_id,
        )


@dataclass(frozen=True, slots=True)
class MessageRow:
    id: int
    conversation_id: int
    sender: str
    agent_id: int | None
    text: str
    client_msg_id: str | None
    created_at: float

    @classmethod
    def of(cls, m: Message) -> MessageRow:
        return cls(
            id=m.id,
            conversation_id=m.conversation_id,
            sender=m.sender,
            agent_id=m.agent_id,
            text=m.text,
            client_msg_id=m.client_msg_id,
            created_at=m.created_at,
        )


@dataclass(frozen=True, slots=True)
class ShareRow:
    id: str
    conversation_id: int
    requested_by: int
    state: str
    token_hash: str | None
    token_expires_at: float | None
    token_used: bool
    created_at: float
    accepted_at: float | None
    started_at: float | None
    ended_at: float | None
    end_reason: str | None
    ended_by: str | None
    surface: str | None
    path: str | None
    resume_hash: str | None
    links: str | None

    @classmethod
    def of(cls, s: Share) -> ShareRow:
        return cls(
            id=s.id,
            conversation_id=s.conversation_id,
            requested_by=s.requested_by,
            state=s.state,
            token_hash=s.token_hash,
            token_expires_at=s.token_expires_at,
            token_used=s.token_used,
            created_at=s.created_at,
            accepted_at=s.accepted_at,
            started_at=s.started_at,
            ended_at=s.ended_at,
            end_reason=s.end_reason,
            ended_by=s.ended_by,
            surface=s.surface,
            path=s.path,
            resume_hash=s.resume_hash,
            links=s.links,
        )


@dataclass(frozen=True, slots=True)
class ShareKeyRow:
    share_id: str
    key_hash: str
    created_at: float
    expires_at: float
    wrong_attempts: int
    used_at: float | None
    locked_at: float | None

    @classmethod
    def of(cls, k: ShareKey) -> ShareKeyRow:
        return cls(
            share_id=k.share_id,
            key_hash=k.key_hash,
            created_at=k.created_at,
            expires_at=k.expires_at,
            wrong_attempts=k.wrong_attempts,
            used_at=k.used_at,
            locked_at=k.locked_at,
        )


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One share as the audit trail shows it: the share joined with who and for whom.

    Nothing of the media is stored anywhere, so this is all there is to know.
    """

    share_id: str
    conversation_id: int
    visitor_id: str
    channel: str
    requested_by: int
    agent_name: str
    agent_email: str
    state: str
    created_at: float
    started_at: float | None
    ended_at: float | None
    end_reason: str | None
    ended_by: str | None
    surface: str | None
    path: str | None
    #: For an internal share: the colleague who showed their screen.
    colleague_name: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds the screen was shown (from live to the end); None if it never was."""
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0.0, self.ended_at - self.started_at)
