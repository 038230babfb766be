"""The message map: which relayed copy stands for which original, in every linked chat.

Chats are named by their keys (``telegram:-100123/7``) and messages by their platform ids, so
this module needs nothing from the bot: the outbox and the bridge handlers both ask it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlmodel import col, select

from storage.db import insert_later
from storage.models import MessageLink

# One row per part of a copy: the unique key of the map.
LINK_KEY = ("origin_chat_key", "origin_message_id", "copy_chat_key", "part")


async def copies_of(
    session: AsyncSession, origin_chat_key: str, origin_message_id: str, copy_chat_key: str
) -> list[str]:
    """The ids of the copies, in chat ``copy_chat_key``, of one original, part by part."""
    query = (
        select(MessageLink.copy_message_id)
        .where(
            MessageLink.origin_chat_key == origin_chat_key,
            MessageLink.origin_message_id == origin_message_id,
            MessageLink.copy_chat_key == copy_chat_key,
        )
        .order_by(col(MessageLink.part))
    )
    return list((await session.execute(query)).scalars().all())


async def original_of(
    session: AsyncSession,
    copy_chat_key: str,
    copy_message_id: str,
    origin_chat_key: str | None = None,
) -> tuple[str, str] | None:
    """The chat key and id of the original a copy stands for (only in ``origin_chat_key``)."""
    query = select(MessageLink.origin_chat_key, MessageLink.origin_message_id).where(
        MessageLink.copy_chat_key == copy_chat_key,
        MessageLink.copy_message_id == copy_message_id,
    )
    if origin_chat_key is not None:
        query = query.where(MessageLink.origin_chat_key == origin_chat_key)
    row = (await session.execute(query)).first()
    return (row[0], row[1]) if row is not None else None


async def ids_in(
    session: AsyncSession, origin_chat_key: str, origin_message_id: str, chat_key: str
) -> list[str] | None:
    """The ids, in chat ``chat_key``, of a message (its copies, or its original); None: none."""
    copies = await copies_of(session, origin_chat_key, origin_message_id, chat_key)
    if copies:
        return copies
    # The message may itself be a copy of one that lives in ``chat_key``.
    original = await original_of(session, origin_chat_key, origin_message_id, chat_key)
    return [original[1]] if original is not None else None


async def is_batched(
    session: AsyncSession, origin_chat_key: str, origin_message_id: str, copy_chat_key: str
) -> bool:
    """Whether the copy of an original in ``copy_chat_key`` shares its post with others."""
    query = select(MessageLink.batched).where(
        MessageLink.origin_chat_key == origin_chat_key,
        MessageLink.origin_message_id == origin_message_id,
        MessageLink.copy_chat_key == copy_chat_key,
    )
    return bool((await session.execute(query)).scalars().first())


def record(session: AsyncSession | Session, rows: Sequence[Mapping[str, object]]) -> None:
    """Store links (``MessageLink`` columns as dicts), skipping parts already recorded; they
    go out with the transaction's next statement or its commit."""
    for row in rows:
        insert_later(session, MessageLink, row, LINK_KEY)
