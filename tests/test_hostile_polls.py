"""Hostile review of polls (issue 12): every promise of handlers/polls.py, attacked."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel, col

from bot.buttons import MAX_INT, ButtonTemplate
from bot.clock import FixedClock
from bot.config import BridgeConfig, ChannelConfig, RolesConfig, Settings
from bot.dispatcher import Press
from bot.events import (
    Author,
    ButtonPressed,
    ChatRef,
    EditMessage,
    SendFile,
    SendMessage,
    TimeCame,
    direct_chat,
)
from bot.i18n import Translator
from handlers import polls
from storage import people
from storage.db import Database
from storage.models import Account, DueTime, Person, Poll, PollBallot, PollVoter
from tests.forum import Forum
from tests.kit import NOW, command, fake_context
from tests.test_hostile_proposals import _race

NORD = ChatRef("telegram", "-100500")
NORD_TOPIC = ChatRef("telegram", "-100500", "77")
SUD = ChatRef("telegram", "-100600")
NORD_DC = ChatRef("discord", "900")
SUD_DC = ChatRef("discord", "901")
ELSEWHERE = ChatRef("telegram", "-100999")
PAUL_TG = Author(platform="telegram", user_id="7", display_name="Paul Lefebvre")
PAUL_DC = Author(platform="discord", user_id="70", display_name="Paul Lefebvre")
JEANNE = Author(platform="discord", user_id="3", display_name="Jeanne Vasseur")

RECORDED = "Vote enregistré."
ALREADY = "Votre vote est déjà enregistré."
CHANGED = "Vote modifié."
CLOSED = "Ce sondage est clos."
NO_POLL = "Ce sondage n'existe pas."
INVALID = "Ce bouton n'est plus valable."
CITE_5_ONLY = "Ce sondage est réservé aux habitants de Cité 5 : votez depuis son groupe."


def _settings(**values: Any) -> Settings:
    return Settings(
        database_url="sqlite+aiosqlite:///:memory:",
        channels=[
            ChannelConfig(platform="telegram", id="-100500", neighbourhood="Cité 5"),
            ChannelConfig(platform="telegram", id="-100600", neighbourhood="Centre"),
            ChannelConfig(platform="discord", id="900", neighbourhood="Cité 5"),
            ChannelConfig(platform="discord", id="901", neighbourhood="Centre"),
        ],
        bridges=[
            BridgeConfig(a="telegram:-100500", b="discord:900"),
            BridgeConfig(a="telegram:-100600", b="discord:901"),
        ],
        **values,
    )


async def _people(db: Database, n: int = 12) -> None:
    """Persons 1 to n, numbered by the database (so that its sequence goes on after them)."""
    async with db.write() as session:
        made = [Person(display_name=f"Personne {i}") for i in range(1, n + 1)]
        session.add_all(made)
        await session.flush()
        assert [p.id for p in made] == list(range(1, n + 1))


async def _poll(db: Database, kind: str = "single", **values: Any) -> int:
    options = {
        "yesno": ["Oui", "Non", "Abstention"],
        "dates": [
            "2026-12-05T18:00:00+01:00",
            "2026-12-06T18:00:00+01:00",
            "2026-12-07T18:00:00+01:00",
        ],
    }.get(kind, ["Samedi", "Dimanche", "Lundi", "Mardi"])
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


def _press(template: ButtonTemplate, author: Author, chat: ChatRef, **values: Any) -> Press:
    data = template.build(**values)
    event = ButtonPressed(
        chat=chat, author=author, at=NOW, data=data, message_id="5", interaction_id="i"
    )
    parsed = template.parse(data)
    assert parsed is not None
    return Press(event, parsed)


async def _option(
    db: Database,
    person_id: int,
    poll_id: int,
    n: int,
    *,
    author: Author = PAUL_TG,
    chat: ChatRef = NORD,
    clock: FixedClock | None = None,
) -> str | None:
    """One press of an option's button, in a transaction of its own."""
    async with db.write() as session:
        press = _press(polls.OPTION_BUTTON, author, chat, id=poll_id, n=n)
        ctx = fake_context(
            session, press.event, person_id=person_id, settings=_settings(), clock=clock
        )
        return await polls.press_option(ctx, press)


async def _slot(
    db: Database,
    person_id: int,
    poll_id: int,
    n: int,
    answer: str,
    *,
    author: Author = PAUL_TG,
    chat: ChatRef = NORD,
    clock: FixedClock | None = None,
) -> str | None:
    """One press of a date slot's yes (y), maybe (m) or no (n)."""
    async with db.write() as session:
        press = _press(polls.SLOT_BUTTON, author, chat, id=poll_id, n=n, a=answer)
        ctx = fake_context(
            session, press.event, person_id=person_id, settings=_settings(), clock=clock
        )
        return await polls.press_slot(ctx, press)


async def _rank(
    db: Database,
    person_id: int,
    args: str,
    *,
    author: Author = PAUL_TG,
    chat: ChatRef = NORD,
    clock: FixedClock | None = None,
) -> str:
    """/classer typed by a person; the text of the reply."""
    async with db.write() as session:
        event = command("classer", args, author=author, chat=chat)
        ctx = fake_context(session, event, person_id=person_id, settings=_settings(), clock=clock)
        actions = await polls.rank(ctx, event)
        assert len(actions) == 1
        reply = actions[0]
        assert isinstance(reply, SendMessage)
        return reply.content.text


