"""Polls: one person, one vote, one tally — as residents and moderators use them."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bot.buttons import ButtonTemplate
from bot.clock import FixedClock
from bot.config import ChannelConfig, RolesConfig, Settings
from bot.dispatcher import Press
from bot.events import Author, ButtonPressed, ChatRef, SendFile, SendMessage
from handlers import polls
from storage import people
from storage.db import Database
from storage.models import Person, Poll, PollBallot, PollVoter
from tests.forum import Forum
from tests.kit import NOW, command, fake_context

NORD = ChatRef("telegram", "-100500")
SUD = ChatRef("telegram", "-100600")
PAUL_TG = Author(platform="telegram", user_id="7", display_name="Paul Lefebvre")
PAUL_DC = Author(platform="discord", user_id="70", display_name="Paul Lefebvre")
JEANNE = Author(platform="discord", user_id="3", display_name="Jeanne Vasseur")


def _settings() -> Settings:
    return Settings(
        database_url="sqlite+aiosqlite:///:memory:",
        channels=[
            ChannelConfig(platform="telegram", id="-100500", neighbourhood="Cité 5"),
            ChannelConfig(platform="telegram", id="-100600", neighbourhood="Centre"),
        ],
    )


async def _people(db: Database, n: int = 6) -> None:
    async with db.write() as session:
        for i in range(1, n + 1):
            session.add(Person(id=i, display_name=f"Personne {i}"))


async def _poll(db: Database, kind: str = "single", **values: Any) -> int:
    options = {
        "yesno": ["Oui", "Non", "Abstention"],
        "dates": ["2026-12-05T18:00:00+01:00", "2026-12-06T18:00:00+01:00"],
    }.get(kind, ["Samedi", "Dimanche", "Lundi"])
    row: dict[str, Any] = {
        "kind": kind,
        "question": "Quel jour pour la fête des voisins ?",
        "options": options,
        "closes_at": NOW + timedelta(days=3),
        "created_by_person_id": 1,
        "origin_chat_key": str(NORD),
        **values,
    }
    async with db.write() as session:
        poll = Poll(**row)
        session.add(poll)
        await session.flush()
        assert poll.id is not None
        return poll.id


def _press(template: ButtonTemplate, author: Author, chat: ChatRef = NORD, **values: Any) -> Press:
    data = template.build(**values)
    event = ButtonPressed(
        chat=chat, author=author, at=NOW, data=data, message_id="5", interaction_id="i"
    )
    parsed = template.parse(data)
    assert parsed is not None
    return Press(event, parsed)


async def _vote(
    db: Database,
    author: Author,
    person_id: int,
    poll_id: int,
    n: int,
    *,
    chat: ChatRef = NORD,
    clock: FixedClock | None = None,
) -> str | None:
    async with db.write() as session:
        press = _press(polls.OPTION_BUTTON, author, chat, id=poll_id, n=n)
        ctx = fake_context(
            session, press.event, person_id=person_id, settings=_settings(), clock=clock
        )
        return await polls.press_option(ctx, press)


async def _ballots(db: Database, poll_id: int) -> list[list[Any]]:
    async with db.read() as session:
        rows = await session.execute(
            sa.select(PollBallot.choice).where(PollBallot.poll_id == poll_id)
        )
        return sorted(list(c) for c in rows.scalars())


async def test_a_person_votes_once_from_either_platform(db: Database) -> None:
    """Paul's Telegram and Discord accounts are one person: one ballot, changed not added."""
    await _people(db)
    poll_id = await _poll(db)
    assert await _vote(db, PAUL_TG, 2, poll_id, 0) == "Vote enregistré."
    assert await _vote(db, PAUL_TG, 2, poll_id, 0) == "Votre vote est déjà enregistré."
    assert await _vote(db, PAUL_DC, 2, poll_id, 1) == "Vote modifié."
    assert await _vote(db, JEANNE, 3, poll_id, 1) == "Vote enregistré."
    assert await _ballots(db, poll_id) == [[1], [1]]
    async with db.read() as session:
        voters = (await session.execute(sa.select(PollVoter))).scalars().all()
    assert sorted((v.person_id, v.account_key) for v in voters) == [
        (2, "telegram:7"),
        (3, "discord:3"),
    ]


async def test_the_same_vote_pressed_twenty_times_at_once_counts_once(db: Database) -> None:
    """Twenty presses in twenty concurrent transactions: one voter, one ballot."""
    await _people(db)
    poll_id = await _poll(db)
    answers = await asyncio.gather(*(_vote(db, PAUL_TG, 2, poll_id, 0) for _ in range(20)))
    assert answers.count("Vote enregistré.") == 1, answers
    assert set(answers) == {"Vote enregistré.", "Votre vote est déjà enregistré."}
    assert await _ballots(db, poll_id) == [[0]]


