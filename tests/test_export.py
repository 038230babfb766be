"""Open data export of proposals: every field, no drafts, no personal data, safe CSV."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.cli import EXPORT_FORMATS, main
from storage.db import Database
from storage.exports import (
    CSV_FIELDS,
    FORMATS,
    HISTORY_FIELDS,
    JSON_FIELDS,
    export_proposals,
    proposals_for_export,
    spreadsheet_safe,
    to_csv,
)
from storage.models import (
    Account,
    Person,
    Proposal,
    ProposalEvent,
    ProposalFollow,
    ProposalSupport,
)

# The allowed lists, written out here rather than imported: a field added to the export by
# mistake must fail this test, not silently widen what it expects.
ALLOWED_PROPOSAL_FIELDS = [
    "id",
    "title",
    "description",
    "neighbourhood",
    "theme",
    "residents_bring",
    "town_asked",
    "budget_euros",
    "status",
    "official_answer",
    "town_brings",
    "planned_for",
    "closing_note",
    "supports",
    "followers",
    "created_at",
    "submitted_at",
    "published_at",
    "answered_at",
    "closed_at",
]
ALLOWED_HISTORY_FIELDS = ["at", "kind", "status", "by_role", "note"]

PARIS = ZoneInfo("Europe/Paris")

# Personal data planted in the fixture, each distinctive enough that finding it anywhere in
# an export can only mean it leaked.
PEOPLE = [
    # (person id, display name, platform, platform user id, username)
    (987001, "Zoé-Marchal-777", "telegram", "987654321", "zoe_marchal_777"),
    (987002, "Karim-Benali-888", "discord", "555444333222111000", "karim_benali_888"),
    (987003, "Léa-Dufour-999", "telegram", "876543219", None),
    (987004, "Paul-Brouillon-555", "discord", "444333222111000999", "paul_brouillon_555"),
]
THREAD_KEY = "discord:1234567890123/9876543210987"
# Where a proposal was written: a private chat with the bot is the resident's own key.
GROUP_CHAT_KEY = "discord:111222333444555666/777888999000111222"


def _account_key(platform: str, user_id: str) -> str:
    return f"{platform}:{user_id}"


PERSONAL_VALUES = [
    value
    for person_id, name, platform, user_id, username in PEOPLE
    for value in (
        str(person_id),
        name,
        user_id,
        _account_key(platform, user_id),
        *([username] if username else []),
    )
] + [
    THREAD_KEY,
    "1234567890123",
    "9876543210987",
    GROUP_CHAT_KEY,
    "111222333444555666",
    "777888999000111222",
]


@dataclass
class Seeded:
    published_id: int
    tricky_id: int
    draft_id: int
    submitted_id: int


async def seed(db: Database) -> Seeded:
    """Four proposals: one published and answered with everything filled in, one refused
    whose texts try formula injection, and two that must never come out: a draft and one
    awaiting moderation."""
    async with db.write() as session:
        for person_id, name, *_ in PEOPLE:
            session.add(Person(id=person_id, display_name=name))
        await session.flush()
        for person_id, name, platform, user_id, username in PEOPLE:
            session.add(
                Account(
                    person_id=person_id,
                    platform=platform,
                    platform_user_id=user_id,
                    username=username,
                    display_name=name,
                )
            )
        zoe, karim, lea, paul = PEOPLE
        published = Proposal(
            author_person_id=zoe[0],
            author_account_key=_account_key(zoe[2], zoe[3]),
            origin_chat_key=_account_key(zoe[2], zoe[3]),
            title="Un jardin partagé « rue Émile-Zola »",
            description='Des bacs, un composteur ; des "ateliers" le samedi.\nÀ côté de l\'école, près du n°12',
            neighbourhood="Centre",
            theme="Écologie",
            residents_bring="Bénévoles, outils, graines",
            town_asked="Terrain et arrivée d'eau",
            budget_euros=1500,
            status="answered",
            official_answer="Accord de la mairie : l'eau sera raccordée.",
            town_brings="Raccordement à l'eau, 800 €",
            planned_for="printemps 2027",
            closing_note=None,
            thread_keys=[THREAD_KEY],
            supports=2,
            # A time given in Paris comes out in UTC; microseconds are dropped.
            created_at=datetime(2026, 3, 1, 10, 15, 30, 123456, tzinfo=PARIS),
            submitted_at=datetime(2026, 3, 2, 8, 0, tzinfo=UTC),
            published_at=datetime(2026, 3, 3, 9, 0, tzinfo=UTC),
            answered_at=datetime(2026, 6, 30, 22, 30, tzinfo=UTC),
        )
        tricky = Proposal(
            author_person_id=karim[0],
            author_account_key=_account_key(karim[2], karim[3]),
            origin_chat_key=GROUP_CHAT_KEY,
            title='=HYPERLINK("http://evil.example","cliquez")',
            description="+33 6 12 34 56 78",
            neighbourhood="-Nord",
            theme="@SUM(A1:A9)",
            residents_bring="\tcmd|' /C calc'!A0",
            town_asked="\r=1+1",
            budget_euros=None,
            status="withdrawn",
            closing_note="=1+1 hors sujet",
            published_at=datetime(2026, 4, 2, 8, 0, tzinfo=UTC),
            created_at=datetime(2026, 4, 1, 12, 0, tzinfo=UTC),
            submitted_at=datetime(2026, 4, 1, 12, 5, tzinfo=UTC),
        )
        draft = Proposal(
            author_person_id=paul[0],
            author_account_key=_account_key(paul[2], paul[3]),
            origin_chat_key=_account_key(paul[2], paul[3]),
            title="Brouillon-secret-XYZ",
            description="pas encore publié",
            neighbourhood="Sud",
            theme="Sport",
            residents_bring="rien",
            town_asked="tout",
            status="draft",
            created_at=datetime(2026, 5, 1, tzinfo=UTC),
        )
        awaiting = Proposal(
            author_person_id=lea[0],
            author_account_key=_account_key(lea[2], lea[3]),
            origin_chat_key=GROUP_CHAT_KEY,
            title="En-attente-de-moderation-QRS",
            description="pas encore modérée",
            neighbourhood="Est",
            theme="Culture",
            residents_bring="du temps",
            town_asked="une salle",
            status="submitted",
            created_at=datetime(2026, 5, 2, tzinfo=UTC),
            submitted_at=datetime(2026, 5, 2, 1, tzinfo=UTC),
        )
        refused = Proposal(
            author_person_id=lea[0],
            author_account_key=_account_key(lea[2], lea[3]),
            origin_chat_key=GROUP_CHAT_KEY,
            title="Refusee-par-la-moderation-ABC",
            description="jamais publiée",
            neighbourhood="Est",
            theme="Culture",
            residents_bring="du temps",
            town_asked="une salle",
            status="refused",
            refusal_reason="hors sujet",
            created_at=datetime(2026, 5, 3, tzinfo=UTC),
            submitted_at=datetime(2026, 5, 3, 1, tzinfo=UTC),
        )
        session.add_all([published, tricky, draft, awaiting, refused])
        await session.flush()
        assert published.id is not None and tricky.id is not None
        assert draft.id is not None and awaiting.id is not None
        for person in (zoe, karim):
            session.add(
                ProposalSupport(
                    proposal_id=published.id,
                    person_id=person[0],
                    account_key=_account_key(person[2], person[3]),
                )
            )
        for person in (zoe, karim, lea):
            session.add(
                ProposalFollow(
                    proposal_id=published.id,
                    person_id=person[0],
                    account_key=_account_key(person[2], person[3]),
                )
            )
        # The draft's supporters and followers are not counted anywhere either.
        session.add(ProposalSupport(proposal_id=draft.id, person_id=lea[0], account_key="x:1"))
        session.add(ProposalFollow(proposal_id=draft.id, person_id=lea[0], account_key="x:1"))
        # Written out of order: the history comes out by date.
        session.add_all(
            [
                ProposalEvent(
                    proposal_id=published.id,
                    at=datetime(2026, 6, 30, 22, 30, tzinfo=UTC),
                    kind="answered",
                    status="answered",
                    by_role="council",
                    note="Réponse officielle ; voir le conseil du 30 juin.\nAdopté.",
                ),
                ProposalEvent(
                    proposal_id=published.id,
                    at=datetime(2026, 3, 1, 10, 15, 30, tzinfo=PARIS),
                    kind="created",
                    status="draft",
                    by_role="author",
                ),
                ProposalEvent(
                    proposal_id=published.id,
                    at=datetime(2026, 3, 3, 9, 0, tzinfo=UTC),
                    kind="published",
                    status="published",
                    by_role="moderator",
                ),
                ProposalEvent(
                    proposal_id=published.id,
                    at=datetime(2026, 3, 2, 8, 0, tzinfo=UTC),
                    kind="submitted",
                    status="submitted",
                    by_role="author",
                ),
                ProposalEvent(
                    proposal_id=tricky.id,
                    at=datetime(2026, 4, 2, 7, 0, tzinfo=UTC),
                    kind="withdrawn",
                    status="withdrawn",
                    by_role="author",
                    note="=cmd",
                ),
                ProposalEvent(
                    proposal_id=draft.id,
                    at=datetime(2026, 5, 1, tzinfo=UTC),
                    kind="created",
                    status="draft",
                    by_role="author",
                    note="Brouillon-secret-XYZ",
                ),
            ]
        )
    return Seeded(published.id, tricky.id, draft.id, awaiting.id)


EXPECTED_PUBLISHED_HISTORY = [
    {
        "at": "2026-03-01T09:15:30Z",
        "kind": "created",
        "status": "draft",
        "by_role": "author",
        "note": None,
    },
    {
        "at": "2026-03-02T08:00:00Z",
        "kind": "submitted",
        "status": "submitted",
        "by_role": "author",
        "note": None,
    },
    {
        "at": "2026-03-03T09:00:00Z",
        "kind": "published",
        "status": "published",
        "by_role": "moderator",
        "note": None,
    },
    {
        "at": "2026-06-30T22:30:00Z",
        "kind": "answered",
        "status": "answered",
        "by_role": "council",
        "note": "Réponse officielle ; voir le conseil du 30 juin.\nAdopté.",
    },
]


def _expected_published(proposal_id: int) -> dict[str, Any]:
    return {
        "id": proposal_id,
        "title": "Un jardin partagé « rue Émile-Zola »",
        "description": 'Des bacs, un composteur ; des "ateliers" le samedi.\nÀ côté de l\'école, près du n°12',
        "neighbourhood": "Centre",
        "theme": "Écologie",
        "residents_bring": "Bénévoles, outils, graines",
        "town_asked": "Terrain et arrivée d'eau",
        "budget_euros": 1500,
        "status": "answered",
        "official_answer": "Accord de la mairie : l'eau sera raccordée.",
        "town_brings": "Raccordement à l'eau, 800 €",
        "planned_for": "printemps 2027",
        "closing_note": None,
        "supports": 2,
        "followers": 3,
        "created_at": "2026-03-01T09:15:30Z",
        "submitted_at": "2026-03-02T08:00:00Z",
        "published_at": "2026-03-03T09:00:00Z",
        "answered_at": "2026-06-30T22:30:00Z",
        "closed_at": None,
        "history": EXPECTED_PUBLISHED_HISTORY,
    }


def _csv_rows(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def _assert_no_personal_value(column: str, value: Any) -> None:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    for personal in PERSONAL_VALUES:
        assert personal not in text, f"{column!r} carries personal data {personal!r}: {text!r}"


async def test_json_export_has_every_field_and_the_history_in_order(db: Database) -> None:
    seeded = await seed(db)
    records = json.loads(await export_proposals(db, "json"))
    assert [r["id"] for r in records] == [seeded.published_id, seeded.tricky_id]
    assert records[0] == _expected_published(seeded.published_id)
    tricky = records[1]
    # JSON is data, not a spreadsheet: texts go out exactly as written.
    assert tricky["title"] == '=HYPERLINK("http://evil.example","cliquez")'
    assert tricky["closing_note"] == "=1+1 hors sujet"
    assert (tricky["supports"], tricky["followers"], tricky["budget_euros"]) == (0, 0, None)
    assert (tricky["published_at"], tricky["answered_at"]) == ("2026-04-02T08:00:00Z", None)
    assert tricky["history"] == [
        {
            "at": "2026-04-02T07:00:00Z",
            "kind": "withdrawn",
            "status": "withdrawn",
            "by_role": "author",
            "note": "=cmd",
        }
    ]


async def test_json_keeps_french_text_as_written(db: Database) -> None:
    await seed(db)
    text = await export_proposals(db, "json")
    assert "Un jardin partagé « rue Émile-Zola »" in text
    assert "\\u00e9" not in text


async def test_drafts_and_proposals_awaiting_moderation_are_never_exported(
    db: Database,
) -> None:
    seeded = await seed(db)
    for fmt in ("json", "csv"):
        text = await export_proposals(db, fmt)
        for unpublished in (
            "Brouillon-secret-XYZ",
            "pas encore publié",
            "Refusee-par-la-moderation-ABC",
            "jamais publiée",
            "En-attente-de-moderation-QRS",
            "pas encore modérée",
        ):
            assert unpublished not in text
    records = await proposals_for_export(db)
    assert {record["id"] for record in records} == {seeded.published_id, seeded.tricky_id}
    assert {record["status"] for record in records}.isdisjoint({"draft", "submitted"})


async def test_an_empty_forum_exports_an_empty_list_and_a_header(db: Database) -> None:
    assert json.loads(await export_proposals(db, "json")) == []
    assert await export_proposals(db, "csv") == ",".join(ALLOWED_PROPOSAL_FIELDS) + ",history\r\n"


async def test_json_keys_are_exactly_the_allowed_ones_and_carry_no_personal_data(
    db: Database,
) -> None:
    await seed(db)
    records = json.loads(await export_proposals(db, "json"))
    assert list(JSON_FIELDS) == [*ALLOWED_PROPOSAL_FIELDS, "history"]
    assert list(HISTORY_FIELDS) == ALLOWED_HISTORY_FIELDS
    assert records
    for record in records:
        assert list(record) == [*ALLOWED_PROPOSAL_FIELDS, "history"]
        for column in ALLOWED_PROPOSAL_FIELDS:
            _assert_no_personal_value(column, record[column])
        for step in record["history"]:
            assert list(step) == ALLOWED_HISTORY_FIELDS
            for column in ALLOWED_HISTORY_FIELDS:
                _assert_no_personal_value(f"history.{column}", step[column])


async def test_csv_columns_are_exactly_the_allowed_ones_and_carry_no_personal_data(
    db: Database,
) -> None:
    await seed(db)
    text = await export_proposals(db, "csv")
    header, rows = _csv_rows(text)
    assert header == list(CSV_FIELDS) == [*ALLOWED_PROPOSAL_FIELDS, "history"]
    assert len(rows) == 2
    for row in rows:
        assert None not in row, "a row has more cells than the header"
        for column in header:
            _assert_no_personal_value(column, row[column])
    # And nowhere in the file as a whole, whatever the column.
    _assert_no_personal_value("<whole file>", text)


async def test_csv_reads_back_to_the_same_values(db: Database) -> None:
    seeded = await seed(db)
    text = await export_proposals(db, "csv")
    assert text.startswith("id,title,") and text.endswith("\r\n")
    _, rows = _csv_rows(text)
    expected = _expected_published(seeded.published_id)
    history = expected.pop("history")
    assert rows[0] == {
        **{name: "" if value is None else str(value) for name, value in expected.items()},
        "history": "; ".join(
            f"{step['at']} {step['status']} ({step['kind']}, {step['by_role']})" for step in history
        ),
    }
    # Spelled out once, so that the summary's shape is pinned down.
    assert rows[0]["history"] == (
        "2026-03-01T09:15:30Z draft (created, author); "
        "2026-03-02T08:00:00Z submitted (submitted, author); "
        "2026-03-03T09:00:00Z published (published, moderator); "
        "2026-06-30T22:30:00Z answered (answered, council)"
    )
    # Line breaks, quotes, semicolons and French text survive the quoting.
    assert rows[0]["description"] == (
        'Des bacs, un composteur ; des "ateliers" le samedi.\nÀ côté de l\'école, près du n°12'
    )


async def test_csv_cells_a_spreadsheet_would_run_are_quoted(db: Database) -> None:
    seeded = await seed(db)
    _, rows = _csv_rows(await export_proposals(db, "csv"))
    tricky = rows[1]
    assert tricky["id"] == str(seeded.tricky_id)
    assert tricky["title"] == '\'=HYPERLINK("http://evil.example","cliquez")'
    assert tricky["description"] == "'+33 6 12 34 56 78"
    assert tricky["neighbourhood"] == "'-Nord"
    assert tricky["theme"] == "'@SUM(A1:A9)"
    assert tricky["residents_bring"] == "'\tcmd|' /C calc'!A0"
    assert tricky["town_asked"] == "'\r=1+1"
    assert tricky["closing_note"] == "'=1+1 hors sujet"
    assert tricky["budget_euros"] == ""
    assert tricky["history"] == "2026-04-02T07:00:00Z withdrawn (withdrawn, author)"
    # No cell of the file starts a formula.
    _, all_rows = _csv_rows(await export_proposals(db, "csv"))
    for row in all_rows:
        for column, value in row.items():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), (column, value)


def test_spreadsheet_safe_leaves_ordinary_text_alone() -> None:
    assert spreadsheet_safe("Jardin – 2 000 €") == "Jardin – 2 000 €"
    assert spreadsheet_safe("a=b") == "a=b"
    assert spreadsheet_safe("") == ""
    assert spreadsheet_safe("-5 %") == "'-5 %"


def test_numbers_are_not_mistaken_for_formulas() -> None:
    # A number is written as a number, even a negative one; only text is prefixed.
    record: dict[str, Any] = dict.fromkeys(ALLOWED_PROPOSAL_FIELDS)
    record.update(id=1, budget_euros=-5, supports=0, followers=0, history=[])
    _, rows = _csv_rows(to_csv([record]))
    assert (rows[0]["budget_euros"], rows[0]["supports"]) == ("-5", "0")


async def test_an_unknown_format_is_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="unknown export format 'xml'"):
        await export_proposals(db, "xml")


# The command, end to end, on a SQLite file.


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


def test_cli_exports_csv_to_stdout(
    seeded_sqlite: Seeded, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert main(["export", "propositions", "--format", "csv"]) == 0
    captured = capsysbinary.readouterr()
    # UTF-8 bytes whatever the locale, with RFC 4180's CRLF untouched.
    text = captured.out.decode("utf-8")
    header, rows = _csv_rows(text)
    assert header == [*ALLOWED_PROPOSAL_FIELDS, "history"]
    assert [row["id"] for row in rows] == [
        str(seeded_sqlite.published_id),
        str(seeded_sqlite.tricky_id),
    ]
    assert rows[0]["title"] == "Un jardin partagé « rue Émile-Zola »"
    assert rows[1]["title"].startswith("'=")
    assert "Brouillon-secret-XYZ" not in text
    assert "En-attente-de-moderation-QRS" not in text
    _assert_no_personal_value("<stdout>", text)
    # The logs (the migration's line among them) stay on stderr, out of the data.
    assert "schema" not in text


def test_cli_exports_json_to_a_file(
    seeded_sqlite: Seeded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "propositions.json"
    assert main(["export", "propositions", "--format", "json", "--output", str(output)]) == 0
    assert capsys.readouterr().out == ""
    records = json.loads(output.read_text(encoding="utf-8"))
    assert records[0] == _expected_published(seeded_sqlite.published_id)
    assert [r["id"] for r in records] == [seeded_sqlite.published_id, seeded_sqlite.tricky_id]
    _assert_no_personal_value("<file>", output.read_text(encoding="utf-8"))


def test_cli_writes_csv_to_a_file_byte_for_byte(
    seeded_sqlite: Seeded, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    output = tmp_path / "propositions.csv"
    assert main(["export", "propositions", "--format", "csv", "--output", str(output)]) == 0
    assert main(["export", "propositions", "--format", "csv"]) == 0
    assert output.read_bytes() == capsysbinary.readouterr().out


def test_cli_refuses_an_unknown_format_with_a_clear_message(
    seeded_sqlite: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["export", "propositions", "--format", "xml"])
    assert exited.value.code == 2
    assert "invalid choice: 'xml' (choose from 'csv', 'json')" in capsys.readouterr().err


def test_the_command_offers_the_formats_the_export_writes() -> None:
    assert EXPORT_FORMATS == FORMATS


def test_cli_needs_a_format_and_a_dataset(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["export", "propositions"])
    assert exited.value.code == 2
    assert "--format" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["export", "personnes", "--format", "csv"])
    assert exited.value.code == 2
    assert "invalid choice: 'personnes'" in capsys.readouterr().err


def test_cli_help_says_drafts_and_personal_data_stay_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "Drafts are never exported" in help_text
    assert "awaiting moderation" in help_text
    assert "No personal data goes out" in help_text


def test_cli_reports_an_output_it_cannot_write(
    seeded_sqlite: Seeded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "missing" / "propositions.csv"
    assert main(["export", "propositions", "--format", "csv", "--output", str(output)]) == 1
    assert f"cannot write {output}" in capsys.readouterr().err


def test_config_is_still_taken_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "forum.toml"
    config.write_text(
        f'database_url = "sqlite+aiosqlite:///{tmp_path / "other.db"}"\n', encoding="utf-8"
    )
    assert main(["check-config", "--config", str(config)]) == 0
    assert main(["--config", str(config), "check-config"]) == 0
    assert capsys.readouterr().out == "configuration OK\nconfiguration OK\n"
