"""No log line ever carries a token, whoever logs it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from aiohttp import web

from bot.events import Author, ChatRef
from bot.logs import REDACTED, setup_logging
from bot.richtext import FormattedText
from storage.db import Database
from storage.models import Account, utcnow
from storage.repository import ensure_account, ensure_channel, store_message

TELEGRAM_TOKEN = "7012345678:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw9"
DISCORD_TOKEN = "MTA4NzY1NDMyMTA5ODc2NTQzMg.GhTz9Q.abcdefghijklmnopqrstuvwxyz012345"
WEBHOOK = "https://discord.com/api/webhooks/123456789/abcdefghijklmnopqrstuvwxyz_ABCDEFGH-123"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = setup_logging("DEBUG", secrets=[TELEGRAM_TOKEN, DISCORD_TOKEN], stream=stream)
    try:
        yield stream
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(logging.WARNING)


async def test_httpx_request_lines_do_not_carry_the_bot_token(
    captured: io.StringIO, aiohttp_server_url: str
) -> None:
    # httpx (python-telegram-bot's transport) logs every request URL at INFO.
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{aiohttp_server_url}/bot{TELEGRAM_TOKEN}/getMe")
    assert response.status_code == 200
    output = captured.getvalue()
    assert "HTTP Request: POST" in output
    assert TELEGRAM_TOKEN not in output
    assert f"/bot{REDACTED}/getMe" in output


def test_tracebacks_and_arguments_are_scrubbed(captured: io.StringIO) -> None:
    log = logging.getLogger("forum.test")
    try:
        raise RuntimeError(f"could not reach {WEBHOOK} with {DISCORD_TOKEN}")
    except RuntimeError:
        log.exception("delivery failed for %s", WEBHOOK)
    output = captured.getvalue()
    assert DISCORD_TOKEN not in output
    assert "abcdefghijklmnopqrstuvwxyz_ABCDEFGH-123" not in output
    assert "/webhooks/123456789/[secret]" in output


def test_unknown_tokens_are_caught_by_shape() -> None:
    stream = io.StringIO()
    handler = setup_logging("INFO", stream=stream, as_json=True)
    try:
        other = "5550001111:BBHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw9"
        logging.getLogger("forum.test").info("calling /bot%s/sendMessage", other, extra={"chat": 5})
    finally:
        logging.getLogger().removeHandler(handler)
    record = json.loads(stream.getvalue())
    assert record["message"] == "calling /bot[secret]/sendMessage"
    assert record["chat"] == 5


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("postgresql+asyncpg://forum:s3cr3t-Passw0rd@db.example:5432/forum", "s3cr3t-Passw0rd"),
        ("postgresql://forum:p%40ss%3Aw0rd@127.0.0.1/forum?sslmode=require", "p%40ss%3Aw0rd"),
        ("postgres://:onlyApassword@db/forum", "onlyApassword"),
        # Not encoded as it should be, and still not shown.
        ("postgresql://forum:pa:ss@w0rd@db.example/forum", "pa:ss@w0rd"),
    ],
)
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_database_password_is_scrubbed_wherever_it_shows(
    url: str, password: str, as_json: bool
) -> None:
    stream = io.StringIO()
    # Not among the known secrets: caught by its place in the URL.
    handler = setup_logging("INFO", stream=stream, as_json=as_json)
    log = logging.getLogger("forum.test")
    try:
        log.info("connecting to %s", url)

        def connect() -> None:
            raise ConnectionError(f"could not connect to {url}")

        try:
            connect()
        except ConnectionError as exc:
            try:
                raise RuntimeError("start-up failed") from exc
            except RuntimeError:
                log.exception("database unreachable at %s", url)
    finally:
        logging.getLogger().removeHandler(handler)
    output = stream.getvalue()
    assert password not in output
    assert "Traceback" in output and "could not connect to" in output
    user = url.split("://")[1].split(":")[0]
    assert f"://{user}:{REDACTED}@" in output


# What a resident wrote, which a database error must never put in the log.
WORDS = "Le code de la porte du local associatif est 4512B, ne le dites à personne"


@pytest.mark.parametrize("fault", ["unknown author", "no author"])
async def test_a_database_error_logs_the_statement_not_the_residents_words(
    db: Database, captured: io.StringIO, fault: str
) -> None:
    now = utcnow()
    async with db.write() as session:
        channel = await ensure_channel(session, ChatRef("telegram", "-100123"))
        author = Author(platform="telegram", user_id="42", display_name="Marie")
        await ensure_account(session, author, now)
    # A foreign key pointing nowhere; a missing value (PostgreSQL's error then quotes the row).
    stranger = Account(
        id=None if fault == "no author" else 999_999,
        person_id=1,
        platform="telegram",
        platform_user_id="43",
        display_name="?",
    )
    with pytest.raises(sa.exc.DBAPIError) as raised:
        async with db.write() as session:
            store_message(
                session,
                channel_id=channel.id,
                account_id=stranger.id,
                platform_message_id="77",
                content=FormattedText.plain(WORDS),
                sent_at=now,
                received_at=now,
            )
    assert isinstance(raised.value, sa.exc.IntegrityError)
    try:
        raise raised.value
    except sa.exc.DBAPIError:
        # As the dispatcher logs a failed update, and keeps it as the update's last error.
        logging.getLogger("bot.dispatcher").exception("handler failed")
    kept = f"{type(raised.value).__name__}: {raised.value}"
    output = captured.getvalue()
    assert "INSERT INTO message" in output, output
    assert WORDS not in output and "4512B" not in output, output
    assert WORDS not in kept


@pytest.fixture
async def aiohttp_server_url() -> object:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
