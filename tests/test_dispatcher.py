"""Routing and action dispatch rules of the core."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar

import pytest

from bot.events import (
    Action,
    BanMember,
    ChatRef,
    Delivery,
    SendMessage,
    Sent,
    UnsupportedAction,
)
from bot.platforms.base import Adapter
from bot.richtext import FormattedText


class OnlySends(Adapter):
    name: ClassVar[str] = "mini"
    ACTIONS: ClassVar[dict[type[Action], str]] = {SendMessage: "_send"}

    async def _send(self, action: SendMessage, delivery: Delivery) -> Sent:
        return Sent(action.chat, ("1",))


async def test_an_adapter_fails_loudly_on_an_action_it_cannot_perform() -> None:
    chat = ChatRef("mini", "1")
    adapter = OnlySends()
    assert await adapter.perform(SendMessage(chat=chat, content=FormattedText.plain("x"))) == Sent(
        chat, ("1",)
    )
    with pytest.raises(UnsupportedAction, match="mini cannot perform BanMember"):
        await adapter.perform(BanMember(chat=chat, user_id="9"))


def test_events_are_frozen() -> None:
    from dataclasses import FrozenInstanceError

    from bot.events import Author, MessageReceived

    event = MessageReceived(
        chat=ChatRef("console", "x"),
        author=Author(platform="console", user_id="u", display_name="U"),
        at=datetime(2026, 1, 1, tzinfo=UTC),
        message_id="1",
        content=FormattedText.plain("hi"),
    )
    with pytest.raises(FrozenInstanceError):
        event.message_id = "2"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/aide", ("aide", "")),
        ("/AIDE@forum_bot  bonjour  ", ("aide", "bonjour")),
        ("/langue en", ("langue", "en")),
        ("/aide@other_bot", None),
        ("bonjour /aide", None),
        ("/", None),
    ],
)
def test_parse_command(text: str, expected: tuple[str, str] | None) -> None:
    from bot.commands import parse_command

    parsed = parse_command(text, "forum_bot")
    assert (parsed.name, parsed.args) == expected if parsed else expected is None
