"""Logging set-up: one line per record, text or JSON, and never a secret.

Bot tokens travel inside Telegram URLs (``/bot123:ABC/sendMessage``) and httpx logs every URL at
INFO; Discord webhook URLs carry their token too, and a ``DATABASE_URL`` its password
(``postgresql://forum:password@db/forum``). The formatter scrubs all of them, plus every secret
value the settings hold, from the whole rendered line, tracebacks included.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

REDACTED = "[secret]"

# Each pattern's first group, when it has one, is kept: it says what was scrubbed.
_PATTERNS = (
    # Telegram bot tokens: digits, colon, 30+ url-safe characters.
    re.compile(r"(?<![0-9])\d{5,}:[A-Za-z0-9_-]{30,}"),
    # Discord webhook URLs: /webhooks/<id>/<token>.
    re.compile(r"(?<=/webhooks/)(\d+/)[A-Za-z0-9_.-]{20,}"),
    # Discord bot tokens: three dot-separated base64url parts.
    re.compile(r"\b[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{20,}\b"),
    # A password in a URL (scheme://user:password@host), as DATABASE_URL holds one. It runs to
    # the last "@" before the path, so that an "@" left unencoded in it is scrubbed too.
    re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s/]*(?=@)"),
)
_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class Redactor:
    """Replaces known secrets and anything shaped like a token."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: (m.group(1) if m.re.groups else "") + REDACTED, text)
        return text


class RedactingFormatter(logging.Formatter):
    """Formats a record as text or JSON, then scrubs secrets from the result."""

    def __init__(self, redactor: Redactor, *, as_json: bool = False) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redactor = redactor
        self.as_json = as_json

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")

    def format(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if self.as_json:
            payload: dict[str, Any] = {
                "time": self.formatTime(record),
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
                **{
                    k: repr(v) if not isinstance(v, str | int | float | bool) else v
                    for k, v in extra.items()
                },
            }
            if record.exc_info:
                payload["exception"] = self.formatException(record.exc_info)
            return self.redactor(json.dumps(payload, ensure_ascii=False))
        text = super().format(record)
        if extra:
            text += " " + " ".join(f"{k}={v!r}" for k, v in extra.items())
        return self.redactor(text)


def setup_logging(
    level: str = "INFO",
    *,
    as_json: bool = False,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Install one redacting handler on the root logger; returns it (tests read from it)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(RedactingFormatter(Redactor(secrets), as_json=as_json))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_forum_habitant", False):
            root.removeHandler(old)
    handler._forum_habitant = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    if level != "DEBUG":
        # httpx logs every request (python-telegram-bot makes one per message) at INFO.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    # Even when debugging: aiosqlite logs every statement with its parameters at DEBUG, and
    # those are what residents wrote. The engines hide parameters in errors for the same reason.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
    return handler
