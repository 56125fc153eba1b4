"""Shares survive a server restart: the window's resume credential and the peer links.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Written by hand to mirror ``coview_server.models``. Both columns start empty: shares
open before the upgrade have no resume credential and end at the next start, as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("shares") as batch:
        batch.add_column(sa.Column("resume_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("links", sa.Text(), nullable=True))
        batch.create_unique_constraint(op.f("uq_shares_resume_hash"), ["resume_hash"])


def downgrade() -> None:
    with op.batch_alter_table("shares") as batch:
        batch.drop_constraint(op.f("uq_shares_resume_hash"), type_="unique")
        batch.drop_column("links")
        batch.drop_column("resume_hash")
