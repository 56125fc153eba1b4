"""Alembic migrations shipped inside the package.

There is no ``alembic.ini``: the configuration is built in code from the package
location, so ``coview migrate`` and first start work from an installed wheel as
well as from a checkout.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

__all__ = ["SCRIPT_LOCATION", "alembic_config", "upgrade_connection"]

SCRIPT_LOCATION = str(Path(__file__).resolve().parent)


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if url is not None:
        # ConfigParser interpolation would choke on '%' in URL-encoded passwords.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade_connection(connection: Connection, revision: str = "head") -> None:
    """Upgrade using the caller's connection and transaction.

    Sharing the connection lets the async Store drive Alembic through
    ``AsyncConnection.run_sync`` and decide itself how the transaction (and, on
    SQLite, foreign-key enforcement) is handled around the migration.
    """
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)
