"""Discord, through discord.py 2.x: gateway events in, actions out.

Every gateway event the bot acts on is turned into a neutral event and stored in the inbox
(keyed by Discord's ids) before it is handled; after a reconnect, the history of each served
channel and thread after the last message stored is fetched and stored the same way, while the
channel's live events wait, so what was written during downtime is handled once and in the
channel's order. Slash commands and buttons are deferred at once (Discord wants an answer
within three seconds) and answered through their interaction. Buttons carry their state in
their custom id and are handled without in-memory views, so they keep working after a restart.
Every send and edit carries ``AllowedMentions.none()`` unless the core names people to notify.
A chat ``dm:<user id>`` is the private conversation with that user: its DM channel is opened
once (``POST /users/@me/channels``) and remembered, and the bot posts there itself, never
through a webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

import aiohttp
import discord
import yarl
from discord import app_commands
from sqlalchemy.ext.asyncio import AsyncSession

from bot import codec, inbox
from bot.clock import Clock
from bot.commands import parse_command
from bot.config import SUPPORTED_LANGUAGES, Settings
from bot.events import (
    DIRECT_PREFIX,
    NO_DELIVERY,
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
    Form,
    FormSubmitted,
    MemberJoined,
    MemberLeft,
    MessageDeleted,
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
    direct_chat,
)
from bot.faults import fault_point
from bot.i18n import Translator
from bot.inbox import InboxRunner
from bot.outbox import Pace, chat_key
from bot.platforms.base import Adapter
from bot.richtext import (
    FormattedText,
    Style,
    from_discord_markdown,
    split,
    to_discord_markdown,
)
from bot.richtext.sanitizing import sanitize
from storage import message_map
from storage.db import Database
from storage.models import PlatformCursor

if TYPE_CHECKING:
    from bot.dispatcher import Dispatcher

logger = logging.getLogger(__name__)

PLATFORM = "discord"
MAX_TEXT = 2000
WEBHOOK_NAME = "forum-habitant"
DEFAULT_API = "https://discord.com/api/v10"
# Relays are webhook posts: Discord takes about thirty a minute into one channel, all its
# webhooks together, and says so only with a 429. The per-webhook and per-channel buckets it
# does announce in headers (5 per 2 s, 5 per 5 s), discord.py waits for by itself.
CHANNEL_PACE = Pace(30, 60.0)
NO_MENTIONS = discord.AllowedMentions.none()
# Discord's clock and ours may differ by this much (seconds) when a snowflake's time is
# compared with the time of a try.
CLOCK_SKEW = 10.0
# A catch-up gives up on a channel whose history still fails after this many tries.
CATCH_UP_TRIES = 5
# Discord's answer to a DM the user does not accept (their privacy settings, a block, no
# server shared with the bot): it will not change on a retry.
CANNOT_MESSAGE_USER = 50007
# Discord's answer to a second thread on the same message: the first one stands.
THREAD_ALREADY_CREATED = 160004
# A thread's name holds 1 to 100 characters.
MAX_THREAD_NAME = 100
# Minutes without a message before a thread is hidden from the channel list: the longest
# Discord offers, so that a proposal's discussion stays in sight while it is debated.
THREAD_ARCHIVE_MINUTES: Literal[10080] = 10080


@dataclass(slots=True)
class _Incoming:
    """A gateway event on its way to the inbox; ``event`` None: only a cursor to move."""

    key: str
    event: Event | None
    # The channel whose order the event belongs to (messages, edits, deletions) ...
    channel_id: int | None = None
    # ... and, for a message, its id: the channel's cursor moves to it once it is stored.
    message_id: int | None = None


class _ServerError(Exception):
    """Discord answered a webhook post with a 5xx: raised out of discord.py's retry loop."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status} {text[:200]}")
        self.status = status


class _OneTrySession:
    """The HTTP session of webhook posts: a server error ends the try at once.

    discord.py posts again by itself after a 5xx (four more times, sleeping 1 to 9 s), blind
    to whether the first post landed before the error. The outbox retries instead, and first
    looks for the post in the channel's history.
    """

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    @contextlib.asynccontextmanager
    async def request(self, *args: Any, **kwargs: Any) -> AsyncIterator[aiohttp.ClientResponse]:
        async with self._session.request(*args, **kwargs) as response:
            if response.status >= 500:
                raise _ServerError(response.status, await response.text())
            yield response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


class _Client(discord.Client):
    """discord.py's client, forwarding what the adapter needs."""

    def __init__(self, adapter: DiscordAdapter, **options: Any) -> None:
        super().__init__(**options)
        self.adapter = adapter
        self.tree = app_commands.CommandTree(self)

    async def setup_hook(self) -> None:
        await self.adapter._setup()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        # discord.py waits 5 s before every re-IDENTIFY (Discord's identify rate limit); an
        # emulator in tests has no such limit.
        if self.adapter.identify_delay:
            await super().before_identify_hook(shard_id, initial=initial)

    async def on_ready(self) -> None:
        await self.adapter._on_ready()

    async def on_resumed(self) -> None:
        await self.adapter._on_resumed()

    # Both run before any event of what follows them (discord.py schedules handlers in order).
    async def on_disconnect(self) -> None:
        self.adapter._begin_gap()

    async def on_connect(self) -> None:
        # A new session (READY): whatever happened before it is only in the history.
        self.adapter._begin_gap()

    async def on_message(self, message: discord.Message) -> None:
        await self.adapter._on_message(message)

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        await self.adapter._on_edit(payload)

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self.adapter._on_delete(payload)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        await self.adapter._on_interaction(interaction)

    async def on_member_join(self, member: discord.Member) -> None:
        await self.adapter._on_member(member, joined=True)

    async def on_member_remove(self, member: discord.Member) -> None:
        await self.adapter._on_member(member, joined=False)


