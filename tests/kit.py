"""A fake context for handler tests: a handler runs in milliseconds, without the app.

``fake_context(session, event)`` gives a handler what the dispatcher would: the transaction,
settings, a fixed clock, the translator, the acting person with chosen roles, and records of
the actions it queued and the signals it sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from bot.clock import Clock, FixedClock
from bot.config import Settings
from bot.events import Author, ChatRef, CommandReceived, Event, MessageReceived
from bot.handling import Command, Context, Person, Role
from bot.i18n import Translator
from bot.nlp import FrenchNlp
from bot.richtext import FormattedText

NOW = datetime(2026, 11, 25, 18, 30, tzinfo=UTC)
CHAT = ChatRef("telegram", "-100123")
MARIE = Author(platform="telegram", user_id="42", display_name="Marie")
# One French pipeline for every fake context: loading spaCy's model takes seconds, and it is
# loaded only by the tests that use it.
NLP = FrenchNlp()


def fake_context(
    session: Any,
    event: Event,
    *,
    settings: Settings | None = None,
    clock: Clock | None = None,
    roles: Iterable[Role] = (Role.RESIDENT,),
    person_id: int | None = 1,
    commands: Mapping[str, Command] | None = None,
    language: str = "fr",
) -> Context:
    """A Context as the dispatcher builds it; ``ctx.signals`` lists what the handler signalled."""
    signals: list[str] = []
    ctx = Context(
        session=session,
        settings=settings or Settings(database_url="sqlite+aiosqlite:///:memory:"),
        clock=clock or FixedClock(NOW),
        translator=Translator(language),
        event=event,
        person=Person(
            id=person_id,
            account_id=person_id,
            account_key=f"{event.author.platform}:{event.author.user_id}",
            roles=frozenset(roles),
        ),
        nlp=NLP,
        commands=commands or {},
        signal=signals.append,
    )
    ctx.signals = signals  # type: ignore[attr-defined]
    return ctx


def command(
    name: str,
    args: str = "",
    *,
    author: Author = MARIE,
    chat: ChatRef = CHAT,
    reply_to: str | None = None,
) -> CommandReceived:
    return CommandReceived(
        chat=chat, author=author, at=NOW, message_id="9", name=name, args=args, reply_to=reply_to
    )


def message(
    text: str, *, author: Author = MARIE, chat: ChatRef = CHAT, message_id: str = "10"
) -> MessageReceived:
    return MessageReceived(
        chat=chat,
        author=author,
        at=NOW,
        message_id=message_id,
        content=FormattedText.plain(text),
    )


def committed(ctx: Context) -> None:
    """Run what the dispatcher runs once the handler's transaction has committed."""
    for callback in ctx.after_commit:
        callback()
