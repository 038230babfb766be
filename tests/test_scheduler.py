"""One scheduler, UTC, jobs kept in the bot's database across restarts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from bot import jobs
from bot.bootstrap import build
from bot.clock import FixedClock
from bot.config import Settings
from bot.scheduler import build_scheduler, sync_url
from storage.db import Database
from storage.models import InboxUpdate, MessageLink


def test_sync_url_for_the_job_store() -> None:
    assert sync_url("sqlite+aiosqlite:///./data/forum.db") == "sqlite:///./data/forum.db"
    assert (
        sync_url("postgresql+asyncpg://forum:pw@127.0.0.1:5432/forum")
        == "postgresql+psycopg://forum:pw@127.0.0.1:5432/forum"
    )


async def test_jobs_survive_a_restart(database_url: str) -> None:
    db = Database(database_url)
    await db.migrate()
    when = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
    first = build_scheduler(database_url)
    first.start(paused=True)
    first.add_job("bot.jobs:purge_inbox", "date", run_date=when, id="later")
    first.shutdown(wait=False)

    second = build_scheduler(database_url)
    second.start(paused=True)
    try:
        job = second.get_job("later")
        assert job is not None
        assert job.next_run_time == when
        assert str(second.timezone) == "UTC"
    finally:
        second.shutdown(wait=False)
        await db.dispose()


async def test_purge_inbox_forgets_old_handled_updates(db: Database) -> None:
    now = datetime(2026, 11, 25, tzinfo=UTC)
    settings = Settings(database_url=db.url, retention_days=30)
    app = build(settings, db=db, clock=FixedClock(now), adapters=[], with_scheduler=False)
    async with db.write() as session:
        for key, handled in [
            ("old", now - timedelta(days=31)),
            ("recent", now - timedelta(days=1)),
            ("pending", None),
        ]:
            session.add(
                InboxUpdate(platform="telegram", update_key=key, payload={}, handled_at=handled)
            )
        for key, created in [
            ("old", now - timedelta(days=31)),
            ("recent", now - timedelta(days=1)),
        ]:
            session.add(
                MessageLink(
                    origin_chat_key="telegram:-1",
                    origin_message_id=key,
                    copy_chat_key="discord:2",
                    copy_message_id=key,
                    created_at=created,
                )
            )
    jobs.bind(app)
    try:
        assert await jobs.purge_inbox() == 1
    finally:
        jobs.bind(None)
    async with db.read() as session:
        keys = set((await session.execute(sa.select(InboxUpdate.update_key))).scalars())
        links = set((await session.execute(sa.select(MessageLink.origin_message_id))).scalars())
    assert keys == {"recent", "pending"}
    assert links == {"recent"}
