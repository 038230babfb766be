"""The fakes' rate limits themselves, through plain HTTP (aiohttp), with a manual clock.

The real clients are driven against these limits elsewhere (test_fake_discord, test_discord,
test_bridge...); here each limit is checked where it is defined: which requests share a
bucket, what the headers say, what a 429 looks like, when the window frees up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fakes.discord import DiscordLimits, FakeDiscord
from tests.fakes.telegram import FakeTelegram, TelegramLimits

TOKEN = "TEST.discord.token"
AUTH = {"Authorization": f"Bot {TOKEN}"}
GENERAL = 1100
OTHER = 1101
GROUP = -1001234567890
ALICE = 1001


class ManualClock:
    """A clock the test moves by hand, so windows free up without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _discord(clock: ManualClock, limits: DiscordLimits | None = None) -> FakeDiscord:
    fake = FakeDiscord(bot_token=TOKEN, limits=limits, clock=clock)
    fake.add_channel(GENERAL, "général")
    fake.add_channel(OTHER, "entraide")
    await fake.start()
    return fake


async def _call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    json: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    async with http.request(method, url, json=json, headers=headers) as response:
        if response.headers.get("Content-Type") == "application/json":
            body: Any = await response.json()
        else:
            body = await response.text()
        return response.status, body, dict(response.headers)


# --------------------------------------------------------------------------------------------
# Discord: per-route buckets
# --------------------------------------------------------------------------------------------


