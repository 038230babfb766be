"""One APScheduler instance, in UTC, that only drives the due-time ticker.

What must happen at a moment is a ``due_time`` row in the bot's own database (``bot/due.py``),
written in the transaction of the handler that decided it. APScheduler keeps no state of its
own, so its jobs live in memory: nothing is lost on a restart, and no synchronous database
driver runs on the event loop.
"""

from __future__ import annotations

import logging
from datetime import UTC

from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler


def build_scheduler() -> AsyncIOScheduler:
    """A scheduler (not started) with an in-memory job store."""
    # Its executor logs every run of the ticker at INFO: every fifteen seconds, nothing said.
    logging.getLogger("apscheduler.executors.default").setLevel(logging.WARNING)
    return AsyncIOScheduler(
        timezone=UTC,
        jobstores={"default": MemoryJobStore()},
        job_defaults={"coalesce": True, "misfire_grace_time": 3600, "max_instances": 1},
    )
