"""Keeping the record: every resident message, edit and deletion is stored."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from bot.events import Action, ChatRef, MessageDeleted, MessageEdited, MessageReceived
from storage import repository

if TYPE_CHECKING:
    from bot.handling import Context


def _channel_options(ctx: Context, chat: ChatRef) -> dict[str, str | None]:
    channel = ctx.channel(chat)
    if channel is None:
        return {}
    return {
        "name": channel.name,
        "neighbourhood": channel.neighbourhood,
        "purpose": channel.purpose,
        "language": channel.language,
    }


async def store_message(ctx: Context, event: MessageReceived) -> Sequence[Action]:
    """Store a resident's message with its platform ids and platform timestamp."""
    now = ctx.clock.now()
    session = ctx.session
    account_id = ctx.person.account_id
    if account_id is None:
        account_id = (await repository.ensure_account(session, event.author, now)).id

    async def channel_id() -> int | None:
        channel = await repository.ensure_channel(
            session,
            event.chat,
            **_channel_options(ctx, event.chat),  # type: ignore[arg-type]
        )
        return channel.id

    repository.store_message(
        session,
        channel_id=await ctx.memo.get("channels", str(event.chat), channel_id),
        account_id=account_id,
        platform_message_id=event.message_id,
        content=event.content,
        sent_at=event.at,
        received_at=now,
        reply_to=event.reply_to,
    )
    return []


async def store_edit(ctx: Context, event: MessageEdited) -> Sequence[Action]:
    """Keep the newest text of an edited message."""
    message = await repository.find_message(ctx.session, event.chat, event.message_id)
    if message is not None:
        message.text = event.content.text
        message.edited_at = event.at
    return []


async def store_deletion(ctx: Context, event: MessageDeleted) -> Sequence[Action]:
    """Mark a message deleted; its text is erased, as the author expects."""
    message = await repository.find_message(ctx.session, event.chat, event.message_id)
    if message is not None:
        message.deleted_at = event.at
        message.text = ""
        message.spans = []
    return []
