"""The bridge, end to end: the real python-telegram-bot and discord.py against both fakes."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from bot.bootstrap import App
from bot.config import RolesConfig, Settings
from storage.models import MessageLink
from tests.fakes.discord import DiscordLimits, FakeDiscord
from tests.fakes.telegram import FakeTelegram, TelegramLimits
from tests.harness import GENERAL, GROUP, bridge_app, bridge_settings, settle, start_bot_process

MARIE_TG = 42
PAUL_DC = 4001
MODERATOR_TG = 7
WEBHOOK_EXECUTE = r"/webhooks/\d+/[^/]+"


pytestmark = pytest.mark.usefixtures("ptb_timedelta", "fast_discord_reconnect")


class Bridge:
    """Both platforms, one forum."""

    def __init__(self, telegram: FakeTelegram, discord: FakeDiscord, app: App) -> None:
        self.telegram = telegram
        self.discord = discord
        self.app = app

    def on_telegram(self) -> list[dict[str, Any]]:
        return self.telegram.sent_messages(GROUP, include_deleted=False)

    def on_discord(self) -> list[dict[str, Any]]:
        """What the bridge posted on Discord (through its webhook)."""
        return [m for m in self.discord.channel_messages(GENERAL) if m.get("webhook_id")]

    async def until_telegram(self, count: int) -> list[dict[str, Any]]:
        await self.telegram.wait_for(lambda: len(self.on_telegram()) >= count, timeout=60)
        return self.on_telegram()

    async def until_discord(self, count: int) -> list[dict[str, Any]]:
        await self.discord.wait_for(lambda: len(self.on_discord()) >= count, timeout=60)
        return self.on_discord()

    async def settle(self) -> None:
        """Wait until every stored update is handled and every action delivered."""
        async with asyncio.timeout(60):
            await settle(self.app)


def _settings(
    telegram: FakeTelegram, discord: FakeDiscord, database_url: str, **extra: Any
) -> Settings:
    return bridge_settings(
        telegram,
        discord,
        database_url,
        roles=RolesConfig(moderators=[f"telegram:{MODERATOR_TG}"]),
        **extra,
    )


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeTelegram, FakeDiscord]]:
    telegram = FakeTelegram(limits=TelegramLimits(window_scale=0.01))
    # Both fakes' limits a hundred times faster, like the bridge's paces below.
    discord = FakeDiscord(guild_id=1000, limits=DiscordLimits(window_scale=0.01))
    await telegram.start()
    await discord.start()
    telegram.add_chat(GROUP, title="Quartier Ouest")
    telegram.add_user(MARIE_TG, "Marie", last_name="Dupont")
    telegram.add_user(MODERATOR_TG, "Léa")
    telegram.set_member_status(GROUP, MARIE_TG, "member")
    discord.add_channel(GENERAL, "quartier-ouest")
    discord.add_member(PAUL_DC, "paul", global_name="Paul")
    try:
        yield telegram, discord
    finally:
        await discord.stop()
        await telegram.stop()


async def _start(telegram: FakeTelegram, discord: FakeDiscord, settings: Settings) -> Bridge:
    app, discord_adapter = bridge_app(settings)
    await app.start()
    async with asyncio.timeout(30):
        await discord_adapter.wait_ready()
    return Bridge(telegram, discord, app)


@pytest.fixture
async def bridge(
    fakes: tuple[FakeTelegram, FakeDiscord], database_url: str
) -> AsyncIterator[Bridge]:
    telegram, discord = fakes
    # Paces a hundred times faster than the real platforms, like the fakes' limits.
    bridge = await _start(
        telegram, discord, _settings(telegram, discord, database_url, rate_limit_scale=0.01)
    )
    try:
        yield bridge
    finally:
        await bridge.app.stop()


async def test_text_and_formatting_cross_both_ways(bridge: Bridge) -> None:
    bridge.telegram.inject_message(
        GROUP,
        MARIE_TG,
        "Réunion jeudi à la salle Ferrer",
        entities=[
            {"type": "bold", "offset": 8, "length": 5},
            {"type": "italic", "offset": 16, "length": 15},
        ],
    )
    (copy,) = await bridge.until_discord(1)
    assert copy["author"]["username"] == "Marie Dupont · Telegram"
    assert copy["content"] == "Réunion **jeudi** à *la salle Ferrer*"

    bridge.discord.inject_message(
        GENERAL, PAUL_DC, "J'y serai, __promis__ ~~peut-être~~ ||surprise||"
    )
    (back,) = await bridge.until_telegram(1)
    assert back["text"] == "Paul · Discord\nJ'y serai, promis peut-être surprise"
    entities = {(e["type"], e["offset"], e["length"]) for e in back["entities"]}
    assert {
        ("bold", 0, 14),
        ("underline", 26, 6),
        ("strikethrough", 33, 9),
        ("spoiler", 43, 8),
    } <= entities
    await bridge.settle()
    # Nothing came back round: each side has exactly one relayed post.
    assert len(bridge.on_discord()) == 1 and len(bridge.on_telegram()) == 1


async def test_replies_become_native_replies_or_quotes(bridge: Bridge) -> None:
    original = bridge.telegram.inject_message(GROUP, MARIE_TG, "Qui a des outils de jardin ?")
    (copy,) = await bridge.until_discord(1)
    # Paul answers the relayed copy on Discord: on Telegram it is a reply to Marie's message.
    bridge.discord.inject_message(GENERAL, PAUL_DC, "Moi, une bêche", reply_to=int(copy["id"]))
    (answer,) = await bridge.until_telegram(1)
    assert answer["reply_to_message"]["message_id"] == original["message"]["message_id"]
    # Marie answers Paul's relayed message on Telegram: Discord webhooks cannot reply
    # natively, so the copy quotes what it answers.
    bridge.telegram.inject_message(
        GROUP, MARIE_TG, "Merci !", reply_to_message_id=answer["message_id"]
    )
    posts = await bridge.until_discord(2)
    assert posts[1]["content"] == "*↪ Paul : Moi, une bêche*\nMerci !"


async def test_edits_and_deletions_follow_the_map(bridge: Bridge) -> None:
    original = bridge.telegram.inject_message(GROUP, MARIE_TG, "Rendez-vous à 18 h")
    (copy,) = await bridge.until_discord(1)
    bridge.telegram.inject_edit(GROUP, original["message"]["message_id"], "Rendez-vous à 19 h")
    await bridge.discord.wait_for(
        lambda: bridge.on_discord()[0]["content"] == "Rendez-vous à 19 h", timeout=30
    )

    posted = bridge.discord.inject_message(GENERAL, PAUL_DC, "Je viens")
    await bridge.until_telegram(1)
    bridge.discord.inject_edit(GENERAL, int(posted["id"]), "Je viens avec ma sœur")
    await bridge.telegram.wait_for(
        lambda: bridge.on_telegram()[0]["text"] == "Paul · Discord\nJe viens avec ma sœur",
        timeout=30,
    )
    bridge.discord.inject_delete(GENERAL, int(posted["id"]))
    await bridge.telegram.wait_for(lambda: bridge.on_telegram() == [], timeout=30)

    # Telegram tells bots nothing about deletions: the author's /supprimer in reply removes
    # both copies (and the command).
    bridge.telegram.inject_command(
        GROUP, MARIE_TG, "supprimer", reply_to_message_id=original["message"]["message_id"]
    )
    await bridge.discord.wait_for(lambda: bridge.on_discord() == [], timeout=30)
    await bridge.telegram.wait_for(
        lambda: (
            bridge.telegram.message(GROUP, original["message"]["message_id"]) is None
            or bool(
                bridge.telegram.message(GROUP, original["message"]["message_id"]).get("deleted")
            )
        ),  # type: ignore[union-attr]
        timeout=30,
    )
    assert copy["id"] not in {m["id"] for m in bridge.on_discord()}


async def test_an_edit_past_discords_limit_is_posted_whole_and_deleted_whole(
    bridge: Bridge,
) -> None:
    """Discord holds 2,000 characters, Telegram 4,096: a short message edited long on
    Telegram outgrows its Discord copy, and the rest is posted after it, never cut."""
    original = bridge.telegram.inject_message(GROUP, MARIE_TG, "Court")
    (copy,) = await bridge.until_discord(1)
    longer = " ".join(f"mot{i}" for i in range(700))  # about 4,000 characters
    bridge.telegram.inject_edit(GROUP, original["message"]["message_id"], longer)
    posts = await bridge.until_discord(3)
    assert posts[0]["id"] == copy["id"]
    assert all(len(p["content"]) <= 2000 for p in posts)
    assert " ".join(p["content"].strip() for p in posts).split() == longer.split()
    assert {p["author"]["username"] for p in posts} == {copy["author"]["username"]}
    bridge.telegram.inject_command(
        GROUP, MARIE_TG, "supprimer", reply_to_message_id=original["message"]["message_id"]
    )
    await bridge.discord.wait_for(lambda: bridge.on_discord() == [], timeout=30)


async def test_only_the_author_or_a_moderator_may_delete(bridge: Bridge) -> None:
    bridge.discord.inject_message(GENERAL, PAUL_DC, "Mon message")
    (copy,) = await bridge.until_telegram(1)
    bridge.telegram.inject_command(
        GROUP, MARIE_TG, "supprimer", reply_to_message_id=copy["message_id"]
    )
    refusal = await bridge.until_telegram(2)
    assert refusal[-1]["text"] == "Seuls l'auteur ou un modérateur peuvent supprimer ce message."
    bridge.telegram.inject_command(
        GROUP, MODERATOR_TG, "supprimer", reply_to_message_id=copy["message_id"]
    )
    await bridge.discord.wait_for(
        lambda: (
            not any(m["content"] == "Mon message" for m in bridge.discord.channel_messages(GENERAL))
        ),
        timeout=30,
    )


async def test_a_photo_crosses_and_an_oversized_file_becomes_a_notice(bridge: Bridge) -> None:
    photo = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
    bridge.telegram.inject_photo(GROUP, MARIE_TG, photo, caption="Le jardin partagé")
    (post,) = await bridge.until_discord(1)
    assert post["content"] == "Le jardin partagé"
    (attachment,) = post["attachments"]
    assert bridge.discord.attachment_data(attachment["url"]) == photo

    big = b"x" * (10 * 1024 * 1024 + 1)
    bridge.telegram.inject_document(GROUP, MARIE_TG, big, "plan.pdf", mime_type="application/pdf")
    posts = await bridge.until_discord(2)
    assert (
        posts[1]["content"]
        == "📎 plan.pdf est trop volumineux pour être transmis ; à voir sur Telegram."
    )
    assert posts[1]["attachments"] == []


async def test_pings_and_commands_never_cross(bridge: Bridge) -> None:
    bridge.telegram.inject_message(GROUP, MARIE_TG, "@everyone <@&1200> /ban <@4001>")
    (copy,) = await bridge.until_discord(1)
    assert copy["content"] == "\\@everyone \\<@&1200> /ban \\<@4001>"
    executes = [r for r in bridge.discord.requests if r.method == "POST" and "/webhooks/" in r.path]
    assert executes and all(r.json["allowed_mentions"] == {"parse": []} for r in executes)
    bridge.discord.inject_message(GENERAL, PAUL_DC, "/aide moi")
    await bridge.settle()
    # "/aide" typed on Discord is a command there, answered there, and not relayed.
    assert bridge.on_telegram() == []


def _discord_lines(bridge: Bridge) -> list[str]:
    """The relayed texts on Discord, one per line, whether posted alone or merged."""
    return [line for m in bridge.on_discord() for line in m["content"].split("\n")]


def _telegram_lines(bridge: Bridge) -> list[str]:
    """The relayed texts on Telegram, without the author lines the bridge adds."""
    return [
        line
        for m in bridge.on_telegram()
        for line in m["text"].split("\n")
        if line.startswith("dc ")
    ]


async def test_429_storms_and_server_errors_on_both_sides(bridge: Bridge) -> None:
    telegram, discord = bridge.telegram, bridge.discord
    tg_429 = telegram.fail_next("sendMessage", status=429, retry_after=1, count=2)
    tg_502 = telegram.fail_next("sendMessage", status=502, retry_after=None, count=2)
    # The fake matches paths below the API base: a webhook execute is /webhooks/{id}/{token}.
    dc_429 = discord.fail_next("POST", WEBHOOK_EXECUTE, status=429, retry_after=0.05, count=3)
    dc_502 = discord.fail_next("POST", WEBHOOK_EXECUTE, status=502, count=1)
    for i in range(8):
        telegram.inject_message(GROUP, MARIE_TG, f"tg {i}")
        discord.inject_message(GENERAL, PAUL_DC, f"dc {i}")
    # The faults hold each side back past its pace, so the backlog may leave in merged
    # posts: wait for the last text, then check that every text arrived once, in order.
    await discord.wait_for(lambda: "tg 7" in _discord_lines(bridge), timeout=60)
    await telegram.wait_for(lambda: "dc 7" in _telegram_lines(bridge), timeout=60)
    await bridge.settle()
    assert _discord_lines(bridge) == [f"tg {i}" for i in range(8)]
    assert _telegram_lines(bridge) == [f"dc {i}" for i in range(8)]
    # Every injected fault fired: a pattern that matches nothing would make this test vacuous.
    assert (tg_429.fired, tg_502.fired, dc_429.fired, dc_502.fired) == (2, 2, 3, 1)
    sends = [r.status for r in telegram.calls("sendMessage")]
    executes = [
        r.status
        for r in discord.requests
        if r.method == "POST" and re.fullmatch(WEBHOOK_EXECUTE, r.path)
    ]
    # At least the injected 429s (the fakes' own limits may add some), exactly the 502s.
    assert sends.count(429) >= 2 and sends.count(502) == 2
    assert executes.count(429) >= 3 and executes.count(502) == 1


async def test_a_burst_past_telegrams_pace_is_batched_and_nothing_is_lost(bridge: Bridge) -> None:
    for i in range(100):
        bridge.discord.inject_message(GENERAL, PAUL_DC, f"message {i}")

    def relayed() -> str:
        return "\n".join(p["text"] for p in bridge.on_telegram())

    await bridge.telegram.wait_for(lambda: "message 99" in relayed(), timeout=60)
    await bridge.settle()
    posts = bridge.on_telegram()
    text = relayed()
    assert all(f"message {i}\n" in text + "\n" for i in range(100))
    # Twenty posts fit the group's minute; the rest rode along in merged posts.
    assert len(posts) < 100
    assert not [r for r in bridge.telegram.calls("sendMessage") if r.status == 429]
    async with bridge.app.db.read() as session:
        mapped = (
            await session.execute(
                sa.select(sa.func.count(sa.distinct(MessageLink.origin_message_id)))
            )
        ).scalar_one()
    assert mapped == 100


@pytest.mark.timeout(480)  # two thousand relays through two processes on two cores
async def test_sigkill_during_a_burst_each_way_loses_and_doubles_nothing(
    fakes: tuple[FakeTelegram, FakeDiscord], tmp_path: Any
) -> None:
    import os
    import re
    import signal
    import subprocess

    telegram, discord = fakes
    (tmp_path / "forum.toml").write_text(
        f'[[bridges]]\ntelegram = "{GROUP}"\ndiscord = "{GENERAL}"\n', encoding="utf-8"
    )
    environment = {
        **{k: v for k, v in os.environ.items() if not k.endswith("_TOKEN")},
        "TELEGRAM_TOKEN": telegram.token,
        "TELEGRAM_API_URL": telegram.url,
        "DISCORD_TOKEN": "TEST.discord.token",
        "DISCORD_API_URL": discord.api_url,
        "DISCORD_GUILD_IDS": "1000",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'forum.db'}",
        "FORUM_CONFIG": str(tmp_path / "forum.toml"),
        "RATE_LIMIT_SCALE": "0.01",
        "PTB_TIMEDELTA": "true",
    }

    def start(log: str) -> subprocess.Popen[bytes]:
        return start_bot_process(environment, tmp_path, log)

    marker = re.compile(r"(tg|dc)-(\d+)\.")

    def markers(texts: list[str], side: str) -> list[int]:
        return [int(n) for text in texts for s, n in marker.findall(text) if s == side]

    def on_discord() -> list[str]:
        return [m["content"] for m in discord.channel_messages(GENERAL) if m.get("webhook_id")]

    def on_telegram() -> list[str]:
        return [str(m["text"]) for m in telegram.sent_messages(GROUP, include_deleted=False)]

    count = 1000
    first = start("first.log")
    try:
        await discord.wait_for(lambda: discord.connected_sessions >= 1, timeout=60)
        await telegram.wait_for(lambda: bool(telegram.calls("getUpdates")), timeout=60)
        for i in range(count):
            telegram.inject_message(GROUP, MARIE_TG, f"tg-{i}.")
            discord.inject_message(GENERAL, PAUL_DC, f"dc-{i}.")
        # Kill while relays are flowing both ways.
        await discord.wait_for(lambda: len(markers(on_discord(), "tg")) >= 50, timeout=120)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(30)
    seen_before = (len(set(markers(on_discord(), "tg"))), len(set(markers(on_telegram(), "dc"))))
    assert seen_before[0] < count or seen_before[1] < count, (
        "the kill came too late to prove anything"
    )

    second = start("second.log")
    try:
        await discord.wait_for(lambda: len(set(markers(on_discord(), "tg"))) == count, timeout=240)
        await telegram.wait_for(
            lambda: len(set(markers(on_telegram(), "dc"))) == count, timeout=240
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)
    to_discord = markers(on_discord(), "tg")
    to_telegram = markers(on_telegram(), "dc")
    # Discord: exactly once, in order.
    assert to_discord == list(range(count))
    # Telegram: everything, in order apart from at most one post sent twice across the kill.
    assert sorted(set(to_telegram)) == list(range(count))
    doubled = {n for n in to_telegram if to_telegram.count(n) > 1}
    if doubled:
        posts_with_doubles = [t for t in on_telegram() if set(markers([t], "dc")) & doubled]
        # One post sent again after the kill (its messages appear in exactly two posts).
        assert len(posts_with_doubles) == 2, posts_with_doubles
    assert second.returncode == 0, (tmp_path / "second.log").read_text()


def _relayable() -> Any:
    from hypothesis import strategies as st

    from bot.richtext import sanitize

    # Any text a resident can post: Telegram and Discord refuse empty messages and trim
    # surrounding white space themselves; a text starting with "/" is a command to the bot,
    # answered where it was typed and by design not relayed.
    return st.text(min_size=1, max_size=300).filter(
        lambda t: sanitize(t).strip() != "" and not sanitize(t).strip().startswith("/")
    )


async def test_any_text_arrives_with_the_same_visible_text(bridge: Bridge) -> None:
    from hypothesis import HealthCheck, given, settings

    from bot.richtext import render_discord_visible, render_telegram_visible, sanitize

    texts: list[str] = []

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_relayable())
    def collect(text: str) -> None:
        texts.append(text)

    collect()
    for index, text in enumerate(texts):
        bridge.telegram.inject_message(GROUP, MARIE_TG, text, entities=[])
        bridge.discord.inject_message(GENERAL, PAUL_DC, _discord_literal(text))
        await bridge.until_discord(index + 1)
        await bridge.until_telegram(index + 1)
    await bridge.settle()
    # Both platforms trim the white space around a message, nothing else.
    expected = [sanitize(t).strip() for t in texts]
    shown_on_discord = [render_discord_visible(m["content"]).strip() for m in bridge.on_discord()]
    shown_on_telegram = [
        render_telegram_visible(_html_of(m)).split("\n", 1)[1].strip() for m in bridge.on_telegram()
    ]
    assert shown_on_discord == expected
    assert shown_on_telegram == expected


def _discord_literal(text: str) -> str:
    """What a resident types on Discord to show ``text`` literally."""
    from bot.richtext import FormattedText, to_discord_markdown

    return to_discord_markdown(FormattedText.plain(text))


def _html_of(message: dict[str, Any]) -> str:
    """The fake stores parsed text and entities; render them back as Telegram shows them."""
    from bot.richtext import from_telegram_entities, to_telegram_html

    return to_telegram_html(
        from_telegram_entities(str(message["text"]), message.get("entities", []))
    )


async def test_a_telegram_group_admin_may_delete_with_supprimer(bridge: Bridge) -> None:
    """Rights come from the platform at the time of every command, not only staff commands:
    an administrator of the Telegram group is a moderator there without being in the settings."""
    bridge.discord.inject_message(GENERAL, PAUL_DC, "À retirer")
    (copy,) = await bridge.until_telegram(1)
    bridge.telegram.set_member_status(GROUP, MARIE_TG, "administrator")
    bridge.telegram.inject_command(
        GROUP, MARIE_TG, "supprimer", reply_to_message_id=copy["message_id"]
    )
    await bridge.discord.wait_for(
        lambda: (
            not any(m["content"] == "À retirer" for m in bridge.discord.channel_messages(GENERAL))
        ),
        timeout=30,
    )
    assert not any("Seuls l'auteur" in m.get("text", "") for m in bridge.on_telegram()), (
        "the group admin was refused"
    )
