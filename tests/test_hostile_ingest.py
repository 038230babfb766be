"""Hostile review of the batched ingest (issue 10, steps 2 and 3).

Each test attacks one promise of the change: a page of plain messages in one transaction
with a fall-back to one-by-one handling, set-based accounts, the memo, deferred inserts,
``write_now`` / ``read_now`` and the Telegram adapter's raw payloads. A fault-injection test
always checks that its fault fired.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.orm import Session
from sqlmodel import col, select

import handlers
from bot.bootstrap import build
from bot.clock import SystemClock
from bot.config import RolesConfig, Settings
from bot.dispatcher import Tables
from bot.events import Action, Author, ChatRef, CommandReceived, Event, MessageReceived
from bot.handling import Command, Context
from bot.richtext import FormattedText
from handlers import help as help_
from handlers import messages
from storage.db import Database, insert_later
from storage.models import Account, Channel, InboxUpdate, LinkCode, Message, Person
from tests.forum import Forum
from tests.test_ingest_batch import (
    handle_backlog,
    inbox_rows,
    queue,
    resident,
    stored_texts,
)

NOW = datetime(2026, 11, 25, 18, 30, tzinfo=UTC)
OUEST = ChatRef("console", "tg:ouest")  # linked to dc:ouest by the console's demo link


def said(n: int, text: str, author: Author, chat: ChatRef = OUEST) -> MessageReceived:
    return MessageReceived(
        chat=chat, author=author, at=NOW, message_id=str(n), content=FormattedText.plain(text)
    )


def command(n: int, name: str, args: str, author: Author, chat: ChatRef = OUEST) -> CommandReceived:
    return CommandReceived(
        chat=chat, author=author, at=NOW, message_id=str(n), name=name, args=args
    )


def marks(rows: Sequence[InboxUpdate]) -> list[tuple[int, bool]]:
    return [(r.attempts, r.handled_at is not None) for r in rows]


class Recorder:
    """Plain messages and /note recorded in order; faults injected by text."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.languages: dict[str, str] = {}
        # text -> how many more times it fails
        self.fail_times: dict[str, int] = {}
        self.fired = 0
        self.poison: set[str] = set()

    async def on_message(self, ctx: Context, event: MessageReceived) -> Sequence[Action]:
        text = event.content.text
        if self.fail_times.get(text, 0) > 0:
            self.fail_times[text] -= 1
            self.fired += 1
            raise RuntimeError(f"flaky {text}")
        if text in self.poison:
            # A row that breaks a foreign key: it fails when the deferred rows are sent.
            self.fired += 1
            insert_later(
                ctx.session,
                Message,
                {
                    "channel_id": 987_654_321,
                    "account_id": ctx.person.account_id,
                    "platform_message_id": f"poison-{event.message_id}",
                    "text": text,
                    "spans": [],
                    "reply_to_platform_id": None,
                    "sent_at": NOW,
                    "received_at": NOW,
                },
                ["channel_id", "platform_message_id"],
            )
        self.seen.append(text)
        self.languages[text] = ctx.language
        return []

    async def on_note(self, ctx: Context, event: CommandReceived) -> Sequence[Action]:
        self.seen.append(f"/note {event.args}")
        return []

    def tables(self) -> Tables:
        return Tables(
            commands={
                "note": Command(self.on_note, "note"),
                "langue": Command(help_.choose_language, "langue"),
            },
            unknown_command=help_.unknown_command,
            events={MessageReceived: (messages.store_message, self.on_message)},
        )


async def outcome(awaitable: Any) -> object:
    """The result, or the exception raised (a handle_pending that raises loses the page)."""
    try:
        return await awaitable
    except Exception as exc:  # reported in the assertion
        return exc


# -- claim 1: a page in one transaction, with a fall-back one by one ------------------------


