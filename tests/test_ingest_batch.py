"""A backlog of plain messages is handled by pages, with set-based statements.

The promises: every update once, in its place in the order; one bad update isolated and
retried alone while the others are kept; few statements per page; nothing a rollback erased
is remembered.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlmodel import col, select

from bot import codec
from bot.config import Settings
from bot.dispatcher import Tables
from bot.events import Action, Author, ChatRef, CommandReceived, Event, MessageReceived
from bot.handling import Command, Context
from bot.inbox import store_updates
from bot.richtext import FormattedText
from handlers import help as help_
from handlers import messages
from storage.db import Database
from storage.models import Account, Channel, InboxUpdate, Message, Person
from tests.forum import Forum

NOW = datetime(2026, 11, 25, 18, 30, tzinfo=UTC)
CHAT = ChatRef("console", "tg:ouest")


def resident(n: int, name: str | None = None) -> Author:
    return Author(platform="console", user_id=f"r{n}", display_name=name or f"Habitant {n}")


def said(n: int, text: str, author: Author) -> MessageReceived:
    return MessageReceived(
        chat=CHAT,
        author=author,
        at=NOW,
        message_id=str(n),
        content=FormattedText.plain(text),
    )


class Recorder:
    """Handlers that note what they saw, in order, and fail on "boom" while told to."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.failing = True
        self.fired = 0

    async def on_message(self, ctx: Context, event: MessageReceived) -> Sequence[Action]:
        """Record a plain message; fail on "boom"."""
        if event.content.text == "boom" and self.failing:
            self.fired += 1
            raise RuntimeError("boom")
        self.seen.append(event.content.text)
        return []

    async def on_note(self, ctx: Context, event: CommandReceived) -> Sequence[Action]:
        """Record a /note command."""
        self.seen.append(f"/note {event.args}")
        return []

    def tables(self) -> Tables:
        return Tables(
            commands={"note": Command(self.on_note, "note")},
            unknown_command=help_.unknown_command,
            events={MessageReceived: (messages.store_message, self.on_message)},
        )


async def queue(db: Database, events: Sequence[Event], first: int = 1) -> None:
    async with db.write() as session:
        await store_updates(
            session,
            "console",
            [(f"u{first + i}", codec.encode(e)) for i, e in enumerate(events)],
            NOW,
        )


async def handle_backlog(forum: Forum) -> bool:
    return await forum.app.dispatcher.runners["console"].handle_pending()


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement[:60].upper())

    engine = db.writer.sync_engine
    sa_event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        sa_event.remove(engine, "before_cursor_execute", count)


async def inbox_rows(db: Database) -> list[InboxUpdate]:
    async with db.read() as session:
        query = select(InboxUpdate).where(InboxUpdate.platform == "console")
        return list((await session.execute(query.order_by(col(InboxUpdate.id)))).scalars())


async def stored_texts(db: Database) -> list[str]:
    async with db.read() as session:
        rows = await session.execute(select(Message.text).order_by(col(Message.id)))
        return list(rows.scalars())


async def test_a_page_of_messages_costs_a_few_statements_and_stores_each_once(
    database_url: str,
) -> None:
    recorder = Recorder()
    settings = Settings(database_url=database_url)
    async with Forum(settings, tables=recorder.tables()) as forum:
        # One page's worth: the dispatcher's bound on plain messages per transaction.
        page = forum.app.dispatcher.BATCH
        events = [said(n, f"message {n}", resident(n)) for n in range(1, page + 1)]
        await queue(forum.db, events)
        with statements(forum.db) as seen:
            assert await handle_backlog(forum)
        # Residents never seen before: a handful of statements for the page, not 6 each
        # (on PostgreSQL the runner's two reads of the inbox go through the same engine).
        queries = [s for s in seen if not s.startswith(("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA"))]
        assert len(queries) <= 14, "\n".join(queries)
        # Handled again (a redelivery of the same updates, a second round): nothing new.
        await queue(forum.db, events)
        assert await handle_backlog(forum)
        rows = await inbox_rows(forum.db)
        async with forum.db.read() as session:
            people = (await session.execute(sa.select(sa.func.count()).select_from(Person))).one()
        texts = await stored_texts(forum.db)
    assert recorder.seen == [f"message {n}" for n in range(1, page + 1)]
    assert texts == [f"message {n}" for n in range(1, page + 1)]
    assert [(r.attempts, r.handled_at is not None) for r in rows] == [(1, True)] * page
    assert people[0] == page


