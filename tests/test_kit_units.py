"""Each part of the kit, unit-tested with a fake context: no app, no platform, milliseconds."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from bot import codec, due
from bot.config import BridgeConfig, ChannelConfig, Settings
from bot.dispatcher import Press
from bot.events import (
    ButtonPressed,
    ChatRef,
    DeleteMessage,
    EditMessage,
    Event,
    MessageReceived,
    PinMessage,
    SendMessage,
    UnpinMessage,
)
from bot.gate import HELD, Gate, GateCheck, Outcome, Verdict, hold
from bot.handling import Context, Person, Role
from handlers import bridge, held
from storage.db import Database
from storage.models import DueTime, FormSession, HeldMessage, InboxUpdate, NamedPost
from tests.kit import CHAT, MARIE, NOW, command, committed, fake_context, message

OTHER = ChatRef("discord", "987")


# -- the person ---------------------------------------------------------------------------


def test_an_admin_holds_every_role_and_a_resident_none_of_staffs() -> None:
    admin = Person(1, 1, "telegram:1", frozenset({Role.ADMIN}))
    resident = Person(2, 2, "telegram:2")
    assert admin.has(Role.MODERATOR) and admin.has(Role.COUNCIL) and admin.is_staff
    assert not resident.has(Role.MODERATOR, Role.COUNCIL) and not resident.is_staff


# -- named posts --------------------------------------------------------------------------


async def test_named_posts_are_edited_pinned_and_deleted_wherever_they_were_posted(
    db: Database,
) -> None:
    async with db.write() as session:
        ctx = fake_context(session, command("sondage"))
        action = ctx.post("poll:42", CHAT, "Sondage")
        assert action.post_key == "poll:42" and ctx.actions == [action]
        # What the outbox writes with the post (in the same transaction) makes it findable.
        for chat in (CHAT, OTHER):
            session.add(NamedPost(key="poll:42", chat_key=str(chat), created_at=NOW))
        session.add(NamedPost(key="poll:43", chat_key=str(CHAT), created_at=NOW))
        await session.flush()
        ctx.actions.clear()
        assert await ctx.edit_post("poll:42", "3 votes") == 2
        assert await ctx.pin_post("poll:42") == 2
        assert await ctx.pin_post("poll:42", pin=False) == 2
        assert await ctx.delete_post("poll:42") == 2
        assert await ctx.edit_post("poll:99", "nobody") == 0
    kinds = [(type(a), str(a.chat), a.post_key) for a in ctx.actions]  # type: ignore[attr-defined]
    assert sorted(kinds, key=str) == sorted(
        [
            (kind, str(chat), "poll:42")
            for kind in (EditMessage, PinMessage, UnpinMessage, DeleteMessage)
            for chat in (CHAT, OTHER)
        ],
        key=str,
    )


# -- due times ----------------------------------------------------------------------------


async def test_schedule_writes_a_due_row_in_the_handlers_transaction(db: Database) -> None:
    async with db.write() as session:
        ctx = fake_context(session, command("rappel"))
        await ctx.schedule("remind:1", "remind", timedelta(hours=1), subject="x")
        await ctx.schedule("remind:1", "remind", timedelta(hours=2), subject="x")
    async with db.read() as session:
        rows = (await session.execute(sa.select(DueTime))).scalars().all()
    assert [(r.key, r.due_at) for r in rows] == [("remind:1", NOW + timedelta(hours=2))]
    async with db.write() as session:
        ctx = fake_context(session, command("rappel"))
        assert await ctx.cancel_due("remind:1")
    async with db.read() as session:
        assert await due.pending(session) == []


async def test_a_rolled_back_handler_leaves_no_due_row(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.write() as session:
            ctx = fake_context(session, command("rappel"))
            await ctx.schedule("remind:2", "remind", timedelta(hours=1))
            raise RuntimeError("the handler failed after scheduling")
    async with db.read() as session:
        assert await due.pending(session) == []


# -- forms --------------------------------------------------------------------------------


async def test_open_form_stores_the_state_and_asks_the_first_question(db: Database) -> None:
    from bot.forms import Field, FormSpec

    spec = FormSpec("idea", "New idea", (Field("title", "Title"), Field("more", "Details")))
    async with db.write() as session:
        ctx = fake_context(session, command("idee"))
        await ctx.open_form(spec, data={"proposal": 7})
        assert ctx.signals == []  # type: ignore[attr-defined]
        committed(ctx)
        assert ctx.signals == ["forms"]  # type: ignore[attr-defined]
    (question,) = ctx.actions
    assert isinstance(question, SendMessage) and "1/2" in question.content.text
    async with db.read() as session:
        row = (await session.execute(sa.select(FormSession))).scalar_one()
    assert (row.account_key, row.chat_key, row.form_id, row.step, row.data) == (
        "telegram:42",
        str(CHAT),
        "idea",
        0,
        {"proposal": 7},
    )
    assert row.expires_at == NOW + timedelta(minutes=30)


# -- the gate -----------------------------------------------------------------------------


async def test_the_first_check_that_does_not_pass_decides_and_is_named() -> None:
    seen: list[str] = []

    def check(name: str, verdict: Verdict | None):  # type: ignore[no-untyped-def]
        async def run(ctx: Context, event: Event) -> Verdict | None:
            seen.append(name)
            return verdict

        return GateCheck(name, run)

    gate = Gate(
        [
            check("ban", None),
            check("filter", Verdict(Outcome.HOLD, "a listed word")),
            check("flood", Verdict(Outcome.DROP, "too fast")),
        ]
    )
    event = message("bonjour")
    verdict = await gate.screen(fake_context(None, event), event)
    assert (verdict.outcome, verdict.check, verdict.reason) == (
        Outcome.HOLD,
        "filter",
        "a listed word",
    )
    assert seen == ["ban", "filter"]


async def test_the_gate_lets_the_bots_own_events_through_unchecked() -> None:
    from bot.events import CLOCK_AUTHOR, CLOCK_CHAT, TimeCame

    async def refuse(ctx: Context, event: Event) -> Verdict | None:
        return Verdict(Outcome.DROP, "no")

    event = TimeCame(chat=CLOCK_CHAT, author=CLOCK_AUTHOR, at=NOW, kind="k", subject="", key="k")
    verdict = await Gate([GateCheck("all", refuse)]).screen(fake_context(None, event), event)
    assert verdict.outcome is Outcome.PASS


async def _held(db: Database, text: str = "achetez") -> int:
    event = message(text)
    async with db.write() as session:
        ctx = fake_context(session, event)
        held_id = await hold(session, ctx, event, Verdict(Outcome.HOLD, "spam", check="filter"))
        # The same message held twice (an update handled again) keeps one record.
        assert await hold(session, ctx, event, Verdict(Outcome.HOLD, "spam")) is None
    assert held_id is not None
    return held_id


def _press(held_id: int, decision: str) -> Press:
    data = HELD.build(id=held_id, decision=decision)
    event = ButtonPressed(
        chat=CHAT, author=MARIE, at=NOW, data=data, message_id="5", interaction_id="i"
    )
    values = HELD.parse(data)
    assert values is not None
    return Press(event, values)


async def test_only_a_moderator_releases_a_held_message_and_only_once(db: Database) -> None:
    held_id = await _held(db)
    press = _press(held_id, "release")
    async with db.write() as session:
        resident = fake_context(session, press.event)
        refused = await held.decide(resident, press)
    assert refused == "Seuls les modérateurs peuvent décider des messages retenus."
    async with db.write() as session:
        moderator = fake_context(session, press.event, roles=(Role.MODERATOR,))
        assert await held.decide(moderator, press) == "Publié"
        committed(moderator)
    assert moderator.signals == ["inbox:core"]  # type: ignore[attr-defined]
    async with db.write() as session:
        again = fake_context(session, press.event, roles=(Role.MODERATOR,))
        assert await held.decide(again, press) == "Une décision a déjà été prise pour ce message."
    async with db.read() as session:
        stored = (await session.execute(sa.select(InboxUpdate))).scalars().all()
        row = await session.get(HeldMessage, held_id)
    assert [u.update_key for u in stored] == [f"released:{held_id}"]
    released = codec.decode(stored[0].payload)
    assert isinstance(released.original, MessageReceived)
    assert released.original.content.text == "achetez"
    assert row is not None and row.decision == "released"


async def test_a_dropped_message_is_never_handed_to_the_handlers(db: Database) -> None:
    held_id = await _held(db)
    press = _press(held_id, "drop")
    async with db.write() as session:
        ctx = fake_context(session, press.event, roles=(Role.MODERATOR,))
        assert await held.decide(ctx, press) == "Écarté"
    async with db.read() as session:
        assert (await session.execute(sa.select(InboxUpdate))).first() is None


# -- the bridge's handlers, without the app -----------------------------------------------


async def test_relay_message_addresses_every_linked_chat_with_the_authors_name(
    db: Database,
) -> None:
    settings = Settings(
        database_url=db.url,
        channels=[ChannelConfig(platform="telegram", id="-100123", neighbourhood="Ouest")],
        bridges=[BridgeConfig.model_validate({"telegram": "-100123", "discord": "987"})],
    )
    event = message("/ban tout le monde @everyone")
    async with db.write() as session:
        ctx = fake_context(session, event, settings=settings)
        actions = await bridge.relay_message(ctx, event)
    (relay,) = actions
    assert isinstance(relay, SendMessage)
    assert relay.chat == OTHER and relay.as_name == "Marie · Telegram"
    # A relayed text is never a command on the other side.
    assert relay.content.text.startswith("\u200b/ban")
    assert relay.origin is not None and relay.origin.message_id == event.message_id


async def test_a_name_that_could_pass_for_the_town_hall_is_marked() -> None:
    assert bridge.display_name("Mairie", CHAT) == "Mairie (habitant·e, non officiel) · Telegram"
    assert bridge.display_name("Marie", CHAT) == "Marie · Telegram"
