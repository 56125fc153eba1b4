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
    "CONVERSATION_STATUSES",
    "MAX_MESSAGE_CHARS",
    "MESSAGE_SENDERS",
    "ROLES",
    "AuthSession",
    "Base",
    "Conversation",
    "ConversationRow",
    "Message",
    "MessageRow",
    "Share",
    "ShareRow",
    "User",
    "UserRow",
    "Visitor",
    "VisitorRow",
]

ROLES = ("admin", "agent")
CONVERSATION_STATUSES = ("waiting", "open", "closed")
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

    @classmethod
    def of(cls, c: Conversation) -> ConversationRow:
        return cls(
            id=c.id,
            visitor_id=c.visitor_id,
            status=c.status,
            agent_id=c.agent_id,
            created_at=c.created_at,
            updated_at=c.updated_at,
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
        )