async def test_channel_sends_are_five_per_five_seconds_per_channel(
    clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    fake = await _discord(clock)
    try:
        url = f"{fake.api_url}/channels/{GENERAL}/messages"
        buckets = set()
        for remaining in (4, 3, 2, 1, 0):
            status, _, headers = await _call(http, "POST", url, json={"content": "x"}, headers=AUTH)
            assert status == 200
            assert headers["X-RateLimit-Limit"] == "5"
            assert headers["X-RateLimit-Remaining"] == str(remaining)
            assert float(headers["X-RateLimit-Reset-After"]) == 5.0  # the clock stands still
            assert float(headers["X-RateLimit-Reset"]) > 1_000_000_000  # epoch seconds
            buckets.add(headers["X-RateLimit-Bucket"])
        assert len(buckets) == 1

        status, body, headers = await _call(http, "POST", url, json={"content": "x"}, headers=AUTH)
        assert status == 429
        assert body == {
            "message": "You are being rate limited.",
            "retry_after": 5.0,
            "global": False,
            "code": 0,
        }
        assert headers["Retry-After"] == "5"
        assert headers["X-RateLimit-Scope"] == "user"
        assert headers["X-RateLimit-Remaining"] == "0"
        assert headers["Via"]  # without it discord.py would take it for a Cloudflare ban
        assert "X-RateLimit-Global" not in headers
        assert len(fake.channel_messages(GENERAL)) == 5  # the refused send did nothing

        # Another channel is another top-level resource: its own window, the same bucket name.
        other = f"{fake.api_url}/channels/{OTHER}/messages"
        status, _, headers = await _call(http, "POST", other, json={"content": "y"}, headers=AUTH)
        assert status == 200
        assert headers["X-RateLimit-Remaining"] == "4"
        assert headers["X-RateLimit-Bucket"] in buckets

        # Reads of the same channel are another route with their own, looser bucket.
        status, _, headers = await _call(http, "GET", url, headers=AUTH)
        assert status == 200
        assert headers["X-RateLimit-Bucket"] not in buckets

        clock.now += 4.9
        status, body, _ = await _call(http, "POST", url, json={"content": "x"}, headers=AUTH)
        assert status == 429
        assert body["retry_after"] == pytest.approx(0.1)
        clock.now += 0.1
        status, _, headers = await _call(http, "POST", url, json={"content": "x"}, headers=AUTH)
        assert status == 200
        assert headers["X-RateLimit-Remaining"] == "4"
    finally:
        await fake.stop()


async def _webhook(fake: FakeDiscord, http: aiohttp.ClientSession, channel: int) -> str:
    url = f"{fake.api_url}/channels/{channel}/webhooks"
    status, hook, _ = await _call(http, "POST", url, json={"name": "relais"}, headers=AUTH)
    assert status == 200
    return f"{fake.api_url}/webhooks/{hook['id']}/{hook['token']}"


async def test_webhook_executes_per_webhook_and_per_channel(
    clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    fake = await _discord(clock)
    try:
        hooks = [await _webhook(fake, http, GENERAL) for _ in range(7)]
        first = hooks[0]
        for remaining in (4, 3, 2, 1, 0):
            status, _, headers = await _call(http, "POST", first, json={"content": "x"})
            assert status == 204
            assert headers["X-RateLimit-Limit"] == "5"
            assert headers["X-RateLimit-Remaining"] == str(remaining)
            assert float(headers["X-RateLimit-Reset-After"]) == 2.0
        status, body, headers = await _call(http, "POST", first, json={"content": "x"})
        assert (status, body["retry_after"], body["global"]) == (429, 2.0, False)
        assert headers["X-RateLimit-Scope"] == "user"
        invalid = fake.invalid_request_count
        assert invalid == 1

        # Six webhooks of one channel: thirty executes fill the channel's minute...
        for hook in hooks[1:6]:
            for _ in range(5):
                status, _, _ = await _call(http, "POST", hook, json={"content": "x"})
                assert status == 204
        assert len(fake.channel_messages(GENERAL)) == 30
        # ... so the seventh webhook, fresh as it is, gets a shared 429 that its own headers
        # did not announce, and that is not held against the client.
        status, body, headers = await _call(http, "POST", hooks[6], json={"content": "x"})
        assert status == 429
        assert body["retry_after"] == 60.0
        assert headers["X-RateLimit-Scope"] == "shared"
        assert headers["X-RateLimit-Remaining"] == "5"
        assert fake.invalid_request_count == invalid

        # A webhook of another channel is not concerned.
        elsewhere = await _webhook(fake, http, OTHER)
        status, _, _ = await _call(http, "POST", elsewhere, json={"content": "x"})
        assert status == 204

        clock.now += 60
        status, _, _ = await _call(http, "POST", hooks[6], json={"content": "x"})
        assert status == 204
    finally:
        await fake.stop()


async def test_window_scale_shortens_every_window(
    clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    fake = await _discord(clock, DiscordLimits(window_scale=0.01))
    try:
        url = f"{fake.api_url}/channels/{GENERAL}/messages"
        for _ in range(5):
            await _call(http, "POST", url, json={"content": "x"}, headers=AUTH)
        status, body, headers = await _call(http, "POST", url, json={"content": "x"}, headers=AUTH)
        assert status == 429
        assert body["retry_after"] == pytest.approx(0.05)
        assert float(headers["X-RateLimit-Reset-After"]) == pytest.approx(0.05)
        assert headers["Retry-After"] == "1"  # the header is whole seconds, at least 1
        clock.now += 0.05
        status, _, _ = await _call(http, "POST", url, json={"content": "x"}, headers=AUTH)
        assert status == 200
    finally:
        await fake.stop()


async def test_limits_can_be_switched_off(clock: ManualClock, http: aiohttp.ClientSession) -> None:
    fake = await _discord(clock, DiscordLimits(enforce=False, invalid_requests=1))
    try:
        url = f"{fake.api_url}/channels/{GENERAL}/messages"
        for _ in range(20):
            status, _, headers = await _call(http, "POST", url, json={"content": "x"}, headers=AUTH)
            assert status == 200
            assert "X-RateLimit-Bucket" in headers  # still there, never running out
        status, _, _ = await _call(http, "GET", f"{fake.api_url}/users/@me")
        assert status == 401
        assert not fake.banned
    finally:
        await fake.stop()


# --------------------------------------------------------------------------------------------
# Discord: global limit
# --------------------------------------------------------------------------------------------


async def test_global_limit_spans_routes_but_not_interactions(
    clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    fake = await _discord(clock)
    try:
        hook = await _webhook(fake, http, GENERAL)
        clock.now += 1.0  # a fresh global second
        # Fifty requests to five different routes and resources, all in the same second.
        urls = [
            f"{fake.api_url}/users/@me",
            f"{fake.api_url}/channels/{GENERAL}",
            f"{fake.api_url}/channels/{OTHER}",
            f"{fake.api_url}/guilds/{fake.guild_id}",
            f"{fake.api_url}/guilds/{fake.guild_id}/channels",
        ]
        for i in range(50):
            status, _, _ = await _call(http, "GET", urls[i % 5], headers=AUTH)
            assert status == 200
        status, body, headers = await _call(http, "GET", urls[0], headers=AUTH)
        assert status == 429
        assert body == {
            "message": "You are being rate limited.",
            "retry_after": 1.0,
            "global": True,
            "code": 0,
        }
        assert headers["X-RateLimit-Global"] == "true"
        assert headers["X-RateLimit-Scope"] == "global"
        assert headers["Retry-After"] == "1"
        assert headers["Via"]

        # Interaction endpoints are not bound to the global limit: this unknown interaction
        # reaches its route and is refused there, not by the limit.
        callback = f"{fake.api_url}/interactions/1/unknown/callback"
        status, body, _ = await _call(http, "POST", callback, json={"type": 1})
        assert (status, body["code"]) == (404, 10062)
        # A webhook executed by URL carries no bot token: not the bot's global budget.
        status, _, _ = await _call(http, "POST", hook, json={"content": "x"})
        assert status == 204

        clock.now += 1.0
        status, _, _ = await _call(http, "GET", urls[0], headers=AUTH)
        assert status == 200
    finally:
        await fake.stop()


# --------------------------------------------------------------------------------------------
# Discord: invalid requests and the Cloudflare ban
# --------------------------------------------------------------------------------------------


async def test_too_many_invalid_requests_get_the_client_banned(
    clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    fake = await _discord(clock, DiscordLimits(invalid_requests=5))
    try:
        me = f"{fake.api_url}/users/@me"
        for _ in range(3):
            status, _, _ = await _call(http, "GET", me)  # no token: 401
            assert status == 401
        # An injected 429 counts like a real one.
        fault = fake.fail_next("GET", "/users/@me", status=429, retry_after=0.5)
        status, _, _ = await _call(http, "GET", me, headers=AUTH)
        assert (status, fault.fired) == (429, 1)
        assert fake.invalid_request_count == 4
        assert not fake.banned

        # Old invalid requests leave the ten-minute window.
        clock.now += 600
        assert fake.invalid_request_count == 0
        for _ in range(4):
            await _call(http, "GET", me)
        assert not fake.banned
        await _call(http, "GET", me)
        assert fake.banned

        # Now everything is refused, even a valid request, by Cloudflare rather than Discord.
        status, body, headers = await _call(http, "GET", me, headers=AUTH)
        assert status == 429
        assert body == "error code: 1015"
        assert "Via" not in headers
        assert not any(name.startswith("X-RateLimit") for name in headers)
        assert int(headers["Retry-After"]) == 3600
        hook_status, _, _ = await _call(
            http, "POST", f"{fake.api_url}/channels/{GENERAL}/messages", json={"content": "x"}
        )
        assert hook_status == 429

        clock.now += 3600
        status, _, _ = await _call(http, "GET", me, headers=AUTH)
        assert status == 200
    finally:
        await fake.stop()


# --------------------------------------------------------------------------------------------
# Telegram
# --------------------------------------------------------------------------------------------


async def _telegram(clock: ManualClock, limits: TelegramLimits | None = None) -> FakeTelegram:
    fake = FakeTelegram(limits=limits, clock=clock)
    fake.add_chat(GROUP, title="Quartier Ouest")
    fake.add_chat(ALICE, type="private")
    fake.add_user(ALICE, "Alice")
    await fake.start()
    return fake


async def _bot_api(
    http: aiohttp.ClientSession, fake: FakeTelegram, method: str, **params: Any
) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{fake.url}/bot{fake.token}/{method}", json=params) as response:
        return response.status, await response.json()


def _flood(retry_after: float) -> dict[str, Any]:
    return {
        "ok": False,
        "error_code": 429,
        "description": f"Too Many Requests: retry after {retry_after}",
        "parameters": {"retry_after": retry_after},
    }


async def test_telegram_per_chat_burst_then_one_a_second(
    clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    fake = await _telegram(clock)
    try:
        for i in range(3):  # a short burst is allowed
            status, _ = await _bot_api(http, fake, "sendMessage", chat_id=ALICE, text=f"m{i}")
            assert status == 200
        status, body = await _bot_api(http, fake, "sendMessage", chat_id=ALICE, text="trop")
        assert (status, body) == (429, _flood(1))
        # The group is another chat, with its own burst.
        status, _ = await _bot_api(http, fake, "sendMessage", chat_id=GROUP, text="ailleurs")
        assert status == 200
        # Then about one a second.
        clock.now += 1.0
        status, _ = await _bot_api(http, fake, "sendMessage", chat_id=ALICE, text="m3")
        assert status == 200
        status, _ = await _bot_api(http, fake, "sendMessage", chat_id=ALICE, text="trop")
        assert status == 429
        clock.now += 0.5
        status, body = await _bot_api(http, fake, "sendMessage", chat_id=ALICE, text="trop")
        assert (status, body) == (429, _flood(1))  # ceil(0.5)
        clock.now += 0.5
        status, _ = await _bot_api(http, fake, "sendMessage", chat_id=ALICE, text="m4")
        assert status == 200
        assert len(fake.sent_messages(ALICE)) == 5
    finally:
        await fake.stop()


async def test_telegram_retry_after_is_whole_seconds_scaled(
    clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    fake = await _telegram(clock, TelegramLimits(window_scale=0.01))
    try:
        for i in range(3):
            await _bot_api(http, fake, "sendMessage", chat_id=ALICE, text=f"m{i}")
        status, body = await _bot_api(http, fake, "sendMessage", chat_id=ALICE, text="trop")
        # One whole Telegram second, scaled: 10 ms, a float.
        assert (status, body) == (429, _flood(0.01))
        clock.now += 0.01
        status, _ = await _bot_api(http, fake, "sendMessage", chat_id=ALICE, text="m3")
        assert status == 200
    finally:
        await fake.stop()


async def test_telegram_edits_have_their_own_flood_limits(
    clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    fake = await _telegram(clock)
    try:
        status, body = await _bot_api(http, fake, "sendMessage", chat_id=ALICE, text="v0")
        message_id = body["result"]["message_id"]
        for i in range(1, 4):
            status, _ = await _bot_api(
                http, fake, "editMessageText", chat_id=ALICE, message_id=message_id, text=f"v{i}"
            )
            assert status == 200
        status, body = await _bot_api(
            http, fake, "editMessageText", chat_id=ALICE, message_id=message_id, text="v4"
        )
        assert (status, body) == (429, _flood(1))
        assert fake.message(ALICE, message_id)["text"] == "v3"  # the refused edit did nothing
        # Edits do not use the sending budget, nor sends the editing one.
        status, _ = await _bot_api(http, fake, "sendMessage", chat_id=ALICE, text="nouveau")
        assert status == 200
        clock.now += 1.0
        status, _ = await _bot_api(
            http, fake, "editMessageText", chat_id=ALICE, message_id=message_id, text="v4"
        )
        assert status == 200
    finally:
        await fake.stop()


async def test_telegram_group_edits_are_twenty_a_minute(
    clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    limits = TelegramLimits(edit_burst=100, edits_per_chat_per_second=100)
    fake = await _telegram(clock, limits)
    try:
        _, body = await _bot_api(http, fake, "sendMessage", chat_id=GROUP, text="v0")
        message_id = body["result"]["message_id"]
        for i in range(1, 21):
            clock.now += 1.0
            status, _ = await _bot_api(
                http, fake, "editMessageText", chat_id=GROUP, message_id=message_id, text=f"v{i}"
            )
            assert status == 200
        status, body = await _bot_api(
            http, fake, "editMessageText", chat_id=GROUP, message_id=message_id, text="v21"
        )
        # The first of the twenty edits leaves the minute 41 s from now.
        assert (status, body) == (429, _flood(41))
        clock.now += 41
        status, _ = await _bot_api(
            http, fake, "editMessageText", chat_id=GROUP, message_id=message_id, text="v21"
        )
        assert status == 200
    finally:
        await fake.stop()