async def _ballots(db: Database, poll_id: int) -> list[list[Any]]:
    async with db.read() as session:
        rows = await session.execute(
            sa.select(col(PollBallot.choice)).where(col(PollBallot.poll_id) == poll_id)
        )
        return sorted(list(c) for c in rows.scalars())


async def _voters(db: Database, poll_id: int) -> list[int]:
    async with db.read() as session:
        rows = await session.execute(
            sa.select(col(PollVoter.person_id)).where(col(PollVoter.poll_id) == poll_id)
        )
        return sorted(rows.scalars())


# -- 1. one person, one vote ----------------------------------------------------------------


async def test_concurrent_first_presses_of_several_choices_keep_every_choice(
    db: Database,
) -> None:
    """Three options pressed at once by a first-time voter: all three are kept."""
    await _people(db)
    poll_id = await _poll(db, "multiple")
    answers = await asyncio.gather(*(_option(db, 2, poll_id, n) for n in (0, 1, 2)))
    assert await _ballots(db, poll_id) == [[0, 1, 2]], answers
    assert ALREADY not in answers


async def test_concurrent_first_answers_to_date_slots_keep_every_answer(db: Database) -> None:
    """Three slots answered at once by a person who had not voted yet: three answers kept."""
    await _people(db)
    poll_id = await _poll(db, "dates")
    answers = await asyncio.gather(
        _slot(db, 2, poll_id, 0, "y"), _slot(db, 2, poll_id, 1, "m"), _slot(db, 2, poll_id, 2, "y")
    )
    assert await _ballots(db, poll_id) == [["yes", "maybe", "yes"]], answers


async def test_concurrent_toggles_on_a_cast_ballot_lose_and_double_nothing(db: Database) -> None:
    """A ballot already cast, then three other options toggled at once: each one is added once."""
    await _people(db)
    poll_id = await _poll(db, "multiple")
    assert await _option(db, 2, poll_id, 0) == RECORDED
    answers = await asyncio.gather(*(_option(db, 2, poll_id, n) for n in (1, 2, 3)))
    assert answers == [CHANGED] * 3
    assert await _ballots(db, poll_id) == [[0, 1, 2, 3]]
    assert await _voters(db, poll_id) == [2]


async def test_the_same_vote_from_both_platforms_at_once_counts_once(db: Database) -> None:
    """Ten presses from Paul's Telegram account and ten from his Discord one, all at once."""
    await _people(db)
    poll_id = await _poll(db)
    presses = [_option(db, 2, poll_id, 1, author=PAUL_TG) for _ in range(10)]
    presses += [_option(db, 2, poll_id, 1, author=PAUL_DC, chat=NORD_DC) for _ in range(10)]
    answers = await asyncio.gather(*presses)
    assert answers.count(RECORDED) == 1, answers
    assert set(answers) == {RECORDED, ALREADY}
    assert await _ballots(db, poll_id) == [[1]]


async def test_the_same_ranking_typed_twenty_times_at_once_counts_once(db: Database) -> None:
    """/classer N 3 1 2 sent twenty times at once: one ballot."""
    await _people(db)
    poll_id = await _poll(db, "ranked")
    answers = await asyncio.gather(*(_rank(db, 2, f"{poll_id} 3 1 2") for _ in range(20)))
    assert answers.count(RECORDED) == 1, answers
    assert await _ballots(db, poll_id) == [[2, 0, 1]]


async def test_a_vote_moved_by_a_link_can_still_be_changed_once(db: Database) -> None:
    """Only the merged-away person voted: the vote stays and is changed, not doubled."""
    await _people(db)
    poll_id = await _poll(db)
    assert await _option(db, 4, poll_id, 0, author=PAUL_DC, chat=NORD_DC) == RECORDED
    async with db.write() as session:
        await people.merge_persons(session, 2, 4)
    assert await _option(db, 2, poll_id, 0) == ALREADY
    assert await _option(db, 2, poll_id, 2) == CHANGED
    assert await _ballots(db, poll_id) == [[2]]
    assert await _voters(db, poll_id) == [2]


async def _two_accounts(db: Database) -> tuple[int, int]:
    """Person 2 with a Telegram and a Discord account; their account ids."""
    async with db.write() as session:
        tg = Account(person_id=2, platform="telegram", platform_user_id="7", display_name="Paul")
        dc = Account(person_id=2, platform="discord", platform_user_id="70", display_name="Paul")
        session.add_all([tg, dc])
        await session.flush()
        assert tg.id is not None and dc.id is not None
        return tg.id, dc.id


@pytest.mark.parametrize("anonymous", [False, True])
async def test_unlinking_after_voting_gives_the_same_account_no_second_vote(
    db: Database, anonymous: bool
) -> None:
    """Vote from Discord, /dissocier Discord, press again from it: still one ballot."""
    await _people(db)
    _, dc = await _two_accounts(db)
    poll_id = await _poll(db, anonymous=anonymous, allow_change=not anonymous)
    assert await _option(db, 2, poll_id, 0, author=PAUL_DC, chat=NORD_DC) == RECORDED
    async with db.write() as session:
        alone = await people.detach_account(session, dc, NOW)
    assert alone is not None
    await _option(db, alone, poll_id, 1, author=PAUL_DC, chat=NORD_DC)
    assert len(await _ballots(db, poll_id)) == 1, "one Discord account, two ballots"