async def test_a_platform_failure_on_a_command_in_a_page_is_recorded_not_raised(
    settings: Settings,
) -> None:
    """The platform's rights check before a command's transaction fails (a network error):
    the command must be left pending with its error, and the page go on."""
    recorder = Recorder()
    async with Forum(settings, tables=recorder.tables()) as forum:
        calls = 0
        real_roles = forum.console.roles

        async def flaky_roles(chat: ChatRef, author: Author) -> frozenset[str]:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("platform unreachable")
            return await real_roles(chat, author)

        forum.console.roles = flaky_roles  # type: ignore[method-assign]
        await queue(
            forum.db,
            [
                said(1, "un", resident(1)),
                said(2, "deux", resident(2)),
                command(3, "note", "ici", resident(1)),
                said(4, "quatre", resident(1)),
                said(5, "cinq", resident(2)),
            ],
        )
        first = await outcome(handle_backlog(forum))
        after_fault = await inbox_rows(forum.db)
        second = await outcome(handle_backlog(forum))
        final = await inbox_rows(forum.db)
    assert calls >= 1, "the fault never fired"
    assert first is False, f"handle_pending gave {first!r}"
    assert marks(after_fault) == [(1, True), (1, True), (1, False), (1, True), (1, True)]
    assert "platform unreachable" in (after_fault[2].last_error or "")
    assert second is True
    assert marks(final)[2] == (2, True)
    assert recorder.seen == ["un", "deux", "quatre", "cinq", "/note ici"]


async def test_a_handler_failing_only_the_first_time_is_handled_once_with_the_page(
    database_url: str,
) -> None:
    recorder = Recorder()
    recorder.fail_times = {"trois": 1}
    settings = Settings(database_url=database_url)
    async with Forum(settings, tables=recorder.tables()) as forum:
        texts = ["un", "deux", "trois", "quatre"]
        # Residents 1 and 3 are new and appear twice: their accounts are created by the
        # rolled-back batch first, then again alone.
        authors = [resident(1), resident(2, "Zoé"), resident(3), resident(1)]
        await queue(
            forum.db,
            [said(n, t, a) for n, (t, a) in enumerate(zip(texts, authors, strict=True), 1)],
        )
        assert await handle_backlog(forum)
        rows = await inbox_rows(forum.db)
        texts_stored = await stored_texts(forum.db)
        async with forum.db.read() as session:
            account_ids = set((await session.execute(select(Account.id))).scalars())
            authors_of = set((await session.execute(select(Message.account_id))).scalars())
            people = (await session.execute(sa.select(sa.func.count()).select_from(Person))).one()
        remembered = {k.id for k in forum.app.dispatcher._accounts.values()}
    assert recorder.fired == 1
    assert marks(rows) == [(1, True)] * 4
    assert texts_stored == texts
    assert authors_of <= account_ids and remembered <= account_ids
    assert people[0] == 3
    # The batch ran un and deux before failing on trois; then each went alone once.
    assert recorder.seen == ["un", "deux", "un", "deux", "trois", "quatre"]


async def test_an_update_decoded_to_none_inside_a_page_keeps_its_place(
    settings: Settings,
) -> None:
    recorder = Recorder()
    recorder.fail_times = {"boom": 1}
    async with Forum(settings, tables=recorder.tables()) as forum:
        events: list[Event] = [
            said(1, "un", resident(1)),
            said(2, "nothing", resident(1)),  # stands for an update decoded to None
            said(3, "boom", resident(2)),
            said(4, "quatre", resident(2)),
            said(5, "nothing", resident(1)),
            command(6, "note", "ici", resident(1)),
            said(7, "nothing", resident(1)),
            said(8, "huit", resident(3)),
        ]
        await queue(forum.db, events)
        rows = await inbox_rows(forum.db)
        page: list[tuple[Event | None, int]] = []
        for row, event in zip(rows, events, strict=True):
            assert row.id is not None
            plain = isinstance(event, MessageReceived) and event.content.text == "nothing"
            page.append((None if plain else event, row.id))
        assert await forum.app.dispatcher.handle_page(page)
        after = await inbox_rows(forum.db)
        texts = await stored_texts(forum.db)
    assert recorder.fired == 1
    assert marks(after) == [(1, True)] * 8
    assert texts == ["un", "boom", "quatre", "huit"]
    assert recorder.seen == ["un", "un", "boom", "quatre", "/note ici", "huit"]


