"""The inbox: raw platform updates, stored before anything acts on them.

An adapter stores each update (keyed by the platform's own id, so a redelivered update is
recognised) and only then confirms it to the platform; the dispatcher marks it handled in the
same transaction that records its effects. On start, whatever was stored but not handled is
handled — once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from storage.db import Database, insert_ignore, upsert
from storage.models import InboxUpdate, PlatformCursor


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


async def pending_updates(db: Database, platform: str, limit: int = 500) -> list[InboxUpdate]:
    """Stored updates not yet handled, oldest first."""
    async with db.read() as session:
        query = (
            select(InboxUpdate)
            .where(InboxUpdate.platform == platform, col(InboxUpdate.handled_at).is_(None))
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
