"""Adversarial tests of the bridge's claims (mentions, official-looking names, blank messages,
exactly-once posting on Discord, merged posts in the outbox).

Each test attacks one documented claim along a path the existing tests do not take. Tests
that inject a fault assert that it fired. A failing test here is a finding, kept on purpose.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from bot.events import (
    ChatRef,
    DeleteMessage,
    EditMessage,
    MessageRef,
    PermanentFailure,
    RateLimited,
    SendMessage,
    TemporaryFailure,
)
from bot.names import looks_official, skeleton
from bot.outbox import Outbox, Pace
from bot.richtext import FormattedText, to_discord_markdown
from handlers.bridge import display_name, merge_relays
from storage.db import Database
from storage.models import OutboxItem
from tests.fakes.discord import DiscordLimits, FakeDiscord
from tests.fakes.telegram import FakeTelegram, TelegramLimits
from tests.harness import GENERAL, GROUP
from tests.test_bridge import MARIE_TG, PAUL_DC, WEBHOOK_EXECUTE, Bridge, _settings, _start
from tests.test_outbox import Blocking, Scripted, VirtualTime, _joining, _outbox, _send

pytestmark = pytest.mark.usefixtures("ptb_timedelta", "fast_discord_reconnect")

MAIRIE_TG = 43
CANT_PARSE = 'Bad Request: can\'t parse entities: unsupported start tag "x" at byte offset 0'
LIVE = ("mention", "text_mention")


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeTelegram, FakeDiscord]]:
    telegram = FakeTelegram(limits=TelegramLimits(window_scale=0.01))
    discord = FakeDiscord(guild_id=1000, limits=DiscordLimits(window_scale=0.01))
    await telegram.start()
    await discord.start()
    telegram.add_chat(GROUP, title="Quartier Ouest")
    telegram.add_user(MARIE_TG, "Marie", last_name="Dupont", username="marie_dupont")
    telegram.add_user(MAIRIE_TG, "Mairie")
    telegram.set_member_status(GROUP, MARIE_TG, "member")
    telegram.set_member_status(GROUP, MAIRIE_TG, "member")
    discord.add_channel(GENERAL, "quartier-ouest")
    discord.add_member(PAUL_DC, "paul", global_name="Paul")
    try:
        yield telegram, discord
    finally:
        await discord.stop()
        await telegram.stop()


@pytest.fixture
async def bridge(fakes: tuple[FakeTelegram, FakeDiscord], sqlite_url: str) -> AsyncIterator[Bridge]:
    telegram, discord = fakes
    bridge = await _start(
        telegram, discord, _settings(telegram, discord, sqlite_url, rate_limit_scale=0.01)
    )
    try:
        yield bridge
    finally:
        await bridge.app.stop()


def _live_mentions(message: dict[str, Any]) -> list[dict[str, Any]]:
    entities = [*message.get("entities", []), *message.get("caption_entities", [])]
    return [e for e in entities if e["type"] in LIVE]


# ------------------------------------------------------------------ 1. no live mention


async def test_plain_text_fallback_does_not_revive_a_mention_written_in_code(
    bridge: Bridge,
) -> None:
    """Claim: no relayed text carries a live mention. In HTML, ``@marie_dupont`` inside
    <code> needs no word joiner (Telegram detects nothing in code); when Telegram refuses the
    formatting, the plain fallback drops the code but not the exemption."""
    refused = bridge.telegram.fail_next(
        "sendMessage", status=400, retry_after=None, description=CANT_PARSE
    )
    bridge.discord.inject_message(GENERAL, PAUL_DC, "mon pseudo Telegram : `@marie_dupont`")
    (copy,) = await bridge.until_telegram(1)
    await bridge.settle()
    assert refused.fired == 1
    assert "marie_dupont" in str(copy["text"])
    assert not _live_mentions(copy), (copy["text"], copy.get("entities"))


async def test_plain_text_fallback_of_an_edit_does_not_revive_a_mention_in_code(
    bridge: Bridge,
) -> None:
    """The same through relay_edit: an edit whose HTML Telegram refuses goes plain."""
    posted = bridge.discord.inject_message(GENERAL, PAUL_DC, "bonjour")
    await bridge.until_telegram(1)
    await bridge.settle()
    refused = bridge.telegram.fail_next(
        "editMessageText", status=400, retry_after=None, description=CANT_PARSE
    )
    bridge.discord.inject_edit(GENERAL, int(posted["id"]), "bonjour `@marie_dupont`")
    await bridge.telegram.wait_for(
        lambda: "marie_dupont" in str(bridge.on_telegram()[0]["text"]), timeout=30
    )
    await bridge.settle()
    assert refused.fired == 1
    (copy,) = bridge.on_telegram()
    assert not _live_mentions(copy), (copy["text"], copy.get("entities"))


async def test_plain_caption_fallback_does_not_revive_a_mention_in_code(bridge: Bridge) -> None:
    """The same for the caption of a relayed file."""
    refused = bridge.telegram.fail_next(
        "sendDocument", status=400, retry_after=None, description=CANT_PARSE
    )
    bridge.discord.inject_message(
        GENERAL,
        PAUL_DC,
        "le compte rendu, demandez à `@marie_dupont`",
        attachments=[("compte-rendu.txt", b"ordre du jour\n", "text/plain")],
    )
    await bridge.telegram.wait_for(lambda: bool(bridge.telegram.calls("sendDocument")), timeout=30)
    await bridge.settle()
    assert refused.fired == 1
    posts = bridge.on_telegram()
    assert any("marie_dupont" in str(p.get("caption", p.get("text", ""))) for p in posts), posts
    for post in posts:
        assert not _live_mentions(post), post


async def test_edits_carrying_mentions_do_not_ping_either_side(bridge: Bridge) -> None:
    original = bridge.telegram.inject_message(GROUP, MARIE_TG, "rendez-vous à 18 h")
    posted = bridge.discord.inject_message(GENERAL, PAUL_DC, "d'accord")
    await bridge.until_discord(1)
    await bridge.until_telegram(1)
    bridge.telegram.inject_edit(
        GROUP, original["message"]["message_id"], "@everyone @here <@4001> rendez-vous à 19 h"
    )
    bridge.discord.inject_edit(GENERAL, int(posted["id"]), "d'accord @marie_dupont")
    await bridge.discord.wait_for(lambda: "19 h" in bridge.on_discord()[0]["content"], timeout=30)
    await bridge.telegram.wait_for(
        lambda: "marie_dupont" in str(bridge.on_telegram()[0]["text"]), timeout=30
    )
    await bridge.settle()
    (dc_copy,) = bridge.on_discord()
    assert not dc_copy["mention_everyone"] and not dc_copy["mentions"], dc_copy["content"]
    assert not re.search(r"(?<!\\)<@|(?<!\\)@(?:everyone|here)\b", dc_copy["content"])
    edits = [r for r in bridge.discord.requests if r.method == "PATCH" and "/webhooks/" in r.path]
    assert edits and all(r.json.get("allowed_mentions") == {"parse": []} for r in edits)
    (tg_copy,) = bridge.on_telegram()
    assert not _live_mentions(tg_copy), tg_copy


def test_a_merged_post_label_from_a_name_like_everyone_is_escaped_on_discord() -> None:
    """Merged posts put each author's name in the text: a name "@everyone" or "<@&5>"."""
    tg = ChatRef("telegram", "-100")
    dc = ChatRef("discord", str(GENERAL))
    actions = [
        SendMessage(
            chat=dc,
            content=FormattedText.plain(text),
            as_name=display_name(name, tg),
            origin=MessageRef(tg, str(i)),
        )
        for i, (name, text) in enumerate([("@everyone", "salut"), ("<@&5>", "yo"), ("@here", "!")])
    ]
    merged = merge_relays(actions)
    assert merged is not None
    shown = to_discord_markdown(merged.content)
    assert not re.search(r"(?<!\\)<@|(?<!\\)@(?:everyone|here)\b", shown), shown


