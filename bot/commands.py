"""Recognising a typed command (``/aide``, ``/aide@forum_bot argument``) in a message text."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Telegram allows a-z, 0-9 and _ in command names; residents type accents anyway ("/pétition").
_COMMAND = re.compile(
    r"^/(?P<name>[^\s@/]{1,64})(?:@(?P<bot>[A-Za-z0-9_]{1,64}))?(?:\s+(?P<args>.*))?$", re.S
)


@dataclass(frozen=True, slots=True)
class ParsedCommand:
    name: str
    args: str


def parse_command(text: str, bot_username: str | None = None) -> ParsedCommand | None:
    """The command in ``text``, or None when it is a plain message or aimed at another bot."""
    match = _COMMAND.match(text.strip())
    if match is None:
        return None
    target = match.group("bot")
    if target and bot_username and target.lower() != bot_username.lower():
        return None
    return ParsedCommand(match.group("name").lower(), (match.group("args") or "").strip())


def leading_number(args: str) -> tuple[int | None, str]:
    """``"12 rest"`` → (12, "rest"): the number a command is about (a proposal, a poll),
    with an optional "#" or "n°" before it, and what follows; None when it is not one."""
    head, _, rest = args.strip().partition(" ")
    head = head.removeprefix("#").removeprefix("n°").removeprefix("N°")
    # ASCII digits only: "²" is a digit to str.isdigit() but not to int().
    if not re.fullmatch(r"[0-9]{1,9}", head):
        return None, args.strip()
    return int(head), rest.strip()
