"""Storage on both backends: SQLite (WAL) and the run's own PostgreSQL server."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel

from bot.events import Author, ChatRef
from bot.richtext import FormattedText
from storage import repository
from storage.db import Database, ping
from storage.migrate import FOREIGN_TABLES, current
from storage.models import Account, Message, Person

NOW = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)
MARIE = Author(platform="telegram", user_id="42", display_name="Marie", username="marie59")


async def test_migrations_reach_head_and_match_the_models(db: Database) -> None:
    def check(connection: sa.Connection) -> tuple[str | None, list[object]]:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "include_object": lambda o, n, t, r, c: not (t == "table" and n in FOREIGN_TABLES),
            },
        )
        return current(connection), compare_metadata(context, SQLModel.metadata)

    async with db.writer.connect() as connection:
        revision, differences = await connection.run_sync(check)
    assert revision is not None
    assert differences == []


async def test_migrate_twice_is_harmless(db: Database) -> None:
    await db.migrate()
    assert await ping(db)


async def test_account_is_created_once_with_its_person(db: Database) -> None:
    async with db.write() as session:
        first = await repository.ensure_account(session, MARIE, NOW)
    renamed = Author(platform="telegram", user_id="42", display_name="Marie D.")
    async with db.write() as session:
        second = await repository.ensure_account(session, renamed, NOW + timedelta(hours=1))
    assert first.id == second.id
    async with db.read() as session:
        accounts = (await session.execute(select(Account))).scalars().all()
        people = (await session.execute(select(Person))).scalars().all()
    assert [(a.display_name, a.last_seen_at) for a in accounts] == [
        ("Marie D.", NOW + timedelta(hours=1))
    ]
    assert len(people) == 1


async def test_a_message_is_stored_once_with_aware_timestamps(db: Database) -> None:
    chat = ChatRef("telegram", "-1001", "7")
    paris = timezone(timedelta(hours=1))
    sent = datetime(2026, 11, 25, 18, 0, tzinfo=paris)
    for _ in range(2):  # a redelivered update must not store a second copy
        async with db.write() as session:
            account = await repository.ensure_account(session, MARIE, NOW)
            channel = await repository.ensure_channel(session, chat, neighbourhood="Ouest")
            repository.store_message(
                session,
                channel_id=channel.id,
                account_id=account.id,
                platform_message_id="99",
                content=FormattedText.plain("Rendez-vous à 18 h, café offert ☕"),
                sent_at=sent,
                received_at=NOW,
                reply_to="98",
            )
    async with db.read() as session:
        found = await repository.find_message(session, chat, "99")
        count = (await session.execute(select(sa.func.count()).select_from(Message))).scalar_one()
    assert count == 1
    assert found is not None
    assert found.text == "Rendez-vous à 18 h, café offert ☕"
    assert found.sent_at == sent and found.sent_at.tzinfo is not None
    assert found.reply_to_platform_id == "98"


async def test_naive_datetimes_are_refused(db: Database) -> None:
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        async with db.write() as session:
            session.add(Person(display_name="x", created_at=datetime(2026, 1, 1)))


async def test_foreign_keys_are_enforced(db: Database) -> None:
    with pytest.raises(IntegrityError):
        async with db.write() as session:
            session.add(
                Account(person_id=12345, platform="x", platform_user_id="1", display_name="x")
            )


async def test_a_failed_write_rolls_back_everything(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.write() as session:
            session.add(Person(display_name="rolled back"))
            await session.flush()
            raise RuntimeError("abort")
    async with db.read() as session:
        assert (await session.execute(select(Person))).scalars().all() == []


async def test_language_preference_person_before_chat(db: Database) -> None:
    chat = ChatRef("discord", "555")
    async with db.write() as session:
        await repository.set_language(session, "chat", str(chat), "en")
    async with db.read() as session:
        assert await repository.language_for(session, chat, MARIE) == "en"
    async with db.write() as session:
        await repository.set_language(session, "account", "telegram:42", "fr")
    async with db.read() as session:
        assert await repository.language_for(session, chat, MARIE) == "fr"


async def test_a_transaction_run_whole_commits_or_leaves_nothing(db: Database) -> None:
    """write_now / read_now: plain synchronous work in one transaction (on SQLite in the
    database's own thread), serialised with the async writers."""
    from sqlalchemy.orm import Session

    from storage.db import insert_later

    def add(name: str, fail: bool) -> Callable[[Session], int]:
        def work(session: Session) -> int:
            person = Person(display_name=name, created_at=NOW)
            session.add(person)
            session.flush()
            insert_later(
                session,
                Account,
                {
                    "person_id": person.id,
                    "platform": "console",
                    "platform_user_id": name,
                    "display_name": name,
                    "is_bot": False,
                    "created_at": NOW,
                    "last_seen_at": NOW,
                },
                ["platform", "platform_user_id"],
            )
            if fail:
                raise RuntimeError("half-way")
            assert person.id is not None
            return person.id

        return work

    kept = await db.write_now(add("kept", fail=False))
    with pytest.raises(RuntimeError, match="half-way"):
        await db.write_now(add("lost", fail=True))
    # An async writer in between, and the thread's reader sees both writers' rows.
    async with db.write() as session:
        session.add(Person(display_name="async", created_at=NOW))

    def names(session: Session) -> list[tuple[str, str | None]]:
        query = (
            select(Person.display_name, Account.platform_user_id)
            .outerjoin(Account, Account.person_id == Person.id)
            .order_by(Person.id)
        )
        return [tuple(row) for row in session.execute(query).all()]  # type: ignore[misc]

    assert await db.read_now(names) == [("kept", "kept"), ("async", None)]
    assert kept > 0


async def test_a_cancelled_thread_transaction_holds_the_lock_until_it_ends(
    sqlite_url: str,
) -> None:
    """Cancelling write_now cannot stop its thread: the write lock stays taken until the
    thread's transaction ends, so no writer of this process queues inside SQLite."""
    import asyncio
    import threading

    from sqlalchemy.orm import Session

    db = Database(sqlite_url)
    await db.migrate()
    started, release = threading.Event(), threading.Event()

    def slow(session: Session) -> None:
        session.add(Person(display_name="lent", created_at=NOW))
        session.flush()
        started.set()
        release.wait(30)

    try:
        task = asyncio.create_task(db.write_now(slow))
        assert await asyncio.to_thread(started.wait, 30)
        task.cancel()
        # One turn of the loop (not a wait for time) delivers the cancellation to the task.
        await asyncio.sleep(0)
        # Cancelled, yet its transaction runs on: the lock is still held.
        assert db._write_lock.locked()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not db._write_lock.locked()
        async with db.read() as session:
            names = (await session.execute(select(Person.display_name))).scalars().all()
        # The thread's transaction was not cut short: it committed.
        assert names == ["lent"]
    finally:
        release.set()
        await db.dispose()
