"""A conversation harness in the spirit of errbot's test backend: ``await forum.say("/aide")``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from bot.bootstrap import App, build
from bot.clock import FixedClock
from bot.config import Settings
from bot.dispatcher import Tables
from bot.gate import Gate
from bot.platforms.console import ConsoleAdapter, Posted
from storage.db import Database
from tests.harness import settle


class Forum:
    """The whole bot on the console platform, with a fixed clock and a given database."""

    def __init__(
        self,
        settings: Settings,
        db: Database | None = None,
        *,
        tables: Tables | None = None,
        gate: Gate | None = None,
        clock: FixedClock | None = None,
    ) -> None:
        self.lines: list[str] = []
        self.clock = clock or FixedClock(datetime(2026, 11, 25, 18, 30, tzinfo=UTC))
        self.console = ConsoleAdapter(clock=self.clock, write=self.lines.append)
        self.app: App = build(
            settings,
            db=db,
            clock=self.clock,
            adapters=[self.console],
            with_scheduler=False,
            tables=tables,
            gate=gate,
        )

    @property
    def db(self) -> Database:
        return self.app.db

    async def __aenter__(self) -> Forum:
        await self.app.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.app.stop()

    async def say(self, line: str, *, as_name: str | None = None) -> list[Posted]:
        """Type ``line`` as a resident; returns what the bot posted in answer."""
        if as_name is not None:
            self.console.state.name = as_name
        return await self.console.say(line)

    async def tick(self) -> int:
        """Fire the due times whose moment has come, and wait for their effects."""
        fired = await self.app.ticker.tick()
        async with asyncio.timeout(10):
            await settle(self.app)
        return fired

    async def settle(self) -> None:
        async with asyncio.timeout(10):
            await settle(self.app)

    async def answer(self, line: str, *, as_name: str | None = None) -> str:
        """The text of the bot's single answer to ``line``."""
        posted = await self.say(line, as_name=as_name)
        assert len(posted) == 1, f"expected one answer to {line!r}, got {posted!r}"
        return posted[0].text
