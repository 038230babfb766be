"""/lier and /dissocier: one resident, several accounts.

A resident who uses both Telegram and Discord is one person: their support counts once,
whichever account pressed the button. /lier on one platform gives a one-time code (kept only
as a hash); the same resident types ``/lier CODE`` from their account on the other platform
and both accounts become one person. Wrong codes are counted per account, so that nobody can
guess one. /dissocier gives the account that types it a person of its own again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlmodel import col

from bot.events import Action, CommandReceived, SendMessage, direct_chat
from bot.richtext import FormattedText
from handlers.bridge import PLATFORM_LABELS
from storage import people
from storage.db import rowcount
from storage.models import AuditEntry, LinkAttempt, PersonLinkCode

if TYPE_CHECKING:
    from datetime import datetime

    from bot.handling import Context

logger = logging.getLogger(__name__)

# No look-alikes (0/O, 1/I/L): a code is read on one screen and typed on another.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8
CODE_LIFETIME = timedelta(minutes=10)
# Past this many wrong codes in the window, the account waits for the window's end: 31**8
# codes cannot be guessed five at a time.
MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=10)
# What residents type between the groups of a code, or by habit.
_SEPARATORS = str.maketrans("", "", " -_.\t")


def new_code() -> str:
    """A fresh one-time code."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(typed: str) -> str | None:
    """The code as it was made, from what a resident typed ("abcd-efgh"), or None when it
    cannot be one."""
    code = typed.translate(_SEPARATORS).upper()
    if len(code) != CODE_LENGTH or any(c not in CODE_ALPHABET for c in code):
        return None
    return code


def code_hash(code: str) -> str:
    """What is stored of a code: a copy of the table must not let anyone link accounts."""
    return hashlib.sha256(code.encode("ascii")).hexdigest()


def shown(code: str) -> str:
    """The code in two groups, easier to read and type ("ABCD-EFGH")."""
    half = len(code) // 2
    return f"{code[:half]}-{code[half:]}"


def _label(platform: str) -> str:
    return PLATFORM_LABELS.get(platform, platform.capitalize())


def _is_private(event: CommandReceived) -> bool:
    """Whether the command came from the resident's private conversation with the bot."""
    author = event.author
    return event.chat.thread_id is None and (
        event.chat.chat_id == author.user_id
        or event.chat == direct_chat(author.platform, author.user_id)
    )


