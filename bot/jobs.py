"""Scheduled jobs, referenced by name so the persistent job store can find them after a restart."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete
from sqlmodel import col, select

from storage.models import InboxUpdate, MessageLink, OutboxItem

if TYPE_CHECKING:
    from bot.bootstrap import App

logger = logging.getLogger(__name__)

_app: App | None = None


def bind(app: App | None) -> None:
    """Give jobs the running application (the composition root calls this at start)."""
    global _app
    _app = app


def _current() -> App:
    if _app is None:
        raise RuntimeError("job ran with no application bound")
    return _app


async def purge_inbox() -> int:
    """Forget what is older than the retention period: handled raw updates, delivered
    outbox rows and the message map (edits and replies to older messages stop following)."""
    app = _current()
    cutoff = app.clock.now() - timedelta(days=app.settings.retention_days)
    async with app.db.write() as session:
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
    removed = int(getattr(result, "rowcount", 0) or 0)
    logger.info("purged %d handled updates", removed)
    return removed
