"""Queries the handlers share: residents, channels, messages, language preferences."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from bot.events import Author, ChatRef
from bot.richtext import FormattedText
from storage.db import insert_ignore, insert_later, upsert
from storage.models import Account, Channel, ChatPreference, Message, Person

# "Last seen" is kept to this step: plenty for a resident list, and saves an UPDATE per message.
LAST_SEEN_STEP = timedelta(minutes=10)


class StoredAccount(NamedTuple):
    """The columns of an account the core keeps in mind."""

    id: int
    person_id: int
    display_name: str
    username: str | None
    last_seen_at: datetime

    def current(self, author: Author, now: datetime) -> bool:
        """Whether the row already says what ``author`` says (and was seen lately): an
        event by the same author under the same name then costs no statement."""
        return (
            self.display_name == author.display_name
            and self.username == author.username
            and now - self.last_seen_at <= LAST_SEEN_STEP
        )


def _account_row(author: Author, person_id: int | None, now: datetime) -> dict[str, Any]:
    return {
        "person_id": person_id,
        "platform": author.platform,
        "platform_user_id": author.user_id,
        "username": author.username,
        "display_name": author.display_name,
        "is_bot": author.is_bot,
        "created_at": now,
        "last_seen_at": now,
    }


async def ensure_accounts(
    session: AsyncSession, authors: Sequence[Author], now: datetime
) -> dict[tuple[str, str], StoredAccount]:
    """``ensure_account`` for many authors in a few statements, by (platform, user id).

    One SELECT … IN per platform; the missing accounts get their persons in one INSERT …
    RETURNING, then one INSERT … ON CONFLICT DO NOTHING and one more SELECT; renamed or
    long-unseen accounts are brought up to date in one executemany UPDATE. Plain rows, not
    ORM objects: building an object costs more than its share of the statement.
    """
    wanted: dict[tuple[str, str], Author] = {(a.platform, a.user_id): a for a in authors}
    found = await _accounts_by_key(session, list(wanted))
    missing = [author for key, author in wanted.items() if key not in found]
    if missing:
        person_ids = await _insert_persons(
            session,
            [
                {"display_name": a.display_name, "language": a.language, "created_at": now}
                for a in missing
            ],
        )
        await insert_ignore(
            session,
            Account,
            [
                _account_row(author, person_id, now)
                for author, person_id in zip(missing, person_ids, strict=True)
            ],
            ["platform", "platform_user_id"],
        )
        created = await _accounts_by_key(session, [(a.platform, a.user_id) for a in missing])
        found.update(created)
        # Another writer may have created some of these accounts at the same moment: their
        # fresh persons lost and are dropped.
        unused = set(person_ids) - {account.person_id for account in created.values()}
        if unused:
            await session.execute(sa.delete(Person).where(col(Person.id).in_(unused)))
    changes = []
    for key, account in found.items():
        author = wanted[key]
        seen = account.last_seen_at if now - account.last_seen_at <= LAST_SEEN_STEP else now
        fresh = account._replace(
            display_name=author.display_name, username=author.username, last_seen_at=seen
        )
        if fresh != account:
            found[key] = fresh
            changes.append(
                {
                    "id": fresh.id,
                    "display_name": fresh.display_name,
                    "username": fresh.username,
                    "last_seen_at": fresh.last_seen_at,
                }
            )
    if changes:
        # ORM bulk UPDATE by primary key: one executemany.
        await session.execute(sa.update(Account), changes)
    return found


async def ensure_account(session: AsyncSession, author: Author, now: datetime) -> StoredAccount:
    """The stored account for ``author``, created with its person on first sight."""
    return (await ensure_accounts(session, [author], now))[(author.platform, author.user_id)]


async def _insert_persons(session: AsyncSession, rows: list[dict[str, Any]]) -> list[int]:
    """Insert persons; their ids in the order of ``rows``."""
    sqlite = session.bind is not None and session.bind.dialect.name == "sqlite"
    # PostgreSQL returns the ids in the rows' order when asked. SQLAlchemy cannot ask that of
    # SQLite and would fall back to one INSERT per row; but this writer holds SQLite's only
    # write lock, and SQLite numbers the rows of one INSERT upwards in the order given, so
    # the sorted ids are in the rows' order.
    statement = sa.insert(Person).returning(col(Person.id), sort_by_parameter_order=not sqlite)
    ids = [i for i in (await session.execute(statement, rows)).scalars() if i is not None]
    return sorted(ids) if sqlite else ids


async def _accounts_by_key(
    session: AsyncSession, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], StoredAccount]:
    by_platform: dict[str, list[str]] = {}
    for platform, user_id in keys:
        by_platform.setdefault(platform, []).append(user_id)
    found: dict[tuple[str, str], StoredAccount] = {}
    for platform, user_ids in by_platform.items():
        query = sa.select(
            col(Account.platform_user_id),
            col(Account.id),
            col(Account.person_id),
            col(Account.display_name),
            col(Account.username),
            col(Account.last_seen_at),
        ).where(col(Account.platform) == platform, col(Account.platform_user_id).in_(user_ids))
        for user_id, account_id, person_id, name, username, seen in (
            await session.execute(query)
        ).all():
            assert account_id is not None
            found[(platform, user_id)] = StoredAccount(account_id, person_id, name, username, seen)
    return found


async def ensure_channel(
    session: AsyncSession,
    chat: ChatRef,
    *,
    name: str = "",
    neighbourhood: str | None = None,
    purpose: str = "general",
    language: str | None = None,
) -> Channel:
    """The stored channel for ``chat``, created on first sight."""
    thread = chat.thread_id or ""
    query = select(Channel).where(
        Channel.platform == chat.platform,
        Channel.chat_id == chat.chat_id,
        Channel.thread_id == thread,
    )
    channel = (await session.execute(query)).scalar_one_or_none()
    if channel is None:
        await insert_ignore(
            session,
            Channel,
            [
                {
                    "platform": chat.platform,
                    "chat_id": chat.chat_id,
                    "thread_id": thread,
                    "name": name,
                    "neighbourhood": neighbourhood,
                    "purpose": purpose,
                    "language": language,
                }
            ],
            ["platform", "chat_id", "thread_id"],
        )
        channel = (await session.execute(query)).scalar_one()
    return channel


def store_message(
    session: AsyncSession,
    *,
    channel_id: int | None,
    account_id: int | None,
    platform_message_id: str,
    content: FormattedText,
    sent_at: datetime,
    received_at: datetime,
    reply_to: str | None = None,
) -> None:
    """Store a resident's message once (a redelivery adds nothing); sent with its batch."""
    insert_later(
        session,
        Message,
        {
            "channel_id": channel_id,
            "account_id": account_id,
            "platform_message_id": platform_message_id,
            "text": content.text,
            "spans": [
                {k: v for k, v in asdict(span).items() if v is not None} for span in content.spans
            ],
            "reply_to_platform_id": reply_to,
            "sent_at": sent_at,
            "received_at": received_at,
        },
        ["channel_id", "platform_message_id"],
    )


