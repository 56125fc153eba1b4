"""Accounts: a per-agent screen sharing permission, company-wide settings, internal shares.

Revision ID: 0003
Revises: 0002
Create Date: 2025-03-01

Written by hand to mirror ``coview_server.models``. Existing agents keep sharing
(``can_screen_share`` starts true), and no company setting is stored: every switch
starts at its default (``coview_server.accounts.COMPANY_DEFAULTS``). A conversation may
now be ``internal``: an agent watching a colleague's screen (``colleague_id``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("can_screen_share", sa.Boolean(), nullable=False, server_default="1")
        )
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("colleague_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_conversations_colleague_id_users"),
            "users",
            ["colleague_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.drop_constraint(op.f("ck_conversations_channel"), type_="check")
        batch.create_check_constraint(
            op.f("ck_conversations_channel"), "channel IN ('chat', 'phone', 'internal')"
        )
    op.create_table(
        "company_settings",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_company_settings")),
    )


def downgrade() -> None:
    op.drop_table("company_settings")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_constraint(op.f("ck_conversations_channel"), type_="check")
        batch.create_check_constraint(
            op.f("ck_conversations_channel"), "channel IN ('chat', 'phone')"
        )
        batch.drop_constraint(op.f("fk_conversations_colleague_id_users"), type_="foreignkey")
        batch.drop_column("colleague_id")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("can_screen_share")
