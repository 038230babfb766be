"""Every table of the forum, in one module so the schema reads in one place.

Migrations in ``storage/migrations`` are generated from these models; a test checks that the
two never drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp always stored in UTC and always read back timezone-aware.

    SQLite has no time zone type, so without this a value written aware comes back naive.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: every timestamp must carry its time zone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(**kwargs: Any) -> Any:
    return Field(sa_type=UTCDateTime(), **kwargs)


class Person(SQLModel, table=True):
    """A resident, whatever platforms they use."""

    __tablename__ = "person"

    id: int | None = Field(default=None, primary_key=True)
    display_name: str = Field(max_length=200)
    language: str | None = Field(default=None, max_length=8)
    created_at: datetime = _ts(default_factory=utcnow)


class Account(SQLModel, table=True):
    """One platform identity of a person (a Telegram user, a Discord user, a console name)."""

    __tablename__ = "account"
    __table_args__ = (sa.UniqueConstraint("platform", "platform_user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    person_id: int = Field(foreign_key="person.id", index=True)
    platform: str = Field(max_length=16)
    platform_user_id: str = Field(max_length=64)
    username: str | None = Field(default=None, max_length=200)
    display_name: str = Field(max_length=200)
    is_bot: bool = False
    created_at: datetime = _ts(default_factory=utcnow)
    last_seen_at: datetime = _ts(default_factory=utcnow)


class Channel(SQLModel, table=True):
    """A chat the bot serves, the neighbourhood it belongs to and what it is for."""

    __tablename__ = "channel"
    __table_args__ = (sa.UniqueConstraint("platform", "chat_id", "thread_id"),)

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=16)
    chat_id: str = Field(max_length=64)
    # Empty string rather than NULL so that the unique constraint holds on every database.
    thread_id: str = Field(default="", max_length=64)
    name: str = Field(default="", max_length=200)
    neighbourhood: str | None = Field(default=None, max_length=100)
    purpose: str = Field(default="general", max_length=32)
    language: str | None = Field(default=None, max_length=8)
    created_at: datetime = _ts(default_factory=utcnow)


class Message(SQLModel, table=True):
    """A message a resident wrote, as the platform delivered it."""

    __tablename__ = "message"
    __table_args__ = (sa.UniqueConstraint("channel_id", "platform_message_id"),)

    id: int | None = Field(default=None, primary_key=True)
    channel_id: int = Field(foreign_key="channel.id", index=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    platform_message_id: str = Field(max_length=64)
    text: str = Field(sa_type=sa.Text())
    # Formatting spans as JSON so the text can be re-rendered on any platform later.
    spans: list[dict[str, Any]] = Field(default_factory=list, sa_type=sa.JSON())
    reply_to_platform_id: str | None = Field(default=None, max_length=64)
    sent_at: datetime = _ts(index=True)
    received_at: datetime = _ts(default_factory=utcnow)
    edited_at: datetime | None = _ts(default=None)
    deleted_at: datetime | None = _ts(default=None)


class InboxUpdate(SQLModel, table=True):
    """A raw platform update, stored before it is acted on so a crash cannot lose it."""

    __tablename__ = "inbox_update"
    __table_args__ = (
        sa.UniqueConstraint("platform", "update_key"),
        sa.Index("ix_inbox_pending", "platform", "handled_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=16)
    # Telegram's update_id, Discord's message/interaction id with the event type.
    update_key: str = Field(max_length=128)
    payload: dict[str, Any] = Field(sa_type=sa.JSON())
    received_at: datetime = _ts(default_factory=utcnow)
    handled_at: datetime | None = _ts(default=None)
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_type=sa.Text())


class PlatformCursor(SQLModel, table=True):
    """How far the bot has read a platform (Telegram offset, last Discord message per channel)."""

    __tablename__ = "platform_cursor"

    platform: str = Field(primary_key=True, max_length=16)
    key: str = Field(primary_key=True, max_length=128)
    value: str = Field(max_length=128)
    updated_at: datetime = _ts(default_factory=utcnow)


class AuditEntry(SQLModel, table=True):
    """What a moderator, the council or the bot did, for the record."""

    __tablename__ = "audit_entry"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts(default_factory=utcnow, index=True)
    actor_account_id: int | None = Field(default=None, foreign_key="account.id")
    action: str = Field(max_length=64)
    target: str | None = Field(default=None, max_length=200)
    details: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON())


class ChatPreference(SQLModel, table=True):
    """A language chosen for a chat or a person (``/langue en``)."""

    __tablename__ = "preference"
    __table_args__ = (sa.UniqueConstraint("scope", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(max_length=16)  # "chat" or "account"
    key: str = Field(max_length=200)
    language: str = Field(max_length=8)


class OutboxItem(SQLModel, table=True):
    """An action waiting to be performed on a platform, delivered in order per chat.

    Rows are written in the same transaction that handles the update which caused them, so a
    crash either keeps both or neither; ``(source_key, seq)`` makes a re-run enqueue nothing new.
    """

    __tablename__ = "outbox_item"
    __table_args__ = (
        sa.UniqueConstraint("source_key", "seq"),
        sa.Index("ix_outbox_pending", "chat_key", "status", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=16)
    # ChatRef rendered as text ("telegram:-100123/7"): the unit of ordering and rate limits.
    chat_key: str = Field(max_length=200)
    kind: str = Field(max_length=32)  # the action's type name
    action: dict[str, Any] = Field(sa_type=sa.JSON())
    source_key: str = Field(max_length=200)
    seq: int = 0
    status: str = Field(default="pending", max_length=16)  # pending, delivered, failed
    created_at: datetime = _ts(default_factory=utcnow)
    not_before: datetime | None = _ts(default=None)
    attempts: int = 0
    delivered_at: datetime | None = _ts(default=None)
    last_error: str | None = Field(default=None, sa_type=sa.Text())
    # Message ids the platform gave back (every part of a split message).
    result_ids: list[str] = Field(default_factory=list, sa_type=sa.JSON())
    # Set when this row was merged into another row's post (batching).
    merged_into: int | None = Field(default=None)
    # Set just before the platform is called, cleared once the outcome is known: a row found
    # still "in flight" after a crash may already have been posted.
    in_flight_since: datetime | None = _ts(default=None)


class MessageLink(SQLModel, table=True):
    """One origin message and one of its copies on the other side (one row per part).

    Kept for the retention period so that edits, replies and deletions keep working months
    later and across restarts.
    """

    __tablename__ = "message_link"
    __table_args__ = (
        sa.UniqueConstraint("origin_chat_key", "origin_message_id", "copy_chat_key", "part"),
        sa.Index("ix_message_link_copy", "copy_chat_key", "copy_message_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    origin_chat_key: str = Field(max_length=200)
    origin_message_id: str = Field(max_length=64)
    copy_chat_key: str = Field(max_length=200)
    copy_message_id: str = Field(max_length=64)
    part: int = 0
    # True when the copy also carries other origin messages (a batch): edit it as a whole.
    batched: bool = False
    outbox_id: int | None = Field(default=None, foreign_key="outbox_item.id")
    created_at: datetime = _ts(default_factory=utcnow, index=True)


class BridgeLink(SQLModel, table=True):
    """Two chats linked by moderators with /relier (links from the settings file are not here)."""

    __tablename__ = "bridge_link"
    __table_args__ = (sa.UniqueConstraint("a_key", "b_key"),)

    id: int | None = Field(default=None, primary_key=True)
    a_key: str = Field(max_length=200)
    b_key: str = Field(max_length=200)
    direction: str = Field(default="both", max_length=16)
    created_by: str = Field(max_length=200)
    created_at: datetime = _ts(default_factory=utcnow)


class LinkCode(SQLModel, table=True):
    """A one-time code from /relier, waiting to be typed in the chat to link."""

    __tablename__ = "link_code"

    code: str = Field(primary_key=True, max_length=16)
    chat_key: str = Field(max_length=200)
    created_by: str = Field(max_length=200)
    expires_at: datetime = _ts()


class NamedPost(SQLModel, table=True):
    """A post a handler named (``poll:42``) in one chat, so it can be edited or pinned later.

    The row is written with the post's outbox row, in the handler's transaction; the outbox
    fills in the message ids once the platform has answered.
    """

    __tablename__ = "named_post"

    key: str = Field(primary_key=True, max_length=200)
    chat_key: str = Field(primary_key=True, max_length=200)
    outbox_id: int | None = Field(default=None)
    # Every part of the post, in order, once it is delivered.
    message_ids: list[str] = Field(default_factory=list, sa_type=sa.JSON())
    created_at: datetime = _ts(default_factory=utcnow)


class DueTime(SQLModel, table=True):
    """Something that must happen at a moment: a poll closes, a reminder, a mute ends.

    Written in the transaction of the handler that decided it; ``key`` names it, so that
    rescheduling replaces the row and a repeated schedule adds nothing.
    """

    __tablename__ = "due_time"
    __table_args__ = (sa.Index("ix_due_time_due_at", "due_at"),)

    key: str = Field(primary_key=True, max_length=200)
    kind: str = Field(max_length=64)
    subject: str = Field(default="", max_length=200)
    due_at: datetime = _ts()
    created_at: datetime = _ts(default_factory=utcnow)


class FormSession(SQLModel, table=True):
    """A form being filled in step by step (Telegram, console): one per account and chat."""

    __tablename__ = "form_session"
    __table_args__ = (sa.UniqueConstraint("account_key", "chat_key"),)

    id: int | None = Field(default=None, primary_key=True)
    # "telegram:12345": the account answering; "telegram:-100123/7": where the questions go.
    account_key: str = Field(max_length=200)
    chat_key: str = Field(max_length=200)
    form_id: str = Field(max_length=100)
    step: int = 0
    answers: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON())
    # What the command that opened the form passed along (a proposal id …).
    data: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON())
    started_at: datetime = _ts(default_factory=utcnow)
    updated_at: datetime = _ts(default_factory=utcnow)
    expires_at: datetime = _ts()


class HeldMessage(SQLModel, table=True):
    """A message the gate held for review instead of letting handlers (and the bridge) see it."""

    __tablename__ = "held_message"
    __table_args__ = (sa.UniqueConstraint("chat_key", "message_id"),)

    id: int | None = Field(default=None, primary_key=True)
    chat_key: str = Field(max_length=200)
    message_id: str = Field(max_length=64)
    account_key: str = Field(max_length=200)
    person_id: int | None = Field(default=None)
    check: str = Field(max_length=64)
    reason: str = Field(sa_type=sa.Text())
    # The event as it came in, so that a release hands it to the handlers unchanged.
    event: dict[str, Any] = Field(sa_type=sa.JSON())
    held_at: datetime = _ts(default_factory=utcnow)
    decided_at: datetime | None = _ts(default=None)
    decided_by: str | None = Field(default=None, max_length=200)
    # "released" or "dropped" once a moderator decided.
    decision: str | None = Field(default=None, max_length=16)


class PersonLinkCode(SQLModel, table=True):
    """A one-time code from /lier: typed by the same resident on the other platform, it joins
    both accounts to one person. Only a hash of the code is kept."""

    __tablename__ = "person_link_code"

    code_hash: str = Field(primary_key=True, max_length=64)
    person_id: int = Field(foreign_key="person.id", index=True)
    # The account that asked: the code must be typed from another platform.
    account_key: str = Field(max_length=200)
    expires_at: datetime = _ts()


class LinkAttempt(SQLModel, table=True):
    """Wrong /lier codes typed by an account: a few, then it must wait (no guessing)."""

    __tablename__ = "link_attempt"

    account_key: str = Field(primary_key=True, max_length=200)
    failures: int = 0
    window_started_at: datetime = _ts()


class Proposal(SQLModel, table=True):
    """A fifty-fifty initiative: what residents bring, what the town is asked for.

    ``status`` follows the lifecycle of handlers/proposals.py; every change is also written
    to ``proposal_event``, which is the proposal's history.
    """

    __tablename__ = "proposal"
    __table_args__ = (sa.Index("ix_proposal_status", "status", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    author_person_id: int = Field(foreign_key="person.id", index=True)
    # The account it was written from: where the author hears of it.
    author_account_key: str = Field(max_length=200)
    # The chat it was written in: published there when no proposals channel is configured.
    origin_chat_key: str = Field(max_length=200)
    title: str = Field(max_length=120)
    description: str = Field(sa_type=sa.Text())
    neighbourhood: str = Field(max_length=100)
    theme: str = Field(max_length=100)
    residents_bring: str = Field(sa_type=sa.Text())
    town_asked: str = Field(sa_type=sa.Text())
    budget_euros: int | None = Field(default=None, sa_type=sa.BigInteger())
    status: str = Field(default="draft", max_length=16)
    # The moderator's reason for refusing; the council's official answer and its part.
    refusal_reason: str | None = Field(default=None, sa_type=sa.Text())
    official_answer: str | None = Field(default=None, sa_type=sa.Text())
    town_brings: str | None = Field(default=None, sa_type=sa.Text())
    planned_for: str | None = Field(default=None, max_length=100)
    closing_note: str | None = Field(default=None, sa_type=sa.Text())
    # Where its discussion happens ("discord:123/456"), once published.
    thread_keys: list[str] = Field(default_factory=list, sa_type=sa.JSON())
    supports: int = 0
    created_at: datetime = _ts(default_factory=utcnow)
    submitted_at: datetime | None = _ts(default=None)
    published_at: datetime | None = _ts(default=None)
    answered_at: datetime | None = _ts(default=None)
    closed_at: datetime | None = _ts(default=None)
    last_author_update_at: datetime | None = _ts(default=None)
    updated_at: datetime = _ts(default_factory=utcnow)


class _PersonOnProposal(SQLModel):
    """A person's tie to a proposal, and the account it was made from (where they hear of it)."""

    proposal_id: int = Field(foreign_key="proposal.id", primary_key=True)
    person_id: int = Field(foreign_key="person.id", primary_key=True, index=True)
    account_key: str = Field(max_length=200)
    created_at: datetime = _ts(default_factory=utcnow)