async def test_a_foreign_key_violation_in_deferred_rows_falls_back_and_loses_nothing(
    database_url: str,
) -> None:
    recorder = Recorder()
    recorder.poison = {"poison"}
    settings = Settings(database_url=database_url)
    async with Forum(settings, tables=recorder.tables()) as forum:
        texts = ["un", "deux", "poison", "quatre", "cinq"]
        await queue(forum.db, [said(n, t, resident(n)) for n, t in enumerate(texts, 1)])
        assert not await handle_backlog(forum)
        rows = await inbox_rows(forum.db)
        kept = await stored_texts(forum.db)
        async with forum.db.read() as session:
            channels = set((await session.execute(select(Channel.id))).scalars())
            used = set((await session.execute(select(Message.channel_id))).scalars())
    # Once in the batch, once alone.
    assert recorder.fired == 2
    assert marks(rows) == [(1, True), (1, True), (1, False), (1, True), (1, True)]
    error = (rows[2].last_error or "").lower()
    assert "integrity" in error and "foreign key" in error, error
    assert kept == ["un", "deux", "quatre", "cinq"]
    assert used <= channels


async def test_a_failure_after_the_page_committed_does_not_handle_it_twice(
    settings: Settings,
) -> None:
    """Anything that fails after the batch's commit (here waking the outbox) must not send
    the page, already committed and marked handled, through the fall-back again."""
    recorder = Recorder()
    async with Forum(settings, tables=recorder.tables()) as forum:
        outbox = forum.app.outbox
        real_wake = outbox.wake
        fired = 0

        def failing_wake(chats: Any) -> None:
            nonlocal fired
            if fired == 0:
                fired += 1
                raise RuntimeError("wake failed")
            real_wake(chats)

        outbox.wake = failing_wake  # type: ignore[method-assign]
        await queue(forum.db, [said(n, f"m{n}", resident(n)) for n in range(1, 4)])
        await handle_backlog(forum)
        rows = await inbox_rows(forum.db)
    assert fired == 1
    assert recorder.seen == ["m1", "m2", "m3"]
    assert marks(rows) == [(1, True)] * 3


@pytest.mark.parametrize("batch", [1, None], ids=["one-by-one", "batched"])
async def test_a_moderator_renamed_later_in_a_page_does_not_unprotect_earlier_messages(
    sqlite_url: str, batch: int | None
) -> None:
    """Handled in order, a resident who borrows a moderator's name before the moderator
    changes it (in the same page) is marked as a look-alike, as when handled alone
    (``batch=1``, the control: every update goes through ``handle()``)."""
    settings = Settings(database_url=sqlite_url, roles=RolesConfig(moderators=["console:r1"]))
    async with Forum(settings) as forum:
        if batch is not None:
            forum.app.dispatcher.BATCH = batch
        await queue(
            forum.db,
            [
                said(1, "bonjour", resident(1, "Lea Martin")),
                said(2, "salut", resident(2, "Paulette Duval")),
            ],
        )
        assert await handle_backlog(forum)
        await forum.settle()
        await queue(
            forum.db,
            [
                said(3, "je suis la modération", resident(3, "Lea Martin")),
                said(4, "ah bon", resident(2, "Paulette Duval")),
                said(5, "nouveau nom", resident(1, "Marie Curie")),
            ],
            3,
        )
        assert await handle_backlog(forum)
        await forum.settle()
        relayed = {p.text: p.as_name for p in forum.console.state.posted}
    assert relayed["je suis la modération"] == "Lea Martin (habitant·e, non officiel) · Telegram"


