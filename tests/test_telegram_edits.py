"""Telegram's length limits on edits and captions: nothing a resident wrote is dropped.

Telegram refuses a text over 4,096 characters and a caption over 1,024 (the fake enforces both,
on sends and on edits alike), and an edit cannot add messages: what no longer fits in the
message's parts is posted after them, as a reply to the last part.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import ClassVar

import pytest
import sqlalchemy as sa
from sqlmodel import col

from bot.bootstrap import build
from bot.clock import SystemClock
from bot.dispatcher import Dispatcher
from bot.events import (
    Action,
    Attachment,
    ChatRef,
    DeleteMessage,
    EditMessage,
    MessageRef,
    SendFile,
    SendMessage,
)
from bot.platforms.base import Adapter
from bot.platforms.telegram import TelegramAdapter
from bot.richtext import FormattedText, Span, Style
from storage.db import Database
from storage.models import OutboxItem
from tests.fakes.telegram import FakeTelegram, TelegramLimits
from tests.test_telegram import GROUP, TelegramForum, _settings

pytestmark = pytest.mark.usefixtures("ptb_timedelta")

CHAT = ChatRef("telegram", str(GROUP))
# The message on Discord that the Telegram copies relay: edits find every part through it.
ORIGIN = MessageRef(ChatRef("discord", "555"), "9001")
NAME = "Marie Dupont"


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram(limits=TelegramLimits(window_scale=0.01))
    await server.start()
    server.add_chat(GROUP, title="Quartier Ouest")
    try:
        yield server
    finally:
        await server.stop()


REPORT = b"Compte rendu du conseil de quartier\n"


class DiscordFiles(Adapter):
    """Where relayed files come from: the bridge fetches them here before posting them."""

    name: ClassVar[str] = "discord"

    async def start(self, dispatcher: Dispatcher) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def download(self, attachment: Attachment, limit: int) -> bytes | None:
        return REPORT


@pytest.fixture
async def forum(fake: FakeTelegram, sqlite_url: str) -> AsyncIterator[TelegramForum]:
    settings = _settings(fake, sqlite_url, rate_limit_scale=0.01)
    db = Database(settings.database_url)
    adapter = TelegramAdapter(settings, db, SystemClock(), poll_timeout=1)
    app = build(
        settings,
        db=db,
        clock=SystemClock(),
        adapters=[adapter, DiscordFiles()],
        with_scheduler=False,
    )
    await app.start()
    try:
        yield TelegramForum(fake, app, adapter)
    finally:
        await app.stop()


async def _deliver(forum: TelegramForum, key: str, *actions: Action) -> None:
    await forum.app.outbox.submit(list(actions), source_key=key)
    async with asyncio.timeout(30):
        await forum.app.outbox.drain()
    async with forum.app.db.read() as session:
        failed = (
            await session.execute(
                sa.select(col(OutboxItem.kind), col(OutboxItem.last_error)).where(
                    col(OutboxItem.status) == "failed"
                )
            )
        ).all()
    assert failed == [], failed


def _long(paragraphs: int, words: int = 400) -> str:
    """Numbered paragraphs, so that a part out of order or missing shows."""
    return "\n\n".join(f"Paragraphe {i} : " + "réunion " * words for i in range(paragraphs))


def _shown(message: dict[str, object]) -> str:
    return str(message.get("text", message.get("caption", "")))


def _squeezed(text: str) -> str:
    """The words in order: cuts between parts drop the whitespace they fall on."""
    return re.sub(r"\s+", "", text)


def _relay(content: str) -> SendMessage:
    return SendMessage(chat=CHAT, content=FormattedText.plain(content), as_name=NAME, origin=ORIGIN)


def _edit(content: FormattedText | str) -> EditMessage:
    if isinstance(content, str):
        content = FormattedText.plain(content)
    return EditMessage(chat=CHAT, origin=ORIGIN, content=content, as_name=NAME)


def _reply_id(message: dict[str, object]) -> object:
    reply = message.get("reply_to_message")
    return reply.get("message_id") if isinstance(reply, dict) else None


async def test_an_edit_past_4096_characters_fills_the_part_and_posts_the_rest(
    forum: TelegramForum,
) -> None:
    await _deliver(forum, "send", _relay("Bonjour à tous"))
    (original,) = forum.sent()
    longer = _long(3)  # about 9,700 characters: three messages' worth
    await _deliver(forum, "edit", _edit(longer))
    first, *rest = forum.sent()
    assert first["message_id"] == original["message_id"]
    assert str(first["text"]).startswith(f"{NAME}\nParagraphe 0")
    assert len(rest) == 2
    # The rest hangs off the message it continues, which may be far up the chat by now.
    assert _reply_id(rest[0]) == original["message_id"]
    assert all(len(_shown(m)) <= 4096 for m in forum.sent())
    assert _squeezed("".join(_shown(m) for m in forum.sent())) == _squeezed(f"{NAME}\n{longer}")


async def test_an_edit_of_a_split_message_keeps_its_parts_in_place(forum: TelegramForum) -> None:
    text = _long(4, words=200)
    await _deliver(forum, "send", _relay(text))
    sent = forum.sent()
    assert len(sent) == 2
    # Slightly longer, still two parts: the parts are edited, nothing new is posted.
    changed = text.replace("Paragraphe 3", "Paragraphe 3 (corrigé)")
    await _deliver(forum, "edit", _edit(changed))
    after = forum.sent()
    assert [m["message_id"] for m in after] == [m["message_id"] for m in sent]
    assert _squeezed("".join(_shown(m) for m in after)) == _squeezed(f"{NAME}\n{changed}")
    # Shorter than one part: the second part is emptied to an ellipsis, not left stale.
    await _deliver(forum, "shorter", _edit("Finalement, rien."))
    assert [_shown(m) for m in forum.sent()] == [f"{NAME}\nFinalement, rien.", "…"]


async def test_an_edit_whose_formatting_telegram_refuses_falls_back_to_plain_text(
    forum: TelegramForum,
) -> None:
    await _deliver(forum, "send", _relay("Bonjour"))
    refused = forum.fake.fail_next(
        "editMessageText",
        status=400,
        retry_after=None,
        description="Bad Request: can't parse entities: unsupported start tag",
    )
    content = FormattedText("gras et <texte>", (Span(Style.BOLD, 0, 4),))
    await _deliver(forum, "edit", _edit(content))
    (edited,) = forum.sent()
    assert edited["text"] == f"{NAME}\ngras et <texte>"
    last = forum.fake.calls("editMessageText")[-1]
    assert last.status == 200 and "parse_mode" not in last.params
    assert refused.fired == 1, "the refusal never fired"


def _file(caption: str) -> SendFile:
    return SendFile(
        chat=CHAT,
        filename="compte-rendu.txt",
        data=REPORT,
        mime_type="text/plain",
        caption=FormattedText.plain(caption),
        as_name=NAME,
    )


def _relayed_file(caption: str) -> SendMessage:
    """A resident's file with its text, from Discord: the bridge posts it with a caption."""
    attachment = Attachment("document", "discord-file-1", "compte-rendu.txt", "text/plain")
    return SendMessage(
        chat=CHAT,
        content=FormattedText.plain(caption),
        as_name=NAME,
        origin=ORIGIN,
        attachments=(attachment,),
    )


