"""Shared fixtures: databases on SQLite and on the run's own PostgreSQL server, a forum."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.config import Settings
from storage.db import Database
from tests.harness import PLATFORM_ENV
from tests.pgserver import PostgresServer, find_bindir, start_server

_db_numbers = itertools.count(1)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own tokens or database must never leak into a test."""
    for name in PLATFORM_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    if find_bindir() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL binaries are missing in CI: `make test` should install them")
        pytest.skip("PostgreSQL server binaries not installed here; `make test` installs them")
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


async def _postgres_database(server: PostgresServer) -> str:
    import asyncpg

    name = f"forum_test_{os.getpid()}_{next(_db_numbers)}"
    connection = await asyncpg.connect(server.admin_dsn)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return server.url(name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'forum.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return await _postgres_database(server)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A migrated database on each backend."""
    database = Database(database_url)
    await database.migrate()
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'forum.db'}"


@pytest.fixture
def settings(sqlite_url: str) -> Settings:
    return Settings(database_url=sqlite_url)


@pytest.fixture
def ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    """python-telegram-bot warns on integer time periods unless told to use timedeltas; the
    adapter sets this too, but a test may build PTB objects before the adapter exists."""
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


@pytest.fixture
def fast_discord_reconnect(monkeypatch: pytest.MonkeyPatch) -> None:
    """discord.py backs off 1-2 s and more between reconnection attempts; against the fake
    the tests reconnect at once."""
    from discord import client as discord_client
    from discord.backoff import ExponentialBackoff

    monkeypatch.setattr(
        discord_client,
        "ExponentialBackoff",
        lambda: ExponentialBackoff(base=0.05),  # type: ignore[arg-type]
    )