async def test_the_same_new_author_twice_in_a_page_with_two_names(database_url: str) -> None:
    settings = Settings(database_url=database_url)
    async with Forum(settings) as forum:
        await queue(
            forum.db,
            [
                said(1, "premier", resident(7, "Jean")),
                said(2, "autre", resident(8)),
                said(3, "second", resident(7, "Jean-Pierre")),
            ],
        )
        assert await handle_backlog(forum)
        await forum.settle()
        relayed = {p.text: p.as_name for p in forum.console.state.posted}
        async with forum.db.read() as session:
            accounts = (
                await session.execute(
                    select(Account.id, Account.display_name, Account.person_id).where(
                        Account.platform_user_id == "r7"
                    )
                )
            ).all()
            authors = set(
                (
                    await session.execute(
                        select(Message.account_id).where(
                            col(Message.platform_message_id).in_(["1", "3"])
                        )
                    )
                ).scalars()
            )
            people = (await session.execute(sa.select(sa.func.count()).select_from(Person))).one()
    assert [a[1] for a in accounts] == ["Jean-Pierre"]
    assert authors == {accounts[0][0]}
    assert people[0] == 2
    assert relayed["premier"] == "Jean · Telegram"
    assert relayed["second"] == "Jean-Pierre · Telegram"


async def test_a_link_made_or_undone_mid_page_applies_from_its_place(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url, roles=RolesConfig(admins=["console:r1"]))
    nord, sud = ChatRef("console", "con:nord"), ChatRef("console", "con:sud")
    admin = resident(1, "Admin")
    async with Forum(settings) as forum:
        # Messages first (the links are read and remembered), then a code asked in nord.
        await queue(
            forum.db,
            [
                said(1, "avant tout", resident(2), nord),
                said(2, "avant tout bis", resident(3), nord),
                command(3, "relier", "", admin, nord),
            ],
        )
        assert await handle_backlog(forum)
        async with forum.db.read() as session:
            code = (await session.execute(select(LinkCode.code))).scalar_one()
        await queue(
            forum.db,
            [
                said(4, "pas encore", resident(2), nord),
                said(5, "pas encore bis", resident(3), nord),
                command(6, "relier", code, admin, sud),
                said(7, "relié", resident(2), nord),
                said(8, "relié bis", resident(3), nord),
            ],
            4,
        )
        assert await handle_backlog(forum)
        await queue(
            forum.db,
            [
                said(9, "encore relié", resident(2), nord),
                said(10, "encore relié bis", resident(3), nord),
                command(11, "delier", "", admin, sud),
                said(12, "délié", resident(2), nord),
                said(13, "délié bis", resident(3), nord),
            ],
            9,
        )
        assert await handle_backlog(forum)
        await forum.settle()
        in_sud = [p.text for p in forum.console.state.posted if p.chat == "con:sud" and p.as_name]
    assert in_sud == ["relié", "relié bis", "encore relié", "encore relié bis"]


async def test_a_language_chosen_mid_page_applies_to_the_messages_after_it(
    database_url: str,
) -> None:
    recorder = Recorder()
    settings = Settings(database_url=database_url)
    async with Forum(settings, tables=recorder.tables()) as forum:
        marie, paul = resident(1, "Marie"), resident(2, "Paul")
        await queue(
            forum.db,
            [
                said(1, "a", marie),
                said(2, "b", paul),
                command(3, "langue", "en", marie),
                said(4, "c", marie),
                said(5, "d", paul),
                command(6, "langue", "fr", marie),
                said(7, "e", marie),
                said(8, "f", paul),
            ],
        )
        assert await handle_backlog(forum)
    assert recorder.languages == {"a": "fr", "b": "fr", "c": "en", "d": "fr", "e": "fr", "f": "fr"}


async def test_a_repeated_text_in_a_page_is_stored_and_relayed_each_time(
    database_url: str,
) -> None:
    settings = Settings(database_url=database_url)
    async with Forum(settings) as forum:
        marie = resident(1, "Marie")
        page = [
            said(1, "Merci !", marie),
            said(2, "De rien", resident(2)),
            said(3, "Merci !", marie),
        ]
        await queue(forum.db, page)
        assert await handle_backlog(forum)
        # The same updates again (a redelivery): nothing more.
        await queue(forum.db, page)
        assert await handle_backlog(forum)
        await forum.settle()
        relayed = [p.text for p in forum.console.state.posted if p.chat == "dc:ouest"]
        texts = await stored_texts(forum.db)
    assert texts == ["Merci !", "De rien", "Merci !"]
    assert relayed == ["Merci !", "De rien", "Merci !"]