async def test_no_vote_after_the_close_outside_the_electorate_or_on_a_forged_button(
    db: Database,
) -> None:
    await _people(db)
    poll_id = await _poll(db, neighbourhood="Cité 5")
    assert await _vote(db, PAUL_TG, 2, poll_id, 0, chat=SUD) == (
        "Ce sondage est réservé aux habitants de Cité 5 : votez depuis son groupe."
    )
    assert await _vote(db, PAUL_TG, 2, poll_id, 7) == "Ce bouton n'est plus valable."
    assert await _vote(db, PAUL_TG, 2, 999_999, 0) == "Ce sondage n'existe pas."
    late = FixedClock(NOW + timedelta(days=3, seconds=1))
    assert await _vote(db, PAUL_TG, 2, poll_id, 0, clock=late) == "Ce sondage est clos."
    async with db.write() as session:
        press = _press(polls.SLOT_BUTTON, PAUL_TG, id=poll_id, n=0, a="y")
        ctx = fake_context(session, press.event, person_id=2, settings=_settings())
        assert await polls.press_slot(ctx, press) == "Ce bouton n'est plus valable."
    assert await _ballots(db, poll_id) == []


async def test_several_choices_toggle_within_the_maximum(db: Database) -> None:
    await _people(db)
    poll_id = await _poll(db, "multiple", max_choices=2)
    assert await _vote(db, PAUL_TG, 2, poll_id, 0) == "Vote enregistré."
    assert await _vote(db, PAUL_TG, 2, poll_id, 2) == "Vote modifié."
    assert await _vote(db, PAUL_TG, 2, poll_id, 1) == (
        "2 choix au plus : appuyez sur un choix déjà fait pour le retirer."
    )
    assert await _vote(db, PAUL_TG, 2, poll_id, 0) == "Vote modifié."
    assert await _ballots(db, poll_id) == [[2]]