class DiscordAdapter(Adapter):
    """One Discord bot user in one or more servers (guilds)."""

    name: ClassVar[str] = PLATFORM
    max_text: ClassVar[int | None] = MAX_TEXT
    # A bot post carries a nonce; a webhook post is looked for in the channel\'s history.
    finds_lost_posts: ClassVar[bool] = True
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
        identify_delay: bool = True,
        guild_ready_timeout: float = 2.0,
    ) -> None:
        if settings.discord_token is None:
            raise ValueError("DISCORD_TOKEN is not set")
        self.settings = settings
        self.db = db
        self.clock = clock
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: enable it in the Developer Portal
        intents.members = True  # privileged: joins, leaves and fresh permission checks
        self.identify_delay = identify_delay
        self.client = _Client(
            self,
            intents=intents,
            allowed_mentions=NO_MENTIONS,
            guild_ready_timeout=guild_ready_timeout,
        )
        self._dispatcher: Dispatcher | None = None
        self._runner: asyncio.Task[None] | None = None
        self._inbox: InboxRunner | None = None
        self._ready = asyncio.Event()
        self._interactions: dict[str, discord.Interaction] = {}
        self._webhooks: dict[int, discord.Webhook] = {}
        self._webhook_ids: set[int] = set()
        # The DM channel of each user the bot wrote to privately (user id -> channel id): a
        # DM channel's id never changes, so it is opened once per run, not once per message.
        self._dm_channels: dict[int, int] = {}
        self._stopping = False
        self._saved_endpoints: tuple[str, yarl.URL] | None = None
        # Gateway events for the inbox, in gateway order; a future marks a point the catch-up
        # waits for (everything queued before it is stored).
        self._incoming: asyncio.Queue[_Incoming | asyncio.Future[None]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        # Events queued or being written, not yet stored (what a shutdown would lose).
        self._unstored = 0
        self._write_warned_at: float | None = None
        # Backoff of inbox writes (first, longest, in seconds); how long stop() waits for them.
        self.write_retry = (0.2, 30.0)
        self.stop_grace = 10.0
        # Messages per history request when catching up (Discord's maximum).
        self.catch_up_page = 100
        # From a disconnect (or the start) until the catch-up: the channels' events are held
        # here, per channel, and stored after the history read for that channel, so a live
        # message never moves the cursor past, nor overtakes, what was missed.
        self._gap = True
        self._gap_number = 0
        self._held: dict[int, list[_Incoming]] = {}
        self._released: set[int] = set()
        self._catch_up_lock = asyncio.Lock()
        # Per delivery key tried in this run and not yet through, a snowflake older than the
        # first try of the webhook post: no message at or below it can be that post (0 when
        # the first try was an earlier run's: then message_link alone decides).
        self._first_tries: dict[str, int] = {}

    # -- life cycle -------------------------------------------------------------------------

    async def start(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher
        api = self.settings.discord_api_url.rstrip("/")
        # discord.py reads these class attributes on each request / connection; they are set
        # here, at start (and restored at stop), for a town that runs against another API.
        self._saved_endpoints = (
            discord.http.Route.BASE,
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
        )
        discord.http.Route.BASE = api
        if api != DEFAULT_API:
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(
                await self._gateway_url(api)
            )
        assert self.settings.discord_token is not None
        await self.client.login(self.settings.discord_token.get_secret_value())
        self._runner = asyncio.create_task(self._connect(), name="discord-gateway")
        self._inbox = dispatcher.inbox_runner(PLATFORM, codec.decode)
        self._inbox.start()
        self._writer = asyncio.create_task(self._writer_loop(), name="discord-inbox")

    async def _gateway_url(self, api: str) -> str:
        headers = {"Authorization": f"Bot {self.settings.discord_token.get_secret_value()}"}  # type: ignore[union-attr]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{api}/gateway/bot", headers=headers) as response,
        ):
            data = await response.json(content_type=None)
        return str(data["url"])

    async def _connect(self) -> None:
        # discord.py reconnects by itself once connected, but gives up (with an
        # AttributeError) when the very first connection fails: keep trying, with backoff.
        delay = 1.0
        while not self._stopping:
            try:
                await self.client.connect(reconnect=True)
                return
            except asyncio.CancelledError:
                raise
            except discord.LoginFailure:
                logger.exception("Discord refused the token")
                return
            except Exception:
                logger.exception("Discord gateway stopped; reconnecting in %.0f s", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    async def stop(self) -> None:
        self._stopping = True
        await self.client.close()
        self._store_held_at_stop()
        # What arrived before the close is stored before the writer stops; the writer keeps
        # trying while the database is away, and gives up only here.
        try:
            async with asyncio.timeout(self.stop_grace):
                await self._incoming.join()
        except TimeoutError:
            logger.error(
                "STOPPING WITHOUT STORING %d Discord events: the database refused them for "
                "%.0f s; they are lost (messages among them come back from the channels' "
                "history at the next start, other events do not)",
                self._unstored,
                self.stop_grace,
            )
        if self._writer is not None:
            self._writer.cancel()
        while not self._incoming.empty():
            entry = self._incoming.get_nowait()
            if isinstance(entry, asyncio.Future):
                entry.cancel()  # a catch-up waiting for its page: it ends here
        if self._inbox is not None:
            await self._inbox.stop()
        for task in (self._runner, self._writer):
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(t for t in (self._runner, self._writer) if t is not None),
            return_exceptions=True,
        )
        if self._saved_endpoints is not None:
            base, gateway = self._saved_endpoints
            discord.http.Route.BASE = base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def _setup(self) -> None:
        """Register the slash commands (French names and texts, English localisations)."""
        assert self._dispatcher is not None
        tree = self.client.tree
        tree.clear_commands(guild=None)
        for name, command in self._dispatcher.commands.items():
            if command.hidden or not re.fullmatch(r"[a-z0-9_-]{1,32}", name):
                continue
            tree.add_command(self._slash_command(name, command.summary))
        await tree.set_translator(_CatalogTranslator())
        try:
            if self.settings.discord_guild_ids:
                for guild_id in self.settings.discord_guild_ids:
                    guild = discord.Object(int(guild_id))
                    tree.copy_global_to(guild=guild)
                    await tree.sync(guild=guild)
            else:
                await tree.sync()
        except discord.HTTPException as exc:
            logger.warning("could not register slash commands: %s", exc)

    def _slash_command(self, name: str, summary: str) -> app_commands.Command[Any, Any, Any]:
        adapter = self

        async def callback(interaction: discord.Interaction, texte: str | None = None) -> None:
            await adapter._on_slash(interaction, name, texte or "")

        # discord.py reads the option's type from the annotation; keep it a real one.
        callback.__annotations__ = {
            "interaction": discord.Interaction,
            "texte": str | None,
            "return": None,
        }
        callback.__signature__ = inspect.signature(callback)  # type: ignore[attr-defined]
        command: app_commands.Command[Any, Any, Any] = app_commands.Command(
            name=name,
            description=app_commands.locale_str(_french(summary), message=summary),
            callback=callback,
        )
        return command

    # -- receiving --------------------------------------------------------------------------

    def _author(self, user: discord.abc.User) -> Author:
        return Author(
            platform=PLATFORM,
            user_id=str(user.id),
            display_name=getattr(user, "display_name", None) or user.name,
            username=user.name,
            is_bot=user.bot,
        )

    @staticmethod
    def _chat(channel: Any) -> ChatRef:
        if isinstance(channel, discord.Thread):
            return ChatRef(PLATFORM, str(channel.parent_id), str(channel.id))
        return ChatRef(PLATFORM, str(channel.id))

    def _chat_of(self, channel: Any, channel_id: int | None) -> ChatRef:
        """The chat of an event whose channel may not be in discord.py's cache."""
        return self._chat(channel) if channel is not None else ChatRef(PLATFORM, str(channel_id))

    def _interaction_chat(self, interaction: discord.Interaction) -> ChatRef:
        """The chat of a button, form or command: in a DM, the conversation ``dm:<user>``, the
        same chat the bot's private messages were sent to (so that their posts are found by
        name, and an answer joins the same queue)."""
        channel = interaction.channel
        if channel is not None and getattr(channel, "type", None) is discord.ChannelType.private:
            # Nothing is learnt from an interaction: a forged or user-installed press in
            # someone else's DM channel must never make it this presser's channel (their next
            # private message, a /lier code, would go there). The channel is opened by
            # create_dm, which answers the same channel every time.
            return direct_chat(PLATFORM, str(interaction.user.id))
        return self._chat_of(channel, interaction.channel_id)

    def _is_ours(self, message: discord.Message) -> bool:
        me = self.client.user
        if me is not None and message.author.id == me.id:
            return True
        return message.webhook_id is not None and message.webhook_id in self._webhook_ids

    def to_event(self, message: discord.Message) -> Event | None:
        chat = self._chat(message.channel)
        author = self._author(message.author)
        at = message.created_at.astimezone(UTC)
        reply_to = (
            str(message.reference.message_id)
            if message.reference is not None and message.reference.message_id is not None
            else None
        )
        ours = self._is_ours(message)
        if not ours and message.content.startswith("/") and message.webhook_id is None:
            command = parse_command(message.content)
            if command is not None:
                return CommandReceived(
                    chat=chat,
                    author=author,
                    at=at,
                    message_id=str(message.id),
                    name=command.name,
                    args=command.args,
                    reply_to=reply_to,
                )
        attachments = tuple(
            Attachment(
                "photo" if (a.content_type or "").startswith("image/") else "document",
                a.url,
                a.filename,
                a.content_type,
                a.size,
            )
            for a in message.attachments
        ) + tuple(
            Attachment("sticker", str(s.id), fallback=f"[autocollant {s.name}]")
            for s in message.stickers
        )
        if not message.content and not attachments:
            return None
        return MessageReceived(
            chat=chat,
            author=author,
            at=at,
            message_id=str(message.id),
            content=from_discord_markdown(message.content),
            reply_to=reply_to,
            attachments=attachments,
            from_relay=ours,
        )

    def _store(
        self,
        key: str,
        event: Event,
        *,
        channel_id: int | None = None,
        message_id: int | None = None,
    ) -> None:
        """Queue ``event`` for the inbox; one writer keeps Discord's order.

        discord.py runs each event handler as its own task; written concurrently (PostgreSQL
        has no single writer) two messages could swap places in the inbox, and so in the
        relay. The queue is filled in gateway order and emptied by one task. Between a
        disconnect and the catch-up of the event's channel the event is held instead.
        """
        item = _Incoming(key, event, channel_id, message_id)
        if (
            channel_id is not None
            and self._gap
            and channel_id not in self._released
            and self._follows(channel_id)
        ):
            self._held.setdefault(channel_id, []).append(item)
            return
        self._queue(item)

    def _follows(self, channel_id: int) -> bool:
        """Whether the catch-up covers this channel: served, a configured thread, or a
        thread of a served channel."""
        served = self._served_channels()
        if channel_id in served or channel_id in self._configured_threads():
            return True
        channel = self.client.get_channel(channel_id)
        return isinstance(channel, discord.Thread) and channel.parent_id in served

    def _queue(self, item: _Incoming) -> None:
        if item.event is not None:
            self._unstored += 1
        self._incoming.put_nowait(item)

    async def _stored(self) -> None:
        """Wait until everything queued so far is stored (not once stopping: stop() waits)."""
        if self._stopping:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._incoming.put_nowait(done)
        await done

    async def _writer_loop(self) -> None:
        while True:
            batch = [await self._incoming.get()]
            while not self._incoming.empty() and len(batch) < 200:
                batch.append(self._incoming.get_nowait())
            items = [entry for entry in batch if isinstance(entry, _Incoming)]
            marks = [entry for entry in batch if isinstance(entry, asyncio.Future)]
            try:
                if items:
                    await self._write_batch(items)
            except asyncio.CancelledError:
                for mark in marks:
                    mark.cancel()
                raise
            finally:
                for _ in batch:
                    self._incoming.task_done()
            self._unstored -= sum(1 for item in items if item.event is not None)
            for mark in marks:
                if not mark.done():
                    mark.set_result(None)
            if self._inbox is not None:
                self._inbox.wake()

    async def _write_batch(self, batch: list[_Incoming]) -> None:
        """Store a batch, trying until it is stored: Discord will not send these events again.

        While the database is away the queue grows behind this batch (nothing is dropped);
        the trouble is logged once a minute, and only ``stop()`` gives up.
        """
        failures = 0
        first, longest = self.write_retry
        while True:
            try:
                async with self.db.write() as session:
                    now = self.clock.now()
                    updates = [(i.key, codec.encode(i.event)) for i in batch if i.event is not None]
                    await inbox.store_updates(session, PLATFORM, updates, now)
                    newest: dict[int, int] = {}
                    for item in batch:
                        if item.channel_id is not None and item.message_id is not None:
                            newest[item.channel_id] = max(
                                newest.get(item.channel_id, 0), item.message_id
                            )
                    for channel_id, message_id in newest.items():
                        await self._advance_cursor(session, channel_id, message_id, now)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # Not only DBAPIError: a pool timeout or a refused connection is no different.
                failures += 1
                self._warn_write_failure(failures, error)
                await asyncio.sleep(min(longest, first * 2 ** min(failures - 1, 30)))
                continue
            if failures:
                logger.warning(
                    "stored %d Discord events after %d failed tries", len(batch), failures
                )
            return

    def _warn_write_failure(self, failures: int, error: Exception) -> None:
        now = time.monotonic()
        if self._write_warned_at is not None and now - self._write_warned_at < 60:
            return
        self._write_warned_at = now
        logger.warning(
            "could not store Discord events (%d tries so far for this batch, %d events "
            "waiting); trying again until the database answers",
            failures,
            self._unstored,
            exc_info=error,
        )

    @staticmethod
    async def _advance_cursor(
        session: AsyncSession, channel_id: int, message_id: int, now: datetime
    ) -> None:
        """Move the channel's cursor forward only: a late event never moves it back."""
        key = f"last:{channel_id}"
        row = await session.get(PlatformCursor, (PLATFORM, key))
        if row is not None and row.value.isdigit() and int(row.value) >= message_id:
            return
        await inbox.set_cursor(session, PLATFORM, key, str(message_id), now)

    def _message_event(self, message: discord.Message) -> Event | None:
        if message.guild is None or self._is_ours(message):
            # Discord echoes the bot's own posts and its webhook's relays: nothing to handle.
            return None
        return self.to_event(message)

    async def _on_message(self, message: discord.Message) -> None:
        event = self._message_event(message)
        if event is None:
            return
        self._store(
            f"message:{message.id}",
            event,
            channel_id=message.channel.id,
            message_id=message.id,
        )

    async def _on_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        data: dict[str, Any] = dict(payload.data)
        if "content" not in data:
            return  # an embed appearing, not an edit by a person
        author = data.get("author") or {}
        if data.get("webhook_id") and int(data["webhook_id"]) in self._webhook_ids:
            return
        me = self.client.user
        if me is not None and author.get("id") == str(me.id):
            return
        channel = self.client.get_channel(payload.channel_id)
        chat = self._chat_of(channel, payload.channel_id)
        edited = data.get("edited_timestamp") or ""
        event = MessageEdited(
            chat=chat,
            author=Author(
                platform=PLATFORM,
                user_id=str(author.get("id", "unknown")),
                display_name=author.get("global_name") or author.get("username") or "?",
                username=author.get("username"),
            ),
            at=discord.utils.parse_time(edited) if edited else self.clock.now(),
            message_id=str(payload.message_id),
            content=from_discord_markdown(str(data["content"])),
        )
        self._store(f"edit:{payload.message_id}:{edited}", event, channel_id=payload.channel_id)

    async def _on_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        channel = self.client.get_channel(payload.channel_id)
        chat = self._chat_of(channel, payload.channel_id)
        event = MessageDeleted(
            chat=chat,
            author=Author(platform=PLATFORM, user_id="unknown", display_name="?"),
            at=self.clock.now(),
            message_id=str(payload.message_id),
        )
        self._store(f"delete:{payload.message_id}", event, channel_id=payload.channel_id)

    async def _on_member(self, member: discord.Member, *, joined: bool) -> None:
        cls = MemberJoined if joined else MemberLeft
        chat = ChatRef(PLATFORM, str(member.guild.id))
        event = cls(chat=chat, author=self._author(member), at=self.clock.now())
        kind = "join" if joined else "leave"
        self._store(f"{kind}:{member.guild.id}:{member.id}:{self.clock.now().isoformat()}", event)

    async def _on_slash(self, interaction: discord.Interaction, name: str, args: str) -> None:
        assert self._dispatcher is not None
        command = self._dispatcher.commands.get(name)
        modal = None
        chat = self._interaction_chat(interaction)
        author = self._author(interaction.user)
        if command is not None and not args and await self._dispatcher.may_use(name, chat, author):
            language = str(interaction.locale.value)[:2]
            if language not in SUPPORTED_LANGUAGES:
                language = self.settings.language
            modal = command.modal(Translator(language).t)
        if modal is not None:
            # A form must be the first answer to the interaction: shown now, its submission
            # comes back as a modal_submit interaction. A form too large for a modal is
            # asked step by step instead, like on Telegram.
            with contextlib.suppress(discord.HTTPException):
                await interaction.response.send_modal(_modal(modal))
            return
        # Answer within Discord's three seconds; the real answer follows through the outbox.
        with contextlib.suppress(discord.HTTPException):
            await interaction.response.defer(thinking=True)
        self._interactions[str(interaction.id)] = interaction
        event = CommandReceived(
            chat=chat,
            author=author,
            at=interaction.created_at.astimezone(UTC),
            message_id=None,
            name=name,
            args=args,
            interaction_id=str(interaction.id),
        )
        self._store(f"interaction:{interaction.id}", event)

    async def _on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type not in (
            discord.InteractionType.component,
            discord.InteractionType.modal_submit,
        ):
            return  # slash commands reach _on_slash through the command tree
        data: dict[str, Any] = dict(interaction.data or {})
        chat = self._interaction_chat(interaction)
        # A button press is acknowledged silently; a form's answer follows as a message.
        thinking = interaction.type is discord.InteractionType.modal_submit
        with contextlib.suppress(discord.HTTPException):
            await interaction.response.defer(thinking=thinking)
        self._interactions[str(interaction.id)] = interaction
        event: Event
        if interaction.type is discord.InteractionType.component:
            custom_id = str(data.get("custom_id", ""))
            values = tuple(str(v) for v in data.get("values", ()))
            if values:
                # A select menu: reported like the matching button of a Choice.
                custom_id = f"{custom_id}:{values[0]}"
            event = ButtonPressed(
                chat=chat,
                author=self._author(interaction.user),
                at=interaction.created_at.astimezone(UTC),
                data=custom_id,
                message_id=str(interaction.message.id) if interaction.message else None,
                interaction_id=str(interaction.id),
                values=values,
            )
        else:
            # Text inputs come in action rows (type 1) or, in newer modals, in labels (18).
            inputs = [
                c
                for row in data.get("components", ())
                for c in (row.get("components") or [row.get("component") or {}])
            ]
            fields = [(str(c.get("custom_id")), str(c.get("value", ""))) for c in inputs if c]
            event = FormSubmitted(
                chat=chat,
                author=self._author(interaction.user),
                at=interaction.created_at.astimezone(UTC),
                form_id=str(data.get("custom_id", "")),
                fields=tuple(fields),
                interaction_id=str(interaction.id),
            )
        self._store(f"interaction:{interaction.id}", event)

    async def _on_ready(self) -> None:
        """After every (re)connection that could not resume: fetch what was missed."""
        try:
            # Our webhooks first: the history holds our relays, which are not residents' news.
            await self._load_webhooks()
            await self._catch_up()
        finally:
            self._ready.set()

    async def _on_resumed(self) -> None:
        """A resumed session replays what it kept; history covers what it did not."""
        await self._catch_up()

    def _begin_gap(self) -> None:
        """The gateway went away (or a new session began): hold channel events until the
        catch-up has read each channel's history up to them."""
        self._gap_number += 1
        self._gap = True
        self._released.clear()

    def _served_channels(self) -> list[int]:
        return sorted(int(chat_id) for chat_id in self.settings.served_chat_ids(PLATFORM))

    def _configured_threads(self) -> list[int]:
        """Threads named in the channels (``thread``) or the bridges (``987/654``)."""
        ids = {c.thread for c in self.settings.channels if c.platform == PLATFORM and c.thread}
        for bridge in self.settings.bridges:
            for key in (bridge.a, bridge.b):
                side, _, rest = key.partition(":")
                if side == PLATFORM and "/" in rest:
                    ids.add(rest.partition("/")[2])
        return sorted(int(i) for i in ids if i.isdigit())

    def _catch_up_targets(self) -> list[int]:
        """The served channels, their configured threads and the threads active in them."""
        served = self._served_channels()
        parents = set(served)
        active = [
            thread.id
            for guild in self.client.guilds
            for thread in guild.threads
            if thread.parent_id in parents
        ]
        return list(dict.fromkeys([*served, *self._configured_threads(), *active]))

    async def _load_webhooks(self) -> None:
        parents: set[int] = set()
        for channel_id in self._served_channels():
            channel = self.client.get_channel(channel_id)
            # A thread configured as a channel posts through its parent's webhook.
            if isinstance(channel, discord.Thread):
                channel = channel.parent
            if isinstance(channel, discord.TextChannel):
                parents.add(channel.id)
        for parent_id in sorted(parents):
            channel = self.client.get_channel(parent_id)
            assert isinstance(channel, discord.TextChannel)
            with contextlib.suppress(discord.HTTPException):
                for hook in await channel.webhooks():
                    if hook.name == WEBHOOK_NAME:
                        self._webhook_ids.add(hook.id)

    async def _catch_up(self) -> None:
        """Read each channel's history after its cursor, then store what was held for it.

        One pass at a time; a pass cut short by a new disconnect leaves the rest (and what is
        held) to the pass after the next connection, which goes on from the stored cursors.
        """
        async with self._catch_up_lock:
            gap = self._gap_number
            try:
                done: set[int] = set()
                targets = self._catch_up_targets()
                while True:
                    # Channels with held events are caught up too (a thread of a served
                    # channel that was not active at READY).
                    todo = [c for c in (*targets, *self._held) if c not in done]
                    if not todo:
                        break
                    channel_id = todo[0]
                    done.add(channel_id)
                    await self._catch_up_channel(channel_id)
                    if self._gap_number != gap:
                        return
                    self._release(channel_id)
            except Exception:
                logger.exception("Discord catch-up failed")
                if self._gap_number != gap:
                    return
                # Never go deaf: what is held is stored, even without its history.
                for channel_id in list(self._held):
                    self._release(channel_id)
            self._gap = False
            self._released.clear()

    def _release(self, channel_id: int) -> None:
        """The channel's history is stored up to now: its held events follow, in order."""
        for item in self._held.pop(channel_id, []):
            self._queue(item)
        self._released.add(channel_id)

    def _store_held_at_stop(self) -> None:
        """At shutdown: held messages are left to the next start's catch-up (their cursor
        did not move, so they come back from history, in order); edits and deletions would
        not come back, so they are stored."""
        for items in self._held.values():
            for item in items:
                if item.message_id is None:
                    self._queue(item)
        self._held.clear()

    async def _catch_up_channel(self, channel_id: int) -> None:
        for attempt in range(CATCH_UP_TRIES):
            try:
                await self._read_history(channel_id)
                return
            except (discord.Forbidden, discord.NotFound) as exc:
                logger.error(
                    "cannot read the history of Discord channel %s (%s): what was written "
                    "there while the bot was away is not handled",
                    channel_id,
                    exc.status,
                )
                return
            except Exception as exc:
                if attempt == CATCH_UP_TRIES - 1:
                    logger.exception(
                        "gave up reading the history of Discord channel %s after %d tries: "
                        "what was written there while the bot was away is not handled",
                        channel_id,
                        CATCH_UP_TRIES,
                    )
                    return
                logger.warning(
                    "could not read the history of Discord channel %s (%s); trying again",
                    channel_id,
                    exc,
                )
                await asyncio.sleep(2**attempt)

    async def _read_history(self, channel_id: int) -> None:
        """Store, page by page and oldest first, what the channel got after its cursor."""
        last = await inbox.get_cursor(self.db, PLATFORM, f"last:{channel_id}")
        if last is None:
            return  # never seen: nothing missed, and old history is not news
        channel: Any = self.client.get_channel(channel_id)
        if channel is None:
            # An archived thread is not in discord.py's cache.
            channel = await self.client.fetch_channel(channel_id)
        if not isinstance(channel, discord.TextChannel | discord.Thread):
            return
        after = int(last)
        while True:
            page = [
                message
                async for message in channel.history(
                    limit=self.catch_up_page, after=discord.Object(after), oldest_first=True
                )
            ]
            if not page:
                return
            for message in page:
                event = self._message_event(message)
                if event is not None:
                    self._queue(_Incoming(f"message:{message.id}", event))
            # The cursor follows the page, even a page of our own relays only.
            self._queue(_Incoming("", None, channel_id, page[-1].id))
            await self._stored()
            if self._stopping:
                return
            fault_point("during_catch_up")
            after = page[-1].id
            if len(page) < self.catch_up_page:
                return

    # -- permissions ------------------------------------------------------------------------

    async def is_admin(self, chat: ChatRef, author: Author) -> bool:
        return "moderator" in await self.roles(chat, author)

    async def roles(self, chat: ChatRef, author: Author) -> frozenset[str]:
        """Moderator by a configured role, Manage Messages or Administrator; council staff by
        a configured role. Asked of Discord now (fresh member data).

        In a private conversation a person keeps the roles they hold in the town's servers: a
        council member answering from a DM is still the council.
        """
        if is_direct(chat):
            listed = set(self.settings.discord_guild_ids)
            found: set[str] = set()
            for served in self.client.guilds:
                if not listed or str(served.id) in listed:
                    found |= await self._roles_in(served, author)
            return frozenset(found)
        channel = self.client.get_channel(int(chat.thread_id or chat.chat_id))
        guild = getattr(channel, "guild", None)
        if guild is None:
            return frozenset()
        return frozenset(await self._roles_in(guild, author))

    async def _roles_in(self, guild: discord.Guild, author: Author) -> set[str]:
        try:
            member = await guild.fetch_member(int(author.user_id))
        except discord.HTTPException:
            return set()
        settings = self.settings.roles
        held = {role.id for role in member.roles}
        found: set[str] = set()
        permissions = member.guild_permissions
        if (
            {int(r) for r in settings.discord_moderator_roles} & held
            or permissions.administrator
            or permissions.manage_messages
        ):
            found.add("moderator")
        if {int(r) for r in settings.discord_council_roles} & held:
            found.add("council")
        return found

    def pace(self, chat: ChatRef) -> Pace | None:
        return CHANNEL_PACE.scaled(self.settings.rate_limit_scale)

    # -- performing actions -----------------------------------------------------------------

    async def perform(self, action: Action, delivery: Delivery = NO_DELIVERY) -> Sent | None:
        if is_direct(action.chat):
            # A private conversation has no webhook: everything there is the bot's own post.
            action, delivery = _as_bot(action), replace(delivery, relayed_copy=False)
        return await super().perform(action, delivery)

    def _remember_dm(self, user_id: int, channel_id: int) -> None:
        self._dm_channels[user_id] = channel_id

    async def _direct_channel(self, chat: ChatRef) -> discord.PartialMessageable:
        """The DM channel with the user of ``dm:<user id>``, opened the first time only."""
        raw = chat.chat_id.removeprefix(DIRECT_PREFIX)
        if not raw.isdigit():
            raise PermanentFailure(f"{chat} names no Discord user")
        user_id = int(raw)
        channel_id = self._dm_channels.get(user_id)
        if channel_id is None:
            # POST /users/@me/channels (unless discord.py already knows the channel from a DM
            # the user sent). It opens even for a user who refuses DMs: the post says so.
            opened = await self._call(self.client.create_dm(discord.Object(user_id)))
            channel_id = int(opened.id)
            self._remember_dm(user_id, channel_id)
        # A partial channel needs nothing cached: discord.py keeps only its last DM channels.
        return self.client.get_partial_messageable(channel_id, type=discord.ChannelType.private)

    async def _channel(self, chat: ChatRef) -> Any:
        if is_direct(chat):
            return await self._direct_channel(chat)
        channel_id = int(chat.thread_id or chat.chat_id)
        channel = self.client.get_channel(channel_id)
        if channel is None:
            channel = await self._call(self.client.fetch_channel(channel_id))
        return channel

    async def _webhook(self, chat: ChatRef) -> discord.Webhook:
        assert not is_direct(chat), "perform() posts in a DM as the bot"
        parent_id = int(chat.chat_id)
        hook = self._webhooks.get(parent_id)
        if hook is not None:
            return hook
        channel: Any = self.client.get_channel(parent_id) or await self._call(
            self.client.fetch_channel(parent_id)
        )
        hooks = await self._call(channel.webhooks())
        hook = next((h for h in hooks if h.name == WEBHOOK_NAME and h.token), None)
        if hook is None:
            hook = await self._call(channel.create_webhook(name=WEBHOOK_NAME))
        self._webhooks[parent_id] = hook
        self._webhook_ids.add(hook.id)
        return hook

    @staticmethod
    def _mentions(action: SendMessage) -> discord.AllowedMentions:
        if not action.notify_user_ids:
            return NO_MENTIONS
        return discord.AllowedMentions(
            everyone=False,
            roles=False,
            replied_user=False,
            users=[discord.Object(int(uid)) for uid in action.notify_user_ids],
        )

    @staticmethod
    def _view(
        buttons: Sequence[Sequence[Button]], choice: Choice | None = None
    ) -> discord.ui.View | None:
        if not buttons and choice is None:
            return None
        view = discord.ui.View(timeout=None)
        if choice is not None:
            view.add_item(
                discord.ui.Select(
                    custom_id=choice.data[:100],
                    placeholder=choice.placeholder[:150],
                    options=[
                        discord.SelectOption(label=label[:100], value=value[:100])
                        for label, value in choice.options[:25]
                    ],
                )
            )
        for row_index, row in enumerate(buttons[:5]):
            for button in row[:5]:
                view.add_item(
                    discord.ui.Button(
                        label=button.label[:80], custom_id=button.data[:100], row=row_index
                    )
                )
        return view

    def _parts(self, content: FormattedText) -> list[str]:
        if not content.text:
            return [""]
        parts = split(content, MAX_TEXT, render=to_discord_markdown)
        return [to_discord_markdown(part) for part in parts]

    def _note_first_try(self, delivery: Delivery, channel: Any) -> None:
        """Remember how old a webhook post's first try is, before it is made."""
        if not delivery.key or delivery.key in self._first_tries:
            return
        if len(self._first_tries) >= 1000:
            del self._first_tries[next(iter(self._first_tries))]
        if delivery.maybe_sent:
            # The first try was made by an earlier run: the outbox kept its time. Without it
            # there is no bound, and only message_link tells an earlier copy from this post.
            first = delivery.first_try_at
            self._first_tries[delivery.key] = (
                discord.utils.time_snowflake(first - timedelta(seconds=CLOCK_SKEW))
                if first is not None
                else 0
            )
            return
        # Two lower bounds, the tighter one wins: the newest message discord.py has seen in
        # the channel (Discord's own clock), and the wall clock less the skew between the
        # clocks (the gateway may lag). Not self.clock: snowflakes follow the real time.
        seen = int(getattr(channel, "last_message_id", None) or 0)
        now = discord.utils.utcnow() - timedelta(seconds=CLOCK_SKEW)
        self._first_tries[delivery.key] = max(seen, discord.utils.time_snowflake(now))

    async def _already_posted(
        self, action: SendMessage, content: FormattedText, delivery: Delivery
    ) -> Sent | None:
        """After a failed or interrupted try: find the webhook post that may have landed.

        Webhook posts carry no nonce, so the channel's last messages are compared with what
        this try would post (same webhook, same name, same text). A resident who relays
        "Merci !" twice must get two posts, so a message is never taken for this one if it
        is at or below the first try's bound, or if it is recorded as a copy in message_link:
        the chat's outbox posts in order, so a recorded copy, and all before it, predate this
        delivery's first try.
        """
        channel = await self._channel(action.chat)
        hook = await self._webhook(action.chat)
        missing = self._parts(content)[len(delivery.sent_parts) :]
        if not missing:
            return None
        username = webhook_username(action.as_name or "")
        bound = self._first_tries.get(delivery.key or "", 0)
        known = set(delivery.sent_parts)
        me = self.client.user
        recent: list[discord.Message] = await self._call(_recent(channel, 50))  # newest first
        candidates: list[discord.Message] = []
        async with self.db.read() as session:
            for message in recent:
                if message.id <= bound:
                    break
                ours = message.webhook_id == hook.id or (
                    me is not None and message.author.id == me.id
                )
                if not ours or str(message.id) in known:
                    continue
                copy_of = await message_map.original_of(
                    session, chat_key(action.chat), str(message.id)
                )
                if copy_of is not None:
                    break
                if (
                    message.webhook_id == hook.id
                    and message.author.name == username
                    and message.content in missing
                ):
                    candidates.append(message)
        # Part by part, in order, the oldest fitting candidate.
        ordered = sorted(candidates, key=lambda m: m.id)
        found: list[discord.Message] = []
        for part in missing:
            after = found[-1].id if found else 0
            match = next((m for m in ordered if m.content == part and m.id > after), None)
            if match is None:
                return None
            found.append(match)
        logger.info("relay already posted by an earlier try; not posting again")
        return Sent(action.chat, (*delivery.sent_parts, *(str(m.id) for m in found)))

    async def _send(self, action: SendMessage, delivery: Delivery) -> Sent:
        # Webhook posts cannot be native replies: they keep the quote of the message answered.
        content = self.quoted(action, native_reply=not action.as_name)
        interaction = (
            self._interactions.pop(action.interaction_id, None) if action.interaction_id else None
        )
        if action.as_name and interaction is None:
            # An earlier try in this process that did not succeed may have landed, even when
            # the outbox says otherwise: it forgets on a rate limit, which a history lookup
            # can also meet after a 5xx on the post.
            tried = bool(delivery.key) and delivery.key in self._first_tries
            self._note_first_try(delivery, await self._channel(action.chat))
            if delivery.maybe_sent or tried:
                found = await self._already_posted(action, content, delivery)
                if found is not None:
                    self._first_tries.pop(delivery.key or "", None)
                    return found
        parts = self._parts(content)
        mentions = self._mentions(action)
        view = self._view(action.buttons, action.choice)
        ids: list[str] = list(delivery.sent_parts)
        for index, part in enumerate(parts):
            if index < len(delivery.sent_parts):
                continue
            try:
                ids.append(
                    await self._send_part(
                        action, delivery, index, part, parts, view, mentions, interaction
                    )
                )
            except DeliveryError as exc:
                if ids:
                    raise PartialDelivery(tuple(ids), exc) from exc
                raise
        self._first_tries.pop(delivery.key or "", None)
        return Sent(action.chat, tuple(ids))

    async def _send_part(
        self,
        action: SendMessage,
        delivery: Delivery,
        index: int,
        part: str,
        parts: list[str],
        view: discord.ui.View | None,
        mentions: discord.AllowedMentions,
        interaction: discord.Interaction | None,
    ) -> str:
        last = index == len(parts) - 1
        part_view = view if last else None
        if interaction is not None:
            options: dict[str, Any] = {"view": part_view} if part_view is not None else {}
            message = await self._call(
                interaction.followup.send(
                    part,
                    wait=True,
                    ephemeral=action.ephemeral,
                    allowed_mentions=mentions,
                    **options,
                )
            )
        elif action.as_name:
            hook = self._one_try(await self._webhook(action.chat))
            kwargs: dict[str, Any] = _in_thread(action.chat)
            if action.avatar_url:
                kwargs["avatar_url"] = action.avatar_url
            message = await self._call(
                hook.send(
                    part,
                    username=webhook_username(action.as_name),
                    wait=True,
                    allowed_mentions=mentions,
                    **kwargs,
                )
            )
        else:
            channel = await self._channel(action.chat)
            kwargs = {}
            if action.reply_to and index == 0:
                kwargs["reference"] = discord.MessageReference(
                    message_id=int(action.reply_to),
                    channel_id=channel.id,
                    fail_if_not_exists=False,
                )
            if part_view is not None:
                kwargs["view"] = part_view
            if delivery.key:
                kwargs["nonce"] = f"{delivery.key}:{index}"[:25]
            message = await self._call(
                channel.send(part, allowed_mentions=mentions, silent=action.silent, **kwargs)
            )
        return str(message.id)

    def _one_try(self, hook: discord.Webhook) -> discord.Webhook:
        """The same webhook, posting with one HTTP try (see ``_OneTrySession``)."""
        assert hook.token is not None
        session = cast(aiohttp.ClientSession, _OneTrySession(hook.session))
        return discord.Webhook.partial(hook.id, hook.token, session=session, client=self.client)

    async def _send_file(self, action: SendFile, delivery: Delivery) -> Sent:
        caption = to_discord_markdown(action.caption)[:MAX_TEXT] if action.caption else ""
        file = discord.File(io.BytesIO(action.data), filename=action.filename)
        if action.as_name:
            hook = await self._webhook(action.chat)
            kwargs: dict[str, Any] = _in_thread(action.chat)
            message = await self._call(
                hook.send(
                    caption,
                    username=webhook_username(action.as_name),
                    file=file,
                    wait=True,
                    allowed_mentions=NO_MENTIONS,
                    **kwargs,
                )
            )
        else:
            channel = await self._channel(action.chat)
            message = await self._call(
                channel.send(caption, file=file, allowed_mentions=NO_MENTIONS)
            )
        return Sent(action.chat, (str(message.id),))

    async def _edit(self, action: EditMessage, delivery: Delivery) -> Sent | None:
        """Edit every part of a message; what no longer fits is posted after it.

        As on Telegram, an edit cannot add a message in place: the parts carry what they
        hold, a part the new text no longer reaches shows "…", and the rest is posted after
        them. Their ids come back in ``Sent`` after the parts'.
        """
        ids = list(delivery.part_ids) or ([action.message_id] if action.message_id else [])
        if not ids:
            return None
        parts = self._parts(action.content)
        for index, message_id in enumerate(ids):
            text = parts[index] if index < len(parts) else "…"
            extra: dict[str, Any] = {}
            if action.buttons is not None and index == len(ids) - 1:
                # None keeps the buttons; () removes them, which discord.py does only when
                # told view=None (without a view it leaves them as they were).
                extra["view"] = self._view(action.buttons)
            if action.as_name:
                hook = await self._webhook(action.chat)
                extra.update(_in_thread(action.chat))
                await self._call(
                    hook.edit_message(
                        int(message_id), content=text, allowed_mentions=NO_MENTIONS, **extra
                    )
                )
            else:
                channel = await self._channel(action.chat)
                partial = channel.get_partial_message(int(message_id))
                await self._call(partial.edit(content=text, allowed_mentions=NO_MENTIONS, **extra))
        added: list[str] = []
        for part in parts[len(ids) :]:
            try:
                added.append(await self._post_continuation(action, part))
            except DeliveryError as exc:
                if added:
                    # The outbox keeps them: the next try edits them instead of posting anew.
                    raise PartialDelivery((*ids, *added), exc) from exc
                raise
        return Sent(action.chat, (*ids, *added)) if added else None

    async def _post_continuation(self, action: EditMessage, part: str) -> str:
        """Post the part of an edit its message could not hold, as the message was posted."""
        as_sent = SendMessage(
            chat=action.chat, content=FormattedText.plain(part), as_name=action.as_name, silent=True
        )
        return await self._send_part(as_sent, Delivery(), 0, part, [part], None, NO_MENTIONS, None)

    async def _delete(self, action: DeleteMessage, delivery: Delivery) -> None:
        assert action.message_id is not None
        try:
            if delivery.relayed_copy:
                # Relayed posts are the webhook's: deleted through it, like they were made.
                hook = await self._webhook(action.chat)
                await self._call(
                    hook.delete_message(int(action.message_id), **_in_thread(action.chat))
                )
                return
            channel = await self._channel(action.chat)
            await self._call(channel.get_partial_message(int(action.message_id)).delete())
        except PermanentFailure as exc:
            if "unknown message" not in str(exc).lower() and "404" not in str(exc):
                raise

    async def _answer(self, action: AnswerButton, delivery: Delivery) -> None:
        interaction = self._interactions.pop(action.interaction_id, None)
        if interaction is None or not action.text:
            return  # already acknowledged by the deferral when it arrived
        await self._call(
            interaction.followup.send(action.text, ephemeral=True, allowed_mentions=NO_MENTIONS)
        )

    async def _pin(self, action: PinMessage, delivery: Delivery) -> None:
        assert action.message_id is not None, "the outbox resolves a post's name to its id"
        channel = await self._channel(action.chat)
        await self._call(channel.get_partial_message(int(action.message_id)).pin())

    async def _unpin(self, action: UnpinMessage, delivery: Delivery) -> None:
        assert action.message_id is not None, "the outbox resolves a post's name to its id"
        channel = await self._channel(action.chat)
        await self._call(channel.get_partial_message(int(action.message_id)).unpin())

    async def _open_thread(self, action: OpenThread, delivery: Delivery) -> Sent:
        """A public thread started from the post's message; its id is the message's.

        Discord keeps one thread per message: a second try (after a crash, or a retry whose
        answer was lost) is told 160004 and takes the thread the first one made.
        """
        assert action.message_id is not None, "the outbox resolves the post's name to its id"
        if action.chat.thread_id is not None or is_direct(action.chat):
            # A thread holds no threads, a private conversation none at all: the discussion
            # there is the reply chain under the post.
            logger.info(
                "no thread possible in %s: the post's replies are its discussion", action.chat
            )
            return Sent(action.chat, ())
        channel = await self._channel(action.chat)
        message = channel.get_partial_message(int(action.message_id))
        thread_id = await self._call(self._start_thread(message, thread_name(action.name)))
        return Sent(replace(action.chat, thread_id=thread_id), (thread_id,))

    async def _start_thread(self, message: discord.PartialMessage, name: str) -> str:
        try:
            thread = await message.create_thread(
                name=name, auto_archive_duration=THREAD_ARCHIVE_MINUTES
            )
        except discord.HTTPException as exc:
            if exc.code != THREAD_ALREADY_CREATED:
                raise
            # The thread an earlier try opened: a thread started from a message has the
            # message's id, and reading it back says it is there.
            existing = self.client.get_channel(message.id) or await self.client.fetch_channel(
                message.id
            )
            logger.info("thread on message %s was opened already: %s", message.id, existing.id)
            return str(existing.id)
        return str(thread.id)

    async def _guild(self, chat: ChatRef) -> discord.Guild:
        if is_direct(chat):
            raise PermanentFailure(f"{chat} is a private conversation: no server to moderate")
        channel = await self._channel(chat)
        guild: discord.Guild = channel.guild
        return guild

    async def _member(self, chat: ChatRef, user_id: str) -> discord.Member:
        guild = await self._guild(chat)
        member: discord.Member = await self._call(guild.fetch_member(int(user_id)))
        return member

    async def _mute(self, action: MuteMember, delivery: Delivery) -> None:
        member = await self._member(action.chat, action.user_id)
        await self._call(member.timeout(action.until, reason=action.reason))

    async def _ban(self, action: BanMember, delivery: Delivery) -> None:
        guild = await self._guild(action.chat)
        await self._call(guild.ban(discord.Object(int(action.user_id)), reason=action.reason))

    async def _unban(self, action: UnbanMember, delivery: Delivery) -> None:
        guild = await self._guild(action.chat)
        await self._call(guild.unban(discord.Object(int(action.user_id))))

    async def _call(self, call: Any) -> Any:
        """Await a discord.py call, translating its errors into the outbox's vocabulary."""
        try:
            return await call
        except discord.RateLimited as exc:
            raise RateLimited(exc.retry_after, "Discord rate limit") from exc
        except _ServerError as exc:
            raise TemporaryFailure(str(exc)) from exc
        except discord.Forbidden as exc:
            if exc.code == CANNOT_MESSAGE_USER:
                # Never retried: Discord counts every refused request towards its ban of
                # clients that make too many invalid ones.
                raise PermanentFailure(
                    f"{exc.status} {exc.text} (code {exc.code}): the user does not accept "
                    "direct messages from this bot (their privacy settings, a block, or no "
                    "server shared with it)"
                ) from exc
            raise PermanentFailure(f"{exc.status} {exc.text}") from exc
        except discord.NotFound as exc:
            raise PermanentFailure(f"{exc.status} {exc.text}") from exc
        except discord.DiscordServerError as exc:
            raise TemporaryFailure(f"{exc.status} {exc.text}") from exc
        except discord.HTTPException as exc:
            if exc.status == 429:
                retry = float(getattr(exc.response, "headers", {}).get("Retry-After", 1) or 1)
                raise RateLimited(retry, "Discord rate limit") from exc
            if exc.status >= 500:
                raise TemporaryFailure(f"{exc.status} {exc.text}") from exc
            raise PermanentFailure(f"{exc.status} {exc.text}") from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise TemporaryFailure(f"{type(exc).__name__}: {exc}") from exc

    async def download(self, attachment: Attachment, limit: int) -> bytes | None:
        """The attachment's bytes, streamed with a hard cap and no redirect; None if too big."""
        if attachment.size is not None and attachment.size > limit:
            return None
        timeout = aiohttp.ClientTimeout(total=60)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(attachment.file_id, allow_redirects=False) as response,
        ):
            if response.status != 200:
                raise TemporaryFailure(f"attachment download answered {response.status}")
            data = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                data.extend(chunk)
                if len(data) > limit:
                    return None
            return bytes(data)