# ------------------------------------------------------------------ 2. official-looking names


@pytest.mark.parametrize(
    "name",
    [
        "ᗰᗩIᖇIᗴ",  # Canadian syllabics, the output of "fancy text" generators
        "ᗩᗪᗰIᑎ",  # the same for "ADMIN"
        "MAIЯIE",  # Cyrillic Ya for R ("faux cyrillic" style)
        "MΛIRIE",  # Greek capital lambda for A
        "ɱαιяιє",  # another generator style: m with hook, alpha, iota, ya, ukrainian ie
        "🇲 🇦 🇮 🇷 🇮 🇪",  # regional indicators apart: drawn as boxed letters, not flags
        "сопѕеіl",  # Cyrillic: п reads as n in lower case
    ],
)
def test_new_evasions_are_marked(name: str) -> None:
    assert looks_official(name), (name, skeleton(name))


@pytest.mark.parametrize(
    "name",
    [
        "ᎷᎪᎥᎡᎥᎬ",  # Cherokee capitals
        "ⓜⓐⓘⓡⓘⓔ",
        "Ｍａｉｒｉｅ",
        "Ma\u034firie",
        "Ma\u180eirie",
        "\u202bMairie\u202c",
        "M\u200cairie",
        "\u216fairie",  # ROMAN NUMERAL ONE THOUSAND
        "𝖬𝖺𝗂𝗋𝗂𝖾",
        "rnairie",
        "Mai\u3164rie",
        "Mai\u2800rie",
        "Mοderateur",  # Greek omicron
        "Coոseil",  # Armenian now
    ],
)
def test_known_look_alikes_are_marked(name: str) -> None:
    assert looks_official(name), (name, skeleton(name))


