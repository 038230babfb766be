"""Durable delivery of actions: one ordered queue per destination chat, in the database.

Handlers never talk to a platform directly. Their actions become ``outbox_item`` rows in the
same transaction that records the update which caused them; one worker per destination chat
then performs them in order, within the chat's pace, honouring ``retry_after`` for that chat
only and backing off on server errors. When a chat's backlog outgrows its pace, consecutive
relayed messages are merged into one post (and every original is still mapped to it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy import func, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlmodel import col, select

from bot import codec
from bot.clock import Clock
from bot.events import (
    NO_DELIVERY,
    Action,
    ChatRef,
    DeleteMessage,
    Delivery,
    EditMessage,
    MessageRef,
    OpenThread,
    PartialDelivery,
    PermanentFailure,
    PinMessage,
    RateLimited,
    SendFile,
    SendMessage,
    Sent,
    TemporaryFailure,
    UnpinMessage,
    UnsupportedAction,
)
from bot.faults import fault_point
from bot.richtext import FormattedText
from storage import message_map
from storage.db import Database, insert_later, upsert
from storage.models import NamedPost, OutboxItem

logger = logging.getLogger(__name__)

Perform = Callable[[Action, Delivery], Awaitable[Sent | None]]
Merge = Callable[[Sequence[SendMessage]], SendMessage | None]


def chat_key(chat: ChatRef) -> str:
    return str(chat)


def parse_chat_key(key: str) -> ChatRef:
    platform, _, rest = key.partition(":")
    chat_id, _, thread = rest.partition("/")
    return ChatRef(platform, chat_id, thread or None)


@dataclass(frozen=True, slots=True)
class Pace:
    """At most ``count`` posts per ``window`` seconds in one chat, and at most
    ``burst_count`` per ``burst_window`` seconds (a shorter limit the platform also keeps,
    e.g. Telegram's "about one message a second" per chat, in bursts of three)."""

    count: int
    window: float
    burst_count: int | None = None
    burst_window: float = 0.0

    def scaled(self, factor: float) -> Pace:
        """The same pace with its windows multiplied by ``factor`` (tests, benchmarks)."""
        return replace(self, window=self.window * factor, burst_window=self.burst_window * factor)


@dataclass
class _Window:
    pace: Pace
    sent: deque[float]

    def wait(self, now: float) -> float:
        """Seconds to wait before the next post may go out."""
        pace = self.pace
        while self.sent and now - self.sent[0] >= max(pace.window, pace.burst_window):
            self.sent.popleft()
        in_window = [t for t in self.sent if now - t < pace.window]
        wait = 0.0
        if len(in_window) >= pace.count:
            wait = pace.window - (now - in_window[-pace.count])
        burst = pace.burst_count
        if burst is not None and len(self.sent) >= burst:
            since = now - self.sent[-burst]
            if since < pace.burst_window:
                wait = max(wait, pace.burst_window - since)
        return wait


@dataclass(frozen=True, slots=True)
class ChatStatus:
    """What ``forum-habitant status`` shows for one destination chat."""

    chat_key: str
    pending: int
    failed: int
    last_delivery: str | None
    last_error: str | None


class Outbox:
    """Enqueues actions durably and delivers them, one worker per destination chat."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        perform: Perform,
        *,
        pace: Callable[[ChatRef], Pace | None] = lambda chat: None,
        merge: Merge | None = None,
        text_limit: Callable[[ChatRef], int | None] = lambda chat: None,
        finds_lost_posts: Callable[[ChatRef], bool] = lambda chat: True,
        changed: Callable[[str], None] = lambda topic: None,
        max_batch: int = 50,
        backoff_base: float = 0.5,
        backoff_max: float = 300.0,
        monotonic: Callable[[], float] = time.monotonic,
        pause: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.db = db
        self.clock = clock
        self._perform = perform
        self._pace = pace
        self._merge = merge
        self._text_limit = text_limit
        self._finds_lost_posts = finds_lost_posts
        # Told, after the commit, when a delivery changed what the core remembers (a thread
        # opened changes the bridge's "links"): the dispatcher drops its memo of it.
        self._changed = changed
        self.max_batch = max_batch
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        # The pace's time: tests give a virtual one, so that whether a backlog is merged
        # never depends on how loaded the machine running them is.
        self._monotonic = monotonic
        self._pause = pause
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        self._windows: dict[str, _Window] = {}
        self._progress = asyncio.Condition()
        self.rounds = 0
        self._running = False

    # -- enqueueing -----------------------------------------------------------------------

    async def enqueue(
        self, session: AsyncSession, actions: Sequence[Action], *, source_key: str
    ) -> set[str]:
        """Add ``actions`` inside the caller's transaction; returns the chats to wake after it.

        Enqueueing the same ``source_key`` twice adds nothing the second time, so an update
        handled again after a crash cannot post twice.
        """
        rows = [
            {
                "platform": action.platform,
                "chat_key": chat_key(action.chat),
                "kind": type(action).__name__,
                "action": codec.encode(action),
                "source_key": source_key,
                "seq": seq,
                "status": "pending",
                "created_at": self.clock.now(),
                "attempts": 0,
                "result_ids": [],
            }
            for seq, action in enumerate(actions)
        ]
        for row in rows:
            insert_later(session, OutboxItem, row, ["source_key", "seq"])
        for action in actions:
            if isinstance(action, SendMessage) and action.post_key is not None:
                # Known by name from now on, so that an edit queued before the post is
                # delivered still finds it (the chat's queue delivers the post first).
                await upsert(
                    session,
                    NamedPost,
                    {
                        "key": action.post_key,
                        "chat_key": chat_key(action.chat),
                        "message_ids": [],
                        "created_at": self.clock.now(),
                    },
                    ["key", "chat_key"],
                    ["message_ids", "created_at"],
                )
        return {row["chat_key"] for row in rows}

    async def submit(self, actions: Sequence[Action], *, source_key: str) -> None:
        """Enqueue in a transaction of its own, then wake the workers."""
        async with self.db.write() as session:
            chats = await self.enqueue(session, actions, source_key=source_key)
        self.wake(chats)

    def wake(self, chats: Iterable[str]) -> None:
        for key in chats:
            if not self._running:
                continue
            event = self._wakeups.setdefault(key, asyncio.Event())
            event.set()
            task = self._workers.get(key)
            if task is None or task.done():
                self._workers[key] = asyncio.create_task(self._worker(key), name=f"outbox {key}")

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start a worker for every chat that still has pending items (after a restart)."""
        self._running = True
        async with self.db.read() as session:
            keys = (
                await session.execute(
                    select(OutboxItem.chat_key).where(OutboxItem.status == "pending").distinct()
                )
            ).scalars()
            self.wake(list(keys))

    async def stop(self) -> None:
        self._running = False
        tasks = list(self._workers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()

    async def pending_count(self) -> int:
        async with self.db.read() as session:
            query = (
                select(func.count()).select_from(OutboxItem).where(OutboxItem.status == "pending")
            )
            return int((await session.execute(query)).scalar_one())

    async def drain(self) -> None:
        """Wait until nothing is pending (tests and the console use it); never sleeps blindly.

        Callers bound the wait with ``asyncio.timeout`` when they need to.
        """
        if not self._running:
            raise RuntimeError("the outbox is not running: nothing would ever be delivered")
        while await self.pending_count():
            async with self._progress:
                with contextlib.suppress(TimeoutError):
                    # Re-check the database at least every half second in case the wake-up
                    # came from another process.
                    await asyncio.wait_for(self._progress.wait(), 0.5)

    async def _notify(self) -> None:
        async with self._progress:
            self.rounds += 1
            self._progress.notify_all()

    async def wait_until(self, check: Callable[[], Awaitable[bool]]) -> None:
        """Return once ``check()`` holds, re-checking after each delivery round."""
        while True:
            seen = self.rounds
            if await check():
                return
            await self._wait_past(seen)

    async def _wait_past(self, seen: int) -> None:
        async with self._progress:
            await self._progress.wait_for(lambda: self.rounds > seen)

    # -- delivery -------------------------------------------------------------------------

    async def _next_items(self, key: str, limit: int) -> list[OutboxItem]:
        def read(session: Session) -> list[OutboxItem]:
            query = (
                select(OutboxItem)
                .where(
                    OutboxItem.chat_key == key,
                    OutboxItem.status == "pending",
                    # Rows carried by another row's merged post go out with it.
                    or_(
                        col(OutboxItem.merged_into).is_(None),
                        col(OutboxItem.merged_into) == col(OutboxItem.id),
                    ),
                )
                .order_by(col(OutboxItem.id))
                .limit(limit)
            )
            return list(session.execute(query).scalars())

        # The outbox's bookkeeping runs as plain code in the database's own thread on SQLite:
        # a handful of short transactions per post, where aiosqlite's per-statement hand-offs
        # cost more than the post itself.
        return await self.db.read_now(read)

    async def _carried(self, head: OutboxItem) -> list[OutboxItem]:
        """The rows a merged post carries, head first, as written before it was first tried."""

        def read(session: Session) -> list[OutboxItem]:
            query = (
                select(OutboxItem)
                .where(col(OutboxItem.merged_into) == head.id, OutboxItem.status == "pending")
                .order_by(col(OutboxItem.id))
            )
            return list(session.execute(query).scalars())

        return await self.db.read_now(read)

    async def _carry(self, members: list[OutboxItem]) -> None:
        """Write which rows one post carries, before the post is made: after a crash, the
        same post is rebuilt from the same rows, found if it landed, and recorded for each."""
        head = members[0]

        def write(session: Session) -> None:
            session.execute(
                sa.update(OutboxItem)
                .where(col(OutboxItem.id).in_([m.id for m in members]))
                .values(merged_into=head.id)
            )

        await self.db.write_now(write)
        for member in members:
            member.merged_into = head.id

    async def _worker(self, key: str) -> None:
        wakeup = self._wakeups.setdefault(key, asyncio.Event())
        chat = parse_chat_key(key)
        while self._running:
            wakeup.clear()
            # One row is enough unless the chat is over its pace and a merge is possible.
            window = self._windows.get(_pace_key(chat))
            busy = window is not None and window.wait(self._monotonic()) > 0
            items = await self._next_items(key, self.max_batch if busy else 1)
            if not items:
                await self._notify()
                await wakeup.wait()
                continue
            head = items[0]
            if head.not_before is not None:
                delay = (head.not_before - self.clock.now()).total_seconds()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._sleep_forever(), delay)
            try:
                await self._deliver(chat, key, items)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug must not kill the chat's queue for good: note it and go on.
                logger.exception("outbox worker error", extra={"chat": key})
                await self._fail(head, "internal error", permanent=False)
            await self._notify()

    @staticmethod
    async def _sleep_forever() -> None:
        await asyncio.Event().wait()

    def _window(self, chat: ChatRef, key: str) -> _Window | None:
        window = self._windows.get(_pace_key(chat))
        if window is None:
            pace = self._pace(chat)
            if pace is None:
                return None
            window = self._windows[_pace_key(chat)] = _Window(pace, deque())
        return window

    async def _deliver(self, chat: ChatRef, key: str, items: list[OutboxItem]) -> None:
        head = items[0]
        action = codec.decode(head.action)
        members = [head]
        window = self._window(chat, key) if isinstance(action, SendMessage | SendFile) else None
        if head.merged_into == head.id and self._merge is not None:
            # A merged post tried before (perhaps posted before a crash): the same rows.
            members = await self._carried(head)
            action = self._merge([codec.decode(m.action) for m in members]) or action
        if window is not None:
            wait = window.wait(self._monotonic())
            if (
                wait > 0
                and len(members) == 1
                and self._merge is not None
                and isinstance(action, SendMessage)
            ):
                # Backlog beyond the pace: merge what is waiting rather than fall behind.
                batch = _mergeable_run(items, self._text_limit(chat))
                if len(batch) > 1:
                    merged = self._merge([codec.decode(i.action) for i in batch])
                    if merged is not None:
                        await self._carry(batch)
                        fault_point("in_merged_post")
                        action, members = merged, batch
        delivery = NO_DELIVERY
        if isinstance(action, SendMessage | SendFile | OpenThread):
            # Noted while the chat's window is still shut, so that the post goes out the
            # moment it opens (noted early, it is only looked for on a retry). A thread is
            # noted too: an adapter that cannot find a lost one again at least knows it may
            # be making a second.
            delivery = await self._mark_in_flight(head)
        elif head.result_ids:
            # An earlier try of an edit posted some of the parts it outgrew: they are the
            # message's now, edited like the rest rather than posted again.
            delivery = Delivery(sent_parts=tuple(head.result_ids))
        if window is not None:
            # The window may be shared (a group and its topics): wait until a slot is free
            # and take it at once, before another queue of the group can.
            # (A wait under a millisecond is rounding: a clock advanced by exactly the wait
            # may still fall short of it by a few ulps.)
            while (wait := window.wait(self._monotonic())) > 1e-3:
                await self._pause(wait)
            reserved = self._monotonic()
            window.sent.append(reserved)
        try:
            if len(members) > 1 and not self._finds_lost_posts(chat):
                assert isinstance(action, SendMessage)
                try:
                    sent = [await self._post_in_two_steps(head, action, delivery)]
                except _EditRefused as refused:
                    await self._unmerge(members, refused.cause, refused.take_back)
                    return
            else:
                resolved = await self._resolve(action, delivery, chat, key, head)
                sent = []
                fault_point("before_platform_call")
                for step, step_delivery in resolved:
                    result = await self._perform(step, step_delivery)
                    if result is not None:
                        sent.append(result)
            fault_point("after_platform_call")
        except PartialDelivery as partial:
            if window is not None:
                fresh = len(partial.sent_ids) - len(head.result_ids)
                # One slot was taken before the call.
                window.sent.extend([self._monotonic()] * max(0, fresh - 1))
            await self._keep_parts(head, partial.sent_ids)
            await self._after_failure(head, key, partial.cause)
            return
        except (RateLimited, TemporaryFailure, PermanentFailure, UnsupportedAction) as exc:
            await self._after_failure(head, key, exc)
            return
        if window is not None:
            # Each part of a split message counts against the platform's pace.
            posted = sum(len(result.message_ids) for result in sent) - len(head.result_ids)
            # The slot taken before the call counts from when the post was made (the
            # platform counts from then): later than reserved, never earlier.
            with contextlib.suppress(ValueError):
                window.sent.remove(reserved)
            window.sent.extend([self._monotonic()] * max(1, posted))
        await self._record(action, key, members, sent)

    # What a merged post shows for the moment between its two steps.
    PLACEHOLDER = FormattedText.plain("…")

    async def _post_in_two_steps(
        self, head: OutboxItem, action: SendMessage, delivery: Delivery
    ) -> Sent:
        """A merged post where a post lost in a crash cannot be found again (Telegram).

        A short placeholder is posted and its id kept, then edited into the merged text:
        an edit can be repeated safely. A crash can thus double only the placeholder, one
        message, never the residents' fifty.
        """
        ids = tuple(head.result_ids)
        if not ids:
            placeholder = SendMessage(chat=action.chat, content=self.PLACEHOLDER)
            fault_point("before_platform_call")
            sent = await self._perform(placeholder, delivery)
            ids = sent.message_ids if sent is not None else ()
            await self._keep_parts(head, ids)
        edit = EditMessage(
            chat=action.chat, message_id=ids[0], content=action.content, as_name=action.as_name
        )
        try:
            await self._perform(edit, Delivery(part_ids=ids[:1]))
        except PermanentFailure as refused:
            # The residents' words never showed: take the bare "…" back, then post them
            # one by one rather than lose them.
            take_back = DeleteMessage(chat=action.chat, message_id=ids[0])
            try:
                await self._perform(take_back, NO_DELIVERY)
            except (RateLimited, TemporaryFailure):
                # A retry away from success: queued, so that the "…" does not stay for good.
                raise _EditRefused(refused, take_back) from refused
            except (PermanentFailure, UnsupportedAction) as exc:
                logger.warning("placeholder %s in %s kept: %s", ids[0], head.chat_key, exc)
            raise _EditRefused(refused) from refused
        return Sent(action.chat, ids[:1])

    async def _unmerge(
        self, members: list[OutboxItem], cause: Exception, take_back: DeleteMessage | None
    ) -> None:
        """Give a merged post's rows back to the queue, each to go out alone.

        ``not_before`` keeps them out of any later merge (``_mergeable_run`` stops at it),
        so a platform that keeps refusing the edit cannot loop the same rows forever.
        ``take_back``, the deletion of a placeholder that failed for now, is queued with them.
        """
        logger.warning(
            "merged post refused (%s): its %d messages go out one by one", cause, len(members)
        )
        async with self.db.write() as session:
            if take_back is not None:
                source = f"placeholder:{members[0].id}:{take_back.message_id}"
                await self.enqueue(session, [take_back], source_key=source)
            await session.execute(
                sa.update(OutboxItem)
                .where(col(OutboxItem.id).in_([m.id for m in members]))
                .values(
                    merged_into=None,
                    result_ids=[],
                    in_flight_since=None,
                    not_before=self.clock.now(),
                    last_error=str(cause)[:1000],
                )
            )

    async def _keep_parts(self, head: OutboxItem, ids: tuple[str, ...]) -> None:
        def write(session: Session) -> None:
            session.execute(
                sa.update(OutboxItem)
                .where(col(OutboxItem.id) == head.id)
                .values(result_ids=list(ids))
            )

        await self.db.write_now(write)
        head.result_ids = list(ids)

    async def _after_failure(self, head: OutboxItem, key: str, exc: Exception) -> None:
        if isinstance(exc, RateLimited):
            logger.warning("rate limited in %s: retry after %.3g s", key, exc.retry_after)
            await self._postpone(head, exc.retry_after, str(exc), count_attempt=False)
        elif isinstance(exc, TemporaryFailure):
            delay = min(self.backoff_max, self.backoff_base * 2 ** min(head.attempts, 20))
            delay *= random.uniform(0.5, 1.0)
            logger.warning("temporary failure in %s: %s (retry in %.2g s)", key, exc, delay)
            await self._postpone(head, delay, str(exc), count_attempt=True)
        else:
            logger.error("permanent failure in %s: %s", key, exc)
            await self._fail(head, str(exc), permanent=True)

    async def _mark_in_flight(self, head: OutboxItem) -> Delivery:
        """Note that a post is about to be attempted; say if an earlier try may have landed.

        ``in_flight_since`` keeps the time of the first try that may have landed: later tries
        do not move it, so the adapter never takes an older post for this one.
        """
        maybe_sent = head.in_flight_since is not None
        first_try = head.in_flight_since or self.clock.now()
        if not maybe_sent:

            def write(session: Session) -> None:
                session.execute(
                    sa.update(OutboxItem)
                    .where(col(OutboxItem.id) == head.id)
                    .values(in_flight_since=first_try)
                )

            await self.db.write_now(write)
        # An earlier try may have posted the first parts: the adapter posts only the rest.
        return Delivery(
            key=f"fh{head.id}",
            maybe_sent=maybe_sent,
            sent_parts=tuple(head.result_ids),
            first_try_at=first_try,
        )

    async def _resolve(
        self, action: Action, delivery: Delivery, chat: ChatRef, key: str, head: OutboxItem
    ) -> list[tuple[Action, Delivery]]:
        """Turn origin references and post names into this chat's message ids."""
        if isinstance(action, OpenThread):
            return await self._resolve_thread(action, delivery, key)
        if isinstance(action, SendMessage) and action.reply_to_origin is not None:
            target = await self.copy_in(action.reply_to_origin, key)
            if target is None:
                target = await self._copy_soon(action.reply_to_origin, key)
            if target is not None:
                # The adapter makes it a native reply; the quote stays for platforms whose
                # relayed posts cannot reply natively (Discord webhooks).
                return [(replace(action, reply_to=target[0]), delivery)]
            return [(action, delivery)]
        if (
            isinstance(action, EditMessage | DeleteMessage | PinMessage | UnpinMessage)
            and action.post_key is not None
        ):
            ids = await self.post_ids(action.post_key, key)
            if not ids:
                logger.info("no post named %s in %s", action.post_key, key)
                return []
            if isinstance(action, DeleteMessage):
                return [(replace(action, message_id=mid), delivery) for mid in ids]
            if isinstance(action, EditMessage):
                parts = _with_parts(ids, delivery)
                return [(replace(action, message_id=ids[0]), Delivery(part_ids=parts))]
            # A pin names the first part: that is where the post starts.
            return [(replace(action, message_id=ids[0]), delivery)]
        if isinstance(action, EditMessage | DeleteMessage) and action.origin is not None:
            targets = await self.copy_in(action.origin, key)
            if targets is None:
                logger.info("no copy of %s in %s", action.origin, key)
                return []
            if isinstance(action, DeleteMessage):
                if await self._batched(action.origin, key):
                    # Queued before the merged post carrying it was recorded: the post holds
                    # other residents' words, and a deletion takes one message, not theirs.
                    logger.info("copy of %s in %s is in a merged post: kept", action.origin, key)
                    return []
                copies = await self._copies(action.origin, key)
                return [
                    (
                        replace(action, message_id=mid, origin=None),
                        Delivery(relayed_copy=mid in copies),
                    )
                    for mid in targets
                ]
            if await self._batched(action.origin, key):
                # Queued before the merged post carrying the copy was recorded.
                if action.if_merged is None:
                    logger.info(
                        "copy of %s in %s is in a merged post: not edited", action.origin, key
                    )
                    return []
                note = SendMessage(
                    chat=action.chat,
                    content=action.if_merged,
                    as_name=action.as_name,
                    reply_to=targets[0],
                )
                # A new post, kept like any other: a retry finds it rather than post it twice.
                return [(note, await self._mark_in_flight(head))]
            edit = replace(action, message_id=targets[0], origin=None)
            return [(edit, Delivery(part_ids=_with_parts(targets, delivery)))]
        if isinstance(action, EditMessage) and action.message_id and delivery.sent_parts:
            return [(action, Delivery(part_ids=_with_parts([action.message_id], delivery)))]
        return [(action, delivery)]

    async def _resolve_thread(
        self, action: OpenThread, delivery: Delivery, key: str
    ) -> list[tuple[Action, Delivery]]:
        """The post's message, unless its thread is recorded already (then nothing to do)."""

        def read(session: Session) -> tuple[bool, list[str]]:
            thread = session.get(NamedPost, (action.thread_key, key))
            post = session.get(NamedPost, (action.post_key, key))
            return thread is not None, list(post.message_ids) if post is not None else []

        opened, ids = await self.db.read_now(read)
        if opened:
            # A second OpenThread for the same discussion (a handler run twice, a retry): the
            # first one's thread stands, and no platform is asked for another.
            logger.info("thread %s in %s is open already", action.thread_key, key)
            return []
        if not ids:
            logger.info("no post named %s in %s: no thread opened", action.post_key, key)
            return []
        return [(replace(action, message_id=ids[0]), delivery)]

    async def post_ids(self, post_key: str, key: str) -> list[str]:
        """Every part of the post named ``post_key`` in chat ``key`` (empty: not posted)."""
        async with self.db.read() as session:
            row = await session.get(NamedPost, (post_key, key))
            return list(row.message_ids) if row is not None else []

    async def _copy_soon(self, ref: MessageRef, key: str) -> list[str] | None:
        """A reply can follow its target within milliseconds: if a post in the target's chat
        is still being recorded, wait for it (briefly) before falling back to a quote."""
        ref_key = chat_key(ref.chat)

        async def settled() -> bool:
            async with self.db.read() as session:
                busy = (
                    await session.execute(
                        select(func.count())
                        .select_from(OutboxItem)
                        .where(
                            OutboxItem.chat_key == ref_key,
                            OutboxItem.status == "pending",
                            col(OutboxItem.in_flight_since).is_not(None),
                        )
                    )
                ).scalar_one()
            return not busy

        if await settled():
            return None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self.wait_until(settled)
        return await self.copy_in(ref, key)

    async def _copies(self, ref: MessageRef, key: str) -> set[str]:
        async with self.db.read() as session:
            return set(
                await message_map.copies_of(session, chat_key(ref.chat), ref.message_id, key)
            )

    async def _batched(self, ref: MessageRef, key: str) -> bool:
        async with self.db.read() as session:
            return await message_map.is_batched(session, chat_key(ref.chat), ref.message_id, key)

    async def copy_in(self, ref: MessageRef, key: str) -> list[str] | None:
        """The ids, in chat ``key``, of the message ``ref`` (its copies, or its original)."""
        async with self.db.read() as session:
            return await message_map.ids_in(session, chat_key(ref.chat), ref.message_id, key)

    async def _record(
        self, action: Action, key: str, members: list[OutboxItem], sent: list[Sent]
    ) -> None:
        ids = [mid for result in sent for mid in result.message_ids]
        now = self.clock.now()
        head_id = members[0].id
        grown = isinstance(action, EditMessage) and bool(ids)
        links: list[dict[str, object]] = []
        for member in members:
            member_action = codec.decode(member.action)
            origin = getattr(member_action, "origin", None)
            if isinstance(member_action, SendMessage | SendFile) and origin is not None:
                links.extend(
                    {
                        "origin_chat_key": chat_key(origin.chat),
                        "origin_message_id": origin.message_id,
                        "copy_chat_key": key,
                        "copy_message_id": mid,
                        "part": part,
                        "batched": len(members) > 1,
                        "outbox_id": head_id,
                        "created_at": now,
                    }
                    for part, mid in enumerate(ids)
                )
        if grown and isinstance(action, EditMessage) and action.origin is not None:
            links.extend(
                {
                    "origin_chat_key": chat_key(action.origin.chat),
                    "origin_message_id": action.origin.message_id,
                    "copy_chat_key": key,
                    "copy_message_id": mid,
                    "part": part,
                    "batched": False,
                    "outbox_id": head_id,
                    "created_at": now,
                }
                for part, mid in enumerate(ids)
            )

        def write(session: Session) -> None:
            session.execute(
                sa.update(OutboxItem)
                .where(col(OutboxItem.id) == head_id)
                .values(
                    status="delivered",
                    delivered_at=now,
                    attempts=OutboxItem.attempts + 1,
                    result_ids=ids,
                    last_error=None,
                    in_flight_since=None,
                )
            )
            if len(members) > 1:
                session.execute(
                    sa.update(OutboxItem)
                    .where(col(OutboxItem.id).in_([m.id for m in members[1:]]))
                    .values(status="delivered", delivered_at=now, merged_into=head_id)
                )
            if isinstance(action, SendMessage | EditMessage) and action.post_key is not None:
                # An edit that outgrew its parts posted the rest after them: the post has
                # more parts now, and a later edit or deletion must reach them too.
                if isinstance(action, SendMessage) or grown:
                    session.execute(
                        sa.update(NamedPost)
                        .where(
                            col(NamedPost.key) == action.post_key, col(NamedPost.chat_key) == key
                        )
                        .values(message_ids=ids, outbox_id=head_id)
                    )
            elif isinstance(action, DeleteMessage) and action.post_key is not None:
                session.execute(
                    sa.delete(NamedPost).where(
                        col(NamedPost.key) == action.post_key, col(NamedPost.chat_key) == key
                    )
                )
            elif isinstance(action, OpenThread) and sent:
                # The thread (or, without an id, the reply chain) is known from now on, in the
                # transaction that marks the row delivered: a retry after a crash finds it
                # here and asks the platform for nothing.
                upsert(
                    session,
                    NamedPost,
                    {
                        "key": action.thread_key,
                        "chat_key": key,
                        "outbox_id": head_id,
                        "message_ids": ids,
                        "created_at": now,
                    },
                    ["key", "chat_key"],
                    ["outbox_id", "message_ids"],
                )
            message_map.record(session, links)

        await self.db.write_now(write)
        if isinstance(action, OpenThread) and sent:
            # The bridge reads its links once a minute at most: a new thread is a new link.
            self._changed("links")

    async def _postpone(
        self, item: OutboxItem, delay: float, error: str, *, count_attempt: bool
    ) -> None:
        async with self.db.write() as session:
            row = await session.get(OutboxItem, item.id)
            assert row is not None
            row.not_before = self.clock.now() + timedelta(seconds=delay)
            row.last_error = error[:1000]
            if count_attempt:
                row.attempts += 1
            elif item.in_flight_since is None:
                # A rate limit is a clear "not posted" — unless an earlier try (a 5xx, a
                # crash) may have landed: that doubt stays until the post is recorded.
                row.in_flight_since = None

    async def _fail(self, item: OutboxItem, error: str, *, permanent: bool) -> None:
        async with self.db.write() as session:
            row = await session.get(OutboxItem, item.id)
            assert row is not None
            row.attempts += 1
            row.last_error = error[:1000]
            if permanent or row.attempts >= 10:
                row.status = "failed"
                if row.merged_into == row.id:
                    # The rows its merged post carried fail with it, visibly, not silently.
                    await session.execute(
                        sa.update(OutboxItem)
                        .where(
                            col(OutboxItem.merged_into) == row.id,
                            col(OutboxItem.status) == "pending",
                        )
                        .values(status="failed", last_error=error[:1000])
                    )
            else:
                row.not_before = self.clock.now() + timedelta(seconds=self.backoff_base)

    # -- visibility -------------------------------------------------------------------------

    async def status(self) -> list[ChatStatus]:
        """Backlog, last delivery and last error of every destination chat."""
        async with self.db.read() as session:
            return await delivery_status(session)


async def delivery_status(session: AsyncSession) -> list[ChatStatus]:
    """Backlog, last delivery and last error of every destination chat."""
    rows = (
        await session.execute(
            select(
                OutboxItem.chat_key,
                func.sum(sa.case((col(OutboxItem.status) == "pending", 1), else_=0)),
                func.sum(sa.case((col(OutboxItem.status) == "failed", 1), else_=0)),
                func.max(OutboxItem.delivered_at),
            ).group_by(OutboxItem.chat_key)
        )
    ).all()
    errors: dict[str, str] = dict(
        (
            await session.execute(
                select(OutboxItem.chat_key, OutboxItem.last_error)
                .where(
                    col(OutboxItem.last_error).is_not(None),
                    or_(
                        col(OutboxItem.status) == "pending",
                        col(OutboxItem.status) == "failed",
                    ),
                )
                .order_by(col(OutboxItem.id))
            )
        ).all()
    )
    return [
        ChatStatus(
            chat_key=key,
            pending=int(pending or 0),
            failed=int(failed or 0),
            last_delivery=last.isoformat() if last else None,
            last_error=errors.get(key),
        )
        for key, pending, failed, last in rows
    ]


class _EditRefused(Exception):
    """The edit that fills a merged post's placeholder was refused for good."""

    def __init__(self, cause: PermanentFailure, take_back: DeleteMessage | None = None) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.take_back = take_back


def _with_parts(ids: Sequence[str], delivery: Delivery) -> tuple[str, ...]:
    """A message's parts, with those an earlier try of an edit added after them."""
    return tuple(dict.fromkeys([*ids, *delivery.sent_parts]))


def _pace_key(chat: ChatRef) -> str:
    """The platform's unit of rate limits: a group with all its topics (a Telegram forum's
    topics share the group's budget), a channel with its threads."""
    return f"{chat.platform}:{chat.chat_id}"


def _mergeable_run(items: list[OutboxItem], limit: int | None) -> list[OutboxItem]:
    """The leading run of plain relayed posts that may share one message.

    The run stops before the merged text would outgrow one message of the platform
    (``limit``): a merged post is never split, so it is posted whole or not at all.
    """
    run: list[OutboxItem] = []
    size = 0
    for item in items:
        action = codec.decode(item.action)
        if isinstance(action, SendMessage):
            size += len(action.content.text) + len(action.as_name or "") + 4
            if action.reply_fallback is not None:
                size += len(action.reply_fallback.text) + 1
        if limit is not None and run and size > limit * 0.9:
            break
        if not (
            isinstance(action, SendMessage)
            and action.origin is not None
            # A relay answering a given message (a post's reply chain) keeps its own place.
            and action.reply_to is None
            and not action.buttons
            and not action.attachments
            and action.interaction_id is None
            and item.not_before is None
        ):
            break
        run.append(item)
    return run
