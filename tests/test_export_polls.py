"""Open data export of polls: closed polls only, the counts of the close, no personal data."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.cli import EXPORT_DATASETS, main
from bot.config import Settings
from bot.dispatcher import Press
from bot.events import Author, ButtonPressed, ChatRef
from handlers import polls
from storage.db import Database
from storage.exports import (
    DATASETS,
    OPTION_FIELDS,
    POLL_CSV_FIELDS,
    POLL_FIELDS,
    POLL_JSON_FIELDS,
    export,
    export_polls,
    polls_for_export,
)
from storage.models import Account, Person, Poll, PollBallot, PollVoter
from tests.kit import NOW, command, fake_context

# The allowed lists, written out here rather than imported: a field added to the export by
# mistake must fail this test, not silently widen what it expects.
ALLOWED_POLL_FIELDS = [
    "id",
    "kind",
    "question",
    "closes_at",
    "closed_at",
    "anonymous",
    "neighbourhood",
    "voters",
    "winner",
]
ALLOWED_OPTION_FIELDS = ["option", "label", "votes", "maybe", "no"]

PARIS = ZoneInfo("Europe/Paris")

# Personal data planted in the fixture, each distinctive enough that finding it anywhere in an
# export can only mean it leaked: voters' person ids, names, platform ids, usernames and
# account keys, the chat a poll was opened in, and the ballots' own ids.
VOTERS = [
    # (person id, display name, platform, platform user id, username)
    (987101, "Zoé-Marchal-777", "telegram", "987654321", "zoe_marchal_777"),
    (987102, "Karim-Benali-888", "discord", "555444333222111000", "karim_benali_888"),
    (987103, "Léa-Dufour-999", "telegram", "876543219", None),
    (987104, "Paul-Modérateur-555", "discord", "444333222111000999", "paul_modo_555"),
]
ORIGIN_CHAT_KEY = "discord:111222333444555666/777888999000111222"
BALLOT_PREFIX = "b4110750c4e7"  # every planted ballot id starts with it


def _account_key(platform: str, user_id: str) -> str:
    return f"{platform}:{user_id}"


PERSONAL_VALUES = [
    value
    for person_id, name, platform, user_id, username in VOTERS
    for value in (
        str(person_id),
        name,
        user_id,
        _account_key(platform, user_id),
        *([username] if username else []),
    )
] + [ORIGIN_CHAT_KEY, "111222333444555666", "777888999000111222", BALLOT_PREFIX]

OPEN_QUESTION = "Sondage-encore-ouvert-XYZ ?"
OPEN_OPTION = "Option-jamais-exportee-QRS"


@dataclass
class Seeded:
    single_id: int
    ranked_id: int
    dates_id: int
    tricky_id: int
    open_id: int


def _poll(**values: Any) -> Poll:
    row: dict[str, Any] = {
        "created_by_person_id": VOTERS[3][0],
        "origin_chat_key": ORIGIN_CHAT_KEY,
        "created_at": datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
        "status": "closed",
        **values,
    }
    return Poll(**row)


async def seed(db: Database) -> Seeded:
    """Four closed polls (one choice in a neighbourhood, an anonymous ranked one, a date poll,
    one whose texts try formula injection) and an open one that must never come out; every
    voter is a planted person with an account, a voter row and a ballot."""
    async with db.write() as session:
        for person_id, name, *_ in VOTERS:
            session.add(Person(id=person_id, display_name=name))
        await session.flush()
        for person_id, name, platform, user_id, username in VOTERS:
            session.add(
                Account(
                    person_id=person_id,
                    platform=platform,
                    platform_user_id=user_id,
                    username=username,
                    display_name=name,
                )
            )
        single = _poll(
            kind="single",
            question="Quel jour pour la fête des voisins « rue Émile-Zola » ?",
            options=["Samedi", "Dimanche", "Lundi"],
            # A time given in Paris comes out in UTC; microseconds are dropped.
            closes_at=datetime(2026, 6, 1, 20, 0, 0, 123456, tzinfo=PARIS),
            closed_at=datetime(2026, 6, 1, 18, 0, 5, tzinfo=UTC),
            neighbourhood="Cité 5",
            result={"voters": 3, "counts": [2, 1, 0], "rounds": [], "winner": None},
        )
        ranked = _poll(
            kind="ranked",
            question="Quel nom pour le square ?",
            options=["Jardin des Lilas", "Square Ferrer", "Place du Marché"],
            closes_at=datetime(2026, 6, 2, 18, 0, tzinfo=UTC),
            closed_at=datetime(2026, 6, 2, 17, 0, tzinfo=UTC),
            anonymous=True,
            allow_change=False,
            # Round 1: 1-2-1, no majority; Place du Marché out, its ballot goes to Square
            # Ferrer: 1-3, a majority.
            result={
                "voters": 4,
                "counts": [1, 3, 0],
                "rounds": [
                    {"counts": [1, 2, 1], "eliminated": 2, "exhausted": 0},
                    {"counts": [1, 3, 0], "eliminated": None, "exhausted": 0},
                ],
                "winner": 1,
            },
        )
        dates = _poll(
            kind="dates",
            question="Quand se réunir ?",
            # Stored with the town's offset, as polls._options writes them.
            options=["2026-12-05T18:00:00+01:00", "2026-07-06T18:30:00+02:00"],
            closes_at=datetime(2026, 6, 3, 18, 0, tzinfo=UTC),
            closed_at=datetime(2026, 6, 3, 18, 0, tzinfo=UTC),
            # As polls.close writes it today: the yes of each slot in "counts".
            result={"voters": 2, "counts": [1, 2], "rounds": [], "winner": None},
        )
        tricky = _poll(
            kind="single",
            question='=HYPERLINK("http://evil.example","cliquez")',
            options=["-5 %", "@SUM(A1:A9)", "+33 6 12 34 56 78", "\tcmd", "\r=1+1"],
            closes_at=datetime(2026, 6, 4, 18, 0, tzinfo=UTC),
            closed_at=datetime(2026, 6, 4, 18, 0, tzinfo=UTC),
            neighbourhood="-Nord",
            result={"voters": 0, "counts": [0, 0, 0, 0, 0], "rounds": [], "winner": None},
        )
        still_open = _poll(
            kind="single",
            question=OPEN_QUESTION,
            options=[OPEN_OPTION, "Autre"],
            closes_at=datetime(2026, 12, 1, tzinfo=UTC),
            status="open",
        )
        session.add_all([single, ranked, dates, tricky, still_open])
        await session.flush()
        ids = [p.id for p in (single, ranked, dates, tricky, still_open)]
        assert all(i is not None for i in ids)
        ballots = {
            single.id: [[0], [0], [1]],
            ranked.id: [[0], [1], [2, 1], [1]],
            dates.id: [["yes", "yes"], ["no", "yes"]],
            still_open.id: [[0]],
        }
        number = 0
        for poll_id, choices in ballots.items():
            assert poll_id is not None
            poll_anonymous = poll_id == ranked.id
            for voter, choice in zip(VOTERS, choices, strict=False):
                number += 1
                ballot_id = f"{BALLOT_PREFIX}{number:020d}"
                session.add(PollBallot(id=ballot_id, poll_id=poll_id, choice=choice))
                session.add(
                    PollVoter(
                        poll_id=poll_id,
                        person_id=voter[0],
                        account_key=_account_key(voter[2], voter[3]),
                        ballot_id=None if poll_anonymous else ballot_id,
                        voted_at=None if poll_anonymous else datetime(2026, 5, 1, tzinfo=UTC),
                    )
                )
    assert single.id and ranked.id and dates.id and tricky.id and still_open.id
    return Seeded(single.id, ranked.id, dates.id, tricky.id, still_open.id)


def _options(
    labels: list[str], votes: list[int | None], **extra: list[Any]
) -> list[dict[str, Any]]:
    return [
        {
            "option": i + 1,
            "label": label,
            "votes": votes[i],
            "maybe": extra.get("maybe", [None] * len(labels))[i],
            "no": extra.get("no", [None] * len(labels))[i],
        }
        for i, label in enumerate(labels)
    ]


def _expected(seeded: Seeded) -> list[dict[str, Any]]:
    return [
        {
            "id": seeded.single_id,
            "kind": "single",
            "question": "Quel jour pour la fête des voisins « rue Émile-Zola » ?",
            "closes_at": "2026-06-01T18:00:00Z",
            "closed_at": "2026-06-01T18:00:05Z",
            "anonymous": False,
            "neighbourhood": "Cité 5",
            "voters": 3,
            "winner": None,
            "options": _options(["Samedi", "Dimanche", "Lundi"], [2, 1, 0]),
        },
        {
            "id": seeded.ranked_id,
            "kind": "ranked",
            "question": "Quel nom pour le square ?",
            "closes_at": "2026-06-02T18:00:00Z",
            "closed_at": "2026-06-02T17:00:00Z",
            "anonymous": True,
            "neighbourhood": None,
            "voters": 4,
            # The final round's counts, and the winner by name.
            "winner": "Square Ferrer",
            "options": _options(
                ["Jardin des Lilas", "Square Ferrer", "Place du Marché"], [1, 3, 0]
            ),
        },
        {
            "id": seeded.dates_id,
            "kind": "dates",
            "question": "Quand se réunir ?",
            "closes_at": "2026-06-03T18:00:00Z",
            "closed_at": "2026-06-03T18:00:00Z",
            "anonymous": False,
            "neighbourhood": None,
            "voters": 2,
            "winner": None,
            # Each slot's start in UTC; maybe and no are not in the tally the close wrote.
            "options": _options(["2026-12-05T17:00:00Z", "2026-07-06T16:30:00Z"], [1, 2]),
        },
        {
            "id": seeded.tricky_id,
            "kind": "single",
            "question": '=HYPERLINK("http://evil.example","cliquez")',
            "closes_at": "2026-06-04T18:00:00Z",
            "closed_at": "2026-06-04T18:00:00Z",
            "anonymous": False,
            "neighbourhood": "-Nord",
            "voters": 0,
            "winner": None,
            "options": _options(
                ["-5 %", "@SUM(A1:A9)", "+33 6 12 34 56 78", "\tcmd", "\r=1+1"], [0, 0, 0, 0, 0]
            ),
        },
    ]


def _csv_rows(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def _assert_no_personal_value(where: str, value: Any) -> None:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    for personal in PERSONAL_VALUES:
        assert personal not in text, f"{where!r} carries personal data {personal!r}: {text!r}"


# -- the records ------------------------------------------------------------------------------


async def test_json_export_has_every_closed_poll_with_the_counts_of_its_close(
    db: Database,
) -> None:
    seeded = await seed(db)
    records = json.loads(await export_polls(db, "json"))
    assert records == _expected(seeded)


async def test_only_closed_polls_are_exported(db: Database) -> None:
    seeded = await seed(db)
    for fmt in ("json", "csv"):
        text = await export_polls(db, fmt)
        assert OPEN_QUESTION not in text and OPEN_OPTION not in text
    records = await polls_for_export(db)
    assert seeded.open_id not in {r["id"] for r in records}
    assert len(records) == 4


async def test_an_empty_forum_exports_an_empty_list_and_a_header(db: Database) -> None:
    assert json.loads(await export_polls(db, "json")) == []
    header = ",".join([*ALLOWED_POLL_FIELDS, *ALLOWED_OPTION_FIELDS])
    assert await export_polls(db, "csv") == header + "\r\n"


async def test_json_keys_are_exactly_the_allowed_ones_and_carry_no_personal_data(
    db: Database,
) -> None:
    await seed(db)
    text = await export_polls(db, "json")
    assert list(POLL_FIELDS) == ALLOWED_POLL_FIELDS
    assert list(OPTION_FIELDS) == ALLOWED_OPTION_FIELDS
    assert list(POLL_JSON_FIELDS) == [*ALLOWED_POLL_FIELDS, "options"]
    for record in json.loads(text):
        assert list(record) == [*ALLOWED_POLL_FIELDS, "options"]
        for option in record["options"]:
            assert list(option) == ALLOWED_OPTION_FIELDS
    # Anywhere in the file, whatever the field: no voter, account, chat or ballot.
    _assert_no_personal_value("<json>", text)


async def test_csv_is_one_row_per_option_and_carries_no_personal_data(db: Database) -> None:
    seeded = await seed(db)
    text = await export_polls(db, "csv")
    header, rows = _csv_rows(text)
    assert header == list(POLL_CSV_FIELDS) == [*ALLOWED_POLL_FIELDS, *ALLOWED_OPTION_FIELDS]
    assert [(row["id"], row["option"]) for row in rows] == [
        (str(poll_id), str(n))
        for poll_id, options in (
            (seeded.single_id, 3),
            (seeded.ranked_id, 3),
            (seeded.dates_id, 2),
            (seeded.tricky_id, 5),
        )
        for n in range(1, options + 1)
    ]
    for row in rows:
        assert None not in row, "a row has more cells than the header"
    _assert_no_personal_value("<csv>", text)


async def test_csv_reads_back_to_the_same_values(db: Database) -> None:
    seeded = await seed(db)
    _, rows = _csv_rows(await export_polls(db, "csv"))
    by_poll: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_poll.setdefault(row["id"], []).append(row)
    first = by_poll[str(seeded.single_id)][0]
    assert first == {
        "id": str(seeded.single_id),
        "kind": "single",
        "question": "Quel jour pour la fête des voisins « rue Émile-Zola » ?",
        "closes_at": "2026-06-01T18:00:00Z",
        "closed_at": "2026-06-01T18:00:05Z",
        # Written as JSON writes them, not as Python's True / False.
        "anonymous": "false",
        "neighbourhood": "Cité 5",
        "voters": "3",
        "winner": "",
        "option": "1",
        "label": "Samedi",
        "votes": "2",
        "maybe": "",
        "no": "",
    }
    ranked = by_poll[str(seeded.ranked_id)]
    assert [(r["label"], r["votes"]) for r in ranked] == [
        ("Jardin des Lilas", "1"),
        ("Square Ferrer", "3"),
        ("Place du Marché", "0"),
    ]
    assert {(r["anonymous"], r["winner"]) for r in ranked} == {("true", "Square Ferrer")}
    dates = by_poll[str(seeded.dates_id)]
    assert [r["label"] for r in dates] == ["2026-12-05T17:00:00Z", "2026-07-06T16:30:00Z"]


async def test_csv_cells_a_spreadsheet_would_run_are_quoted(db: Database) -> None:
    seeded = await seed(db)
    _, rows = _csv_rows(await export_polls(db, "csv"))
    tricky = [row for row in rows if row["id"] == str(seeded.tricky_id)]
    assert {row["question"] for row in tricky} == {'\'=HYPERLINK("http://evil.example","cliquez")'}
    assert {row["neighbourhood"] for row in tricky} == {"'-Nord"}
    assert [row["label"] for row in tricky] == [
        "'-5 %",
        "'@SUM(A1:A9)",
        "'+33 6 12 34 56 78",
        "'\tcmd",
        "'\r=1+1",
    ]
    for row in rows:
        for column, value in row.items():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), (column, value)


async def test_a_tally_missing_or_malformed_leaves_counts_empty(db: Database) -> None:
    """A closed poll whose stored tally lacks counts (or holds junk) is exported with empty
    counts, never with made-up ones, and never by recounting ballots."""
    await _planted_people(db)
    async with db.write() as session:
        session.add_all(
            [
                _poll(
                    kind="single",
                    question="Sans résultat ?",
                    options=["A", "B"],
                    closes_at=NOW,
                    closed_at=NOW,
                    result=None,
                ),
                _poll(
                    kind="ranked",
                    question="Résultat abîmé ?",
                    options=["A", "B"],
                    closes_at=NOW,
                    closed_at=NOW,
                    result={"voters": True, "counts": [1], "winner": 7},
                ),
            ]
        )
    none, broken = json.loads(await export_polls(db, "json"))
    assert none["voters"] is None and [o["votes"] for o in none["options"]] == [None, None]
    assert broken["voters"] is None and broken["winner"] is None
    assert [o["votes"] for o in broken["options"]] == [1, None]


async def test_an_unknown_format_or_dataset_is_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="unknown export format 'xml'"):
        await export_polls(db, "xml")
    with pytest.raises(ValueError, match="unknown export dataset 'personnes'"):
        await export(db, "personnes", "csv")


# -- from the real close ----------------------------------------------------------------------

NORD = ChatRef("telegram", "-100500")
SETTINGS = Settings(database_url="sqlite+aiosqlite:///:memory:")


def _author(person: tuple[int, str, str, str, str | None]) -> Author:
    return Author(platform=person[2], user_id=person[3], display_name=person[1])


async def _vote(db: Database, person_index: int, template: Any, **values: Any) -> str | None:
    """A planted voter presses a poll button, through the real handler."""
    person = VOTERS[person_index]
    data = template.build(**values)
    event = ButtonPressed(
        chat=NORD, author=_author(person), at=NOW, data=data, message_id="5", interaction_id="i"
    )
    parsed = template.parse(data)
    assert parsed is not None
    async with db.write() as session:
        ctx = fake_context(session, event, person_id=person[0], settings=SETTINGS)
        handler = polls.press_slot if template is polls.SLOT_BUTTON else polls.press_option
        return await handler(ctx, Press(event, parsed))


async def _rank(db: Database, person_index: int, poll_id: int, ranking: str) -> None:
    person = VOTERS[person_index]
    event = command("classer", f"{poll_id} {ranking}", author=_author(person), chat=NORD)
    async with db.write() as session:
        ctx = fake_context(session, event, person_id=person[0], settings=SETTINGS)
        await polls.rank(ctx, event)


async def _close(db: Database, poll_id: int) -> None:
    event = command("cloturer", str(poll_id), author=_author(VOTERS[3]), chat=NORD)
    async with db.write() as session:
        ctx = fake_context(session, event, person_id=VOTERS[3][0], settings=SETTINGS)
        assert await polls.close(ctx, poll_id)


async def _planted_people(db: Database) -> None:
    async with db.write() as session:
        for person_id, name, *_ in VOTERS:
            session.add(Person(id=person_id, display_name=name))


async def _open(db: Database, kind: str, options: list[str], **values: Any) -> int:
    async with db.write() as session:
        poll = _poll(
            kind=kind,
            question="Question ?",
            options=options,
            closes_at=NOW + timedelta(days=3),
            status="open",
            **values,
        )
        session.add(poll)
        await session.flush()
        assert poll.id is not None
        return poll.id


async def test_the_export_carries_what_the_close_counted(db: Database) -> None:
    """Votes cast and a close made by the poll handlers themselves: the export shows the
    counts the close posted (ranked: the final round and the winner) and no voter."""
    await _planted_people(db)
    single = await _open(db, "single", ["Samedi", "Dimanche"])
    ranked = await _open(db, "ranked", ["A", "B", "C"], anonymous=True, allow_change=False)
    for voter, option in ((0, 1), (1, 1), (2, 0)):
        assert await _vote(db, voter, polls.OPTION_BUTTON, id=single, n=option) == (
            "Vote enregistré."
        )
    for voter, ranking in ((0, "1 2"), (1, "1"), (2, "2 1"), (3, "3 1")):
        await _rank(db, voter, ranked, ranking)
    await _close(db, single)
    await _close(db, ranked)
    text = await export_polls(db, "json")
    by_id = {r["id"]: r for r in json.loads(text)}
    assert by_id[single]["voters"] == 3
    assert [o["votes"] for o in by_id[single]["options"]] == [1, 2]
    async with db.read() as session:
        stored = await session.get(Poll, ranked)
    assert stored is not None and stored.result is not None
    # First preferences A 2, B 1, C 1: whichever of B and C goes first, its ballot goes to A,
    # which then has a majority. The export repeats the final round, and the winner by name.
    assert [o["votes"] for o in by_id[ranked]["options"]] == stored.result["counts"]
    assert stored.result["counts"][0] == 3
    assert by_id[ranked]["winner"] == "A"
    assert by_id[ranked]["voters"] == 4 and by_id[ranked]["anonymous"] is True
    _assert_no_personal_value("<json>", text)
    _assert_no_personal_value("<csv>", await export_polls(db, "csv"))


async def test_a_date_poll_exports_yes_maybe_and_no_per_slot(db: Database) -> None:
    await _planted_people(db)
    dates = await _open(db, "dates", ["2026-12-05T18:00:00+01:00", "2026-12-06T18:00:00+01:00"])
    for voter, answers in ((0, "yn"), (1, "ym"), (2, "mm")):
        for slot, answer in enumerate(answers):
            await _vote(db, voter, polls.SLOT_BUTTON, id=dates, n=slot, a=answer)
    await _close(db, dates)
    (record,) = json.loads(await export_polls(db, "json"))
    assert [(o["votes"], o["maybe"], o["no"]) for o in record["options"]] == [
        (2, 1, 0),
        (0, 2, 1),
    ]


# -- the command, end to end, on a SQLite file ------------------------------------------------


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """main() installs its log handler on the root logger, writing to the stderr that pytest
    captures for this test only: put the root logger back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def seeded_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Seeded:
    url = f"sqlite+aiosqlite:///{tmp_path / 'forum.db'}"

    async def prepare() -> Seeded:
        database = Database(url)
        try:
            await database.migrate()
            return await seed(database)
        finally:
            await database.dispose()

    seeded = asyncio.run(prepare())
    monkeypatch.setenv("DATABASE_URL", url)
    return seeded


