"""The Telegram adapter, driving the real python-telegram-bot against the loopback fake."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from aiohttp import web
from pydantic import SecretStr

from bot.bootstrap import App, build
from bot.clock import SystemClock
from bot.config import RolesConfig, Settings
from bot.events import Attachment, ChatRef, SendMessage
from bot.platforms.telegram import TelegramAdapter
from bot.richtext import FormattedText, Span, Style
from storage.db import Database
from storage.models import Channel, InboxUpdate, Message
from tests.fakes.telegram import FakeTelegram, TelegramLimits
from tests.harness import start_bot_process

GROUP = -100123
MARIE = 42
PAUL = 43


pytestmark = pytest.mark.usefixtures("ptb_timedelta")


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram(limits=TelegramLimits(window_scale=0.01))
    await server.start()
    server.add_chat(GROUP, title="Quartier Ouest")
    server.add_user(MARIE, "Marie", last_name="Dupont", username="marie59")
    server.add_user(PAUL, "Paul")
    try:
        yield server
    finally:
        await server.stop()


def _settings(fake: FakeTelegram, database_url: str, **extra: object) -> Settings:
    return Settings(
        database_url=database_url,
        telegram_token=SecretStr(fake.token),
        telegram_api_url=fake.url,
        **extra,  # type: ignore[arg-type]
    )


class TelegramForum:
    """The bot wired to the fake Telegram; helpers read like a conversation."""

    def __init__(self, fake: FakeTelegram, app: App, adapter: TelegramAdapter) -> None:
        self.fake = fake
        self.app = app
        self.adapter = adapter

    def sent(self, chat_id: int = GROUP) -> list[dict[str, object]]:
        return self.fake.sent_messages(chat_id, include_deleted=False)

    async def say(self, user_id: int, text: str) -> list[dict[str, object]]:
        """A resident writes; returns what the bot answered (waits for the answer)."""
        before = len(self.sent())
        if text.startswith("/"):
            name, _, args = text[1:].partition(" ")
            update = self.fake.inject_command(GROUP, user_id, name, args)
        else:
            update = self.fake.inject_message(GROUP, user_id, text)
        await self.handled(update)
        async with asyncio.timeout(30):
            await self.app.outbox.drain()
        return self.sent()[before:]

    async def handled(self, update: dict[str, object]) -> None:
        """Wait until the bot has stored and handled ``update``."""
        key = str(update["update_id"])
        async with asyncio.timeout(30):
            while True:
                async with self.app.db.read() as session:
                    row = (
                        await session.execute(
                            sa.select(InboxUpdate.handled_at).where(InboxUpdate.update_key == key)
                        )
                    ).first()
                if row is not None and row[0] is not None:
                    return
                await _next_request(self.fake)


async def _next_request(fake: FakeTelegram) -> None:
    """Wait for the bot's next request to the fake (it polls continuously)."""
    seen = len(fake.requests)
    await fake.wait_for(lambda: len(fake.requests) > seen, timeout=30)


@contextlib.asynccontextmanager
async def _running(fake: FakeTelegram, settings: Settings) -> AsyncIterator[TelegramForum]:
    """The bot on Telegram only, polling the fake with a short long-poll."""
    db = Database(settings.database_url)
    adapter = TelegramAdapter(settings, db, SystemClock(), poll_timeout=1)
    app = build(settings, db=db, clock=SystemClock(), adapters=[adapter], with_scheduler=False)
    await app.start()
    try:
        yield TelegramForum(fake, app, adapter)
    finally:
        await app.stop()


@pytest.fixture
async def forum(fake: FakeTelegram, database_url: str) -> AsyncIterator[TelegramForum]:
    async with _running(fake, _settings(fake, database_url, rate_limit_scale=0.01)) as forum:
        yield forum