async def test_a_caption_past_1024_characters_is_carried_whole(forum: TelegramForum) -> None:
    caption = _long(2, words=200)  # about 3,300 characters
    await _deliver(forum, "file", _file(caption))
    document, *rest = forum.sent()
    assert "document" in document
    assert str(document["caption"]).startswith(f"{NAME}\nParagraphe 0")
    assert len(str(document["caption"])) <= 1024
    assert rest and all("text" in m and len(str(m["text"])) <= 4096 for m in rest)
    assert _squeezed("".join(_shown(m) for m in forum.sent())) == _squeezed(f"{NAME}\n{caption}")


async def test_a_caption_whose_formatting_telegram_refuses_is_sent_plain(
    forum: TelegramForum,
) -> None:
    refused = forum.fake.fail_next(
        "sendDocument",
        status=400,
        retry_after=None,
        description="Bad Request: can't parse entities: unsupported start tag",
    )
    await _deliver(forum, "file", _file("Le <compte rendu> & la suite"))
    (document,) = forum.sent()
    assert document["caption"] == f"{NAME}\nLe <compte rendu> & la suite"
    last = forum.fake.calls("sendDocument")[-1]
    assert last.status == 200 and "parse_mode" not in last.params
    assert refused.fired == 1, "the refusal never fired"