async def test_a_several_choice_poll_without_changes_still_takes_several_choices(
    db: Database,
) -> None:
    """ "No changes" on a several-choice poll: a second option can still be picked."""
    await _people(db)
    poll_id = await _poll(db, "multiple", allow_change=False)
    assert await _option(db, 2, poll_id, 0) == RECORDED
    await _option(db, 2, poll_id, 2)
    assert await _ballots(db, poll_id) == [[0, 2]]


async def test_a_date_poll_without_changes_still_takes_an_answer_per_slot(db: Database) -> None:
    """ "No changes" on a date poll: every slot can still be answered."""
    await _people(db)
    poll_id = await _poll(db, "dates", allow_change=False)
    assert await _slot(db, 2, poll_id, 0, "y") == RECORDED
    await _slot(db, 2, poll_id, 1, "m")
    await _slot(db, 2, poll_id, 2, "y")
    assert await _ballots(db, poll_id) == [["yes", "maybe", "yes"]]


# -- 2. no vote after the close, from outside, or on a forged button ------------------------


async def test_no_vote_of_any_kind_between_closes_at_and_the_close(db: Database) -> None:
    """After closes_at, before the close fires: no slot, ranking or change is taken."""
    await _people(db)
    single = await _poll(db)
    dates = await _poll(db, "dates")
    ranked = await _poll(db, "ranked")
    assert await _option(db, 2, single, 0) == RECORDED
    late = FixedClock(NOW + timedelta(days=3))
    assert await _option(db, 2, single, 1, clock=late) == CLOSED
    assert await _slot(db, 2, dates, 0, "y", clock=late) == CLOSED
    assert await _rank(db, 2, f"{ranked} 1 2", clock=late) == CLOSED
    assert await _ballots(db, single) == [[0]]
    assert await _ballots(db, dates) == []
    assert await _ballots(db, ranked) == []


async def test_a_neighbourhood_poll_is_voted_only_from_its_neighbourhood(db: Database) -> None:
    """A Cité 5 poll: voted from its group, topic and Discord twin, nowhere else."""
    await _people(db)
    poll_id = await _poll(db, neighbourhood="Cité 5")
    ranked = await _poll(db, "ranked", neighbourhood="Cité 5")
    for chat in (direct_chat("telegram", "7"), ELSEWHERE, SUD, SUD_DC):
        assert await _option(db, 2, poll_id, 0, chat=chat) == CITE_5_ONLY, chat
        assert await _rank(db, 2, f"{ranked} 1", chat=chat) == CITE_5_ONLY, chat
    assert await _ballots(db, poll_id) == []
    assert await _option(db, 2, poll_id, 0, chat=NORD_TOPIC) == RECORDED
    assert await _option(db, 3, poll_id, 1, author=JEANNE, chat=NORD_DC) == RECORDED
    assert await _ballots(db, poll_id) == [[0], [1]]


async def test_an_all_town_poll_may_be_voted_from_a_private_message(db: Database) -> None:
    """Every resident votes: a private message is as good as a group, and counts once."""
    await _people(db)
    poll_id = await _poll(db)
    assert await _option(db, 2, poll_id, 0, chat=direct_chat("telegram", "7")) == RECORDED
    assert await _option(db, 2, poll_id, 0, chat=NORD) == ALREADY
    assert await _ballots(db, poll_id) == [[0]]


async def test_forged_buttons_get_a_short_notice_and_change_nothing(db: Database) -> None:
    """Forged ids (2**63-1 poll or index, wrong kind of button): a notice, no ballot."""
    await _people(db)
    single = await _poll(db)
    ranked = await _poll(db, "ranked")
    dates = await _poll(db, "dates")
    assert await _option(db, 2, MAX_INT, 0) == NO_POLL
    assert await _slot(db, 2, MAX_INT, 0, "y") == NO_POLL
    assert await _option(db, 2, single, MAX_INT) == INVALID
    assert await _slot(db, 2, dates, MAX_INT, "n") == INVALID
    assert await _option(db, 2, ranked, 0) == INVALID
    assert await _option(db, 2, dates, 0) == INVALID
    assert await _slot(db, 2, ranked, 0, "y") == INVALID
    assert await _slot(db, 2, single, 0, "y") == INVALID
    for poll_id in (single, ranked, dates):
        assert await _ballots(db, poll_id) == []
        assert await _voters(db, poll_id) == []


# -- 3. anonymous ---------------------------------------------------------------------------


@pytest.mark.xfail(
    strict=True,
    reason="known limitation: on PostgreSQL the voter row and its ballot share a transaction (xmin, ctid); anonymity does not hold against whoever runs the database server",
)
async def test_an_anonymous_ballot_cannot_be_joined_to_its_voter_by_its_transaction(
    db: Database,
) -> None:
    """PostgreSQL's xmin must not join an anonymous ballot to its voter row."""
    if db.dialect != "postgresql":
        pytest.skip("xmin is PostgreSQL's")
    await _people(db)
    poll_id = await _poll(db, anonymous=True, allow_change=False)
    chosen = {2: 0, 3: 1, 4: 2, 5: 3}
    for person_id, n in chosen.items():
        assert await _option(db, person_id, poll_id, n) == RECORDED
    async with db.read() as session:
        joined = await session.execute(
            sa.text(
                "SELECT v.person_id, b.choice FROM poll_voter v JOIN poll_ballot b"
                " ON b.xmin = v.xmin AND b.poll_id = v.poll_id WHERE v.poll_id = :poll"
            ),
            {"poll": poll_id},
        )
        found: dict[Any, Any] = dict(joined.tuples().all())
    assert found == {}, f"who voted what, from the rows: {found}"


