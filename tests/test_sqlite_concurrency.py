"""SQLite under concurrent writers: no "database is locked", no lost row."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from storage.db import Database
from storage.models import AuditEntry

WRITERS = 10
WRITES = 500


async def test_ten_concurrent_writers_lose_nothing(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    await db.migrate()
    # A second Database on the same file stands for another process (the CLI, a worker):
    # it has its own engines and its own in-process lock, so only SQLite arbitrates.
    other = Database(sqlite_url)
    errors: list[BaseException] = []

    async def writer(number: int) -> None:
        database = db if number % 2 else other
        for index in range(WRITES):
            try:
                async with database.write() as session:
                    # Read then write in one transaction: the pattern that deadlocks with a
                    # deferred BEGIN.
                    await session.execute(sa.select(sa.func.count()).select_from(AuditEntry))
                    session.add(AuditEntry(action="test", target=f"{number}:{index}"))
            except Exception as exc:
                errors.append(exc)

    async def reader() -> int:
        reads = 0
        for _ in range(200):
            async with db.read() as session:
                await session.execute(sa.select(sa.func.count()).select_from(AuditEntry))
            reads += 1
        return reads

    results = await asyncio.gather(*(writer(n) for n in range(WRITERS)), reader())
    assert results[-1] == 200
    try:
        assert errors == []
        async with db.read() as session:
            targets = (await session.execute(sa.select(AuditEntry.target))).scalars().all()
        assert len(targets) == WRITERS * WRITES
        assert set(targets) == {f"{n}:{i}" for n in range(WRITERS) for i in range(WRITES)}
    finally:
        await db.dispose()
        await other.dispose()


async def test_wal_and_pragmas_are_on(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    try:
        async with db.write() as session:
            mode = (await session.execute(sa.text("PRAGMA journal_mode"))).scalar_one()
            keys = (await session.execute(sa.text("PRAGMA foreign_keys"))).scalar_one()
            busy = (await session.execute(sa.text("PRAGMA busy_timeout"))).scalar_one()
    finally:
        await db.dispose()
    assert (mode, keys, busy) == ("wal", 1, 30000)
