"""What the core remembers between events: kept only once committed, dropped on change."""

from __future__ import annotations

from bot.memo import Memo


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Loads:
    def __init__(self, value: object) -> None:
        self.value = value
        self.count = 0

    async def __call__(self) -> object:
        self.count += 1
        return self.value


async def test_what_a_transaction_loads_is_its_own_until_it_commits() -> None:
    memo = Memo()
    first, second = memo.view(), memo.view()
    load = Loads(7)
    assert await first.get("channels", "tg:1", load) == 7
    assert await first.get("channels", "tg:1", load) == 7
    assert load.count == 1
    # Not committed yet: another transaction reads for itself.
    assert await second.get("channels", "tg:1", Loads(8)) == 8
    first.commit()
    third = memo.view()
    other = Loads(9)
    assert await third.get("channels", "tg:1", other) == 7
    assert other.count == 0


async def test_a_rolled_back_transaction_leaves_nothing_behind() -> None:
    memo = Memo()
    view = memo.view()
    await view.get("channels", "tg:1", Loads(7))
    view.rollback()
    view.commit()
    fresh = Loads(8)
    assert await memo.view().get("channels", "tg:1", fresh) == 8
    assert fresh.count == 1


async def test_a_change_elsewhere_is_not_overwritten_by_an_older_read() -> None:
    memo = Memo()
    reader, writer = memo.view(), memo.view()
    # The reader loads the links, then another transaction changes them and commits first.
    await reader.get("links", None, Loads(["old"]))
    writer.drop("links")
    writer.commit()
    reader.commit()
    fresh = Loads(["new"])
    assert await memo.view().get("links", None, fresh) == ["new"]
    assert fresh.count == 1


async def test_a_change_drops_the_topic_for_everyone_and_only_that_topic() -> None:
    memo = Memo()
    view = memo.view()
    await view.get("links", None, Loads(["a"]))
    await view.get("staff", None, Loads(["Maire"]))
    view.commit()
    memo.drop("links")
    links, staff = Loads(["b"]), Loads(["x"])
    later = memo.view()
    assert await later.get("links", None, links) == ["b"]
    assert await later.get("staff", None, staff) == ["Maire"]
    assert (links.count, staff.count) == (1, 0)


async def test_entries_age_out_so_another_process_change_shows() -> None:
    ticks = Ticks()
    memo = Memo(ttl=60, clock=ticks)
    view = memo.view()
    await view.get("language", None, Loads({"a": "en"}))
    view.commit()
    ticks.now = 59
    assert await memo.view().get("language", None, Loads({})) == {"a": "en"}
    ticks.now = 61
    assert await memo.view().get("language", None, Loads({})) == {}
