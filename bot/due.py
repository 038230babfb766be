"""Due times as data: whatever must happen at a moment is a ``due_time`` row.

A handler that decides "this poll closes Friday at 18:00" writes the row in its own
transaction, so the decision and its due time are kept or lost together. The ticker turns rows
that fell due into ``TimeCame`` events stored in the inbox (platform ``clock``), where the
inbox runner hands them to the dispatcher like any platform update. Times are stored in UTC and
computed in the town's zone, so daylight saving changes move nothing by accident.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from bot import codec
from bot.clock import Clock
from bot.events import CLOCK_AUTHOR, CLOCK_CHAT, TimeCame
from bot.inbox import store_updates
from storage.db import Database, insert_ignore, upsert
from storage.models import DueTime, InboxUpdate

logger = logging.getLogger(__name__)

PLATFORM = "clock"
JOB_ID = "due-ticker"
JOB_STORE = "memory"
# Rows fired per tick; a larger backlog is worked off by the following ticks.
BATCH = 500

# Column widths of the tables (storage/models.py): PostgreSQL refuses longer values.
_KEY_MAX = 200
_KIND_MAX = 64
_SUBJECT_MAX = 200
_UPDATE_KEY_MAX = 128


@dataclass(frozen=True, slots=True)
class DueKind:
    """What the ticker knows about one kind of due time."""

    name: str
    # A row found later than this after its time (bot was down) is dropped instead of fired;
    # None: always fire, once.
    stale_after: timedelta | None = None


@dataclass(frozen=True, slots=True)
class Recurring:
    """A job declared once in a table (weekly digest, daily purge), in the town's local time."""

    kind: str
    hour: int
    minute: int = 0
    weekday: int | None = None  # 0 = Monday; None = every day
    subject: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.hour < 24 or not 0 <= self.minute < 60:
            raise ValueError(f"{self.kind}: no such time {self.hour}:{self.minute:02d}")
        if self.weekday is not None and not 0 <= self.weekday < 7:
            raise ValueError(f"{self.kind}: weekday must be 0 (Monday) to 6, not {self.weekday}")

    @property
    def key_prefix(self) -> str:
        """The start of every row key this rule writes (one row per occurrence)."""
        return f"{self.kind}:{self.subject}@" if self.subject else f"{self.kind}@"


# ---------------------------------------------------------------------------------------------
# Rows