@pytest.mark.parametrize(
    "name",
    [
        "Emma Irène",
        "Ahmad Mina",
        "Tom Aire",
        "Marie",
        "Amandine",
        "Adrien",
        "Damien",
    ],
)
def test_ordinary_names_are_not_marked(name: str) -> None:
    """A first name ending in "ma"/"m" and a second name starting with "ire"/"in" make
    "maire"/"admin" across the space: real names, not fragments, so not marked."""
    assert not looks_official(name), (name, skeleton(name))


async def test_a_quoted_reply_names_its_official_looking_author_with_the_mark(
    bridge: Bridge,
) -> None:
    """The mark is on the relayed post's name; the quote of a reply names the author again."""
    original = bridge.telegram.inject_message(GROUP, MAIRIE_TG, "Coupure d'eau demain")
    (first,) = await bridge.until_discord(1)
    assert "non officiel" in first["author"]["username"]
    bridge.telegram.inject_message(
        GROUP, MARIE_TG, "Merci", reply_to_message_id=original["message"]["message_id"]
    )
    posts = await bridge.until_discord(2)
    quote = posts[1]["content"].split("\n", 1)[0]
    assert "Mairie" in quote
    assert "non officiel" in quote, quote


# ------------------------------------------------------------------ 3. blank, and nothing lost


async def test_a_message_of_only_joiners_is_not_relayed(bridge: Bridge) -> None:
    """ZERO WIDTH NON-JOINER / JOINER survive sanitising (emoji need them) and show nothing."""
    for blank in ("\u200c", "\u200d", "\u200c\u200d \u200c"):
        bridge.telegram.inject_message(GROUP, MARIE_TG, blank)
    bridge.telegram.inject_message(GROUP, MARIE_TG, "après")
    await bridge.until_discord(1)
    await bridge.settle()
    assert [m["content"] for m in bridge.on_discord()] == ["après"]


