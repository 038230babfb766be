"""Kills at named fault points, not by timing: every run exercises every path.

The bot runs as its own process against both fakes with ``FORUM_FAULTS`` naming where it
must kill itself (bot/faults.py). Each test asserts that its fault fired, then restarts the
bot and checks that every message crossed exactly once — or, on Telegram, which cannot tell
whether a post landed before the kill, that at most one message was doubled.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.fakes.discord import FakeDiscord
from tests.fakes.telegram import FakeTelegram
from tests.harness import GENERAL, GROUP, start_bot_process
from tests.test_bridge import MARIE_TG, PAUL_DC, fakes

__all__ = ["fakes"]

pytestmark = [
    pytest.mark.usefixtures("ptb_timedelta"),
    # Two bot processes and both fakes per test, on two cores.
    pytest.mark.timeout(300),
]

MARKER = re.compile(r"(tg|dc)-(\d+)\.")


def _environment(
    telegram: FakeTelegram, discord: FakeDiscord, tmp_path: Path, database_url: str
) -> dict[str, str]:
    (tmp_path / "forum.toml").write_text(
        f'[[bridges]]\ntelegram = "{GROUP}"\ndiscord = "{GENERAL}"\n', encoding="utf-8"
    )
    return {
        **{k: v for k, v in os.environ.items() if not k.endswith("_TOKEN")},
        "TELEGRAM_TOKEN": telegram.token,
        "TELEGRAM_API_URL": telegram.url,
        "DISCORD_TOKEN": "TEST.discord.token",
        "DISCORD_API_URL": discord.api_url,
        "DISCORD_GUILD_IDS": "1000",
        "DATABASE_URL": database_url,
        "FORUM_CONFIG": str(tmp_path / "forum.toml"),
        "RATE_LIMIT_SCALE": "0.01",
        "PTB_TIMEDELTA": "true",
    }


def _markers(texts: list[str], side: str) -> list[int]:
    return [int(n) for text in texts for s, n in MARKER.findall(text) if s == side]


def _stop(process: subprocess.Popen[bytes], sig: int) -> None:
    if process.poll() is None:
        process.send_signal(sig)
    process.wait(60)


@pytest.mark.parametrize("direction", ["to_discord", "to_telegram"])
@pytest.mark.parametrize(
    ("point", "count", "burst"),
    [
        # The platform is never called: nothing may be doubled anywhere. (At the third
        # call: Telegram's per-chat burst lets three posts out before a backlog is merged
        # into one, so a later call might never come.)
        ("before_platform_call", 3, 20),
        # The platform posted, the database did not hear of it.
        ("after_platform_call", 3, 20),
        # Inside a merged post: which messages it carries is already written.
        ("in_merged_post", 1, 80),
    ],
)
async def test_a_kill_at_a_fault_point_loses_nothing_and_doubles_at_most_one_message(
    fakes: tuple[FakeTelegram, FakeDiscord],
    tmp_path: Path,
    database_url: str,
    point: str,
    count: int,
    burst: int,
    direction: str,
) -> None:
    telegram, discord = fakes
    environment = _environment(telegram, discord, tmp_path, database_url)
    side = "tg" if direction == "to_discord" else "dc"

    def arrived() -> list[str]:
        if direction == "to_discord":
            return [m["content"] for m in discord.channel_messages(GENERAL) if m.get("webhook_id")]
        return [
            str(m.get("text", "")) for m in telegram.sent_messages(GROUP, include_deleted=False)
        ]

    first = start_bot_process(
        {**environment, "FORUM_FAULTS": f"{point}:{count}"}, tmp_path, "1.log"
    )
    try:
        await discord.wait_for(lambda: discord.connected_sessions >= 1, timeout=60)
        # Polling has begun (the first long poll need not have been answered).
        await telegram.wait_for(lambda: bool(telegram.calls("getUpdates")), timeout=60)
        for i in range(burst):
            if direction == "to_discord":
                telegram.inject_message(GROUP, MARIE_TG, f"tg-{i}.")
            else:
                discord.inject_message(GENERAL, PAUL_DC, f"dc-{i}.")
        # The process kills itself at the fault point; it must not end any other way.
        await asyncio.to_thread(first.wait, 120)
    finally:
        _stop(first, signal.SIGKILL)
    log = (tmp_path / "1.log").read_text(encoding="utf-8", errors="replace")
    assert f"FAULT {point}" in log, f"the fault {point} never fired:\n{log[-3000:]}"
    assert first.returncode == -signal.SIGKILL
    before = set(_markers(arrived(), side))
    assert len(before) < burst, "everything crossed before the kill: nothing was tried"

    second = start_bot_process(environment, tmp_path, "2.log")
    destination = discord if direction == "to_discord" else telegram
    try:
        try:
            await destination.wait_for(
                lambda: set(_markers(arrived(), side)) == set(range(burst)), timeout=120
            )
        except TimeoutError as exc:
            log = (tmp_path / "2.log").read_text(encoding="utf-8", errors="replace")
            raise AssertionError(
                f"not everything crossed after the restart:\n{log[:8000]}"
            ) from exc
        assert second.poll() is None, "the second run must not die"
    finally:
        _stop(second, signal.SIGTERM)
    assert second.returncode == 0, (tmp_path / "2.log").read_text()[-3000:]
    seen = _markers(arrived(), side)
    doubled = sorted({n for n in seen if seen.count(n) > 1})
    if direction == "to_discord" or point == "before_platform_call":
        # Discord finds a post that landed before the kill (nonce, webhook history).
        assert doubled == [], f"doubled on Discord: {doubled}"
    else:
        # Telegram cannot tell whether the post landed: at most one message doubled. A
        # merged post is made in two steps, so its residents' messages are never doubled.
        assert len(doubled) <= (0 if point == "in_merged_post" else 1), doubled
    # In the channel's order, apart from that one message.
    assert sorted(set(seen)) == list(range(burst))


async def test_a_kill_during_catch_up_loses_nothing_and_skips_nothing(
    fakes: tuple[FakeTelegram, FakeDiscord], tmp_path: Path, database_url: str
) -> None:
    """The bot is killed after storing the first page of what Discord got during an outage;
    the next run reads on from the stored cursor: every message crosses, in order."""
    telegram, discord = fakes
    environment = _environment(telegram, discord, tmp_path, database_url)
    before_outage, during = 3, 130  # more than one history page (100)

    def arrived() -> list[int]:
        texts = [
            str(m.get("text", "")) for m in telegram.sent_messages(GROUP, include_deleted=False)
        ]
        return _markers(texts, "dc")

    first = start_bot_process(
        {**environment, "FORUM_FAULTS": "during_catch_up:1"}, tmp_path, "1.log"
    )
    try:
        await discord.wait_for(lambda: discord.connected_sessions >= 1, timeout=60)
        for i in range(before_outage):
            discord.inject_message(GENERAL, PAUL_DC, f"dc-{i}.")
        await telegram.wait_for(lambda: set(arrived()) == set(range(before_outage)), timeout=60)
        refused = len(discord.gateway_events("refused"))
        discord.refuse_connections(True)
        discord.close_gateway(1001)
        await discord.wait_for(
            lambda: len(discord.gateway_events("refused")) >= refused + 2, timeout=60
        )
        for i in range(before_outage, before_outage + during):
            discord.inject_message(GENERAL, PAUL_DC, f"dc-{i}.")
        discord.refuse_connections(False)
        await asyncio.to_thread(first.wait, 120)
    finally:
        _stop(first, signal.SIGKILL)
    log = (tmp_path / "1.log").read_text(encoding="utf-8", errors="replace")
    assert "FAULT during_catch_up" in log, f"the fault never fired:\n{log[-3000:]}"
    assert first.returncode == -signal.SIGKILL
    total = before_outage + during
    assert len(set(arrived())) < total, "everything crossed before the kill: nothing was tried"

    second = start_bot_process(environment, tmp_path, "2.log")
    try:
        try:
            await telegram.wait_for(lambda: set(arrived()) == set(range(total)), timeout=120)
        except TimeoutError as exc:
            log = (tmp_path / "2.log").read_text(encoding="utf-8", errors="replace")
            raise AssertionError(
                f"not everything crossed after the restart:\n{log[:8000]}"
            ) from exc
        assert second.poll() is None, "the second run must not die"
    finally:
        _stop(second, signal.SIGTERM)
    assert second.returncode == 0, (tmp_path / "2.log").read_text()[-3000:]
    seen = arrived()
    doubled = sorted({n for n in seen if seen.count(n) > 1})
    # The kill may land while a Telegram post is in flight: that one message may double.
    assert len(doubled) <= 1, doubled
    # In the channel's order, across the outage and the kill.
    assert [n for i, n in enumerate(seen) if n not in seen[:i]] == list(range(total))
