"""The ingest benchmark: how fast the whole pipeline takes in a backlog of updates.

``updates`` plain text messages, each from a different resident, are queued in the Telegram
fake *before* the bot starts; then the real app (the composition root, the real
python-telegram-bot and discord.py clients, the loopback fakes, as bench/bridge.py starts
them) is started and timed until

* **unbridged** (the group is not linked to Discord, the app runs the Telegram adapter only):
  every update is stored in the inbox and handled (``inbox_update.handled_at`` set);
* **bridged** (the group is bridged with a Discord channel): every message has been relayed
  to the Discord fake, with every platform limit lifted (the fakes' ``enforce=False``, the
  bot's own paces scaled by ``RATE_LIMIT_SCALE`` down to nothing);

on SQLite (a fresh file, WAL, as the bot configures it) and on PostgreSQL (a throwaway
server from tests/pgserver.py; when it cannot start, its figures are null with the reason).

The rate is counted from the first getUpdates the fake answers (the bot starts ingesting) to
the moment the last update is handled or relayed: start-up is reported on its own
(``ingest.startup_seconds``, below), so that it does not hide the pipeline's pace once that
is fast. ``*.from_start_seconds`` is the wall time from ``App.start()`` on, start included.

In the same run:

* **raw sqlite3**: the same rows (one ``inbox_update`` row per update, the app's own table
  definition and payloads) inserted with the standard library's ``sqlite3``, one commit per
  row, WAL and ``synchronous=NORMAL`` like the bot, on a temporary file. ``ratio_to_raw`` is
  the bot's rate divided by this one: what the pipeline costs over the bare database.
* **statements and transactions per update**: SQLAlchemy engine events on the app's own
  engines (``Database.writer`` and ``Database.reader``) count every statement sent to the
  driver, every transaction begun, committed and rolled back, and every connection reset when
  returned to the pool, over the whole phase (start-up included: a few dozen statements).
  The benchmark's own completion checks use a separate engine and are not counted.
* **start-up and idle memory**: ``forum-habitant run`` as its own process against both fakes
  (their real limits) and an already migrated SQLite database: seconds from launch until it
  is ready (the last of: its "platform discord started" log line, the first getUpdates, the
  gateway READY), then its resident memory (VmRSS) after two idle seconds.

Only loopback is used, and every phase is bounded by ``phase_budget`` seconds: a phase that
runs out reports its partial rate (what was done by then) with ``timed_out`` set.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import io
import itertools
import json
import logging
import math
import os
import pstats
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy import event
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.bridge import (
    SHORT_TEXT,
    DiscordWatch,
    LogCounter,
    bench_environment,
    marker,
)
from bot.bootstrap import App, build
from bot.clock import SystemClock
from bot.config import ChannelConfig, Settings
from bot.platforms.telegram import TelegramAdapter
from storage.db import Database
from storage.models import InboxUpdate
from tests.fakes.discord import DiscordLimits, FakeDiscord
from tests.fakes.telegram import FakeTelegram, TelegramLimits
from tests.harness import GENERAL, GROUP, PLATFORM_ENV, bridge_app, bridge_settings

DEFAULT_UPDATES = 2000
DEFAULT_PHASE_BUDGET = 150.0
# The bot's paces (Telegram's 20 posts a minute per group, Discord's 30 webhook posts a minute
# per channel) scaled down to nothing: 30 posts per 60 µs. The setting must stay above zero.
NO_LIMITS_SCALE = 1e-6
# Residents' Telegram ids: distinct, far from the fakes' own.
FIRST_RESIDENT = 500_000
# How often the completion check looks (it only reads a counter between database checks).
POLL_SECONDS = 0.01

Progress = Callable[[str], None]

PROJECT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------
# Counting statements and transactions on the app's engines
# ------------------------------------------------------------------------------------------

_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


@dataclass
class SqlCounter:
    """Statements and transactions on one or more engines, from SQLAlchemy's events."""

    statements: Counter[str] = field(default_factory=Counter)
    begins: Counter[str] = field(default_factory=Counter)
    commits: int = 0
    rollbacks: int = 0
    pool_resets: int = 0
    _hooks: list[tuple[Any, str, Callable[..., None]]] = field(default_factory=list)

    def attach(self, engine: AsyncEngine, role: str) -> None:
        sync = engine.sync_engine

        def on_execute(**kw: Any) -> None:
            verb = kw["statement"].lstrip().split(None, 1)[0].upper() if kw["statement"] else ""
            self.statements[verb] += 1

        def on_begin(**_kw: Any) -> None:
            self.begins[role] += 1

        def on_commit(**_kw: Any) -> None:
            self.commits += 1

        def on_rollback(**_kw: Any) -> None:
            self.rollbacks += 1

        def on_reset(**_kw: Any) -> None:
            self.pool_resets += 1

        for target, name, fn in (
            (sync, "before_cursor_execute", on_execute),
            (sync, "begin", on_begin),
            (sync, "commit", on_commit),
            (sync, "rollback", on_rollback),
            (sync.pool, "reset", on_reset),
        ):
            event.listen(target, name, fn, named=True)
            self._hooks.append((target, name, fn))

    def detach(self) -> None:
        for target, name, fn in self._hooks:
            with contextlib.suppress(Exception):
                event.remove(target, name, fn)
        self._hooks.clear()

    def per_update(self, updates: int) -> dict[str, Any]:
        n = max(updates, 1)
        queries = {k: v for k, v in self.statements.items() if k not in _CONTROL}
        return {
            "statements_per_update": sum(queries.values()) / n,
            "selects_per_update": queries.get("SELECT", 0) / n,
            "inserts_per_update": queries.get("INSERT", 0) / n,
            "update_statements_per_update": queries.get("UPDATE", 0) / n,
            "deletes_per_update": queries.get("DELETE", 0) / n,
            "transactions_per_update": sum(self.begins.values()) / n,
            "write_transactions_per_update": self.begins.get("writer", 0) / n,
            "read_transactions_per_update": self.begins.get("reader", 0) / n,
            "commits_per_update": self.commits / n,
            "rollbacks_per_update": self.rollbacks / n,
            "pool_resets_per_update": self.pool_resets / n,
            "statements_total": sum(queries.values()),
            "statements_by_verb": dict(sorted(self.statements.items())),
        }