async def test_visible_but_short_messages_are_all_relayed(bridge: Bridge) -> None:
    texts = [
        "👍",
        "https://exemple.fr",
        ".",
        "🏴\U000e0067\U000e0062\U000e0077\U000e006c\U000e0073\U000e007f",
    ]
    for text in texts:
        bridge.telegram.inject_message(GROUP, MARIE_TG, text)
    bridge.discord.inject_message(GENERAL, PAUL_DC, "<:pouce:123>")
    bridge.discord.inject_message(GENERAL, PAUL_DC, "** ok **")
    await bridge.until_discord(len(texts))
    await bridge.until_telegram(2)
    await bridge.settle()
    shown = [m["content"].replace("\u200b", "").replace("\\", "") for m in bridge.on_discord()]
    assert shown == texts
    assert [str(m["text"]).split("\n", 1)[1].strip() for m in bridge.on_telegram()] == [
        ":pouce:",
        "ok",
    ]


# ------------------------------------------------------------------ 4. Discord exactly once


def _webhook_posts(bridge: Bridge, text: str) -> list[dict[str, Any]]:
    return [m for m in bridge.on_discord() if m["content"] == text]


async def test_merci_three_times_with_landed_and_lost_502s_gives_three_posts(
    bridge: Bridge,
) -> None:
    """First "Merci !" plainly; the second lands but is answered 502; the third gets a 502
    that did not land. Exactly three posts: no double, no copy taken for another."""
    bridge.telegram.inject_message(GROUP, MARIE_TG, "Merci !")
    await bridge.until_discord(1)
    await bridge.settle()
    landed = bridge.discord.fail_next("POST", WEBHOOK_EXECUTE, status=502, after_route=True)
    bridge.telegram.inject_message(GROUP, MARIE_TG, "Merci !")
    await bridge.until_discord(2)
    await bridge.settle()
    assert landed.fired == 1
    lost = bridge.discord.fail_next("POST", WEBHOOK_EXECUTE, status=502)
    bridge.telegram.inject_message(GROUP, MARIE_TG, "Merci !")
    await bridge.until_discord(3)
    bridge.telegram.inject_message(GROUP, MARIE_TG, "fin")
    await bridge.discord.wait_for(lambda: bool(_webhook_posts(bridge, "fin")), timeout=60)
    await bridge.settle()
    assert lost.fired == 1
    assert [m["content"] for m in bridge.on_discord()] == ["Merci !"] * 3 + ["fin"]


async def test_merci_by_two_residents_with_a_landed_502_between(bridge: Bridge) -> None:
    """Marie (Telegram) and Mairie (Telegram, other name) both write "Merci !"; Marie's lands
    behind a 502. Each resident gets one post."""
    landed = bridge.discord.fail_next("POST", WEBHOOK_EXECUTE, status=502, after_route=True)
    bridge.telegram.inject_message(GROUP, MARIE_TG, "Merci !")
    bridge.telegram.inject_message(GROUP, MAIRIE_TG, "Merci !")
    bridge.telegram.inject_message(GROUP, MARIE_TG, "fin")
    await bridge.discord.wait_for(lambda: bool(_webhook_posts(bridge, "fin")), timeout=60)
    await bridge.settle()
    assert landed.fired == 1
    posts = bridge.on_discord()
    assert [m["content"] for m in posts] == ["Merci !", "Merci !", "fin"]
    assert posts[0]["author"]["username"] != posts[1]["author"]["username"]


async def test_429_then_landed_502_then_success_posts_once(bridge: Bridge) -> None:
    """A rate limit first (a clear "not posted"), then a 502 after Discord posted."""
    limited = bridge.discord.fail_next("POST", WEBHOOK_EXECUTE, status=429, retry_after=0.05)
    landed = bridge.discord.fail_next("POST", WEBHOOK_EXECUTE, status=502, after_route=True)
    bridge.telegram.inject_message(GROUP, MARIE_TG, "Merci !")
    bridge.telegram.inject_message(GROUP, MARIE_TG, "fin")
    await bridge.discord.wait_for(lambda: bool(_webhook_posts(bridge, "fin")), timeout=60)
    await bridge.settle()
    assert (limited.fired, landed.fired) == (1, 1)
    assert [m["content"] for m in bridge.on_discord()] == ["Merci !", "fin"]