async def test_aide_is_answered_in_french_as_a_reply(forum: TelegramForum) -> None:
    answers = await forum.say(MARIE, "/aide")
    assert len(answers) == 1
    answer = answers[0]
    assert str(answer["text"]).startswith("Bonjour ! Je suis le bot du Forum Habitant")
    command = forum.fake.calls("getUpdates")
    assert command
    reply = answer.get("reply_to_message")
    assert isinstance(reply, dict) and reply["text"] == "/aide"
    # Commands are registered in French by default and in English for English clients.
    french = {c["command"]: c["description"] for c in forum.fake.commands()}
    english = {c["command"]: c["description"] for c in forum.fake.commands(language_code="en")}
    assert french["aide"] == "Voir tout ce que le bot sait faire"
    assert english["aide"] == "List what the bot can do"


async def test_a_message_is_stored_with_its_telegram_ids_and_time(forum: TelegramForum) -> None:
    sent_at = int(datetime(2026, 11, 20, 17, 45, tzinfo=UTC).timestamp())
    update = forum.fake.inject_message(GROUP, MARIE, "Réunion du quartier jeudi ?", date=sent_at)
    await forum.handled(update)
    async with forum.app.db.read() as session:
        message, channel = (await session.execute(sa.select(Message, Channel).join(Channel))).one()
    assert (channel.platform, channel.chat_id) == ("telegram", str(GROUP))
    assert message.platform_message_id == str(update["message"]["message_id"])  # type: ignore[index]
    assert message.sent_at == datetime(2026, 11, 20, 17, 45, tzinfo=UTC)
    assert message.text == "Réunion du quartier jeudi ?"


async def test_updates_are_stored_as_telegram_sent_them(forum: TelegramForum) -> None:
    """The inbox keeps Telegram's own JSON (read off the getUpdates answer, not rebuilt from
    PTB's objects), and the message handled from it is the one Telegram sent."""
    update = forum.fake.inject_message(GROUP, MARIE, "Tout le monde est là ?")
    await forum.handled(update)
    async with forum.app.db.read() as session:
        (payload,) = (await session.execute(sa.select(InboxUpdate.payload))).scalars().all()
        (text,) = (await session.execute(sa.select(Message.text))).scalars().all()
    assert payload == json.loads(json.dumps(update))
    assert text == "Tout le monde est là ?"
    # Nothing is kept parsed once handled.
    assert forum.adapter._parsed == {}


NASTY = "a <b> & </b> *gras* _souligné_ `code` ```bloc``` 🎉👩‍👩‍👧 é&amp; <3 && >_<"


async def test_nasty_text_arrives_exactly_as_written(forum: TelegramForum) -> None:
    bold_start = NASTY.index("*gras*")
    content = FormattedText(
        NASTY, (Span(Style.BOLD, bold_start, bold_start + 6), Span(Style.CODE, 0, 1))
    )
    chat = ChatRef("telegram", str(GROUP))
    await forum.app.outbox.submit([SendMessage(chat=chat, content=content)], source_key="nasty")
    async with asyncio.timeout(30):
        await forum.app.outbox.drain()
    (sent,) = forum.sent()
    assert sent["text"] == NASTY
    entities = {(e["type"], e["offset"], e["length"]) for e in sent["entities"]}  # type: ignore[union-attr]
    assert ("bold", bold_start, 6) in entities
    assert ("code", 0, 1) in entities


async def test_resident_entities_survive_into_the_record(forum: TelegramForum) -> None:
    text = "😀 Bonjour *tout* le monde <3"
    entities = [
        {"type": "bold", "offset": 3, "length": 7},
        {"type": "italic", "offset": 11, "length": 6},
    ]
    update = forum.fake.inject_message(GROUP, MARIE, text, entities=entities)
    await forum.handled(update)
    async with forum.app.db.read() as session:
        message = (await session.execute(sa.select(Message))).scalar_one()
    assert message.text == text
    # Offsets are stored in code points: the emoji counts once, not twice as in UTF-16.
    assert {(s["style"], s["start"], s["end"]) for s in message.spans} == {
        ("bold", 2, 9),
        ("italic", 10, 16),
    }


