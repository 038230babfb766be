"""The ``forum-habitant`` command: run, migrate, status, check-config, health, export."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

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


# The formats of `export` (storage.exports.FORMATS; named here so that --help and a wrong
# --format need no database libraries loaded).
EXPORT_FORMATS = ("csv", "json")

# The datasets of `export` (storage.exports.DATASETS), named here for the same reason.
EXPORT_DATASETS = ("propositions", "sondages")

EXPORT_HELP = """\
Write open data, without personal data: the public proposals ("propositions") or the results
of the closed polls ("sondages").

propositions: every proposal's texts, neighbourhood, theme, budget, status, the council's
answer, its dates (ISO 8601, UTC), how many residents support and follow it, and its history
(date, step, status, and the role that acted, such as moderator or council). Drafts are never
exported: their author has not published them. Nor are proposals still awaiting moderation,
which the forum shows their author alone.

sondages: every closed poll (open ones are not final): its kind, question, options, closing
dates (ISO 8601, UTC), whether it was anonymous, its neighbourhood, how many voted, and the
counts per option as posted at the close: for a ranked poll those of the final round and the
winner, for a date poll the yes, maybe and no of each slot (its start, in UTC).

No personal data goes out: no names, no person or platform ids, no account keys, no chats or
discussion threads, no ballots; supports, followers and votes are counts only.

CSV: UTF-8, a header row. Proposals: one row per proposal; the "history" column lists the
steps oldest first as "<date> <status> (<step>, <role>)" joined by "; " (the steps' notes are
in the JSON only). Polls: one row per option, the poll's columns repeated on each. A text a
spreadsheet would run as a formula (starting with =, +, -, @) is prefixed with a single quote.
JSON: a list of proposals, each with its "history" as a list; a list of polls, each with its
"options" as a list.
"""


async def _export(settings: Settings, dataset: str, fmt: str) -> str:
    from storage.db import Database
    from storage.exports import export

    db = Database(settings.database_url)
    try:
        # Like `status`: a database the bot has not started on yet is brought up to date
        # rather than failing on a missing table.
        await db.migrate()
        return await export(db, dataset, fmt)
    finally:
        await db.dispose()


def _write_out(text: str, output: Path | None) -> None:
    data = text.encode("utf-8")
    if output is not None:
        # Bytes, so that no platform's newline translation touches the CSV's CRLF.
        output.write_bytes(data)
        return
    # UTF-8 whatever the terminal's locale says (a C locale would refuse "é").
    sys.stdout.flush()
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        sys.stdout.write(text)
        return
    buffer.write(data)
    buffer.flush()


def _parser() -> argparse.ArgumentParser:
    # --config is taken before or after the command ("status --config x.toml" has always
    # worked); SUPPRESS keeps a subcommand from resetting a value given before it.
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="TOML settings file (default: $FORUM_CONFIG)",
    )
    parser = argparse.ArgumentParser(
        prog="forum-habitant",
        description="One resident forum across Telegram and Discord.",
        parents=[config],
    )
    commands = parser.add_subparsers(dest="command", metavar="command")
    for name, text in (
        ("run", "run the bot (the default)"),
        ("migrate", "apply database migrations"),
        ("check-config", "validate the settings"),
        ("health", "check that the database answers"),
        ("status", "show each chat's delivery backlog"),
    ):
        commands.add_parser(name, parents=[config], help=text, description=text)
    export = commands.add_parser(
        "export",
        parents=[config],
        help="write open data: the public proposals or the closed polls, without personal data",
        description=EXPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("dataset", choices=EXPORT_DATASETS, help="what to export")
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="csv or json")
    export.add_argument(
        "--output", type=Path, help="file to write, in UTF-8 (default: standard output)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or "run"
    try:
        settings = load_settings(getattr(args, "config", None))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging(
        settings.log_level, as_json=settings.log_format == "json", secrets=_secrets(settings)
    )
    if command == "check-config":
        print("configuration OK")
        return 0
    if command == "export":
        text = asyncio.run(_export(settings, args.dataset, args.format))
        try:
            _write_out(text, args.output)
        except OSError as exc:
            print(f"cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        return 0
    if command == "health":
        healthy = asyncio.run(_health(settings))
        print("healthy" if healthy else "database unreachable")
        return 0 if healthy else 1
    if command == "status":
        asyncio.run(_status(settings))
        return 0
    if command == "migrate":
        asyncio.run(_migrate(settings))
        return 0
    from bot.bootstrap import serve

    if settings.console_mode:
        logger.info("no TELEGRAM_TOKEN or DISCORD_TOKEN: running on the console")
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