def test_cli_exports_polls_as_csv_to_stdout(
    seeded_sqlite: Seeded, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert main(["export", "sondages", "--format", "csv"]) == 0
    text = capsysbinary.readouterr().out.decode("utf-8")
    header, rows = _csv_rows(text)
    assert header == [*ALLOWED_POLL_FIELDS, *ALLOWED_OPTION_FIELDS]
    assert sorted({int(row["id"]) for row in rows}) == [
        seeded_sqlite.single_id,
        seeded_sqlite.ranked_id,
        seeded_sqlite.dates_id,
        seeded_sqlite.tricky_id,
    ]
    assert OPEN_QUESTION not in text
    _assert_no_personal_value("<stdout>", text)
    # The logs (the migration's line among them) stay on stderr, out of the data.
    assert "schema" not in text


def test_cli_exports_polls_as_json_to_a_file(
    seeded_sqlite: Seeded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "sondages.json"
    assert main(["export", "sondages", "--format", "json", "--output", str(output)]) == 0
    assert capsys.readouterr().out == ""
    text = output.read_text(encoding="utf-8")
    assert json.loads(text) == _expected(seeded_sqlite)
    _assert_no_personal_value("<file>", text)


def test_cli_still_exports_proposals_and_refuses_other_datasets(
    seeded_sqlite: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "propositions", "--format", "json"]) == 0
    # No proposal in this database: the proposals' export, not the polls'.
    assert json.loads(capsys.readouterr().out) == []
    with pytest.raises(SystemExit) as exited:
        main(["export", "votants", "--format", "csv"])
    assert exited.value.code == 2
    assert "invalid choice: 'votants'" in capsys.readouterr().err


def test_the_command_offers_the_datasets_the_export_writes() -> None:
    assert tuple(DATASETS) == EXPORT_DATASETS == ("propositions", "sondages")


def test_cli_help_describes_the_polls_export(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "sondages: every closed poll" in help_text
    assert "No personal data goes out" in help_text
    assert "no ballots" in help_text
