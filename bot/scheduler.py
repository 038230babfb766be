"""One APScheduler instance, in UTC, whose jobs live in the bot's own database.

APScheduler 3 is the stable line; its SQLAlchemy job store is synchronous, so it gets a sync
driver for the same database (sqlite3, or psycopg for PostgreSQL). Jobs are stored by textual
reference (``bot.jobs:...``) so they survive restarts; they reach the running application
through ``bot.jobs.bind``.
"""

from __future__ import annotations

import logging
from datetime import UTC

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.engine import make_url

logger = logging.getLogger(__name__)


def sync_url(async_url: str) -> str:
    url = make_url(async_url)
    if url.get_backend_name() == "sqlite":
        return url.set(drivername="sqlite").render_as_string(hide_password=False)
    return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def build_scheduler(database_url: str) -> AsyncIOScheduler:
    """A scheduler (not started) whose job store is the bot's database."""
    store = SQLAlchemyJobStore(
        url=sync_url(database_url),
        tablename="apscheduler_jobs",
        engine_options={"pool_pre_ping": True},
    )
    return AsyncIOScheduler(
        timezone=UTC,
        jobstores={"default": store},
        job_defaults={"coalesce": True, "misfire_grace_time": 3600, "max_instances": 1},
    )
