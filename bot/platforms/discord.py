"""Discord, through discord.py 2.x: gateway events in, actions out.

Every gateway event the bot acts on is turned into a neutral event and stored in the inbox
(keyed by Discord's ids) before it is handled; after a reconnect that could not resume, the
history of each served channel after the last message seen is fetched and stored the same way,
so what was written during downtime is handled once. Slash commands and buttons are deferred at
once (Discord wants an answer within three seconds) and answered through their interaction.
Buttons carry their state in their custom id and are handled without in-memory views, so they
keep working after a restart. Every send and edit carries ``AllowedMentions.none()`` unless the
core names people to notify.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import logging
import re
from collections.abc import Sequence
from datetime import UTC
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
import discord
import yarl
from discord import app_commands
from sqlalchemy.exc import DBAPIError

from bot import codec, inbox
from bot.clock import Clock
from bot.commands import parse_command
from bot.config import SUPPORTED_LANGUAGES, Settings
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
    Form,
    FormSubmitted,
    MemberJoined,
    MemberLeft,
    MessageDeleted,
    MessageEdited,
    MessageReceived,
    MuteMember,
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
from bot.i18n import Translator
from bot.inbox import InboxRunner
from bot.outbox import Pace
from bot.platforms.base import Adapter
from bot.richtext import FormattedText, from_discord_markdown, split, to_discord_markdown
from storage.db import Database

if TYPE_CHECKING:
    from bot.dispatcher import Dispatcher

logger = logging.getLogger(__name__)

PLATFORM = "discord"
MAX_TEXT = 2000
WEBHOOK_NAME = "forum-habitant"
DEFAULT_API = "https://discord.com/api/v10"
# Discord lets a bot post about five messages per five seconds in one channel.
CHANNEL_PACE = Pace(5, 5.0)
NO_MENTIONS = discord.AllowedMentions.none()


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
        self._stopping = False
        self._saved_endpoints: tuple[str, yarl.URL] | None = None
        self._incoming: asyncio.Queue[tuple[str, Event, tuple[str, int] | None]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

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
        # What arrived before the close is stored before the writer stops.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self._incoming.join()
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

    async def _store(self, key: str, event: Event, cursor: tuple[str, int] | None = None) -> None:
        """Queue ``event`` for the inbox; one writer keeps Discord's order.

        discord.py runs each event handler as its own task; written concurrently (PostgreSQL
        has no single writer) two messages could swap places in the inbox, and so in the
        relay. The queue is filled in gateway order and emptied by one task.
        """
        self._incoming.put_nowait((key, event, cursor))

    async def _writer_loop(self) -> None:
        while True:
            batch = [await self._incoming.get()]
            while not self._incoming.empty() and len(batch) < 200:
                batch.append(self._incoming.get_nowait())
            try:
                await self._write_batch(batch)
            finally:
                for _ in batch:
                    self._incoming.task_done()
            if self._inbox is not None:
                self._inbox.wake()

    async def _write_batch(self, batch: list[tuple[str, Event, tuple[str, int] | None]]) -> None:
        # Discord will not send these events again: a database hiccup gets more tries.
        for attempt in range(8):
            try:
                async with self.db.write() as session:
                    now = self.clock.now()
                    await inbox.store_updates(
                        session, PLATFORM, [(k, codec.encode(e)) for k, e, _ in batch], now
                    )
                    cursors = {c[0]: c[1] for _, _, c in batch if c is not None}
                    for channel_id, message_id in cursors.items():
                        # The newest message seen per channel: after an outage, history is
                        # read from there.
                        await inbox.set_cursor(
                            session, PLATFORM, f"last:{channel_id}", str(message_id), now
                        )
                return
            except DBAPIError:
                if attempt == 7:
                    logger.exception("could not store %d Discord events", len(batch))
                    return
                logger.warning("could not store Discord events; retrying", exc_info=True)
                await asyncio.sleep(0.2 * 2**attempt)

    async def _on_message(self, message: discord.Message) -> None:
        if message.guild is None or self._is_ours(message):
            # Discord echoes the bot's own posts and its webhook's relays: nothing to handle.
            return
        event = self.to_event(message)
        channel_id = message.channel.id
        if event is None:
            return
        await self._store(f"message:{message.id}", event, (str(channel_id), message.id))

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
        await self._store(f"edit:{payload.message_id}:{edited}", event)

    async def _on_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        channel = self.client.get_channel(payload.channel_id)
        chat = self._chat_of(channel, payload.channel_id)
        event = MessageDeleted(
            chat=chat,
            author=Author(platform=PLATFORM, user_id="unknown", display_name="?"),
            at=self.clock.now(),
            message_id=str(payload.message_id),
        )
        await self._store(f"delete:{payload.message_id}", event)

    async def _on_member(self, member: discord.Member, *, joined: bool) -> None:
        cls = MemberJoined if joined else MemberLeft
        chat = ChatRef(PLATFORM, str(member.guild.id))
        event = cls(chat=chat, author=self._author(member), at=self.clock.now())
        kind = "join" if joined else "leave"
        await self._store(
            f"{kind}:{member.guild.id}:{member.id}:{self.clock.now().isoformat()}", event
        )

    async def _on_slash(self, interaction: discord.Interaction, name: str, args: str) -> None:
        assert self._dispatcher is not None
        command = self._dispatcher.commands.get(name)
        modal = None
        chat = self._chat_of(interaction.channel, interaction.channel_id)
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
        await self._store(f"interaction:{interaction.id}", event)

    async def _on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type not in (
            discord.InteractionType.component,
            discord.InteractionType.modal_submit,
        ):
            return  # slash commands reach _on_slash through the command tree
        data: dict[str, Any] = dict(interaction.data or {})
        channel = interaction.channel
        chat = self._chat_of(channel, interaction.channel_id)
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
        await self._store(f"interaction:{interaction.id}", event)

    async def _on_ready(self) -> None:
        """After every (re)connection that could not resume: fetch what was missed."""
        await self._load_webhooks()
        await self._catch_up()
        self._ready.set()

    async def _on_resumed(self) -> None:
        """A resumed session replays what it kept; history covers what it did not."""
        await self._catch_up()

    def _served_channels(self) -> list[int]:
        return sorted(int(chat_id) for chat_id in self.settings.served_chat_ids(PLATFORM))

    async def _load_webhooks(self) -> None:
        for channel_id in self._served_channels():
            channel = self.client.get_channel(channel_id)
            if isinstance(channel, discord.TextChannel):
                with contextlib.suppress(discord.HTTPException):
                    for hook in await channel.webhooks():
                        if hook.name == WEBHOOK_NAME:
                            self._webhook_ids.add(hook.id)

    async def _catch_up(self) -> None:
        for channel_id in self._served_channels():
            last = await inbox.get_cursor(self.db, PLATFORM, f"last:{channel_id}")
            if last is None:
                continue  # first start: nothing missed, and old history is not news
            channel = self.client.get_channel(channel_id)
            if not isinstance(channel, discord.TextChannel | discord.Thread):
                continue
            try:
                async for message in channel.history(
                    limit=None, after=discord.Object(int(last)), oldest_first=True
                ):
                    await self._on_message(message)
            except discord.HTTPException as exc:
                logger.warning("could not fetch missed messages of %s: %s", channel_id, exc)

    # -- permissions ------------------------------------------------------------------------

    async def is_admin(self, chat: ChatRef, author: Author) -> bool:
        return "moderator" in await self.roles(chat, author)

    async def roles(self, chat: ChatRef, author: Author) -> frozenset[str]:
        """Moderator by a configured role, Manage Messages or Administrator; council staff by
        a configured role. Asked of Discord now (fresh member data)."""
        channel = self.client.get_channel(int(chat.thread_id or chat.chat_id))
        guild = getattr(channel, "guild", None)
        if guild is None:
            return frozenset()
        try:
            member = await guild.fetch_member(int(author.user_id))
        except discord.HTTPException:
            return frozenset()
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
        return frozenset(found)

    def pace(self, chat: ChatRef) -> Pace | None:
        return Pace(CHANNEL_PACE.count, CHANNEL_PACE.window * self.settings.rate_limit_scale)

    # -- performing actions -----------------------------------------------------------------

    async def _channel(self, chat: ChatRef) -> Any:
        channel_id = int(chat.thread_id or chat.chat_id)
        channel = self.client.get_channel(channel_id)
        if channel is None:
            channel = await self._call(self.client.fetch_channel(channel_id))
        return channel

    async def _webhook(self, chat: ChatRef) -> discord.Webhook:
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

    async def _already_posted(self, action: SendMessage, content: FormattedText) -> Sent | None:
        """After a crash mid-send: find the webhook post that may already be there.

        Webhook posts carry no nonce, so the last messages of the channel are compared with
        what this try would post (same webhook, same name, same text).
        """
        channel = await self._channel(action.chat)
        hook = await self._webhook(action.chat)
        expected = self._parts(content)
        username = webhook_username(action.as_name or "")
        found: list[discord.Message] = []
        async for message in channel.history(limit=50):
            if (
                message.webhook_id == hook.id
                and message.author.name == username
                and message.content in expected
            ):
                found.append(message)
        if len(found) < len(expected):
            return None
        found.sort(key=lambda m: m.id)
        ids = tuple(str(m.id) for m in found[-len(expected) :])
        logger.info("relay already posted before a restart; not posting again")
        return Sent(action.chat, ids)

    async def _send(self, action: SendMessage, delivery: Delivery) -> Sent:
        # Webhook posts cannot be native replies: they keep the quote of the message answered.
        content = self.quoted(action, native_reply=not action.as_name)
        if action.as_name and delivery.maybe_sent:
            found = await self._already_posted(action, content)
            if found is not None:
                return found
        parts = self._parts(content)
        mentions = self._mentions(action)
        view = self._view(action.buttons, action.choice)
        ids: list[str] = list(delivery.sent_parts)
        interaction = (
            self._interactions.pop(action.interaction_id, None) if action.interaction_id else None
        )
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
            hook = await self._webhook(action.chat)
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

    async def _edit(self, action: EditMessage, delivery: Delivery) -> None:
        ids = list(delivery.part_ids) or ([action.message_id] if action.message_id else [])
        parts = self._parts(action.content)
        if len(parts) > len(ids):
            parts = [*parts[: len(ids) - 1], "".join(parts[len(ids) - 1 :])[:MAX_TEXT]]
        view = self._view(action.buttons) if action.buttons else None
        for index, message_id in enumerate(ids):
            text = parts[index] if index < len(parts) else "…"
            extra: dict[str, Any] = {}
            if view is not None and index == len(ids) - 1:
                extra["view"] = view
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

    async def _member(self, chat: ChatRef, user_id: str) -> discord.Member:
        channel = await self._channel(chat)
        member: discord.Member = await self._call(channel.guild.fetch_member(int(user_id)))
        return member

    async def _mute(self, action: MuteMember, delivery: Delivery) -> None:
        member = await self._member(action.chat, action.user_id)
        await self._call(member.timeout(action.until, reason=action.reason))

    async def _ban(self, action: BanMember, delivery: Delivery) -> None:
        channel = await self._channel(action.chat)
        await self._call(
            channel.guild.ban(discord.Object(int(action.user_id)), reason=action.reason)
        )

    async def _unban(self, action: UnbanMember, delivery: Delivery) -> None:
        channel = await self._channel(action.chat)
        await self._call(channel.guild.unban(discord.Object(int(action.user_id))))

    async def _call(self, call: Any) -> Any:
        """Await a discord.py call, translating its errors into the outbox's vocabulary."""
        try:
            return await call
        except discord.RateLimited as exc:
            raise RateLimited(exc.retry_after, "Discord rate limit") from exc
        except (discord.NotFound, discord.Forbidden) as exc:
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
