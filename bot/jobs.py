"""Scheduled jobs, referenced by name so the persistent job store can find them after a restart."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete
from sqlmodel import col

from storage.models import InboxUpdate

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
    """Forget raw updates handled longer ago than the retention period."""
    app = _current()
    cutoff = app.clock.now() - timedelta(days=app.settings.retention_days)
    async with app.db.write() as session:
        result = await session.execute(
            delete(InboxUpdate).where(
                col(InboxUpdate.handled_at).is_not(None),
                col(InboxUpdate.handled_at) < cutoff,
            )
        )
    removed = int(getattr(result, "rowcount", 0) or 0)
    logger.info("purged %d handled updates", removed)
    return removed
