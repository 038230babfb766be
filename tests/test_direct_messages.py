"""Private messages: the real adapters, through the outbox, against the platform fakes.

The core names a private conversation with ``direct_chat(platform, user_id)`` and queues plain
``SendMessage`` actions to it; each platform then has its own way of reaching one person, and
its own way of refusing: a Discord user who does not accept DMs (403, code 50007), a Telegram
user who never started the bot or blocked it (403 "Forbidden: ..."). A refusal is final: the
row fails once, it is never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlmodel import col

import handlers
from bot.bootstrap import App, build
from bot.buttons import ButtonTemplate
from bot.clock import SystemClock
from bot.config import ChannelConfig, RolesConfig, Settings
from bot.dispatcher import Press
from bot.events import (
    Action,
    Author,
    Button,
    ButtonPressed,
    ChatRef,
    DeleteMessage,
    EditMessage,
    SendMessage,
    direct_chat,
)
from bot.handling import Context
from bot.platforms.discord import DiscordAdapter
from bot.platforms.telegram import TelegramAdapter
from bot.richtext import FormattedText
from storage.db import Database
from storage.models import OutboxItem
from tests.fakes.discord import FakeDiscord
from tests.fakes.telegram import FakeTelegram, TelegramLimits
from tests.forum import Forum

GUILD = 1000
GENERAL = 1100
MODERATORS = 1200
MARIE = 4000
PAUL = 4001

TG_GROUP = -100123
TG_MARIE = 42
TG_PAUL = 43
TG_JEANNE = 44

ANSWERED = ButtonTemplate("dmtest:{id:int}:seen")

pytestmark = pytest.mark.usefixtures("fast_discord_reconnect", "ptb_timedelta")


def _text(text: str) -> FormattedText:
    return FormattedText.plain(text)


async def _rows(app: App, chat_key: str, source_key: str | None = None) -> list[OutboxItem]:
    """The outbox rows of a chat (of one submission when ``source_key`` is given)."""
    async with app.db.read() as session:
        query = sa.select(OutboxItem).where(col(OutboxItem.chat_key) == chat_key)
        if source_key is not None:
            query = query.where(col(OutboxItem.source_key) == source_key)
        return list((await session.execute(query.order_by(col(OutboxItem.id)))).scalars())


async def _send(app: App, actions: Sequence[Action], source_key: str) -> None:
    """Queue ``actions`` and wait until the outbox has nothing pending (delivered or failed)."""
    await app.outbox.submit(actions, source_key=source_key)
    async with asyncio.timeout(30):
        await app.outbox.drain()


# -- Discord ------------------------------------------------------------------------------------


@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord(guild_id=GUILD)
    server.add_role(MODERATORS, "Modération")
    server.add_channel(GENERAL, "quartier-ouest")
    server.add_member(MARIE, "marie", global_name="Marie Dupont")
    server.add_member(PAUL, "paul", roles=[MODERATORS])
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def _discord_app(
    fake: FakeDiscord, database_url: str, pressed: list[ButtonPressed]
) -> AsyncIterator[tuple[App, DiscordAdapter]]:
    """The bot on Discord only, with one button handler that notes its presses."""
    settings = Settings(
        database_url=database_url,
        discord_token=SecretStr(fake.bot_token),
        discord_api_url=fake.api_url,
        discord_guild_ids=[str(GUILD)],
        channels=[ChannelConfig(platform="discord", id=str(GENERAL), neighbourhood="Ouest")],
        roles=RolesConfig(discord_moderator_roles=[str(MODERATORS)]),
    )

    async def seen(ctx: Context, press: Press) -> str | None:
        pressed.append(press.event)
        return "Bien noté"

    base = handlers.table(settings)
    tables = dataclasses.replace(base, buttons={**base.buttons, ANSWERED: seen})
    db = Database(settings.database_url)
    adapter = DiscordAdapter(
        settings, db, SystemClock(), identify_delay=False, guild_ready_timeout=0.1
    )
    app = build(
        settings,
        db=db,
        clock=SystemClock(),
        adapters=[adapter],
        with_scheduler=False,
        tables=tables,
    )
    await app.start()
    try:
        async with asyncio.timeout(30):
            await adapter.wait_ready()
        yield app, adapter
    finally:
        await app.stop()


def _components(message: dict[str, Any]) -> list[str]:
    return [c["custom_id"] for row in message["components"] for c in row["components"]]


async def test_a_discord_dm_reaches_the_users_dm_channel_with_working_buttons(
    discord_fake: FakeDiscord, sqlite_url: str
) -> None:
    fake = discord_fake
    pressed: list[ButtonPressed] = []
    chat = direct_chat("discord", str(MARIE))
    async with _discord_app(fake, sqlite_url, pressed) as (app, adapter):
        await _send(
            app,
            [
                SendMessage(
                    chat=chat,
                    content=_text("Votre proposition a reçu une réponse."),
                    buttons=((Button("Vu", ANSWERED.build(id=7)),),),
                    post_key="dmtest:7:notice",
                )
            ],
            "dm-1",
        )
        dm = fake.dm_channel_id(MARIE)
        assert dm is not None
        (first,) = fake.direct_messages(MARIE)
        # Posted by the bot itself, with its button, and nothing in the guild channel.
        assert first["author"]["id"] == str(fake.bot_user_id) and "webhook_id" not in first
        assert first["content"] == "Votre proposition a reçu une réponse."
        assert _components(first) == ["dmtest:7:seen"]
        assert fake.channel_messages(GENERAL) == []

        # A second message, a relay's name and an edit by the post's name reuse the channel.
        await _send(
            app,
            [
                SendMessage(chat=chat, content=_text("Et une autre nouvelle."), as_name="Paul"),
                EditMessage(chat=chat, post_key="dmtest:7:notice", content=_text("Répondue.")),
            ],
            "dm-2",
        )
        assert len(fake.calls("POST", r"/users/@me/channels")) == 1
        assert [m["content"] for m in fake.direct_messages(MARIE)] == [
            "Répondue.",
            "**Paul**\nEt une autre nouvelle.",
        ]
        # Never through a webhook: a DM has none, and none was made for it.
        assert fake.webhooks == []
        assert not fake.calls("*", rf"/channels/{dm}/webhooks")
        assert not fake.calls("POST", r"/webhooks/\d+/.+")

        # The button works in the DM: the press is the conversation's, acknowledged with
        # the handler's notice.
        fake.inject_component(dm, MARIE, int(first["id"]), "dmtest:7:seen")

        async def handled() -> bool:
            return bool(pressed)

        async with asyncio.timeout(30):
            await app.dispatcher.wait_until(handled)
        (press,) = pressed
        assert press.chat == chat and press.message_id == first["id"]
        await fake.wait_for(
            lambda: any(
                r["kind"] == "followup" and r["data"].get("content") == "Bien noté"
                for r in fake.interaction_responses
            ),
            timeout=30,
        )
        # A moderator keeps the server's roles in a private conversation.
        paul = Author(platform="discord", user_id=str(PAUL), display_name="paul")
        assert await adapter.roles(direct_chat("discord", str(PAUL)), paul) == {"moderator"}

        # The bot's own DM messages can be deleted again, through the same channel.
        await _send(app, [DeleteMessage(chat=chat, message_id=first["id"])], "dm-3")
        assert [m["content"] for m in fake.direct_messages(MARIE)] == [
            "**Paul**\nEt une autre nouvelle."
        ]
        assert len(fake.calls("POST", r"/users/@me/channels")) == 1
        rows = await _rows(app, f"discord:dm:{MARIE}")
    # The press's acknowledgement joined the conversation's queue, like everything else there.
    assert [(row.kind, row.status) for row in rows] == [
        ("SendMessage", "delivered"),
        ("SendMessage", "delivered"),
        ("EditMessage", "delivered"),
        ("AnswerButton", "delivered"),
        ("DeleteMessage", "delivered"),
    ]


async def test_a_discord_user_who_refuses_dms_fails_once_and_is_not_retried(
    discord_fake: FakeDiscord, sqlite_url: str
) -> None:
    fake = discord_fake
    refusal = fake.refuse_direct_messages(PAUL)
    async with _discord_app(fake, sqlite_url, []) as (app, _adapter):
        await _send(
            app,
            [SendMessage(chat=direct_chat("discord", str(PAUL)), content=_text("Bonjour Paul"))],
            "dm-refused",
        )
        (row,) = await _rows(app, f"discord:dm:{PAUL}")
    assert row.status == "failed" and row.attempts == 1
    assert row.last_error is not None and "50007" in row.last_error
    assert "does not accept direct messages" in row.last_error
    # Discord was asked once and answered 403: the channel opens, the post is refused.
    dm = fake.dm_channel_id(PAUL)
    posts = fake.calls("POST", rf"/channels/{dm}/messages")
    assert refusal.fired == 1 and [p.status for p in posts] == [403]
    assert fake.direct_messages(PAUL) == []


async def test_the_fake_opens_one_dm_channel_per_user_as_discord_does(
    discord_fake: FakeDiscord,
) -> None:
    """The fake's DM routes, by raw HTTP: the shapes the adapter's test relies on."""
    fake = discord_fake
    fake.add_user(5000, "inconnue")  # shares no server with the bot
    headers = {"Authorization": f"Bot {fake.bot_token}"}
    async with aiohttp.ClientSession(headers=headers) as http:

        async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
            async with http.request(method, fake.api_url + path, json=body) as response:
                return response.status, await response.json(content_type=None)

        status, first = await call("POST", "/users/@me/channels", {"recipient_id": str(MARIE)})
        assert status == 200 and first["type"] == 1
        assert [u["id"] for u in first["recipients"]] == [str(MARIE)]
        again = await call("POST", "/users/@me/channels", {"recipient_id": MARIE})
        assert again == (200, first)
        assert await call("POST", "/users/@me/channels", {"recipient_id": "999"}) == (
            400,
            {"message": "Invalid Recipient(s)", "code": 50033},
        )
        dm = int(first["id"])
        status, posted = await call("POST", f"/channels/{dm}/messages", {"content": "Bonjour"})
        assert status == 200 and "guild_id" not in posted
        assert fake.direct_messages(MARIE) == [posted]
        assert (await call("POST", f"/channels/{dm}/webhooks", {"name": "x"}))[1]["code"] == 50024
        # A DM channel is no guild channel.
        status, channels = await call("GET", f"/guilds/{GUILD}/channels")
        assert str(dm) not in {c["id"] for c in channels}

        refused = {"message": "Cannot send messages to this user", "code": 50007}
        fake.refuse_direct_messages(MARIE)
        assert await call("POST", f"/channels/{dm}/messages", {"content": "?"}) == (403, refused)
        # Someone who shares no server with the bot cannot be written to either.
        stranger = (await call("POST", "/users/@me/channels", {"recipient_id": "5000"}))[1]
        assert await call("POST", f"/channels/{stranger['id']}/messages", {"content": "?"}) == (
            403,
            refused,
        )


# -- Telegram -----------------------------------------------------------------------------------


@pytest.fixture
async def telegram_fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram(limits=TelegramLimits(window_scale=0.01))
    await server.start()
    server.add_chat(TG_GROUP, title="Quartier Ouest")
    server.add_user(TG_MARIE, "Marie")
    server.add_user(TG_PAUL, "Paul")
    server.add_user(TG_JEANNE, "Jeanne")
    try:
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def _telegram_app(fake: FakeTelegram, database_url: str) -> AsyncIterator[App]:
    settings = Settings(
        database_url=database_url,
        telegram_token=SecretStr(fake.token),
        telegram_api_url=fake.url,
        rate_limit_scale=0.01,
    )
    db = Database(settings.database_url)
    adapter = TelegramAdapter(settings, db, SystemClock(), poll_timeout=1)
    app = build(settings, db=db, clock=SystemClock(), adapters=[adapter], with_scheduler=False)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def test_a_telegram_dm_reaches_a_user_who_started_the_bot(
    telegram_fake: FakeTelegram, sqlite_url: str
) -> None:
    fake = telegram_fake
    async with _telegram_app(fake, sqlite_url) as app:
        # Marie starts the bot privately: handled as before, answered in her private chat.
        fake.inject_command(TG_MARIE, TG_MARIE, "start")
        await fake.wait_for(lambda: bool(fake.sent_messages(TG_MARIE)), timeout=30)
        (welcome,) = fake.sent_messages(TG_MARIE)
        assert str(welcome["text"]).startswith("Bonjour ! Je suis le bot du Forum Habitant")

        await _send(
            app,
            [
                SendMessage(
                    chat=direct_chat("telegram", str(TG_MARIE)),
                    content=_text("Votre proposition a reçu une réponse."),
                    buttons=((Button("Vu", "dmtest:7:seen"),),),
                )
            ],
            "tg-dm",
        )
        (row,) = await _rows(app, f"telegram:{TG_MARIE}", "tg-dm")
    assert row.status == "delivered"
    notice = fake.sent_messages(TG_MARIE)[-1]
    assert notice["text"] == "Votre proposition a reçu une réponse."
    assert notice["chat"]["type"] == "private"
    assert notice["reply_markup"] == {
        "inline_keyboard": [[{"text": "Vu", "callback_data": "dmtest:7:seen"}]]
    }
    assert fake.sent_messages(TG_GROUP) == []


async def test_a_telegram_dm_to_a_user_who_never_started_or_blocked_the_bot_fails_once(
    telegram_fake: FakeTelegram, sqlite_url: str
) -> None:
    fake = telegram_fake
    # Jeanne started the bot, then blocked it; Paul never wrote to it.
    fake.add_chat(TG_JEANNE, type="private")
    fake.set_member_status(TG_JEANNE, fake.bot_id, "kicked")
    async with _telegram_app(fake, sqlite_url) as app:
        await _send(
            app,
            [
                SendMessage(chat=direct_chat("telegram", str(user)), content=_text("Bonjour"))
                for user in (TG_PAUL, TG_JEANNE)
            ],
            "tg-refused",
        )
        (paul,) = await _rows(app, f"telegram:{TG_PAUL}")
        (jeanne,) = await _rows(app, f"telegram:{TG_JEANNE}")
    assert (paul.status, paul.attempts) == ("failed", 1)
    assert (jeanne.status, jeanne.attempts) == ("failed", 1)
    assert paul.last_error == "Forbidden: bot can't initiate conversation with a user"
    assert jeanne.last_error == "Forbidden: bot was blocked by the user"
    # Telegram was asked once for each and answered 403 each time.
    sends = fake.calls("sendMessage")
    assert sorted((int(r.params["chat_id"]), r.status) for r in sends) == [
        (TG_PAUL, 403),
        (TG_JEANNE, 403),
    ]


# -- Console ------------------------------------------------------------------------------------


async def test_the_console_shows_a_private_message_as_private(settings: Settings) -> None:
    async with Forum(settings) as forum:
        await forum.app.outbox.submit(
            [
                SendMessage(
                    chat=direct_chat("console", "marie"),
                    content=_text("Votre proposition a reçu une réponse."),
                    buttons=((Button("Vu", "dmtest:7:seen"),),),
                ),
                SendMessage(chat=ChatRef("console", "con:general"), content=_text("Pour tous")),
            ],
            source_key="console-dm",
        )
        await forum.settle()
    private = [p for p in forum.console.state.posted if p.chat == "dm:marie"]
    assert len(private) == 1
    number = private[0].message_id
    assert f"[message privé à marie] Forum #{number}: Votre proposition a reçu une réponse." in (
        forum.lines
    )
    assert "    [Vu] → :clic dmtest:7:seen" in forum.lines
    # Other chats print as before.
    assert any(line.startswith("[con:general] Forum #") for line in forum.lines)
