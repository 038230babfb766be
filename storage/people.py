"""One resident, several accounts: joining two persons into one, and parting an account again.

A person is the resident; an account is one of their identities on a platform. /lier joins
two persons (every row that names the one that goes is moved to the one that stays) and
/dissocier gives an account a person of its own. Every statement here is set-based and
reads the same on SQLite and PostgreSQL; callers pass plain ids and account keys
("telegram:42").
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel, col

from storage.models import (
    Account,
    HeldMessage,
    Person,
    PersonLinkCode,
    Poll,
    PollBallot,
    PollVoter,
    Proposal,
    ProposalFollow,
    ProposalSupport,
)

logger = logging.getLogger(__name__)

# Columns that name a person and are simply moved to the person that stays.
PERSON_COLUMNS: tuple[tuple[type[SQLModel], str], ...] = (
    (Account, "person_id"),
    (Proposal, "author_person_id"),
    (HeldMessage, "person_id"),
    (PersonLinkCode, "person_id"),
    (Poll, "created_by_person_id"),
)
# Tables keyed by (poll, person): one vote per person, merged by _merge_poll_votes.
PER_POLL_ROWS: tuple[type[PollVoter], ...] = (PollVoter,)
# Tables keyed by (proposal, person): when both persons have a row for the same proposal, the
# one that goes loses its row (a resident supports or follows a proposal once).
PER_PROPOSAL_ROWS: tuple[type[ProposalSupport] | type[ProposalFollow], ...] = (
    ProposalSupport,
    ProposalFollow,
)
# Language choices (/langue) are kept per account key ("account" scope of ``preference``),
# so they need no moving: each account keeps its own.


class AccountOf(NamedTuple):
    """An account and the person it belongs to."""

    id: int
    person_id: int
    platform: str
    user_id: str
    display_name: str

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.user_id}"


def split_account_key(account_key: str) -> tuple[str, str]:
    """("telegram", "42") from "telegram:42"."""
    platform, _, user_id = account_key.partition(":")
    return platform, user_id


_ACCOUNT_COLUMNS = (
    col(Account.id),
    col(Account.person_id),
    col(Account.platform),
    col(Account.platform_user_id),
    col(Account.display_name),
)


def _account_of(row: Any) -> AccountOf:
    return AccountOf(int(row[0]), int(row[1]), str(row[2]), str(row[3]), str(row[4]))


async def find_account(session: AsyncSession, account_key: str) -> AccountOf | None:
    """The stored account with ``account_key`` and its person, read now (not from a cache:
    joining persons must start from what the database says)."""
    platform, user_id = split_account_key(account_key)
    row = (
        await session.execute(
            sa.select(*_ACCOUNT_COLUMNS).where(
                col(Account.platform) == platform, col(Account.platform_user_id) == user_id
            )
        )
    ).first()
    return _account_of(row) if row is not None else None


async def accounts_of(session: AsyncSession, person_id: int) -> list[AccountOf]:
    """Every account of a person, oldest first."""
    rows = await session.execute(
        sa.select(*_ACCOUNT_COLUMNS)
        .where(col(Account.person_id) == person_id)
        .order_by(col(Account.id))
    )
    return [_account_of(row) for row in rows.all()]


async def merge_persons(session: AsyncSession, keep: int, gone: int) -> None:
    """Make ``gone`` one with ``keep``: every row that names ``gone`` names ``keep``, a
    proposal both supported counts one support, one's support of the other's proposal goes,
    and the person ``gone`` is deleted."""
    if keep == gone:
        raise ValueError("a person cannot be merged with itself")
    recount = set(await _drop_duplicate_rows(session, keep, gone))
    await _merge_poll_votes(session, keep, gone)
    for table, column in PERSON_COLUMNS:
        await session.execute(
            sa.update(table)
            .where(getattr(table, column) == gone)
            .values({column: keep})
            .execution_options(synchronize_session="fetch")
        )
    # An author does not support their own proposal (handlers/proposals.py refuses it): one
    # account's support of the other account's proposal was the same resident twice.
    own = sa.select(col(Proposal.id)).where(col(Proposal.author_person_id) == keep)
    own_supported = col(ProposalSupport.proposal_id).in_(own)
    recount.update(
        int(i)
        for i in (
            await session.execute(
                sa.select(col(ProposalSupport.proposal_id)).where(
                    col(ProposalSupport.person_id) == keep, own_supported
                )
            )
        ).scalars()
    )
    await session.execute(
        sa.delete(ProposalSupport)
        .where(col(ProposalSupport.person_id) == keep, own_supported)
        .execution_options(synchronize_session="fetch")
    )
    if recount:
        # Counted again from the rows rather than decremented: right whatever the count said.
        counted = (
            sa.select(sa.func.count())
            .select_from(ProposalSupport)
            .where(col(ProposalSupport.proposal_id) == col(Proposal.id))
            .scalar_subquery()
        )
        await session.execute(
            sa.update(Proposal)
            .where(col(Proposal.id).in_(sorted(recount)))
            .values(supports=counted)
            .execution_options(synchronize_session="fetch")
        )
    # The language the person that goes may have given, if the one that stays has none.
    language = sa.select(col(Person.language)).where(col(Person.id) == gone).scalar_subquery()
    await session.execute(
        sa.update(Person)
        .where(col(Person.id) == keep, col(Person.language).is_(None))
        .values(language=language)
        .execution_options(synchronize_session="fetch")
    )
    await session.execute(
        sa.delete(Person)
        .where(col(Person.id) == gone)
        .execution_options(synchronize_session="fetch")
    )
    logger.info("person %d merged into person %d", gone, keep)


async def _drop_duplicate_rows(session: AsyncSession, keep: int, gone: int) -> list[int]:
    """Delete ``gone``'s support and follow rows of proposals ``keep`` has one for, and move
    the others to ``keep``; returns the proposals whose supports were both persons'."""
    doubled: list[int] = []
    for table in PER_PROPOSAL_ROWS:
        proposal_id = col(table.proposal_id)
        person_id = col(table.person_id)
        kept = sa.select(proposal_id).where(person_id == keep)
        if table is ProposalSupport:
            doubled = [
                int(i)
                for i in (
                    await session.execute(
                        sa.select(proposal_id).where(person_id == gone, proposal_id.in_(kept))
                    )
                ).scalars()
            ]
        # The primary key is (proposal, person): the doubles go before the others move.
        await session.execute(
            sa.delete(table)
            .where(person_id == gone, proposal_id.in_(kept))
            .execution_options(synchronize_session="fetch")
        )
        await session.execute(
            sa.update(table)
            .where(person_id == gone)
            .values(person_id=keep)
            .execution_options(synchronize_session="fetch")
        )
    return doubled


