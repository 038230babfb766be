"""The bridge: linked chats become one conversation.

What a resident writes in one chat is relayed to every chat linked with it, with the author's
name and platform; replies become native replies where the replied-to message has a copy,
edits and deletions follow the message-id map. Nothing the bot or its webhooks posted is ever
relayed back, no mention can ping, and a relayed text is never a command on the other side.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from sqlalchemy import or_
from sqlmodel import col, select

from bot.events import (
    Action,
    Attachment,
    ChatRef,
    CommandReceived,
    DeleteMessage,
    EditMessage,
    MessageDeleted,
    MessageEdited,
    MessageReceived,
    MessageRef,
    SendMessage,
)
from bot.names import looks_official
from bot.outbox import chat_key, parse_chat_key
from bot.richtext import (
    FormattedText,
    Span,
    Style,
    defuse_telegram_mentions,
    sanitize_formatted,
)
from storage import message_map, repository
from storage.models import Account, BridgeLink, LinkCode

if TYPE_CHECKING:
    from bot.handling import Context

PLATFORM_LABELS = {"telegram": "Telegram", "discord": "Discord", "console": "Console"}
LINK_CODE_LIFETIME = timedelta(minutes=15)
QUOTE_LENGTH = 80

# Links a relayed text may carry. Telegram's tg:// links open accounts and chats (a
# tg://user?id= link is a mention by id), so relayed ones are refused like javascript:.
RELAYED_LINK_SCHEMES = frozenset({"http", "https", "mailto"})
# Blank but not white space for str.isspace(): a message of these shows nothing.
# Shown as nothing: the braille blank, and the joiners kept for emoji sequences.
_BLANK = frozenset("\u2800\u200c\u200d")


@dataclass(frozen=True, slots=True)
class Link:
    """Two chats; ``direction`` says which way messages cross."""

    a: ChatRef
    b: ChatRef
    direction: str = "both"

    def destinations(self, chat: ChatRef) -> list[ChatRef]:
        found = []
        if _matches(self.a, chat) and self.direction in ("both", "a_to_b"):
            found.append(self.b)
        if _matches(self.b, chat) and self.direction in ("both", "b_to_a"):
            found.append(self.a)
        return found

    def touches(self, chat: ChatRef) -> bool:
        return _matches(self.a, chat) or _matches(self.b, chat)


def _matches(side: ChatRef, chat: ChatRef) -> bool:
    if (side.platform, side.chat_id) != (chat.platform, chat.chat_id):
        return False
    return side.thread_id is None or side.thread_id == chat.thread_id


DEMO_LINK = Link(ChatRef("console", "tg:ouest"), ChatRef("console", "dc:ouest"))


async def links(ctx: Context) -> list[Link]:
    """Every bridge: from the settings file and from /relier."""
    settings = ctx.settings

    async def stored() -> list[Link]:
        rows = (await ctx.session.execute(select(BridgeLink))).scalars()
        return [Link(parse_chat_key(r.a_key), parse_chat_key(r.b_key), r.direction) for r in rows]

    found = [Link(parse_chat_key(b.a), parse_chat_key(b.b), b.direction) for b in settings.bridges]
    # Read for every message; /relier and /delier say when the table changes.
    found.extend(await ctx.memo.get("links", None, stored))
    if not found and settings.console_mode:
        # On the console with nothing configured, tg:ouest and dc:ouest are linked so that a
        # newcomer can watch the bridge work.
        found.append(DEMO_LINK)
    return found


def platform_label(chat: ChatRef) -> str:
    if chat.platform == "console":
        # Console chats stand for a platform by their prefix: tg:ouest, dc:ouest.
        prefix = chat.chat_id.partition(":")[0]
        return {"tg": "Telegram", "dc": "Discord"}.get(prefix, "Console")
    return PLATFORM_LABELS.get(chat.platform, chat.platform.capitalize())


def display_name(
    name: str, chat: ChatRef, protected: Sequence[str] = (), *, staff: bool = False
) -> str:
    """``"Marie · Telegram"``; a name that could pass for staff or the town hall is marked
    (unless its bearer is staff: a moderator's own name is not an impersonation)."""
    name = " ".join(sanitize_formatted(FormattedText.plain(name)).text.split())[:64] or "?"
    label = platform_label(chat)
    mark = " (habitant·e, non officiel)" if not staff and looks_official(name, protected) else ""
    # Telegram shows the name as text: "@someone" would be a mention there.
    shown = defuse_telegram_mentions(FormattedText.plain(name)).text
    return f"{shown}{mark} · {label}"


async def _protected_names(ctx: Context) -> list[str]:
    """Names of the moderators and council staff, which residents may not borrow."""
    keys = [
        key.partition(":") for key in (*ctx.settings.roles.moderators, *ctx.settings.roles.council)
    ]

    async def staff() -> list[str]:
        if not keys:
            return []
        query = select(Account.display_name).where(
            or_(
                *(
                    (col(Account.platform) == platform) & (col(Account.platform_user_id) == user_id)
                    for platform, _, user_id in keys
                )
            )
        )
        return list((await ctx.session.execute(query)).scalars())

    # Read for every relayed message; the core drops it when a staff account is renamed.
    return [ctx.settings.town, *await ctx.memo.get("staff", None, staff)]


async def _author_name(ctx: Context, event: MessageReceived | MessageEdited) -> str:
    """The name a relayed message carries."""
    if ctx.is_moderator():
        return display_name(event.author.display_name, event.chat, staff=True)
    return display_name(event.author.display_name, event.chat, await _protected_names(ctx))


def _link_allowed(span: Span) -> bool:
    if span.style is not Style.LINK:
        return True
    try:
        scheme = urlsplit(span.url or "").scheme.lower()
    except ValueError:
        return False
    return scheme in RELAYED_LINK_SCHEMES


def _defuse(content: FormattedText) -> FormattedText:
    """Sanitised text that no bot on the other side reads as a command, with no account link."""
    content = sanitize_formatted(content)
    content = FormattedText(content.text, tuple(s for s in content.spans if _link_allowed(s)))
    if content.text[:1] in ("/", "!", "?", "."):
        # A zero-width space in front keeps "/ban" from being a command, and shows nothing.
        return FormattedText.plain("\u200b") + content
    return content


def _for(target: ChatRef, content: FormattedText) -> FormattedText:
    """``content`` as it is sent to ``target``."""
    if target.platform == "telegram":
        # The Telegram renderer puts a word joiner after each "@" that would be a mention;
        # putting them in now makes the adapter cut long texts at the length Telegram counts.
        return defuse_telegram_mentions(content)
    return content


def _blank(content: FormattedText) -> bool:
    """Nothing a reader would see: empty, white space, or blank characters."""
    return all(c.isspace() or c in _BLANK for c in content.text)


def _quote(author: str, text: str) -> FormattedText:
    short = " ".join(text.split())
    if len(short) > QUOTE_LENGTH:
        short = short[: QUOTE_LENGTH - 1].rstrip() + "…"
    line = f"↪ {author} : {short}" if short else f"↪ {author}"
    return FormattedText(line, (Span(Style.ITALIC, 0, len(line)),))


async def _reply_fallback(ctx: Context, chat: ChatRef, message_id: str) -> FormattedText:
    stored = await repository.find_message(ctx.session, chat, message_id)
    if stored is None:
        # The message answered may be a relayed copy: quote its original.
        original = await message_map.original_of(ctx.session, chat_key(chat), message_id)
        if original is not None:
            origin_key, origin_id = original
            stored = await repository.find_message(
                ctx.session, parse_chat_key(origin_key), origin_id
            )
    if stored is None:
        return _quote(ctx.t("an earlier message"), "")
    account = await ctx.session.get(Account, stored.account_id)
    name = account.display_name if account else "?"
    # The quote names its author as the relay does: a look-alike of the town hall is marked.
    if looks_official(name, await _protected_names(ctx)):
        name += " (habitant·e, non officiel)"
    return _quote(defuse_telegram_mentions(FormattedText.plain(name)).text, stored.text)


def _with_fallbacks(content: FormattedText, attachments: Sequence[Attachment]) -> FormattedText:
    """Stickers and custom emoji cannot cross: their readable fallback is added to the text."""
    notes = [a.fallback for a in attachments if a.kind == "sticker" and a.fallback]
    if not notes:
        return content
    joiner = FormattedText.plain(" " if content.text else "")
    return content + joiner + FormattedText.plain(" ".join(notes))


async def relay_message(ctx: Context, event: MessageReceived) -> Sequence[Action]:
    """Carry a resident's message to every linked chat."""
    targets = [d for link in await links(ctx) for d in link.destinations(event.chat)]
    if not targets:
        return []
    files = tuple(a for a in event.attachments if a.kind != "sticker")
    content = _defuse(_with_fallbacks(event.content, event.attachments))
    if _blank(content) and not files:
        # Only invisible or blank characters: there is nothing to carry.
        return []
    name = await _author_name(ctx, event)
    origin = MessageRef(event.chat, event.message_id)
    fallback = await _reply_fallback(ctx, event.chat, event.reply_to) if event.reply_to else None
    return [
        SendMessage(
            chat=target,
            content=_for(target, content),
            as_name=name,
            origin=origin,
            reply_to_origin=MessageRef(event.chat, event.reply_to) if event.reply_to else None,
            reply_fallback=_for(target, fallback) if fallback is not None else None,
            attachments=files,
        )
        for target in targets
    ]


async def _batched(ctx: Context, origin: MessageRef, target: ChatRef) -> bool:
    return await message_map.is_batched(
        ctx.session, chat_key(origin.chat), origin.message_id, chat_key(target)
    )


async def relay_edit(ctx: Context, event: MessageEdited) -> Sequence[Action]:
    """Edit every copy of an edited message."""
    targets = [d for link in await links(ctx) for d in link.destinations(event.chat)]
    content = _defuse(event.content)
    if _blank(content):
        # Emptied with invisible characters: the platforms refuse an empty text, and the
        # copies keep their last words (a deletion removes them).
        return []
    name = await _author_name(ctx, event)
    origin = MessageRef(event.chat, event.message_id)
    actions: list[Action] = []
    # When the copy shares one post with other residents' messages, say what changed rather
    # than rewrite everybody's words (the outbox decides if the merge is not recorded yet).
    note = FormattedText.plain(ctx.t("(edited)") + " ") + content
    for target in targets:
        if await _batched(ctx, origin, target):
            actions.append(
                SendMessage(
                    chat=target, content=_for(target, note), as_name=name, reply_to_origin=origin
                )
            )
        else:
            actions.append(
                EditMessage(
                    chat=target,
                    origin=origin,
                    content=_for(target, content),
                    as_name=name,
                    if_merged=_for(target, note),
                )
            )
    return actions


async def relay_deletion(ctx: Context, event: MessageDeleted) -> Sequence[Action]:
    """A message deleted on Discord disappears from the linked chats too."""
    origin = MessageRef(event.chat, event.message_id)
    actions: list[Action] = []
    for link in await links(ctx):
        if not link.touches(event.chat):
            continue
        other = link.b if _matches(link.a, event.chat) else link.a
        if not await _batched(ctx, origin, other):
            actions.append(DeleteMessage(chat=other, origin=origin))
    return actions


async def delete_both(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """/supprimer in reply to a message: remove it and its copies (author or moderator)."""
    if event.reply_to is None:
        return [ctx.reply(ctx.t("Reply to the message to delete with /supprimer."))]
    target = MessageRef(event.chat, event.reply_to)
    # The message replied to is either a resident's original here or a relayed copy.
    copy = await message_map.original_of(ctx.session, chat_key(event.chat), event.reply_to)
    original = MessageRef(parse_chat_key(copy[0]), copy[1]) if copy is not None else target
    stored = await repository.find_message(ctx.session, original.chat, original.message_id)
    author_ok = False
    if stored is not None and original.chat.platform == event.author.platform:
        account = await ctx.session.get(Account, stored.account_id)
        author_ok = account is not None and account.platform_user_id == event.author.user_id
    if not (author_ok or ctx.is_moderator()):
        return [ctx.reply(ctx.t("Only the author or a moderator can delete this message."))]
    actions: list[Action] = [DeleteMessage(chat=original.chat, message_id=original.message_id)]
    for link in await links(ctx):
        if link.touches(original.chat):
            other = link.b if _matches(link.a, original.chat) else link.a
            actions.append(DeleteMessage(chat=other, origin=original))
    if event.message_id:
        actions.append(DeleteMessage(chat=event.chat, message_id=event.message_id))
    if stored is not None:
        stored.deleted_at = ctx.clock.now()
        stored.text = ""
        stored.spans = []
    return actions


async def link_chats(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """/relier: an admin here gets a code; an admin of the other chat types it there."""
    code = event.args.strip().upper()
    now = ctx.clock.now()
    who = f"{event.author.platform}:{event.author.user_id}"
    if not code:
        fresh = secrets.token_hex(3).upper()
        ctx.session.add(
            LinkCode(
                code=fresh,
                chat_key=chat_key(event.chat),
                created_by=who,
                expires_at=now + LINK_CODE_LIFETIME,
            )
        )
        return [
            ctx.reply(
                ctx.t(
                    "To link this chat with another one, an administrator of the other chat "
                    "types there: /relier {code} (valid 15 minutes).",
                    code=fresh,
                )
            )
        ]
    pending = await ctx.session.get(LinkCode, code)
    if pending is None or pending.expires_at < now:
        return [ctx.reply(ctx.t("This code is unknown or expired. Type /relier to get a new one."))]
    here = chat_key(event.chat)
    if pending.chat_key == here:
        return [ctx.reply(ctx.t("Type this code in the *other* chat, not in this one."))]
    await ctx.session.delete(pending)
    existing = (
        (
            await ctx.session.execute(
                select(BridgeLink).where(
                    col(BridgeLink.a_key).in_([pending.chat_key, here]),
                    col(BridgeLink.b_key).in_([pending.chat_key, here]),
                )
            )
        )
        .scalars()
        .first()
    )
    if existing is None:
        ctx.session.add(
            BridgeLink(a_key=pending.chat_key, b_key=here, created_by=f"{pending.created_by}+{who}")
        )
        ctx.changed("links")
    text = ctx.t(
        "Linked: messages now cross between this chat and {other}.", other=pending.chat_key
    )
    other = parse_chat_key(pending.chat_key)
    return [
        ctx.reply(text),
        SendMessage(
            chat=other,
            content=FormattedText.plain(
                ctx.t("Linked: messages now cross between this chat and {other}.", other=here)
            ),
        ),
    ]


async def unlink_chats(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """/delier: stop relaying between this chat and the chats linked by /relier."""
    here = chat_key(event.chat)
    rows = (
        (
            await ctx.session.execute(
                select(BridgeLink).where((BridgeLink.a_key == here) | (BridgeLink.b_key == here))
            )
        )
        .scalars()
        .all()
    )
    for row in rows:
        await ctx.session.delete(row)
    if rows:
        ctx.changed("links")
    else:
        return [ctx.reply(ctx.t("This chat has no link made with /relier."))]
    return [ctx.reply(ctx.tn("{n} link removed.", "{n} links removed.", len(rows)))]


def merge_relays(actions: Sequence[SendMessage]) -> SendMessage | None:
    """One post carrying several relayed messages (when a chat's backlog outgrows its pace)."""
    if not actions:
        return None
    first = actions[0]
    names = {a.as_name for a in actions}
    parts: list[FormattedText] = []
    for action in actions:
        body = action.content
        if action.reply_fallback is not None:
            body = action.reply_fallback + FormattedText.plain("\n") + body
        if len(names) > 1 and action.as_name:
            label = f"{action.as_name} :"
            body = (
                FormattedText(label, (Span(Style.BOLD, 0, len(label)),))
                + FormattedText.plain(" ")
                + body
            )
        parts.append(body)
    merged = parts[0]
    for part in parts[1:]:
        merged = merged + FormattedText.plain("\n") + part
    return SendMessage(
        chat=first.chat,
        content=merged,
        as_name=first.as_name if len(names) == 1 else None,
        origin=first.origin,
    )