async def test_a_429_storm_and_server_errors_lose_and_double_nothing(forum: TelegramForum) -> None:
    fake = forum.fake
    storm = fake.fail_next("sendMessage", status=429, retry_after=1, count=3)
    bad_gateway = fake.fail_next(
        "sendMessage", status=502, retry_after=None, count=2, raw_body="<html>Bad Gateway</html>"
    )
    fake.drop_next("sendMessage")
    chat = ChatRef("telegram", str(GROUP))
    texts = [f"message {i}" for i in range(12)]
    await forum.app.outbox.submit(
        [SendMessage(chat=chat, content=FormattedText.plain(t)) for t in texts], source_key="storm"
    )
    async with asyncio.timeout(60):
        await forum.app.outbox.drain()
    assert [m["text"] for m in forum.sent()] == texts
    # The injected faults fired (the fake's own per-chat limit may add a 429 of its own).
    assert (storm.fired, bad_gateway.fired) == (3, 2)


async def test_a_429_in_one_chat_does_not_hold_another(forum: TelegramForum) -> None:
    fake = forum.fake
    other = -100999
    fake.add_chat(other, title="Quartier Est")
    fake.fail_next("sendMessage", status=429, retry_after=30)
    slow = ChatRef("telegram", str(GROUP))
    fast = ChatRef("telegram", str(other))
    await forum.app.outbox.submit(
        [SendMessage(chat=slow, content=FormattedText.plain("slow"))], source_key="slow"
    )
    await fake.wait_for(lambda: any(r.status == 429 for r in fake.calls("sendMessage")))
    await forum.app.outbox.submit(
        [SendMessage(chat=fast, content=FormattedText.plain("fast"))], source_key="fast"
    )
    await fake.wait_for(lambda: len(fake.sent_messages(other)) == 1)
    assert fake.sent_messages(GROUP) == []


async def test_telegram_refusing_the_formatting_falls_back_to_plain_text(
    forum: TelegramForum,
) -> None:
    fake = forum.fake
    refused = fake.fail_next(
        "sendMessage",
        status=400,
        retry_after=None,
        description="Bad Request: can't parse entities: unsupported start tag",
    )
    chat = ChatRef("telegram", str(GROUP))
    content = FormattedText("gras et <texte>", (Span(Style.BOLD, 0, 4),))
    await forum.app.outbox.submit([SendMessage(chat=chat, content=content)], source_key="plain")
    async with asyncio.timeout(30):
        await forum.app.outbox.drain()
    (sent,) = forum.sent()
    assert sent["text"] == "gras et <texte>"
    last = fake.calls("sendMessage")[-1]
    assert "parse_mode" not in last.params
    assert refused.fired == 1, "the refusal never fired"


async def test_the_plain_text_fallback_carries_no_live_mention(forum: TelegramForum) -> None:
    fake = forum.fake
    refused = fake.fail_next(
        "sendMessage",
        status=400,
        retry_after=None,
        description="Bad Request: can't parse entities: unsupported start tag",
    )
    chat = ChatRef("telegram", str(GROUP))
    content = FormattedText("@everyone venez @marie_dupont", (Span(Style.BOLD, 0, 9),))
    await forum.app.outbox.submit(
        [SendMessage(chat=chat, content=content, as_name="Paul · Discord")], source_key="m"
    )
    async with asyncio.timeout(30):
        await forum.app.outbox.drain()
    (sent,) = forum.sent()
    assert "parse_mode" not in fake.calls("sendMessage")[-1].params
    assert not [e for e in sent.get("entities", []) if e["type"] in ("mention", "text_mention")]
    assert sent["text"].replace("\u2060", "") == "Paul · Discord\n@everyone venez @marie_dupont"
    assert refused.fired == 1, "the refusal never fired"


async def test_a_long_text_is_split_and_every_part_mapped(forum: TelegramForum) -> None:
    paragraph = "Le conseil de quartier s'est réuni. " * 60
    text = "\n\n".join([paragraph.strip()] * 3)
    chat = ChatRef("telegram", str(GROUP))
    await forum.app.outbox.submit(
        [SendMessage(chat=chat, content=FormattedText.plain(text))], source_key="long"
    )
    async with asyncio.timeout(30):
        await forum.app.outbox.drain()
    parts = forum.sent()
    assert len(parts) >= 2
    assert all(len(str(p["text"])) <= 4096 for p in parts)
    assert "".join(str(p["text"]) for p in parts).replace("\n", "").replace(
        " ", ""
    ) == text.replace("\n", "").replace(" ", "")


