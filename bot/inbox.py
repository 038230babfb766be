"""The inbox: raw platform updates, stored before anything acts on them.

An adapter stores each update (keyed by the platform's own id, so a redelivered update is
recognised) and only then confirms it to the platform; the dispatcher marks it handled in the
same transaction that records its effects. On start, whatever was stored but not handled is
handled — once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from storage.db import Database, insert_ignore, upsert
from storage.models import InboxUpdate, PlatformCursor

if TYPE_CHECKING:
    from bot.events import Event

logger = logging.getLogger(__name__)


async def store_updates(
    session: AsyncSession,
    platform: str,
    updates: Sequence[tuple[str, Mapping[str, Any]]],
    now: datetime,
) -> None:
    """Store raw updates; ones already stored (redeliveries) are left alone."""
    if not updates:
        return
    await insert_ignore(
        session,
        InboxUpdate,
        [
            {
                "platform": platform,
                "update_key": key,
                "payload": dict(payload),
                "received_at": now,
                "attempts": 0,
            }
            for key, payload in updates
        ],
        ["platform", "update_key"],
    )


async def pending_updates(
    db: Database, platform: str, limit: int = 500, after: int = 0
) -> list[InboxUpdate]:
    """Stored updates not yet handled, oldest first (those stored after row ``after``)."""
    async with db.read() as session:
        query = (
            select(InboxUpdate)
            .where(
                InboxUpdate.platform == platform,
                col(InboxUpdate.handled_at).is_(None),
                col(InboxUpdate.id) > after,
            )
            .order_by(col(InboxUpdate.id))
            .limit(limit)
        )
        return list((await session.execute(query)).scalars())


async def mark_handled(session: AsyncSession, inbox_id: int, now: datetime) -> None:
    await session.execute(
        sa.update(InboxUpdate)
        .where(col(InboxUpdate.id) == inbox_id)
        .values(handled_at=now, attempts=InboxUpdate.attempts + 1)
    )


async def mark_all_handled(session: AsyncSession, inbox_ids: Sequence[int], now: datetime) -> None:
    """``mark_handled`` for a batch, in one statement."""
    if inbox_ids:
        await session.execute(
            sa.update(InboxUpdate)
            .where(col(InboxUpdate.id).in_(inbox_ids))
            .values(handled_at=now, attempts=InboxUpdate.attempts + 1)
        )


async def get_cursor(db: Database, platform: str, key: str) -> str | None:
    async with db.read() as session:
        row = await session.get(PlatformCursor, (platform, key))
        return row.value if row else None


async def set_cursor(
    session: AsyncSession, platform: str, key: str, value: str, now: datetime
) -> None:
    await upsert(
        session,
        PlatformCursor,
        {"platform": platform, "key": key, "value": value, "updated_at": now},
        ["platform", "key"],
        ["value", "updated_at"],
    )


async def record_failure(session: AsyncSession, inbox_id: int, error: str, limit: int) -> bool:
    """Count a failed try; True when the update has used up its tries (give up on it)."""
    row = await session.get(InboxUpdate, inbox_id)
    if row is None:
        return True
    row.attempts += 1
    row.last_error = error[:2000]
    return row.attempts >= limit


Decode = Callable[[Mapping[str, Any]], "Event | None"]
# Handles a page of stored updates (None: nothing to act on, only to mark handled), in
# order; returns False when one was left pending for another try.
HandlePage = Callable[[Sequence[tuple["Event | None", int]]], Awaitable[bool]]


class InboxRunner:
    """Hands one platform's stored updates to the dispatcher, in the order they were stored.

    Every source of events uses one: the platform adapters, the clock (due times) and the core
    itself (released messages). ``wake()`` after storing; on start it handles what a previous
    run stored but did not handle.
    """

    PAGE = 500

    def __init__(
        self, db: Database, platform: str, decode: Decode, handle_page: HandlePage
    ) -> None:
        self.db = db
        self.platform = platform
        self._decode = decode
        self._handle_page = handle_page
        self._work = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"inbox {self.platform}")
        self._work.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def wake(self) -> None:
        self._work.set()

    async def _loop(self) -> None:
        while True:
            await self._work.wait()
            self._work.clear()
            try:
                await self.handle_pending()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The database may be away for a moment; the next wake-up tries again.
                logger.exception("inbox runner %s failed", self.platform)

    # A failed update is tried again after this many seconds (times its tries so far).
    RETRY_DELAY = 2.0

    async def handle_pending(self) -> bool:
        """Handle every stored update not yet handled, oldest first, each once per round.

        A handler that failed leaves its update pending: it is tried again in a later round
        (a wake-up, or the retry timer), so one outage spends one try, not all of them.
        Returns False when an update was left pending.
        """
        last = 0
        retry = False
        while rows := await pending_updates(self.db, self.platform, self.PAGE, after=last):
            page: list[tuple[Event | None, int]] = []
            for row in rows:
                assert row.id is not None
                page.append((self._decode(row.payload), row.id))
            last = page[-1][1]
            if not await self._handle_page(page):
                retry = True
        if retry and self._task is not None:
            asyncio.get_running_loop().call_later(self.RETRY_DELAY, self.wake)
        return not retry
