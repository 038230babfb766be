"""One scheduler, UTC, in memory: it only drives the due-time ticker, whose rows are durable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from bot.clock import FixedClock
from bot.config import Settings
from bot.events import CLOCK_AUTHOR, CLOCK_CHAT, TimeCame
from bot.scheduler import build_scheduler
from handlers import maintenance
from storage.db import Database
from storage.models import InboxUpdate, MessageLink
from tests.kit import fake_context


def test_the_scheduler_runs_in_utc_and_keeps_nothing_of_its_own() -> None:
    scheduler = build_scheduler()
    assert str(scheduler.timezone) == "UTC"
    assert type(scheduler._jobstores["default"]).__name__ == "MemoryJobStore"


async def test_purge_forgets_old_handled_updates(db: Database) -> None:
    now = datetime(2026, 11, 25, tzinfo=UTC)
    settings = Settings(database_url=db.url, retention_days=30)
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
    event = TimeCame(
        chat=CLOCK_CHAT, author=CLOCK_AUTHOR, at=now, kind="purge", subject="", key="purge@x"
    )
    async with db.write() as session:
        ctx = fake_context(session, event, settings=settings, clock=FixedClock(now))
        assert await maintenance.purge(ctx, event) == []
    async with db.read() as session:
        keys = set((await session.execute(sa.select(InboxUpdate.update_key))).scalars())
        links = set((await session.execute(sa.select(MessageLink.origin_message_id))).scalars())
    assert keys == {"recent", "pending"}
    assert links == {"recent"}