async def test_an_edit_of_a_relayed_file_edits_its_caption(forum: TelegramForum) -> None:
    await _deliver(forum, "file", _relayed_file("Le compte rendu"))
    (document,) = forum.sent()
    await _deliver(forum, "edit", _edit("Le compte rendu, corrigé"))
    (edited,) = forum.sent()
    assert edited["caption"] == f"{NAME}\nLe compte rendu, corrigé"
    # Longer than a caption holds: the caption carries the start, the rest replies to it.
    longer = _long(2, words=200)
    await _deliver(forum, "longer", _edit(longer))
    edited, continued = forum.sent()
    assert edited["message_id"] == document["message_id"]
    assert len(str(edited["caption"])) <= 1024
    assert _reply_id(continued) == document["message_id"]
    assert _squeezed(_shown(edited) + _shown(continued)) == _squeezed(f"{NAME}\n{longer}")


async def test_a_file_with_a_long_caption_is_edited_in_the_same_layout(
    forum: TelegramForum,
) -> None:
    # The bridge keeps a text of up to 900 characters as a caption, but Telegram counts UTF-16
    # units: these 887 characters are 1,327 of them, past the caption's 1,024.
    caption = "Fête ! " + "🎉 " * 440
    await _deliver(forum, "file", _relayed_file(caption))
    sent = forum.sent()
    assert len(sent) == 2 and "document" in sent[0] and "text" in sent[1]
    assert _squeezed("".join(_shown(m) for m in sent)) == _squeezed(f"{NAME}\n{caption}")
    changed = caption.replace("Fête", "Grande fête")
    await _deliver(forum, "edit", _edit(changed))
    after = forum.sent()
    # The caption and the text that follows it are edited; nothing new is posted.
    assert [m["message_id"] for m in after] == [m["message_id"] for m in sent]
    assert _squeezed("".join(_shown(m) for m in after)) == _squeezed(f"{NAME}\n{changed}")


async def test_a_relay_whose_formatting_is_refused_shows_the_name_once(
    forum: TelegramForum,
) -> None:
    refused = forum.fake.fail_next(
        "sendMessage",
        status=400,
        retry_after=None,
        description="Bad Request: can't parse entities: unsupported start tag",
    )
    await _deliver(forum, "send", _relay("Bonjour <à tous>"))
    (sent,) = forum.sent()
    assert sent["text"] == f"{NAME}\nBonjour <à tous>"
    assert refused.fired == 1, "the refusal never fired"


async def test_the_parts_an_edit_added_are_deleted_with_the_message(forum: TelegramForum) -> None:
    """The continuation an over-long edit posted is part of the copy from then on: deleting
    the original takes it away too, and a later edit reaches it."""
    await _deliver(forum, "send", _relay("Bonjour à tous"))
    await _deliver(forum, "edit", _edit(_long(3)))
    assert len(forum.sent()) == 3
    await _deliver(forum, "shorter", _edit("Finalement, rien."))
    assert [_shown(m) for m in forum.sent()] == [f"{NAME}\nFinalement, rien.", "…", "…"]
    await _deliver(forum, "delete", DeleteMessage(chat=CHAT, origin=ORIGIN))
    assert forum.sent() == []


async def test_a_named_post_that_an_edit_lengthened_is_deleted_whole(forum: TelegramForum) -> None:
    await _deliver(
        forum,
        "post",
        SendMessage(chat=CHAT, content=FormattedText.plain("Ordre du jour"), post_key="agenda:1"),
    )
    await _deliver(
        forum,
        "edit",
        EditMessage(chat=CHAT, post_key="agenda:1", content=FormattedText.plain(_long(3))),
    )
    assert len(forum.sent()) == 3
    await _deliver(forum, "delete", DeleteMessage(chat=CHAT, post_key="agenda:1"))
    assert forum.sent() == []