@pytest.fixture
async def moderated(fake: FakeTelegram, sqlite_url: str) -> AsyncIterator[TelegramForum]:
    settings = _settings(fake, sqlite_url, roles=RolesConfig(moderators=["telegram:7"]))
    async with _running(fake, settings) as forum:
        yield forum


async def test_admin_rights_are_checked_in_the_chat_at_the_time(moderated: TelegramForum) -> None:
    fake = moderated.fake
    fake.set_member_status(GROUP, PAUL, "member")
    (refused,) = await moderated.say(PAUL, "/statut")
    assert refused["text"] == "Seuls les modérateurs peuvent utiliser /statut."
    fake.set_member_status(GROUP, PAUL, "administrator")
    (allowed,) = await moderated.say(PAUL, "/statut")
    assert str(allowed["text"]).startswith("État des envois")
    # Demoted a moment later: no stale cache lets him in.
    fake.set_member_status(GROUP, PAUL, "member")
    (again,) = await moderated.say(PAUL, "/statut")
    assert again["text"] == "Seuls les modérateurs peuvent utiliser /statut."


async def test_anonymous_admins_and_channels(moderated: TelegramForum) -> None:
    fake = moderated.fake
    group_chat = {"id": GROUP, "type": "supergroup", "title": "Quartier Ouest"}
    update = fake.inject_message(
        GROUP,
        PAUL,
        "/statut",
        sender_chat=group_chat,
        entities=[{"type": "bot_command", "offset": 0, "length": 7}],
    )
    await moderated.handled(update)
    async with asyncio.timeout(30):
        await moderated.app.outbox.drain()
    # Allowed: the status answer (nothing has been sent yet at this point).
    assert moderated.sent()[-1]["text"] == "Rien n'a encore été envoyé."
    channel = {"id": -100777, "type": "channel", "title": "Mairie officielle"}
    update = fake.inject_message(
        GROUP,
        PAUL,
        "/statut",
        sender_chat=channel,
        entities=[{"type": "bot_command", "offset": 0, "length": 7}],
    )
    await moderated.handled(update)
    async with asyncio.timeout(30):
        await moderated.app.outbox.drain()
    assert moderated.sent()[-1]["text"] == "Seuls les modérateurs peuvent utiliser /statut."


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_webhook_mode_refuses_a_bad_secret_and_stores_nothing(
    fake: FakeTelegram, sqlite_url: str
) -> None:
    port = _free_port()
    settings = _settings(
        fake,
        sqlite_url,
        telegram_mode="webhook",
        telegram_webhook_url=f"http://127.0.0.1:{port}/telegram",
        telegram_webhook_port=port,
        telegram_webhook_secret=SecretStr("s3cret-webhook-value"),
    )
    db = Database(settings.database_url)
    adapter = TelegramAdapter(settings, db, SystemClock())
    app = build(settings, db=db, clock=SystemClock(), adapters=[adapter], with_scheduler=False)
    await app.start()
    try:
        assert fake.webhook_url == f"http://127.0.0.1:{port}/telegram"
        forged = {
            "update_id": 999,
            "message": {
                "message_id": 1,
                "date": 0,
                "chat": {"id": GROUP, "type": "supergroup"},
                "text": "/aide",
            },
        }
        async with aiohttp.ClientSession() as client:
            for headers in ({"X-Telegram-Bot-Api-Secret-Token": "wrong"}, {}):
                async with client.post(
                    f"http://127.0.0.1:{port}/telegram", json=forged, headers=headers
                ) as response:
                    assert response.status == 403
        async with db.read() as session:
            assert (
                await session.execute(sa.select(sa.func.count()).select_from(InboxUpdate))
            ).scalar_one() == 0
        # The real thing, pushed by the fake with the right secret, is stored and answered.
        fake.inject_command(GROUP, MARIE, "aide")
        await fake.wait_for(lambda: len(fake.sent_messages(GROUP)) == 1, timeout=30)
        assert all(d.status == 200 for d in fake.webhook_deliveries)
    finally:
        await app.stop()