async def test_an_anonymous_vote_keeps_no_link_and_cannot_be_changed(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """Who voted and what was chosen are two rows with nothing in common, and the logs (at
    the bot's level, INFO) name no voter."""
    caplog.set_level(logging.INFO)
    await _people(db)
    poll_id = await _poll(db, anonymous=True, allow_change=False)
    assert await _vote(db, PAUL_TG, 2, poll_id, 0) == "Vote enregistré."
    assert await _vote(db, JEANNE, 3, poll_id, 1) == "Vote enregistré."
    assert await _vote(db, PAUL_DC, 2, poll_id, 1) == (
        "Votre vote est déjà enregistré (un vote anonyme ne peut pas être changé)."
    )
    async with db.read() as session:
        voters = (await session.execute(sa.select(PollVoter))).scalars().all()
        ballots = (await session.execute(sa.select(PollBallot))).scalars().all()
    assert all(v.ballot_id is None and v.voted_at is None for v in voters)
    assert sorted(b.choice for b in ballots) == [[0], [1]]
    identities = ["7", "70", "3", "telegram:7", "discord:3", "Paul", "Jeanne", "Lefebvre"]
    for ballot in ballots:
        row = f"{ballot.id} {ballot.poll_id} {ballot.choice}"
        assert not any(f" {who} " in f" {row} " for who in identities), row
        assert set(PollBallot.model_fields) == {"id", "poll_id", "choice"}
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not any(who in logged for who in ("telegram:7", "discord:3", "Paul", "Jeanne"))


async def test_a_date_poll_keeps_one_answer_per_slot(db: Database) -> None:
    await _people(db)
    poll_id = await _poll(db, "dates")
    for n, answer in ((0, "y"), (1, "m"), (0, "n")):
        async with db.write() as session:
            press = _press(polls.SLOT_BUTTON, PAUL_TG, id=poll_id, n=n, a=answer)
            ctx = fake_context(session, press.event, person_id=2, settings=_settings())
            await polls.press_slot(ctx, press)
    assert await _ballots(db, poll_id) == [["no", "maybe"]]


async def test_a_ranked_ballot_is_typed_and_checked(db: Database) -> None:
    await _people(db)
    poll_id = await _poll(db, "ranked")

    async def rank(args: str) -> str:
        async with db.write() as session:
            ctx = fake_context(session, command("classer", args, chat=NORD), person_id=2)
            ctx.settings = _settings()
            actions = await polls.rank(ctx, ctx.event)  # type: ignore[arg-type]
            return actions[0].content.text  # type: ignore[attr-defined]

    assert (await rank(f"{poll_id}")).startswith("Utilisation : /classer")
    assert (await rank(f"{poll_id} 1 1")).startswith("Donnez le numéro de chaque option")
    assert (await rank(f"{poll_id} 4")).startswith("Donnez le numéro de chaque option")
    assert (await rank(f"{poll_id} ²")).startswith("Utilisation : /classer")
    assert await rank(f"{poll_id} 3 1") == "Vote enregistré."
    assert await rank(f"{poll_id} 3, 1, 2") == "Vote modifié."
    assert await _ballots(db, poll_id) == [[2, 0, 1]]


async def test_linking_two_voters_keeps_one_vote(db: Database) -> None:
    await _people(db)
    poll_id = await _poll(db)
    await _vote(db, PAUL_TG, 2, poll_id, 0)
    await _vote(db, PAUL_DC, 4, poll_id, 1)
    async with db.write() as session:
        await people.merge_persons(session, 2, 4)
    assert await _ballots(db, poll_id) == [[0]]


async def test_the_close_posts_the_result_once_with_its_chart(db: Database) -> None:
    await _people(db)
    poll_id = await _poll(db, live_results=False)
    await _vote(db, PAUL_TG, 2, poll_id, 0)
    await _vote(db, JEANNE, 3, poll_id, 0)
    results: list[list[Any]] = []
    for _ in range(2):
        async with db.write() as session:
            ctx = fake_context(session, command("cloturer", str(poll_id), chat=NORD), person_id=1)
            ctx.settings = _settings()
            await polls.close(ctx, poll_id)
            results.append(ctx.actions)
    files = [a for a in results[0] if isinstance(a, SendFile)]
    texts = [a.content.text for a in results[0] if isinstance(a, SendMessage)]
    assert results[1] == [], "closed twice"
    async with db.read() as session:
        poll = await session.get(Poll, poll_id)
    assert poll is not None and poll.status == "closed"
    assert poll.result is not None and poll.result["counts"] == [2, 0, 0]
    # No named post in this test's database: the edit and the result go nowhere, but the
    # chart is drawn and the text says it all once there is a chat.
    assert files == [] and texts == []


async def test_a_poll_from_the_form_to_its_result(tmp_path: Path) -> None:
    """A moderator opens a poll on the console, residents vote, the close posts the result."""
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'forum.db'}",
        roles=RolesConfig(moderators=["console:modo"]),
    )
    async with Forum(settings) as forum:
        assert (await forum.answer("/sondage", as_name="Paul")) == (
            "Seule la modération peut ouvrir un sondage ici."
        )
        await forum.say("/sondage", as_name="Modo")
        await forum.say("Quel jour pour la fête des voisins ?", as_name="Modo")
        await forum.say("1", as_name="Modo")
        assert (await forum.answer("Samedi", as_name="Modo")).startswith(
            "Indiquez de 2 à 10 options, une par ligne."
        )
        await forum.say("Samedi\nDimanche", as_name="Modo")
        await forum.say("-", as_name="Modo")
        await forum.say("hier", as_name="Modo")
        for answer in ("2", "1", "1"):
            await forum.say(answer, as_name="Modo")
        # Checked with the whole form: the closing date is asked again, the rest is kept.
        asked = await forum.answer("1", as_name="Modo")
        assert asked.startswith(
            "La clôture doit être dans le futur.\nNouveau sondage — question 5/9"
        )
        posted = await forum.say("dans 2 jours", as_name="Modo")
        post = next(p for p in posted if p.text.startswith("Sondage n°1 :"))
        assert "Résultats après la clôture." in post.text
        assert [b for _, b in post.buttons] == ["poll:1:o:0", "poll:1:o:1"]
        await forum.say(":clic poll:1:o:1", as_name="Paul")
        await forum.say(":clic poll:1:o:1", as_name="Jeanne")
        assert (await forum.answer("/resultats 1", as_name="Paul")).startswith(
            "Les résultats seront visibles après la clôture"
        )
        forum.clock.advance(timedelta(days=2, minutes=1))
        await forum.tick()
        results = [p for p in forum.console.state.posted if p.text.startswith("Résultat du")]
        assert len(results) == 1 and "2 votant·es" in results[0].text
        assert any(p.text.startswith("📎 sondage-1.png") for p in forum.console.state.posted)
        await forum.say(":clic poll:1:o:0", as_name="Luc")
        assert "(pour vous) Ce sondage est clos." in forum.lines[-1]
    # A restart after the close posts nothing again.
    async with Forum(settings, clock=forum.clock) as again:
        await again.tick()
        assert not [p for p in again.console.state.posted if p.text.startswith("Résultat du")]
