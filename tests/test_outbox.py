"""The outbox: ordered, durable, paced delivery per chat, with retries and batching."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import ClassVar

import pytest
import sqlalchemy as sa

from bot.clock import FixedClock
from bot.events import (
    Action,
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
from bot.platforms.base import Adapter
from bot.richtext import FormattedText
from storage.db import Database
from storage.models import MessageLink, OutboxItem

A = ChatRef("mock", "a")
B = ChatRef("mock", "b")
ORIGIN = ChatRef("other", "x")
CLOCK = FixedClock(datetime(2026, 11, 25, 12, 0, tzinfo=UTC))


class Scripted(Adapter):
    """Records what it performs; fails on demand, per chat."""

    name: ClassVar[str] = "mock"
    ACTIONS: ClassVar[dict[type[Action], str]] = {
        SendMessage: "_send",
        EditMessage: "_edit",
        DeleteMessage: "_delete",
    }

    def __init__(self) -> None:
        self.performed: list[tuple[str, str]] = []
        self.failures: dict[str, list[Exception]] = {}
        self.gate: dict[str, asyncio.Event] = {}
        self.changed = asyncio.Condition()
        self.next_id = 100

    async def _record(self, chat: ChatRef, what: str) -> None:
        gate = self.gate.get(chat.chat_id)
        if gate is not None:
            await gate.wait()
        queue = self.failures.get(chat.chat_id)
        if queue:
            raise queue.pop(0)
        self.performed.append((chat.chat_id, what))
        async with self.changed:
            self.changed.notify_all()

    async def _send(self, action: SendMessage, delivery: Delivery) -> Sent:
        await self._record(action.chat, self.quoted(action, native_reply=True).text)
        self.next_id += 1
        return Sent(action.chat, (str(self.next_id),))

    async def _edit(self, action: EditMessage, delivery: Delivery) -> None:
        await self._record(action.chat, f"edit {action.message_id}: {action.content.text}")

    async def _delete(self, action: DeleteMessage, delivery: Delivery) -> None:
        await self._record(action.chat, f"delete {action.message_id}")

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(10), self.changed:
            await self.changed.wait_for(lambda: len(self.performed) >= count)


def _send(chat: ChatRef, text: str, origin: str | None = None) -> SendMessage:
    return SendMessage(
        chat=chat,
        content=FormattedText.plain(text),
        origin=MessageRef(ORIGIN, origin) if origin else None,
    )


class VirtualTime:
    """A monotonic clock that moves only when the outbox waits for its pace."""

    def __init__(self) -> None:
        self.at = 1000.0

    def now(self) -> float:
        return self.at

    async def pause(self, seconds: float) -> None:
        self.at += seconds
        await asyncio.sleep(0)


def _outbox(db: Database, adapter: Scripted, **options: object) -> Outbox:
    return Outbox(db, CLOCK, adapter.perform, backoff_base=0.001, **options)  # type: ignore[arg-type]


async def test_delivers_in_order_once(db: Database) -> None:
    adapter = Scripted()
    outbox = _outbox(db, adapter)
    await outbox.start()
    try:
        await outbox.submit([_send(A, f"m{i}") for i in range(20)], source_key="s1")
        # The same source again (an update handled twice after a crash) adds nothing.
        await outbox.submit([_send(A, f"m{i}") for i in range(20)], source_key="s1")
        async with asyncio.timeout(10):
            await outbox.drain()
    finally:
        await outbox.stop()
    assert adapter.performed == [("a", f"m{i}") for i in range(20)]


async def test_retry_after_holds_only_that_chat(db: Database) -> None:
    adapter = Scripted()
    adapter.failures["a"] = [RateLimited(3600)]
    outbox = _outbox(db, adapter)
    await outbox.start()
    try:
        await outbox.submit([_send(A, "to a")], source_key="a")
        await outbox.submit([_send(B, f"to b {i}") for i in range(3)], source_key="b")
        await adapter.wait_for(3)
        assert adapter.performed == [("b", "to b 0"), ("b", "to b 1"), ("b", "to b 2")]

        async def postponed() -> bool:
            async with db.read() as session:
                row = (
                    await session.execute(
                        sa.select(OutboxItem).where(OutboxItem.chat_key == "mock:a")
                    )
                ).scalar_one()
            return row.not_before is not None

        async with asyncio.timeout(10):
            await outbox.wait_until(postponed)
        async with db.read() as session:
            row = (
                await session.execute(sa.select(OutboxItem).where(OutboxItem.chat_key == "mock:a"))
            ).scalar_one()
        assert row.status == "pending"
        assert row.not_before is not None and (row.not_before - CLOCK.now()).total_seconds() == 3600
        assert row.attempts == 0  # a rate limit is not a failed attempt
    finally:
        await outbox.stop()


async def test_server_errors_are_retried_then_delivered_in_order(db: Database) -> None:
    adapter = Scripted()
    adapter.failures["a"] = [
        TemporaryFailure("502"),
        TemporaryFailure("connection reset"),
        RateLimited(0.001),
    ]
    outbox = _outbox(db, adapter)
    await outbox.start()
    try:
        await outbox.submit([_send(A, "one"), _send(A, "two")], source_key="s")
        async with asyncio.timeout(10):
            await outbox.drain()
    finally:
        await outbox.stop()
    assert adapter.performed == [("a", "one"), ("a", "two")]


async def test_a_permanent_failure_is_set_aside_and_the_queue_goes_on(db: Database) -> None:
    adapter = Scripted()
    adapter.failures["a"] = [PermanentFailure("chat not found")]
    outbox = _outbox(db, adapter)
    await outbox.start()
    try:
        await outbox.submit([_send(A, "lost cause"), _send(A, "next")], source_key="s")
        async with asyncio.timeout(10):
            await outbox.drain()
        status = {s.chat_key: s for s in await outbox.status()}
    finally:
        await outbox.stop()
    assert adapter.performed == [("a", "next")]
    assert status["mock:a"].failed == 1
    assert status["mock:a"].last_error == "chat not found"


async def test_pending_items_survive_a_restart(db: Database) -> None:
    first = Scripted()
    first.gate["a"] = asyncio.Event()  # never opened: the "process" dies waiting
    outbox = _outbox(db, first)
    await outbox.start()
    await outbox.submit([_send(A, f"m{i}") for i in range(5)], source_key="s")
    await outbox.stop()
    assert first.performed == []

    second = Scripted()
    outbox = _outbox(db, second)
    await outbox.start()
    try:
        async with asyncio.timeout(10):
            await outbox.drain()
    finally:
        await outbox.stop()
    assert second.performed == [("a", f"m{i}") for i in range(5)]


async def test_relays_are_mapped_and_edits_deletes_follow_the_map(db: Database) -> None:
    adapter = Scripted()
    outbox = _outbox(db, adapter)
    await outbox.start()
    try:
        await outbox.submit([_send(A, "hello", origin="7")], source_key="s1")
        async with asyncio.timeout(10):
            await outbox.drain()
        copy = adapter.next_id
        await outbox.submit(
            [
                EditMessage(
                    chat=A, origin=MessageRef(ORIGIN, "7"), content=FormattedText.plain("hello!")
                ),
                SendMessage(
                    chat=A,
                    content=FormattedText.plain("answer"),
                    origin=MessageRef(ORIGIN, "8"),
                    reply_to_origin=MessageRef(ORIGIN, "7"),
                ),
                SendMessage(
                    chat=A,
                    content=FormattedText.plain("answer to the unknown"),
                    origin=MessageRef(ORIGIN, "9"),
                    reply_to_origin=MessageRef(ORIGIN, "1"),
                    reply_fallback=FormattedText.plain("> old message"),
                ),
                DeleteMessage(chat=A, origin=MessageRef(ORIGIN, "7")),
                DeleteMessage(chat=A, origin=MessageRef(ORIGIN, "404")),
            ],
            source_key="s2",
        )
        async with asyncio.timeout(10):
            await outbox.drain()
        # The copy is itself a reference: a reply to it on side A leads back to the origin.
        assert await outbox.copy_in(MessageRef(A, str(copy)), "other:x") == ["7"]
    finally:
        await outbox.stop()
    assert adapter.performed == [
        ("a", "hello"),
        ("a", f"edit {copy}: hello!"),
        ("a", "answer"),
        ("a", "> old message\nanswer to the unknown"),
        ("a", f"delete {copy}"),
    ]


async def test_backlog_beyond_the_pace_is_batched_and_every_original_mapped(db: Database) -> None:
    adapter = Scripted()
    adapter.gate["a"] = asyncio.Event()
    merged_sizes: list[int] = []

    def merge(actions: Sequence[SendMessage]) -> SendMessage:
        merged_sizes.append(len(actions))
        text = "\n".join(a.content.text for a in actions)
        return SendMessage(
            chat=actions[0].chat, content=FormattedText.plain(text), origin=actions[0].origin
        )

    # One post per two seconds: after "first", the next slot is two seconds away, so the 30
    # messages waiting behind it go out together in that slot instead of over a minute.
    outbox = _outbox(db, adapter, pace=lambda chat: Pace(1, 2.0), merge=merge)
    await outbox.start()
    try:
        await outbox.submit([_send(A, "first", origin="1")], source_key="first")
        await outbox.submit(
            [_send(A, f"m{i}", origin=str(10 + i)) for i in range(30)], source_key="burst"
        )
        adapter.gate["a"].set()
        async with asyncio.timeout(20):
            await outbox.drain()
    finally:
        await outbox.stop()
    assert merged_sizes == [30]
    assert adapter.performed == [("a", "first"), ("a", "\n".join(f"m{i}" for i in range(30)))]
    async with db.read() as session:
        links = (
            await session.execute(sa.select(MessageLink.origin_message_id, MessageLink.batched))
        ).all()
    assert sorted(int(o) for o, _ in links) == [1, *range(10, 40)]
    assert all(batched for o, batched in links if o != "1")


@pytest.mark.parametrize("count", [1, 3])
async def test_drain_returns_when_everything_is_delivered(db: Database, count: int) -> None:
    adapter = Scripted()
    outbox = _outbox(db, adapter)
    await outbox.start()
    try:
        await outbox.submit([_send(A, str(i)) for i in range(count)], source_key="s")
        async with asyncio.timeout(10):
            await outbox.drain()
        assert await outbox.pending_count() == 0
    finally:
        await outbox.stop()
    assert len(adapter.performed) == count


async def test_a_split_message_interrupted_midway_resumes_after_its_sent_parts(
    db: Database,
) -> None:
    from dataclasses import replace

    from bot.events import PartialDelivery

    class Splitting(Scripted):
        """Posts a message in three parts; the second part fails the first time."""

        failed = False

        async def _send(self, action: SendMessage, delivery: Delivery) -> Sent:
            ids = list(delivery.sent_parts)
            for index in range(3):
                if index < len(delivery.sent_parts):
                    continue
                if index == 1 and not self.failed:
                    self.failed = True
                    raise PartialDelivery(tuple(ids), RateLimited(0.001))
                await self._record(action.chat, f"{action.content.text} part {index}")
                ids.append(f"{action.content.text}-{index}")
            return Sent(action.chat, tuple(ids))

    adapter = Splitting()
    outbox = _outbox(db, adapter)
    await outbox.start()
    try:
        await outbox.submit([replace(_send(A, "long", origin="5"))], source_key="s")
        async with asyncio.timeout(10):
            await outbox.drain()
    finally:
        await outbox.stop()
    assert adapter.performed == [("a", "long part 0"), ("a", "long part 1"), ("a", "long part 2")]
    async with db.read() as session:
        parts = (
            await session.execute(
                sa.select(MessageLink.part, MessageLink.copy_message_id).order_by(MessageLink.part)
            )
        ).all()
    assert [tuple(p) for p in parts] == [(0, "long-0"), (1, "long-1"), (2, "long-2")]


class Blocking(Scripted):
    """Blocks every call after the first ``free`` ones until released; says when it blocks."""

    def __init__(self, free: int) -> None:
        super().__init__()
        self.free = free
        self.calls = 0
        self.blocked = asyncio.Event()
        self.release = asyncio.Event()
        self.deliveries: list[Delivery] = []

    async def _block(self) -> None:
        self.calls += 1
        if self.calls > self.free:
            self.blocked.set()
            await self.release.wait()

    async def _send(self, action: SendMessage, delivery: Delivery) -> Sent:
        self.deliveries.append(delivery)
        await self._block()
        return await super()._send(action, delivery)

    async def _edit(self, action: EditMessage, delivery: Delivery) -> None:
        await self._block()
        await super()._edit(action, delivery)


def _joining(actions: Sequence[SendMessage]) -> SendMessage:
    text = "\n".join(a.content.text for a in actions)
    return SendMessage(
        chat=actions[0].chat, content=FormattedText.plain(text), origin=actions[0].origin
    )


async def _burst_then_crash(db: Database, adapter: Blocking, *, finds_lost_posts: bool) -> None:
    """'first', then 30 relays merged into one post; the process 'dies' inside that post."""
    time = VirtualTime()
    outbox = _outbox(
        db,
        adapter,
        pace=lambda chat: Pace(1, 0.3),
        merge=_joining,
        finds_lost_posts=lambda chat: finds_lost_posts,
        # Virtual pace time: the relays behind 'first' are merged however slow the machine.
        monotonic=time.now,
        pause=time.pause,
    )
    adapter.gate["a"] = asyncio.Event()
    await outbox.start()
    try:
        await outbox.submit([_send(A, "first", origin="1")], source_key="first")
        await outbox.submit(
            [_send(A, f"m{i}", origin=str(10 + i)) for i in range(30)], source_key="burst"
        )
        adapter.gate["a"].set()
        async with asyncio.timeout(20):
            await adapter.blocked.wait()
    finally:
        # Cancelling the worker mid-call is what a kill leaves in the database.
        await outbox.stop()
    async with db.read() as session:
        carried = (
            await session.execute(
                sa.select(sa.func.count())
                .select_from(OutboxItem)
                .where(sa.column("merged_into").is_not(None), OutboxItem.status == "pending")
            )
        ).scalar_one()
    # Which rows the post carries was written before the post was made.
    assert carried == 30


async def _mapped(db: Database) -> list[int]:
    async with db.read() as session:
        links = (await session.execute(sa.select(MessageLink.origin_message_id))).scalars()
        return sorted(int(o) for o in links)


async def test_a_merged_post_cut_by_a_crash_is_rebuilt_from_the_same_rows(db: Database) -> None:
    await _burst_then_crash(db, Blocking(free=1), finds_lost_posts=True)
    merged = "\n".join(f"m{i}" for i in range(30))
    # Messages that arrive after the crash do not join the post being recovered.
    second = Scripted()
    outbox = _outbox(db, second, merge=_joining, finds_lost_posts=lambda chat: True)
    await outbox.submit([_send(A, "late", origin="99")], source_key="late")
    await outbox.start()
    try:
        async with asyncio.timeout(20):
            await outbox.drain()
    finally:
        await outbox.stop()
    # The same post again, which the platform can recognise (Discord: nonce, history).
    assert second.performed == [("a", merged), ("a", "late")]
    assert await _mapped(db) == [1, *range(10, 40), 99]


async def test_where_lost_posts_cannot_be_found_a_crash_doubles_one_placeholder_at_most(
    db: Database,
) -> None:
    # free=2: "first" and the placeholder go through; the process dies inside the edit.
    first = Blocking(free=2)
    await _burst_then_crash(db, first, finds_lost_posts=False)
    assert first.performed == [("a", "first"), ("a", "…")]
    placeholder = str(first.next_id)
    second = Scripted()
    outbox = _outbox(db, second, merge=_joining, finds_lost_posts=lambda chat: False)
    await outbox.start()
    try:
        async with asyncio.timeout(20):
            await outbox.drain()
    finally:
        await outbox.stop()
    merged = "\n".join(f"m{i}" for i in range(30))
    # No second post of the residents' thirty messages: the placeholder is edited into them.
    assert second.performed == [("a", f"edit {placeholder}: {merged}")]
    assert await _mapped(db) == [1, *range(10, 40)]


def test_a_pace_keeps_both_the_long_window_and_the_short_burst() -> None:
    """Telegram: 20 a minute in a group, and about one a second in any chat, in bursts of 3.
    A pace that kept only the minute would post 20 at once and draw a 429."""
    from collections import deque

    from bot.outbox import _Window

    window = _Window(Pace(20, 60.0, burst_count=3, burst_window=3.0), deque())
    now = 100.0
    times = []
    for _ in range(25):
        now += window.wait(now)
        times.append(now)
        window.sent.append(now)
    # Three at once, then three every three seconds, until the minute's twenty are used.
    assert times[:6] == [100.0, 100.0, 100.0, 103.0, 103.0, 103.0]
    assert times[19] == 118.0
    assert times[20] == 160.0
    # Never more than three within any three seconds, never more than twenty in a minute.
    assert all(b - a >= 3.0 for a, b in zip(times, times[3:], strict=False))
    assert all(b - a >= 60.0 for a, b in zip(times, times[20:], strict=False))