class ProposalSupport(_PersonOnProposal, table=True):
    """One person's support of one proposal (whatever account they pressed the button with)."""

    __tablename__ = "proposal_support"


class ProposalFollow(_PersonOnProposal, table=True):
    """A person who asked to hear of a proposal's changes."""

    __tablename__ = "proposal_follow"


class ProposalEvent(SQLModel, table=True):
    """One step of a proposal's history: a change of status, an update, an answer.

    ``by_role`` says who acted ("author", "moderator", "council", "bot"), never who.
    """

    __tablename__ = "proposal_event"

    id: int | None = Field(default=None, primary_key=True)
    proposal_id: int = Field(foreign_key="proposal.id", index=True)
    at: datetime = _ts(default_factory=utcnow)
    kind: str = Field(max_length=32)
    status: str = Field(max_length=16)
    by_role: str = Field(max_length=16)
    note: str | None = Field(default=None, sa_type=sa.Text())


class Poll(SQLModel, table=True):
    """A poll of the forum's own, with one tally across platforms (handlers/polls.py)."""

    __tablename__ = "poll"
    __table_args__ = (sa.Index("ix_poll_status", "status", "closes_at"),)

    id: int | None = Field(default=None, primary_key=True)
    # single, multiple, yesno, ranked, dates
    kind: str = Field(max_length=16)
    question: str = Field(max_length=300)
    # The options' labels; for a date poll, each slot's start as ISO 8601 with its offset
    # (the town's time when it was written).
    options: list[str] = Field(default_factory=list, sa_type=sa.JSON())
    max_choices: int | None = None
    closes_at: datetime = _ts()
    live_results: bool = True
    # Once on, never off: ballots are then stored with no link to who cast them.
    anonymous: bool = False
    # None: every resident; else only the residents of that neighbourhood.
    neighbourhood: str | None = Field(default=None, max_length=100)
    allow_change: bool = True
    status: str = Field(default="open", max_length=16)  # open, closed
    created_by_person_id: int = Field(foreign_key="person.id", index=True)
    origin_chat_key: str = Field(max_length=200)
    created_at: datetime = _ts(default_factory=utcnow)
    closed_at: datetime | None = _ts(default=None)
    # The final tally (counts, ranked-choice rounds), written once at the close.
    result: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON())


