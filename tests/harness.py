"""The bridge wired to both loopback fakes, shared by the tests and the benchmark."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import SecretStr
from sqlmodel import col

from bot.bootstrap import App, build
from bot.clock import Clock, SystemClock
from bot.config import BridgeConfig, ChannelConfig, Settings
from bot.platforms.discord import DiscordAdapter
from bot.platforms.telegram import TelegramAdapter
from storage.db import Database
from storage.models import InboxUpdate
from tests.fakes.discord import FakeDiscord
from tests.fakes.telegram import FakeTelegram

GROUP = -100123
GENERAL = 1100
DISCORD_TOKEN = "TEST.discord.token"

# Settings the bot reads from the environment: a developer's own must never leak in.
PLATFORM_ENV = (
    "TELEGRAM_TOKEN",
    "DISCORD_TOKEN",
    "DATABASE_URL",
    "FORUM_CONFIG",
    "TELEGRAM_WEBHOOK_SECRET",
    "LANGUAGE",
    "TIMEZONE",
    "RATE_LIMIT_SCALE",
)


def bridge_settings(
    telegram: FakeTelegram, discord: FakeDiscord, database_url: str, **extra: Any
) -> Settings:
    """Telegram group GROUP bridged with Discord channel GENERAL, both on the fakes."""
    return Settings(
        database_url=database_url,
        telegram_token=SecretStr(telegram.token),
        telegram_api_url=telegram.url,
        discord_token=SecretStr(DISCORD_TOKEN),
        discord_api_url=discord.api_url,
        discord_guild_ids=[str(discord.guild_id)],
        channels=[
            ChannelConfig(platform="telegram", id=str(GROUP), neighbourhood="Ouest"),
            ChannelConfig(platform="discord", id=str(GENERAL), neighbourhood="Ouest"),
        ],
        bridges=[BridgeConfig.model_validate({"telegram": str(GROUP), "discord": str(GENERAL)})],
        **extra,
    )


def bridge_app(settings: Settings, clock: Clock | None = None) -> tuple[App, DiscordAdapter]:
    """The app with both adapters, tuned for the fakes (short long-poll, no identify wait);
    on the real time unless given a clock (a FixedClock moves due times only when told)."""
    db = Database(settings.database_url)
    clock = clock or SystemClock()
    discord_adapter = DiscordAdapter(
        settings, db, clock, identify_delay=False, guild_ready_timeout=0.1
    )
    adapters = [TelegramAdapter(settings, db, clock, poll_timeout=1), discord_adapter]
    return build(
        settings, db=db, clock=clock, adapters=adapters, with_scheduler=False
    ), discord_adapter


def start_bot_process(
    environment: dict[str, str], workdir: Path, log: str
) -> subprocess.Popen[bytes]:
    """``python -m bot`` as its own process (to be killed), its log in ``workdir / log``."""
    with (workdir / log).open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "bot"],
            env=environment,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


async def settle(app: App) -> None:
    """Wait until every stored update is handled and the outbox is empty.

    Callers bound the wait with ``asyncio.timeout``.
    """

    async def quiet() -> bool:
        async with app.db.read() as session:
            pending = (
                await session.execute(
                    sa.select(sa.func.count())
                    .select_from(InboxUpdate)
                    .where(col(InboxUpdate.handled_at).is_(None))
                )
            ).scalar_one()
        return bool(pending == 0)

    await app.dispatcher.wait_until(quiet)
    await app.outbox.drain()
