"""Open data: every proposal residents published, as CSV or JSON, without personal data.

What goes out is an allowed list (``PROPOSAL_FIELDS``, ``HISTORY_FIELDS``): the query names
each column it reads, so the author's person id, account key and discussion threads are never
even loaded, and supports and follows leave the database only as counts.

Only what the forum itself shows everyone goes out: proposals the moderators published
(``published_at`` set). A draft, a proposal awaiting moderation and one the moderators
refused stay their author's alone.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import col

from storage.db import Database
from storage.models import Proposal, ProposalEvent, ProposalFollow, ProposalSupport

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
