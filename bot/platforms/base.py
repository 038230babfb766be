"""What every platform adapter offers the core, and the dispatch of actions by type."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

from bot.events import Action, Author, ChatRef, Event, Sent, UnsupportedAction
from bot.outbox import Pace

if TYPE_CHECKING:
    from bot.dispatcher import Dispatcher

logger = logging.getLogger(__name__)

EventSink = Callable[[Event], Awaitable[Any]]


class Adapter:
    """One platform. Subclasses map action types to coroutine methods in ``ACTIONS``."""

    name: ClassVar[str] = "abstract"
    ACTIONS: ClassVar[dict[type[Action], str]] = {}

    async def start(self, dispatcher: Dispatcher) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def is_admin(self, chat: ChatRef, author: Author) -> bool:
        """Whether ``author`` administers ``chat`` on the platform, asked now."""
        return False

    def pace(self, chat: ChatRef) -> Pace | None:
        """How fast the outbox may post in ``chat`` (None: no limit known)."""
        return None

    async def perform(self, action: Action) -> Sent | None:
        """Carry out ``action``; raise UnsupportedAction for a type this platform lacks."""
        method_name = self.ACTIONS.get(type(action))
        if method_name is None:
            raise UnsupportedAction(self.name, action)
        method: Callable[[Any], Awaitable[Sent | None]] = getattr(self, method_name)
        return await method(action)