async def find_message(
    session: AsyncSession, chat: ChatRef, platform_message_id: str
) -> Message | None:
    query = (
        select(Message)
        .join(Channel)
        .where(
            Channel.platform == chat.platform,
            Channel.chat_id == chat.chat_id,
            Channel.thread_id == (chat.thread_id or ""),
            Message.platform_message_id == platform_message_id,
        )
    )
    return (await session.execute(query)).scalar_one_or_none()


async def languages(session: AsyncSession) -> dict[tuple[str, str], str]:
    """Every language chosen with /langue, by (scope, key): a few rows, read whole."""
    rows = await session.execute(
        select(ChatPreference.scope, ChatPreference.key, ChatPreference.language)
    )
    return {(scope, key): language for scope, key, language in rows.all() if language}


def chosen_language(
    choices: dict[tuple[str, str], str], chat: ChatRef, author: Author | None
) -> str | None:
    """The language a person chose, else the one chosen for the chat, else None (from the
    choices ``languages()`` read)."""
    if author is not None:
        mine = choices.get(("account", f"{author.platform}:{author.user_id}"))
        if mine:
            return mine
    return choices.get(("chat", str(chat))) or None


async def language_for(session: AsyncSession, chat: ChatRef, author: Author | None) -> str | None:
    """The language a person chose, else the one chosen for the chat, else None."""
    return chosen_language(await languages(session), chat, author)


async def set_language(session: AsyncSession, scope: str, key: str, language: str) -> None:
    await upsert(
        session,
        ChatPreference,
        {"scope": scope, "key": key, "language": language},
        ["scope", "key"],
        ["language"],
    )
