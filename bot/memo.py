"""What rarely changes, remembered across events: channel ids, bridge links, staff names.

Every event used to read these again, and a statement through the async ORM costs more than
the rest of a plain message's handling. An entry belongs to a *topic* ("channels", "links",
"language", "accounts"); a handler that changes one says so (``ctx.changed("links")``) and
the topic's entries are dropped. Entries also age out after ``ttl`` seconds, so that a change
made by another process (PostgreSQL, several bots) shows within that time.

An entry loaded inside a transaction may describe rows that the transaction wrote and that a
rollback will erase (a channel created by this very event): it stays *pending*, seen only by
the transaction that loaded it, until ``commit()``; ``rollback()`` forgets it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

# Past this many entries a topic starts afresh: a bound, not an eviction policy (a town has a
# few dozen channels and links; this only matters if something keys entries by resident).
MAX_ENTRIES = 10_000


class Memo:
    """Values by (topic, key) that every transaction may share once committed."""

    def __init__(self, ttl: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._kept: dict[str, dict[object, tuple[float, Any]]] = {}
        # Raised by every drop: what a transaction loaded before a change elsewhere is not
        # kept when it commits after that change.
        self.generation: dict[str, int] = {}

    def view(self) -> MemoView:
        """What one transaction sees: the shared entries and its own pending ones."""
        return MemoView(self)

    def find(self, topic: str, key: object) -> tuple[bool, Any]:
        found = self._kept.get(topic, {}).get(key)
        if found is not None and self.clock() - found[0] < self.ttl:
            return True, found[1]
        return False, None

    def keep(self, topic: str, entries: dict[object, tuple[float, Any]], generation: int) -> None:
        if self.generation.get(topic, 0) != generation:
            return
        kept = self._kept.setdefault(topic, {})
        if len(kept) + len(entries) > MAX_ENTRIES:
            kept.clear()
        kept.update(entries)

    def drop(self, topic: str | None = None) -> None:
        """Forget a topic (every topic with None)."""
        topics = list(self.generation.keys() | self._kept.keys()) if topic is None else [topic]
        for name in topics:
            self._kept.pop(name, None)
            self.generation[name] = self.generation.get(name, 0) + 1


class MemoView:
    """One transaction's use of a ``Memo``: what it loads stays its own until it commits."""

    def __init__(self, memo: Memo) -> None:
        self.memo = memo
        self._pending: dict[str, dict[object, tuple[float, Any]]] = {}
        self._generation: dict[str, int] = {}

    async def get(self, topic: str, key: object, load: Callable[[], Awaitable[T]]) -> T:
        """The remembered value, or ``await load()`` remembered (pending until commit)."""
        found = self._pending.get(topic, {}).get(key)
        if found is not None:
            return found[1]
        known, value = self.memo.find(topic, key)
        if known:
            return value
        generation = self.memo.generation.get(topic, 0)
        loaded = await load()
        self.put(topic, key, loaded, generation=generation)
        return loaded

    def peek(self, topic: str, key: object) -> tuple[bool, Any]:
        """(known, value) without loading anything."""
        found = self._pending.get(topic, {}).get(key)
        if found is not None:
            return True, found[1]
        return self.memo.find(topic, key)

    def put(self, topic: str, key: object, value: object, *, generation: int | None = None) -> None:
        """Remember ``value`` for this transaction, and for all once it commits."""
        if topic not in self._pending:
            self._pending[topic] = {}
            self._generation[topic] = (
                self.memo.generation.get(topic, 0) if generation is None else generation
            )
        self._pending[topic][key] = (self.memo.clock(), value)

    def drop(self, topic: str) -> None:
        """This transaction changed ``topic``: forget it here and everywhere."""
        self._pending.pop(topic, None)
        self.memo.drop(topic)

    def commit(self) -> None:
        """The transaction committed: what it loaded is now true for everyone."""
        for topic, entries in self._pending.items():
            self.memo.keep(topic, entries, self._generation[topic])
        self._pending.clear()
        self._generation.clear()

    def rollback(self) -> None:
        """The transaction rolled back: forget what it loaded."""
        self._pending.clear()
        self._generation.clear()
