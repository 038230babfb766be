"""The ``forum-habitant`` command: run, migrate, status, check-config."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from bot.config import ConfigError, Settings, load_settings
from bot.logs import setup_logging

logger = logging.getLogger(__name__)


def _secrets(settings: Settings) -> list[str]:
    values = [settings.telegram_token, settings.discord_token, settings.telegram_webhook_secret]
    return [v.get_secret_value() for v in values if v is not None]


async def _migrate(settings: Settings) -> None:
    from storage.db import Database

    db = Database(settings.database_url)
    try:
        await db.migrate()
    finally:
        await db.dispose()


async def _health(settings: Settings) -> bool:
    from storage.db import Database, ping

    db = Database(settings.database_url)
    try:
        return await ping(db)
    except Exception:
        logger.exception("health check failed")
        return False
    finally:
        await db.dispose()


async def _status(settings: Settings) -> None:
    from bot.outbox import delivery_status
    from storage.db import Database

    db = Database(settings.database_url)
    try:
        await db.migrate()
        async with db.read() as session:
            rows = await delivery_status(session)
    finally:
        await db.dispose()
    if not rows:
        print("nothing sent yet")
    for row in rows:
        print(
            f"{row.chat_key}\tpending={row.pending}\tfailed={row.failed}"
            f"\tlast_delivery={row.last_delivery or '-'}\tlast_error={row.last_error or '-'}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="forum-habitant", description="One resident forum across Telegram and Discord."
    )
    parser.add_argument("--config", help="TOML settings file (default: $FORUM_CONFIG)")
    parser.add_argument(
        "command",
        nargs="?",
        default="run",
        choices=["run", "migrate", "check-config", "health", "status"],
        help="run the bot (default), apply database migrations, validate the settings, "
        "check that the database answers, or show each chat's delivery backlog",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging(
        settings.log_level, as_json=settings.log_format == "json", secrets=_secrets(settings)
    )
    if args.command == "check-config":
        print("configuration OK")
        return 0
    if args.command == "health":
        healthy = asyncio.run(_health(settings))
        print("healthy" if healthy else "database unreachable")
        return 0 if healthy else 1
    if args.command == "status":
        asyncio.run(_status(settings))
        return 0
    if args.command == "migrate":
        asyncio.run(_migrate(settings))
        return 0
    from bot.bootstrap import serve

    if settings.console_mode:
        logger.info("no TELEGRAM_TOKEN or DISCORD_TOKEN: running on the console")
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