# ------------------------------------------------------------------ 5. merged posts


async def _statuses(db: Database) -> dict[int, str]:
    async with db.read() as session:
        rows = (await session.execute(sa.select(OutboxItem.id, OutboxItem.status))).all()
    return {int(i): str(s) for i, s in rows}


async def _merged_burst(
    db: Database,
    adapter: Scripted,
    *,
    finds_lost_posts: bool,
    pace: float = 0.3,
) -> Outbox:
    """'first', then 30 relays waiting behind it: the 30 leave as one merged post."""
    time = VirtualTime()
    outbox = _outbox(
        db,
        adapter,
        pace=lambda chat: Pace(1, pace),
        merge=_joining,
        finds_lost_posts=lambda chat: finds_lost_posts,
        # Virtual pace time: the 30 relays behind 'first' are merged however slow the
        # machine is (on real time, a slow runner could let m0 out alone first).
        monotonic=time.now,
        pause=time.pause,
    )
    adapter.gate["a"] = asyncio.Event()
    await outbox.start()
    await outbox.submit([_send(ChatRef("mock", "a"), "first", origin="1")], source_key="first")
    await outbox.submit(
        [_send(ChatRef("mock", "a"), f"m{i}", origin=str(10 + i)) for i in range(30)],
        source_key="burst",
    )
    adapter.gate["a"].set()
    return outbox


class FailingEdit(Scripted):
    """Edits fail with the exceptions queued in ``edit_failures``; sends succeed."""

    def __init__(self, edit_failures: Sequence[Exception]) -> None:
        super().__init__()
        self.edit_failures = list(edit_failures)
        self.edit_faults_fired = 0

    async def _edit(self, action: Any, delivery: Any) -> None:
        if self.edit_failures:
            self.edit_faults_fired += 1
            raise self.edit_failures.pop(0)
        await super()._edit(action, delivery)


async def test_a_merged_posts_permanently_failed_edit_posts_every_member_alone(
    db: Database,
) -> None:
    """The placeholder vanished (a moderator deleted it): the edit cannot land, so the 30
    messages go out one by one, each once, and never merge into a refused edit again."""
    adapter = FailingEdit([PermanentFailure("Bad Request: message to edit not found")])
    outbox = await _merged_burst(db, adapter, finds_lost_posts=False, pace=0.1)
    try:
        async with asyncio.timeout(20):
            await outbox.drain()
    finally:
        await outbox.stop()
    assert adapter.edit_faults_fired == 1
    posted = [what for _, what in adapter.performed]
    assert posted == ["first", "…", "delete 102"] + [f"m{i}" for i in range(30)], posted
    assert set((await _statuses(db)).values()) == {"delivered"}


async def test_a_merged_posts_failed_edit_leaves_no_bare_placeholder(db: Database) -> None:
    """When the edit fails for good, the "…" placeholder is taken back and the residents'
    messages go out one by one: nothing bare stays, nothing is lost."""
    adapter = FailingEdit([PermanentFailure("Bad Request: message can't be edited")])
    outbox = await _merged_burst(db, adapter, finds_lost_posts=False, pace=0.1)
    try:
        async with asyncio.timeout(20):
            await outbox.drain()
    finally:
        await outbox.stop()
    assert adapter.edit_faults_fired == 1
    posted = [what for _, what in adapter.performed]
    placeholder_left = posted.count("…") - sum(1 for w in posted if w.startswith("delete "))
    assert placeholder_left == 0, posted
    assert posted[3:] == [f"m{i}" for i in range(30)], posted