@pytest.mark.timeout(300)
async def test_sigkill_in_the_middle_of_200_updates_handles_each_once(
    fake: FakeTelegram, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'forum.db'}"
    environment = {
        **{k: v for k, v in os.environ.items() if not k.endswith("_TOKEN")},
        "TELEGRAM_TOKEN": fake.token,
        "TELEGRAM_API_URL": fake.url,
        "DATABASE_URL": url,
        "PTB_TIMEDELTA": "true",
    }
    commands = set()
    for i in range(200):
        if i % 10 == 0:
            commands.add(fake.inject_command(GROUP, MARIE if i % 20 else PAUL, "aide")["update_id"])
        else:
            fake.inject_message(GROUP, MARIE if i % 2 else PAUL, f"message {i}")

    def start(log: str) -> subprocess.Popen[bytes]:
        return start_bot_process(environment, tmp_path, log)

    first = start("first.log")
    try:
        # Kill as soon as the bot is visibly mid-batch: some answers sent, not all.
        await fake.wait_for(lambda: len(fake.sent_messages(GROUP)) >= 3, timeout=60)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    answered_before_restart = len(fake.sent_messages(GROUP))
    assert answered_before_restart < len(commands), "the kill came too late to prove anything"

    second = start("second.log")
    try:
        # Every command answered (a count of answers would be met early by the one repeat
        # a kill may cause).
        await fake.wait_for(
            lambda: (
                len({m["reply_to_message"]["message_id"] for m in fake.sent_messages(GROUP)})  # type: ignore[index]
                >= len(commands)
            ),
            timeout=120,
        )
        db = Database(url)
        try:
            async with asyncio.timeout(60):
                while True:
                    async with db.read() as session:
                        pending = (
                            await session.execute(
                                sa.select(sa.func.count())
                                .select_from(InboxUpdate)
                                .where(InboxUpdate.handled_at.is_(None))
                            )
                        ).scalar_one()  # type: ignore[union-attr]
                        stored = (
                            await session.execute(sa.select(sa.func.count()).select_from(Message))
                        ).scalar_one()
                        total = (
                            await session.execute(
                                sa.select(sa.func.count()).select_from(InboxUpdate)
                            )
                        ).scalar_one()
                    if pending == 0 and total == 200:
                        break
                    await _next_request(fake)
        finally:
            await db.dispose()
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)
    assert stored == 180
    replies = [m["reply_to_message"]["message_id"] for m in fake.sent_messages(GROUP)]  # type: ignore[index]
    # Every command answered; at most one answer repeated, for the one kill.
    assert len(set(replies)) == len(commands)
    assert len(replies) - len(set(replies)) <= 1
    assert second.returncode == 0, (tmp_path / "second.log").read_text()


async def test_chats_not_served_are_ignored(fake: FakeTelegram, sqlite_url: str) -> None:
    from bot.config import ChannelConfig

    other = -100555
    fake.add_chat(other, title="Un autre groupe")
    settings = _settings(
        fake, sqlite_url, channels=[ChannelConfig(platform="telegram", id=str(GROUP))]
    )
    async with _running(fake, settings) as forum:
        ignored = fake.inject_command(other, MARIE, "aide")
        await forum.handled(ignored)
        answered = await forum.say(MARIE, "/aide")
    assert fake.sent_messages(other) == []
    assert len(answered) == 1


