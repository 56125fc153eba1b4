"""Phone callers: a conversation's channel, and the keys that open phone shares.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01

Written by hand to mirror ``coview_server.models``. Existing conversations all came
through the chat widget, so ``channel`` starts as ``chat`` for them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite adds a CHECK constraint only by rebuilding the table.
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("channel", sa.String(16), nullable=False, server_default="chat"))
        batch.create_check_constraint(
            op.f("ck_conversations_channel"), "channel IN ('chat', 'phone')"
        )

    op.create_table(
        "share_keys",
        sa.Column("share_id", sa.String(32), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("wrong_attempts", sa.Integer(), nullable=False),
        sa.Column("used_at", sa.Double(), nullable=True),
        sa.Column("locked_at", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["share_id"],
            ["shares.id"],
            name=op.f("fk_share_keys_share_id_shares"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("share_id", name=op.f("pk_share_keys")),
    )


def downgrade() -> None:
    op.drop_table("share_keys")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_constraint(op.f("ck_conversations_channel"), type_="check")
        batch.drop_column("channel")
