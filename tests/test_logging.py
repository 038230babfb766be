"""No log line ever carries a token, whoever logs it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from aiohttp import web

from bot.logs import REDACTED, setup_logging

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
