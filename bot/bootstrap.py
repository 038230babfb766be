"""The composition root: the one place that builds settings, database, scheduler and adapters.

Nothing in the project does work at import time; ``build`` wires the parts and ``serve`` runs
them on one asyncio loop until SIGINT/SIGTERM (or the end of the console's input).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import stat
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from apscheduler.schedulers.asyncio import AsyncIOScheduler

import handlers
from bot import codec, due
from bot.clock import Clock, SystemClock
from bot.config import Settings
from bot.dispatcher import Dispatcher, Tables
from bot.due import Ticker
from bot.events import ChatRef
from bot.gate import CORE_PLATFORM, Gate
from bot.inbox import InboxRunner
from bot.nlp import FrenchNlp
from bot.outbox import Outbox, Pace
from bot.platforms.base import Adapter
from bot.scheduler import build_scheduler
from storage.db import Database

logger = logging.getLogger(__name__)


@dataclass
class App:
    """Everything the running bot is made of."""

    settings: Settings
    db: Database
    clock: Clock
    dispatcher: Dispatcher
    outbox: Outbox
    adapters: list[Adapter]
    nlp: FrenchNlp
    ticker: Ticker
    scheduler: AsyncIOScheduler | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # The bot's own sources of events: due times ("clock") and released messages ("core").
    runners: list[InboxRunner] = field(default_factory=list)

    async def start(self) -> None:
        """Migrate, start the outbox, the bot's own inboxes, the ticker and every platform."""
        await self.db.migrate()
        for adapter in self.adapters:
            self.dispatcher.register(adapter)
        self.runners = [
            self.dispatcher.inbox_runner(platform, codec.decode)
            for platform in (due.PLATFORM, CORE_PLATFORM)
        ]
        for runner in self.runners:
            runner.start()
        await self.ticker.ensure_recurring()
        if self.scheduler is not None:
            self.scheduler.start()
            self.ticker.start(self.scheduler)
        for adapter in self.adapters:
            await adapter.start(self.dispatcher)
            logger.info("platform %s started", adapter.name)
        # Only now: what a previous run left to deliver needs the platforms logged in.
        await self.outbox.start()

    async def stop(self) -> None:
        """Stop platforms first (no new work), then the scheduler, then the database."""
        for adapter in reversed(self.adapters):
            with contextlib.suppress(Exception):
                await adapter.stop()
        if self.scheduler is not None and self.scheduler.running:
            self.ticker.stop()
            self.scheduler.shutdown(wait=False)
        for runner in self.runners:
            await runner.stop()
        await self.outbox.stop()
        await self.db.dispose()


def default_adapters(settings: Settings, db: Database, clock: Clock) -> list[Adapter]:
    """The platforms the settings ask for; the console when there is no token at all."""
    adapters: list[Adapter] = []
    if settings.telegram_token is not None:
        from bot.platforms.telegram import TelegramAdapter

        adapters.append(TelegramAdapter(settings, db, clock))
    if settings.discord_token is not None:
        from bot.platforms.discord import DiscordAdapter

        adapters.append(DiscordAdapter(settings, db, clock))
    if settings.console_mode:
        from bot.platforms.console import ConsoleAdapter

        adapters.append(ConsoleAdapter(clock=clock))
    return adapters


