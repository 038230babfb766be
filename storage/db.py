"""The database: one async engine (SQLite with WAL by default, PostgreSQL via asyncpg).

SQLite allows one writer at a time. A transaction that starts as a reader and later writes can
fail at once with "database is locked" whatever the busy timeout, so every write transaction
here begins with ``BEGIN IMMEDIATE`` (it takes the write lock up front and waits for it), and
writers in this process queue on an asyncio lock instead of spinning inside SQLite.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, ExceptionContext, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import ORMExecuteState, Session
from sqlmodel import SQLModel

logger = logging.getLogger(__name__)

T = TypeVar("T")

BUSY_TIMEOUT_MS = 30_000


# A database error must not put what residents wrote into the log: SQLAlchemy's exception
# text lists the statement's parameters (a message's text among them) unless told to hide
# them. Every engine is made with this.
HIDE_PARAMETERS = True

# What replaces a PostgreSQL error's DETAIL (see _hide_quoted_rows).
HIDDEN_DETAIL = "[hidden: it may quote stored rows]"


def _hide_quoted_rows(context: ExceptionContext) -> None:
    """PostgreSQL explains some refusals by quoting the row ("Failing row contains (…)",
    for a missing value or a failed check): asyncpg keeps that DETAIL on its error, which the
    translated error chains and every traceback prints. The statement and the error's own
    message still say what failed; the rows' contents stay out of the log."""
    error: BaseException | None = context.original_exception
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if type(error).__module__.startswith("asyncpg") and getattr(error, "detail", None):
            error.detail = HIDDEN_DETAIL  # type: ignore[attr-defined]
        error = error.__cause__ or error.__context__


def _sqlite_engine(url: str, *, begin: str, pool_size: int) -> AsyncEngine:
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000},
        hide_parameters=HIDE_PARAMETERS,
    )
    _set_up_sqlite(engine.sync_engine, begin)
    return engine


def _sqlite_thread_engine(url: str, *, begin: str) -> Engine:
    """A plain pysqlite engine, used only from the database thread (see Database.write_now)."""
    engine = sa.create_engine(
        make_url(url).set(drivername="sqlite+pysqlite"),
        pool_size=1,
        max_overflow=0,
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        hide_parameters=HIDE_PARAMETERS,
    )
    _set_up_sqlite(engine, begin)
    return engine


