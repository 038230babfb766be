"""Queries the handlers share: residents, channels, messages, language preferences."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import select

from bot.events import Author, ChatRef
from bot.richtext import FormattedText
from storage.db import insert_ignore, upsert
from storage.models import Account, Channel, ChatPreference, Message, Person


async def ensure_account(session: AsyncSession, author: Author, now: datetime) -> Account:
    """The stored account for ``author``, created with its person on first sight."""
    query = select(Account).where(
        Account.platform == author.platform, Account.platform_user_id == author.user_id
    )
    account = (await session.execute(query)).scalar_one_or_none()
    if account is None:
        person = Person(display_name=author.display_name, language=author.language, created_at=now)
        session.add(person)
        await session.flush()
        # Another writer (another process on PostgreSQL) may create the same account at the
        # same moment; the unique key decides and the loser drops its fresh person.
        await insert_ignore(
            session,
            Account,
            [
                {
                    "person_id": person.id,
                    "platform": author.platform,
                    "platform_user_id": author.user_id,
                    "username": author.username,
                    "display_name": author.display_name,
                    "is_bot": author.is_bot,
                    "created_at": now,
                    "last_seen_at": now,
                }
            ],
            ["platform", "platform_user_id"],
        )
        account = (await session.execute(query)).scalar_one()
        if account.person_id != person.id:
            await session.delete(person)
        return account
    if account.display_name != author.display_name or account.username != author.username:
        account.display_name = author.display_name
        account.username = author.username
    # Minute precision is plenty for "last seen", and saves an UPDATE per message.
    if now - account.last_seen_at > timedelta(minutes=10):
        account.last_seen_at = now
    return account


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


async def store_message(
    session: AsyncSession,
    *,
    channel: Channel,
    account: Account,
    platform_message_id: str,
    content: FormattedText,
    sent_at: datetime,
    received_at: datetime,
    reply_to: str | None = None,
) -> bool:
    """Store a resident's message once; False when it was already stored (a redelivery)."""
    result = await insert_ignore(
        session,
        Message,
        [
            {
                "channel_id": channel.id,
                "account_id": account.id,
                "platform_message_id": platform_message_id,
                "text": content.text,
                "spans": [
                    {k: v for k, v in asdict(span).items() if v is not None}
                    for span in content.spans
                ],
                "reply_to_platform_id": reply_to,
                "sent_at": sent_at,
                "received_at": received_at,
            }
        ],
        ["channel_id", "platform_message_id"],
    )
    return bool(result.rowcount)


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


async def language_for(session: AsyncSession, chat: ChatRef, author: Author | None) -> str | None:
    """The language a person chose, else the one chosen for the chat, else None."""
    keys = []
    if author is not None:
        keys.append(("account", f"{author.platform}:{author.user_id}"))
    keys.append(("chat", str(chat)))
    for scope, key in keys:
        query = select(ChatPreference.language).where(
            ChatPreference.scope == scope, ChatPreference.key == key
        )
        language = (await session.execute(query)).scalar_one_or_none()
        if language:
            return language
    return None


async def set_language(session: AsyncSession, scope: str, key: str, language: str) -> None:
    await upsert(
        session,
        ChatPreference,
        {"scope": scope, "key": key, "language": language},
        ["scope", "key"],
        ["language"],
    )