async def test_one_bad_update_is_retried_alone_and_the_others_are_kept(
    database_url: str,
) -> None:
    recorder = Recorder()
    settings = Settings(database_url=database_url)
    async with Forum(settings, tables=recorder.tables()) as forum:
        texts = ["un", "deux", "trois", "boom", "cinq", "six"]
        await queue(forum.db, [said(n, t, resident(n)) for n, t in enumerate(texts, 1)])
        assert not await handle_backlog(forum)
        # Tried once within the batch, once alone.
        assert recorder.fired == 2
        after_fault = await inbox_rows(forum.db)
        kept = await stored_texts(forum.db)
        recorder.failing = False
        assert await handle_backlog(forum)
        after_retry = await inbox_rows(forum.db)
        async with forum.db.read() as session:
            channels = (await session.execute(select(Channel.id))).scalars().all()
            channel_of = set((await session.execute(select(Message.channel_id))).scalars())
        final = await stored_texts(forum.db)
    # The batch was rolled back: the channel it created is not remembered, so the messages
    # handled alone point at a channel that exists.
    assert channel_of == set(channels) and len(channels) == 1
    assert kept == ["un", "deux", "trois", "cinq", "six"]
    assert [(r.attempts, r.handled_at is not None) for r in after_fault] == [
        (1, True),
        (1, True),
        (1, True),
        (1, False),
        (1, True),
        (1, True),
    ]
    assert "RuntimeError: boom" in (after_fault[3].last_error or "")
    assert after_retry[3].handled_at is not None and after_retry[3].attempts == 2
    assert sorted(final) == sorted(texts)
    # Handlers ran again for the messages before "boom": the batch's writes were rolled back,
    # and only what was committed counts (each message stored once, above).
    assert recorder.seen == ["un", "deux", "trois"] * 2 + ["cinq", "six", "boom"]


async def test_a_command_in_a_page_is_handled_in_its_place(settings: Settings) -> None:
    recorder = Recorder()
    marie = resident(1, "Marie")
    async with Forum(settings, tables=recorder.tables()) as forum:
        note = CommandReceived(
            chat=CHAT, author=marie, at=NOW, message_id="3", name="note", args="ici"
        )
        await queue(
            forum.db,
            [
                said(1, "avant", marie),
                said(2, "encore avant", resident(2)),
                note,
                said(4, "après", marie),
            ],
        )
        assert await handle_backlog(forum)
    assert recorder.seen == ["avant", "encore avant", "/note ici", "après"]


async def test_a_renamed_resident_keeps_one_person_and_the_newest_name(
    database_url: str,
) -> None:
    recorder = Recorder()
    settings = Settings(database_url=database_url)
    async with Forum(settings, tables=recorder.tables()) as forum:
        await queue(
            forum.db,
            [
                said(1, "a", resident(1, "Marie")),
                said(2, "b", resident(2)),
                said(3, "c", resident(1, "Marie D.")),
            ],
        )
        assert await handle_backlog(forum)
        # A later page, the name changed again: the remembered account is not current.
        await queue(
            forum.db, [said(4, "d", resident(1, "Marie Dupont")), said(5, "e", resident(2))], 4
        )
        assert await handle_backlog(forum)
        async with forum.db.read() as session:
            accounts = (
                (await session.execute(select(Account).where(Account.platform_user_id == "r1")))
                .scalars()
                .all()
            )
            authors = set(
                (
                    await session.execute(
                        select(Message.account_id)
                        .join(Account)
                        .where(Account.platform_user_id == "r1")
                    )
                ).scalars()
            )
    assert [a.display_name for a in accounts] == ["Marie Dupont"]
    assert authors == {accounts[0].id}


async def test_last_seen_is_brought_up_to_date_by_a_later_page(settings: Settings) -> None:
    recorder = Recorder()
    async with Forum(settings, tables=recorder.tables()) as forum:
        await queue(forum.db, [said(1, "a", resident(1)), said(2, "b", resident(2))])
        assert await handle_backlog(forum)
        forum.clock.advance(timedelta(hours=2))
        await queue(forum.db, [said(3, "c", resident(1)), said(4, "d", resident(3))], 3)
        assert await handle_backlog(forum)
        async with forum.db.read() as session:
            seen = dict(
                (
                    await session.execute(select(Account.platform_user_id, Account.last_seen_at))
                ).all()
            )
    later = forum.clock.now()
    assert seen == {"r1": later, "r2": later - timedelta(hours=2), "r3": later}


async def test_a_staff_member_renamed_in_a_page_is_protected_at_once(sqlite_url: str) -> None:
    from bot.config import RolesConfig

    settings = Settings(database_url=sqlite_url, roles=RolesConfig(moderators=["console:r1"]))
    async with Forum(settings) as forum:
        await queue(
            forum.db,
            [
                said(1, "bonjour", resident(1, "Lea Martin")),
                said(2, "salut", resident(2, "Paulette Duval")),
            ],
        )
        assert await handle_backlog(forum)
        await forum.settle()
        before = [p.as_name for p in forum.console.state.posted]
        # In one page: the moderator takes a new name, and a resident already wears it.
        await queue(
            forum.db,
            [
                said(3, "x", resident(1, "Paulette Duval")),
                said(4, "y", resident(3, "Paulette Duval")),
            ],
            3,
        )
        assert await handle_backlog(forum)
        await forum.settle()
        relayed = {p.text: p.as_name for p in forum.console.state.posted}
    assert before == ["Lea Martin · Telegram", "Paulette Duval · Telegram"]
    assert relayed["y"] == "Paulette Duval (habitant·e, non officiel) · Telegram"
