"""The Discord adapter after things went wrong: lost answers, outages, a database away.

Real discord.py against the loopback fake; every injected fault is checked to have fired.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from bot import inbox
from bot.bootstrap import build
from bot.clock import SystemClock
from bot.config import ChannelConfig, RolesConfig, Settings
from bot.events import ChatRef, MessageRef, SendMessage
from bot.platforms import discord as discord_adapter
from bot.platforms.discord import DiscordAdapter
from bot.richtext import FormattedText
from storage import message_map
from storage.db import Database
from storage.models import InboxUpdate, Message, OutboxItem
from tests.fakes.discord import FakeDiscord
from tests.test_discord import GENERAL, GUILD, MARIE, MODERATORS, PAUL, DiscordForum

# Threads of the served channel: one named in the configuration, one only active there.
CONFIGURED_THREAD = 1101
OTHER_THREAD = 1102
TELEGRAM = ChatRef("telegram", "-100123")
WEBHOOK_POST = r"/webhooks/\d+/[^/]+"

pytestmark = pytest.mark.usefixtures("fast_discord_reconnect")


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord(guild_id=GUILD)
    server.add_role(MODERATORS, "Modération")
    server.add_channel(GENERAL, "quartier-ouest")
    server.add_channel(CONFIGURED_THREAD, "entraide", type=11, parent_id=GENERAL)
    server.add_channel(OTHER_THREAD, "jardins", type=11, parent_id=GENERAL)
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
        channels=[
            ChannelConfig(platform="discord", id=str(GENERAL), neighbourhood="Ouest"),
            ChannelConfig(
                platform="discord", id=str(GENERAL), thread=str(CONFIGURED_THREAD), name="entraide"
            ),
        ],
        roles=RolesConfig(discord_moderator_roles=[str(MODERATORS)]),
    )


async def _start(
    fake: FakeDiscord, database_url: str, *, guild_ready_timeout: float = 0.1
) -> DiscordForum:
    settings = _settings(fake, database_url)
    db = Database(settings.database_url)
    adapter = DiscordAdapter(
        settings, db, SystemClock(), identify_delay=False, guild_ready_timeout=guild_ready_timeout
    )
    app = build(settings, db=db, clock=SystemClock(), adapters=[adapter], with_scheduler=False)
    # Server errors are retried at once here: the test is about what is retried, not when.
    app.outbox.backoff_base = 0.01
    await app.start()
    async with asyncio.timeout(30):
        await adapter.wait_ready()
    return DiscordForum(fake, app, adapter)


@pytest.fixture
async def forum(fake: FakeDiscord, database_url: str) -> AsyncIterator[DiscordForum]:
    forum = await _start(fake, database_url)
    try:
        yield forum
    finally:
        await forum.app.stop()


async def _texts(forum: DiscordForum) -> list[str]:
    """The texts stored from Discord, in the order the inbox handed them on."""
    async with forum.app.db.read() as session:
        rows = await session.execute(sa.select(col(Message.text)).order_by(col(Message.id)))
        return [str(text) for text in rows.scalars()]


async def _until_texts(forum: DiscordForum, count: int, bound: float = 20) -> list[str]:
    async def enough() -> bool:
        return len(await _texts(forum)) >= count

    async with asyncio.timeout(bound):
        await forum.app.dispatcher.wait_until(enough)
    return await _texts(forum)


async def _cursor(forum: DiscordForum, channel_id: int) -> str | None:
    return await inbox.get_cursor(forum.app.db, "discord", f"last:{channel_id}")


def _relay(text: str, origin_id: str) -> SendMessage:
    return SendMessage(
        chat=ChatRef("discord", str(GENERAL)),
        content=FormattedText.plain(text),
        as_name="Jeanne · Telegram",
        origin=MessageRef(TELEGRAM, origin_id),
    )


async def _copy_of(forum: DiscordForum, origin_id: str) -> list[str]:
    async with forum.app.db.read() as session:
        return await message_map.copies_of(session, str(TELEGRAM), origin_id, f"discord:{GENERAL}")


# -- 1. a repeated short text --------------------------------------------------------------


async def test_a_repeated_text_is_posted_again_after_server_errors(forum: DiscordForum) -> None:
    fake = forum.fake
    await forum.app.outbox.submit([_relay("Merci !", "1")], source_key="tg:1")
    await forum.drain()
    fake.fail_next("POST", WEBHOOK_POST, status=502, count=5)
    await forum.app.outbox.submit([_relay("Merci !", "2")], source_key="tg:2")
    await forum.drain()

    statuses = [r.status for r in fake.calls("POST", WEBHOOK_POST)]
    # The five injected 502s fired, then the post went through.
    assert statuses == [200, 502, 502, 502, 502, 502, 200]
    posts = [m for m in fake.channel_messages(GENERAL) if m["content"] == "Merci !"]
    assert len(posts) == 2
    first, second = await _copy_of(forum, "1"), await _copy_of(forum, "2")
    assert first == [posts[0]["id"]] and second == [posts[1]["id"]]


async def test_a_post_that_landed_before_its_answer_was_lost_is_not_posted_twice(
    forum: DiscordForum,
) -> None:
    fake = forum.fake
    await forum.app.outbox.submit([_relay("Merci !", "1")], source_key="tg:1")
    await forum.drain()
    # Discord posts the second "Merci !" but the answer is lost (a 502 after the fact).
    fake.fail_next("POST", WEBHOOK_POST, status=502, after_route=True)
    await forum.app.outbox.submit([_relay("Merci !", "2")], source_key="tg:2")
    await forum.drain()

    assert [r.status for r in fake.calls("POST", WEBHOOK_POST)] == [200, 502]
    posts = [m for m in fake.channel_messages(GENERAL) if m["content"] == "Merci !"]
    assert len(posts) == 2
    # The retry found the post that landed and took it for its own, not the earlier one.
    assert await _copy_of(forum, "2") == [posts[1]["id"]]


async def test_a_rate_limited_lookup_does_not_forget_that_a_try_may_have_landed(
    forum: DiscordForum,
) -> None:
    fake = forum.fake
    await forum.app.outbox.submit([_relay("Merci !", "1")], source_key="tg:1")
    await forum.drain()
    # The post lands but its answer is lost; the lookup that follows is rate limited until
    # discord.py gives up, and the outbox then takes the try for "not posted".
    fake.fail_next("POST", WEBHOOK_POST, status=502, after_route=True)
    fake.fail_next("GET", rf"/channels/{GENERAL}/messages", status=429, count=5)
    await forum.app.outbox.submit([_relay("Merci !", "2")], source_key="tg:2")
    await forum.drain()

    assert [r.status for r in fake.calls("POST", WEBHOOK_POST)] == [200, 502]
    lookups = [r.status for r in fake.calls("GET", rf"/channels/{GENERAL}/messages")]
    assert lookups == [429] * 5 + [200]
    posts = [m for m in fake.channel_messages(GENERAL) if m["content"] == "Merci !"]
    assert len(posts) == 2
    assert await _copy_of(forum, "2") == [posts[1]["id"]]


@pytest.mark.parametrize("landed", [False, True], ids=["lost", "landed"])
async def test_after_a_restart_an_earlier_copy_is_still_not_taken_for_this_post(
    fake: FakeDiscord, sqlite_url: str, landed: bool
) -> None:
    # The new process knows nothing of the first try: message_link alone tells the copy
    # relayed earlier (recorded) from a post of this delivery (not recorded yet).
    first = await _start(fake, sqlite_url)
    try:
        await first.app.outbox.submit([_relay("Merci !", "1")], source_key="tg:1")
        await first.drain()
        first.app.outbox.backoff_base = 3600  # the retry is left to the next process
        fake.fail_next("POST", WEBHOOK_POST, status=502, after_route=landed)
        await first.app.outbox.submit([_relay("Merci !", "2")], source_key="tg:2")

        async def postponed() -> bool:
            async with first.app.db.read() as session:
                row = (
                    await session.execute(
                        sa.select(OutboxItem).where(col(OutboxItem.source_key) == "tg:2")
                    )
                ).scalar_one()
                return row.last_error is not None and row.in_flight_since is not None

        async with asyncio.timeout(20):
            await first.app.outbox.wait_until(postponed)
    finally:
        await first.app.stop()
    assert [r.status for r in fake.calls("POST", WEBHOOK_POST)] == [200, 502]
    db = Database(sqlite_url)
    try:
        async with db.write() as session:
            # Due now rather than in an hour.
            await session.execute(sa.update(OutboxItem).values(not_before=None))
    finally:
        await db.dispose()

    second = await _start(fake, sqlite_url)
    try:
        await second.drain()
        posts = [m for m in fake.channel_messages(GENERAL) if m["content"] == "Merci !"]
        assert len(posts) == 2
        assert await _copy_of(second, "1") == [posts[0]["id"]]
        assert await _copy_of(second, "2") == [posts[1]["id"]]
        # Posted again only when the first try had not landed.
        assert len(fake.calls("POST", WEBHOOK_POST)) == (2 if landed else 3)
    finally:
        await second.app.stop()


# -- 2. catch-up after an outage ------------------------------------------------------------


async def _outage(fake: FakeDiscord, *, invalidate: bool) -> None:
    """Cut the gateway and keep it down until the client has failed to reconnect twice."""
    refused = len(fake.gateway_events("refused"))
    fake.refuse_connections(True)
    if invalidate:
        # The session cannot be resumed: the client must IDENTIFY again (READY, on_ready).
        fake.invalidate_sessions()
    fake.close_gateway(1001)
    await fake.wait_for(lambda: len(fake.gateway_events("refused")) >= refused + 2, timeout=30)


async def test_a_live_message_during_catch_up_does_not_skip_or_overtake_the_outage(
    fake: FakeDiscord, database_url: str
) -> None:
    # discord.py waits this long after the last GUILD_CREATE before on_ready: the live
    # message below arrives and is parsed well inside that window, before any catch-up.
    forum = await _start(fake, database_url, guild_ready_timeout=1.0)
    try:
        fake.inject_message(GENERAL, MARIE, "avant")
        await _until_texts(forum, 1)
        await _outage(fake, invalidate=True)
        for i in range(3):
            fake.inject_message(GENERAL, MARIE, f"pendant {i}")
        identified = len(fake.gateway_events("identify"))
        fake.refuse_connections(False)
        await fake.wait_for(lambda: len(fake.gateway_events("identify")) > identified, timeout=30)
        live = fake.inject_message(GENERAL, PAUL, "en direct")
        assert any(d["id"] == live["id"] for d in fake.dispatched("MESSAGE_CREATE")), (
            "the live message reached the new session"
        )

        texts = await _until_texts(forum, 5)
        assert texts == ["avant", "pendant 0", "pendant 1", "pendant 2", "en direct"]
        assert await _cursor(forum, GENERAL) == live["id"]
        async with forum.app.db.read() as session:
            keys = (await session.execute(sa.select(col(InboxUpdate.update_key)))).scalars().all()
        assert len(keys) == len(set(keys)) == 5
    finally:
        await forum.app.stop()


async def test_threads_are_caught_up_after_an_outage(forum: DiscordForum) -> None:
    fake = forum.fake
    fake.inject_message(GENERAL, MARIE, "salon avant")
    fake.inject_message(CONFIGURED_THREAD, MARIE, "fil avant")
    fake.inject_message(OTHER_THREAD, PAUL, "jardins avant")
    await _until_texts(forum, 3)
    await _outage(fake, invalidate=False)
    fake.inject_message(CONFIGURED_THREAD, PAUL, "fil pendant")
    fake.inject_message(OTHER_THREAD, MARIE, "jardins pendant")
    fake.inject_message(GENERAL, PAUL, "salon pendant")
    fake.refuse_connections(False)

    texts = await _until_texts(forum, 6)
    assert sorted(texts[3:]) == ["fil pendant", "jardins pendant", "salon pendant"]
    history = [r for r in fake.calls("GET", r"/channels/\d+/messages") if "after" in r.query]
    assert {r.path for r in history} >= {
        f"/channels/{CONFIGURED_THREAD}/messages",
        f"/channels/{OTHER_THREAD}/messages",
    }


async def test_catch_up_stores_page_by_page_with_a_fault_point_after_each(
    fake: FakeDiscord, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    forum = await _start(fake, sqlite_url)
    path = Path(sqlite_url.removeprefix("sqlite+aiosqlite:///"))
    reached: list[tuple[str | None, set[str]]] = []

    def fault_point(name: str) -> None:
        # What a kill here would leave behind: read from the file, as a restart would.
        assert name == "during_catch_up"
        with sqlite3.connect(path) as connection:
            row = connection.execute(
                "SELECT value FROM platform_cursor WHERE platform = 'discord' AND key = ?",
                (f"last:{GENERAL}",),
            ).fetchone()
            keys = {k for (k,) in connection.execute("SELECT update_key FROM inbox_update")}
        reached.append((row[0] if row else None, keys))

    monkeypatch.setattr(discord_adapter, "fault_point", fault_point)
    forum.adapter.catch_up_page = 2
    try:
        fake.inject_message(GENERAL, MARIE, "avant")
        await _until_texts(forum, 1)
        await _outage(fake, invalidate=False)
        missed = [fake.inject_message(GENERAL, MARIE, f"pendant {i}")["id"] for i in range(5)]
        fake.refuse_connections(False)
        texts = await _until_texts(forum, 6)
        assert texts[1:] == [f"pendant {i}" for i in range(5)]
    finally:
        await forum.app.stop()

    pages = [missed[0:2], missed[2:4], missed[4:5]]
    general = [(cursor, keys) for cursor, keys in reached if cursor in missed]
    assert [cursor for cursor, _ in general] == [page[-1] for page in pages]
    for (_, keys), page in zip(general, pages, strict=True):
        # Each page is in the database, its cursor with it, when the fault point is reached.
        assert {f"message:{mid}" for mid in page} <= keys


# -- 3. the database away -------------------------------------------------------------------


class _FailingStore:
    """The next ``failures`` Discord inbox writes fail (None: all of them)."""

    def __init__(self, failures: int | None) -> None:
        self.failures = failures
        self.raised: list[Exception] = []
        self.fired = asyncio.Event()


def _failing_store(monkeypatch: pytest.MonkeyPatch, failures: int | None) -> _FailingStore:
    state = _FailingStore(failures)
    real = inbox.store_updates

    async def store_updates(
        session: AsyncSession,
        platform: str,
        updates: Sequence[tuple[str, Mapping[str, Any]]],
        now: Any,
    ) -> None:
        if platform == "discord" and (failures is None or len(state.raised) < failures):
            error = OperationalError("INSERT INTO inbox_update", {}, Exception("disk I/O error"))
            state.raised.append(error)
            state.fired.set()
            raise error
        await real(session, platform, updates, now)

    monkeypatch.setattr(inbox, "store_updates", store_updates)
    return state


async def test_events_are_kept_while_the_database_refuses_writes(
    forum: DiscordForum, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    forum.adapter.write_retry = (0.001, 0.02)
    store = _failing_store(monkeypatch, failures=12)
    with caplog.at_level(logging.WARNING, logger="bot.platforms.discord"):
        forum.fake.inject_message(GENERAL, MARIE, "toujours là")
        forum.fake.inject_message(GENERAL, PAUL, "moi aussi")
        texts = await _until_texts(forum, 2)
    assert len(store.raised) == 12, "every injected failure fired"
    assert texts == ["toujours là", "moi aussi"]
    warnings = [r for r in caplog.records if "could not store" in r.getMessage()]
    # Once per minute, not once per try.
    assert len(warnings) == 1


async def test_events_not_stored_at_shutdown_are_reported_loudly(
    fake: FakeDiscord,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    forum = await _start(fake, sqlite_url)
    forum.adapter.write_retry = (0.001, 0.02)
    forum.adapter.stop_grace = 0.2
    store = _failing_store(monkeypatch, failures=None)
    fake.inject_message(GENERAL, MARIE, "perdu ?")
    fake.inject_message(GENERAL, MARIE, "perdu aussi ?")
    for _ in range(3):
        # Three failed tries at least: the writer is retrying, not waiting for work.
        store.fired.clear()
        async with asyncio.timeout(20):
            await store.fired.wait()
    with caplog.at_level(logging.ERROR, logger="bot.platforms.discord"):
        await forum.app.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("2 Discord events" in r.getMessage() for r in errors), [
        r.getMessage() for r in errors
    ]