async def test_a_rate_limit_between_placeholder_and_edit_posts_one_placeholder(
    db: Database,
) -> None:
    adapter = FailingEdit([RateLimited(0.001), TemporaryFailure("502")])
    outbox = await _merged_burst(db, adapter, finds_lost_posts=False)
    try:
        async with asyncio.timeout(20):
            await outbox.drain()
    finally:
        await outbox.stop()
    assert adapter.edit_faults_fired == 2
    merged = "\n".join(f"m{i}" for i in range(30))
    assert [w for _, w in adapter.performed] == ["first", "…", f"edit 102: {merged}"]
    assert set((await _statuses(db)).values()) == {"delivered"}


async def test_one_members_deletion_before_the_retry_does_not_delete_the_others(
    db: Database,
) -> None:
    """A merged post is in flight (placeholder posted, edit under way); meanwhile one resident
    deletes their message. The deletion was handled before the merged post was recorded, so relay_deletion saw no batched
    copy and queued a DeleteMessage by origin: it must not take 29 other messages with it."""
    first = Blocking(free=2)  # "first" and the placeholder pass; the edit blocks
    outbox = await _merged_burst(db, first, finds_lost_posts=False)
    try:
        async with asyncio.timeout(20):
            await first.blocked.wait()
        # Resident 10 deletes their message while the merged post is in flight.
        await outbox.submit(
            [
                DeleteMessage(
                    chat=ChatRef("mock", "a"), origin=MessageRef(ChatRef("other", "x"), "10")
                )
            ],
            source_key="deletion",
        )
        first.release.set()
        async with asyncio.timeout(20):
            await outbox.drain()
    finally:
        await outbox.stop()
    merged_id = "102"
    performed = [w for _, w in first.performed]
    assert performed[:2] == ["first", "…"]
    assert f"delete {merged_id}" not in performed, performed


async def test_one_members_edit_before_the_retry_does_not_rewrite_the_others(
    db: Database,
) -> None:
    """The same race for an edit: queued by origin while the merged post is in flight, it
    must not replace 30 residents' words with one; its note is posted as a reply instead."""
    first = Blocking(free=2)
    outbox = await _merged_burst(db, first, finds_lost_posts=False)
    try:
        async with asyncio.timeout(20):
            await first.blocked.wait()
        await outbox.submit(
            [
                EditMessage(
                    chat=ChatRef("mock", "a"),
                    origin=MessageRef(ChatRef("other", "x"), "10"),
                    content=FormattedText.plain("m0 corrigé"),
                    if_merged=FormattedText.plain("(modifié) m0 corrigé"),
                )
            ],
            source_key="edit",
        )
        first.release.set()
        async with asyncio.timeout(20):
            await outbox.drain()
    finally:
        await outbox.stop()
    performed = [w for _, w in first.performed]
    merged = "\n".join(f"m{i}" for i in range(30))
    assert performed == ["first", "…", f"edit 102: {merged}", "(modifié) m0 corrigé"], performed


async def test_a_permanent_failure_of_a_merged_head_fails_its_members(db: Database) -> None:
    class FailingSecondSend(Scripted):
        sends = 0

        async def _send(self, action: SendMessage, delivery: Any) -> Any:
            self.sends += 1
            if self.sends == 2:
                raise PermanentFailure("Forbidden: bot was kicked")
            return await super()._send(action, delivery)

    adapter = FailingSecondSend()
    outbox = await _merged_burst(db, adapter, finds_lost_posts=True)
    try:
        async with asyncio.timeout(20):
            await outbox.drain()
        status = {s.chat_key: s for s in await outbox.status()}
    finally:
        await outbox.stop()
    assert adapter.sends == 2
    statuses = await _statuses(db)
    assert sorted(statuses.values()) == ["delivered"] + ["failed"] * 30, statuses
    assert status["mock:a"].failed == 30