# ------------------------------------------------------------------------------------------
# The backlog
# ------------------------------------------------------------------------------------------


def resident(index: int) -> int:
    return FIRST_RESIDENT + index


def message_text(index: int) -> str:
    return f"{marker('tg', index)} {SHORT_TEXT}"


def queue_backlog(telegram: FakeTelegram, updates: int) -> None:
    """``updates`` plain messages in GROUP, each from its own resident, queued for getUpdates."""
    telegram.add_chat(GROUP, title="Quartier Ouest")
    for i in range(updates):
        telegram.add_user(resident(i), f"Habitant{i}", last_name="Test")
        telegram.inject_message(GROUP, resident(i), message_text(i))


def backlog_payloads(updates: int) -> list[dict[str, Any]]:
    """The raw updates the fake would hand the bot (the fake is never started)."""
    fake = FakeTelegram(limits=TelegramLimits(enforce=False))
    queue_backlog(fake, updates)
    return fake.pending_updates


# ------------------------------------------------------------------------------------------
# Raw sqlite3, the same rows
# ------------------------------------------------------------------------------------------


def raw_sqlite3(workdir: Path, payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``inbox_update`` row per update with plain sqlite3, one commit per row."""
    table = InboxUpdate.__table__  # type: ignore[attr-defined]
    dialect = sqlite_dialect.dialect()
    path = workdir / "raw.db"
    connection = sqlite3.connect(path, isolation_level="DEFERRED")
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute(str(sa.schema.CreateTable(table).compile(dialect=dialect)))
        for index in table.indexes:
            connection.execute(str(sa.schema.CreateIndex(index).compile(dialect=dialect)))
        connection.commit()
        insert = (
            "INSERT INTO inbox_update (platform, update_key, payload, received_at, attempts) "
            "VALUES (?, ?, ?, ?, 0) ON CONFLICT (platform, update_key) DO NOTHING"
        )
        started = time.perf_counter()
        for payload in payloads:
            now = datetime.now(UTC).isoformat(sep=" ")
            connection.execute(
                insert, ("telegram", str(payload["update_id"]), json.dumps(payload), now)
            )
            connection.commit()
        elapsed = time.perf_counter() - started
        (stored,) = connection.execute("SELECT count(*) FROM inbox_update").fetchone()
    finally:
        connection.close()
    return {
        "rows": stored,
        "seconds": elapsed,
        "rows_per_second": len(payloads) / elapsed if elapsed > 0 else math.nan,
        "ms_per_row": elapsed / len(payloads) * 1000 if payloads else math.nan,
    }


# ------------------------------------------------------------------------------------------
# One ingest phase
# ------------------------------------------------------------------------------------------


def _settings_unbridged(telegram: FakeTelegram, database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        telegram_token=SecretStr(telegram.token),
        telegram_api_url=telegram.url,
        channels=[ChannelConfig(platform="telegram", id=str(GROUP), neighbourhood="Ouest")],
        rate_limit_scale=NO_LIMITS_SCALE,
    )


async def _migrate(database_url: str) -> None:
    db = Database(database_url)
    try:
        await db.migrate()
    finally:
        await db.dispose()


async def _handled_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        result = await connection.execute(
            sa.text(
                "SELECT count(*) FROM inbox_update "
                "WHERE platform = 'telegram' AND handled_at IS NOT NULL"
            )
        )
        return int(result.scalar_one())


def _first_poll(telegram: FakeTelegram) -> float | None:
    for request in telegram.requests:
        if request.method.lower() == "getupdates":
            return request.time
    return None


async def run_phase(
    database_url: str,
    *,
    bridged: bool,
    updates: int,
    budget: float,
    profile: cProfile.Profile | None = None,
) -> dict[str, Any]:
    """Queue the backlog, start the app, time until every update is handled (or relayed)."""
    await _migrate(database_url)
    telegram = FakeTelegram(limits=TelegramLimits(enforce=False))
    discord: FakeDiscord | None = None
    if bridged:
        discord = FakeDiscord(guild_id=1000, limits=DiscordLimits(enforce=False))
    assert telegram.clock is time.monotonic, "the fake Telegram must stamp with time.monotonic"
    await telegram.start()
    if discord is not None:
        await discord.start()
    # The benchmark's own completion checks: a separate engine, so they are never counted.
    checker = create_async_engine(database_url, poolclass=sa.pool.NullPool)
    counter = SqlCounter()
    app: App | None = None
    watch = DiscordWatch(discord) if discord is not None else None
    timed_out = False
    result: dict[str, Any] = {"updates": updates}
    try:
        queue_backlog(telegram, updates)
        if discord is not None:
            discord.add_channel(GENERAL, "quartier-ouest")
            settings = bridge_settings(
                telegram, discord, database_url, rate_limit_scale=NO_LIMITS_SCALE
            )
            app, _discord_adapter = bridge_app(settings)
        else:
            settings = _settings_unbridged(telegram, database_url)
            db = Database(settings.database_url)
            clock = SystemClock()
            adapters = [TelegramAdapter(settings, db, clock, poll_timeout=1)]
            app = build(settings, db=db, clock=clock, adapters=adapters, with_scheduler=False)
        counter.attach(app.db.writer, "writer")
        if app.db.reader is not app.db.writer:
            counter.attach(app.db.reader, "reader")

        if profile is not None:
            profile.enable()
        started = time.monotonic()
        deadline = started + budget
        async with asyncio.timeout(min(60.0, budget)):
            await app.start()
        ready = time.monotonic()

        done: float | None = None
        handled = 0
        if watch is not None:
            assert discord is not None

            def all_relayed() -> bool:
                watch.scan()
                return len(watch.first_seen) >= updates

            with contextlib.suppress(TimeoutError):
                await discord.wait_for(all_relayed, timeout=max(0.1, deadline - time.monotonic()))
            if len(watch.first_seen) >= updates:
                done = time.monotonic()
        else:
            last_check = -math.inf
            while True:
                now = time.monotonic()
                # The dispatcher counts every event it handled: a cheap hint that the end is
                # near; the database says for sure (and, once a second, in any case).
                near = app.dispatcher.handled_count >= updates
                if (near and now - last_check >= 0.02) or now - last_check >= 1.0:
                    last_check = now
                    handled = await _handled_rows(checker)
                    if handled >= updates:
                        done = now
                        break
                if now > deadline:
                    break
                await asyncio.sleep(POLL_SECONDS)
        if profile is not None:
            profile.disable()
        end = done if done is not None else time.monotonic()
        timed_out = done is None
        first_poll = _first_poll(telegram)
        begin = first_poll if first_poll is not None else started
        # Copy the counts now: what the app does after the end is not the phase's.
        counts = counter.per_update(updates)
        counter.detach()
        if watch is not None:
            watch.scan()
            completed = sum(1 for i in range(updates) if watch.counts[marker("tg", i)] > 0)
            result["duplicated"] = sum(
                max(0, watch.counts[marker("tg", i)] - 1) for i in range(updates)
            )
            result["webhook_posts"] = len(watch.posts)
            result["discord_429"] = watch.too_many_requests
            result["discord_errors"] = watch.other_errors
            result["relayed"] = completed
        else:
            completed = handled if done is None else updates
            result["handled"] = completed
        seconds = end - begin
        rate = completed / seconds if seconds > 0 else math.nan
        result.update(
            {
                "seconds": seconds,
                "from_start_seconds": end - started,
                "start_seconds": ready - started,
                "first_poll_after_seconds": begin - started,
                "ms_per_update": seconds / completed * 1000 if completed else math.nan,
                "timed_out": timed_out,
                **counts,
            }
        )
        result["messages_per_second" if bridged else "updates_per_second"] = rate
        if watch is not None:
            # Every message relayed is also stored and handled: the same figure, named alike.
            result["updates_per_second"] = rate
    finally:
        counter.detach()
        if profile is not None:
            profile.disable()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(30):
                if app is not None:
                    await app.stop()
        with contextlib.suppress(Exception):
            await checker.dispose()
        if discord is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(15):
                    await discord.stop()
        async with asyncio.timeout(15):
            await telegram.stop()
    return result


# ------------------------------------------------------------------------------------------
# PostgreSQL
# ------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def postgres_server() -> AsyncIterator[Any]:
    from tests.pgserver import start_server

    server = await asyncio.to_thread(start_server)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


_database_numbers = itertools.count(1)


async def postgres_database(server: Any) -> str:
    import asyncpg

    name = f"forum_bench_{os.getpid()}_{next(_database_numbers)}"
    connection = await asyncpg.connect(server.admin_dsn)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return str(server.url(name))


# ------------------------------------------------------------------------------------------
# Start-up and idle memory of ``forum-habitant run``
# ------------------------------------------------------------------------------------------


def _command() -> list[str]:
    script = Path(sys.executable).parent / "forum-habitant"
    if script.exists():
        return [str(script), "run"]
    return [sys.executable, "-m", "bot", "run"]


def _rss_mib(pid: int) -> dict[str, float]:
    found: dict[str, float] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0]) / 1024  # kB
    return found


def _prepare_startup(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "forum.toml").write_text(
        f'[[bridges]]\ntelegram = "{GROUP}"\ndiscord = "{GENERAL}"\n', encoding="utf-8"
    )


def _log_says(log: Path, text: str) -> bool:
    return text in log.read_text(errors="replace")


async def startup(workdir: Path, *, idle: float = 2.0, budget: float = 60.0) -> dict[str, Any]:
    """``forum-habitant run`` against both fakes: seconds to ready, then idle VmRSS."""
    _prepare_startup(workdir)
    database_url = f"sqlite+aiosqlite:///{workdir / 'forum.db'}"
    await _migrate(database_url)
    telegram = FakeTelegram()
    discord = FakeDiscord(guild_id=1000)
    await telegram.start()
    await discord.start()
    telegram.add_chat(GROUP, title="Quartier Ouest")
    discord.add_channel(GENERAL, "quartier-ouest")
    environment = {
        **{k: v for k, v in os.environ.items() if k not in PLATFORM_ENV},
        "TELEGRAM_TOKEN": telegram.token,
        "TELEGRAM_API_URL": telegram.url,
        "DISCORD_TOKEN": "TEST.discord.token",
        "DISCORD_API_URL": discord.api_url,
        "DISCORD_GUILD_IDS": str(discord.guild_id),
        "DATABASE_URL": database_url,
        "FORUM_CONFIG": str(workdir / "forum.toml"),
        "PTB_TIMEDELTA": "true",
        # The code this benchmark imports, whatever the installed package points at.
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(PROJECT), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    log = workdir / "run.log"
    command = _command()
    process: asyncio.subprocess.Process | None = None
    try:
        with log.open("wb") as stderr:
            launched = time.monotonic()
            process = await asyncio.create_subprocess_exec(
                *command,
                env=environment,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        logged: float | None = None
        polled: float | None = None
        gateway: float | None = None
        deadline = launched + budget
        while time.monotonic() < deadline and process.returncode is None:
            if logged is None and _log_says(log, "platform discord started"):
                logged = time.monotonic()
            if polled is None:
                polled = _first_poll(telegram)
            if gateway is None:
                ready_events = [
                    e.time
                    for e in discord.gateway_log
                    if e.kind == "dispatch" and e.detail.get("t") == "READY"
                ]
                gateway = ready_events[0] if ready_events else None
            if logged is not None and polled is not None and gateway is not None:
                break
            await asyncio.sleep(POLL_SECONDS)
        if logged is None or polled is None or gateway is None:
            tail = log.read_text(errors="replace")[-500:]
            raise RuntimeError(
                f"forum-habitant run was not ready within {budget:g} s "
                f"(exit status {process.returncode}): {tail}"
            )
        ready = max(logged, polled, gateway)
        await asyncio.sleep(idle)
        memory = _rss_mib(process.pid)
        return {
            "startup_seconds": ready - launched,
            "startup.log_line_seconds": logged - launched,
            "startup.first_getupdates_seconds": polled - launched,
            "startup.gateway_ready_seconds": gateway - launched,
            "idle_rss_mib": memory.get("VmRSS", math.nan),
            "idle_peak_rss_mib": memory.get("VmHWM", math.nan),
            "startup.command": " ".join([Path(command[0]).name, *command[1:]]),
        }
    finally:
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        with contextlib.suppress(Exception):
            await discord.stop()
        with contextlib.suppress(Exception):
            await telegram.stop()


# ------------------------------------------------------------------------------------------
# All of it
# ------------------------------------------------------------------------------------------


def _error(exc: BaseException) -> str:
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        where = f" at {Path(frame.filename).name}:{frame.lineno}"
    return f"{type(exc).__name__}: {str(exc)[:300]}{where}"


def _flatten(prefix: str, values: dict[str, Any], into: dict[str, Any]) -> None:
    for key, value in values.items():
        into[f"{prefix}.{key}"] = value


@contextlib.contextmanager
def _quiet_logs() -> Iterator[LogCounter]:
    counter = LogCounter()
    root = logging.getLogger()
    root.addHandler(counter)
    previous = root.level
    root.setLevel(logging.WARNING)
    try:
        yield counter
    finally:
        root.removeHandler(counter)
        root.setLevel(previous)


def profile_summary(profile: cProfile.Profile, entries: int = 15) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.strip_dirs().sort_stats("cumulative").print_stats(entries)
    return out.getvalue()


async def run(
    *,
    updates: int = DEFAULT_UPDATES,
    backends: tuple[str, ...] = ("sqlite", "postgres"),
    bridged: bool = True,
    with_startup: bool = True,
    phase_budget: float = DEFAULT_PHASE_BUDGET,
    profile_path: Path | None = None,
    progress: Progress = lambda line: None,
) -> dict[str, Any]:
    """Every ingest phase; flat ``ingest.*`` results (goals are reported, never asserted)."""
    results: dict[str, Any] = {"ingest.updates": updates}
    started = time.monotonic()
    modes = [("unbridged", False), *([("bridged", True)] if bridged else [])]
    with (
        _quiet_logs() as logs,
        bench_environment(),
        tempfile.TemporaryDirectory(prefix="fh-ingest-") as tmp,
    ):
        workdir = Path(tmp)
        progress(f"ingest: raw sqlite3, {updates} rows one commit each ...")
        raw = await asyncio.to_thread(raw_sqlite3, workdir, backlog_payloads(updates))
        _flatten("ingest.raw_sqlite3", raw, results)

        if with_startup:
            progress("ingest: start-up and idle memory of forum-habitant run ...")
            try:
                for key, value in (await startup(workdir / "startup")).items():
                    results[f"ingest.{key}"] = value
            except Exception as exc:
                results["ingest.startup_seconds"] = None
                results["ingest.idle_rss_mib"] = None
                results["ingest.startup.error"] = _error(exc)

        for backend in backends:
            server_context: contextlib.AbstractAsyncContextManager[Any]
            if backend == "postgres":
                server_context = postgres_server()
            else:
                server_context = contextlib.nullcontext()
            try:
                async with server_context as server:
                    for mode, is_bridged in modes:
                        label = f"ingest.{backend}.{mode}"
                        progress(f"{label}: {updates} queued updates ...")
                        if backend == "postgres":
                            url = await postgres_database(server)
                        else:
                            url = f"sqlite+aiosqlite:///{workdir / f'{mode}.db'}"
                        profile = None
                        if profile_path is not None and backend == "sqlite" and not is_bridged:
                            profile = cProfile.Profile()
                        try:
                            phase = await run_phase(
                                url,
                                bridged=is_bridged,
                                updates=updates,
                                budget=phase_budget,
                                profile=profile,
                            )
                        except Exception as exc:
                            results[f"{label}.error"] = _error(exc)
                            results[f"{label}.updates_per_second"] = None
                            continue
                        _flatten(label, phase, results)
                        if profile is not None and profile_path is not None:
                            profile.dump_stats(profile_path)
                            results["ingest.profile"] = str(profile_path)
                            progress(profile_summary(profile))
            except Exception as exc:
                # The server could not start (or stop): its figures are null, with the reason.
                results[f"ingest.{backend}.error"] = _error(exc)
                for mode, _ in modes:
                    label = f"ingest.{backend}.{mode}"
                    results.setdefault(f"{label}.updates_per_second", None)
                progress(f"ingest.{backend}: not measured ({results[f'ingest.{backend}.error']})")

    raw_rate = results.get("ingest.raw_sqlite3.rows_per_second")
    for backend in backends:
        for mode, _ in modes:
            rate = results.get(f"ingest.{backend}.{mode}.updates_per_second")
            if isinstance(rate, float) and isinstance(raw_rate, float) and raw_rate > 0:
                results[f"ingest.{backend}.{mode}.ratio_to_raw"] = rate / raw_rate
    for key, count in sorted(logs.counts.items()):
        results[f"ingest.log.{key}"] = count
        results[f"ingest.log.{key}.first"] = logs.first.get(key, "")
    results["ingest.no_limits_scale"] = NO_LIMITS_SCALE
    results["ingest.wall_seconds"] = time.monotonic() - started
    return results


def _fmt(value: Any, spec: str = ".0f") -> str:
    if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
        return format(value, spec)
    return "n/a"


def summary(r: dict[str, Any]) -> list[str]:
    """Short lines for the console."""
    if "ingest.updates" not in r:
        return []
    lines = [f"ingest: {r['ingest.updates']} queued plain messages from distinct residents"]
    raw = r.get("ingest.raw_sqlite3.rows_per_second")
    lines.append(f"  raw sqlite3, one commit per row: {_fmt(raw)} rows/s")
    for backend in ("sqlite", "postgres"):
        if f"ingest.{backend}.error" in r:
            lines.append(f"  {backend}: not measured ({r[f'ingest.{backend}.error']})")
            continue
        for mode in ("unbridged", "bridged"):
            p = f"ingest.{backend}.{mode}."
            if p + "error" in r:
                lines.append(f"  {backend} {mode}: FAILED ({r[p + 'error']})")
                continue
            if p + "seconds" not in r:
                continue
            unit = "messages/s relayed" if mode == "bridged" else "updates/s handled"
            rate = r.get(p + ("messages_per_second" if mode == "bridged" else "updates_per_second"))
            ratio = r.get(p + "ratio_to_raw")
            lines.append(
                f"  {backend:<8} {mode:<9} {_fmt(rate, '7.1f')} {unit}"
                + (" (TIMED OUT, partial)" if r.get(p + "timed_out") else "")
                + f", {_fmt(r.get(p + 'ms_per_update'), '.2f')} ms each"
                + (f", {_fmt(ratio, '.4f')} of raw" if ratio is not None else "")
                + f"; {_fmt(r.get(p + 'statements_per_update'), '.1f')} statements and "
                f"{_fmt(r.get(p + 'transactions_per_update'), '.2f')} transactions per update"
                + (
                    f"; duplicated {r.get(p + 'duplicated')}"
                    if mode == "bridged" and r.get(p + "duplicated")
                    else ""
                )
            )
    if r.get("ingest.startup.error"):
        lines.append(f"  start-up: not measured ({r['ingest.startup.error']})")
    elif "ingest.startup_seconds" in r:
        lines.append(
            f"  forum-habitant run: ready in {_fmt(r.get('ingest.startup_seconds'), '.2f')} s, "
            f"idle RSS {_fmt(r.get('ingest.idle_rss_mib'), '.0f')} MiB"
        )
    logged = {
        k.removeprefix("ingest.log."): v
        for k, v in r.items()
        if k.startswith("ingest.log.") and not k.endswith(".first")
    }
    if logged:
        lines.append(
            "  ingest log records (WARNING and above): "
            + ", ".join(f"{k}: {v}" for k, v in sorted(logged.items()))
        )
    return lines


def failures(r: dict[str, Any]) -> list[str]:
    """What makes the run fail (not speed): a doubled relay, a phase that could not run."""
    found: list[str] = []
    for key, value in r.items():
        if not key.startswith("ingest."):
            continue
        if key.endswith(".duplicated") and value:
            found.append(f"{key} = {value}")
        if re.fullmatch(r"ingest\.sqlite\.\w+\.error", key):
            found.append(f"{key}: {value}")
    return found