def _forum_settings(url: str, **values: Any) -> Settings:
    return Settings(database_url=url, roles=RolesConfig(moderators=["console:modo"]), **values)


async def _open_poll(
    forum: Forum,
    *,
    question: str = "Quel jour pour la fête des voisins ?",
    kind: str = "1",
    options: str = "Samedi\nDimanche\nLundi",
    max_choices: str = "-",
    closes: str = "dans 2 jours",
    results: str = "1",
    anonymous: str = "1",
    electorate: str = "1",
    change: str = "1",
    as_name: str = "Modo",
) -> str:
    """/sondage answered question by question; the text of the bot's last answer."""
    await forum.say("/sondage", as_name=as_name)
    answers = (question, kind, options, max_choices, closes, results, anonymous, electorate)
    for answer in answers:
        await forum.say(answer, as_name=as_name)
    posted = await forum.say(change, as_name=as_name)
    return posted[-1].text if posted else ""


async def _rows_of_every_table(db: Database) -> list[tuple[str, str]]:
    """Every row of every table, as (table, text)."""
    found: list[tuple[str, str]] = []
    async with db.read() as session:
        for table in SQLModel.metadata.sorted_tables:
            for row in (await session.execute(sa.select(table))).all():
                found.append((table.name, str(dict(row._mapping))))
    return found


VOTERS = ("Paul", "Jeanne", "Lucie")
IDENTITIES = (*VOTERS, *(v.lower() for v in VOTERS), *(f"console:{v.lower()}" for v in VOTERS))


async def _anonymous_polls_voted(db: Database) -> tuple[list[str], list[tuple[str, str]]]:
    """Two anonymous polls voted by three residents and closed: what was shown, every row."""
    async with Forum(_forum_settings(db.url), db=db) as forum:
        opened = await _open_poll(forum, anonymous="2", change="2")
        assert opened.startswith("Le sondage n°1 est ouvert"), opened
        opened = await _open_poll(forum, kind="4", anonymous="2", change="2")
        assert opened.startswith("Le sondage n°2 est ouvert"), opened
        for name, n, ranking in (("Paul", 0, "3 1 2"), ("Jeanne", 1, "1 2"), ("Lucie", 1, "2")):
            await forum.say(f":clic poll:1:o:{n}", as_name=name)
            assert forum.lines[-1].endswith("(pour vous) Vote enregistré."), forum.lines[-1]
            assert await forum.answer(f"/classer 2 {ranking}", as_name=name) == RECORDED
        forum.clock.advance(timedelta(seconds=6))
        await forum.tick()
        forum.clock.advance(timedelta(days=2, minutes=1))
        await forum.tick()
        shown = [p.text for p in forum.console.state.posted] + forum.lines
        assert any(text.startswith("Résultat du sondage n°2") for text in shown)
        return shown, await _rows_of_every_table(db)


@pytest.mark.xfail(
    strict=True,
    reason="known gap: inbox_update keeps each raw button press (author and button id) for the retention period; an anonymous poll's presses are not yet redacted once handled",
)
async def test_no_voter_identity_next_to_a_choice_in_any_table(db: Database) -> None:
    """No table row (inbox_update included) holds a voter next to an anonymous choice."""
    _, rows = await _anonymous_polls_voted(db)
    choices = ("poll:1:o:", "classer")
    leaks = [
        (table, text[:300])
        for table, text in rows
        if any(c in text for c in choices) and any(who in text for who in IDENTITIES)
    ]
    assert leaks == [], f"a voter next to a choice in {sorted({t for t, _ in leaks})}"


