"""Open data, as CSV or JSON, without personal data: the proposals residents published and the
results of closed polls.

What goes out is an allowed list (``PROPOSAL_FIELDS``, ``HISTORY_FIELDS``, ``POLL_FIELDS``,
``OPTION_FIELDS``): the query names each column it reads, so the author's person id, account
key and discussion threads are never even loaded, and supports and follows leave the database
only as counts.

Only what the forum itself shows everyone goes out: proposals the moderators published
(``published_at`` set). A draft, a proposal awaiting moderation and one the moderators
refused stay their author's alone.

A poll goes out once closed, with the tally written at its close (``Poll.result``): the
result that was posted, never recounted. Neither ``poll_voter`` (who voted) nor
``poll_ballot`` (what each ballot says) is read at all.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import col

from storage.db import Database
from storage.models import Poll, Proposal, ProposalEvent, ProposalFollow, ProposalSupport

FORMATS = ("csv", "json")

# Every field of an exported proposal, in column order. Nothing else ever goes out.
PROPOSAL_FIELDS: tuple[str, ...] = (
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
)
# An author's news went privately to supporters and followers, unmoderated: that it was
# sent is history, its words are not published.
PRIVATE_NOTES = frozenset({"update"})
# One step of a proposal's history: what happened, when, and in which role — never who.
HISTORY_FIELDS: tuple[str, ...] = ("at", "kind", "status", "by_role", "note")
# JSON: the proposal's fields, then its history as a list of HISTORY_FIELDS objects.
JSON_FIELDS: tuple[str, ...] = (*PROPOSAL_FIELDS, "history")
# CSV: one row per proposal, the history summarised in one cell (see history_summary).
CSV_FIELDS: tuple[str, ...] = (*PROPOSAL_FIELDS, "history")

_DATE_FIELDS = frozenset({"created_at", "submitted_at", "published_at", "answered_at", "closed_at"})

# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection"):
# "=HYPERLINK(...)" in a title would run on a journalist's machine. Tab and carriage return
# are on OWASP's list too: some spreadsheets skip them and read the formula behind.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def iso_utc(value: datetime | None) -> str | None:
    """ISO 8601 in UTC to the second, with a "Z": what spreadsheets and pandas both read."""
    if value is None:
        return None
    if value.tzinfo is None:
        # The models only ever hand back aware UTC; a naive one would be a silent lie here.
        raise ValueError("naive datetime refused: every timestamp must carry its time zone")
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def proposals_for_export(db: Database) -> list[dict[str, Any]]:
    """Every public proposal (not a draft, not awaiting moderation), oldest first, each with
    its counts and its history.

    Dates are ISO 8601 UTC strings; absent values are ``None``. Read in one transaction so
    that the counts and the history match the proposals (see the isolation level below).
    """
    supports = (
        sa.select(sa.func.count())
        .select_from(ProposalSupport)
        .where(col(ProposalSupport.proposal_id) == col(Proposal.id))
        .scalar_subquery()
    )
    followers = (
        sa.select(sa.func.count())
        .select_from(ProposalFollow)
        .where(col(ProposalFollow.proposal_id) == col(Proposal.id))
        .scalar_subquery()
    )
    # Named columns only: the author, the chat it was written in and the discussion threads
    # are not read at all.
    # The support count comes from proposal_support (one row per person), the record of who
    # supported, rather than the counter kept on the proposal for display.
    columns: list[sa.Label[Any]] = [
        col(getattr(Proposal, name)).label(name)
        for name in PROPOSAL_FIELDS
        if name not in ("supports", "followers")
    ]
    published = col(Proposal.published_at).is_not(None)
    proposals_query = (
        sa.select(*columns, supports.label("supports"), followers.label("followers"))
        .where(published)
        .order_by(col(Proposal.id))
    )
    # Joined to the proposal rather than listed by id: no parameter limit, whatever the count.
    history_columns: list[sa.Label[Any]] = [
        col(ProposalEvent.proposal_id).label("proposal_id"),
        *(col(getattr(ProposalEvent, name)).label(name) for name in HISTORY_FIELDS),
    ]
    history_query = (
        sa.select(*history_columns)
        .join(Proposal, col(Proposal.id) == col(ProposalEvent.proposal_id))
        .where(published)
        .order_by(col(ProposalEvent.proposal_id), col(ProposalEvent.at), col(ProposalEvent.id))
    )
    async with db.read() as session:
        if not db.is_sqlite:
            # PostgreSQL's default (read committed) gives each statement its own snapshot: a
            # proposal answered between the two queries would show the new step in its history
            # and the old status. SQLite's read transaction already holds one snapshot (WAL).
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        proposal_rows = (await session.execute(proposals_query)).mappings().all()
        history_rows = (await session.execute(history_query)).mappings().all()

    history: dict[int, list[dict[str, Any]]] = {}
    for event in history_rows:
        step = {
            name: iso_utc(event[name]) if name == "at" else event[name] for name in HISTORY_FIELDS
        }
        if step["kind"] in PRIVATE_NOTES:
            step["note"] = None
        history.setdefault(event["proposal_id"], []).append(step)
    proposals: list[dict[str, Any]] = []
    for row in proposal_rows:
        record = {
            name: iso_utc(row[name]) if name in _DATE_FIELDS else row[name]
            for name in PROPOSAL_FIELDS
        }
        record["history"] = history.get(row["id"], [])
        proposals.append(record)
    return proposals


def to_json(proposals: Sequence[Mapping[str, Any]]) -> str:
    """A JSON array of proposals, French text as is (not \\u-escaped), ending with a newline."""
    records = [{name: proposal[name] for name in JSON_FIELDS} for proposal in proposals]
    return json.dumps(records, ensure_ascii=False, indent=2) + "\n"


def history_summary(history: Sequence[Mapping[str, Any]]) -> str:
    """One cell for a proposal's history: ``<at> <status> (<kind>, <by_role>)`` per step,
    oldest first, joined by "; ".

    Status, kind and role are the bot's own short words, so "; " splits the cell back into
    steps. The notes are free text (they may hold "; " or line breaks) and stay in the JSON
    export only.
    """
    return "; ".join(
        f"{step['at']} {step['status']} ({step['kind']}, {step['by_role']})" for step in history
    )


def spreadsheet_safe(value: str) -> str:
    """The text, with a leading quote when a spreadsheet would take it for a formula."""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str):
        return spreadsheet_safe(value)
    # Numbers (id, budget, counts) stay numbers: a negative one is not a formula.
    return value


def to_csv(proposals: Sequence[Mapping[str, Any]]) -> str:
    """RFC 4180 CSV (header row, CRLF, quotes as needed), one row per proposal."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_FIELDS)
    for proposal in proposals:
        cells = [proposal[name] for name in PROPOSAL_FIELDS]
        cells.append(history_summary(proposal["history"]))
        writer.writerow([_csv_cell(cell) for cell in cells])
    return out.getvalue()


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (expected one of {', '.join(FORMATS)})")