# -- downloading residents' files ------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FileHost:
    """The fake Telegram, with files whose announced size and body a test makes up."""

    def __init__(self, fake: FakeTelegram, adapter: TelegramAdapter) -> None:
        self.fake = fake
        self.adapter = adapter
        self.routes: dict[str, Handler] = {}
        self.announced: dict[str, tuple[str, int | None]] = {}

    def serve(self, path: str, handler: Handler, *, declared: int | None) -> Attachment:
        """Telegram announces ``path`` with ``declared`` bytes (None: no size) and serves it
        with ``handler``; the resident's attachment declares no size either."""
        file_id = f"id-{len(self.announced)}"
        self.announced[file_id] = (path, declared)
        self.routes[path] = handler
        return Attachment("document", file_id, "rapport.pdf", "application/pdf")


@pytest.fixture
async def files(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> AsyncIterator[FileHost]:
    server = FakeTelegram(limits=TelegramLimits(window_scale=0.01))
    stored_file = server._handle_download
    stored_info = server._handlers["getfile"]
    host: FileHost

    async def download(request: web.Request) -> web.StreamResponse:
        handler = host.routes.get(request.match_info["file_path"], stored_file)
        return await handler(request)

    async def get_file(params: dict[str, Any], uploads: dict[str, Any]) -> Any:
        file_id = str(params.get("file_id"))
        if file_id not in host.announced:
            return await stored_info(params, uploads)
        path, declared = host.announced[file_id]
        info = {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_path": path}
        return info if declared is None else {**info, "file_size": declared}

    # The file route is bound when the server starts: replaced before it does.
    monkeypatch.setattr(server, "_handle_download", download)
    monkeypatch.setitem(server._handlers, "getfile", get_file)
    await server.start()
    server.add_chat(GROUP, title="Quartier Ouest")
    server.add_user(MARIE, "Marie")
    settings = _settings(server, sqlite_url)
    adapter = TelegramAdapter(settings, Database(settings.database_url), SystemClock())
    host = FileHost(server, adapter)
    await adapter.application.initialize()
    try:
        yield host
    finally:
        await adapter.application.shutdown()
        await adapter.db.dispose()
        await server.stop()


async def _endless(request: web.Request) -> web.StreamResponse:
    """A body that never ends (and declares no length): only a cap stops the reader."""
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    await response.prepare(request)
    chunk = b"\0" * 65536
    with contextlib.suppress(ConnectionError):
        while True:
            await response.write(chunk)
    return response


@pytest.mark.parametrize("declared", [None, 1000], ids=["no size", "a size that lies"])
async def test_a_download_stops_at_the_limit_whatever_size_telegram_announces(
    files: FileHost, declared: int | None
) -> None:
    attachment = files.serve("documents/endless.bin", _endless, declared=declared)
    async with asyncio.timeout(10):
        assert await files.adapter.download(attachment, 200_000) is None


async def test_a_file_within_the_limit_is_downloaded(files: FileHost) -> None:
    data = os.urandom(150_000)
    update = files.fake.inject_document(GROUP, MARIE, data, filename="plan.pdf")
    file_id = update["message"]["document"]["file_id"]
    attachment = Attachment("document", file_id, "plan.pdf", "application/pdf")
    async with asyncio.timeout(10):
        assert await files.adapter.download(attachment, 150_000) == data
        assert await files.adapter.download(attachment, 149_999) is None


async def test_a_download_follows_redirects_only_on_the_api_host(files: FileHost) -> None:
    elsewhere: list[str] = []

    async def record(request: web.Request) -> web.Response:
        elsewhere.append(request.path)
        return web.Response(body=b"not from Telegram")

    app = web.Application()
    app.router.add_get("/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    other = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:

        async def moved_away(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(f"{other}/stolen.bin")

        async def moved_here(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(f"/file/bot{files.fake.token}/documents/final.bin")

        async def final(request: web.Request) -> web.StreamResponse:
            return web.Response(body=b"le fichier")

        away = files.serve("documents/away.bin", moved_away, declared=None)
        here = files.serve("documents/here.bin", moved_here, declared=None)
        files.routes["documents/final.bin"] = final
        async with asyncio.timeout(10):
            assert await files.adapter.download(away, 1000) is None
            assert await files.adapter.download(here, 1000) == b"le fichier"
        assert elsewhere == []
    finally:
        await runner.cleanup()