def build(
    settings: Settings,
    *,
    db: Database | None = None,
    clock: Clock | None = None,
    adapters: Sequence[Adapter] | None = None,
    nlp: FrenchNlp | None = None,
    with_scheduler: bool = True,
    tables: Tables | None = None,
    gate: Gate | None = None,
) -> App:
    """Wire the application; tests pass their own database, clock and adapters."""
    clock = clock or SystemClock()
    db = db or Database(settings.database_url)
    nlp = nlp or FrenchNlp()
    tables = tables or handlers.table(settings)
    dispatcher = Dispatcher(
        db=db, settings=settings, clock=clock, tables=tables, gate=gate or Gate(), nlp=nlp
    )

    def pace(chat: ChatRef) -> Pace | None:
        adapter = dispatcher.adapters.get(chat.platform)
        return adapter.pace(chat) if adapter is not None else None

    def text_limit(chat: ChatRef) -> int | None:
        adapter = dispatcher.adapters.get(chat.platform)
        return adapter.max_text if adapter is not None else None

    def finds_lost_posts(chat: ChatRef) -> bool:
        adapter = dispatcher.adapters.get(chat.platform)
        return adapter is None or adapter.finds_lost_posts

    outbox = Outbox(
        db,
        clock,
        dispatcher.perform,
        pace=pace,
        merge=handlers.MERGE_RELAYS,
        text_limit=text_limit,
        finds_lost_posts=finds_lost_posts,
        # A delivery that changes what handlers remember (a thread opened: a bridge link).
        changed=dispatcher.signal,
    )
    dispatcher.outbox = outbox
    ticker = Ticker(
        db,
        clock,
        settings.tz,
        kinds={kind: entry.kind for kind, entry in tables.due.items()},
        recurring=tables.recurring,
        on_stored=lambda: dispatcher.signal(f"inbox:{due.PLATFORM}"),
    )
    return App(
        settings=settings,
        db=db,
        clock=clock,
        dispatcher=dispatcher,
        outbox=outbox,
        adapters=list(adapters) if adapters is not None else default_adapters(settings, db, clock),
        nlp=nlp,
        ticker=ticker,
        scheduler=build_scheduler() if with_scheduler else None,
    )


async def _stdin_reader() -> asyncio.StreamReader:
    """The console's input, one resident line per line, whatever stdin is.

    The event loop can watch pipes, sockets and terminals only: a regular file
    (``forum-habitant run < conversation.txt``) is refused outright, and /dev/null is accepted
    and then never reported, so the bot would wait for ever. Those are read by a thread.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    if sys.stdin is None:  # started with stdin closed: nothing will ever be typed
        reader.feed_eof()
        return reader
    try:
        fd = sys.stdin.fileno()
        mode = os.fstat(fd).st_mode
        watchable = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)
    except (OSError, ValueError):
        watchable = False
    if watchable:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        return reader
    transport = _ThreadFeed()
    reader.set_transport(transport)
    threading.Thread(
        target=transport.run,
        args=(loop, reader, sys.stdin.buffer),
        name="console-stdin",
        # A thread blocked on input must not keep the process alive once the bot has stopped.
        daemon=True,
    ).start()
    return reader


class _ThreadFeed(asyncio.ReadTransport):
    """Feeds a stream reader from a blocking file in a thread, as fast as it is read.

    The reader pauses its transport when its buffer fills and resumes it once drained: here
    that stops and restarts the thread, so a long file is never read into memory at once.
    """

    def __init__(self) -> None:
        super().__init__()
        self._flowing = threading.Event()
        self._flowing.set()

    def pause_reading(self) -> None:
        self._flowing.clear()

    def resume_reading(self) -> None:
        self._flowing.set()

    def is_reading(self) -> bool:
        return self._flowing.is_set()

    def run(
        self, loop: asyncio.AbstractEventLoop, reader: asyncio.StreamReader, source: BinaryIO
    ) -> None:
        try:
            while True:
                self._flowing.wait()
                # At most 64 KiB at a time: a file without line breaks is not read whole.
                line = source.readline(65536)
                if not line:
                    break
                # Wait until the line is in the reader's buffer: a pause it asks for then
                # holds before the next line is read.
                asyncio.run_coroutine_threadsafe(_feed(reader, line), loop).result()
        except (RuntimeError, concurrent.futures.CancelledError):
            return  # the loop is closed or closing: nobody reads any more
        except OSError:
            logger.exception("could not read the console's input")
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(reader.feed_eof)


async def _feed(reader: asyncio.StreamReader, data: bytes) -> None:
    reader.feed_data(data)


async def serve(settings: Settings) -> None:
    """Run the bot until a signal, or until the console's input ends."""
    from bot.platforms.console import ConsoleAdapter

    app = build(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, app.stopping.set)
    waiters = [asyncio.create_task(app.stopping.wait())]
    for adapter in app.adapters:
        if isinstance(adapter, ConsoleAdapter):
            adapter.reader = await _stdin_reader()
            adapter.write = lambda line: print(line, flush=True)
            waiters.append(asyncio.create_task(adapter.closed.wait()))
    try:
        await app.start()
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        logger.info("shutting down")
        for waiter in waiters:
            waiter.cancel()
        await app.stop()
