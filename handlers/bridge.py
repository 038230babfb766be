"""The bridge: linked chats become one conversation.

What a resident writes in one chat is relayed to every chat linked with it, with the author's
name and platform; replies become native replies where the replied-to message has a copy,
edits and deletions follow the message-id map. Nothing the bot or its webhooks posted is ever
relayed back, no mention can ping, and a relayed text is never a command on the other side.

Links come from the settings, from /relier, and from discussion threads: the threads a post
got in each chat (``Context.open_thread``, recorded as ``thread:<post key>``) are linked with
each other. Where a chat has no thread for it (a Telegram group that is not a forum), the
discussion there is the reply chain under the post. A message goes to each linked chat once,
through the most specific link that holds it: a thread's (or a reply chain's) link, not the
link of the whole chat the thread is in.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from sqlalchemy import or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from bot.events import (
    THREAD_PREFIX,
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
from storage.models import Account, BridgeLink, LinkCode, NamedPost

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
# How far up a chain of replies the bridge looks for the post a discussion hangs from.
CHAIN_DEPTH = 32


@dataclass(frozen=True, slots=True)
class Link:
    """Two chats; ``direction`` says which way messages cross.

    A side with a chain is a chat where the discussion has no thread of its own: it is the
    reply chain under those messages (a post's parts). From that side only what answers the
    chain crosses; to that side, what crosses answers the post.
    """

    a: ChatRef
    b: ChatRef
    direction: str = "both"
    a_chain: tuple[str, ...] = ()
    b_chain: tuple[str, ...] = ()

    def ways(self) -> tuple[_Way, _Way]:
        """Both directions, each saying whether messages cross that way."""
        return (
            _Way(self.a, self.a_chain, Target(self.b, self.b_chain), self.direction != "b_to_a"),
            _Way(self.b, self.b_chain, Target(self.a, self.a_chain), self.direction != "a_to_b"),
        )


@dataclass(frozen=True, slots=True)
class Target:
    """Where a message crosses to; with a chain, as an answer to its first message."""

    chat: ChatRef
    chain: tuple[str, ...] = ()
    # Reached from a reply chain: its messages. An answer to the post itself is no answer in
    # the thread, which as a whole answers the post.
    from_chain: tuple[str, ...] = ()

    @property
    def reply_to(self) -> str | None:
        return self.chain[0] if self.chain else None


@dataclass(frozen=True, slots=True)
class _Way:
    """One direction of a link: from ``side`` (a reply chain when ``chain``) to ``target``."""

    side: ChatRef
    chain: tuple[str, ...]
    target: Target
    forward: bool


# How closely a link's side holds the chat a message is in: the whole chat, the reply chain
# of a post in it, or the very thread. A message crosses through the closest ones only.
_WHOLE_CHAT, _CHAIN, _THREAD = 0, 1, 2


def _matches(side: ChatRef, chat: ChatRef) -> bool:
    if (side.platform, side.chat_id) != (chat.platform, chat.chat_id):
        return False
    return side.thread_id is None or side.thread_id == chat.thread_id


DEMO_LINK = Link(ChatRef("console", "tg:ouest"), ChatRef("console", "dc:ouest"))


async def links(ctx: Context) -> list[Link]:
    """Every bridge: from the settings file, from /relier, and between discussion threads."""
    settings = ctx.settings

    async def stored() -> list[Link]:
        rows = (await ctx.session.execute(select(BridgeLink))).scalars()
        return [Link(parse_chat_key(r.a_key), parse_chat_key(r.b_key), r.direction) for r in rows]

    async def threads() -> list[Link]:
        return await thread_links(ctx.session)

    found = [Link(parse_chat_key(b.a), parse_chat_key(b.b), b.direction) for b in settings.bridges]
    # Read for every message; /relier and /delier say when the table changes, and the outbox
    # when it records a thread.
    found.extend(await ctx.memo.get("links", None, stored))
    if not found and settings.console_mode:
        # On the console with nothing configured, tg:ouest and dc:ouest are linked so that a
        # newcomer can watch the bridge work.
        found.append(DEMO_LINK)
    found.extend(await ctx.memo.get("links", "threads", threads))
    return found


async def thread_links(session: AsyncSession) -> list[Link]:
    """The links between the threads of each post, from their ``thread:<post key>`` rows.

    A row holds its thread's id, or none where the chat has no thread for it (the reply chain
    under the post, whose parts the post's own row gives). Two reply chains are not linked:
    a discussion needs a thread somewhere.
    """
    rows = (
        await session.execute(
            select(NamedPost).where(col(NamedPost.key).startswith(THREAD_PREFIX, autoescape=True))
        )
    ).scalars()
    groups: dict[str, list[NamedPost]] = {}
    for row in rows:
        groups.setdefault(row.key, []).append(row)
    chained = [
        (key.removeprefix(THREAD_PREFIX), row.chat_key)
        for key, group in groups.items()
        for row in group
        if not row.message_ids
    ]
    posts: dict[tuple[str, str], tuple[str, ...]] = {}
    if chained:
        query = select(NamedPost).where(col(NamedPost.key).in_({key for key, _ in chained}))
        posts = {
            (post.key, post.chat_key): tuple(post.message_ids)
            for post in (await session.execute(query)).scalars()
        }
    found: list[Link] = []
    for key, group in sorted(groups.items()):
        sides: list[tuple[ChatRef, tuple[str, ...]]] = []
        for row in sorted(group, key=lambda r: r.chat_key):
            chat = parse_chat_key(row.chat_key)
            if row.message_ids:
                sides.append((replace(chat, thread_id=str(row.message_ids[0])), ()))
                continue
            chain = posts.get((key.removeprefix(THREAD_PREFIX), row.chat_key), ())
            if chain:  # a post since deleted leaves nothing to hang replies from
                sides.append((chat, chain))
        for index, (a, a_chain) in enumerate(sides):
            for b, b_chain in sides[index + 1 :]:
                if a_chain and b_chain:
                    continue
                found.append(Link(a, b, a_chain=a_chain, b_chain=b_chain))
    return found


async def targets(
    ctx: Context,
    chat: ChatRef,
    *,
    reply_to: str | None = None,
    message_id: str | None = None,
    both_ways: bool = False,
    closest: bool = True,
) -> list[Target]:
    """Where a message of ``chat`` crosses to: each linked chat once, by its closest link.

    ``reply_to`` is what the message answers (for a new one); for an edit or a deletion,
    ``message_id`` names the stored message, whose answer is looked up when a reply chain
    needs it. ``both_ways`` also counts links that carry nothing from ``chat`` (a deletion
    follows copies whichever way they went). Without ``closest`` every linked chat is
    named: an edit or a deletion reaches a copy wherever it went (one made before a thread
    was linked is in the chat around the thread), and the outbox skips chats without one.
    """
    found: list[tuple[int, Target]] = []
    chains: list[_Way] = []
    for link in await links(ctx):
        for way in link.ways():
            if not (way.forward or both_ways) or not _matches(way.side, chat):
                continue
            if way.chain:
                chains.append(way)
            else:
                level = _THREAD if way.side.thread_id is not None else _WHOLE_CHAT
                found.append((level, way.target))
    if chains:
        if reply_to is None and message_id is not None:
            reply_to = await _stored_reply(ctx, chat, message_id)
        found.extend((_CHAIN, target) for target in await _answered(ctx, chat, reply_to, chains))
    if not closest:
        return list({target.chat: target for _, target in found}.values())
    return _closest(found)


def _closest(found: Sequence[tuple[int, Target]]) -> list[Target]:
    """One target per chat, and in each platform chat only those of the closest links: a
    thread's message goes to the other thread, not also to the chat that thread is in."""
    best: dict[tuple[str, str], int] = {}
    for level, target in found:
        where = (target.chat.platform, target.chat.chat_id)
        best[where] = max(best.get(where, level), level)
    chosen: dict[ChatRef, Target] = {}
    for level, target in found:
        if level == best[(target.chat.platform, target.chat.chat_id)]:
            chosen.setdefault(target.chat, target)
    return list(chosen.values())


async def _stored_reply(ctx: Context, chat: ChatRef, message_id: str) -> str | None:
    stored = await repository.find_message(ctx.session, chat, message_id)
    return stored.reply_to_platform_id if stored is not None else None


async def _answered(
    ctx: Context, chat: ChatRef, reply_to: str | None, chains: Sequence[_Way]
) -> list[Target]:
    """The targets of the reply chain a message answering ``reply_to`` belongs to, if any.

    Up the replies: the post itself, a relayed copy of a message of the post's thread (the
    discussion brought here), or a resident's message that itself answers the chain.
    """
    roots: dict[str, list[Target]] = {}
    threads: dict[str, list[Target]] = {}
    for way in chains:
        target = replace(way.target, from_chain=way.chain)
        for message in way.chain:
            roots.setdefault(message, []).append(target)
        threads.setdefault(chat_key(target.chat), []).append(target)
    here = chat_key(chat)
    seen: list[str] = []

    def found(targets: list[Target]) -> list[Target]:
        # Every message on the way up belongs to the chain: the next reply below stops at
        # one of them, so a long discussion never walks far (nor past CHAIN_DEPTH).
        for message in seen:
            ctx.memo.put("chain", (here, message), targets)
        return targets

    current = reply_to
    for _ in range(CHAIN_DEPTH):
        if current is None or current in seen:
            return []
        seen.append(current)
        known, targets = ctx.memo.peek("chain", (here, current))
        if known:
            return found(list(targets))
        if current in roots:
            return found(roots[current])
        copy = await message_map.original_of(ctx.session, here, current)
        if copy is not None:
            # A relayed message: of a thread's discussion, or of some other chat's talk.
            return found(threads.get(copy[0], [])) if copy[0] in threads else []
        for thread, targets in threads.items():
            # A resident's message already carried into a thread is in that chain.
            if await message_map.copies_of(ctx.session, here, current, thread):
                return found(targets)
        current = await _stored_reply(ctx, chat, current)
    return []


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
    found = await targets(ctx, event.chat, reply_to=event.reply_to)
    if not found:
        return []
    files = tuple(a for a in event.attachments if a.kind != "sticker")
    content = _defuse(_with_fallbacks(event.content, event.attachments))
    if _blank(content) and not files:
        # Only invisible or blank characters: there is nothing to carry.
        return []
    name = await _author_name(ctx, event)
    origin = MessageRef(event.chat, event.message_id)
    answered = MessageRef(event.chat, event.reply_to) if event.reply_to else None
    fallback = await _reply_fallback(ctx, event.chat, event.reply_to) if event.reply_to else None
    actions: list[Action] = []
    for target in found:
        # An answer to the post goes into its thread as the thread's own talk: no quote.
        answers = answered if event.reply_to not in target.from_chain else None
        actions.append(
            SendMessage(
                chat=target.chat,
                content=_for(target.chat, content),
                as_name=name,
                origin=origin,
                # Into a reply chain: under the post, unless it answers a message copied there.
                reply_to=target.reply_to,
                reply_to_origin=answers,
                reply_fallback=(
                    _for(target.chat, fallback) if fallback is not None and answers else None
                ),
                attachments=files,
            )
        )
    return actions


async def _batched(ctx: Context, origin: MessageRef, target: ChatRef) -> bool:
    return await message_map.is_batched(
        ctx.session, chat_key(origin.chat), origin.message_id, chat_key(target)
    )


async def relay_edit(ctx: Context, event: MessageEdited) -> Sequence[Action]:
    """Edit every copy of an edited message."""
    found = await targets(ctx, event.chat, message_id=event.message_id, closest=False)
    chats = [target.chat for target in found]
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
    for target in chats:
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
    found = await targets(
        ctx, event.chat, message_id=event.message_id, both_ways=True, closest=False
    )
    for target in found:
        if not await _batched(ctx, origin, target.chat):
            actions.append(DeleteMessage(chat=target.chat, origin=origin))
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
    copies = await targets(
        ctx, original.chat, message_id=original.message_id, both_ways=True, closest=False
    )
    actions.extend(DeleteMessage(chat=target.chat, origin=original) for target in copies)
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
