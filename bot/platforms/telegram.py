"""Telegram, through python-telegram-bot (v22): updates in, actions out.

Delivery is durable. python-telegram-bot's own Updater confirms an update to Telegram before a
handler has finished, so a crash would lose it; this adapter owns the loop instead: it stores
every raw update in the inbox (unique ``update_id``), confirms the offset only after that commit,
and handles what is stored. Webhook mode does the same behind its own small web handler, which
answers 200 only after the commit and 403 (writing nothing) to a request without the secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import json
import logging
import os
import re
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp import web
from telegram import (
    Bot,
    BotCommand,
    BotCommandScopeDefault,
    ChatPermissions,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.ext import AIORateLimiter, Application, ApplicationBuilder
from telegram.request import HTTPXRequest

from bot import inbox
from bot.clock import Clock
from bot.commands import parse_command
from bot.config import Settings
from bot.events import (
    Action,
    AnswerButton,
    Attachment,
    Author,
    BanMember,
    Button,
    ButtonPressed,
    ChatRef,
    Choice,
    CommandReceived,
    DeleteMessage,
    Delivery,
    DeliveryError,
    EditMessage,
    Event,
    MemberJoined,
    MemberLeft,
    MessageEdited,
    MessageReceived,
    MuteMember,
    OpenThread,
    PartialDelivery,
    PermanentFailure,
    PinMessage,
    RateLimited,
    SendFile,
    SendMessage,
    Sent,
    TemporaryFailure,
    UnbanMember,
    UnpinMessage,
)
from bot.inbox import InboxRunner
from bot.outbox import Pace
from bot.platforms.base import Adapter
from bot.richtext import (
    FormattedText,
    defuse_telegram_mentions,
    from_telegram_entities,
    split,
    to_telegram_html,
    utf16_len,
)
from bot.richtext.sanitizing import sanitize
from storage.db import Database

if TYPE_CHECKING:
    from bot.dispatcher import Dispatcher

logger = logging.getLogger(__name__)

PLATFORM = "telegram"
MAX_TEXT = 4096
MAX_CAPTION = 1024
ALLOWED_UPDATES = ("message", "edited_message", "callback_query", "chat_member", "my_chat_member")
# Telegram's documented limits: 20 messages a minute in a group, about one a second in any
# chat (short bursts of a few pass), about 30 a second overall.
GROUP_PACE = Pace(20, 60.0, burst_count=3, burst_window=3.0)
PRIVATE_PACE = Pace(1, 1.0)
# A forum topic's name holds 1 to 128 characters.
MAX_TOPIC_NAME = 128
# A file URL that redirects more than this is going round in circles.
MAX_REDIRECTS = 3
DOWNLOAD_CHUNK = 64 * 1024


class TelegramAdapter(Adapter):
    """One Telegram bot; stores updates before handling them and performs neutral actions."""

    name: ClassVar[str] = PLATFORM
    max_upload: ClassVar[int] = 50 * 1024 * 1024
    max_text: ClassVar[int | None] = MAX_TEXT
    ACTIONS: ClassVar[dict[type[Action], str]] = {
        SendMessage: "_send",
        SendFile: "_send_file",
        EditMessage: "_edit",
        DeleteMessage: "_delete",
        AnswerButton: "_answer",
        PinMessage: "_pin",
        UnpinMessage: "_unpin",
        MuteMember: "_mute",
        BanMember: "_ban",
        UnbanMember: "_unban",
        OpenThread: "_open_thread",
    }

    def __init__(
        self,
        settings: Settings,
        db: Database,
        clock: Clock,
        *,
        poll_timeout: int = 30,
        rate_scale: float | None = None,
    ) -> None:
        if settings.telegram_token is None:
            raise ValueError("TELEGRAM_TOKEN is not set")
        # python-telegram-bot warns on every integer time period unless told to use
        # timedeltas, which is what this adapter reads anyway.
        os.environ.setdefault("PTB_TIMEDELTA", "true")
        self.settings = settings
        self.db = db
        self.clock = clock
        self.poll_timeout = poll_timeout
        self.rate_scale = rate_scale = rate_scale or settings.rate_limit_scale
        token = settings.telegram_token.get_secret_value()
        api = settings.telegram_api_url.rstrip("/")
        self._updates_request = _RawUpdates(connection_pool_size=1)
        self.application: Application[Any, Any, Any, Any, Any, Any] = (
            ApplicationBuilder()
            .token(token)
            .base_url(f"{api}/bot")
            .base_file_url(f"{api}/file/bot")
            .updater(None)
            .get_updates_request(self._updates_request)
            # No retries inside the limiter: on a 429 it would pause *every* chat; the outbox
            # instead holds back only the chat that was told to wait.
            .rate_limiter(
                AIORateLimiter(
                    overall_max_rate=30,
                    overall_time_period=1 * rate_scale,
                    group_max_rate=20,
                    group_time_period=60 * rate_scale,
                    max_retries=0,
                )
            )
            .build()
        )
        # The limiter logs every 429 it passes on as an error with a traceback; a 429 is
        # routine here and the outbox logs it once, briefly.
        logging.getLogger("telegram.ext.AIORateLimiter").setLevel(logging.CRITICAL)
        self.username: str | None = None
        self.bot_id: int | None = None
        self._dispatcher: Dispatcher | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._inbox: InboxRunner | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = False
        # Updates as PTB parsed them from getUpdates, by id, until the inbox hands them on:
        # parsing the stored payload again costs as much as the rest of a message's handling.
        # After a restart the stored payload is parsed.
        self._parsed: dict[int, Update] = {}

    @property
    def bot(self) -> Bot:
        return self.application.bot

    # -- life cycle -------------------------------------------------------------------------

    async def start(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher
        await self.application.initialize()
        me = self.bot.bot
        self.username, self.bot_id = me.username, me.id
        await self._register_commands(dispatcher)
        self._inbox = dispatcher.inbox_runner(PLATFORM, self._decode)
        if self.settings.telegram_mode == "webhook":
            await self._start_webhook()
        else:
            with contextlib.suppress(TelegramError):
                await self.bot.delete_webhook()
            self._tasks.append(asyncio.create_task(self._poll_loop(), name="telegram-poll"))
        self._inbox.start()  # handles what a previous run stored but did not handle

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._inbox is not None:
            await self._inbox.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.application.shutdown()

    async def _register_commands(self, dispatcher: Dispatcher) -> None:
        from bot.i18n import Translator

        for language in ("fr", "en"):
            translator = Translator(language)
            commands = [
                BotCommand(name, translator.t(command.summary)[:256])
                for name, command in dispatcher.commands.items()
                if not command.hidden and name.isascii() and name.replace("_", "").isalnum()
            ]
            try:
                await self.bot.set_my_commands(
                    commands,
                    scope=BotCommandScopeDefault(),
                    language_code=None if language == "fr" else language,
                )
            except TelegramError as exc:
                logger.warning("could not register commands (%s): %s", language, exc)

    # -- receiving: polling -----------------------------------------------------------------

    # A bound on updates kept parsed (the inbox takes them as fast as they are stored).
    PARSED_KEPT = 10_000

    async def _poll_loop(self) -> None:
        cursor = await inbox.get_cursor(self.db, PLATFORM, "offset")
        offset = int(cursor) if cursor else None
        failures = 0
        while not self._stopping:
            try:
                updates = await self.bot.get_updates(
                    offset=offset,
                    timeout=timedelta(seconds=self.poll_timeout),
                    allowed_updates=list(ALLOWED_UPDATES),
                    read_timeout=self.poll_timeout + 10,
                )
                failures = 0
            except RetryAfter as exc:
                await asyncio.sleep(_seconds(exc.retry_after))
                continue
            except (InvalidToken, Conflict) as exc:
                # Another instance polls with this token, or the token was revoked: retrying
                # fast would only hammer Telegram.
                logger.error("Telegram refused polling: %s", exc)
                await asyncio.sleep(30)
                continue
            except (NetworkError, TelegramError) as exc:
                failures += 1
                delay = min(60.0, 0.5 * 2 ** min(failures, 7))
                logger.warning("getUpdates failed (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                continue
            if not updates:
                continue
            next_offset = max(u.update_id for u in updates) + 1
            if len(self._parsed) > self.PARSED_KEPT:
                self._parsed.clear()
            self._parsed.update((u.update_id, u) for u in updates)
            # Stored as Telegram sent them: the same as to_dict() of the parsed updates, which
            # would cost as much as the rest of the message's handling.
            raw = {int(u["update_id"]): u for u in self._updates_request.taken()}
            await self._store(
                [(u.update_id, raw.get(u.update_id) or u.to_dict()) for u in updates], next_offset
            )
            # Telegram forgets these updates only when the next getUpdates carries the new
            # offset, which happens after the commit above.
            offset = next_offset

    async def _store(
        self, updates: Sequence[tuple[int, dict[str, Any]]], offset: int | None
    ) -> None:
        async with self.db.write() as session:
            await inbox.store_updates(
                session,
                PLATFORM,
                [(str(uid), payload) for uid, payload in updates],
                self.clock.now(),
            )
            if offset is not None:
                await inbox.set_cursor(session, PLATFORM, "offset", str(offset), self.clock.now())
        if self._inbox is not None:
            self._inbox.wake()

    # -- receiving: webhook -----------------------------------------------------------------

    async def _start_webhook(self) -> None:
        settings = self.settings
        secret = settings.telegram_webhook_secret
        if secret is None or not settings.telegram_webhook_url:
            raise ValueError("webhook mode needs TELEGRAM_WEBHOOK_URL and TELEGRAM_WEBHOOK_SECRET")
        app = web.Application(client_max_size=2 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", self._webhook_request)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, settings.telegram_webhook_listen, settings.telegram_webhook_port
        )
        await site.start()
        await self.bot.set_webhook(
            url=settings.telegram_webhook_url,
            secret_token=secret.get_secret_value(),
            allowed_updates=list(ALLOWED_UPDATES),
        )

    async def _webhook_request(self, request: web.Request) -> web.Response:
        secret = self.settings.telegram_webhook_secret
        assert secret is not None
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not hmac.compare_digest(given.encode(), secret.get_secret_value().encode()):
            return web.Response(status=403, text="forbidden")
        try:
            payload = json.loads(await request.read())
            update_id = int(payload["update_id"])
        except (ValueError, KeyError, TypeError):
            return web.Response(status=400, text="not an update")
        # Telegram retries until it gets a 200, which is sent only once the update is stored.
        await self._store([(update_id, payload)], None)
        return web.Response(status=200, text="ok")

    # -- handling stored updates ------------------------------------------------------------

    def _decode(self, payload: Mapping[str, Any]) -> Event | None:
        update = self._parsed.pop(payload.get("update_id"), None)  # type: ignore[arg-type]
        if update is None:
            update = Update.de_json(dict(payload), self.bot)
        return self.to_event(update)

    # -- updates to events ------------------------------------------------------------------

    def _author(self, message: Message) -> Author:
        if message.sender_chat is not None:
            # Sent "on behalf of" a channel, or by an anonymous group administrator (the
            # group itself); never a person's account.
            chat = message.sender_chat
            return Author(
                platform=PLATFORM,
                user_id=f"chat{chat.id}",
                display_name=chat.title or chat.username or str(chat.id),
                sender_chat_id=str(chat.id),
            )
        user = message.from_user
        if user is None:
            return Author(platform=PLATFORM, user_id="unknown", display_name="?")
        return Author(
            platform=PLATFORM,
            user_id=str(user.id),
            display_name=user.full_name,
            username=user.username,
            is_bot=user.is_bot,
            language=(user.language_code or "")[:2] or None,
        )

    @staticmethod
    def chat_ref(message: Message) -> ChatRef:
        thread = (
            str(message.message_thread_id)
            if message.is_topic_message and message.message_thread_id
            else None
        )
        return ChatRef(PLATFORM, str(message.chat.id), thread)

    def serves(self, chat_id: int) -> bool:
        """Groups listed in the settings (all groups when none is listed); private chats."""
        listed = self.settings.served_chat_ids(PLATFORM)
        return chat_id > 0 or not listed or str(chat_id) in listed

    def to_event(self, update: Update) -> Event | None:
        """The neutral event for ``update``, or None for what the bot ignores."""
        effective = update.effective_chat
        if effective is not None and not self.serves(effective.id):
            logger.info("ignoring an update from chat %s, not served", effective.id)
            return None
        if update.callback_query is not None:
            query = update.callback_query
            message = query.message
            if message is None or query.data is None:
                return None
            user = query.from_user
            return ButtonPressed(
                chat=ChatRef(PLATFORM, str(message.chat.id)),
                author=Author(
                    platform=PLATFORM,
                    user_id=str(user.id),
                    display_name=user.full_name,
                    username=user.username,
                    language=(user.language_code or "")[:2] or None,
                ),
                at=self.clock.now(),
                data=query.data,
                message_id=str(message.message_id),
                interaction_id=query.id,
            )
        if update.edited_message is not None:
            message = update.edited_message
            return MessageEdited(
                chat=self.chat_ref(message),
                author=self._author(message),
                at=(message.edit_date or message.date).astimezone(UTC),
                message_id=str(message.message_id),
                content=self._content(message),
            )
        message = update.message
        if message is None:
            return None
        chat = self.chat_ref(message)
        author = self._author(message)
        at = message.date.astimezone(UTC)
        if message.new_chat_members:
            member = message.new_chat_members[0]
            return MemberJoined(
                chat=chat,
                author=Author(
                    platform=PLATFORM, user_id=str(member.id), display_name=member.full_name
                ),
                at=at,
            )
        if message.left_chat_member is not None:
            member = message.left_chat_member
            return MemberLeft(
                chat=chat,
                author=Author(
                    platform=PLATFORM, user_id=str(member.id), display_name=member.full_name
                ),
                at=at,
            )
        content = self._content(message)
        reply_to = (
            str(message.reply_to_message.message_id)
            if message.reply_to_message is not None
            # In a forum topic every message "replies" to the topic's first message.
            and message.reply_to_message.message_id != message.message_thread_id
            else None
        )
        if message.text and message.text.startswith("/"):
            command = parse_command(message.text, self.username)
            if command is not None:
                return CommandReceived(
                    chat=chat,
                    author=author,
                    at=at,
                    message_id=str(message.message_id),
                    name=command.name,
                    args=command.args,
                    reply_to=reply_to,
                )
        attachments = self._attachments(message)
        if not content.text and not attachments:
            return None
        return MessageReceived(
            chat=chat,
            author=author,
            at=at,
            message_id=str(message.message_id),
            content=content,
            reply_to=reply_to,
            attachments=attachments,
            from_relay=author.is_bot
            and message.from_user is not None
            and message.from_user.id == self.bot_id,
        )

    @staticmethod
    def _content(message: Message) -> FormattedText:
        if message.text is not None:
            return from_telegram_entities(
                message.text, [e.to_dict() for e in message.entities or ()]
            )
        if message.caption is not None:
            return from_telegram_entities(
                message.caption, [e.to_dict() for e in message.caption_entities or ()]
            )
        return FormattedText.plain("")

    @staticmethod
    def _attachments(message: Message) -> tuple[Attachment, ...]:
        if message.photo:
            best = message.photo[-1]
            return (Attachment("photo", best.file_id, "photo.jpg", "image/jpeg", best.file_size),)
        if message.document is not None:
            doc = message.document
            return (
                Attachment("document", doc.file_id, doc.file_name, doc.mime_type, doc.file_size),
            )
        if message.sticker is not None:
            sticker = message.sticker
            fallback = f"[autocollant {sticker.emoji or ''}]".replace(" ]", "]")
            return (Attachment("sticker", sticker.file_id, fallback=fallback),)
        for kind in ("voice", "audio", "video", "animation", "video_note"):
            media = getattr(message, kind)
            if media is not None:
                return (
                    Attachment(
                        kind,
                        media.file_id,
                        getattr(media, "file_name", None),
                        getattr(media, "mime_type", None),
                        media.file_size,
                    ),
                )
        return ()

    # -- permissions ------------------------------------------------------------------------

    async def is_admin(self, chat: ChatRef, author: Author) -> bool:
        """Whether ``author`` administers ``chat`` right now (asked, never cached)."""
        if author.sender_chat_id is not None:
            # Only administrators can post anonymously as the group itself; a post on
            # behalf of a channel proves nothing about rights in this group.
            return author.sender_chat_id == chat.chat_id
        if not author.user_id.lstrip("-").isdigit():
            return False
        try:
            member = await self.bot.get_chat_member(int(chat.chat_id), int(author.user_id))
        except TelegramError as exc:
            logger.warning("could not check rights in %s: %s", chat, exc)
            return False
        return member.status in ("creator", "administrator")

    # -- pacing -----------------------------------------------------------------------------

    def pace(self, chat: ChatRef) -> Pace | None:
        base = GROUP_PACE if chat.chat_id.startswith("-") else PRIVATE_PACE
        return base.scaled(self.rate_scale)

    # -- performing actions -----------------------------------------------------------------

    def _parts(self, content: FormattedText, as_name: str | None, limit: int) -> list[_Part]:
        """Parts within ``limit`` visible characters, the author's name on the first."""
        pieces = split(content, _budget(as_name, limit), measure=utf16_len) or [EMPTY]
        return [_part(piece, as_name if index == 0 else None) for index, piece in enumerate(pieces)]

    @staticmethod
    def _markup(
        buttons: Sequence[Sequence[Button]], choice: Choice | None = None
    ) -> InlineKeyboardMarkup | None:
        rows = [
            [InlineKeyboardButton(b.label, callback_data=b.data) for b in row] for row in buttons
        ]
        if choice is not None:
            # Telegram has no select menu: one button per option, two per row.
            options = [
                InlineKeyboardButton(label, callback_data=f"{choice.data}:{value}")
                for label, value in choice.options
            ]
            rows.extend(options[i : i + 2] for i in range(0, len(options), 2))
        return InlineKeyboardMarkup(rows) if rows else None

    async def _send(self, action: SendMessage, delivery: Delivery) -> Sent:
        chat_id = int(action.chat.chat_id)
        thread = int(action.chat.thread_id) if action.chat.thread_id else None
        content = self.quoted(action, native_reply=True)
        parts = self._parts(content, action.as_name, MAX_TEXT)
        ids: list[str] = list(delivery.sent_parts)
        for index, part in enumerate(parts):
            if index < len(delivery.sent_parts):
                continue
            last = index == len(parts) - 1
            reply = (
                ReplyParameters(int(action.reply_to), allow_sending_without_reply=True)
                if action.reply_to and index == 0
                else None
            )
            markup = self._markup(action.buttons, action.choice) if last else None
            try:
                message = await self._call(
                    self._send_text(chat_id, thread, part, reply, markup, silent=action.silent)
                )
            except DeliveryError as exc:
                if ids:
                    raise PartialDelivery(tuple(ids), exc) from exc
                raise
            ids.append(str(message.message_id))
        return Sent(action.chat, tuple(ids))

    async def _send_text(
        self,
        chat_id: int,
        thread: int | None,
        part: _Part,
        reply: ReplyParameters | None,
        markup: InlineKeyboardMarkup | None,
        *,
        silent: bool,
    ) -> Message:
        try:
            return await self.bot.send_message(
                chat_id,
                part.html,
                parse_mode=ParseMode.HTML,
                message_thread_id=thread,
                reply_parameters=reply,
                reply_markup=markup,
                disable_notification=silent,
            )
        except BadRequest as exc:
            if not _refused_formatting(exc):
                raise
            # Better plain than lost: Telegram refused the formatting, not the message.
            logger.warning("Telegram refused the formatting (%s); sending plain text", exc)
            return await self.bot.send_message(
                chat_id,
                part.plain,
                message_thread_id=thread,
                reply_parameters=reply,
                reply_markup=markup,
                disable_notification=silent,
            )

    async def _send_file(self, action: SendFile, delivery: Delivery) -> Sent:
        chat_id = int(action.chat.chat_id)
        thread = int(action.chat.thread_id) if action.chat.thread_id else None
        caption: _Part | None = None
        rest: list[_Part] = []
        if action.caption is not None or action.as_name:
            # A caption holds 1,024 characters: the file carries the start of the text and
            # what does not fit follows as messages, cut like any long text.
            piece, more = _take(action.caption or EMPTY, _budget(action.as_name, MAX_CAPTION))
            caption = _part(piece, action.as_name)
            rest = [
                _part(p, None)
                for p in split(more, _budget(action.as_name, MAX_TEXT), measure=utf16_len)
            ]
        # Parts an earlier try posted are skipped. They can only be this file's when its text
        # runs past the caption: the dispatcher hands the same delivery to a relay's text
        # message and then its files, and a file with a short caption must never be skipped.
        done = delivery.sent_parts if rest else ()
        ids: list[str] = list(done)
        if not done:
            reply = (
                ReplyParameters(int(action.reply_to), allow_sending_without_reply=True)
                if action.reply_to
                else None
            )
            message = await self._call(self._send_media(chat_id, thread, action, caption, reply))
            ids.append(str(message.message_id))
        for index, part in enumerate(rest, start=1):
            if index < len(done):
                continue
            try:
                message = await self._call(
                    self._send_text(chat_id, thread, part, None, None, silent=False)
                )
            except DeliveryError as exc:
                raise PartialDelivery(tuple(ids), exc) from exc
            ids.append(str(message.message_id))
        return Sent(action.chat, tuple(ids))

    async def _send_media(
        self,
        chat_id: int,
        thread: int | None,
        action: SendFile,
        caption: _Part | None,
        reply: ReplyParameters | None,
    ) -> Message:
        async def send(text: str | None, parse_mode: str | None) -> Message:
            if action.mime_type.startswith("image/") and action.mime_type != "image/svg+xml":
                return await self.bot.send_photo(
                    chat_id,
                    action.data,
                    caption=text,
                    parse_mode=parse_mode,
                    message_thread_id=thread,
                    reply_parameters=reply,
                )
            return await self.bot.send_document(
                chat_id,
                action.data,
                filename=action.filename,
                caption=text,
                parse_mode=parse_mode,
                message_thread_id=thread,
                reply_parameters=reply,
            )

        try:
            return await send((caption.html if caption else None) or None, ParseMode.HTML)
        except BadRequest as exc:
            if caption is None or not _refused_formatting(exc):
                raise
            logger.warning("Telegram refused the formatting (%s); captioning in plain text", exc)
            return await send(caption.plain or None, None)

    async def _edit(self, action: EditMessage, delivery: Delivery) -> Sent | None:
        """Edit every part of a message; what no longer fits is posted after it.

        A message sent in N parts stays N messages (an edit cannot add one in place): each
        part carries as much of the new text as it holds, a part left with nothing shows an
        ellipsis, and the rest is posted as new messages replying to the last part. Their ids
        come back in ``Sent`` after the parts'.
        """
        chat_id = int(action.chat.chat_id)
        ids = list(delivery.part_ids) or ([action.message_id] if action.message_id else [])
        if not ids:
            return None
        remaining = action.content
        for index, message_id in enumerate(ids):
            last = index == len(ids) - 1
            # The buttons stay on the last part the outbox knows of, where a later edit
            # reaches them again.
            markup = self._markup(action.buttons) if action.buttons is not None and last else None
            remaining = await self._call(
                self._edit_part(
                    chat_id, int(message_id), remaining, action.as_name, index == 0, markup
                )
            )
        if not remaining.text:
            return None
        thread = int(action.chat.thread_id) if action.chat.thread_id else None
        pieces = split(remaining, _budget(action.as_name, MAX_TEXT), measure=utf16_len)
        added: list[str] = []
        for index, piece in enumerate(pieces):
            reply = (
                ReplyParameters(int(ids[-1]), allow_sending_without_reply=True)
                if index == 0
                else None
            )
            # The continuation of an edit, not news: no notification.
            try:
                message = await self._call(
                    self._send_text(chat_id, thread, _part(piece, None), reply, None, silent=True)
                )
            except DeliveryError as exc:
                if added:
                    # The outbox keeps them: the next try edits them instead of posting anew.
                    raise PartialDelivery((*ids, *added), exc) from exc
                raise
            added.append(str(message.message_id))
        return Sent(action.chat, (*ids, *added))

    async def _edit_part(
        self,
        chat_id: int,
        message_id: int,
        remaining: FormattedText,
        as_name: str | None,
        first: bool,
        markup: InlineKeyboardMarkup | None,
    ) -> FormattedText:
        """Edit one part to carry the start of ``remaining``; returns what it could not hold."""
        name = as_name if first else None
        piece, rest = _take(remaining, _budget(as_name, MAX_TEXT))
        # Telegram refuses an empty text: a part the new text no longer reaches shows "…".
        part = _part(piece, name) if piece.text or name else _Part("…", "…")
        if await self._edit_text(chat_id, message_id, part, markup):
            return rest
        # A file's message has a caption instead of a text, and a caption holds less.
        piece, rest = _take(remaining, _budget(as_name, MAX_CAPTION))
        await self._edit_caption(chat_id, message_id, _part(piece, name), markup)
        return rest

    async def _edit_text(
        self, chat_id: int, message_id: int, part: _Part, markup: InlineKeyboardMarkup | None
    ) -> bool:
        """Edit a text message; False when the message has no text (a file with a caption)."""
        try:
            await _changed(
                self.bot.edit_message_text(
                    part.html,
                    chat_id=chat_id,
                    message_id=message_id,
                    parse_mode=ParseMode.HTML,
                    reply_markup=markup,
                )
            )
        except BadRequest as exc:
            if "no text in the message" in str(exc).lower():
                return False
            if not _refused_formatting(exc):
                raise
            logger.warning("Telegram refused the formatting (%s); editing as plain text", exc)
            await _changed(
                self.bot.edit_message_text(
                    part.plain, chat_id=chat_id, message_id=message_id, reply_markup=markup
                )
            )
        return True

    async def _edit_caption(
        self, chat_id: int, message_id: int, part: _Part, markup: InlineKeyboardMarkup | None
    ) -> None:
        try:
            await _changed(
                self.bot.edit_message_caption(
                    chat_id=chat_id,
                    message_id=message_id,
                    # Nothing left for this caption: the file stays, without one.
                    caption=part.html or None,
                    parse_mode=ParseMode.HTML,
                    reply_markup=markup,
                )
            )
        except BadRequest as exc:
            if not _refused_formatting(exc):
                raise
            logger.warning("Telegram refused the formatting (%s); captioning in plain text", exc)
            await _changed(
                self.bot.edit_message_caption(
                    chat_id=chat_id,
                    message_id=message_id,
                    caption=part.plain or None,
                    reply_markup=markup,
                )
            )

    async def _delete(self, action: DeleteMessage, delivery: Delivery) -> None:
        assert action.message_id is not None
        try:
            await self._call(
                self.bot.delete_message(int(action.chat.chat_id), int(action.message_id))
            )
        except PermanentFailure as exc:
            # Already gone is what was asked for.
            if "not found" not in str(exc).lower():
                raise

    async def _answer(self, action: AnswerButton, delivery: Delivery) -> None:
        try:
            await self._call(
                self.bot.answer_callback_query(action.interaction_id, text=action.text)
            )
        except PermanentFailure as exc:
            # A press older than Telegram's answer window cannot be acknowledged any more;
            # its effect was already recorded.
            logger.info("late button answer dropped: %s", exc)

    async def _pin(self, action: PinMessage, delivery: Delivery) -> None:
        assert action.message_id is not None, "the outbox resolves a post's name to its id"
        await self._call(
            self.bot.pin_chat_message(
                int(action.chat.chat_id), int(action.message_id), disable_notification=True
            )
        )

    async def _unpin(self, action: UnpinMessage, delivery: Delivery) -> None:
        assert action.message_id is not None, "the outbox resolves a post's name to its id"
        await self._call(
            self.bot.unpin_chat_message(int(action.chat.chat_id), int(action.message_id))
        )

    async def _open_thread(self, action: OpenThread, delivery: Delivery) -> Sent:
        """A forum topic where the group is a forum; elsewhere the reply chain under the post.

        A group that is not a forum has no threads: ``Sent`` without an id says the post's
        replies are its discussion (not an error). Telegram offers no way to find a topic
        again, so a kill between its answer and our commit can leave one empty topic twice,
        as it can repeat one message.
        """
        chat_id = int(action.chat.chat_id)
        # A post inside a topic is in a forum; otherwise the group says (asked now: a group
        # can be turned into a forum at any time).
        forum = action.chat.thread_id is not None or bool(
            (await self._call(self.bot.get_chat(chat_id))).is_forum
        )
        if not forum:
            return Sent(action.chat, ())
        if delivery.maybe_sent:
            logger.warning(
                "the topic %r in %s may have been created by an earlier try; Telegram cannot "
                "tell, creating it again",
                action.name,
                chat_id,
            )
        try:
            topic = await self._call(self.bot.create_forum_topic(chat_id, topic_name(action.name)))
        except PermanentFailure as refused:
            # No right to make topics here (the bot is no administrator): the discussion is
            # the reply chain under the post, as in a group that is no forum.
            logger.warning("no forum topic in %s (%s): the reply chain instead", chat_id, refused)
            return Sent(action.chat, ())
        thread = str(topic.message_thread_id)
        return Sent(ChatRef(PLATFORM, str(chat_id), thread), (thread,))

    async def _mute(self, action: MuteMember, delivery: Delivery) -> None:
        await self._call(
            self.bot.restrict_chat_member(
                int(action.chat.chat_id),
                int(action.user_id),
                ChatPermissions.no_permissions(),
                until_date=action.until,
            )
        )

    async def _ban(self, action: BanMember, delivery: Delivery) -> None:
        await self._call(self.bot.ban_chat_member(int(action.chat.chat_id), int(action.user_id)))

    async def _unban(self, action: UnbanMember, delivery: Delivery) -> None:
        await self._call(
            self.bot.unban_chat_member(
                int(action.chat.chat_id), int(action.user_id), only_if_banned=True
            )
        )

    async def _call(self, call: Any) -> Any:
        """Await a Bot API call, translating its errors into the outbox's vocabulary."""
        try:
            return await call
        except RetryAfter as exc:
            raise RateLimited(_seconds(exc.retry_after), "Telegram flood control") from exc
        except ChatMigrated as exc:
            raise PermanentFailure(f"chat migrated to {exc.new_chat_id}") from exc
        except (BadRequest, Forbidden, InvalidToken) as exc:
            raise PermanentFailure(str(exc)) from exc
        except (TimedOut, NetworkError) as exc:
            raise TemporaryFailure(str(exc)) from exc

    async def download(self, attachment: Attachment, limit: int) -> bytes | None:
        """The attachment's bytes, or None when it is larger than ``limit``."""
        if attachment.size is not None and attachment.size > limit:
            return None
        try:
            file = await self.bot.get_file(attachment.file_id)
        except BadRequest as exc:
            # "file is too big": the Bot API serves files up to 20 MB only.
            logger.info("cannot fetch %s: %s", attachment.kind, exc)
            return None
        if file.file_size is not None and file.file_size > limit:
            return None
        if not file.file_path:
            return None
        return await self._fetch(file.file_path, limit, attachment.kind)

    async def _fetch(self, url: str, limit: int, what: str) -> bytes | None:
        """GET a file from the Bot API's host, reading at most ``limit`` bytes of it.

        The sizes Telegram announces are only hints (a file may have none, or a wrong one):
        the body is counted as it arrives and dropped one byte past ``limit``, so a file never
        takes more memory than a file the bot would carry. Redirects are followed only on the
        API's own host: anywhere else, the bot would be fetching whatever a redirect names.
        """
        home = _origin(self.settings.telegram_api_url)
        # No overall timeout (a big file on a slow line is fine); a stalled one is not.
        timeout = aiohttp.ClientTimeout(total=None, connect=15, sock_read=60)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                for _ in range(MAX_REDIRECTS + 1):
                    if _origin(url) != home:
                        logger.warning("not fetching %s: redirected off the Bot API's host", what)
                        return None
                    async with session.get(url, allow_redirects=False) as response:
                        if response.status in (301, 302, 303, 307, 308):
                            url = urljoin(url, response.headers.get("Location", ""))
                            continue
                        if response.status >= 500:
                            raise TemporaryFailure(
                                f"Telegram's file host answered {response.status}"
                            )
                        if response.status != 200:
                            logger.info("cannot fetch %s: HTTP %s", what, response.status)
                            return None
                        return await _read_capped(response, limit)
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Never str(exc): aiohttp's messages carry the URL, and the URL the bot token.
            raise TemporaryFailure(f"could not fetch a file ({type(exc).__name__})") from exc
        logger.warning("not fetching %s: too many redirects", what)
        return None