async def test_a_stop_in_the_middle_of_a_page_then_a_restart_handles_each_once(
    sqlite_url: str,
) -> None:
    """Stopped (cancelled) half-way through a batch: nothing of it is kept or remembered,
    and the restarted bot handles the whole page once."""
    recorder = Recorder()
    settings = Settings(database_url=sqlite_url)
    stopped = 0

    async def stop_once(ctx: Context, event: MessageReceived) -> Sequence[Action]:
        nonlocal stopped
        if event.content.text == "stop" and not stopped:
            stopped += 1
            raise asyncio.CancelledError
        return []

    tables = recorder.tables()
    tables = Tables(
        commands=tables.commands,
        unknown_command=tables.unknown_command,
        events={MessageReceived: (*tables.events[MessageReceived], stop_once)},
    )
    events = [said(n, t, resident(n)) for n, t in enumerate(["un", "deux", "stop", "quatre"], 1)]
    async with Forum(settings, tables=tables) as forum:
        await queue(forum.db, events)
        with pytest.raises(asyncio.CancelledError):
            await handle_backlog(forum)
        remembered = dict(forum.app.dispatcher._accounts)
        half = await inbox_rows(forum.db)
    # The restart handles what was stored and not handled.
    async with Forum(settings, tables=tables) as forum:
        rows = await inbox_rows(forum.db)
        texts = await stored_texts(forum.db)
        async with forum.db.read() as session:
            people = (await session.execute(sa.select(sa.func.count()).select_from(Person))).one()
    assert stopped == 1
    assert remembered == {}
    assert marks(half) == [(0, False)] * 4
    assert marks(rows) == [(1, True)] * 4
    assert texts == ["un", "deux", "stop", "quatre"]
    assert people[0] == 4


# -- claim 2: accounts created set-based -----------------------------------------------------


async def test_new_persons_match_their_accounts_in_a_mixed_page(database_url: str) -> None:
    """The persons inserted for a page are paired with its new accounts by order (sorted
    RETURNING ids on SQLite): each new account's person must carry its own name."""
    recorder = Recorder()
    settings = Settings(database_url=database_url)
    async with Forum(settings, tables=recorder.tables()) as forum:
        # Some residents known already; a person left without an account in between.
        await queue(forum.db, [said(n, f"x{n}", resident(n, f"Ancien {n}")) for n in (3, 9, 27)])
        assert await handle_backlog(forum)
        async with forum.db.write() as session:
            session.add(Person(display_name="sans compte", created_at=NOW))
        page = [said(100 + n, f"y{n}", resident(n, f"Nom {n:02d}")) for n in range(40, 0, -1)]
        await queue(forum.db, page, 100)
        assert await handle_backlog(forum)
        async with forum.db.read() as session:
            rows = (
                await session.execute(
                    select(Account.platform_user_id, Account.display_name, Person.display_name)
                    .join(Person, col(Person.id) == Account.person_id)
                    .order_by(col(Account.id))
                )
            ).all()
            persons = (await session.execute(sa.select(sa.func.count()).select_from(Person))).one()
    created = {user: person for user, _name, person in rows if user not in ("r3", "r9", "r27")}
    assert len(rows) == 40
    assert created == {f"r{n}": f"Nom {n:02d}" for n in range(1, 41) if n not in (3, 9, 27)}
    assert persons[0] == 41


# -- claim 3: the memo -----------------------------------------------------------------------


async def test_a_message_failing_alone_after_creating_its_channel_leaves_no_stale_id(
    database_url: str,
) -> None:
    recorder = Recorder()
    recorder.fail_times = {"boom": 1}
    settings = Settings(database_url=database_url)
    nord = ChatRef("console", "tg:nord")
    async with Forum(settings, tables=recorder.tables()) as forum:
        # Alone in its page: handled by handle(), which creates the channel, then fails.
        await queue(forum.db, [said(1, "boom", resident(1), nord)])
        assert not await handle_backlog(forum)
        await queue(forum.db, [said(2, "a", resident(2), nord), said(3, "b", resident(3), nord)], 2)
        assert await handle_backlog(forum)
        rows = await inbox_rows(forum.db)
        texts = await stored_texts(forum.db)
    assert recorder.fired == 1
    assert marks(rows) == [(2, True), (1, True), (1, True)]
    assert sorted(texts) == ["a", "b", "boom"]


