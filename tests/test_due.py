"""Due times as data: rows fall due once, survive restarts, and keep local time across DST."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlmodel import col, select

from bot import codec, due
from bot.clock import FixedClock
from bot.due import (
    DueKind,
    Recurring,
    Ticker,
    cancel,
    next_occurrence,
    pending,
    recurring_key,
    schedule,
)
from bot.events import CLOCK_AUTHOR, CLOCK_CHAT, TimeCame
from storage.db import Database
from storage.models import DueTime, InboxUpdate

PARIS = ZoneInfo("Europe/Paris")
START = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
KINDS = {
    "poll-close": DueKind("poll-close"),
    "reminder": DueKind("reminder", stale_after=timedelta(hours=1)),
    "weekly-digest": DueKind("weekly-digest"),
    "purge": DueKind("purge"),
    "daily": DueKind("daily"),
}
WEEKLY_DIGEST = Recurring("weekly-digest", hour=8, weekday=0)


def _ticker(
    db: Database,
    clock: FixedClock,
    recurring: tuple[Recurring, ...] = (),
    calls: list[int] | None = None,
) -> Ticker:
    def on_stored() -> None:
        if calls is not None:
            calls.append(1)

    return Ticker(db, clock, PARIS, kinds=KINDS, recurring=recurring, on_stored=on_stored)


async def _inbox(db: Database) -> list[InboxUpdate]:
    async with db.read() as session:
        query = (
            select(InboxUpdate)
            .where(col(InboxUpdate.platform) == "clock")
            .order_by(col(InboxUpdate.id))
        )
        return list((await session.execute(query)).scalars())


async def _fired(db: Database) -> list[TimeCame]:
    events = [codec.decode(row.payload) for row in await _inbox(db)]
    assert all(isinstance(event, TimeCame) for event in events)
    return events


async def _schedule(db: Database, key: str, kind: str, at: datetime, subject: str = "") -> None:
    async with db.write() as session:
        await schedule(session, key=key, kind=kind, at=at, subject=subject)


async def _pending(db: Database, prefix: str | None = None) -> list[DueTime]:
    async with db.read() as session:
        return await pending(session, prefix)


# ---------------------------------------------------------------------------------------------
# One-off due times


async def test_fires_once_at_its_time(db: Database) -> None:
    clock = FixedClock(START)
    calls: list[int] = []
    ticker = _ticker(db, clock, calls=calls)
    when = START + timedelta(hours=1)
    await _schedule(db, "poll:42:close", "poll-close", when, subject="42")

    assert await ticker.tick() == 0
    clock.advance(timedelta(minutes=59))
    assert await ticker.tick() == 0
    assert await _inbox(db) == []

    clock.advance(timedelta(minutes=1))
    assert await ticker.tick() == 1
    rows = await _inbox(db)
    assert [row.update_key for row in rows] == [f"due:poll:42:close@{when.isoformat()}"]
    assert rows[0].handled_at is None
    assert await _fired(db) == [
        TimeCame(
            chat=CLOCK_CHAT,
            author=CLOCK_AUTHOR,
            at=when,
            kind="poll-close",
            subject="42",
            key="poll:42:close",
        )
    ]
    assert await _pending(db) == []
    assert calls == [1]

    clock.advance(timedelta(minutes=5))
    assert await ticker.tick() == 0
    assert len(await _inbox(db)) == 1
    assert calls == [1]


async def test_rescheduling_replaces_the_time(db: Database) -> None:
    clock = FixedClock(START)
    ticker = _ticker(db, clock)
    await _schedule(db, "poll:7:close", "poll-close", START + timedelta(hours=1))
    # Given in local time, stored and fired in UTC.
    later = (START + timedelta(hours=3)).astimezone(PARIS)
    await _schedule(db, "poll:7:close", "poll-close", later)
    [row] = await _pending(db)
    assert row.due_at == START + timedelta(hours=3)
    assert row.due_at.tzinfo is not None and row.due_at.utcoffset() == timedelta(0)

    clock.advance(timedelta(hours=1))
    assert await ticker.tick() == 0
    clock.advance(timedelta(hours=2))
    assert await ticker.tick() == 1
    assert [event.at for event in await _fired(db)] == [START + timedelta(hours=3)]
    assert await ticker.tick() == 0


async def test_naive_times_are_refused(db: Database) -> None:
    async with db.write() as session:
        with pytest.raises(ValueError, match="naive"):
            await schedule(session, key="k", kind="poll-close", at=datetime(2026, 11, 20, 9, 0))
    assert await _pending(db) == []


async def test_a_cancelled_time_never_fires(db: Database) -> None:
    clock = FixedClock(START)
    ticker = _ticker(db, clock)
    await _schedule(db, "mute:telegram:5", "reminder", START + timedelta(minutes=10))
    await _schedule(db, "poll:1:close", "poll-close", START + timedelta(days=1))
    async with db.write() as session:
        assert await cancel(session, "mute:telegram:5") is True
        assert await cancel(session, "mute:telegram:5") is False
    assert [row.key for row in await _pending(db, "mute:")] == []
    assert [row.key for row in await _pending(db, "poll:")] == ["poll:1:close"]

    clock.advance(timedelta(hours=1))
    assert await ticker.tick() == 0
    assert await _inbox(db) == []


async def test_a_time_missed_while_down_fires_once_after_a_restart(db: Database) -> None:
    when = START + timedelta(hours=1)
    first = _ticker(db, FixedClock(START))
    await _schedule(db, "poll:9:close", "poll-close", when, subject="9")
    assert await first.tick() == 0

    # The bot was down for five hours: a new process, a new database handle.
    restarted_db = Database(db.url)
    try:
        calls: list[int] = []
        second = _ticker(restarted_db, FixedClock(START + timedelta(hours=5)), calls=calls)
        assert await second.tick() == 1
        assert await second.tick() == 0
        assert calls == [1]
    finally:
        await restarted_db.dispose()
    [event] = await _fired(db)
    assert (event.key, event.subject, event.at) == ("poll:9:close", "9", when)
    assert await _pending(db) == []


async def test_a_stale_time_is_dropped_not_fired(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    when = START + timedelta(hours=1)
    await _schedule(db, "remind:3", "reminder", when)
    await _schedule(db, "remind:4", "reminder", START + timedelta(hours=5))
    calls: list[int] = []
    ticker = _ticker(db, FixedClock(START + timedelta(hours=5)), calls=calls)
    with caplog.at_level(logging.INFO, logger="bot.due"):
        # Four hours late for a kind stale after one: dropped; the one due now still fires.
        assert await ticker.tick() == 1
    assert [event.key for event in await _fired(db)] == ["remind:4"]
    assert await _pending(db) == []
    assert calls == [1]
    assert any(
        "remind:3" in record.getMessage() and record.levelno == logging.INFO
        for record in caplog.records
    )


async def test_an_unknown_kind_fires_with_a_warning(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    await _schedule(db, "mystery", "not-declared", START)
    with caplog.at_level(logging.WARNING, logger="bot.due"):
        assert await _ticker(db, FixedClock(START)).tick() == 1
    assert [event.kind for event in await _fired(db)] == ["not-declared"]
    assert any(record.levelno == logging.WARNING for record in caplog.records)


async def test_a_long_key_still_fits_the_inbox(db: Database) -> None:
    key = "reminder:" + "x" * 191
    await _schedule(db, key, "poll-close", START)
    assert await _ticker(db, FixedClock(START)).tick() == 1
    [row] = await _inbox(db)
    assert len(row.update_key) <= 128
    assert [event.key for event in await _fired(db)] == [key]


# ---------------------------------------------------------------------------------------------
# Crash safety


async def test_a_tick_that_fails_after_storing_stores_nothing(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _schedule(db, "poll:5:close", "poll-close", START)
    calls: list[int] = []
    ticker = _ticker(db, FixedClock(START), calls=calls)
    real_store = due.store_updates

    async def store_then_crash(*args: object, **kwargs: object) -> None:
        await real_store(*args, **kwargs)  # type: ignore[arg-type]
        raise RuntimeError("power cut")

    monkeypatch.setattr(due, "store_updates", store_then_crash)
    with pytest.raises(RuntimeError, match="power cut"):
        await ticker.tick()
    # The whole transaction rolled back: the row waits, the inbox holds nothing.
    assert await _inbox(db) == []
    assert [row.key for row in await _pending(db)] == ["poll:5:close"]
    assert calls == []

    monkeypatch.setattr(due, "store_updates", real_store)
    assert await ticker.tick() == 1
    assert len(await _inbox(db)) == 1
    assert calls == [1]


async def test_a_firing_replayed_by_a_rerun_is_stored_once(db: Database) -> None:
    clock = FixedClock(START)
    calls: list[int] = []
    ticker = _ticker(db, clock, calls=calls)
    await _schedule(db, "poll:6:close", "poll-close", START)
    assert await ticker.tick() == 1
    # As if the tick ran again over the same row (same key, same time).
    await _schedule(db, "poll:6:close", "poll-close", START)
    clock.advance(timedelta(seconds=15))
    assert await ticker.tick() == 0
    assert len(await _inbox(db)) == 1
    assert await _pending(db) == []
    assert calls == [1]


# ---------------------------------------------------------------------------------------------
# Local wall times (pure functions: no database involved)


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        # Summer time before 2026-10-25: 08:00 CEST is 06:00 UTC.
        (datetime(2026, 10, 13, 12, 0, tzinfo=UTC), datetime(2026, 10, 19, 6, 0, tzinfo=UTC)),
        # Across the autumn change: 08:00 CET is 07:00 UTC.
        (datetime(2026, 10, 20, 12, 0, tzinfo=UTC), datetime(2026, 10, 26, 7, 0, tzinfo=UTC)),
        # Before the spring change (2027-03-28), still winter.
        (datetime(2027, 3, 16, 12, 0, tzinfo=UTC), datetime(2027, 3, 22, 7, 0, tzinfo=UTC)),
        # Across it: summer again.
        (datetime(2027, 3, 23, 12, 0, tzinfo=UTC), datetime(2027, 3, 29, 6, 0, tzinfo=UTC)),
        # Strictly after: at the very instant, the next week.
        (datetime(2026, 11, 30, 7, 0, tzinfo=UTC), datetime(2026, 12, 7, 7, 0, tzinfo=UTC)),
        (datetime(2026, 11, 30, 6, 59, tzinfo=UTC), datetime(2026, 11, 30, 7, 0, tzinfo=UTC)),
    ],
)
def test_weekly_rule_keeps_local_time_across_dst(after: datetime, expected: datetime) -> None:
    at = next_occurrence(WEEKLY_DIGEST, after, PARIS)
    assert at == expected
    assert at.utcoffset() == timedelta(0)
    assert at.astimezone(PARIS).hour == 8
    assert at.astimezone(PARIS).weekday() == 0


@pytest.mark.parametrize(
    ("hour", "minute", "expected"),
    [
        # 02:00-02:59 does not exist on 2027-03-28: fire when the clocks reach 03:00.
        (2, 30, datetime(2027, 3, 28, 1, 0, tzinfo=UTC)),
        (2, 0, datetime(2027, 3, 28, 1, 0, tzinfo=UTC)),
        (2, 59, datetime(2027, 3, 28, 1, 0, tzinfo=UTC)),
        (3, 0, datetime(2027, 3, 28, 1, 0, tzinfo=UTC)),
        (1, 59, datetime(2027, 3, 28, 0, 59, tzinfo=UTC)),
    ],
)
def test_a_time_in_the_spring_gap_fires_after_the_gap(
    hour: int, minute: int, expected: datetime
) -> None:
    rule = Recurring("daily", hour=hour, minute=minute)
    assert next_occurrence(rule, datetime(2027, 3, 27, 12, 0, tzinfo=UTC), PARIS) == expected


def test_an_ambiguous_autumn_time_fires_once_at_the_first() -> None:
    rule = Recurring("daily", hour=2, minute=30)
    first = next_occurrence(rule, datetime(2026, 10, 24, 12, 0, tzinfo=UTC), PARIS)
    assert first == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    # The second 02:30 (01:30 UTC) is not another occurrence: the next is the next day.
    assert next_occurrence(rule, first, PARIS) == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)


def test_recurring_keys_name_one_occurrence_by_local_date() -> None:
    at = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
    assert recurring_key(WEEKLY_DIGEST, at, PARIS) == "weekly-digest@2026-11-30"
    # 23:30 UTC on the 30th is already December 1st in Paris.
    late = Recurring("purge", hour=0, minute=30, subject="inbox")
    assert (
        recurring_key(late, datetime(2026, 11, 30, 23, 30, tzinfo=UTC), PARIS)
        == "purge:inbox@2026-12-01"
    )


def test_bad_rules_and_naive_times_are_refused() -> None:
    with pytest.raises(ValueError):
        Recurring("daily", hour=24)
    with pytest.raises(ValueError):
        Recurring("daily", hour=8, weekday=7)
    with pytest.raises(ValueError, match="aware"):
        next_occurrence(WEEKLY_DIGEST, datetime(2026, 11, 30, 8, 0), PARIS)


# ---------------------------------------------------------------------------------------------
# Recurring rows


async def test_ensure_recurring_twice_leaves_one_row_per_rule(db: Database) -> None:
    purge = Recurring("purge", hour=3, minute=15)
    clock = FixedClock(datetime(2026, 11, 25, 12, 0, tzinfo=UTC))  # a Wednesday
    ticker = _ticker(db, clock, recurring=(WEEKLY_DIGEST, purge))
    await ticker.ensure_recurring()
    await ticker.ensure_recurring()
    # A restart (new ticker) a little later: still the same occurrences.
    clock.advance(timedelta(hours=1))
    await _ticker(db, clock, recurring=(WEEKLY_DIGEST, purge)).ensure_recurring()
    rows = await _pending(db)
    assert [(row.key, row.kind, row.due_at) for row in rows] == [
        ("purge@2026-11-26", "purge", datetime(2026, 11, 26, 2, 15, tzinfo=UTC)),
        ("weekly-digest@2026-11-30", "weekly-digest", datetime(2026, 11, 30, 7, 0, tzinfo=UTC)),
    ]


async def test_a_changed_rule_replaces_its_upcoming_row(db: Database) -> None:
    clock = FixedClock(datetime(2026, 11, 25, 12, 0, tzinfo=UTC))
    await _ticker(db, clock, recurring=(WEEKLY_DIGEST,)).ensure_recurring()
    tuesday = Recurring("weekly-digest", hour=18, weekday=1)
    await _ticker(db, clock, recurring=(tuesday,)).ensure_recurring()
    rows = await _pending(db)
    assert [(row.key, row.due_at) for row in rows] == [
        ("weekly-digest@2026-12-01", datetime(2026, 12, 1, 17, 0, tzinfo=UTC))
    ]


async def test_a_fired_recurring_row_schedules_the_next(db: Database) -> None:
    clock = FixedClock(datetime(2026, 11, 25, 12, 0, tzinfo=UTC))
    ticker = _ticker(db, clock, recurring=(WEEKLY_DIGEST,))
    await ticker.ensure_recurring()
    clock.advance(datetime(2026, 11, 30, 7, 0, tzinfo=UTC) - clock.now())
    assert await ticker.tick() == 1
    [event] = await _fired(db)
    assert (event.kind, event.key) == ("weekly-digest", "weekly-digest@2026-11-30")
    assert [(row.key, row.due_at) for row in await _pending(db)] == [
        ("weekly-digest@2026-12-07", datetime(2026, 12, 7, 7, 0, tzinfo=UTC))
    ]
    # Back after three weeks down: one late firing, then the next one after now.
    clock.advance(timedelta(days=21))
    assert await ticker.tick() == 1
    assert await ticker.tick() == 0
    assert [(row.key, row.due_at) for row in await _pending(db)] == [
        ("weekly-digest@2026-12-28", datetime(2026, 12, 28, 7, 0, tzinfo=UTC))
    ]


async def test_a_dropped_recurring_row_still_schedules_the_next(db: Database) -> None:
    rule = Recurring("reminder", hour=9)  # a kind stale after one hour
    clock = FixedClock(datetime(2026, 11, 25, 12, 0, tzinfo=UTC))
    ticker = _ticker(db, clock, recurring=(rule,))
    await ticker.ensure_recurring()
    clock.advance(timedelta(days=1))  # 12:00 UTC, three hours after 09:00 local
    assert await ticker.tick() == 0
    assert await _inbox(db) == []
    assert [row.key for row in await _pending(db)] == ["reminder@2026-11-27"]


async def test_daily_rule_in_the_gap_and_in_the_repeated_hour(db: Database) -> None:
    rule = Recurring("daily", hour=2, minute=30)
    clock = FixedClock(datetime(2026, 10, 24, 12, 0, tzinfo=UTC))
    ticker = _ticker(db, clock, recurring=(rule,))
    await ticker.ensure_recurring()
    clock.advance(datetime(2026, 10, 25, 0, 30, tzinfo=UTC) - clock.now())  # the first 02:30
    assert await ticker.tick() == 1
    clock.advance(timedelta(hours=1))  # the second 02:30
    assert await ticker.tick() == 0
    assert [row.due_at for row in await _pending(db)] == [datetime(2026, 10, 26, 1, 30, tzinfo=UTC)]

    spring = FixedClock(datetime(2027, 3, 27, 12, 0, tzinfo=UTC))
    async with db.write() as session:
        await cancel(session, "daily@2026-10-26")
    ticker = _ticker(db, spring, recurring=(rule,))
    await ticker.ensure_recurring()
    assert [row.due_at for row in await _pending(db)] == [datetime(2027, 3, 28, 1, 0, tzinfo=UTC)]
    spring.advance(datetime(2027, 3, 28, 1, 0, tzinfo=UTC) - spring.now())
    assert await ticker.tick() == 1
    assert [event.at for event in await _fired(db)] == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        datetime(2027, 3, 28, 1, 0, tzinfo=UTC),
    ]


async def test_the_night_the_clocks_change(db: Database) -> None:
    rule = Recurring("daily", hour=3)
    clock = FixedClock(datetime(2026, 10, 23, 12, 0, tzinfo=UTC))
    ticker = _ticker(db, clock, recurring=(rule,))
    await ticker.ensure_recurring()
    for _ in range(3):
        [row] = await _pending(db)
        assert await ticker.tick() == 0
        clock.advance(row.due_at - clock.now())
        assert await ticker.tick() == 1
    assert [(event.at, event.key) for event in await _fired(db)] == [
        (datetime(2026, 10, 24, 1, 0, tzinfo=UTC), "daily@2026-10-24"),
        (datetime(2026, 10, 25, 2, 0, tzinfo=UTC), "daily@2026-10-25"),
        (datetime(2026, 10, 26, 2, 0, tzinfo=UTC), "daily@2026-10-26"),
    ]


# ---------------------------------------------------------------------------------------------
# APScheduler


async def test_start_registers_one_in_memory_job_that_ticks_at_once(db: Database) -> None:
    await _schedule(db, "poll:1:close", "poll-close", START - timedelta(minutes=1))
    stored = asyncio.Event()
    ticker = Ticker(db, FixedClock(START), PARIS, kinds=KINDS, on_stored=stored.set)
    scheduler = AsyncIOScheduler(timezone=UTC)
    scheduler.start()
    try:
        ticker.start(scheduler)
        ticker.start(scheduler)  # a second start replaces, never doubles
        jobs = scheduler.get_jobs()
        assert len(jobs) == 1
        assert jobs[0].id == due.JOB_ID
        assert jobs[0].max_instances == 1 and jobs[0].coalesce is True
        assert scheduler.get_job(due.JOB_ID, jobstore="memory") is not None
        # Waits for the first tick's own signal; the timeout only guards against a hang.
        await asyncio.wait_for(stored.wait(), timeout=30)
        assert len(await _inbox(db)) == 1
        ticker.stop()
        assert scheduler.get_jobs() == []
        ticker.stop()
    finally:
        scheduler.shutdown(wait=False)
