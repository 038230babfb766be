"""Drive the real python-telegram-bot against the fake Telegram server.

These tests pin down both halves: that the fake answers the way PTB expects (shapes it can
parse, errors it maps to the right exceptions), and that the fake imitates Telegram where
bots go wrong (UTF-16 offsets, HTML parsing, limits, flood control, webhooks).
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import json
import socket
import struct
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from telegram import (
    Bot,
    BotCommandScopeAllGroupChats,
    ChatMemberAdministrator,
    ChatMemberRestricted,
    ChatPermissions,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Update,
)
from telegram.error import (
    BadRequest,
    Conflict,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from tests.fakes.telegram import (
    FakeTelegram,
    TelegramLimits,
    parse_html,
    utf16_len,
)

GROUP = -1001234567890
OTHER_GROUP = -1009876543210
ALICE = 1001
BOB = 1002


def _png(width: int, height: int) -> bytes:
    """A valid RGB PNG, so the fake can read its size like Telegram would."""
    raw = b"".join(b"\x00" + b"\x10\x80\xf0" * width for _ in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _populate(fake: FakeTelegram) -> None:
    fake.add_chat(GROUP, title="Quartier Ouest")
    fake.add_chat(OTHER_GROUP, title="Quartier Est")
    fake.add_chat(ALICE, type="private")
    fake.add_user(ALICE, "Alice", last_name="Martin", username="alice_ouest")
    fake.add_user(BOB, "Bob")


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram()
    _populate(server)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _make_bot(server: FakeTelegram) -> Bot:
    return Bot(server.token, base_url=f"{server.url}/bot", base_file_url=f"{server.url}/file/bot")


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    async with _make_bot(fake) as client:
        yield client


def _build_app(server: FakeTelegram) -> Application[Any, Any, Any, Any, Any, Any]:
    return (
        ApplicationBuilder()
        .token(server.token)
        .base_url(f"{server.url}/bot")
        .base_file_url(f"{server.url}/file/bot")
        .build()
    )


@pytest.fixture
def timedelta_periods(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without this, reading RetryAfter.retry_after emits PTB's deprecation warning, which the
    # project's filterwarnings turns into an error.
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


def _entities(message: Any) -> list[dict[str, Any]]:
    return [entity.to_dict() for entity in message.entities]


# --------------------------------------------------------------------------------------------
# getMe, Application lifecycle, long polling
# --------------------------------------------------------------------------------------------


async def test_application_initialize_reads_get_me(fake: FakeTelegram) -> None:
    app = _build_app(fake)
    async with app:
        assert app.bot.username == "forum_habitant_bot"
        me = app.bot.bot
        assert me.id == 123456
        assert me.is_bot is True
        assert me.can_join_groups is True
        assert me.can_read_all_group_messages is False
        assert me.supports_inline_queries is False
    get_me = fake.calls("getMe")
    assert len(get_me) == 1
    assert get_me[0].status == 200
    assert get_me[0].response is not None and get_me[0].response["ok"] is True


async def test_wrong_token_is_rejected(fake: FakeTelegram) -> None:
    with pytest.raises(InvalidToken):
        async with Bot("999:wrong", base_url=f"{fake.url}/bot"):
            pass
    assert fake.requests[-1].status == 401


async def test_long_poll_wakes_on_injected_message_with_utf16_entities(
    fake: FakeTelegram, bot: Bot
) -> None:
    started = time.monotonic()
    poll = asyncio.create_task(bot.get_updates(timeout=30))
    # The long poll is parked in the fake before the resident writes.
    await fake.wait_for(lambda: any(r.status is None for r in fake.calls("getUpdates")))
    text = "Salut 👋 @alice_ouest, fête #Quartier ce soir https://exemple.fr/agenda."
    injected = fake.inject_message(GROUP, ALICE, text)
    updates = await asyncio.wait_for(poll, 5)
    assert time.monotonic() - started < 5, "the long poll must answer as soon as an update is there"

    assert len(updates) == 1
    update = updates[0]
    assert update.update_id == injected["update_id"]
    message = update.message
    assert message is not None
    assert message.text == text
    assert message.from_user is not None and message.from_user.username == "alice_ouest"
    assert message.chat.id == GROUP
    # "Salut " is 6 units and 👋 two more: the mention starts at UTF-16 offset 9, not 8.
    assert _entities(message) == [
        {"type": "mention", "offset": 9, "length": 12},
        {"type": "hashtag", "offset": 28, "length": 9},
        {"type": "url", "offset": 46, "length": 25},
    ]
    parsed = message.parse_entities()
    assert sorted(parsed.values()) == sorted(
        ["@alice_ouest", "#Quartier", "https://exemple.fr/agenda"]
    )

    # Confirming with offset forgets the update; nothing is left to fetch.
    again = await bot.get_updates(offset=update.update_id + 1, timeout=0)
    assert again == ()
    assert fake.pending_updates == []


async def test_long_poll_times_out_empty(fake: FakeTelegram, bot: Bot) -> None:
    started = time.monotonic()
    assert await bot.get_updates(timeout=1) == ()
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 4


async def test_injected_entities_and_commands(fake: FakeTelegram, bot: Bot) -> None:
    # 🏠 is outside the BMP: "Réunion" starts at UTF-16 offset 3.
    fake.inject_message(
        GROUP, BOB, "🏠 Réunion mardi", entities=[{"type": "bold", "offset": 3, "length": 7}]
    )
    fake.inject_command(GROUP, ALICE, "signaler", "spam 🙄", mention_bot=True)
    updates = await bot.get_updates(timeout=0)
    assert len(updates) == 2
    first, second = (u.message for u in updates)
    assert first is not None and second is not None
    assert list(first.parse_entities().values()) == ["Réunion"]
    assert second.text == "/signaler@forum_habitant_bot spam 🙄"
    assert _entities(second) == [{"type": "bot_command", "offset": 0, "length": 28}]
    assert second.message_id == first.message_id + 1  # ids are per chat and increasing


async def test_injected_edit_is_an_edited_message(fake: FakeTelegram, bot: Bot) -> None:
    original = fake.inject_message(GROUP, ALICE, "Vide-grenier samedi")
    message_id = original["message"]["message_id"]
    edit = fake.inject_edit(GROUP, message_id, "Vide-grenier dimanche 🎉")
    updates = await bot.get_updates(timeout=0)
    assert [u.update_id for u in updates] == [original["update_id"], edit["update_id"]]
    edited = updates[1].edited_message
    assert edited is not None
    assert edited.message_id == message_id
    assert edited.text == "Vide-grenier dimanche 🎉"
    assert edited.edit_date is not None and edited.edit_date >= edited.date
    stored = fake.message(GROUP, message_id)
    assert stored is not None and stored["text"] == "Vide-grenier dimanche 🎉"


async def test_concurrent_get_updates_conflict(fake: FakeTelegram) -> None:
    async with _make_bot(fake) as first, _make_bot(fake) as second:
        parked = asyncio.create_task(first.get_updates(timeout=30))
        await fake.wait_for(lambda: any(r.status is None for r in fake.calls("getUpdates")))
        assert await second.get_updates(timeout=0) == ()
        with pytest.raises(Conflict, match="terminated by other getUpdates"):
            await asyncio.wait_for(parked, 5)


async def test_application_polling_answers_a_command(fake: FakeTelegram) -> None:
    app = _build_app(fake)
    seen: list[str] = []

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        seen.append(update.effective_message.text or "")
        await update.effective_message.reply_text(
            "Bonjour <b>voisine</b> !", parse_mode="HTML", do_quote=True
        )

    app.add_handler(CommandHandler("start", start))
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(timeout=5)
        command = fake.inject_command(GROUP, ALICE, "start")
        await fake.wait_for(lambda: len(fake.sent_messages(GROUP)) == 1)
        await app.updater.stop()
        await app.stop()
    assert seen == ["/start"]
    sent = fake.sent_messages(GROUP)[0]
    assert sent["text"] == "Bonjour voisine !"
    assert sent["entities"] == [{"offset": 8, "length": 7, "type": "bold"}]
    assert sent["from"]["id"] == 123456
    assert sent["reply_to_message"]["message_id"] == command["message"]["message_id"]
    assert fake.calls("deleteWebhook"), "start_polling clears any webhook first"


# --------------------------------------------------------------------------------------------
# sendMessage: HTML, limits
# --------------------------------------------------------------------------------------------


async def test_send_message_html_with_escapes(fake: FakeTelegram, bot: Bot) -> None:
    html = (
        "<b>1 &lt; 2 &amp;&amp; 3 &gt; 2</b> 👍 <i>é</i> "
        '<a href="https://exemple.fr/?a=1&amp;b=2">lien</a> &#128512;&quot;'
    )
    message = await bot.send_message(GROUP, html, parse_mode="HTML")
    assert message.text == '1 < 2 && 3 > 2 👍 é lien 😀"'
    assert _entities(message) == [
        {"type": "bold", "offset": 0, "length": 14},
        {"type": "italic", "offset": 18, "length": 1},
        {"type": "text_link", "offset": 20, "length": 4, "url": "https://exemple.fr/?a=1&b=2"},
    ]
    assert message.parse_entities() == {
        message.entities[0]: "1 < 2 && 3 > 2",
        message.entities[1]: "é",
        message.entities[2]: "lien",
    }
    stored = fake.sent_messages(GROUP)
    assert [m["message_id"] for m in stored] == [message.message_id]
    assert stored[0]["text"] == message.text
    call = fake.calls("sendMessage")[0]
    assert call.params["text"] == html
    assert call.params["parse_mode"] == "HTML"
    assert call.params["chat_id"] == GROUP


@pytest.mark.parametrize(
    ("html", "expected_text", "expected_entities"),
    [
        (
            '<pre><code class="language-python">x = 1 &lt; 2</code></pre>',
            "x = 1 < 2",
            [{"offset": 0, "length": 9, "type": "pre", "language": "python"}],
        ),
        (
            '<tg-spoiler>a</tg-spoiler> <span class="tg-spoiler">b</span>',
            "a b",
            [
                {"offset": 0, "length": 1, "type": "spoiler"},
                {"offset": 2, "length": 1, "type": "spoiler"},
            ],
        ),
        (
            "<blockquote expandable><u>x</u></blockquote><s>y</s><del>z</del>",
            "xyz",
            [
                {"offset": 0, "length": 1, "type": "expandable_blockquote"},
                {"offset": 0, "length": 1, "type": "underline"},
                {"offset": 1, "length": 1, "type": "strikethrough"},
                {"offset": 2, "length": 1, "type": "strikethrough"},
            ],
        ),
        (
            '<b><i>gras</i></b><tg-emoji emoji-id="5368324170671202286">👍</tg-emoji>',
            "gras👍",
            [
                {"offset": 0, "length": 4, "type": "bold"},
                {"offset": 0, "length": 4, "type": "italic"},
                {
                    "offset": 4,
                    "length": 2,
                    "type": "custom_emoji",
                    "custom_emoji_id": "5368324170671202286",
                },
            ],
        ),
        ("<code><b>x</b></code>", "x", [{"offset": 0, "length": 1, "type": "code"}]),
        ("  <b> gras </b>\n", "gras", [{"offset": 0, "length": 4, "type": "bold"}]),
    ],
)
async def test_html_shapes(
    fake: FakeTelegram,
    bot: Bot,
    html: str,
    expected_text: str,
    expected_entities: list[dict[str, Any]],
) -> None:
    message = await bot.send_message(GROUP, html, parse_mode="HTML")
    assert message.text == expected_text
    assert _entities(message) == expected_entities


@pytest.mark.parametrize(
    ("html", "reason"),
    [
        ("<b>gras", 'end tag corresponding to start tag "b"'),
        ("<b>x</i>", 'expected "</b>", found "</i>"'),
        ("<marquee>x</marquee>", 'unsupported start tag "marquee"'),
        ("1 < 2", 'unsupported start tag ""'),
        ("Tom & Jerry", "character '&'"),
        ("<span>x</span>", 'must have class "tg-spoiler"'),
        ("x</b>", "unexpected end tag"),
    ],
)
async def test_malformed_html_is_bad_request(
    fake: FakeTelegram, bot: Bot, html: str, reason: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        await bot.send_message(GROUP, html, parse_mode="HTML")
    assert "can't parse entities" in caught.value.message.lower()
    assert reason.lower() in caught.value.message.lower()
    assert fake.sent_messages() == []
    assert fake.calls("sendMessage")[0].status == 400


def test_parse_html_reports_byte_offsets() -> None:
    with pytest.raises(ValueError, match="byte offset 6"):
        parse_html("é é <x>")  # é is two bytes in UTF-8
    assert parse_html("a &#x1F600; b") == ("a 😀 b", [])


async def test_text_limits_count_utf16_after_parsing(fake: FakeTelegram, bot: Bot) -> None:
    await bot.send_message(GROUP, "a" * 4096)
    await bot.send_message(GROUP, "<b>" + "a" * 4096 + "</b>", parse_mode="HTML")
    await bot.send_message(GROUP, "😀" * 2048)  # 2048 characters, 4096 UTF-16 units
    for too_long in ("a" * 4097, "😀" * 2049):
        with pytest.raises(BadRequest, match=r"(?i)message is too long"):
            await bot.send_message(GROUP, too_long)
    assert utf16_len("😀" * 2049) == 4098
    assert len(fake.sent_messages(GROUP)) == 3

    with pytest.raises(BadRequest, match=r"(?i)message caption is too long"):
        await bot.send_photo(GROUP, _png(2, 2), caption="é" * 1025)
    with pytest.raises(BadRequest, match=r"(?i)message text is empty"):
        await bot.send_message(GROUP, " \n ")


async def test_unknown_chat_method_and_user(fake: FakeTelegram, bot: Bot) -> None:
    with pytest.raises(BadRequest, match=r"(?i)chat not found"):
        await bot.send_message(-100999, "allô ?")
    with pytest.raises(EndPointNotFound):
        await bot.do_api_request("sendTelepathy", api_kwargs={"chat_id": GROUP})
    assert fake.requests[-1].status == 404
    assert fake.requests[-1].response == {
        "ok": False,
        "error_code": 404,
        "description": "Not Found",
    }


# --------------------------------------------------------------------------------------------
# Faults and flood limits
# --------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("timedelta_periods")
async def test_fail_next_429_is_retry_after(fake: FakeTelegram, bot: Bot) -> None:
    fault = fake.fail_next("sendMessage", retry_after=7)
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(GROUP, "un")
    assert fault.fired == 1
    assert caught.value.retry_after == dtm.timedelta(seconds=7)
    first = fake.calls("sendMessage")[0]
    assert first.status == 429
    assert first.response == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 7",
        "parameters": {"retry_after": 7},
    }
    # Only the next call was failed.
    await bot.send_message(GROUP, "deux")
    assert [m["text"] for m in fake.sent_messages(GROUP)] == ["deux"]


@pytest.mark.usefixtures("timedelta_periods")
async def test_per_group_limit_gives_retry_after() -> None:
    # window_scale 0.05: the 60 s group window lasts 3 s, short enough for quick benchmarks
    # and long enough that 20 local sends always fit in it, even on a loaded machine. The
    # per-chat burst allowance is raised so that only the group's minute is under test here.
    limits = TelegramLimits(window_scale=0.05, per_chat_burst=20)
    async with FakeTelegram(limits=limits) as server:
        _populate(server)
        async with _make_bot(server) as client:
            for i in range(20):
                await client.send_message(GROUP, f"annonce {i}")
            with pytest.raises(RetryAfter) as caught:
                await client.send_message(GROUP, "annonce de trop")
            retry_after = caught.value.retry_after
            assert isinstance(retry_after, dtm.timedelta)
            # Whole Telegram seconds (scaled: 0.05 each) until the oldest of the 20 sends
            # leaves the 3 s window.
            assert 0.05 <= retry_after.total_seconds() <= 3
            # Another group and a private chat are not limited by this group's budget.
            await client.send_message(OTHER_GROUP, "ailleurs")
            await client.send_message(ALICE, "en privé")
        assert len(server.sent_messages(GROUP)) == 20
        assert [r.status for r in server.calls("sendMessage")].count(429) == 1


class _ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.usefixtures("timedelta_periods")
async def test_flood_windows_free_up_on_time() -> None:
    clock = _ManualClock()
    limits = TelegramLimits(per_group_per_minute=3, global_per_second=1000)
    async with FakeTelegram(limits=limits, clock=clock) as server:
        _populate(server)
        async with _make_bot(server) as client:
            for second in (0.0, 10.0, 20.0):
                clock.now = 1000.0 + second
                await client.send_message(GROUP, f"à t+{second}")
            clock.now = 1000.0 + 30.5
            with pytest.raises(RetryAfter) as caught:
                await client.send_message(GROUP, "trop tôt")
            assert caught.value.retry_after == dtm.timedelta(seconds=30)  # ceil(29.5)
            clock.now = 1000.0 + 59.9
            with pytest.raises(RetryAfter) as caught:
                await client.send_message(GROUP, "encore trop tôt")
            assert caught.value.retry_after == dtm.timedelta(seconds=1)  # never below 1
            clock.now = 1000.0 + 60.0
            await client.send_message(GROUP, "la première place est libre")


@pytest.mark.usefixtures("timedelta_periods")
async def test_global_limit_spans_chats() -> None:
    clock = _ManualClock()
    limits = TelegramLimits(global_per_second=2, window_scale=10.0)  # a 10 s global window
    async with FakeTelegram(limits=limits, clock=clock) as server:
        _populate(server)
        async with _make_bot(server) as client:
            await client.send_message(GROUP, "un")
            await client.send_message(ALICE, "deux")
            with pytest.raises(RetryAfter) as caught:
                await client.send_message(OTHER_GROUP, "trois")
            assert caught.value.retry_after == dtm.timedelta(seconds=10)  # 1 scaled by 10
    async with FakeTelegram(limits=TelegramLimits(global_per_second=1, enforce=False)) as free:
        _populate(free)
        async with _make_bot(free) as client:
            for i in range(5):
                await client.send_message(GROUP, str(i))
        assert len(free.sent_messages()) == 5


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_network_errors(fake: FakeTelegram, bot: Bot, status: int) -> None:
    fault = fake.fail_next(None, status=status, retry_after=None)
    with pytest.raises(NetworkError) as caught:
        await bot.send_message(GROUP, "bonjour")
    assert fault.fired == 1
    # BadRequest and TimedOut are NetworkError subclasses; a 5xx is the plain class.
    assert type(caught.value) is NetworkError
    assert fake.calls("sendMessage")[0].status == status
    assert fake.sent_messages() == []


async def test_proxy_error_page_is_network_error(fake: FakeTelegram, bot: Bot) -> None:
    fault = fake.fail_next(
        "getMe", status=502, raw_body="<html><body>502 Bad Gateway</body></html>"
    )
    with pytest.raises(NetworkError) as caught:
        await bot.get_me()
    assert fault.fired == 1
    assert type(caught.value) is NetworkError
    assert "Bad Gateway (502)" in caught.value.message
    assert (await bot.get_me()).username == "forum_habitant_bot"


async def test_dropped_connection_is_network_error(fake: FakeTelegram, bot: Bot) -> None:
    fault = fake.drop_next("sendMessage")
    with pytest.raises(NetworkError) as caught:
        await bot.send_message(GROUP, "perdu")
    assert fault.fired == 1
    assert type(caught.value) is NetworkError
    assert "RemoteProtocolError" in caught.value.message
    assert fake.calls("sendMessage")[0].status == 0
    assert fake.sent_messages() == []
    await bot.send_message(GROUP, "retrouvé")  # the next call goes through
    assert [m["text"] for m in fake.sent_messages()] == ["retrouvé"]


async def test_delayed_answer_times_out_but_is_still_sent(fake: FakeTelegram, bot: Bot) -> None:
    # The classic duplicate: the client gives up, Telegram still posts the message.
    fault = fake.delay_next("sendMessage", 0.5)
    with pytest.raises(TimedOut):
        await bot.send_message(GROUP, "lent", read_timeout=0.1)
    assert fault.fired == 1
    await fake.wait_for(lambda: len(fake.sent_messages(GROUP)) == 1, timeout=5)
    assert fake.sent_messages(GROUP)[0]["text"] == "lent"


async def test_wait_for_times_out_with_context(fake: FakeTelegram) -> None:
    with pytest.raises(TimeoutError, match="still false"):
        await fake.wait_for(lambda: False, timeout=0.05)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


async def test_send_photo_then_get_file_and_download(fake: FakeTelegram, bot: Bot) -> None:
    picture = _png(300, 200)
    message = await bot.send_photo(
        GROUP, picture, caption="<b>Plan</b> du marché", parse_mode="HTML"
    )
    assert message.caption == "Plan du marché"
    assert [e.to_dict() for e in message.caption_entities] == [
        {"type": "bold", "offset": 0, "length": 4}
    ]
    largest = message.photo[-1]
    assert (largest.width, largest.height) == (300, 200)
    assert largest.file_size == len(picture)
    assert message.photo[0].width == 90  # the small rendition Telegram adds

    upload = fake.calls("sendPhoto")[0]
    assert upload.files["photo"].data == picture  # it went as multipart
    assert upload.params["photo"] == picture

    tg_file = await bot.get_file(largest.file_id)
    assert tg_file.file_path is not None and tg_file.file_path.endswith(".jpg")
    downloaded = await tg_file.download_as_bytearray()
    assert bytes(downloaded) == picture
    assert fake.downloads == [tg_file.file_path.split("/file/bot123456:TEST-token/")[1]]

    # Sending again by file_id does not need an upload.
    again = await bot.send_photo(OTHER_GROUP, largest.file_id)
    assert fake.calls("sendPhoto")[1].files == {}
    assert fake.file_bytes(again.photo[-1].file_id) == picture


async def test_documents_round_trip_both_ways(fake: FakeTelegram, bot: Bot) -> None:
    report = b"%PDF-1.4 compte rendu du conseil de quartier"
    sent = await bot.send_document(GROUP, report, filename="compte-rendu.pdf", caption="CR")
    assert sent.document is not None
    assert sent.document.file_name == "compte-rendu.pdf"
    assert sent.document.mime_type == "application/pdf"
    assert sent.document.file_size == len(report)
    assert sent.caption == "CR"
    downloaded = await (await bot.get_file(sent.document.file_id)).download_as_bytearray()
    assert bytes(downloaded) == report

    photo = _png(40, 30)
    fake.inject_photo(GROUP, ALICE, photo, caption="Nid-de-poule rue des Lilas")
    fake.inject_document(GROUP, BOB, b"a;b\n1;2\n", "releve.csv", mime_type="text/csv")
    updates = await bot.get_updates(timeout=0)
    photo_msg, doc_msg = (u.message for u in updates)
    assert photo_msg is not None and doc_msg is not None
    assert photo_msg.caption == "Nid-de-poule rue des Lilas"
    assert len(photo_msg.photo) == 1  # 40 px: no smaller rendition
    got = await (await photo_msg.photo[-1].get_file()).download_as_bytearray()
    assert bytes(got) == photo
    assert doc_msg.document is not None and doc_msg.document.mime_type == "text/csv"
    got = await (await doc_msg.document.get_file()).download_as_bytearray()
    assert bytes(got) == b"a;b\n1;2\n"

    with pytest.raises(BadRequest, match=r"(?i)invalid file_id"):
        await bot.get_file("nope")
    with pytest.raises(BadRequest, match=r"(?i)wrong file identifier/http url"):
        await bot.send_photo(GROUP, "https://exemple.fr/photo.jpg")


# --------------------------------------------------------------------------------------------
# Keyboards, callback queries, edits, deletions, polls
# --------------------------------------------------------------------------------------------


async def test_callback_query_answer(fake: FakeTelegram, bot: Bot) -> None:
    keyboard = InlineKeyboardMarkup(
        [
            [InlineKeyboardButton("Oui", callback_data="vote:yes")],
            [InlineKeyboardButton("Non", callback_data="vote:no")],
        ]
    )
    poll_msg = await bot.send_message(GROUP, "On repeint le banc ?", reply_markup=keyboard)
    assert poll_msg.reply_markup == keyboard
    assert fake.sent_messages(GROUP)[0]["reply_markup"] == keyboard.to_dict()

    fake.inject_callback_query(GROUP, ALICE, poll_msg.message_id, "vote:yes")
    (update,) = await bot.get_updates(timeout=0)
    query = update.callback_query
    assert query is not None
    assert query.data == "vote:yes"
    assert query.from_user.id == ALICE
    assert query.message is not None and query.message.message_id == poll_msg.message_id
    assert await query.answer("Merci !", show_alert=True) is True
    assert fake.callback_answers[query.id]["text"] == "Merci !"
    assert fake.callback_answers[query.id]["show_alert"] is True
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await query.answer("encore")

    too_big = InlineKeyboardMarkup([[InlineKeyboardButton("x", callback_data="é" * 33)]])
    with pytest.raises(BadRequest, match=r"(?i)button_data_invalid"):
        await bot.send_message(GROUP, "trop de données", reply_markup=too_big)


async def test_edit_and_delete_change_sent_messages(fake: FakeTelegram, bot: Bot) -> None:
    message = await bot.send_message(GROUP, "Réunion mardi")
    edited = await bot.edit_message_text(
        "Réunion <b>mercredi</b>", chat_id=GROUP, message_id=message.message_id, parse_mode="HTML"
    )
    assert not isinstance(edited, bool)
    assert edited.text == "Réunion mercredi"
    assert edited.edit_date is not None
    current = fake.sent_messages(GROUP)[0]
    assert current["text"] == "Réunion mercredi"
    assert current["entities"] == [{"offset": 8, "length": 8, "type": "bold"}]
    assert "edit_date" in current

    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_text(
            "Réunion <b>mercredi</b>",
            chat_id=GROUP,
            message_id=message.message_id,
            parse_mode="HTML",
        )

    markup = InlineKeyboardMarkup([[InlineKeyboardButton("J'y serai", callback_data="rsvp")]])
    await bot.edit_message_reply_markup(GROUP, message.message_id, reply_markup=markup)
    stored = fake.message(GROUP, message.message_id)
    assert stored is not None and stored["reply_markup"] == markup.to_dict()

    resident = fake.inject_message(GROUP, ALICE, "je viens")
    with pytest.raises(BadRequest, match=r"(?i)message can't be edited"):
        await bot.edit_message_text("je ne viens pas", GROUP, resident["message"]["message_id"])

    assert await bot.delete_message(GROUP, message.message_id) is True
    assert fake.sent_messages(GROUP)[0]["deleted"] is True
    assert fake.sent_messages(GROUP, include_deleted=False) == []
    with pytest.raises(BadRequest, match=r"(?i)message to delete not found"):
        await bot.delete_message(GROUP, message.message_id)
    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await bot.edit_message_text("trop tard", GROUP, message.message_id)

    a = await bot.send_message(GROUP, "a")
    b = await bot.send_message(GROUP, "b")
    assert await bot.delete_messages(GROUP, [a.message_id, b.message_id, 9999]) is True
    assert [m.get("deleted", False) for m in fake.sent_messages(GROUP)] == [True, True, True]


async def test_replies_and_threads(fake: FakeTelegram, bot: Bot) -> None:
    fake.add_chat(-100555, title="Forum du quartier", is_forum=True)
    question = fake.inject_message(-100555, ALICE, "Qui a un escabeau ?", message_thread_id=7)
    question_id = question["message"]["message_id"]
    answer = await bot.send_message(-100555, "Moi !", reply_to_message_id=question_id)
    assert answer.reply_to_message is not None
    assert answer.reply_to_message.message_id == question_id
    assert answer.message_thread_id == 7  # inherited from the replied message
    assert answer.is_topic_message is True
    with pytest.raises(BadRequest, match=r"(?i)message to be replied not found"):
        await bot.send_message(-100555, "?", reply_to_message_id=424242)
    lenient = await bot.send_message(
        -100555, "!", reply_to_message_id=424242, allow_sending_without_reply=True
    )
    assert lenient.reply_to_message is None


async def test_poll_and_stop_poll(fake: FakeTelegram, bot: Bot) -> None:
    message = await bot.send_poll(GROUP, "Date de la fête ?", ["Samedi", "Dimanche"])
    assert message.poll is not None
    assert [o.text for o in message.poll.options] == ["Samedi", "Dimanche"]
    assert message.poll.is_closed is False
    stopped = await bot.stop_poll(GROUP, message.message_id)
    assert stopped.is_closed is True
    assert fake.sent_messages(GROUP)[0]["poll"]["is_closed"] is True


# --------------------------------------------------------------------------------------------
# Commands, chats, members, moderation, service messages
# --------------------------------------------------------------------------------------------


async def test_my_commands_per_scope_and_language(fake: FakeTelegram, bot: Bot) -> None:
    assert await bot.set_my_commands([("aide", "Afficher l'aide")], language_code="fr")
    assert await bot.set_my_commands(
        [("signaler", "Signaler un message")], scope=BotCommandScopeAllGroupChats()
    )
    french = await bot.get_my_commands(language_code="fr")
    assert [(c.command, c.description) for c in french] == [("aide", "Afficher l'aide")]
    assert await bot.get_my_commands() == ()
    groups = await bot.get_my_commands(scope=BotCommandScopeAllGroupChats())
    assert [c.command for c in groups] == ["signaler"]
    assert fake.commands({"type": "all_group_chats"})[0]["command"] == "signaler"
    await bot.delete_my_commands(language_code="fr")
    assert await bot.get_my_commands(language_code="fr") == ()
    with pytest.raises(BadRequest, match=r"(?i)bot_command_invalid"):
        await bot.set_my_commands([("Majuscule", "interdit")])


async def test_chat_members_and_moderation(fake: FakeTelegram, bot: Bot) -> None:
    chat = await bot.get_chat(GROUP)
    assert chat.title == "Quartier Ouest"
    assert chat.type == "supergroup"

    fake.set_member_status(GROUP, BOB, "creator")
    admins = await bot.get_chat_administrators(GROUP)
    assert {m.user.id: m.status for m in admins} == {123456: "administrator", BOB: "creator"}
    me = await bot.get_chat_member(GROUP, 123456)
    assert isinstance(me, ChatMemberAdministrator)
    assert me.can_restrict_members is True

    assert await bot.restrict_chat_member(GROUP, ALICE, ChatPermissions(can_send_messages=False))
    alice = await bot.get_chat_member(GROUP, ALICE)
    assert isinstance(alice, ChatMemberRestricted)
    assert alice.can_send_messages is False
    assert fake.member_status(GROUP, ALICE) == "restricted"
    assert await bot.restrict_chat_member(GROUP, ALICE, ChatPermissions.all_permissions())
    assert fake.member_status(GROUP, ALICE) == "member"

    assert await bot.ban_chat_member(GROUP, ALICE)
    assert (await bot.get_chat_member(GROUP, ALICE)).status == "kicked"
    assert await bot.unban_chat_member(GROUP, ALICE, only_if_banned=True)
    assert fake.member_status(GROUP, ALICE) == "left"

    with pytest.raises(BadRequest, match=r"(?i)can't remove chat owner"):
        await bot.ban_chat_member(GROUP, BOB)
    with pytest.raises(BadRequest, match=r"(?i)user not found"):
        await bot.get_chat_member(GROUP, 77)

    fake.set_member_status(GROUP, 123456, "member")  # the bot loses its admin rights
    with pytest.raises(BadRequest, match=r"(?i)not enough rights"):
        await bot.ban_chat_member(GROUP, ALICE)

    message = await bot.send_message(GROUP, "Règles du groupe")
    with pytest.raises(BadRequest, match=r"(?i)not enough rights"):
        await bot.pin_chat_message(GROUP, message.message_id)
    fake.set_member_status(GROUP, 123456, "administrator")
    assert await bot.pin_chat_message(GROUP, message.message_id, disable_notification=True)
    assert fake.pinned_messages(GROUP) == [message.message_id]
    pinned = (await bot.get_chat(GROUP)).pinned_message
    assert pinned is not None and pinned.message_id == message.message_id
    assert await bot.unpin_chat_message(GROUP)
    assert fake.pinned_messages(GROUP) == []
    assert await bot.send_chat_action(GROUP, "typing")

    fake.set_member_status(GROUP, 123456, "kicked")
    with pytest.raises(Forbidden, match=r"(?i)bot was kicked"):
        await bot.send_message(GROUP, "toc toc")


async def test_member_join_and_leave_updates(fake: FakeTelegram, bot: Bot) -> None:
    fake.set_member_status(GROUP, BOB, "left")
    fake.inject_member_joined(GROUP, BOB)
    fake.inject_member_left(GROUP, BOB)
    # By default chat_member updates are not delivered, as on Telegram.
    default = await bot.get_updates(timeout=0)
    assert len(default) == 2
    assert default[0].message is not None
    assert [u.id for u in default[0].message.new_chat_members] == [BOB]
    assert default[1].message is not None and default[1].message.left_chat_member is not None
    assert all(u.chat_member is None for u in default)

    everything = await bot.get_updates(timeout=0, allowed_updates=["message", "chat_member"])
    member_updates = [u.chat_member for u in everything if u.chat_member is not None]
    assert [(m.old_chat_member.status, m.new_chat_member.status) for m in member_updates] == [
        ("left", "member"),
        ("member", "left"),
    ]
    assert fake.member_status(GROUP, BOB) == "left"


# --------------------------------------------------------------------------------------------
# Webhook mode
# --------------------------------------------------------------------------------------------


@dataclass
class _WebhookReceiver:
    """A tiny webhook endpoint on 127.0.0.1 that records what it gets."""

    answers: deque[int] = field(default_factory=deque)  # statuses to answer first
    received: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    runner: web.AppRunner | None = None
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.json()))
        self.changed.set()
        return web.Response(status=self.answers.popleft() if self.answers else 200)

    async def wait_for_count(self, count: int) -> None:
        while len(self.received) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 10)


@pytest.fixture
async def receiver() -> AsyncIterator[_WebhookReceiver]:
    endpoint = _WebhookReceiver()
    app = web.Application()
    app.router.add_post("/hook", endpoint.handle)
    endpoint.runner = web.AppRunner(app, access_log=None)
    await endpoint.runner.setup()
    site = web.TCPSite(endpoint.runner, "127.0.0.1", 0)
    await site.start()
    endpoint.url = f"http://127.0.0.1:{endpoint.runner.addresses[0][1]}/hook"
    try:
        yield endpoint
    finally:
        await endpoint.runner.cleanup()


async def test_webhook_delivers_with_secret_and_retries(
    fake: FakeTelegram, bot: Bot, receiver: _WebhookReceiver
) -> None:
    receiver.answers.extend([500])  # the first attempt fails: Telegram must retry
    assert await bot.set_webhook(receiver.url, secret_token="s3cret-Token_1")
    info = await bot.get_webhook_info()
    assert info.url == receiver.url
    with pytest.raises(Conflict, match=r"(?i)webhook is active"):
        await bot.get_updates(timeout=0)

    injected = fake.inject_message(GROUP, ALICE, "Bonjour par webhook")
    await receiver.wait_for_count(2)
    for headers, body in receiver.received:
        assert headers["X-Telegram-Bot-Api-Secret-Token"] == "s3cret-Token_1"
        assert body == injected
    update = Update.de_json(receiver.received[-1][1], bot)
    assert update.message is not None and update.message.text == "Bonjour par webhook"
    await fake.wait_for(lambda: fake.webhook_deliveries[-1].status == 200)
    assert [d.status for d in fake.webhook_deliveries] == [500, 200]
    info = await bot.get_webhook_info()
    assert info.pending_update_count == 0
    assert info.last_error_message is not None and "500" in info.last_error_message

    assert await bot.delete_webhook()
    fake.inject_message(GROUP, BOB, "retour au long polling")
    updates = await bot.get_updates(timeout=0)
    assert [u.message.text for u in updates if u.message] == ["retour au long polling"]
    assert len(receiver.received) == 2

    with pytest.raises(BadRequest, match=r"(?i)loopback"):
        await bot.set_webhook("https://exemple.fr/hook")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_ptb_webhook_server_receives_updates(fake: FakeTelegram) -> None:
    port = _free_port()
    app = _build_app(fake)
    texts: list[str] = []
    seen = asyncio.Event()

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        texts.append(update.effective_message.text or "")
        seen.set()

    app.add_handler(MessageHandler(filters.TEXT, echo))
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_webhook(
            listen="127.0.0.1",
            port=port,
            url_path="tg",
            webhook_url=f"http://127.0.0.1:{port}/tg",
            secret_token="abc-123",
        )
        fake.inject_message(GROUP, ALICE, "via le webhook de PTB")
        await asyncio.wait_for(seen.wait(), 10)
        await app.updater.stop()
        await app.stop()
    assert texts == ["via le webhook de PTB"]
    assert fake.webhook_deliveries[-1].status == 200
    assert fake.webhook_deliveries[-1].secret_header == "abc-123"


async def test_json_bodies_and_query_strings_are_accepted(fake: FakeTelegram) -> None:
    keyboard = {"inline_keyboard": [[{"text": "Voir", "url": "https://exemple.fr"}]]}
    async with aiohttp.ClientSession() as session:
        base = f"{fake.url}/bot{fake.token}"
        async with session.get(f"{base}/getMe") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/json"
            assert (await response.json())["result"]["is_bot"] is True
        # Nested objects either as JSON or JSON-encoded strings, as Telegram accepts both.
        for markup in (keyboard, json.dumps(keyboard)):
            payload = {"chat_id": GROUP, "text": "123", "reply_markup": markup}
            async with session.post(f"{base}/sendMessage", json=payload) as response:
                body = await response.json()
            assert body["ok"] is True
            assert body["result"]["text"] == "123"
            assert body["result"]["reply_markup"] == keyboard
        async with session.post(f"{base}/sendMessage", data={"chat_id": str(GROUP)}) as response:
            assert response.status == 400
            assert (await response.json())["description"] == "Bad Request: message text is empty"
    assert [r.http_method for r in fake.requests] == ["GET", "POST", "POST", "POST"]
    assert fake.requests[1].params["chat_id"] == GROUP


async def test_anonymous_admin_and_text_mentions(fake: FakeTelegram, bot: Bot) -> None:
    group_chat = fake.add_chat(-100777, title="Conseil")
    fake.inject_message(-100777, ALICE, "Message de l'équipe", sender_chat=group_chat)
    (update,) = await bot.get_updates(timeout=0)
    assert update.message is not None
    assert update.message.from_user is not None
    assert update.message.from_user.username == "GroupAnonymousBot"
    assert update.message.sender_chat is not None and update.message.sender_chat.id == -100777

    message = await bot.send_message(
        GROUP, f'Merci <a href="tg://user?id={ALICE}">Alice</a> !', parse_mode="HTML"
    )
    (mention,) = message.entities
    assert mention.type == "text_mention"
    assert mention.user is not None and mention.user.username == "alice_ouest"


async def test_a_bug_in_the_fake_fails_the_test_at_stop() -> None:
    server = FakeTelegram()
    _populate(server)

    async def broken(params: dict[str, Any], files: dict[str, Any]) -> Any:
        raise KeyError("boom")

    server._handlers["getchat"] = broken  # stands in for a bug in a real handler
    await server.start()
    async with _make_bot(server) as client:
        with pytest.raises(NetworkError, match="fake Telegram bug"):
            await client.get_chat(GROUP)
    with pytest.raises(RuntimeError, match="failed 1 time") as caught:
        await server.stop()
    assert isinstance(caught.value.__cause__, KeyError)