def _set_up_sqlite(engine: Engine, begin: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event decide how transactions start (pysqlite would
        # otherwise emit a deferred BEGIN itself, too late to ask for the write lock).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)


class Database:
    """Owns the engines; hands out read sessions and serialised write transactions."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        self._write_lock = asyncio.Lock()
        self._thread: ThreadPoolExecutor | None = None
        self._thread_writer: Engine | None = None
        self._thread_reader: Engine | None = None
        _listen_for_later_rows()
        if self.dialect == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.writer = _sqlite_engine(url, begin="BEGIN IMMEDIATE", pool_size=1)
            self.reader = _sqlite_engine(url, begin="BEGIN", pool_size=5)
            if database and database != ":memory:":
                # Short transactions on the hot path (the outbox's bookkeeping) run whole in
                # one thread of their own on plain sqlite3: one hand-off per transaction
                # instead of several per statement through aiosqlite.
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="forum-db")
                self._thread_writer = _sqlite_thread_engine(url, begin="BEGIN IMMEDIATE")
                self._thread_reader = _sqlite_thread_engine(url, begin="BEGIN")
        elif self.dialect == "postgresql":
            self.writer = create_async_engine(
                url, pool_pre_ping=True, pool_size=10, hide_parameters=HIDE_PARAMETERS
            )
            event.listen(self.writer.sync_engine, "handle_error", _hide_quoted_rows)
            self.reader = self.writer
        else:
            raise ValueError(f"unsupported database {self.dialect!r}")

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A transaction that commits when the block ends and rolls back if it raises."""
        if self.is_sqlite:
            async with self._write_lock, self._session(self.writer) as session:
                yield session
        else:
            async with self._session(self.writer) as session:
                yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only session (its transaction is rolled back at the end)."""
        async with AsyncSession(self.reader, expire_on_commit=False) as session:
            yield session

    @asynccontextmanager
    async def _session(self, engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
        async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
            yield session

    async def write_now(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one write transaction, as plain synchronous code.

        For short bookkeeping on the hot path: on SQLite the whole transaction runs in the
        database thread (one hand-off, not several per statement); on PostgreSQL it runs
        through the async engine like any other. Writers stay serialised with ``write()``.
        """
        if self._thread is None or self._thread_writer is None:
            async with self.write() as session:
                return await session.run_sync(work)
        engine = self._thread_writer
        async with self._write_lock:
            running = asyncio.get_running_loop().run_in_executor(
                self._thread, _in_transaction, engine, work
            )
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                # The transaction goes on in its thread: the lock is held until it ends, so
                # that no writer of this process queues behind it inside SQLite.
                await asyncio.wait([running])
                raise

    async def read_now(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one read-only transaction, as plain synchronous code."""
        if self._thread is None or self._thread_reader is None:
            async with self.read() as session:
                return await session.run_sync(work)
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, _in_transaction, self._thread_reader, work, False
        )

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        from storage.migrate import upgrade

        async with self._write_lock, self.writer.connect() as connection:
            await connection.run_sync(upgrade)
            await connection.commit()
        logger.info("database schema is up to date", extra={"dialect": self.dialect})

    async def create_all(self) -> None:
        """Create the tables straight from the models (used to compare with migrations)."""
        async with self.writer.begin() as connection:
            await connection.run_sync(SQLModel.metadata.create_all)

    async def dispose(self) -> None:
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()
        if self._thread is not None:
            engines = [e for e in (self._thread_writer, self._thread_reader) if e is not None]
            loop = asyncio.get_running_loop()
            for engine in engines:
                await loop.run_in_executor(self._thread, engine.dispose)
            self._thread.shutdown(wait=True)
            self._thread = None


def _in_transaction(engine: Engine, work: Callable[[Session], T], commit: bool = True) -> T:
    with Session(engine, expire_on_commit=False) as session:
        if not commit:
            # Closing the session rolls its read transaction back.
            return work(session)
        with session.begin():
            return work(session)


async def insert_ignore(
    session: AsyncSession,
    table: type[SQLModel],
    rows: Iterable[Mapping[str, Any]],
    conflict: Iterable[str],
) -> Any:
    """An INSERT that silently skips rows violating the unique key ``conflict``.

    Both SQLite and PostgreSQL speak ``ON CONFLICT DO NOTHING``; this picks the dialect's
    construct so callers stay portable. Several rows go as executemany parameters of one
    statement, compiled once and cached (a multi-row VALUES is compiled afresh every time);
    its rowcount is then not to be relied on.
    """
    rows = [dict(row) for row in rows]
    statement = _dialect_insert(session, table).on_conflict_do_nothing(
        index_elements=list(conflict)
    )
    if not rows:
        return None
    if len(rows) == 1:
        return await session.execute(statement.values(rows[0]))
    return await session.execute(statement, rows)


# session.info key of the rows insert_later() keeps: {(table, conflict columns): [rows]}
_LATER = "forum_insert_later"


def insert_later(
    session: AsyncSession | Session,
    table: type[SQLModel],
    row: Mapping[str, Any],
    conflict: Iterable[str],
) -> None:
    """``insert_ignore`` of one row, sent with its like as one statement, as late as allowed.

    The rows wait in the session until its next statement or its commit, whichever comes
    first, and go out as one executemany per table: a batch of a hundred messages costs one
    INSERT instead of a hundred round trips, and any read in between still sees them.
    """
    waiting = session.info.setdefault(_LATER, {})
    waiting.setdefault((table, tuple(conflict)), []).append(dict(row))


def _send_later_rows(session: Session) -> None:
    waiting = session.info.pop(_LATER, None)
    if not waiting:
        return
    for (table, conflict), rows in waiting.items():
        statement = _insert_for(session.get_bind().dialect.name, table)
        # One statement with the rows as executemany parameters: compiled once and cached.
        session.execute(statement.on_conflict_do_nothing(index_elements=list(conflict)), rows)


def _before_statement(state: ORMExecuteState) -> None:
    _send_later_rows(state.session)


def _forget_later_rows(session: Session, *_args: Any) -> None:
    session.info.pop(_LATER, None)


def _listen_for_later_rows() -> None:
    """Send insert_later() rows before any statement and at commit; drop them on rollback."""
    for name, listener in (
        ("do_orm_execute", _before_statement),
        ("before_commit", _send_later_rows),
        ("after_soft_rollback", _forget_later_rows),
    ):
        if not event.contains(Session, name, listener):
            event.listen(Session, name, listener)


def rowcount(result: object) -> int:
    """How many rows an UPDATE, DELETE or single-row INSERT touched (0 when unknown)."""
    return int(getattr(result, "rowcount", 0) or 0)


def upsert(
    session: AsyncSession | Session,
    table: type[SQLModel],
    row: Mapping[str, Any],
    conflict: Iterable[str],
    update: Iterable[str],
) -> Any:
    """INSERT, or UPDATE the ``update`` columns when the unique key ``conflict`` exists.

    One statement, so concurrent writers on PostgreSQL cannot both take the INSERT branch.
    On an ``AsyncSession`` the result is awaited; a plain ``Session`` (the outbox's
    bookkeeping in the database's own thread) executes it at once.
    """
    statement = _dialect_insert(session, table).values(dict(row))
    statement = statement.on_conflict_do_update(
        index_elements=list(conflict),
        set_={name: getattr(statement.excluded, name) for name in update},
    )
    return session.execute(statement)


def _dialect_insert(session: AsyncSession | Session, table: type[SQLModel]) -> Any:
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    return _insert_for(dialect, table)


def _insert_for(dialect: str, table: type[SQLModel]) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table.__table__)  # type: ignore[attr-defined]
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table.__table__)  # type: ignore[attr-defined]


async def ping(db: Database) -> bool:
    """True when the database answers (used by the health check)."""
    async with db.read() as session:
        return (await session.execute(sa.text("SELECT 1"))).scalar_one() == 1