async def link_accounts(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """/lier: a one-time code here; /lier CODE from another platform joins both accounts."""
    me = await people.find_account(ctx.session, ctx.person.account_key)
    if me is None:
        # Only the clock has no account, and it types no commands.
        logger.warning("/lier from %s, which has no account", ctx.person.account_key)
        return []
    if not event.args.strip():
        return await _give_code(ctx, event, me)
    return await _use_code(ctx, event, me)


async def _give_code(
    ctx: Context, event: CommandReceived, me: people.AccountOf
) -> Sequence[Action]:
    now = ctx.now()
    # One pending code per person: a new /lier makes the previous one useless. Expired codes
    # of anybody go too, so the table holds only live ones.
    await ctx.session.execute(
        sa.delete(PersonLinkCode)
        .where(
            (col(PersonLinkCode.person_id) == me.person_id)
            | (col(PersonLinkCode.expires_at) <= now)
        )
        .execution_options(synchronize_session="fetch")
    )
    code = new_code()
    ctx.session.add(
        PersonLinkCode(
            code_hash=code_hash(code),
            person_id=me.person_id,
            account_key=me.key,
            expires_at=now + CODE_LIFETIME,
        )
    )
    text = ctx.t(
        "Your code to link your accounts: {code}\n"
        "On your other app (Telegram or Discord), write to the bot: /lier {code}\n"
        "The code is valid for {minutes} minutes and works only once. Keep it to yourself: "
        "whoever types it joins their account to yours.",
        code=shown(code),
        minutes=int(CODE_LIFETIME.total_seconds() // 60),
    )
    if _is_private(event):
        return [ctx.reply(text)]
    # Typed in a group: whoever read the code there could join their account to this
    # resident's. It goes to the resident's private conversation instead.
    return [
        SendMessage(chat=direct_chat(me.platform, me.user_id), content=FormattedText.plain(text)),
        ctx.reply(
            ctx.t(
                "I sent you your code in a private message, so that nobody else sees it. "
                "If it does not arrive, write /lier to me in a private conversation."
            )
        ),
    ]


async def _use_code(ctx: Context, event: CommandReceived, me: people.AccountOf) -> Sequence[Action]:
    now = ctx.now()
    attempt = await ctx.session.get(LinkAttempt, me.key)
    if attempt is not None and attempt.failures >= MAX_FAILURES:
        ends = attempt.window_started_at + FAILURE_WINDOW
        if now < ends:
            # Even the right code is refused now: otherwise the limit would only slow a
            # guess down, never stop it.
            minutes = max(1, math.ceil((ends - now).total_seconds() / 60))
            return [
                ctx.reply(
                    ctx.tn(
                        "Too many wrong codes. Please wait {n} minute before trying again.",
                        "Too many wrong codes. Please wait {n} minutes before trying again.",
                        minutes,
                    )
                )
            ]
    code = normalize_code(event.args)
    pending = await ctx.session.get(PersonLinkCode, code_hash(code)) if code else None
    if pending is None or pending.expires_at <= now:
        if pending is not None:
            await ctx.session.delete(pending)
        _count_failure(ctx, attempt, me.key, now)
        return [_unknown_code(ctx)]
    made_on, _ = people.split_account_key(pending.account_key)
    if made_on == me.platform:
        # Not burnt: the resident only typed it in the wrong app.
        return [
            ctx.reply(
                ctx.t(
                    "This code was made on {platform}: type it from your account on the "
                    "other app, not from {platform}.",
                    platform=_label(made_on),
                )
            )
        ]
    # Claimed by this very statement: two accounts typing the same code at once cannot both
    # use it (the second one deletes nothing).
    claimed = await ctx.session.execute(
        sa.delete(PersonLinkCode)
        .where(col(PersonLinkCode.code_hash) == pending.code_hash)
        .execution_options(synchronize_session=False)
    )
    if rowcount(claimed) != 1:
        _count_failure(ctx, attempt, me.key, now)
        return [_unknown_code(ctx)]
    ctx.session.expunge(pending)
    if attempt is not None:
        await ctx.session.delete(attempt)
    if pending.person_id == me.person_id:
        return [ctx.reply(ctx.t("These two accounts are already linked."))]
    other = await people.find_account(ctx.session, pending.account_key)
    # The older person stays: its id is the one other rows most likely name already.
    keep, gone = sorted((pending.person_id, me.person_id))
    await people.merge_persons(ctx.session, keep=keep, gone=gone)
    ctx.session.add(
        AuditEntry(
            at=now,
            actor_account_id=me.id,
            action="accounts-linked",
            target=f"person:{keep}",
            details={"accounts": [pending.account_key, me.key], "merged_person": gone},
        )
    )
    # Both accounts' next events must see the person that stays.
    ctx.changed("accounts")
    actions: list[Action] = [
        ctx.reply(
            ctx.t(
                "Linked: your {platform} account and this one are now one resident for the "
                "forum. Your support counts once, whichever account you use.",
                platform=_label(made_on),
            )
        )
    ]
    if other is not None:
        # The code's owner hears of it too: if it was not them, they can undo it.
        actions.append(
            SendMessage(
                chat=direct_chat(other.platform, other.user_id),
                content=FormattedText.plain(
                    ctx.t(
                        "Your account is now linked with the {platform} account {name}. "
                        "If it was not you, type /dissocier here.",
                        platform=_label(me.platform),
                        name=event.author.display_name,
                    )
                ),
            )
        )
    return actions


def _unknown_code(ctx: Context) -> Action:
    return ctx.reply(
        ctx.t(
            "This code is unknown or expired. On your other account, type /lier to get a new one."
        )
    )


def _count_failure(
    ctx: Context, attempt: LinkAttempt | None, account_key: str, now: datetime
) -> None:
    """One more wrong code for ``account_key``; a window that has ended starts afresh."""
    if attempt is None:
        ctx.session.add(LinkAttempt(account_key=account_key, failures=1, window_started_at=now))
    elif now >= attempt.window_started_at + FAILURE_WINDOW:
        attempt.failures = 1
        attempt.window_started_at = now
    else:
        attempt.failures += 1


async def unlink_account(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """/dissocier: this account becomes a resident of its own again."""
    me = await people.find_account(ctx.session, ctx.person.account_key)
    if me is None:
        logger.warning("/dissocier from %s, which has no account", ctx.person.account_key)
        return []
    new_person = await people.detach_account(ctx.session, me.id, ctx.now())
    if new_person is None:
        return [ctx.reply(ctx.t("This account is not linked to any other account."))]
    ctx.session.add(
        AuditEntry(
            at=ctx.now(),
            actor_account_id=me.id,
            action="account-unlinked",
            target=f"person:{me.person_id}",
            details={"account": me.key, "new_person": new_person},
        )
    )
    ctx.changed("accounts")
    return [
        ctx.reply(
            ctx.t(
                "Unlinked: this account is on its own again. Your supports and proposals "
                "stay with your other accounts."
            )
        )
    ]