async def test_no_voter_identity_in_the_messages_or_the_logs(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """No message and no INFO log line of anonymous polls names a voter."""
    caplog.set_level(logging.INFO)
    shown, _ = await _anonymous_polls_voted(db)
    assert [text for text in shown if any(who in text for who in IDENTITIES)] == []
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert any("due time(s) fired" in line for line in logged), "the logs were not captured"
    assert [line for line in logged if any(who in line for who in IDENTITIES)] == []


async def test_an_anonymous_ranking_cannot_be_changed(db: Database) -> None:
    """/classer typed again in an anonymous ranked poll: refused, the first ranking stays."""
    await _people(db)
    poll_id = await _poll(db, "ranked", anonymous=True, allow_change=False)
    assert await _rank(db, 2, f"{poll_id} 1 2") == RECORDED
    assert await _rank(db, 2, f"{poll_id} 2 1") == (
        "Votre vote est déjà enregistré (un vote anonyme ne peut pas être changé)."
    )
    assert await _ballots(db, poll_id) == [[0, 1]]


async def test_an_anonymous_several_choice_or_date_poll_is_refused_at_creation(
    sqlite_url: str,
) -> None:
    """Anonymous several-choice or date poll: refused, asked again, the rest kept."""
    async with Forum(_forum_settings(sqlite_url)) as forum:
        refusal = "Un vote anonyme est définitif"
        asked = await _open_poll(forum, kind="2", anonymous="2")
        assert asked.startswith(refusal), asked
        assert "Vote anonyme" in asked
        made = await forum.say("1", as_name="Modo")
        assert made[-1].text.startswith("Le sondage n°1 est ouvert"), made
        dates = "05/12 18:00\n06/12 18:00"
        asked = await _open_poll(forum, kind="5", options=dates, anonymous="2")
        assert asked.startswith(refusal), asked
        made = await forum.say("1", as_name="Modo")
        assert made[-1].text.startswith("Le sondage n°2 est ouvert"), made
        async with forum.db.read() as session:
            rows = (await session.execute(sa.select(Poll).order_by(col(Poll.id)))).scalars()
            kept = [(p.kind, p.anonymous, len(p.options), p.live_results) for p in rows]
    assert kept == [("multiple", False, 3, True), ("dates", False, 2, True)]


# -- 4. the tally ---------------------------------------------------------------------------

RANKED_OPTIONS = "Parc\nSalle\nRue\nGymnase"


async def _ranked_result(sqlite_url: str, rankings: Sequence[str], options: str) -> list[str]:
    """A ranked poll opened, ranked by one resident per ranking, closed: its result posts."""
    async with Forum(_forum_settings(sqlite_url)) as forum:
        await _open_poll(forum, kind="4", options=options)
        for i, ranking in enumerate(rankings):
            assert await forum.answer(f"/classer 1 {ranking}", as_name=f"V{i}") == RECORDED
        await forum.say("/cloturer 1", as_name="Modo")
        return [p.text for p in forum.console.state.posted if p.text.startswith("Résultat du")]


async def test_a_ranked_result_through_the_handlers_matches_the_hand_count(
    sqlite_url: str,
) -> None:
    """/classer then /cloturer give the hand-counted runoff (table below)."""
    # | ballots          | × |
    # | Parc             | 4 |
    # | Rue > Parc       | 3 |
    # | Salle > Rue      | 2 |
    # | Gymnase > Salle  | 1 |
    # Round 1: Parc 4, Salle 2, Rue 3, Gymnase 1: Gymnase out, its ballot to Salle.
    # Round 2: Parc 4, Salle 3, Rue 3: Salle and Rue tie for last; Salle had fewer
    # in round 1 (the stated rule): Salle out, two ballots to Rue, one spent.
    # Round 3: Parc 4, Rue 5 of 9: Rue wins.
    rankings = ["1"] * 4 + ["3 1"] * 3 + ["2 3"] * 2 + ["4 2"]
    results = await _ranked_result(sqlite_url, rankings, RANKED_OPTIONS)
    assert len(results) == 1
    lines = results[0].splitlines()
    assert lines[0] == "Résultat du sondage n°1 : Quel jour pour la fête des voisins ?"
    assert lines[1] == "10 votant·es"
    assert lines[-4:] == [
        "Tour 1 : Parc 4, Salle 2, Rue 3, Gymnase 1 — Gymnase éliminé·e",
        "Tour 2 : Parc 4, Salle 3, Rue 3 — Salle éliminé·e",
        "Tour 3 : Parc 4, Rue 5",
        "En tête : Rue",
    ]


async def test_a_ranked_poll_tied_at_the_end_says_so(sqlite_url: str) -> None:
    """A runoff tied at the end (left to people by the rule) says it is a tie."""
    results = await _ranked_result(sqlite_url, ["1 2", "1", "2 1", "2"], "Parc\nSalle")
    assert len(results) == 1
    assert "Tour 1 : Parc 2, Salle 2" in results[0]
    assert "En tête" not in results[0]
    assert "égalité" in results[0].lower(), results[0]


COUNTS = re.compile(r"votant|▓|░|%|\(\d+\)|\d+ oui")


async def test_hidden_results_never_show_a_count_before_the_close(sqlite_url: str) -> None:
    """Results after the close: no post, edit, notice or answer shows a count before."""
    async with Forum(_forum_settings(sqlite_url)) as forum:
        await _open_poll(forum, results="2")
        await _open_poll(forum, kind="5", options="05/12 18:00\n06/12 18:00", results="2")
        for name in ("Paul", "Jeanne", "Lucie"):
            await forum.say(":clic poll:1:o:1", as_name=name)
            await forum.say(":clic poll:2:d:0:y", as_name=name)
            forum.clock.advance(timedelta(seconds=6))
            await forum.tick()
        await forum.say("/sondages", as_name="Paul")
        await forum.say("/resultats 1", as_name="Paul")
        await forum.say("/resultats 2", as_name="Paul")
        async with forum.db.read() as session:
            pending = [row.key for row in (await session.execute(sa.select(DueTime))).scalars()]
        assert not [key for key in pending if key.startswith("poll-refresh")]
        before = [p.text for p in forum.console.state.posted] + forum.lines
        assert [text for text in before if COUNTS.search(text)] == []
        forum.clock.advance(timedelta(days=2))
        await forum.tick()
        after = [p.text for p in forum.console.state.posted if p.text.startswith("Résultat")]
    assert len(after) == 2 and "3 votant·es" in after[0] and "3 oui" in after[1]


async def test_the_close_command_and_its_due_time_at_once_post_one_result(db: Database) -> None:
    """/cloturer and the due time at once, then a retry: one result per chat."""
    await _people(db)
    poll_id = await _poll(db)
    assert await _option(db, 2, poll_id, 0) == RECORDED
    async with db.write() as session:
        session.add(polls_named_post(poll_id, NORD))
        session.add(polls_named_post(poll_id, NORD_DC))
    sent: list[list[Any]] = []

    async def by_command() -> None:
        async with db.write() as session:
            event = command("cloturer", str(poll_id), chat=NORD)
            ctx = fake_context(session, event, person_id=1, settings=_settings())
            await polls.close_now(ctx, event)
            sent.append(ctx.actions)

    async def by_due_time() -> None:
        async with db.write() as session:
            event = TimeCame(
                chat=ChatRef("clock", "due"),
                author=Author(platform="clock", user_id="clock", display_name="clock"),
                at=NOW,
                kind=polls.CLOSE,
                subject=str(poll_id),
                key=f"poll-close:{poll_id}",
            )
            ctx = fake_context(session, event, person_id=None, settings=_settings())
            await polls.close_due(ctx, event)
            sent.append(ctx.actions)

    await asyncio.gather(by_command(), by_due_time())
    await by_due_time()
    actions = [a for batch in sent for a in batch]
    results = [a for a in actions if isinstance(a, SendMessage) and "Résultat" in a.content.text]
    assert sorted(str(a.chat) for a in results) == sorted([str(NORD), str(NORD_DC)])
    assert len([a for a in actions if isinstance(a, SendFile)]) == 2
    assert len([a for a in actions if isinstance(a, EditMessage)]) == 2


async def test_a_vote_racing_the_close_is_in_the_result_or_refused(db: Database) -> None:
    """A vote committing after the close began is in the result (the close waits for it)."""
    await _people(db)
    poll_id = await _poll(db)
    assert await _option(db, 2, poll_id, 0) == RECORDED

    async def vote(session: AsyncSession) -> object:
        press = _press(polls.OPTION_BUTTON, JEANNE, NORD_DC, id=poll_id, n=1)
        ctx = fake_context(session, press.event, person_id=3, settings=_settings())
        return await polls.press_option(ctx, press)

    async def close(session: AsyncSession) -> object:
        event = command("cloturer", str(poll_id), chat=NORD)
        return await polls.close(fake_context(session, event, settings=_settings()), poll_id)

    answer, closed = await _race(db, vote, close)
    assert closed is True
    async with db.read() as session:
        poll = await session.get(Poll, poll_id)
    assert poll is not None and poll.result is not None
    ballots = await _ballots(db, poll_id)
    assert (answer, poll.result["voters"], len(ballots)) == (RECORDED, 2, 2), poll.result


def polls_named_post(poll_id: int, chat: ChatRef) -> Any:
    """The poll's post as delivered in ``chat``."""
    from storage.models import NamedPost

    return NamedPost(key=polls.post_key(poll_id), chat_key=str(chat), message_ids=["1"])


# -- 5. the form ----------------------------------------------------------------------------


async def _asks(forum: Forum, line: str) -> str:
    """The bot's single answer to a line of the form, as Modo."""
    return await forum.answer(line, as_name="Modo")


async def test_every_bad_answer_gets_a_french_reply_and_keeps_the_others(
    sqlite_url: str,
) -> None:
    """Each bad answer to the form gets a French reply; every other answer is kept."""
    async with Forum(_forum_settings(sqlite_url)) as forum:
        await forum.say("/sondage", as_name="Modo")
        assert (await _asks(forum, "Quoi")).startswith("Trop court : au moins 5 caractères.")
        assert "question 2/9" in await _asks(forum, "Quel jour pour la fête ?")
        assert "question 3/9" in await _asks(forum, "2")
        too_few = "Indiquez de 2 à 10 options, une par ligne."
        assert (await _asks(forum, "Samedi")).startswith(too_few)
        eleven = "\n".join(f"Jour {i}" for i in range(11))
        assert (await _asks(forum, eleven)).startswith(too_few)
        assert (await _asks(forum, "Samedi\n" + "x" * 81)).startswith(
            "Trop long : 80 caractères au maximum (vous en avez écrit 81)."
        )
        assert "question 4/9" in await _asks(forum, "Samedi\nDimanche\nLundi")
        for bad in ("0", "11", "deux"):
            assert (await _asks(forum, bad)).startswith(
                "Indiquez un nombre entier entre 1 et 10."
            ), bad
        assert "question 5/9" in await _asks(forum, "5")
        await _asks(forum, "n'importe quand")
        for answer in ("1", "1", "1"):
            await _asks(forum, answer)
        asked = await _asks(forum, "1")
        assert asked.startswith(
            "Au plus 3 : il n'y a que 3 options.\nNouveau sondage — question 4/9"
        )
        asked = await _asks(forum, "2")
        assert asked.startswith("Cette date n'a pas été comprise ; par exemple « 15/12 20:00 ».")
        assert "question 5/9" in asked
        asked = await _asks(forum, "dans 2 ans")
        assert asked.startswith("La clôture doit être dans moins d'un an.")
        asked = await _asks(forum, "hier")
        assert asked.startswith("La clôture doit être dans le futur.")
        posted = await forum.say("dans 3 jours", as_name="Modo")
        assert posted[-1].text == "Le sondage n°1 est ouvert jusqu'au 28/11/2026 19:30."
        async with forum.db.read() as session:
            poll = (await session.execute(sa.select(Poll))).scalar_one()
    assert (poll.kind, poll.question, poll.options, poll.max_choices) == (
        "multiple",
        "Quel jour pour la fête ?",
        ["Samedi", "Dimanche", "Lundi"],
        2,
    )
    assert poll.closes_at == NOW + timedelta(days=3)


async def test_bad_dates_for_a_date_poll_are_refused_in_french(sqlite_url: str) -> None:
    """One, nine, past and non-dates for a date poll: refused in French, rest kept."""
    async with Forum(_forum_settings(sqlite_url)) as forum:
        await forum.say("/sondage", as_name="Modo")
        await _asks(forum, "Quand faire la fête des voisins ?")
        assert "question 3/9" in await _asks(forum, "5")
        assert (await _asks(forum, "05/12 18:00")).startswith(
            "Indiquez de 2 à 10 options, une par ligne."
        )
        nine = "\n".join(f"{day:02d}/12 18:00" for day in range(1, 10))
        assert "question 4/9" in await _asks(forum, nine)
        for answer in ("-", "dans 2 jours", "1", "1", "1"):
            await _asks(forum, answer)
        assert (await _asks(forum, "1")).startswith(
            "Indiquez de 2 à 8 dates, une par ligne.\nNouveau sondage — question 3/9"
        )
        asked = await _asks(forum, "05/12 18:00\n01/01/2020 18:00")
        assert asked.startswith("« 01/01/2020 18:00 » n'est pas une date à venir."), asked
        asked = await _asks(forum, "05/12 18:00\nla semaine des quatre jeudis")
        assert asked.startswith("« la semaine des quatre jeudis » n'est pas une date à venir.")
        posted = await forum.say("05/12 18:00\n06/12 18:00", as_name="Modo")
        assert posted[-1].text == "Le sondage n°1 est ouvert jusqu'au 27/11/2026 19:30."
        async with forum.db.read() as session:
            poll = (await session.execute(sa.select(Poll))).scalar_one()
    assert poll.question == "Quand faire la fête des voisins ?"
    assert poll.options == ["2026-12-05T18:00:00+01:00", "2026-12-06T18:00:00+01:00"]


FRENCH_MOMENTS = {
    # The form's own examples, and the same with "18h" where it wrote "18:00".
    "vendredi à 18h": datetime(2026, 11, 27, 17, 0, tzinfo=UTC),
    "15/12 20:00": datetime(2026, 12, 15, 19, 0, tzinfo=UTC),
    "dans 3 jours": NOW + timedelta(days=3),
    "vendredi 18h": datetime(2026, 11, 27, 17, 0, tzinfo=UTC),
    "lundi 18h": datetime(2026, 11, 30, 17, 0, tzinfo=UTC),
    "12/01 18h": datetime(2027, 1, 12, 17, 0, tzinfo=UTC),
    "5 décembre 18h": datetime(2026, 12, 5, 17, 0, tzinfo=UTC),
}


async def test_french_hours_written_18h_are_read_as_a_time_of_day() -> None:
    """« vendredi 18h », « 12/01 18h »: "18h" is an hour, not 18 hours nor the 18th."""
    settings = _settings()
    read = {text: await polls.parse_moment(text, settings, NOW) for text in FRENCH_MOMENTS}
    wrong = {text: at for text, at in read.items() if at != FRENCH_MOMENTS[text]}
    assert wrong == {}


async def test_two_dates_written_as_the_form_shows_give_two_slots(sqlite_url: str) -> None:
    """« 12/12 18h » and « 13/12 18h » (the form's example) give those two slots."""
    async with Forum(_forum_settings(sqlite_url)) as forum:
        await _open_poll(forum, kind="5", options="12/12 18h\n13/12 18h")
        async with forum.db.read() as session:
            made = (await session.execute(sa.select(Poll))).scalars().all()
    slots = [p.options for p in made]
    assert slots in ([], [["2026-12-12T18:00:00+01:00", "2026-12-13T18:00:00+01:00"]]), slots


async def test_two_lines_for_the_same_moment_never_make_a_one_slot_poll(sqlite_url: str) -> None:
    """Two lines for one moment are refused, never a date poll with a single slot."""
    async with Forum(_forum_settings(sqlite_url)) as forum:
        answer = await _open_poll(forum, kind="5", options="12/12 18:00\n12/12 à 18:00")
        async with forum.db.read() as session:
            made = (await session.execute(sa.select(Poll))).scalars().all()
    assert [p.options for p in made] == [], answer
    assert answer.startswith("Indiquez de 2 à 8 dates, une par ligne."), answer


async def test_options_that_differ_only_by_case_are_not_two_options(sqlite_url: str) -> None:
    """« Samedi » and « samedi » never become two options splitting one choice."""
    async with Forum(_forum_settings(sqlite_url)) as forum:
        await _open_poll(forum, options="Samedi\nsamedi\nDimanche")
        async with forum.db.read() as session:
            made = (await session.execute(sa.select(Poll))).scalars().all()
    for poll in made:
        folded = [" ".join(o.split()).casefold() for o in poll.options]
        assert len(set(folded)) == len(folded), poll.options


async def test_residents_open_polls_when_the_setting_allows_it(sqlite_url: str) -> None:
    """polls_by_residents: a resident opens a poll with the whole form."""
    async with Forum(_forum_settings(sqlite_url, polls_by_residents=True)) as forum:
        opened = await _open_poll(forum, as_name="Paul")
        assert opened.startswith("Le sondage n°1 est ouvert"), opened


def test_options_alike_in_their_first_forty_characters_get_buttons_told_apart() -> None:
    """Options alike in their first 40 characters get buttons told apart."""
    poll = Poll(
        id=1,
        kind="single",
        question="Que faire de la place de la mairie ?",
        options=[
            "Réaménager la place de la mairie du centre avec des arbres",
            "Réaménager la place de la mairie du centre avec un parking",
        ],
        closes_at=NOW + timedelta(days=3),
        created_by_person_id=1,
        origin_chat_key=str(NORD),
    )
    labels = [b.label for row in polls.poll_buttons(Translator("fr"), poll) for b in row]
    assert len(set(labels)) == 2, labels


# -- 6. live counts, throttled --------------------------------------------------------------


async def test_fifty_votes_leave_one_refresh_at_the_first_votes_time(db: Database) -> None:
    """Fifty votes over 5 s: one pending refresh, at the first vote's time + 5 s."""
    await _people(db, 50)
    poll_id = await _poll(db)
    for i in range(50):
        clock = FixedClock(NOW + timedelta(milliseconds=100 * i))
        await _option(db, 1 + i % 25, poll_id, i % 4, clock=clock)
    async with db.read() as session:
        due = (await session.execute(sa.select(DueTime))).scalars().all()
    assert [(d.key, d.due_at) for d in due] == [(f"poll-refresh:{poll_id}", NOW + polls.REFRESH)]
    assert len(await _ballots(db, poll_id)) == 25


async def test_a_late_refresh_still_shows_the_last_count(sqlite_url: str) -> None:
    """A refresh due while the bot was down 15 minutes still shows the last count."""
    async with Forum(_forum_settings(sqlite_url)) as forum:
        await _open_poll(forum)
        await forum.say(":clic poll:1:o:0", as_name="Paul")
        forum.clock.advance(timedelta(seconds=6))
        await forum.tick()
        assert "1 votant·e" in forum.lines[-1], forum.lines[-1]
        await forum.say(":clic poll:1:o:1", as_name="Jeanne")
        forum.clock.advance(timedelta(minutes=15))
        await forum.tick()
        edits = [line for line in forum.lines if "modifié" in line]
    assert "2 votant·es" in edits[-1], edits


async def test_forged_button_ids_on_the_console_get_a_notice_never_an_apology(
    db: Database,
) -> None:
    """Forged ids pressed on the console: a short notice each, never an apology."""
    async with Forum(_forum_settings(db.url), db=db) as forum:
        await _open_poll(forum)
        forged = {
            "poll:1:o:-1": INVALID,
            "poll:1:o:x": INVALID,
            "poll:9223372036854775808:o:0": INVALID,
            "poll:1:d:0:z": INVALID,
            "poll:1:o:0:encore": INVALID,
            "poll:1:o:": INVALID,
            "poll::o:0": INVALID,
            "poll:1:o:99": INVALID,
            f"poll:{MAX_INT}:o:0": NO_POLL,
        }
        for data, notice in forged.items():
            await forum.say(f":clic {data}", as_name="Paul")
            assert forum.lines[-1] == f"[con:general] (pour vous) {notice}", (data, forum.lines)
        async with forum.db.read() as session:
            assert (await session.execute(sa.select(PollBallot))).scalars().all() == []


async def test_a_bridged_neighbourhood_poll_posts_one_result_per_chat(sqlite_url: str) -> None:
    """A bridged Cité 5 poll: one post and one result per chat, outsiders refused."""
    settings = _forum_settings(
        sqlite_url,
        channels=[
            ChannelConfig(platform="console", id="tg:nord", neighbourhood="Cité 5"),
            ChannelConfig(platform="console", id="dc:nord", neighbourhood="Cité 5"),
            ChannelConfig(platform="console", id="tg:centre", neighbourhood="Centre"),
        ],
        bridges=[BridgeConfig(a="console:tg:nord", b="console:dc:nord")],
    )
    async with Forum(settings) as forum:
        await forum.say("tg:nord")
        opened = await _open_poll(forum, electorate="2")
        assert opened.startswith("Le sondage n°1 est ouvert"), opened
        await forum.say("tg:nord :clic poll:1:o:0", as_name="Paul")
        await forum.say("dc:nord :clic poll:1:o:1", as_name="Jeanne")
        await forum.say("tg:centre :clic poll:1:o:1", as_name="Luc")
        assert forum.lines[-1].endswith(CITE_5_ONLY), forum.lines[-1]
        assert await forum.answer("/cloturer 1", as_name="Paul") == (
            "Seuls l'auteur·rice du sondage et la modération peuvent le clore."
        )
        await forum.say("tg:nord /cloturer 1", as_name="Modo")
        posted = forum.console.state.posted
        polls_posted = sorted(p.chat for p in posted if p.text.startswith("Sondage n°1 :"))
        results = sorted(p.chat for p in posted if p.text.startswith("Résultat du sondage n°1"))
        charts = sorted(p.chat for p in posted if p.text.startswith("📎 sondage-1.png"))
        result = next(p.text for p in posted if p.text.startswith("Résultat du sondage n°1"))
    assert polls_posted == results == charts == ["dc:nord", "tg:nord"]
    assert "2 votant·es" in result