# -- claim 4: deferred inserts --------------------------------------------------------------


def _account_row(person_id: int, user: str, name: str) -> dict[str, object]:
    return {
        "person_id": person_id,
        "platform": "console",
        "platform_user_id": user,
        "display_name": name,
        "is_bot": False,
        "created_at": NOW,
        "last_seen_at": NOW,
    }


async def test_deferred_rows_are_read_back_in_their_transaction_and_gone_on_rollback(
    db: Database,
) -> None:
    key = ["platform", "platform_user_id"]
    with pytest.raises(RuntimeError, match="abandon"):
        async with db.write() as session:
            person = Person(display_name="p", created_at=NOW)
            session.add(person)
            await session.flush()
            assert person.id is not None
            insert_later(session, Account, _account_row(person.id, "a", "premier"), key)
            insert_later(session, Account, _account_row(person.id, "a", "doublon"), key)
            insert_later(session, Account, _account_row(person.id, "b", "autre"), key)
            seen = (
                await session.execute(
                    select(Account.platform_user_id, Account.display_name).order_by(
                        col(Account.platform_user_id)
                    )
                )
            ).all()
            assert [tuple(r) for r in seen] == [("a", "premier"), ("b", "autre")]
            insert_later(session, Account, _account_row(person.id, "c", "jamais"), key)
            raise RuntimeError("abandon")
    async with db.read() as session:
        left = (await session.execute(select(Account.id))).scalars().all()
        persons = (await session.execute(select(Person.id))).scalars().all()
    assert left == [] and persons == []


async def test_a_deferred_row_may_point_at_an_object_added_before_it(db: Database) -> None:
    """Objects added to the session go out before the deferred rows (the rows' own INSERT
    flushes them first), at the next statement as at commit: a row may refer to them."""
    async with db.write() as session:
        session.add(Person(id=4242, display_name="ajoutée", created_at=NOW))
        insert_later(
            session, Account, _account_row(4242, "z", "Zoé"), ["platform", "platform_user_id"]
        )
        found = (
            await session.execute(select(Account.display_name).where(Account.person_id == 4242))
        ).scalar_one()
        session.add(Person(id=4243, display_name="au commit", created_at=NOW))
        insert_later(
            session, Account, _account_row(4243, "y", "Yves"), ["platform", "platform_user_id"]
        )
    async with db.read() as session:
        names = (
            (await session.execute(select(Account.display_name).order_by(col(Account.person_id))))
            .scalars()
            .all()
        )
    assert found == "Zoé"
    assert names == ["Zoé", "Yves"]


async def test_a_deferred_row_failing_at_commit_rolls_back_the_whole_write(db: Database) -> None:
    bad = _account_row(999_999, "fantome", "Fantôme")
    with pytest.raises(sa.exc.IntegrityError):
        async with db.write() as session:
            session.add(Person(display_name="avec", created_at=NOW))
            await session.flush()
            insert_later(session, Account, bad, ["platform", "platform_user_id"])

    def fail_in_thread(session: Session) -> None:
        session.add(Person(display_name="dans le fil", created_at=NOW))
        session.flush()
        insert_later(session, Account, bad, ["platform", "platform_user_id"])

    with pytest.raises(sa.exc.IntegrityError):
        await db.write_now(fail_in_thread)
    # The writers are free, and nothing of either transaction is left.
    async with asyncio.timeout(10), db.write() as session:
        session.add(Person(display_name="après", created_at=NOW))
    async with db.read() as session:
        names = (await session.execute(select(Person.display_name))).scalars().all()
    assert names == ["après"]


# -- claim 5: write_now / read_now ----------------------------------------------------------


