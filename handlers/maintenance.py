"""Housekeeping due times: the daily purge of what the retention period lets go."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import delete
from sqlmodel import col, select

from bot.events import Action, TimeCame
from bot.handling import Context
from storage.db import rowcount
from storage.models import InboxUpdate, MessageLink, OutboxItem

logger = logging.getLogger(__name__)

PURGE = "purge"


async def purge(ctx: Context, event: TimeCame) -> Sequence[Action]:
    """Forget what is older than the retention period: handled raw updates, delivered
    outbox rows and the message map (edits and replies to older messages stop following)."""
    cutoff = ctx.clock.now() - timedelta(days=ctx.settings.retention_days)
    session = ctx.session
    result = await session.execute(
        delete(InboxUpdate).where(
            col(InboxUpdate.handled_at).is_not(None),
            col(InboxUpdate.handled_at) < cutoff,
        )
    )
    await session.execute(delete(MessageLink).where(col(MessageLink.created_at) < cutoff))
    await session.execute(
        delete(OutboxItem).where(
            col(OutboxItem.status) == "delivered",
            col(OutboxItem.delivered_at) < cutoff,
            # A link still pointing at the row keeps it (its foreign key).
            col(OutboxItem.id).not_in(
                select(MessageLink.outbox_id).where(col(MessageLink.outbox_id).is_not(None))
            ),
        )
    )
    removed = rowcount(result)
    logger.info("purged %d handled updates", removed)
    return []
