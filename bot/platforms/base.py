"""What every platform adapter offers the core, and the dispatch of actions by type."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

from bot.events import (
    NO_DELIVERY,
    Action,
    Attachment,
    Author,
    ChatRef,
    Delivery,
    Event,
    SendMessage,
    Sent,
    UnsupportedAction,
)
from bot.outbox import Pace
from bot.richtext import FormattedText

if TYPE_CHECKING:
    from bot.dispatcher import Dispatcher

logger = logging.getLogger(__name__)

EventSink = Callable[[Event], Awaitable[Any]]


class Adapter:
    """One platform. Subclasses map action types to coroutine methods in ``ACTIONS``."""

    name: ClassVar[str] = "abstract"
    ACTIONS: ClassVar[dict[type[Action], str]] = {}
    # The largest file the platform accepts from a bot.
    max_upload: ClassVar[int] = 10 * 1024 * 1024
    # The longest message, in characters (None: no limit).
    max_text: ClassVar[int | None] = None
    # Whether a post that may have landed before a crash can be found again (Discord: by
    # nonce or in the channel's history); where not, merged posts are made in two steps.
    finds_lost_posts: ClassVar[bool] = False

    async def start(self, dispatcher: Dispatcher) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def is_admin(self, chat: ChatRef, author: Author) -> bool:
        """Whether ``author`` administers ``chat`` on the platform, asked now."""
        return False

    async def roles(self, chat: ChatRef, author: Author) -> frozenset[str]:
        """The roles the platform gives ``author`` in ``chat`` ("moderator", "council"),
        asked now; the dispatcher caches them briefly."""
        return frozenset({"moderator"}) if await self.is_admin(chat, author) else frozenset()

    async def download(self, attachment: Attachment, limit: int) -> bytes | None:
        """The bytes of a file residents posted here; None when larger than ``limit``."""
        return None

    def pace(self, chat: ChatRef) -> Pace | None:
        """How fast the outbox may post in ``chat`` (None: no limit known)."""
        return None

    @staticmethod
    def quoted(action: SendMessage, *, native_reply: bool) -> FormattedText:
        """The text to post: with the short quote of the replied-to message unless the platform
        shows a native reply."""
        if action.reply_fallback is None or (native_reply and action.reply_to):
            return action.content
        return action.reply_fallback + FormattedText.plain("\n") + action.content

    async def perform(self, action: Action, delivery: Delivery = NO_DELIVERY) -> Sent | None:
        """Carry out ``action``; raise UnsupportedAction for a type this platform lacks.

        ``delivery`` is the outbox's bookkeeping for this try (idempotency key, parts already
        sent, every part of an edited message).
        """
        method_name = self.ACTIONS.get(type(action))
        if method_name is None:
            raise UnsupportedAction(self.name, action)
        method: Callable[[Any, Delivery], Awaitable[Sent | None]] = getattr(self, method_name)
        return await method(action, delivery)