def render(proposals: Sequence[Mapping[str, Any]], fmt: str) -> str:
    _check_format(fmt)
    return to_csv(proposals) if fmt == "csv" else to_json(proposals)


async def export_proposals(db: Database, fmt: str) -> str:
    """The whole export as text, in ``fmt`` ("csv" or "json")."""
    # Refused before the database is read.
    _check_format(fmt)
    return render(await proposals_for_export(db), fmt)


# -- polls ----------------------------------------------------------------------------------

# Every field of an exported poll, in column order; its options follow (OPTION_FIELDS).
POLL_FIELDS: tuple[str, ...] = (
    "id",
    "kind",
    "question",
    "closes_at",
    "closed_at",
    "anonymous",
    "neighbourhood",
    "voters",
    "winner",
)
# One option of a poll: its number as the post shows it (1 for the first), its label (a date
# poll's slot start, ISO 8601 UTC), and its counts. ``votes`` is the votes for the option; in
# a ranked poll, those of the final round of the instant runoff; in a date poll, the "yes"
# answers, with ``maybe`` and ``no`` beside them (empty for every other kind).
OPTION_FIELDS: tuple[str, ...] = ("option", "label", "votes", "maybe", "no")
# JSON: the poll's fields, then its options as a list of OPTION_FIELDS objects.
POLL_JSON_FIELDS: tuple[str, ...] = (*POLL_FIELDS, "options")
# CSV: one row per option, the poll's fields repeated on each (a tidy table: one count a cell).
POLL_CSV_FIELDS: tuple[str, ...] = (*POLL_FIELDS, *OPTION_FIELDS)

# Read from the poll row: nothing about who opened it (person, chat) nor how it was run.
_POLL_COLUMNS = (
    "id",
    "kind",
    "question",
    "options",
    "closes_at",
    "closed_at",
    "anonymous",
    "neighbourhood",
    "result",
)


def _count(value: Any) -> int | None:
    """A count from the stored tally, or None when it holds something else."""
    # bool is an int, and a tally never says True votes.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _counts(result: Mapping[str, Any], name: str, size: int) -> list[int | None]:
    """One count per option from ``result[name]``; None where the tally has none."""
    stored = result.get(name)
    values = list(stored) if isinstance(stored, list) else []
    return [_count(values[i]) if i < len(values) else None for i in range(size)]