def is_direct(chat: ChatRef) -> bool:
    """Whether ``chat`` is a private conversation with one user (``dm:<user id>``)."""
    return chat.chat_id.startswith(DIRECT_PREFIX)


def _as_bot(action: Action) -> Action:
    """``action`` as the bot's own post: a relayed author's name, which a webhook would show,
    heads the text in bold instead (as on Telegram)."""
    name = getattr(action, "as_name", None)
    if not name:
        return action
    header = FormattedText.plain(name).styled(Style.BOLD) + "\n"
    if isinstance(action, SendMessage | EditMessage):
        return replace(action, content=header + action.content, as_name=None)
    if isinstance(action, SendFile):
        caption = header + action.caption if action.caption else FormattedText.plain(name)
        return replace(action, caption=caption, as_name=None)
    return action


async def _recent(channel: Any, limit: int) -> list[discord.Message]:
    return [message async for message in channel.history(limit=limit)]


def _in_thread(chat: ChatRef) -> dict[str, Any]:
    """Webhook calls name the thread a relayed post lives in (its parent owns the webhook)."""
    return {"thread": discord.Object(int(chat.thread_id))} if chat.thread_id else {}


def _modal(form: Form) -> discord.ui.Modal:
    modal = discord.ui.Modal(title=form.title[:45], custom_id=form.form_id[:100], timeout=None)
    for field in form.fields[:5]:
        modal.add_item(
            discord.ui.TextInput(
                label=field.label[:45],
                custom_id=field.field_id[:100],
                style=discord.TextStyle.paragraph if field.long else discord.TextStyle.short,
                required=field.required,
                max_length=field.max_length,
                placeholder=field.placeholder,
            )
        )
    return modal


def thread_name(name: str) -> str:
    """A name Discord accepts for a thread (1–100 characters, on one line)."""
    # No direction overrides or invisible characters in a name everyone sees.
    cleaned = " ".join(sanitize(name).split()) or "…"
    if len(cleaned) > MAX_THREAD_NAME:
        cleaned = cleaned[: MAX_THREAD_NAME - 1].rstrip() + "…"
    return cleaned


def webhook_username(name: str) -> str:
    """A name Discord accepts for a webhook post (1–80 characters, no "discord", no "clyde")."""
    cleaned = re.sub(r"(?i)(disc)(ord)", "\\1\u200b\\2", name)
    cleaned = re.sub(r"(?i)(cl)(yde)", "\\1\u200b\\2", cleaned).strip() or "?"
    return cleaned[:80]


def _french(message: str) -> str:
    return Translator("fr").t(message)[:100]


class _CatalogTranslator(app_commands.Translator):
    """Slash command texts: French by default, English for English-speaking clients."""

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        message = string.extras.get("message")
        if message and locale in (discord.Locale.british_english, discord.Locale.american_english):
            return str(message)[:100]
        return None