def topic_name(name: str) -> str:
    """A name Telegram accepts for a forum topic (1–128 characters, on one line).

    Counted in UTF-16 code units, as Telegram counts every length: an emoji is two.
    """
    # No direction overrides or invisible characters in a name everyone sees.
    cleaned = " ".join(sanitize(name).split()) or "…"
    if utf16_len(cleaned) <= MAX_TOPIC_NAME:
        return cleaned
    cleaned = cleaned[:MAX_TOPIC_NAME]
    while utf16_len(cleaned) > MAX_TOPIC_NAME - 1:
        cleaned = cleaned[:-1]
    return cleaned.rstrip() + "…"


def _seconds(value: int | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


EMPTY = FormattedText.plain("")
# An "@" not yet followed by a word joiner.
_AT = re.compile("@(?!\u2060)")


@dataclass(frozen=True, slots=True)
class _Part:
    """One message's text: the HTML to send, and what a reader sees of it, for when Telegram
    refuses the formatting and the text goes plain rather than not at all."""

    html: str
    plain: str


def _part(piece: FormattedText, as_name: str | None) -> _Part:
    """``piece`` as one message, under the author's name when given."""
    body = to_telegram_html(piece) if piece.text else ""
    # What a reader sees, with the same word joiners after "@" as the HTML: plain text must
    # not turn "@everyone" back into a live mention.
    # In plain text code formatting is gone, so an "@" inside code needs its joiner too.
    plain = _AT.sub("@\u2060", defuse_telegram_mentions(piece).text) if piece.text else ""
    if not as_name:
        return _Part(body, plain)
    return _Part(f"<b>{html.escape(as_name)}</b>\n{body}", f"{as_name}\n{plain}")


def _budget(as_name: str | None, limit: int) -> int:
    """Room for text in a part of ``limit`` characters.

    Every part keeps room for the author's name, not only the first, so that a text is cut in
    the same places whichever part carries the name: sent at once, laid out as a caption and
    messages, or edited into existing parts, the same text lines up with the same messages.
    """
    return max(limit - (utf16_len(f"{as_name}\n") if as_name else 0), 100)


def _take(content: FormattedText, budget: int) -> tuple[FormattedText, FormattedText]:
    """The first part of ``content`` within ``budget`` (Telegram's UTF-16 count), and the rest.

    The cut is the one :func:`split` makes, so that taking parts one at a time (a caption then
    messages, or the parts of an edited message) cuts where sending the whole text would.
    """
    pieces = split(content, budget, measure=utf16_len)
    if len(pieces) < 2:
        return (pieces[0] if pieces else EMPTY), EMPTY
    # split() drops nothing but the whitespace at a cut: the next part starts right after it.
    start = content.text.find(pieces[1].text, len(pieces[0].text))
    return pieces[0], content.slice(start if start >= 0 else len(pieces[0].text))


class _RawUpdates(HTTPXRequest):
    """The getUpdates connection, keeping the updates as Telegram sent them (JSON objects).

    ``parse_json_payload`` is PTB's documented hook for reading Telegram's answers.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._raw: list[dict[str, Any]] = []

    def parse_json_payload(self, payload: bytes) -> dict[str, Any]:  # type: ignore[override]
        parsed: dict[str, Any] = HTTPXRequest.parse_json_payload(payload)
        result = parsed.get("result") if isinstance(parsed, dict) else None
        if isinstance(result, list):
            self._raw = [u for u in result if isinstance(u, dict) and "update_id" in u]
        return parsed

    def taken(self) -> list[dict[str, Any]]:
        """The updates of the last answer, once."""
        raw, self._raw = self._raw, []
        return raw


def _refused_formatting(exc: BadRequest) -> bool:
    return "parse entities" in str(exc).lower()


async def _changed(edit: Awaitable[object]) -> None:
    """Await an edit; Telegram refuses one that changes nothing, which is what was asked."""
    try:
        await edit
    except BadRequest as exc:
        if "not modified" not in str(exc).lower():
            raise


def _origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port: what a redirect must keep to be followed."""
    parts = urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:  # a port that is no number: nowhere to go
        return "", "", None
    return parts.scheme, (parts.hostname or "").lower(), port


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None as soon as it runs past ``limit`` bytes (announced or counted)."""
    if response.content_length is not None and response.content_length > limit:
        return None
    data = bytearray()
    async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK):
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)
