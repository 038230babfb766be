"""Hostile texts cross the bridge both ways: no ping, no refused markup, no word lost.

Every text goes Telegram → Discord and Discord → Telegram through the real python-telegram-bot
and discord.py against both fakes (the harness of tests/test_bridge.py). On arrival: no live
mention (no ``mention``/``text_mention`` entity on Telegram; on Discord, ``allowed_mentions``
parses nothing and no ``<@``, ``<#``, ``@everyone`` or ``@here`` is left unescaped), no request
refused, and the text the reader sees holds every word of the original.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.events import ChatRef
from bot.richtext import (
    FormattedText,
    Span,
    Style,
    defuse_telegram_mentions,
    from_discord_markdown,
    render_discord_visible,
    render_telegram_visible,
    sanitize,
    to_telegram_html,
)
from handlers.bridge import display_name
from tests.fakes.discord import FakeDiscord
from tests.fakes.telegram import FakeTelegram, TelegramLimits, finalize_text, parse_html
from tests.harness import GENERAL, GROUP
from tests.test_bridge import MARIE_TG, PAUL_DC, Bridge, _settings, _start
from tests.test_richtext import any_text, formatted

pytestmark = pytest.mark.usefixtures("ptb_timedelta", "fast_discord_reconnect")

# A Discord resident whose display name is itself a Telegram mention.
MENTIONER_DC = 4002
WORD_JOINER = "\u2060"
ZALGO = "".join(ch + "\u0336\u0489\u035b\u0316" for ch in "zalgo") + " fin"


def _long_text() -> str:
    """10,000 characters of words and mentions, each word numbered so that none can hide."""
    tokens = ["@everyone", "**", "<@123>", "@voisin_du_{n:04d}", "__", "`", "mot{n:04d}"]
    words: list[str] = []
    n = 0
    while len(" ".join(words)) < 10_000:
        words.append(tokens[n % len(tokens)].format(n=n))
        n += 1
    text = " ".join(words)[:10_000]
    return text.rsplit(" ", 1)[0] + " fin"


HOSTILE = [
    "@marie_dupont regarde ça",
    "@everyone réunion ce soir",
    "@here vite",
    "＠everyone en pleine largeur",
    "<@123> <@!123> <@&5> <#6>",
    "@\u200beveryone caché",
    "**gras jamais fermé",
    "__souligné ouvert",
    "`code ouvert",
    "```bloc ouvert",
    "<b>balise</b> </i> &amp; &lt; &",
    '<a href="tg://user?id=1">x</a>',
    "[x](tg://user?id=1)",
    "[x](javascript:alert(1))",
    "bidi \u202egnirts\u202c retour",
    ZALGO,
    "mail@exemple.fr reste une adresse",
]
LONG = _long_text()


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeTelegram, FakeDiscord]]:
    telegram = FakeTelegram(limits=TelegramLimits(window_scale=0.01))
    discord = FakeDiscord(guild_id=1000)
    await telegram.start()
    await discord.start()
    telegram.add_chat(GROUP, title="Quartier Ouest")
    telegram.add_user(MARIE_TG, "Marie", last_name="Dupont", username="marie_dupont")
    telegram.set_member_status(GROUP, MARIE_TG, "member")
    discord.add_channel(GENERAL, "quartier-ouest")
    discord.add_member(PAUL_DC, "paul", global_name="Paul")
    discord.add_member(MENTIONER_DC, "mentioner", global_name="@marie_dupont")
    try:
        yield telegram, discord
    finally:
        await discord.stop()
        await telegram.stop()


@pytest.fixture
async def bridge(
    fakes: tuple[FakeTelegram, FakeDiscord], database_url: str
) -> AsyncIterator[Bridge]:
    telegram, discord = fakes
    bridge = await _start(
        telegram, discord, _settings(telegram, discord, database_url, rate_limit_scale=0.01)
    )
    try:
        yield bridge
    finally:
        await bridge.app.stop()


def _words(text: str) -> list[str]:
    return text.replace(WORD_JOINER, "").replace("\u200b", "").split()


def _shown_on_telegram(message: dict[str, Any]) -> str:
    """What a Telegram reader sees (a word joiner shows nothing)."""
    return str(message["text"]).replace(WORD_JOINER, "")


def _shown_on_discord(message: dict[str, Any]) -> str:
    """What a Discord reader sees (the escaper's zero-width spaces show nothing)."""
    return render_discord_visible(str(message["content"])).replace("\u200b", "")


def _assert_no_live_mention_on_telegram(bridge: Bridge) -> None:
    for message in bridge.on_telegram():
        live = [e for e in message.get("entities", []) if e["type"] in ("mention", "text_mention")]
        assert not live, (message["text"], live)
    refused = [r for r in bridge.telegram.requests if r.status not in (200, None)]
    assert not refused, [(r.method, r.status, r.response) for r in refused]


def _assert_no_live_mention_on_discord(bridge: Bridge) -> None:
    executes = [r for r in bridge.discord.requests if r.method == "POST" and "/webhooks/" in r.path]
    assert executes and all(r.json["allowed_mentions"] == {"parse": []} for r in executes)
    refused = [r for r in bridge.discord.requests if r.status >= 400]
    assert not refused, [(r.method, r.path, r.status) for r in refused]
    for message in bridge.on_discord():
        content = str(message["content"])
        assert not message["mentions"] and not message["mention_roles"], content
        assert not message["mention_everyone"], content
        # Escaped with a backslash, these show as plain text; unescaped, they are mentions.
        assert not re.search(r"(?<!\\)<[@#]|(?<!\\)@(?:everyone|here)\b", content), content
        # The reference renderer draws live mentions as ⟦...⟧ pills.
        assert "⟦" not in render_discord_visible(content), content


async def test_hostile_texts_from_telegram(bridge: Bridge) -> None:
    for text in [*HOSTILE, LONG]:
        before = len(bridge.on_discord())
        bridge.telegram.inject_message(GROUP, MARIE_TG, text)
        await bridge.until_discord(before + 1)
        await bridge.settle()
        arrived = " ".join(_shown_on_discord(m) for m in bridge.on_discord()[before:])
        assert _words(arrived) == _words(sanitize(text)), text[:80]
    # The long text needed several Discord posts (2,000 characters each).
    assert len(bridge.on_discord()) > len(HOSTILE) + 1

    # A mention by id and a link to an account, as Telegram's own entities: plain text after.
    before = len(bridge.on_discord())
    bridge.telegram.inject_message(
        GROUP,
        MARIE_TG,
        "voir Paul et moi",
        entities=[
            {
                "type": "text_mention",
                "offset": 5,
                "length": 4,
                "user": {"id": 7, "is_bot": False, "first_name": "Paul"},
            },
            {"type": "text_link", "offset": 13, "length": 3, "url": "tg://user?id=42"},
        ],
    )
    (copy,) = (await bridge.until_discord(before + 1))[before:]
    assert copy["content"] == "voir Paul et moi"
    _assert_no_live_mention_on_discord(bridge)


async def test_hostile_texts_from_discord(bridge: Bridge) -> None:
    for text in [*HOSTILE, LONG]:
        before = len(bridge.on_telegram())
        bridge.discord.inject_message(GENERAL, PAUL_DC, text)
        await bridge.until_telegram(before + 1)
        await bridge.settle()
        parts = [_shown_on_telegram(m) for m in bridge.on_telegram()[before:]]
        header, _, first = parts[0].partition("\n")
        assert header == "Paul · Discord"
        # What Discord's readers see of the text, mention pills written out as typed.
        original = from_discord_markdown(text).text
        assert _words(" ".join([first, *parts[1:]])) == _words(original), text[:80]
    assert len(bridge.on_telegram()) > len(HOSTILE) + 1
    _assert_no_live_mention_on_telegram(bridge)


async def test_a_name_that_is_a_mention_does_not_ping_on_telegram(bridge: Bridge) -> None:
    bridge.discord.inject_message(GENERAL, MENTIONER_DC, "bonjour")
    (copy,) = await bridge.until_telegram(1)
    assert _shown_on_telegram(copy) == "@marie_dupont · Discord\nbonjour"
    _assert_no_live_mention_on_telegram(bridge)


async def test_empty_messages_do_not_cross_but_attachments_and_stickers_do(
    bridge: Bridge,
) -> None:
    # Invisible or blank text: the platforms accept it, the bridge has nothing to relay.
    for blank in ("\u200b", "\u200b\u202e\u2060", "\u3000", "\u2800", "\u00a0\u200b"):
        bridge.telegram.inject_message(GROUP, MARIE_TG, blank)
        bridge.discord.inject_message(GENERAL, PAUL_DC, blank)
    # Relays keep their order: once these arrive, anything relayed of the blanks is there.
    bridge.telegram.inject_message(GROUP, MARIE_TG, "après")
    bridge.discord.inject_message(GENERAL, PAUL_DC, "après")
    await bridge.until_discord(1)
    await bridge.until_telegram(1)
    await bridge.settle()
    assert [m["content"] for m in bridge.on_discord()] == ["après"]
    assert [m["text"] for m in bridge.on_telegram()] == ["Paul · Discord\naprès"]

    photo = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
    bridge.telegram.inject_photo(GROUP, MARIE_TG, photo)
    posts = await bridge.until_discord(2)
    assert posts[1]["content"] == "" and len(posts[1]["attachments"]) == 1
    # The fake has no inject_sticker: the message a sticker makes, as Telegram sends it.
    bridge.telegram._inject_resident_message(
        GROUP,
        MARIE_TG,
        {
            "sticker": {
                "file_id": "sticker-1",
                "file_unique_id": "u-sticker-1",
                "type": "regular",
                "width": 512,
                "height": 512,
                "is_animated": False,
                "is_video": False,
                "emoji": "👍",
            }
        },
    )
    posts = await bridge.until_discord(3)
    assert _shown_on_discord(posts[2]) == "[autocollant 👍]"
    await bridge.settle()
    assert len(bridge.on_telegram()) == 1


# ----------------------------------------------------------------------------- units


LIVE_MENTION_TYPES = ("mention", "text_mention")


def _as_telegram_stores(html: str) -> tuple[str, list[str]]:
    """The text and entity types Telegram keeps for this HTML (the fake's parser and detection)."""
    text, entities = finalize_text(*parse_html(html))
    return text, [e["type"] for e in entities]


@pytest.mark.parametrize(
    "text",
    ["@marie_dupont", "salut @everyone", "(@voisin_42)", "@@double_at", "a.@point_avant"],
)
def test_telegram_html_carries_no_mention(text: str) -> None:
    html = to_telegram_html(FormattedText.plain(text))
    assert render_telegram_visible(html) == text
    stored, types = _as_telegram_stores(html)
    assert stored.replace(WORD_JOINER, "") == text
    assert not set(types) & set(LIVE_MENTION_TYPES)


@settings(max_examples=300, deadline=None, database=None)
@given(formatted(st.one_of(any_text, st.from_regex(r"[ (.@a-z_]{0,12}@[a-z_]{1,12}"))))
def test_property_no_relayed_text_renders_to_a_telegram_mention(value: FormattedText) -> None:
    from handlers.bridge import _defuse

    # The renderer keeps tg:// links for the bot's own texts; the bridge refuses relayed ones.
    html = to_telegram_html(_defuse(value))
    stored, types = _as_telegram_stores(html)
    assert not set(types) & set(LIVE_MENTION_TYPES), (value, html)
    # Telegram trims the white space around a text; the rest is what the reader sees.
    assert stored.replace(WORD_JOINER, "") == render_telegram_visible(html).strip(" \t\n\r\v\f")


def test_code_keeps_its_at_signs_verbatim() -> None:
    # Telegram finds no mention inside code, and code must paste back exactly.
    html = to_telegram_html(FormattedText("@dataclass", (Span(Style.CODE, 0, 10),)))
    assert html == "<code>@dataclass</code>"


def test_an_address_keeps_its_at_sign() -> None:
    # An e-mail address is not a mention: Telegram must still recognise it.
    html = to_telegram_html(FormattedText.plain("écrire à mairie@exemple.fr"))
    assert _as_telegram_stores(html) == ("écrire à mairie@exemple.fr", ["email"])


def test_the_joiners_are_counted_before_the_text_is_cut() -> None:
    content = FormattedText("@everyone **@voisin_du_quartier**", (Span(Style.BOLD, 11, 31),))
    defused = defuse_telegram_mentions(content)
    assert defused.text == "@\u2060everyone **@\u2060voisin_du_quartier**"
    assert defused.spans == (Span(Style.BOLD, 12, 33),)
    # Rendering the defused text gives what rendering the text gives, joiners included once.
    assert to_telegram_html(defused) == to_telegram_html(content)
    assert parse_html(to_telegram_html(content))[0] == defused.text


def test_a_relayed_user_link_is_refused() -> None:
    from handlers.bridge import _defuse

    for url in ("tg://user?id=1", "TG://resolve?domain=x", "javascript:alert(1)"):
        content = FormattedText("x", (Span(Style.LINK, 0, 1, url),))
        html = to_telegram_html(_defuse(content))
        assert "<a" not in html and "tg:" not in html.lower(), (url, html)
    kept = FormattedText("x", (Span(Style.LINK, 0, 1, "https://exemple.fr"),))
    assert '<a href="https://exemple.fr">' in to_telegram_html(_defuse(kept))


def test_a_name_with_an_at_sign_is_defused() -> None:
    name = display_name("@marie_dupont", ChatRef("discord", "1"))
    assert name == "@\u2060marie_dupont · Discord"
    assert not set(_as_telegram_stores(name)[1]) & set(LIVE_MENTION_TYPES)
