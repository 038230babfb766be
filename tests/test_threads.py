"""Discussion threads on named posts: the real adapters against the platform fakes.

A handler names a post and asks for its discussion (``ctx.open_thread``); each chat where
the post went gets a thread of its own (a Discord thread started from the post, a Telegram
forum topic, or, in a Telegram group that is not a forum, the reply chain under the post),
recorded as ``thread:<post key>``, and the bridge then carries the discussion between them
like between any linked chats.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import col

import handlers
from bot.bootstrap import App, build
from bot.clock import SystemClock
from bot.config import Settings
from bot.events import (
    Action,
    ChatRef,
    CommandReceived,
    OpenThread,
    SendMessage,
    thread_key,
)
from bot.handling import Command, Context
from bot.platforms.discord import DiscordAdapter, thread_name
from bot.platforms.telegram import TelegramAdapter, topic_name
from storage.db import Database
from storage.models import NamedPost, OutboxItem
from tests.fakes.discord import DiscordLimits, FakeDiscord
from tests.fakes.telegram import FakeTelegram, TelegramLimits
from tests.forum import Forum
from tests.harness import GENERAL, GROUP, bridge_settings, settle
from tests.kit import command, fake_context

MARIE_TG = 42
JEANNE_TG = 43
PAUL_DC = 4001

POST_KEY = "proposal:7"
TITLE = "Proposition n° 7 : des bancs sur la place du marché"
TG_CHAT = ChatRef("telegram", str(GROUP))
DC_CHAT = ChatRef("discord", str(GENERAL))

pytestmark = pytest.mark.usefixtures("ptb_timedelta", "fast_discord_reconnect")


async def open_discussion(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """What a handler publishing a proposal does: the post in each chat, then its threads."""
    for chat in (TG_CHAT, DC_CHAT):
        ctx.post(POST_KEY, chat, "Proposition n° 7 : des bancs sur la place du marché")
    await ctx.open_thread(POST_KEY, TITLE)
    return []


def _app(settings: Settings) -> tuple[App, DiscordAdapter]:
    """The bridge of ``tests.harness``, with one more command: /discussion."""
    base = handlers.table(settings)
    commands = {**base.commands, "discussion": Command(open_discussion, "Open", hidden=True)}
    db = Database(settings.database_url)
    clock = SystemClock()
    discord_adapter = DiscordAdapter(
        settings, db, clock, identify_delay=False, guild_ready_timeout=0.1
    )
    adapters = [TelegramAdapter(settings, db, clock, poll_timeout=1), discord_adapter]
    app = build(
        settings,
        db=db,
        clock=clock,
        adapters=adapters,
        with_scheduler=False,
        tables=dataclasses.replace(base, commands=commands),
    )
    return app, discord_adapter


class Threads:
    """Both platforms, one forum, and what the test needs to look at."""

    def __init__(self, telegram: FakeTelegram, discord: FakeDiscord, app: App) -> None:
        self.telegram = telegram
        self.discord = discord
        self.app = app

    async def settle(self) -> None:
        async with asyncio.timeout(30):
            await settle(self.app)

    async def open(self) -> tuple[int, int]:
        """Ask for the discussion; the ids of the post on Telegram and on Discord."""
        self.telegram.inject_command(GROUP, MARIE_TG, "discussion")
        await self.telegram.wait_for(lambda: len(self.telegram.sent_messages(GROUP)) == 1)
        await self.discord.wait_for(lambda: len(self.discord.channel_messages(GENERAL)) == 1)
        await self.settle()
        (tg_post,) = self.telegram.sent_messages(GROUP)
        (dc_post,) = self.discord.channel_messages(GENERAL)
        return int(tg_post["message_id"]), int(dc_post["id"])

    async def threads(self) -> dict[str, list[str]]:
        """The recorded threads of the post, by chat key."""
        async with self.app.db.read() as session:
            rows = (
                await session.execute(
                    sa.select(NamedPost).where(col(NamedPost.key) == thread_key(POST_KEY))
                )
            ).scalars()
            return {row.chat_key: list(row.message_ids) for row in rows}

    async def outbox(self, kind: str) -> list[OutboxItem]:
        async with self.app.db.read() as session:
            query = sa.select(OutboxItem).where(col(OutboxItem.kind) == kind)
            return list((await session.execute(query)).scalars())

    def relayed_in_thread(self, thread_id: int) -> list[dict[str, Any]]:
        return [m for m in self.discord.channel_messages(thread_id) if m.get("webhook_id")]

    def relayed_on_discord(self) -> list[dict[str, Any]]:
        return [m for m in self.discord.channel_messages(GENERAL) if m.get("webhook_id")]

    def on_telegram(self) -> list[dict[str, Any]]:
        return self.telegram.sent_messages(GROUP, include_deleted=False)


async def _start(
    telegram: FakeTelegram, discord: FakeDiscord, database_url: str, *, forum: bool
) -> Threads:
    telegram.add_chat(GROUP, title="Quartier Ouest", is_forum=forum)
    # Paces a hundred times faster than the real platforms, like the fakes' limits.
    settings = bridge_settings(telegram, discord, database_url, rate_limit_scale=0.01)
    app, discord_adapter = _app(settings)
    await app.start()
    async with asyncio.timeout(30):
        await discord_adapter.wait_ready()
    return Threads(telegram, discord, app)


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeTelegram, FakeDiscord]]:
    telegram = FakeTelegram(limits=TelegramLimits(window_scale=0.01))
    discord = FakeDiscord(guild_id=1000, limits=DiscordLimits(window_scale=0.01))
    await telegram.start()
    await discord.start()
    telegram.add_user(MARIE_TG, "Marie")
    telegram.add_user(JEANNE_TG, "Jeanne")
    discord.add_channel(GENERAL, "quartier-ouest")
    discord.add_member(PAUL_DC, "paul", global_name="Paul")
    try:
        yield telegram, discord
    finally:
        await discord.stop()
        await telegram.stop()


@pytest.fixture
async def forum_group(
    fakes: tuple[FakeTelegram, FakeDiscord], database_url: str
) -> AsyncIterator[Threads]:
    """The Telegram group is a forum."""
    threads = await _start(*fakes, database_url, forum=True)
    try:
        yield threads
    finally:
        await threads.app.stop()


@pytest.fixture
async def plain_group(
    fakes: tuple[FakeTelegram, FakeDiscord], database_url: str
) -> AsyncIterator[Threads]:
    """The Telegram group is not a forum."""
    threads = await _start(*fakes, database_url, forum=False)
    try:
        yield threads
    finally:
        await threads.app.stop()


# -- a forum group: a Discord thread and a Telegram topic ----------------------------------


async def test_a_post_gets_a_discord_thread_and_a_telegram_topic(forum_group: Threads) -> None:
    threads = forum_group
    tg_post, dc_post = await threads.open()
    # Discord: a public thread started from the post, with the post's id.
    thread = threads.discord.thread_of(dc_post)
    assert thread is not None and thread["name"] == TITLE
    assert thread["parent_id"] == str(GENERAL) and thread["type"] == 11
    # Telegram: a topic of the forum, named like the thread.
    (topic,) = threads.telegram.forum_topics(GROUP)
    assert topic["name"] == TITLE
    # Both recorded under the post's thread key, with the post itself untouched.
    assert await threads.threads() == {
        f"telegram:{GROUP}": [str(topic["message_thread_id"])],
        f"discord:{GENERAL}": [str(dc_post)],
    }
    assert [row.status for row in await threads.outbox("OpenThread")] == ["delivered"] * 2
    assert tg_post == threads.telegram.sent_messages(GROUP)[0]["message_id"]


async def test_the_discussion_crosses_between_thread_and_topic(forum_group: Threads) -> None:
    threads = forum_group
    _, dc_post = await threads.open()
    (topic,) = threads.telegram.forum_topics(GROUP)
    topic_id = topic["message_thread_id"]

    # Discord thread -> Telegram topic (not the group's general flow).
    said = threads.discord.inject_message(dc_post, PAUL_DC, "Je suis pour, il en manque")
    await threads.telegram.wait_for(lambda: len(threads.on_telegram()) == 2)
    copy = threads.on_telegram()[1]
    assert copy["text"] == "Paul · Discord\nJe suis pour, il en manque"
    assert copy["message_thread_id"] == topic_id and copy["is_topic_message"] is True

    # Telegram topic -> Discord thread (not the channel the thread is in).
    answer = threads.telegram.inject_message(
        GROUP, MARIE_TG, "Moi aussi !", message_thread_id=topic_id
    )
    await threads.discord.wait_for(lambda: len(threads.relayed_in_thread(dc_post)) == 1)
    (in_thread,) = threads.relayed_in_thread(dc_post)
    assert in_thread["content"] == "Moi aussi !"
    assert in_thread["author"]["username"] == "Marie · Telegram"

    # A reply in the thread to Marie's copy is a native reply to Marie's message.
    threads.discord.inject_message(
        dc_post, PAUL_DC, "Alors on le propose ensemble", reply_to=int(in_thread["id"])
    )
    await threads.telegram.wait_for(lambda: len(threads.on_telegram()) == 3)
    reply = threads.on_telegram()[2]
    assert reply["reply_to_message"]["message_id"] == answer["message"]["message_id"]
    assert reply["message_thread_id"] == topic_id

    # Edits and deletions follow, as on any bridged chat.
    threads.telegram.inject_edit(GROUP, answer["message"]["message_id"], "Moi aussi, vraiment")
    await threads.discord.wait_for(
        lambda: threads.relayed_in_thread(dc_post)[0]["content"] == "Moi aussi, vraiment"
    )
    threads.discord.inject_delete(dc_post, int(said["id"]))
    await threads.telegram.wait_for(lambda: copy["message_id"] not in _ids(threads.on_telegram()))
    await threads.settle()
    # Nothing of the thread's talk reached the channel or the group's general flow.
    assert threads.relayed_on_discord() == []
    assert all(m.get("message_thread_id") == topic_id for m in threads.on_telegram()[1:])


async def test_a_second_open_thread_makes_no_second_thread(forum_group: Threads) -> None:
    threads = forum_group
    await threads.open()
    recorded = await threads.threads()
    # The same request again (a handler run twice): both threads are known, nobody is asked.
    again = [
        OpenThread(chat=chat, name=TITLE, post_key=POST_KEY, thread_key=thread_key(POST_KEY))
        for chat in (TG_CHAT, DC_CHAT)
    ]
    await threads.app.outbox.submit(again, source_key="again")
    await threads.settle()
    assert await threads.threads() == recorded
    assert len(threads.telegram.calls("createForumTopic")) == 1
    assert len(threads.discord.calls("POST", r"/channels/\d+/messages/\d+/threads")) == 1


async def test_a_thread_made_but_not_answered_is_taken_on_the_retry(
    fakes: tuple[FakeTelegram, FakeDiscord], database_url: str
) -> None:
    """Discord made the thread but its answer was lost (a 503 after the fact): the retry is
    told 160004 and records the thread the first try made."""
    telegram, discord = fakes
    lost = discord.fail_next(
        "POST", r"/channels/\d+/messages/\d+/threads", status=503, after_route=True
    )
    threads = await _start(telegram, discord, database_url, forum=True)
    try:
        _, dc_post = await threads.open()
        assert lost.fired == 1
        tries = discord.calls("POST", r"/channels/\d+/messages/\d+/threads")
        assert [t.status for t in tries] == [503, 400]
        assert discord.thread_of(dc_post) is not None
        assert (await threads.threads())[f"discord:{GENERAL}"] == [str(dc_post)]
        # And it is linked: the thread's talk reaches the topic.
        threads.discord.inject_message(dc_post, PAUL_DC, "Bonjour le fil")
        await telegram.wait_for(lambda: len(threads.on_telegram()) == 2)
    finally:
        await threads.app.stop()


# -- a group that is not a forum: the reply chain under the post ---------------------------


async def test_a_plain_group_gets_no_topic_and_no_error(plain_group: Threads) -> None:
    threads = plain_group
    _, dc_post = await threads.open()
    assert threads.telegram.calls("createForumTopic") == []
    assert threads.telegram.forum_topics(GROUP) == []
    # The reply chain is recorded as such (no thread id); the Discord thread as usual.
    assert await threads.threads() == {
        f"telegram:{GROUP}": [],
        f"discord:{GENERAL}": [str(dc_post)],
    }
    assert [row.status for row in await threads.outbox("OpenThread")] == ["delivered"] * 2


async def test_the_reply_chain_is_the_discussion_on_a_plain_group(plain_group: Threads) -> None:
    threads = plain_group
    tg_post, dc_post = await threads.open()

    # From the Discord thread: replies to the proposal's Telegram post.
    threads.discord.inject_message(dc_post, PAUL_DC, "Je suis pour")
    await threads.telegram.wait_for(lambda: len(threads.on_telegram()) == 2)
    copy = threads.on_telegram()[1]
    assert copy["text"] == "Paul · Discord\nJe suis pour"
    assert copy["reply_to_message"]["message_id"] == tg_post
    assert "message_thread_id" not in copy

    # From Telegram, an answer to the post goes to the thread, and no quote says so.
    to_post = threads.telegram.inject_message(
        GROUP, MARIE_TG, "Moi aussi", reply_to_message_id=tg_post
    )
    await threads.discord.wait_for(lambda: len(threads.relayed_in_thread(dc_post)) == 1)
    assert threads.relayed_in_thread(dc_post)[0]["content"] == "Moi aussi"
    # An answer to a copy from the thread, and an answer to an answer, go there too.
    threads.telegram.inject_message(
        GROUP, JEANNE_TG, "Paul a raison", reply_to_message_id=copy["message_id"]
    )
    threads.telegram.inject_message(
        GROUP, JEANNE_TG, "Et Marie aussi", reply_to_message_id=to_post["message"]["message_id"]
    )
    await threads.discord.wait_for(lambda: len(threads.relayed_in_thread(dc_post)) == 3)
    contents = [m["content"] for m in threads.relayed_in_thread(dc_post)]
    # Discord webhooks cannot reply: the answers quote what they answer.
    assert contents[1:] == [
        "*↪ Paul : Je suis pour*\nPaul a raison",
        "*↪ Marie : Moi aussi*\nEt Marie aussi",
    ]
    # What is not part of the chain stays with the group's ordinary bridge.
    threads.telegram.inject_message(GROUP, MARIE_TG, "Autre chose : la fête samedi")
    await threads.discord.wait_for(lambda: len(threads.relayed_on_discord()) == 1)
    await threads.settle()
    assert threads.relayed_on_discord()[0]["content"] == "Autre chose : la fête samedi"
    assert len(threads.relayed_in_thread(dc_post)) == 3


# -- the console ---------------------------------------------------------------------------


async def test_the_console_opens_pretend_threads_and_links_them(settings: Settings) -> None:
    async def on_console(ctx: Context, event: CommandReceived) -> Sequence[Action]:
        for chat in ("tg:ouest", "dc:ouest"):
            ctx.post(POST_KEY, ChatRef("console", chat), "Proposition n° 7")
        await ctx.open_thread(POST_KEY, TITLE)
        return []

    base = handlers.table(settings)
    tables = dataclasses.replace(
        base, commands={**base.commands, "discussion": Command(on_console, "Open", hidden=True)}
    )
    async with Forum(settings, tables=tables) as forum:
        await forum.say("con:general /discussion")
        opened = [line for line in forum.lines if "fil de discussion" in line]
        assert len(opened) == 2 and all(f"« {TITLE} »" in line for line in opened)
        async with forum.db.read() as session:
            rows = (
                await session.execute(
                    sa.select(NamedPost).where(col(NamedPost.key) == thread_key(POST_KEY))
                )
            ).scalars()
            recorded = {row.chat_key: row.message_ids for row in rows}
        (tg_thread,) = recorded["console:tg:ouest"]
        (dc_thread,) = recorded["console:dc:ouest"]
        # Written in the Discord-like thread, relayed into the Telegram-like one only.
        posted = await forum.say(f"dc:ouest/{dc_thread} Bonjour le fil", as_name="Marie")
        assert [(p.chat, p.text) for p in posted] == [(f"tg:ouest/{tg_thread}", "Bonjour le fil")]


# -- the parts -----------------------------------------------------------------------------


async def test_open_thread_is_queued_wherever_the_post_went(db: Database) -> None:
    async with db.write() as session:
        session.add(NamedPost(key=POST_KEY, chat_key=str(DC_CHAT), message_ids=["5"]))
        await session.flush()
        ctx = fake_context(session, command("publier"))
        # A post this very handler queued counts too.
        ctx.post(POST_KEY, TG_CHAT, "Proposition")
        assert await ctx.open_thread(POST_KEY, TITLE) == 2
        assert await ctx.open_thread("proposal:99", "Personne") == 0
    opened = [a for a in ctx.actions if isinstance(a, OpenThread)]
    assert {a.chat for a in opened} == {TG_CHAT, DC_CHAT}
    assert {(a.post_key, a.thread_key, a.name) for a in opened} == {
        (POST_KEY, "thread:proposal:7", TITLE)
    }
    assert [type(a) for a in ctx.actions] == [SendMessage, OpenThread, OpenThread]


def test_names_fit_each_platform() -> None:
    long = "Proposition " + "très " * 60
    assert 90 < len(thread_name(long)) <= 100 and thread_name(long).endswith("…")
    assert 120 < len(topic_name(long)) <= 128 and topic_name(long).endswith("…")
    # Telegram counts UTF-16 code units: an emoji is two.
    assert len(topic_name("🌳" * 100)) == 64
    assert thread_name("  un\nbanc  ") == "un banc" == topic_name("un\nbanc")
    assert thread_name("") == "…"


def _ids(messages: list[dict[str, Any]]) -> list[int]:
    return [m["message_id"] for m in messages]