async def _merge_poll_votes(session: AsyncSession, keep: int, gone: int) -> None:
    """One person, one vote: in a poll both persons voted in, ``keep``'s vote stays and
    ``gone``'s goes (with its ballot, when the poll is not anonymous and the ballot is known).

    In an anonymous poll nothing links a ballot to its voter, so ``gone``'s ballot cannot be
    found: the two votes cast before the accounts were linked both stay counted.
    """
    kept = sa.select(col(PollVoter.poll_id)).where(col(PollVoter.person_id) == keep)
    doubled = col(PollVoter.person_id) == gone, col(PollVoter.poll_id).in_(kept)
    ballots = [
        b
        for b in (
            await session.execute(sa.select(col(PollVoter.ballot_id)).where(*doubled))
        ).scalars()
        if b
    ]
    if ballots:
        await session.execute(
            sa.delete(PollBallot)
            .where(col(PollBallot.id).in_(ballots))
            .execution_options(synchronize_session="fetch")
        )
    await session.execute(
        sa.delete(PollVoter).where(*doubled).execution_options(synchronize_session="fetch")
    )
    await session.execute(
        sa.update(PollVoter)
        .where(col(PollVoter.person_id) == gone)
        .values(person_id=keep)
        .execution_options(synchronize_session="fetch")
    )


async def detach_account(session: AsyncSession, account_id: int, now: datetime) -> int | None:
    """Give the account a person of its own; the person it leaves keeps everything else
    (supports, proposals, held messages) and its other accounts. Returns the new person's
    id, or None when the account is its person's only one."""
    account = _account_of(
        (
            await session.execute(sa.select(*_ACCOUNT_COLUMNS).where(col(Account.id) == account_id))
        ).one()
    )
    others = [a for a in await accounts_of(session, account.person_id) if a.id != account_id]
    if not others:
        return None
    person = Person(display_name=account.display_name, created_at=now)
    session.add(person)
    await session.flush()
    assert person.id is not None
    await session.execute(
        sa.update(Account)
        .where(col(Account.id) == account_id)
        .values(person_id=person.id)
        .execution_options(synchronize_session="fetch")
    )
    # Where the person that stays hears of its proposals: an account it still has, not the
    # one that leaves (which may now be someone else's).
    heir = others[0].key
    await session.execute(
        sa.update(Proposal)
        .where(
            col(Proposal.author_person_id) == account.person_id,
            col(Proposal.author_account_key) == account.key,
        )
        .values(author_account_key=heir)
        .execution_options(synchronize_session="fetch")
    )
    # Follows and supports stay the person's; they are heard of where the person still is.
    for table in (ProposalFollow, ProposalSupport):
        await session.execute(
            sa.update(table)
            .where(
                col(table.person_id) == account.person_id,
                col(table.account_key) == account.key,
            )
            .values(account_key=heir)
            .execution_options(synchronize_session="fetch")
        )
    # One account, one vote: the polls the person voted in count this account's vote
    # already, so its new person is noted as having voted (with no ballot of its own).
    voted = (
        (
            await session.execute(
                sa.select(col(PollVoter.poll_id)).where(
                    col(PollVoter.person_id) == account.person_id
                )
            )
        )
        .scalars()
        .all()
    )
    for poll_id in voted:
        session.add(
            PollVoter(poll_id=poll_id, person_id=person.id, account_key=account.key, ballot_id=None)
        )
    # A code this account asked for would join it back to the person it leaves.
    await session.execute(
        sa.delete(PersonLinkCode)
        .where(col(PersonLinkCode.account_key) == account.key)
        .execution_options(synchronize_session="fetch")
    )
    logger.info("account %d left person %d for person %d", account_id, account.person_id, person.id)
    return person.id
