"""The Discord adapter, driving the real discord.py against the loopback fake."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlmodel import col

import handlers
from bot.bootstrap import App, build
from bot.buttons import ButtonRoutes, ButtonTemplate
from bot.clock import SystemClock
from bot.config import ChannelConfig, RolesConfig, Settings
from bot.dispatcher import Filled, Press, Tables
from bot.events import Action, Button, ButtonPressed, ChatRef, SendMessage
from bot.handling import Command, Context
from bot.platforms.discord import DiscordAdapter, webhook_username
from bot.richtext import FormattedText
from storage.db import Database
from storage.models import Channel, InboxUpdate, Message
from tests.fakes.discord import FakeDiscord

GUILD = 1000
GENERAL = 1100
MODERATORS = 1200
MARIE = 4000
PAUL = 4001


pytestmark = pytest.mark.usefixtures("fast_discord_reconnect")


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
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


def _settings(fake: FakeDiscord, database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        discord_token=SecretStr("TEST.discord.token"),
        discord_api_url=fake.api_url,
        discord_guild_ids=[str(GUILD)],
        channels=[ChannelConfig(platform="discord", id=str(GENERAL), neighbourhood="Ouest")],
        roles=RolesConfig(discord_moderator_roles=[str(MODERATORS)]),
    )


class DiscordForum:
    def __init__(self, fake: FakeDiscord, app: App, adapter: DiscordAdapter) -> None:
        self.fake = fake
        self.app = app
        self.adapter = adapter

    async def until(self, check: Any) -> None:
        async with asyncio.timeout(30):
            await self.app.dispatcher.wait_until(check)

    async def stored(self, count: int) -> list[Message]:
        async def enough() -> bool:
            async with self.app.db.read() as session:
                return len((await session.execute(sa.select(Message))).all()) >= count

        await self.until(enough)
        async with self.app.db.read() as session:
            return list((await session.execute(sa.select(Message).order_by(Message.id))).scalars())  # type: ignore[arg-type]

    async def drain(self) -> None:
        async with asyncio.timeout(30):
            await self.app.outbox.drain()


async def _start(fake: FakeDiscord, settings: Settings, db: Database | None = None) -> DiscordForum:
    db = db or Database(settings.database_url)
    adapter = DiscordAdapter(
        settings, db, SystemClock(), identify_delay=False, guild_ready_timeout=0.1
    )
    app = build(settings, db=db, clock=SystemClock(), adapters=[adapter], with_scheduler=False)
    await app.start()
    async with asyncio.timeout(30):
        await adapter.wait_ready()
    return DiscordForum(fake, app, adapter)


@pytest.fixture
async def forum(fake: FakeDiscord, database_url: str) -> AsyncIterator[DiscordForum]:
    forum = await _start(fake, _settings(fake, database_url))
    try:
        yield forum
    finally:
        await forum.app.stop()


async def test_slash_aide_is_answered_in_french(forum: DiscordForum) -> None:
    names = {c["name"]: c for c in forum.fake.application_commands}
    assert {"aide", "langue", "statut"} <= set(names)
    assert names["aide"]["description"] == "Voir tout ce que le bot sait faire"
    assert names["aide"]["description_localizations"]["en-US"] == "List what the bot can do"
    interaction = forum.fake.inject_slash_command(GENERAL, MARIE, "aide")

    def answers() -> list[dict[str, Any]]:
        return [
            r
            for r in forum.fake.interaction_responses
            if r["interaction_id"] == interaction["id"] and r["kind"] != "callback"
        ]

    await forum.fake.wait_for(lambda: bool(answers()), timeout=30)
    kinds = [
        r["kind"]
        for r in forum.fake.interaction_responses
        if r["interaction_id"] == interaction["id"]
    ]
    # Deferred at once (Discord's three seconds), then answered with a follow-up.
    assert kinds[0] == "callback"
    (answer,) = answers()
    assert str(answer["data"]["content"]).startswith("Bonjour ! Je suis le bot du Forum Habitant")


async def test_a_message_is_stored_with_its_discord_ids_and_time(forum: DiscordForum) -> None:
    posted = forum.fake.inject_message(GENERAL, MARIE, "Qui vient **jeudi** ?")
    (message,) = await forum.stored(1)
    async with forum.app.db.read() as session:
        channel = await session.get(Channel, message.channel_id)
    assert channel is not None and (channel.platform, channel.chat_id, channel.neighbourhood) == (
        "discord",
        str(GENERAL),
        "Ouest",
    )
    assert message.platform_message_id == posted["id"]
    assert message.text == "Qui vient jeudi ?"
    assert message.spans == [{"style": "bold", "start": 10, "end": 15}]
    assert message.sent_at == datetime.fromisoformat(posted["timestamp"]).astimezone(UTC)


PINGS = "@everyone @here <@&1200> <@4000> rendez-vous !"


async def test_nothing_the_bot_sends_can_ping(forum: DiscordForum) -> None:
    chat = ChatRef("discord", str(GENERAL))
    await forum.app.outbox.submit(
        [
            SendMessage(chat=chat, content=FormattedText.plain(PINGS)),
            SendMessage(chat=chat, content=FormattedText.plain(PINGS), as_name="Marie · Telegram"),
        ],
        source_key="pings",
    )
    interaction = forum.fake.inject_slash_command(GENERAL, MARIE, "aide")
    await forum.drain()
    await forum.fake.wait_for(lambda: len(forum.fake.interaction_responses) >= 2, timeout=30)
    payloads = [
        r.json
        for r in forum.fake.requests
        if r.method in ("POST", "PATCH") and isinstance(r.json, dict) and "content" in r.json
    ]
    assert len(payloads) >= 3, interaction
    assert all(p.get("allowed_mentions", {}).get("parse") == [] for p in payloads), payloads
    shown = [
        m["content"] for m in forum.fake.channel_messages(GENERAL) if "rendez-vous" in m["content"]
    ]
    # The text still reads as written, but escaped: Discord shows it, it does not mention.
    assert shown == [r"\@everyone \@here \<@&1200> \<@4000> rendez-vous !"] * 2


async def test_messages_written_while_the_gateway_was_down_are_handled_once(
    forum: DiscordForum,
) -> None:
    fake = forum.fake
    fake.inject_message(GENERAL, MARIE, "avant")
    await forum.stored(1)
    fake.refuse_connections(True)
    fake.close_gateway(1001)
    await fake.wait_for(lambda: len(fake.gateway_events("refused")) >= 2, timeout=30)
    missed = [fake.inject_message(GENERAL, MARIE, f"pendant la panne {i}") for i in range(3)]
    fake.refuse_connections(False)
    after = fake.inject_message(GENERAL, PAUL, "après")
    messages = await forum.stored(5)
    texts = [m.text for m in messages]
    assert sorted(texts) == sorted(
        ["avant", "pendant la panne 0", "pendant la panne 1", "pendant la panne 2", "après"]
    )
    assert {m.platform_message_id for m in messages} >= {m["id"] for m in missed} | {after["id"]}
    async with forum.app.db.read() as session:
        keys = (await session.execute(sa.select(col(InboxUpdate.update_key)))).scalars().all()
    assert len(keys) == len(set(keys)) == 5


async def test_a_button_pressed_after_a_restart_still_works(
    fake: FakeDiscord, sqlite_url: str
) -> None:
    settings = _settings(fake, sqlite_url)
    pressed: list[str] = []

    async def on_poll(ctx: Context, press: Press) -> str | None:
        pressed.append(press.event.data)
        # The core acknowledges the press with this notice.
        return "Vote enregistré"

    first = await _start(fake, settings)
    chat = ChatRef("discord", str(GENERAL))
    try:
        await first.app.outbox.submit(
            [
                SendMessage(
                    chat=chat,
                    content=FormattedText.plain("Sondage"),
                    buttons=((Button("Oui", "poll:42:option:3"),),),
                )
            ],
            source_key="poll",
        )
        await first.drain()
    finally:
        await first.app.stop()
    (message,) = [m for m in fake.channel_messages(GENERAL) if m["content"] == "Sondage"]

    second = await _start(fake, settings)
    second.app.dispatcher.buttons = ButtonRoutes(
        [(ButtonTemplate("poll:{id:int}:option:{n:int}"), on_poll)]
    )
    try:
        fake.inject_component(GENERAL, MARIE, int(message["id"]), "poll:42:option:3")

        async def handled() -> bool:
            return pressed == ["poll:42:option:3"]

        await second.until(handled)
        await second.drain()
        await fake.wait_for(
            lambda: any("Vote enregistré" in str(r) for r in fake.interaction_responses), timeout=30
        )
    finally:
        await second.app.stop()


async def test_moderator_rights_come_from_roles_and_permissions_now(forum: DiscordForum) -> None:
    fake = forum.fake
    asked = {
        fake.inject_message(GENERAL, MARIE, "/statut")["id"]: "marie",
        fake.inject_message(GENERAL, PAUL, "/statut")["id"]: "paul",
    }

    def answers() -> dict[str, str]:
        return {
            asked[m["message_reference"]["message_id"]]: m["content"]
            for m in fake.channel_messages(GENERAL)
            if m["author"]["id"] == str(fake.bot_user_id) and m.get("message_reference")
        }

    await fake.wait_for(lambda: len(answers()) == 2, timeout=30)
    # Marie has no moderator role; Paul has the configured one.
    assert answers()["marie"] == "Seuls les modérateurs peuvent utiliser /statut."
    assert not answers()["paul"].startswith("Seuls")


def test_webhook_names_discord_refuses_are_adjusted() -> None:
    assert "discord" not in webhook_username("Marie · Discord").lower()
    assert webhook_username("Marie · Telegram") == "Marie · Telegram"
    assert len(webhook_username("x" * 200)) == 80


async def test_forms_open_as_modals_and_menus_report_the_choice(
    fake: FakeDiscord, sqlite_url: str
) -> None:
    from bot.events import Choice
    from bot.forms import Field, FormSpec

    received: list[object] = []

    async def submitted(ctx: Context, filled: Filled) -> Sequence[Action]:
        received.append(filled)
        return [ctx.reply(f"Merci pour « {filled.values['titre']} »")]

    async def picked(ctx: Context, press: Press) -> str | None:
        received.append(press.event)
        return None

    settings = _settings(fake, sqlite_url)
    db = Database(settings.database_url)
    adapter = DiscordAdapter(
        settings, db, SystemClock(), identify_delay=False, guild_ready_timeout=0.1
    )
    form = FormSpec(
        "idee",
        "Une idée pour le quartier",
        (Field("titre", "Titre"), Field("texte", "Votre idée", long=True)),
    )
    base = handlers.table()
    tables = Tables(
        commands={**base.commands, "idee": Command(submitted, "Share an idea", form=form)},
        unknown_command=base.unknown_command,
        events=base.events,
        buttons={ButtonTemplate("menu:{id:int}:{value:str}"): picked},
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
        interaction = fake.inject_slash_command(GENERAL, MARIE, "idee")
        await fake.wait_for(
            lambda: any(
                r["type"] == 9 and r["interaction_id"] == interaction["id"]
                for r in fake.interaction_responses
            ),
            timeout=30,
        )
        fake.inject_modal_submit(
            GENERAL, MARIE, "form:idee", {"titre": "Un jardin", "texte": "Rue Ferrer"}
        )
        await fake.wait_for(
            lambda: any("Merci pour « Un jardin »" in str(r) for r in fake.interaction_responses),
            timeout=30,
        )
        (filled,) = received
        assert isinstance(filled, Filled) and dict(filled.values) == {
            "titre": "Un jardin",
            "texte": "Rue Ferrer",
        }

        chat = ChatRef("discord", str(GENERAL))
        menu = Choice("menu:7", "Votre quartier", (("Ouest", "ouest"), ("Centre", "centre")))
        await app.outbox.submit(
            [SendMessage(chat=chat, content=FormattedText.plain("Où habitez-vous ?"), choice=menu)],
            source_key="menu",
        )
        async with asyncio.timeout(30):
            await app.outbox.drain()
        (message,) = [
            m for m in fake.channel_messages(GENERAL) if m["content"] == "Où habitez-vous ?"
        ]
        fake.inject_component(GENERAL, MARIE, int(message["id"]), "menu:7", values=["centre"])

        async def picked_once() -> bool:
            return len(received) == 2

        async with asyncio.timeout(30):
            await app.dispatcher.wait_until(picked_once)
        choice = received[1]
        assert isinstance(choice, ButtonPressed)
        assert (choice.data, choice.values) == ("menu:7:centre", ("centre",))
    finally:
        await app.stop()


async def test_the_bot_keeps_trying_when_discord_is_down_at_start(
    fake: FakeDiscord, sqlite_url: str
) -> None:
    settings = _settings(fake, sqlite_url)
    db = Database(settings.database_url)
    adapter = DiscordAdapter(
        settings, db, SystemClock(), identify_delay=False, guild_ready_timeout=0.1
    )
    app = build(settings, db=db, clock=SystemClock(), adapters=[adapter], with_scheduler=False)
    fake.refuse_connections(True)
    await app.start()
    try:
        await fake.wait_for(lambda: len(fake.gateway_events("refused")) >= 1, timeout=30)
        fake.refuse_connections(False)
        async with asyncio.timeout(30):
            await adapter.wait_ready()
        fake.inject_message(GENERAL, MARIE, "enfin")

        async def stored() -> bool:
            async with db.read() as session:
                return (
                    await session.execute(sa.select(sa.func.count()).select_from(Message))
                ).scalar_one() == 1

        async with asyncio.timeout(30):
            await app.dispatcher.wait_until(stored)
    finally:
        await app.stop()