class PollBallot(SQLModel, table=True):
    """What was chosen, never by whom: a random id, the poll, the choice.

    No timestamp and no ordered id, so that a ballot cannot be matched to its voter by time
    or by order of insertion (SQLite stores it without a rowid).
    """

    __tablename__ = "poll_ballot"
    __table_args__ = ({"sqlite_with_rowid": False},)

    id: str = Field(primary_key=True, max_length=32)
    poll_id: int = Field(foreign_key="poll.id", index=True)
    # Option indexes (single, multiple, yes/no), a ranking, or one answer per date slot.
    choice: list[Any] = Field(default_factory=list, sa_type=sa.JSON())


class PollVoter(SQLModel, table=True):
    """Who voted in a poll: one row per person, whatever account or platform.

    ``ballot_id`` links to the ballot only in a poll that is not anonymous (so the vote can
    be changed); in an anonymous poll it is empty and ``voted_at`` is not kept.
    """

    __tablename__ = "poll_voter"

    poll_id: int = Field(foreign_key="poll.id", primary_key=True)
    person_id: int = Field(foreign_key="person.id", primary_key=True, index=True)
    account_key: str = Field(max_length=200)
    ballot_id: str | None = Field(default=None, max_length=32)
    voted_at: datetime | None = _ts(default=None)
