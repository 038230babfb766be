"""The gate: an ordered chain of checks every incoming message passes before any handler.

Moderation plugs its checks in here (bans, mutes, filters, flood). A check lets a message
through, holds it for review or drops it — before the handler table runs, and so before the
bridge relays anything. A held message is stored with its reason and the event itself, so a
moderator's release hands it to the handlers exactly as it came in (through the inbox, with its
exactly-once rules).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from bot import codec
from bot.buttons import ButtonTemplate
from bot.events import (
    ButtonPressed,
    ChatRef,
    CommandReceived,
    Event,
    FormSubmitted,
    MessageEdited,
    MessageReceived,
    Released,
)
from bot.inbox import store_updates
from storage.db import insert_ignore
from storage.models import HeldMessage

if TYPE_CHECKING:
    from bot.handling import Context

logger = logging.getLogger(__name__)

# What residents do that the gate screens; due times and releases are the bot's own.
GATED = (MessageReceived, MessageEdited, CommandReceived, ButtonPressed, FormSubmitted)
# Released messages go through the "core" inbox, handled like any platform's updates.
CORE_PLATFORM = "core"
# A moderator's decision on a held message.
HELD = ButtonTemplate("held:{id:int}:{decision:choice(release|drop)}")


class Outcome(enum.StrEnum):
    PASS = "pass"
    HOLD = "hold"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a check decided; ``notice`` (an English message id) is told to the author."""

    outcome: Outcome
    reason: str = ""
    notice: str | None = None
    check: str = ""


PASS = Verdict(Outcome.PASS)

Check = Callable[["Context", Event], Awaitable[Verdict | None]]


@dataclass(frozen=True, slots=True)
class GateCheck:
    """One named check of the chain (the name goes into the held message's record)."""

    name: str
    check: Check


class Gate:
    """Runs the checks in order; the first that does not let the event through decides."""

    def __init__(self, checks: Sequence[GateCheck] = ()) -> None:
        self.checks = tuple(checks)

    async def screen(self, ctx: Context, event: Event) -> Verdict:
        if not isinstance(event, GATED) or not self.checks:
            return PASS
        for entry in self.checks:
            verdict = await entry.check(ctx, event)
            if verdict is not None and verdict.outcome is not Outcome.PASS:
                return Verdict(verdict.outcome, verdict.reason, verdict.notice, entry.name)
        return PASS


def held_key(event: Event) -> str:
    """What makes a held event unique in its chat: an edit or a press is not its message."""
    if isinstance(event, MessageReceived):
        return event.message_id
    if isinstance(event, MessageEdited):
        return f"edit:{event.message_id}@{event.at.isoformat()}"
    interaction = getattr(event, "interaction_id", None)
    if interaction:
        return f"{type(event).__name__}:{interaction}"
    return f"{type(event).__name__}:{getattr(event, 'message_id', None)}@{event.at.isoformat()}"


async def hold(session: AsyncSession, ctx: Context, event: Event, verdict: Verdict) -> int | None:
    """Keep ``event`` for review; returns the held message's id (None if already held)."""
    message_id = held_key(event)
    result = await insert_ignore(
        session,
        HeldMessage,
        [
            {
                "chat_key": str(event.chat),
                "message_id": str(message_id),
                "account_key": ctx.person.account_key,
                "person_id": ctx.person.id,
                "check": verdict.check[:64],
                "reason": verdict.reason,
                "event": codec.encode(event),
                "held_at": ctx.clock.now(),
            }
        ],
        ["chat_key", "message_id"],
    )
    if not result.rowcount:
        return None
    row = (
        await session.execute(
            sa.select(col(HeldMessage.id)).where(
                col(HeldMessage.chat_key) == str(event.chat),
                col(HeldMessage.message_id) == str(message_id),
            )
        )
    ).scalar_one()
    logger.info("held %s in %s (%s)", message_id, event.chat, verdict.check)
    assert row is not None
    return int(row)


async def decide(
    session: AsyncSession, held_id: int, *, release: bool, by: str, now: datetime
) -> HeldMessage | None:
    """A moderator's decision on a held message; None when it is unknown or already decided.

    A release stores the original event in the core inbox, keyed by the held message, so it
    is handled once — by the handlers, without a second screening.
    """
    row = await session.get(HeldMessage, held_id)
    if row is None or row.decision is not None:
        return None
    row.decision = "released" if release else "dropped"
    row.decided_at = now
    row.decided_by = by
    if release:
        original = codec.decode(row.event)
        released = Released(
            chat=original.chat, author=original.author, at=now, held_id=held_id, original=original
        )
        await store_updates(
            session, CORE_PLATFORM, [(f"released:{held_id}", codec.encode(released))], now
        )
    return row


def held_post_key(held_id: int) -> str:
    """The name of the post that shows a held message to the moderators."""
    return f"held:{held_id}"


def moderation_chats(ctx: Context) -> list[ChatRef]:
    """Where moderators are told about held messages: the channels set aside for them."""
    return [
        ChatRef(channel.platform, channel.id, channel.thread)
        for channel in ctx.settings.channels
        if channel.purpose == "moderation"
    ]
