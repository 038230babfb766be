"""Routes each event to its handler through one table and hands the actions to the adapters."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.config import Settings
from bot.events import (
    Action,
    Attachment,
    ButtonPressed,
    CommandReceived,
    Event,
    FormSubmitted,
    MessageReceived,
    PermanentFailure,
    SendFile,
    SendMessage,
    Sent,
)
from bot.i18n import Translator
from bot.inbox import mark_handled, record_failure
from bot.richtext import FormattedText
from storage import repository
from storage.db import Database

if TYPE_CHECKING:
    from bot.outbox import Outbox
    from bot.platforms.base import Adapter
    from handlers import Command, EventHandler

logger = logging.getLogger(__name__)


@dataclass
class Context:
    """What a handler may use: the transaction, settings, clock and the reader's language.

    ``session`` is the one transaction in which the event is handled: what the handler writes,
    the actions it returns (queued in the outbox) and the mark that the update was handled all
    commit together or not at all.
    """

    session: AsyncSession
    db: Database
    settings: Settings
    clock: Clock
    event: Event
    translator: Translator
    dispatcher: Dispatcher
    moderator: bool = False

    def is_moderator(self) -> bool:
        """Whether the author may use staff commands here (checked when the event came in)."""
        return self.moderator

    @property
    def language(self) -> str:
        return self.translator.language

    def t(self, message: str, /, **values: object) -> str:
        """Translate for whoever triggered the event."""
        return self.translator.t(message, **values)

    def tn(self, singular: str, plural: str, n: int, /, **values: object) -> str:
        return self.translator.tn(singular, plural, n, **values)

    def reply(self, text: str | FormattedText, **options: object) -> SendMessage:
        """An answer in the same chat, as a reply to the triggering message when there is one."""
        event = self.event
        content = text if isinstance(text, FormattedText) else FormattedText.plain(text)
        reply_to = getattr(event, "message_id", None)
        interaction_id = getattr(event, "interaction_id", None)
        return SendMessage(
            chat=event.chat,
            content=content,
            reply_to=reply_to,
            interaction_id=interaction_id,
            **options,  # type: ignore[arg-type]
        )


class Dispatcher:
    """The one place where events meet handlers and actions meet platforms."""

    def __init__(
        self,
        *,
        db: Database,
        settings: Settings,
        clock: Clock,
        commands: Mapping[str, Command],
        unknown_command: EventHandler,
        buttons: Mapping[str, EventHandler],
        events: Mapping[type[Event], Sequence[EventHandler]],
        forms: Mapping[str, EventHandler] | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.commands = commands
        self.unknown_command = unknown_command
        self.buttons = buttons
        self.forms = forms or {}
        self.events = events
        self.adapters: dict[str, Adapter] = {}
        self.outbox: Outbox | None = None
        # Counts handled events; lets tests and tools wait for progress without polling.
        self.handled_count = 0
        self._languages: dict[tuple[str, str], tuple[float, str | None]] = {}
        self._handled = asyncio.Condition()

    def register(self, adapter: Adapter) -> None:
        self.adapters[adapter.name] = adapter

    LANGUAGE_TTL = 60.0

    def forget_languages(self) -> None:
        """Drop cached language choices (after /langue)."""
        self._languages.clear()

    async def translator_for(self, session: AsyncSession, event: Event) -> Translator:
        # Looked up for every event; cached briefly since it changes only with /langue (and
        # another process's /langue shows within a minute).
        key = (str(event.chat), f"{event.author.platform}:{event.author.user_id}")
        cached = self._languages.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.LANGUAGE_TTL:
            chosen = cached[1]
        else:
            chosen = await repository.language_for(session, event.chat, event.author)
            if len(self._languages) > 10_000:
                self._languages.clear()
            self._languages[key] = (now, chosen)
        if chosen is None:
            for channel in self.settings.channels:
                if (
                    channel.platform == event.chat.platform
                    and channel.id == event.chat.chat_id
                    and channel.language
                ):
                    chosen = channel.language
                    break
        return Translator(chosen or self.settings.language)

    async def handle(self, event: Event, *, inbox_id: int | None = None) -> None:
        """Handle ``event`` in one transaction and queue its actions; never raises for a resident.

        ``inbox_id`` names the stored raw update the event came from: it is marked handled in
        the same transaction, so a crash either re-runs all of it or none of it. A handler
        failure leaves the update pending for another try; after ``MAX_ATTEMPTS`` the resident
        gets an apology and the update is set aside with its error.
        """
        try:
            await self._handle(event, inbox_id)
        finally:
            await self._count_handled()

    async def _handle(self, event: Event, inbox_id: int | None) -> None:
        assert self.outbox is not None, "the composition root sets the outbox"
        source_key = f"inbox:{inbox_id}" if inbox_id is not None else f"event:{uuid.uuid4().hex}"
        if isinstance(event, MessageReceived) and event.from_relay:
            if inbox_id is not None:
                async with self.db.write() as session:
                    await mark_handled(session, inbox_id, self.clock.now())
            return
        try:
            # Rights are asked of the platform now, before the transaction: no stale cache,
            # and no network call while holding the database's write lock.
            moderator = await self.can_moderate(event)
            async with self.db.write() as session:
                translator = await self.translator_for(session, event)
                ctx = Context(
                    session, self.db, self.settings, self.clock, event, translator, self, moderator
                )
                actions = await self._route(ctx, event)
                chats = await self._commit(session, actions, source_key, inbox_id)
            self.outbox.wake(chats)
            return
        except Exception as exc:
            logger.exception("handler failed", extra={"event": type(event).__name__})
            error = f"{type(exc).__name__}: {exc}"
        async with self.db.write() as session:
            if inbox_id is not None and not await record_failure(
                session, inbox_id, error, self.MAX_ATTEMPTS
            ):
                return
            actions = self._apology(event, Translator(self.settings.language))
            chats = await self._commit(session, actions, source_key, inbox_id)
        self.outbox.wake(chats)

    MAX_ATTEMPTS = 3

    async def _count_handled(self) -> None:
        async with self._handled:
            self.handled_count += 1
            self._handled.notify_all()

    async def wait_until(self, check: Callable[[], Awaitable[bool]]) -> None:
        """Return once ``check()`` holds, re-checking after each handled event.

        Callers bound the wait with ``asyncio.timeout``.
        """
        while True:
            seen = self.handled_count
            if await check():
                return
            await self._wait_past(seen)

    async def _wait_past(self, seen: int) -> None:
        async with self._handled:
            await self._handled.wait_for(lambda: self.handled_count > seen)

    async def can_moderate(self, event: Event) -> bool:
        """Moderator by the settings, or an administrator of the chat on its platform."""
        author = event.author
        if f"{author.platform}:{author.user_id}" in self.settings.roles.moderators:
            return True
        if not isinstance(event, CommandReceived):
            return False
        command = self.commands.get(event.name)
        if command is None or not command.staff_only:
            return False
        adapter = self.adapters.get(event.chat.platform)
        return adapter is not None and await adapter.is_admin(event.chat, author)

    async def _commit(
        self,
        session: AsyncSession,
        actions: Sequence[Action],
        source_key: str,
        inbox_id: int | None,
    ) -> set[str]:
        assert self.outbox is not None
        chats = await self.outbox.enqueue(session, actions, source_key=source_key)
        if inbox_id is not None:
            await mark_handled(session, inbox_id, self.clock.now())
        return chats

    def _apology(self, event: Event, translator: Translator) -> list[Action]:
        text = translator.t(
            "Sorry, something went wrong on our side. "
            "Your message is safe; please try again in a moment."
        )
        if isinstance(event, MessageReceived):
            # Announcing a failed plain message in the group would only be noise.
            return []
        return [
            SendMessage(
                chat=event.chat,
                content=FormattedText.plain(text),
                reply_to=getattr(event, "message_id", None),
                interaction_id=getattr(event, "interaction_id", None),
            )
        ]

    async def _route(self, ctx: Context, event: Event) -> list[Action]:
        if isinstance(event, CommandReceived):
            command = self.commands.get(event.name)
            if command is None:
                return list(await self.unknown_command(ctx, event))
            if command.staff_only and not ctx.is_moderator():
                return [ctx.reply(ctx.t("Only moderators can use /{command}.", command=event.name))]
            return list(await command.handler(ctx, event))
        if isinstance(event, ButtonPressed | FormSubmitted):
            data = event.data if isinstance(event, ButtonPressed) else event.form_id
            table = self.buttons if isinstance(event, ButtonPressed) else self.forms
            prefix = data.split(":", 1)[0]
            handler = table.get(prefix)
            if handler is None:
                logger.warning("no handler for %r", data)
                return []
            return list(await handler(ctx, event))
        actions: list[Action] = []
        for handler in self.events.get(type(event), ()):
            actions.extend(await handler(ctx, event))
        return actions

    async def perform(self, action: Action) -> Sent | None:
        adapter = self.adapters.get(action.platform)
        if adapter is None:
            raise PermanentFailure(f"no adapter for platform {action.platform!r}")
        if isinstance(action, SendMessage) and action.attachments:
            return await self._carry_files(adapter, action)
        return await adapter.perform(action)

    async def _carry_files(self, adapter: Adapter, action: SendMessage) -> Sent:
        """Relay files: fetched from the origin platform within the destination's limit."""
        source = self.adapters.get(action.origin.chat.platform) if action.origin else None
        translator = Translator(self.settings.language)
        files: list[tuple[Attachment, bytes]] = []
        notices: list[str] = []
        for attachment in action.attachments:
            data = await source.download(attachment, adapter.max_upload) if source else None
            if data is None:
                # Over the limit (or unreachable): a short notice, never a crash.
                notices.append(
                    translator.t(
                        "📎 {name} is too large to be carried over; see it on {platform}.",
                        name=attachment.filename or attachment.kind,
                        platform=(
                            action.origin.chat.platform if action.origin else "?"
                        ).capitalize(),
                    )
                )
            else:
                files.append((attachment, data))
        content = action.content
        for notice in notices:
            content = content + FormattedText.plain(("\n" if content.text else "") + notice)
        ids: list[str] = []
        caption_fits = len(files) == 1 and len(content.text) <= 900
        if (content.text and not caption_fits) or not files:
            sent = await adapter.perform(replace(action, content=content, attachments=()))
            ids.extend(sent.message_ids if sent else ())
            content = FormattedText.plain("")
        for index, (attachment, data) in enumerate(files):
            sent = await adapter.perform(
                SendFile(
                    chat=action.chat,
                    filename=attachment.filename or f"{attachment.kind}-{index + 1}",
                    data=data,
                    mime_type=attachment.mime_type or "application/octet-stream",
                    caption=content if content.text else None,
                    reply_to=action.reply_to if not ids else None,
                    as_name=action.as_name,
                )
            )
            content = FormattedText.plain("")
            ids.extend(sent.message_ids if sent else ())
        return Sent(action.chat, tuple(ids))
