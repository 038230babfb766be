"""Alembic, driven from code: the bot migrates at start-up and with ``forum-habitant migrate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

# Tables that other libraries own and create themselves (APScheduler's job store).
FOREIGN_TABLES = frozenset({"apscheduler_jobs"})


def alembic_config(connection: Any | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Alembic's own logging setup would replace the bot's handlers; env.py skips it.
    config.attributes["configure_logger"] = False
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(connection: Any, revision: str = "head") -> None:
    """Run inside ``AsyncConnection.run_sync``: Alembic works on the sync facade."""
    command.upgrade(alembic_config(connection), revision)


def current(connection: Any) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()