async def test_write_now_and_async_writers_interleave_without_loss_or_deadlock(
    db: Database,
) -> None:
    """Async writers that read through read_now while holding the write lock, write_now
    calls queued behind them, and one write_now that raises: all finish, none is lost."""

    def add(name: str, fail: bool = False) -> Callable[[Session], None]:
        def work(session: Session) -> None:
            session.add(Person(display_name=name, created_at=NOW))
            session.flush()
            if fail:
                raise RuntimeError("refused")

        return work

    def count(session: Session) -> int:
        return int(session.execute(sa.select(sa.func.count()).select_from(Person)).scalar_one())

    async def async_writer(n: int) -> None:
        async with db.write() as session:
            session.add(Person(display_name=f"async {n}", created_at=NOW))
            # A read in the database thread while this writer holds the write lock.
            await db.read_now(count)

    jobs: list[Any] = []
    for n in range(10):
        jobs.append(async_writer(n))
        jobs.append(db.write_now(add(f"now {n}", fail=n == 5)))
    async with asyncio.timeout(20):
        results = await asyncio.gather(*jobs, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert [str(e) for e in errors] == ["refused"]
    assert await db.read_now(count) == 19


# -- claim 6: Telegram's raw payloads ------------------------------------------------------


@contextlib.asynccontextmanager
async def _telegram() -> AsyncIterator[Any]:
    from bot.platforms.telegram import TelegramAdapter
    from tests.fakes.telegram import FakeTelegram, TelegramLimits

    fake = FakeTelegram(limits=TelegramLimits(window_scale=0.01))
    await fake.start()
    try:
        yield fake, TelegramAdapter
    finally:
        await fake.stop()


@pytest.mark.usefixtures("ptb_timedelta")
async def test_telegram_update_decoded_after_a_restart_is_the_live_one(sqlite_url: str) -> None:
    """The event handled live (from the parsed update kept in memory) and the event a
    restarted bot decodes from the stored payload are the same, entities, reply and all."""
    group, marie = -100123, 42
    seen: list[MessageReceived] = []

    async def record(ctx: Context, event: MessageReceived) -> Sequence[Action]:
        seen.append(event)
        return []

    tables = Tables(
        commands=handlers.COMMANDS,
        unknown_command=help_.unknown_command,
        events={MessageReceived: (record,)},
    )
    async with _telegram() as (fake, adapter_class):
        fake.add_chat(group, title="Quartier Ouest")
        fake.add_user(marie, "Marie", last_name="Dupont", username="marie59")
        settings = Settings(
            database_url=sqlite_url,
            telegram_token=SecretStr(fake.token),
            telegram_api_url=fake.url,
        )
        db = Database(sqlite_url)
        adapter = adapter_class(settings, db, SystemClock(), poll_timeout=1)
        app = build(
            settings,
            db=db,
            clock=SystemClock(),
            adapters=[adapter],
            with_scheduler=False,
            tables=tables,
        )
        await app.start()
        try:
            first = fake.inject_message(group, marie, "Bonjour à tous")
            update = fake.inject_message(
                group,
                marie,
                "Réunion *jeudi* https://exemple.fr",
                entities=[
                    {"type": "bold", "offset": 8, "length": 7},
                    {"type": "url", "offset": 17, "length": 18},
                ],
                reply_to_message_id=first["message"]["message_id"],
            )
            key = str(update["update_id"])
            async with asyncio.timeout(30):
                await app.dispatcher.wait_until(lambda: _handled(db, key))
            async with db.read() as session:
                payload = (
                    await session.execute(
                        select(InboxUpdate.payload).where(InboxUpdate.update_key == key)
                    )
                ).scalar_one()
            live = next(e for e in seen if e.message_id == str(update["message"]["message_id"]))
            # A restart: nothing parsed in memory, the stored payload is all there is.
            adapter._parsed.clear()
            restarted = adapter._decode(payload)
        finally:
            await app.stop()
    assert payload == update
    assert restarted == live
    assert live.reply_to == str(first["message"]["message_id"])


async def _handled(db: Database, key: str) -> bool:
    async with db.read() as session:
        row = (
            await session.execute(
                select(InboxUpdate.handled_at).where(InboxUpdate.update_key == key)
            )
        ).first()
    return row is not None and row[0] is not None
