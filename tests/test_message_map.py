"""The message map on both backends: copies, originals, batches, recording twice."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from storage import message_map
from storage.db import Database
from storage.models import MessageLink

NOW = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)
TELEGRAM = "telegram:-100123/7"
DISCORD = "discord:555/666"
OTHER = "discord:777"


def _link(
    origin: tuple[str, str], copy: tuple[str, str], part: int = 0, *, batched: bool = False
) -> dict[str, object]:
    return {
        "origin_chat_key": origin[0],
        "origin_message_id": origin[1],
        "copy_chat_key": copy[0],
        "copy_message_id": copy[1],
        "part": part,
        "batched": batched,
        "outbox_id": None,
        "created_at": NOW,
    }


@pytest.fixture
async def mapped(db: Database) -> Database:
    """A split copy (parts recorded out of order), a batched copy, a copy in another chat."""
    async with db.write() as session:
        message_map.record(
            session,
            [
                _link((TELEGRAM, "10"), (DISCORD, "d12"), 2),
                _link((TELEGRAM, "10"), (DISCORD, "d10"), 0),
                _link((TELEGRAM, "10"), (DISCORD, "d11"), 1),
                _link((TELEGRAM, "11"), (DISCORD, "d20"), batched=True),
                _link((TELEGRAM, "12"), (DISCORD, "d20"), batched=True),
                _link((TELEGRAM, "10"), (OTHER, "o10")),
                _link((DISCORD, "d99"), (TELEGRAM, "20")),
            ],
        )
    return db


async def test_copies_come_part_by_part(mapped: Database) -> None:
    async with mapped.read() as session:
        assert await message_map.copies_of(session, TELEGRAM, "10", DISCORD) == [
            "d10",
            "d11",
            "d12",
        ]
        assert await message_map.copies_of(session, TELEGRAM, "10", OTHER) == ["o10"]
        assert await message_map.copies_of(session, TELEGRAM, "10", TELEGRAM) == []
        assert await message_map.copies_of(session, TELEGRAM, "404", DISCORD) == []


async def test_original_of_a_copy(mapped: Database) -> None:
    async with mapped.read() as session:
        assert await message_map.original_of(session, DISCORD, "d11") == (TELEGRAM, "10")
        assert await message_map.original_of(session, OTHER, "o10") == (TELEGRAM, "10")
        assert await message_map.original_of(session, TELEGRAM, "20", DISCORD) == (DISCORD, "d99")
        assert await message_map.original_of(session, TELEGRAM, "20", OTHER) is None
        assert await message_map.original_of(session, TELEGRAM, "10") is None
        # A batched post stands for several originals: one of them answers.
        assert await message_map.original_of(session, DISCORD, "d20") in {
            (TELEGRAM, "11"),
            (TELEGRAM, "12"),
        }


async def test_ids_in_a_chat_are_the_copies_or_the_original(mapped: Database) -> None:
    async with mapped.read() as session:
        assert await message_map.ids_in(session, TELEGRAM, "10", DISCORD) == ["d10", "d11", "d12"]
        assert await message_map.ids_in(session, TELEGRAM, "10", OTHER) == ["o10"]
        # Telegram's 20 is a copy of Discord's d99: in Discord, the original is meant.
        assert await message_map.ids_in(session, TELEGRAM, "20", DISCORD) == ["d99"]
        assert await message_map.ids_in(session, TELEGRAM, "20", OTHER) is None
        assert await message_map.ids_in(session, TELEGRAM, "404", DISCORD) is None


async def test_batched_copies(mapped: Database) -> None:
    async with mapped.read() as session:
        assert await message_map.is_batched(session, TELEGRAM, "11", DISCORD)
        assert await message_map.is_batched(session, TELEGRAM, "12", DISCORD)
        assert not await message_map.is_batched(session, TELEGRAM, "10", DISCORD)
        assert not await message_map.is_batched(session, TELEGRAM, "11", OTHER)


async def test_recording_twice_keeps_the_first_links(mapped: Database) -> None:
    async with mapped.write() as session:
        message_map.record(
            session,
            [
                _link((TELEGRAM, "10"), (DISCORD, "again"), 0),
                _link((TELEGRAM, "10"), (DISCORD, "d13"), 3),
            ],
        )
        message_map.record(session, [])
    async with mapped.read() as session:
        assert await message_map.copies_of(session, TELEGRAM, "10", DISCORD) == [
            "d10",
            "d11",
            "d12",
            "d13",
        ]
        count = (await session.execute(select(func.count()).select_from(MessageLink))).scalar_one()
    assert count == 8
