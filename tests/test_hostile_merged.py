"""Hostile tests of a2ccb91: merged posts keep their members' words on every path.

Claims attacked:

1. A deletion or an edit queued by origin while the merged post carrying the copy was in
   flight no longer deletes or rewrites the whole merged post (the edit posts its note).
2. A merged post whose filling edit is refused for good takes its "…" placeholder back and
   gives its rows back to the queue, each to go out alone, never looping.
3. The parts an over-long Telegram edit posts after a message are recorded in the message map
   and the named post: a later edit or deletion reaches them.

Each test takes a path the commit's own tests do not: a retry (temporary failure, rate limit)
where the new code swallows or repeats a call, a restart at the worst moment (a new ``Outbox``
on the same database), two destination chats of different kinds at once, repeated texts,
edits refused more than once. Tests that inject a fault assert that it fired; waits are bounded
by ``asyncio.timeout`` and wait on events, never on the clock. A failing test is a finding.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import col

from bot.events import (
    ChatRef,
    DeleteMessage,
    Delivery,
    EditMessage,
    MessageRef,
    PermanentFailure,
    RateLimited,
    SendMessage,
    Sent,
    TemporaryFailure,
)
from bot.outbox import Outbox, Pace
from bot.richtext import FormattedText
from storage.db import Database
from storage.models import MessageLink, NamedPost, OutboxItem
from tests.test_bridge_adversarial import _statuses
from tests.test_outbox import Blocking, Scripted, VirtualTime, _joining, _outbox, _send
from tests.test_telegram import TelegramForum
from tests.test_telegram_edits import (
    CHAT,
    NAME,
    ORIGIN,
    _deliver,
    _edit,
    _long,
    _relay,
    _shown,
    _squeezed,
    fake,
    forum,
)

# The Telegram fixtures are used by name: pytest finds them in this module's namespace.
__all__ = ["fake", "forum"]

A = ChatRef("mock", "a")
B = ChatRef("mock", "b")
SOURCE = ChatRef("other", "x")
PLACEHOLDER = "…"
MERGED = "\n".join(f"m{i}" for i in range(30))
SINGLES = [f"m{i}" for i in range(30)]
# Fast enough for 30 posts one by one, slow enough that "first" leaves the rest waiting.
PACE = 0.05


def _origin(message_id: int | str) -> MessageRef:
    return MessageRef(SOURCE, str(message_id))


def _edit_of(chat: ChatRef, message_id: int, text: str, *, note: bool = True) -> EditMessage:
    """What relay_edit queues when the copy was not (yet) known as batched."""
    return EditMessage(
        chat=chat,
        origin=_origin(message_id),
        content=FormattedText.plain(text),
        if_merged=FormattedText.plain(f"(modifié) {text}") if note else None,
    )


def _delete_of(chat: ChatRef, message_id: int) -> DeleteMessage:
    return DeleteMessage(chat=chat, origin=_origin(message_id))


class Platform(Scripted):
    """A scripted platform with fault queues per kind of call and per chat.

    ``late_sends`` fail the sends made after the first deletion went through (the sends of a
    merged post's rows given back to the queue); ``hold_after_delete`` makes the process "die"
    in the first such send (the call never returns; stopping the outbox cancels it).
    """

    def __init__(
        self,
        *,
        edits: dict[str, list[Exception]] | None = None,
        deletes: dict[str, list[Exception]] | None = None,
        late_sends: Sequence[Exception] = (),
        hold_after_delete: bool = False,
    ) -> None:
        super().__init__()
        self.edit_faults = {k: list(v) for k, v in (edits or {}).items()}
        self.delete_faults = {k: list(v) for k, v in (deletes or {}).items()}
        self.late_sends = list(late_sends)
        self.hold_after_delete = hold_after_delete
        self.fired = {"edit": 0, "delete": 0, "send": 0}
        self.deleted = asyncio.Event()
        self.held = asyncio.Event()
        # (chat, text, reply_to) of every post, to check where notes hang.
        self.posts: list[tuple[str, str, str | None]] = []

    async def _send(self, action: SendMessage, delivery: Delivery) -> Sent:
        if self.deleted.is_set():
            if self.hold_after_delete:
                self.held.set()
                await asyncio.Event().wait()
            if self.late_sends:
                self.fired["send"] += 1
                raise self.late_sends.pop(0)
        sent = await super()._send(action, delivery)
        self.posts.append((action.chat.chat_id, action.content.text, action.reply_to))
        return sent

    async def _edit(self, action: EditMessage, delivery: Delivery) -> None:
        queue = self.edit_faults.get(action.chat.chat_id)
        if queue:
            self.fired["edit"] += 1
            raise queue.pop(0)
        await super()._edit(action, delivery)

    async def _delete(self, action: DeleteMessage, delivery: Delivery) -> None:
        queue = self.delete_faults.get(action.chat.chat_id)
        if queue:
            self.fired["delete"] += 1
            raise queue.pop(0)
        await super()._delete(action, delivery)
        self.deleted.set()

    def seen(self, chat: str = "a") -> list[str]:
        return [what for where, what in self.performed if where == chat]


def _merging(
    db: Database,
    adapter: Scripted,
    *,
    finds_lost_posts: bool | dict[str, bool],
    **options: object,
) -> Outbox:
    def finds(chat: ChatRef) -> bool:
        if isinstance(finds_lost_posts, bool):
            return finds_lost_posts
        return finds_lost_posts[chat.chat_id]

    time = VirtualTime()
    return _outbox(
        db,
        adapter,
        pace=lambda chat: Pace(1, PACE),
        # The pace runs on virtual time: a window opens only when the outbox waits for it,
        # so a backlog behind 'first' is merged however slow the machine is.
        monotonic=time.now,
        pause=time.pause,
        merge=_joining,
        finds_lost_posts=finds,
        **options,
    )


async def _burst(
    outbox: Outbox,
    adapter: Scripted,
    chats: Sequence[ChatRef] = (A,),
    *,
    texts: Sequence[str] = SINGLES,
    then: Sequence[Any] = (),
) -> None:
    """'first' (origin 1), then one relay per text (origins 10, 11, …) behind it, then
    ``then``: all queued while the chats are shut, so they wait behind 'first' together."""
    for chat in chats:
        adapter.gate[chat.chat_id] = asyncio.Event()
    await outbox.start()
    for chat in chats:
        await outbox.submit([_send(chat, "first", origin="1")], source_key=f"first {chat}")
        await outbox.submit(
            [_send(chat, text, origin=str(10 + i)) for i, text in enumerate(texts)],
            source_key=f"burst {chat}",
        )
    if then:
        await outbox.submit(list(then), source_key="then")
    for chat in chats:
        adapter.gate[chat.chat_id].set()


async def _drained(outbox: Outbox) -> None:
    try:
        async with asyncio.timeout(30):
            await outbox.drain()
    finally:
        await outbox.stop()


async def _copy_ids(db: Database, chat: ChatRef, origin: int) -> list[str]:
    async with db.read() as session:
        return list(
            (
                await session.execute(
                    sa.select(col(MessageLink.copy_message_id))
                    .where(
                        col(MessageLink.origin_message_id) == str(origin),
                        col(MessageLink.copy_chat_key) == str(chat),
                    )
                    .order_by(col(MessageLink.part))
                )
            ).scalars()
        )


def _left_bare(posted: list[str]) -> int:
    """Placeholders posted and never taken back (the ids are the Scripted ones: the n-th
    post of the run has id 100 + n)."""
    return posted.count(PLACEHOLDER) - sum(1 for w in posted if w.startswith("delete "))


# ------------------------------------------------------------------ the refused merged post


@pytest.mark.parametrize(
    "fault",
    [TemporaryFailure("502 Bad Gateway"), RateLimited(0.01, "flood control")],
    ids=["502", "429"],
)
async def test_a_placeholder_whose_deletion_fails_once_is_still_taken_back(
    db: Database, fault: Exception
) -> None:
    """The edit filling the merged post is refused for good; the deletion of the bare "…"
    then meets a 502 (or a 429): a retry away from success. The commit suppresses that
    error and forgets the placeholder's id (``result_ids=[]``), so the "…" stays forever."""
    adapter = Platform(
        edits={"a": [PermanentFailure("Bad Request: message can't be edited")]},
        deletes={"a": [fault]},
    )
    outbox = _merging(db, adapter, finds_lost_posts=False)
    await _burst(outbox, adapter)
    await _drained(outbox)
    assert adapter.fired == {"edit": 1, "delete": 1, "send": 0}
    posted = adapter.seen()
    assert posted[:2] == ["first", PLACEHOLDER], posted
    # The 30 messages went out alone, each once …
    assert [w for w in posted if w.startswith("m")] == SINGLES, posted
    # … and the placeholder (id 102) was taken back in the end.
    assert "delete 102" in posted, posted
    assert _left_bare(posted) == 0, posted


async def test_a_restart_between_placeholder_and_refused_edit_takes_it_back(
    db: Database,
) -> None:
    """The process dies inside the edit; the next run (a new Outbox on the same database) is
    refused the edit for good: it must delete the first run's placeholder and post the 30."""
    first = Blocking(free=2)  # "first" and the placeholder pass; the edit never returns
    outbox = _merging(db, first, finds_lost_posts=False)
    await _burst(outbox, first)
    try:
        async with asyncio.timeout(20):
            await first.blocked.wait()
    finally:
        await outbox.stop()
    assert [w for _, w in first.performed] == ["first", PLACEHOLDER]
    placeholder = str(first.next_id)

    second = Platform(edits={"a": [PermanentFailure("Bad Request: message can't be edited")]})
    second.next_id = 1000
    outbox = _merging(db, second, finds_lost_posts=False)
    await outbox.start()
    await _drained(outbox)
    assert second.fired["edit"] == 1
    assert second.seen() == [f"delete {placeholder}", *SINGLES]
    assert set((await _statuses(db)).values()) == {"delivered"}


async def test_a_restart_right_after_the_unmerge_never_merges_those_rows_again(
    db: Database,
) -> None:
    """Killed after the rows were given back (placeholder deleted, first single in flight):
    the next run, whose platform refuses every edit, posts each row alone, once."""
    first = Platform(
        edits={"a": [PermanentFailure("Bad Request: message can't be edited")]},
        hold_after_delete=True,
    )
    outbox = _merging(db, first, finds_lost_posts=False)
    await _burst(outbox, first)
    try:
        async with asyncio.timeout(20):
            await first.held.wait()
    finally:
        await outbox.stop()
    assert first.fired["edit"] == 1
    assert first.seen() == ["first", PLACEHOLDER, "delete 102"]

    refusing: list[Exception] = [PermanentFailure("Bad Request: can't be edited")] * 5
    second = Platform(edits={"a": refusing})
    second.next_id = 1000
    outbox = _merging(db, second, finds_lost_posts=False)
    await outbox.start()
    await _drained(outbox)
    # Over its pace at once, yet no merged post again: no placeholder, no edit tried.
    assert second.fired["edit"] == 0
    assert second.seen() == SINGLES
    assert set((await _statuses(db)).values()) == {"delivered"}


async def test_edits_refused_for_every_merged_post_never_loop_and_lose_nothing(
    db: Database,
) -> None:
    """A platform that refuses every edit, and 40 messages in merges of at most 15: each
    merged post is tried once, its placeholder taken back, its rows posted alone."""
    refusing: list[Exception] = [PermanentFailure("Bad Request: can't be edited")] * 20
    adapter = Platform(edits={"a": refusing})
    outbox = _merging(db, adapter, finds_lost_posts=False, max_batch=15)
    texts = [f"m{i}" for i in range(40)]
    await _burst(outbox, adapter, texts=texts)
    await _drained(outbox)
    posted = adapter.seen()
    placeholders = posted.count(PLACEHOLDER)
    assert placeholders >= 1, posted  # the burst was merged at least once
    assert adapter.fired["edit"] == placeholders, (adapter.fired, posted)
    assert placeholders <= 3, posted  # 40 rows, 15 at most per merge: no row merged twice
    assert [w for w in posted if w.startswith("m")] == texts, posted
    assert _left_bare(posted) == 0, posted
    assert set((await _statuses(db)).values()) == {"delivered"}


async def test_server_errors_on_the_unmerged_sends_are_retried_once_each(db: Database) -> None:
    adapter = Platform(
        edits={"a": [PermanentFailure("Bad Request: message can't be edited")]},
        late_sends=[TemporaryFailure("502"), RateLimited(0.01), TemporaryFailure("reset")],
    )
    outbox = _merging(db, adapter, finds_lost_posts=False)
    await _burst(outbox, adapter)
    await _drained(outbox)
    assert adapter.fired == {"edit": 1, "delete": 0, "send": 3}
    assert adapter.seen() == ["first", PLACEHOLDER, "delete 102", *SINGLES]
    assert set((await _statuses(db)).values()) == {"delivered"}


async def test_repeated_texts_given_back_keep_one_copy_each(db: Database) -> None:
    """Thirty "Merci !" from thirty messages: refused merged, posted alone, each mapped to
    its own post; deleting the 16th takes exactly its own copy."""
    texts = ["Merci !"] * 30
    adapter = Platform(edits={"a": [PermanentFailure("Bad Request: message can't be edited")]})
    outbox = _merging(db, adapter, finds_lost_posts=False)
    await _burst(outbox, adapter, texts=texts, then=[_delete_of(A, 25)])
    await _drained(outbox)
    assert adapter.fired["edit"] == 1
    posted = adapter.seen()
    assert posted.count("Merci !") == 30, posted
    # first=101, placeholder=102, then the thirty: origin 10 + k is id 103 + k.
    assert posted[-1] == "delete 118", posted
    copies = [await _copy_ids(db, A, 10 + k) for k in range(30)]
    assert copies == [[str(103 + k)] for k in range(30)]


async def test_a_deletion_and_an_edit_behind_a_refused_merge_reach_the_lone_copy(
    db: Database,
) -> None:
    """Queued behind the merged post, they find it refused and its rows posted alone: the
    deletion takes that one copy, the edit edits it (no '(modifié)' note is needed)."""
    adapter = Platform(edits={"a": [PermanentFailure("Bad Request: message can't be edited")]})
    outbox = _merging(db, adapter, finds_lost_posts=False)
    await _burst(outbox, adapter, then=[_delete_of(A, 10), _edit_of(A, 11, "m1 corrigé")])
    await _drained(outbox)
    assert adapter.fired["edit"] == 1
    assert adapter.seen() == [
        "first",
        PLACEHOLDER,
        "delete 102",
        *SINGLES,
        "delete 103",
        "edit 104: m1 corrigé",
    ]


# ------------------------------------------------------------------ merged posts delivered


async def test_two_kinds_of_platform_at_once(db: Database) -> None:
    """The same thirty origins relayed to a chat that cannot find lost posts (two steps; its
    edit refused) and to one that can (one post). A deletion and an edit of members follow in
    both: in the first, the lone copies are deleted and edited; in the second, the merged
    post stays whole and the edit becomes a note replying to it."""
    adapter = Platform(edits={"a": [PermanentFailure("Bad Request: message can't be edited")]})
    outbox = _merging(db, adapter, finds_lost_posts={"a": False, "b": True})
    then = [
        _delete_of(A, 10),
        _delete_of(B, 10),
        _edit_of(A, 11, "m1 corrigé"),
        _edit_of(B, 11, "m1 corrigé"),
    ]
    await _burst(outbox, adapter, chats=(A, B), then=then)
    await _drained(outbox)
    assert adapter.fired["edit"] == 1
    on_a = adapter.seen("a")
    assert on_a[:3] == ["first", PLACEHOLDER, on_a[2]] and on_a[2].startswith("delete ")
    singles_a = [w for w in on_a if w.startswith("m")]
    assert singles_a == SINGLES, on_a
    (copy_a10,) = await _copy_ids(db, A, 10)
    (copy_a11,) = await _copy_ids(db, A, 11)
    assert copy_a10 != copy_a11
    assert f"delete {copy_a10}" in on_a
    assert f"edit {copy_a11}: m1 corrigé" in on_a
    on_b = adapter.seen("b")
    assert on_b == ["first", MERGED, "(modifié) m1 corrigé"], on_b
    (merged_b,) = await _copy_ids(db, B, 10)
    assert await _copy_ids(db, B, 11) == [merged_b]
    note = [p for p in adapter.posts if p[0] == "b" and p[1].startswith("(modifié)")]
    assert note == [("b", "(modifié) m1 corrigé", merged_b)]


async def test_members_of_a_delivered_merge_and_a_lone_post_each_get_their_due(
    db: Database,
) -> None:
    """After a merged post went out normally: an edit of a member becomes a note (or nothing
    without one), a deletion of a member keeps the post; 'first' (alone) is still edited
    and deleted as before."""
    adapter = Platform()
    outbox = _merging(db, adapter, finds_lost_posts=True)
    then = [
        _edit_of(A, 12, "m2 corrigé"),
        _edit_of(A, 13, "m3 corrigé", note=False),
        _delete_of(A, 14),
        _edit_of(A, 1, "first corrigé"),
        _delete_of(A, 1),
    ]
    await _burst(outbox, adapter, then=then)
    await _drained(outbox)
    assert adapter.seen() == [
        "first",
        MERGED,
        "(modifié) m2 corrigé",
        "edit 101: first corrigé",
        "delete 101",
    ]
    assert [p for p in adapter.posts if p[1].startswith("(modifié)")] == [
        ("a", "(modifié) m2 corrigé", "102")
    ]


async def test_an_edit_queued_during_a_restart_inside_a_two_step_post_is_a_note(
    db: Database,
) -> None:
    """The process dies between the placeholder and its edit; while it is down a member is
    edited. The next run fills the placeholder, then posts the note: the thirty stay."""
    first = Blocking(free=2)
    outbox = _merging(db, first, finds_lost_posts=False)
    await _burst(outbox, first)
    try:
        async with asyncio.timeout(20):
            await first.blocked.wait()
    finally:
        await outbox.stop()
    placeholder = str(first.next_id)
    second = Platform()
    second.next_id = 1000
    outbox = _merging(db, second, finds_lost_posts=False)
    # Queued while no outbox runs: relay_edit saw no batched copy yet.
    await outbox.submit([_edit_of(A, 15, "m5 corrigé")], source_key="edit while down")
    await outbox.start()
    await _drained(outbox)
    assert second.seen() == [f"edit {placeholder}: {MERGED}", "(modifié) m5 corrigé"]
    assert second.posts == [("a", "(modifié) m5 corrigé", placeholder)]


# ------------------------------------------------------------------ a kill after the note


class FindsLostPosts(Platform):
    """Like Discord's webhook posts: a post made under a delivery key is found again when the
    outbox says it may have landed. ``die_after`` makes the process "die" right after the
    platform made the post whose text starts with it (the database never hears of it)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_key: dict[str, str] = {}
        self.die_after: str | None = None
        self.died = asyncio.Event()
        self.found_again = 0

    async def _send(self, action: SendMessage, delivery: Delivery) -> Sent:
        if delivery.key and delivery.maybe_sent and delivery.key in self.by_key:
            self.found_again += 1
            return Sent(action.chat, (self.by_key[delivery.key],))
        sent = await super()._send(action, delivery)
        if delivery.key:
            self.by_key[delivery.key] = sent.message_ids[0]
        if self.die_after is not None and action.content.text.startswith(self.die_after):
            self.die_after = None
            self.died.set()
            await asyncio.Event().wait()
        return sent


async def _kill_after(db: Database, adapter: FindsLostPosts, text: str) -> None:
    """Run the burst plus an edit of member 10 until the post starting with ``text`` is made,
    "kill" there, then run again to the end with the same platform."""
    adapter.die_after = text
    outbox = _merging(db, adapter, finds_lost_posts=True)
    await _burst(outbox, adapter, then=[_edit_of(A, 10, "m0 corrigé")])
    try:
        async with asyncio.timeout(20):
            await adapter.died.wait()
    finally:
        await outbox.stop()
    outbox = _merging(db, adapter, finds_lost_posts=True)
    await outbox.start()
    await _drained(outbox)


async def test_a_kill_right_after_a_merged_post_does_not_double_it(db: Database) -> None:
    """The control for the next test: the fake platform finds a lost post again."""
    adapter = FindsLostPosts()
    await _kill_after(db, adapter, "m0\nm1")
    assert adapter.died.is_set() and adapter.found_again == 1
    assert adapter.seen() == ["first", MERGED, "(modifié) m0 corrigé"]


async def test_a_kill_right_after_the_edit_note_does_not_double_it(db: Database) -> None:
    """The note an edit turns into (queued before the merge was recorded) is a new post, yet
    the outbox posts it with no delivery key and no in-flight mark: on a platform that finds
    lost posts (Discord), a kill between its post and the commit posts it twice."""
    adapter = FindsLostPosts()
    await _kill_after(db, adapter, "(modifié)")
    assert adapter.died.is_set()
    posted = adapter.seen()
    assert posted.count("(modifié) m0 corrigé") == 1, posted


# ------------------------------------------------------------------ over-long Telegram edits


async def _named_post(forum: TelegramForum, text: str) -> None:
    await _deliver(
        forum,
        "post",
        SendMessage(chat=CHAT, content=FormattedText.plain(text), post_key="agenda:1"),
    )


def _named_edit(text: str) -> EditMessage:
    return EditMessage(chat=CHAT, post_key="agenda:1", content=FormattedText.plain(text))


async def _named_ids(forum: TelegramForum) -> list[str]:
    async with forum.app.db.read() as session:
        row = await session.get(NamedPost, ("agenda:1", str(CHAT)))
        return list(row.message_ids) if row is not None else []


async def test_a_named_post_grown_twice_is_edited_and_deleted_whole(
    forum: TelegramForum,
) -> None:
    await _named_post(forum, "Ordre du jour")
    await _deliver(forum, "grow", _named_edit(_long(2)))
    assert len(forum.sent()) == 2
    longer = _long(4)
    await _deliver(forum, "grow again", _named_edit(longer))
    sent = forum.sent()
    assert len(sent) == 4
    assert await _named_ids(forum) == [str(m["message_id"]) for m in sent]
    assert _squeezed("".join(_shown(m) for m in sent)) == _squeezed(longer)
    await _deliver(forum, "shrink", _named_edit("Annulé"))
    assert [_shown(m) for m in forum.sent()] == ["Annulé", "…", "…", "…"]
    await _deliver(forum, "delete", DeleteMessage(chat=CHAT, post_key="agenda:1"))
    assert forum.sent() == []


async def test_a_relay_grown_twice_then_edited_and_deleted_by_origin(
    forum: TelegramForum,
) -> None:
    await _deliver(forum, "send", _relay("Bonjour"))
    await _deliver(forum, "grow", _edit(_long(2)))
    longer = _long(4)
    await _deliver(forum, "grow again", _edit(longer))
    sent = forum.sent()
    assert len(sent) == 4
    assert _squeezed("".join(_shown(m) for m in sent)) == _squeezed(f"{NAME}\n{longer}")
    await _deliver(forum, "shrink", _edit("Rien."))
    assert [_shown(m) for m in forum.sent()] == [f"{NAME}\nRien.", "…", "…", "…"]
    await _deliver(forum, "delete", DeleteMessage(chat=CHAT, origin=ORIGIN))
    assert forum.sent() == []


@pytest.mark.parametrize("by", ["origin", "post_key"])
async def test_a_502_between_the_parts_an_edit_adds_leaves_no_stray_part(
    forum: TelegramForum, monkeypatch: pytest.MonkeyPatch, by: str
) -> None:
    """An edit past 4,096 characters posts two more messages; the second one meets a 502.
    The outbox retries the whole edit: the part already posted is neither recorded nor
    reused, so it is posted again, and the first one stays out of reach of the deletion."""
    if by == "origin":
        await _deliver(forum, "send", _relay("Bonjour à tous"))
    else:
        await _named_post(forum, "Ordre du jour")
    adapter = forum.adapter
    original = adapter._send_text
    calls = [0]
    faults: list[Any] = []

    async def send_text(*args: Any, **kwargs: Any) -> Any:
        # Only the edit's continuations are posted from here on: fail the second one.
        calls[0] += 1
        if calls[0] == 2:
            faults.append(forum.fake.fail_next("sendMessage", status=502, retry_after=None))
        return await original(*args, **kwargs)

    monkeypatch.setattr(adapter, "_send_text", send_text)
    longer = _long(3)  # three messages' worth: the edited one and two more
    await _deliver(forum, "edit", _edit(longer) if by == "origin" else _named_edit(longer))
    assert len(faults) == 1 and faults[0].fired == 1, "the 502 never fired"
    head = f"{NAME}\n" if by == "origin" else ""
    shown = [_shown(m) for m in forum.sent()]
    delete = (
        DeleteMessage(chat=CHAT, origin=ORIGIN)
        if by == "origin"
        else DeleteMessage(chat=CHAT, post_key="agenda:1")
    )
    await _deliver(forum, "delete", delete)
    left = [_shown(m)[:30] for m in forum.sent()]
    # The new text shows once (no part of it twice), and the deletion takes all of it.
    assert (_squeezed("".join(shown)) == _squeezed(head + longer), left) == (True, []), [
        s[:30] for s in shown
    ]


async def test_the_burst_helper_makes_one_merged_post_when_nothing_is_refused(
    db: Database,
) -> None:
    """The control for this module's helpers: a burst is one two-step merged post."""
    adapter = Platform()
    outbox = _merging(db, adapter, finds_lost_posts=False)
    await _burst(outbox, adapter)
    await _drained(outbox)
    assert adapter.seen() == ["first", PLACEHOLDER, f"edit 102: {MERGED}"]
    async with db.read() as session:
        merged = (
            await session.execute(
                sa.select(sa.func.count())
                .select_from(OutboxItem)
                .where(col(OutboxItem.status) == "delivered")
            )
        ).scalar_one()
    assert merged == 31