def _slot_utc(text: str) -> str:
    """A date poll's slot (ISO 8601 with the town's offset, as stored) in UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    if moment.tzinfo is None:
        return text
    return iso_utc(moment) or text


def _poll_record(row: Mapping[str, Any]) -> dict[str, Any]:
    kind = str(row["kind"])
    options = [str(o) for o in row["options"] or []]
    labels = [_slot_utc(o) for o in options] if kind == "dates" else options
    result: Mapping[str, Any] = row["result"] if isinstance(row["result"], Mapping) else {}
    votes = _counts(result, "counts", len(labels))
    maybe: list[int | None] = [None] * len(labels)
    no: list[int | None] = [None] * len(labels)
    if kind == "dates":
        # "counts" holds each slot's yes; maybe and no come from "slots" (one {"yes", "maybe",
        # "no"} per slot) where the tally has it. A tally without it (polls.close writes none
        # yet) leaves them empty rather than recount ballots the posted result did not show.
        slots = result.get("slots")
        if isinstance(slots, list):
            for i, slot in enumerate(slots[: len(labels)]):
                if isinstance(slot, Mapping):
                    votes[i] = _count(slot.get("yes"))
                    maybe[i] = _count(slot.get("maybe"))
                    no[i] = _count(slot.get("no"))
    winner = None
    if kind == "ranked":
        index = _count(result.get("winner"))
        if index is not None and 0 <= index < len(labels):
            winner = labels[index]
    record: dict[str, Any] = {
        "id": row["id"],
        "kind": kind,
        "question": row["question"],
        "closes_at": iso_utc(row["closes_at"]),
        "closed_at": iso_utc(row["closed_at"]),
        "anonymous": bool(row["anonymous"]),
        "neighbourhood": row["neighbourhood"],
        "voters": _count(result.get("voters")),
        "winner": winner,
    }
    record["options"] = [
        {"option": i + 1, "label": label, "votes": votes[i], "maybe": maybe[i], "no": no[i]}
        for i, label in enumerate(labels)
    ]
    return record


async def polls_for_export(db: Database) -> list[dict[str, Any]]:
    """Every closed poll, oldest first, with its options and the counts of its close.

    Dates are ISO 8601 UTC strings; absent values are ``None``.
    """
    columns: list[sa.Label[Any]] = [col(getattr(Poll, name)).label(name) for name in _POLL_COLUMNS]
    query = (
        sa.select(*columns)
        # Closed and counted: an open poll's counts may still be hidden ("results after the
        # close") and are not final anyway.
        .where(col(Poll.status) == "closed", col(Poll.closed_at).is_not(None))
        .order_by(col(Poll.id))
    )
    async with db.read() as session:
        rows = (await session.execute(query)).mappings().all()
    return [_poll_record(dict(row)) for row in rows]


def polls_to_json(polls: Sequence[Mapping[str, Any]]) -> str:
    """A JSON array of polls, French text as is, ending with a newline."""
    records = [
        {
            **{name: poll[name] for name in POLL_FIELDS},
            "options": [
                {name: option[name] for name in OPTION_FIELDS} for option in poll["options"]
            ],
        }
        for poll in polls
    ]
    return json.dumps(records, ensure_ascii=False, indent=2) + "\n"


def _csv_flag(value: Any) -> Any:
    # "true" / "false" as JSON writes them, rather than Python's "True".
    return ("true" if value else "false") if isinstance(value, bool) else value


def polls_to_csv(polls: Sequence[Mapping[str, Any]]) -> str:
    """RFC 4180 CSV (header row, CRLF, quotes as needed), one row per option of each poll."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(POLL_CSV_FIELDS)
    for poll in polls:
        head = [_csv_flag(poll[name]) for name in POLL_FIELDS]
        for option in poll["options"]:
            cells = [*head, *(option[name] for name in OPTION_FIELDS)]
            writer.writerow([_csv_cell(cell) for cell in cells])
    return out.getvalue()


def render_polls(polls: Sequence[Mapping[str, Any]], fmt: str) -> str:
    _check_format(fmt)
    return polls_to_csv(polls) if fmt == "csv" else polls_to_json(polls)


async def export_polls(db: Database, fmt: str) -> str:
    """The closed polls as text, in ``fmt`` ("csv" or "json")."""
    _check_format(fmt)
    return render_polls(await polls_for_export(db), fmt)


# The datasets of `forum-habitant export`, by the name the command takes.
DATASETS: dict[str, Callable[[Database, str], Awaitable[str]]] = {
    "propositions": export_proposals,
    "sondages": export_polls,
}


async def export(db: Database, dataset: str, fmt: str) -> str:
    """One dataset as text; an unknown dataset or format is refused before any read."""
    exporter = DATASETS.get(dataset)
    if exporter is None:
        raise ValueError(
            f"unknown export dataset {dataset!r} (expected one of {', '.join(DATASETS)})"
        )
    return await exporter(db, fmt)