async def schedule(
    session: AsyncSession,
    *,
    key: str,
    kind: str,
    at: datetime,
    subject: str = "",
    now: datetime | None = None,
    keep_earlier: bool = False,
) -> None:
    """Make ``key`` fall due at ``at``; rescheduling replaces the time (the old one never fires).

    With ``keep_earlier`` a time already set for ``key`` stays: a throttle (a refresh asked by
    a rush of votes happens once, at the first time asked, not pushed back by each vote).
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"due time {key!r}: naive datetime refused, give its time zone")
    for name, value, limit in (
        ("key", key, _KEY_MAX),
        ("kind", kind, _KIND_MAX),
        ("subject", subject, _SUBJECT_MAX),
    ):
        if len(value) > limit:
            raise ValueError(f"due time {name} longer than {limit} characters: {value[:40]!r}…")
    row = {
        "key": key,
        "kind": kind,
        "subject": subject,
        "due_at": at.astimezone(UTC),
        "created_at": now if now is not None else datetime.now(UTC),
    }
    if keep_earlier:
        await insert_ignore(session, DueTime, [row], ["key"])
        return
    await upsert(session, DueTime, row, ["key"], ["kind", "subject", "due_at"])


async def cancel(session: AsyncSession, key: str) -> bool:
    """Forget a due time; True when there was one."""
    result: Any = await session.execute(sa.delete(DueTime).where(col(DueTime.key) == key))
    return bool(result.rowcount)


async def pending(session: AsyncSession, prefix: str | None = None) -> list[DueTime]:
    """Rows waiting to fall due (those whose key starts with ``prefix``), soonest first."""
    query = select(DueTime).order_by(col(DueTime.due_at), col(DueTime.key))
    if prefix is not None:
        query = query.where(col(DueTime.key).startswith(prefix, autoescape=True))
    return list((await session.execute(query)).scalars())


# ---------------------------------------------------------------------------------------------
# Local wall times


def _instant(day: date, hour: int, minute: int, tz: ZoneInfo) -> datetime:
    """The UTC instant of a local wall time; DST gaps and repeats resolved as documented."""
    wall = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)  # fold=0
    first = wall.astimezone(UTC)
    # Naive comparison ignores fold: an ambiguous wall time round-trips (fold=0 is the first
    # of the two), a wall time inside a spring-forward gap does not.
    if first.astimezone(tz).replace(tzinfo=None) == wall.replace(tzinfo=None):
        return first
    # Inside a gap the two folds land on either side of the transition: search for the
    # transition itself, the first instant after the gap (tz transitions are whole seconds).
    other = wall.replace(fold=1).astimezone(UTC)
    lo, hi = int(min(first, other).timestamp()), int(max(first, other).timestamp())
    before = datetime.fromtimestamp(lo, UTC).astimezone(tz).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return datetime.fromtimestamp(hi, UTC)


def next_occurrence(rule: Recurring, after: datetime, tz: ZoneInfo) -> datetime:
    """The first local wall time matching ``rule`` strictly after ``after``, in UTC."""
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError("next_occurrence needs an aware datetime")
    today = after.astimezone(tz).date()
    # From the day before (a gap around midnight can move an instant across the date line) to
    # two weeks on (a weekly rule, plus a zone that once skipped a whole day).
    for offset in range(-1, 16):
        day = today + timedelta(days=offset)
        if rule.weekday is not None and day.weekday() != rule.weekday:
            continue
        at = _instant(day, rule.hour, rule.minute, tz)
        if at > after:
            return at
    raise RuntimeError(f"no occurrence of {rule} after {after.isoformat()}")


def recurring_key(rule: Recurring, due_at: datetime, tz: ZoneInfo) -> str:
    """The row key of one occurrence, by its local date: ``weekly-digest@2026-11-30``."""
    return f"{rule.key_prefix}{due_at.astimezone(tz).date().isoformat()}"


def _update_key(key: str, due_at: datetime) -> str:
    """The inbox key of one firing: a key rescheduled to another time fires again."""
    when = due_at.astimezone(UTC).isoformat()
    text = f"due:{key}@{when}"
    if len(text) <= _UPDATE_KEY_MAX:
        return text
    # Long keys are hashed so that the inbox column still holds them, and still uniquely.
    return f"due:#{hashlib.sha256(key.encode()).hexdigest()[:40]}@{when}"


# ---------------------------------------------------------------------------------------------
# The ticker


class Ticker:
    """Turns rows that fell due into ``TimeCame`` inbox updates, exactly once each."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        tz: ZoneInfo,
        *,
        kinds: Mapping[str, DueKind],
        recurring: Sequence[Recurring] = (),
        on_stored: Callable[[], None] = lambda: None,
        interval: float = 15.0,
    ) -> None:
        if interval <= 0:
            raise ValueError("the ticker interval must be positive")
        prefixes = [rule.key_prefix for rule in recurring]
        if len(set(prefixes)) != len(prefixes):
            # Their rows would share keys: one rule's occurrence would swallow the other's.
            raise ValueError("two recurring rules with the same kind and subject")
        self._db = db
        self._clock = clock
        self._tz = tz
        self._kinds = dict(kinds)
        self._recurring = tuple(recurring)
        self._on_stored = on_stored
        self._interval = interval
        self._scheduler: AsyncIOScheduler | None = None

    def _rule_for(self, key: str) -> Recurring | None:
        return next((r for r in self._recurring if key.startswith(r.key_prefix)), None)

    async def ensure_recurring(self) -> None:
        """Give each rule a row for its next occurrence (never a second one for the same)."""
        now = self._clock.now()
        async with self._db.write() as session:
            for rule in self._recurring:
                at = next_occurrence(rule, now, self._tz)
                key = recurring_key(rule, at, self._tz)
                # A future row under another key was written by an older version of the rule
                # (another hour or weekday): the rule has one upcoming occurrence, this one.
                await session.execute(
                    sa.delete(DueTime).where(
                        col(DueTime.key).startswith(rule.key_prefix, autoescape=True),
                        col(DueTime.key) != key,
                        col(DueTime.due_at) > now,
                    )
                )
                await schedule(
                    session, key=key, kind=rule.kind, at=at, subject=rule.subject, now=now
                )
        logger.debug("recurring due times ensured for %d rule(s)", len(self._recurring))

    async def tick(self) -> int:
        """Fire every row that fell due; returns how many firings were stored."""
        now = self._clock.now()
        async with self._db.write() as session:
            # FOR UPDATE (PostgreSQL; SQLite's write lock already covers it): a handler
            # rescheduling one of these rows waits, then writes a fresh row once this commits.
            # SKIP LOCKED lets a second ticker move on to other rows instead of queueing.
            rows = list(
                (
                    await session.execute(
                        select(DueTime)
                        .where(col(DueTime.due_at) <= now)
                        .order_by(col(DueTime.due_at), col(DueTime.key))
                        .limit(BATCH)
                        .with_for_update(skip_locked=True)
                    )
                ).scalars()
            )
            if not rows:
                return 0
            updates: list[tuple[str, Mapping[str, Any]]] = []
            for row in rows:
                kind = self._kinds.get(row.kind)
                late = now - row.due_at
                if kind is None:
                    # A handler table may still know it: firing is safer than losing it.
                    logger.warning("due time %s has unknown kind %r; firing it", row.key, row.kind)
                if kind is not None and kind.stale_after is not None and late > kind.stale_after:
                    logger.info(
                        "due time %s (%s) dropped: %s late, stale after %s",
                        row.key,
                        row.kind,
                        late,
                        kind.stale_after,
                    )
                else:
                    event = TimeCame(
                        chat=CLOCK_CHAT,
                        author=CLOCK_AUTHOR,
                        at=row.due_at,
                        kind=row.kind,
                        subject=row.subject,
                        key=row.key,
                    )
                    updates.append((_update_key(row.key, row.due_at), codec.encode(event)))
                await session.execute(
                    sa.delete(DueTime).where(
                        col(DueTime.key) == row.key, col(DueTime.due_at) == row.due_at
                    )
                )
                rule = self._rule_for(row.key)
                if rule is not None:
                    # After now, not after the missed time: a bot down for weeks fires a
                    # weekly job once when it returns, not once per missed week.
                    at = next_occurrence(rule, max(row.due_at, now), self._tz)
                    await schedule(
                        session,
                        key=recurring_key(rule, at, self._tz),
                        kind=rule.kind,
                        at=at,
                        subject=rule.subject,
                        now=now,
                    )
            stored = await self._new_keys(session, [key for key, _ in updates])
            # The inbox's unique (platform, update_key) is what makes a firing exactly-once:
            # one that is already there (a re-run) is silently skipped.
            await store_updates(session, PLATFORM, updates, now)
        if stored:
            logger.info("%d due time(s) fired", stored)
            try:
                self._on_stored()
            except Exception:
                # The firings are committed; the inbox runner finds them on its next round.
                logger.exception("on_stored callback failed after %d firing(s)", stored)
        return stored

    @staticmethod
    async def _new_keys(session: AsyncSession, keys: Sequence[str]) -> int:
        """How many of ``keys`` the inbox does not hold yet."""
        if not keys:
            return 0
        existing = set(
            (
                await session.execute(
                    select(InboxUpdate.update_key).where(
                        col(InboxUpdate.platform) == PLATFORM,
                        col(InboxUpdate.update_key).in_(keys),
                    )
                )
            ).scalars()
        )
        return len(set(keys) - existing)

    def start(self, scheduler: AsyncIOScheduler) -> None:
        """Tick now, then every ``interval`` seconds, as one in-memory APScheduler job."""
        # The rows are the durable part: the job itself need not survive a restart, and a
        # bound method could not be stored by the persistent store anyway. ValueError: the
        # store is already there (a second start).
        with contextlib.suppress(ValueError):
            scheduler.add_jobstore(MemoryJobStore(), JOB_STORE)
        scheduler.add_job(
            self.tick,
            "interval",
            seconds=self._interval,
            id=JOB_ID,
            name="due times",
            jobstore=JOB_STORE,
            replace_existing=True,
            max_instances=1,
            coalesce=True,
            # Real time, not self._clock: APScheduler runs on the wall clock.
            next_run_time=datetime.now(UTC),
        )
        self._scheduler = scheduler

    def stop(self) -> None:
        """Remove the ticking job (a tick under way finishes)."""
        if self._scheduler is None:
            return
        with contextlib.suppress(JobLookupError):  # removed already (scheduler shut down)
            self._scheduler.remove_job(JOB_ID, jobstore=JOB_STORE)
        self._scheduler = None
