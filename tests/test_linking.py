"""One resident, several accounts: /lier joins a Telegram and a Discord account into one
person (supports count once), /dissocier parts them again; the dispatcher sees it at once."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import SQLModel, col, select

from bot.clock import FixedClock
from bot.config import Settings
from bot.dispatcher import Dispatcher
from bot.events import (
    Action,
    Author,
    ChatRef,
    CommandReceived,
    SendMessage,
    direct_chat,
)
from bot.handling import Command, Context, Role
from bot.platforms.console import Posted
from handlers import accounts, table
from storage import people, repository
from storage.db import Database
from storage.models import (
    Account,
    HeldMessage,
    LinkAttempt,
    Person,
    PersonLinkCode,
    Proposal,
    ProposalFollow,
    ProposalSupport,
)
from tests.forum import Forum
from tests.kit import NOW, command, committed, fake_context

TELEGRAM = Author(platform="telegram", user_id="42", display_name="Marie")
DISCORD = Author(platform="discord", user_id="7001", display_name="marie_d")
OTHER_DISCORD = Author(platform="discord", user_id="7002", display_name="Paul")
PAUL = Author(platform="telegram", user_id="43", display_name="Paul")
TELEGRAM_PRIVATE = ChatRef("telegram", "42")
TELEGRAM_GROUP = ChatRef("telegram", "-100123")
DISCORD_CHANNEL = ChatRef("discord", "1100")

CODE_IN_TEXT = re.compile(r"/lier ([A-Z0-9]{4}-[A-Z0-9]{4})")

Handler = Callable[[Context, CommandReceived], Awaitable[Sequence[Action]]]


class Run:
    """A handler run in its own committed transaction, as the dispatcher would."""

    def __init__(self, actions: Sequence[Action], ctx: Context) -> None:
        self.actions = list(actions)
        self.ctx = ctx

    @property
    def texts(self) -> list[str]:
        return [a.content.text for a in self.actions if isinstance(a, SendMessage)]

    @property
    def text(self) -> str:
        assert len(self.texts) == 1, self.texts
        return self.texts[0]

    @property
    def signals(self) -> list[str]:
        return list(self.ctx.signals)  # type: ignore[attr-defined]


async def _run(
    db: Database,
    author: Author,
    name: str,
    args: str = "",
    *,
    chat: ChatRef | None = None,
    clock: FixedClock | None = None,
) -> Run:
    handler: Handler = accounts.link_accounts if name == "lier" else accounts.unlink_account
    chat = chat or (TELEGRAM_PRIVATE if author.platform == "telegram" else DISCORD_CHANNEL)
    event = command(name, args, author=author, chat=chat)
    async with db.write() as session:
        at = clock.now() if clock is not None else NOW
        account = await repository.ensure_account(session, author, at)
        ctx = fake_context(session, event, person_id=account.person_id, clock=clock)
        actions = await handler(ctx, event)
    committed(ctx)
    return Run(actions, ctx)


def _code(run: Run) -> str:
    found = [m.group(1) for text in run.texts if (m := CODE_IN_TEXT.search(text))]
    assert len(found) == 1, run.texts
    return found[0]


async def _person_of(db: Database, author: Author) -> int:
    async with db.read() as session:
        account = await people.find_account(session, f"{author.platform}:{author.user_id}")
    assert account is not None
    return account.person_id


async def _persons(db: Database) -> set[int]:
    async with db.read() as session:
        return {i for i in (await session.execute(select(Person.id))).scalars() if i is not None}


# -- /lier --------------------------------------------------------------------------------------


async def test_a_code_from_telegram_typed_on_discord_joins_both_accounts(db: Database) -> None:
    given = await _run(db, TELEGRAM, "lier")
    assert "Sur votre autre application (Telegram ou Discord)" in given.text
    assert "valable 10 minutes" in given.text
    code = _code(given)
    async with db.read() as session:
        stored = (await session.execute(select(PersonLinkCode))).scalars().all()
    # Only a hash of the code is kept.
    assert len(stored) == 1
    assert code.replace("-", "") not in stored[0].code_hash
    assert stored[0].code_hash == accounts.code_hash(code.replace("-", ""))
    marie = await _person_of(db, TELEGRAM)

    used = await _run(db, DISCORD, "lier", code)
    assert used.texts[0].startswith("C'est fait : votre compte Telegram et celui-ci")
    # The code's owner hears of it where only they read it.
    notice = used.actions[1]
    assert isinstance(notice, SendMessage) and notice.chat == direct_chat("telegram", "42")
    assert "lié au compte Discord marie_d" in notice.content.text
    assert used.signals == ["accounts"]

    # The older person stays; the other one is gone, and so is the code.
    assert await _person_of(db, DISCORD) == marie
    assert await _persons(db) == {marie}
    async with db.read() as session:
        assert (await session.execute(select(PersonLinkCode))).scalars().all() == []


async def test_the_code_may_be_typed_in_lower_case_with_spaces_and_dashes(db: Database) -> None:
    code = _code(await _run(db, DISCORD, "lier", chat=direct_chat("discord", "7001")))
    typed = " ".join(code.lower().replace("-", " - "))
    used = await _run(db, TELEGRAM, "lier", typed)
    assert used.texts[0].startswith("C'est fait : votre compte Discord")
    assert await _person_of(db, TELEGRAM) == await _person_of(db, DISCORD)


async def test_in_a_group_the_code_goes_to_a_private_message(db: Database) -> None:
    given = await _run(db, TELEGRAM, "lier", chat=TELEGRAM_GROUP)
    private, public = given.actions
    assert isinstance(private, SendMessage) and private.chat == TELEGRAM_PRIVATE
    assert CODE_IN_TEXT.search(private.content.text)
    assert isinstance(public, SendMessage) and public.chat == TELEGRAM_GROUP
    assert public.content.text.startswith("Je vous ai envoyé votre code en message privé")
    assert not CODE_IN_TEXT.search(public.content.text)


async def test_a_new_code_replaces_the_previous_one(db: Database) -> None:
    first = _code(await _run(db, TELEGRAM, "lier"))
    second = _code(await _run(db, TELEGRAM, "lier"))
    assert first != second
    refused = await _run(db, DISCORD, "lier", first)
    assert refused.text.startswith("Ce code est inconnu ou a expiré.")
    assert (await _run(db, DISCORD, "lier", second)).texts[0].startswith("C'est fait")


async def test_a_wrong_code_is_refused_and_counted(db: Database) -> None:
    await _run(db, TELEGRAM, "lier")
    refused = await _run(db, DISCORD, "lier", "ABCD-EFGH")
    assert refused.text == (
        "Ce code est inconnu ou a expiré. Sur votre autre compte, tapez /lier pour en obtenir "
        "un nouveau."
    )
    assert refused.signals == []
    # Not even a code: counted all the same.
    await _run(db, DISCORD, "lier", "bonjour")
    async with db.read() as session:
        attempt = await session.get(LinkAttempt, "discord:7001")
    assert attempt is not None and attempt.failures == 2
    assert await _person_of(db, TELEGRAM) != await _person_of(db, DISCORD)


async def test_an_expired_code_is_refused(db: Database) -> None:
    clock = FixedClock(NOW)
    code = _code(await _run(db, TELEGRAM, "lier", clock=clock))
    clock.advance(timedelta(minutes=10))
    refused = await _run(db, DISCORD, "lier", code, clock=clock)
    assert refused.text.startswith("Ce code est inconnu ou a expiré.")
    assert await _person_of(db, TELEGRAM) != await _person_of(db, DISCORD)
    async with db.read() as session:
        assert (await session.execute(select(PersonLinkCode))).scalars().all() == []
        attempt = await session.get(LinkAttempt, "discord:7001")
    assert attempt is not None and attempt.failures == 1


async def test_a_code_works_only_once(db: Database) -> None:
    code = _code(await _run(db, TELEGRAM, "lier"))
    assert (await _run(db, DISCORD, "lier", code)).texts[0].startswith("C'est fait")
    again = await _run(db, OTHER_DISCORD, "lier", code)
    assert again.text.startswith("Ce code est inconnu ou a expiré.")
    assert await _person_of(db, OTHER_DISCORD) != await _person_of(db, TELEGRAM)


async def test_a_code_typed_on_its_own_platform_is_refused_and_kept(db: Database) -> None:
    code = _code(await _run(db, TELEGRAM, "lier"))
    same_account = await _run(db, TELEGRAM, "lier", code)
    assert same_account.text == (
        "Ce code a été créé sur Telegram : tapez-le depuis votre compte sur l'autre "
        "application, pas depuis Telegram."
    )
    other_account = await _run(db, PAUL, "lier", code)
    assert other_account.text.startswith("Ce code a été créé sur Telegram")
    assert await _person_of(db, PAUL) != await _person_of(db, TELEGRAM)
    # Not burnt, not counted: the resident only picked the wrong app.
    async with db.read() as session:
        assert await session.get(LinkAttempt, "telegram:43") is None
    assert (await _run(db, DISCORD, "lier", code)).texts[0].startswith("C'est fait")


async def test_console_accounts_are_a_platform_of_their_own(db: Database) -> None:
    alice = Author(platform="console", user_id="alice", display_name="Alice")
    bob = Author(platform="console", user_id="bob", display_name="Bob")
    console = ChatRef("console", "con:general")
    given = await _run(db, alice, "lier", chat=console)
    assert given.actions[0].chat == ChatRef("console", "dm:alice")
    code = _code(given)
    refused = await _run(db, bob, "lier", code, chat=console)
    assert refused.text.startswith("Ce code a été créé sur Console")
    assert (
        (await _run(db, TELEGRAM, "lier", code))
        .texts[0]
        .startswith("C'est fait : votre compte Console")
    )


async def test_five_wrong_codes_then_even_the_right_one_waits(db: Database) -> None:
    clock = FixedClock(NOW)
    for _ in range(accounts.MAX_FAILURES):
        await _run(db, DISCORD, "lier", "ZZZZ-ZZZZ", clock=clock)
    clock.advance(timedelta(minutes=5, seconds=30))
    code = _code(await _run(db, TELEGRAM, "lier", clock=clock))
    refused = await _run(db, DISCORD, "lier", code, clock=clock)
    assert refused.text == "Trop de codes erronés. Patientez 5 minutes avant de réessayer."
    assert await _person_of(db, TELEGRAM) != await _person_of(db, DISCORD)
    # The window ends: the code (still valid, and not burnt by the refusal) works.
    clock.advance(timedelta(minutes=4, seconds=30))
    used = await _run(db, DISCORD, "lier", code, clock=clock)
    assert used.texts[0].startswith("C'est fait")
    async with db.read() as session:
        assert await session.get(LinkAttempt, "discord:7001") is None


async def test_linking_twice_says_the_accounts_are_already_linked(db: Database) -> None:
    await _run(db, DISCORD, "lier", _code(await _run(db, TELEGRAM, "lier")))
    again = await _run(db, DISCORD, "lier", _code(await _run(db, TELEGRAM, "lier")))
    assert again.text == "Ces deux comptes sont déjà liés."
    assert again.signals == []


# -- merging persons ------------------------------------------------------------------------


def _proposal(author: int, account_key: str, title: str) -> Proposal:
    return Proposal(
        author_person_id=author,
        author_account_key=account_key,
        origin_chat_key="telegram:-100123",
        title=title,
        description="…",
        neighbourhood="Ouest",
        theme="Mobilité",
        residents_bring="des bras",
        town_asked="des bancs",
        status="published",
        created_at=NOW,
        updated_at=NOW,
    )


async def test_two_persons_who_supported_the_same_proposal_count_once(db: Database) -> None:
    async with db.write() as session:
        marie = (await repository.ensure_account(session, TELEGRAM, NOW)).person_id
        marie_d = (await repository.ensure_account(session, DISCORD, NOW)).person_id
        paul = (await repository.ensure_account(session, PAUL, NOW)).person_id
        both = _proposal(paul, "telegram:43", "Des bancs")
        only_discord = _proposal(paul, "telegram:43", "Un potager")
        of_marie = _proposal(marie, "telegram:42", "Une fresque")
        of_discord = _proposal(marie_d, "discord:7001", "Un compost")
        session.add_all([both, only_discord, of_marie, of_discord])
        await session.flush()
        assert both.id and only_discord.id and of_marie.id and of_discord.id
        ids = (both.id, only_discord.id, of_marie.id, of_discord.id)
        supports = [
            (both.id, marie, "telegram:42"),
            (both.id, marie_d, "discord:7001"),
            (both.id, paul, "telegram:43"),
            (only_discord.id, marie_d, "discord:7001"),
            # The same resident supporting their own proposal from their other account.
            (of_marie.id, marie_d, "discord:7001"),
        ]
        for proposal_id, person_id, key in supports:
            session.add(
                ProposalSupport(proposal_id=proposal_id, person_id=person_id, account_key=key)
            )
            session.add(
                ProposalFollow(proposal_id=proposal_id, person_id=person_id, account_key=key)
            )
        both.supports, only_discord.supports, of_marie.supports = 3, 1, 1
        session.add(
            HeldMessage(
                chat_key="discord:1100",
                message_id="5",
                account_key="discord:7001",
                person_id=marie_d,
                check="flood",
                reason="…",
                event={},
            )
        )
    assert marie < marie_d

    code = _code(await _run(db, TELEGRAM, "lier"))
    assert (await _run(db, DISCORD, "lier", code)).texts[0].startswith("C'est fait")

    async with db.read() as session:
        found = await session.execute(select(Proposal.id, Proposal.supports))
        counts: dict[int | None, int] = dict(found.all())
        assert counts == {ids[0]: 2, ids[1]: 1, ids[2]: 0, ids[3]: 0}
        rows = await session.execute(
            select(ProposalSupport.proposal_id, ProposalSupport.person_id).order_by(
                col(ProposalSupport.proposal_id), col(ProposalSupport.person_id)
            )
        )
        assert [tuple(row) for row in rows.all()] == [
            (ids[0], marie),
            (ids[0], paul),
            (ids[1], marie),
        ]
        follows = (
            await session.execute(
                select(ProposalFollow.proposal_id).where(ProposalFollow.person_id == marie)
            )
        ).scalars()
        assert sorted(follows) == [ids[0], ids[1], ids[2]]
        authors = (
            await session.execute(select(Proposal.author_person_id).where(Proposal.id == ids[3]))
        ).scalar_one()
        assert authors == marie
        held = (await session.execute(select(HeldMessage.person_id))).scalar_one()
        assert held == marie
        assert marie_d not in await _persons(db)


def test_merging_covers_every_column_that_names_a_person() -> None:
    """A new table with a person id must be taught to merge_persons (or the merge would fail
    on the foreign key, or leave rows naming a person that no longer exists)."""
    covered = {(table.__tablename__, column) for table, column in people.PERSON_COLUMNS} | {
        (table.__tablename__, "person_id")
        for table in (*people.PER_PROPOSAL_ROWS, *people.PER_POLL_ROWS)
    }
    naming_a_person = set()
    for name, schema in SQLModel.metadata.tables.items():
        for column in schema.columns:
            to_person = any(fk.column.table.name == "person" for fk in column.foreign_keys)
            if to_person or column.name.endswith("person_id"):
                naming_a_person.add((name, column.name))
    assert naming_a_person == covered


async def test_a_person_is_not_merged_with_itself(db: Database) -> None:
    async with db.write() as session:
        marie = (await repository.ensure_account(session, TELEGRAM, NOW)).person_id
        try:
            await people.merge_persons(session, marie, marie)
        except ValueError:
            pass
        else:
            raise AssertionError("merging a person with itself must be refused")


# -- /dissocier ---------------------------------------------------------------------------------


async def test_dissocier_gives_the_account_a_person_of_its_own(db: Database) -> None:
    await _run(db, DISCORD, "lier", _code(await _run(db, TELEGRAM, "lier")))
    marie = await _person_of(db, TELEGRAM)
    async with db.write() as session:
        paul = (await repository.ensure_account(session, PAUL, NOW)).person_id
        proposal = _proposal(marie, "discord:7001", "Un compost")
        by_paul = _proposal(paul, "telegram:43", "Des bancs")
        session.add_all([proposal, by_paul])
        await session.flush()
        assert proposal.id and by_paul.id
        session.add(
            ProposalSupport(proposal_id=by_paul.id, person_id=marie, account_key="discord:7001")
        )
        session.add(
            ProposalFollow(proposal_id=by_paul.id, person_id=marie, account_key="discord:7001")
        )
        by_paul.supports = 1

    parted = await _run(db, DISCORD, "dissocier")
    assert parted.text.startswith("C'est fait : ce compte est de nouveau indépendant.")
    assert parted.signals == ["accounts"]
    alone = await _person_of(db, DISCORD)
    assert alone not in (marie, paul)
    assert await _person_of(db, TELEGRAM) == marie
    async with db.read() as session:
        # Supports and proposals stay with the person that keeps the other accounts; where
        # it hears of them moves to an account it still has.
        support = (await session.execute(select(ProposalSupport))).scalar_one()
        assert support.person_id == marie
        assert (await session.get(Proposal, by_paul.id)).supports == 1  # type: ignore[union-attr]
        follow = (await session.execute(select(ProposalFollow))).scalar_one()
        assert (follow.person_id, follow.account_key) == (marie, "telegram:42")
        mine = await session.get(Proposal, proposal.id)
        assert mine is not None
        assert (mine.author_person_id, mine.author_account_key) == (marie, "telegram:42")
        new_person = await session.get(Person, alone)
        assert new_person is not None and new_person.display_name == "marie_d"


async def test_dissocier_on_the_only_account_is_refused(db: Database) -> None:
    refused = await _run(db, TELEGRAM, "dissocier")
    assert refused.text == "Ce compte n'est lié à aucun autre compte."
    assert refused.signals == []
    async with db.read() as session:
        assert len((await session.execute(select(Account))).scalars().all()) == 1


async def test_dissocier_forgets_the_codes_the_account_asked_for(db: Database) -> None:
    await _run(db, DISCORD, "lier", _code(await _run(db, TELEGRAM, "lier")))
    # A code asked from Telegram, then Telegram leaves: the code must not join it back.
    code = _code(await _run(db, TELEGRAM, "lier"))
    await _run(db, TELEGRAM, "dissocier")
    refused = await _run(db, DISCORD, "lier", code)
    assert refused.text.startswith("Ce code est inconnu ou a expiré.")
    assert await _person_of(db, TELEGRAM) != await _person_of(db, DISCORD)


# -- through the dispatcher -----------------------------------------------------------------


async def _who_am_i(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """Says which person the dispatcher resolved: what every handler will act as."""
    return [ctx.reply(f"person {ctx.person.id}")]


async def test_the_dispatcher_sees_a_link_and_an_unlink_at_the_next_event(db: Database) -> None:
    base = table()
    tables = dataclasses.replace(
        base, commands={**base.commands, "moi": Command(_who_am_i, "Who am I")}
    )
    settings = Settings(database_url=db.url)
    async with Forum(settings, db=db, tables=tables) as forum:
        dispatcher = forum.app.dispatcher
        room = ChatRef("console", "con:general")

        async def from_telegram(line: str) -> list[Posted]:
            name, _, args = line.removeprefix("/").partition(" ")
            before = len(forum.console.state.posted)
            event = CommandReceived(
                chat=room,
                author=TELEGRAM,
                at=forum.clock.now(),
                message_id=None,
                name=name,
                args=args,
            )
            await dispatcher.handle(event)
            await forum.app.outbox.drain()
            return forum.console.state.posted[before:]

        async def person(posted: list[Posted]) -> int:
            assert len(posted) == 1, posted
            return int(posted[0].text.removeprefix("person "))

        marie = await person(await forum.say("/moi", as_name="Marie"))
        # Both accounts are now remembered by the dispatcher, each with its own person.
        telegram = await person(await from_telegram("/moi"))
        assert telegram != marie

        given = await forum.say("/lier")
        private = [p for p in given if p.chat == "dm:marie"]
        assert len(private) == 1
        code = CODE_IN_TEXT.search(private[0].text)
        assert code is not None
        linked = await from_telegram(f"/lier {code.group(1)}")
        assert any(p.text.startswith("C'est fait : votre compte Console") for p in linked)
        assert any(p.chat == "dm:marie" and "Telegram Marie" in p.text for p in linked)

        # The very next event of the account that was remembered with the other person.
        assert await person(await from_telegram("/moi")) == marie
        assert await person(await forum.say("/moi")) == marie

        parted = await from_telegram("/dissocier")
        assert parted[0].text.startswith("C'est fait : ce compte est de nouveau indépendant.")
        alone = await person(await from_telegram("/moi"))
        # (SQLite may give the new person the id of the one merged away: it is free again.)
        assert alone != marie
        assert await person(await forum.say("/moi")) == marie

        async with db.read() as session:
            rows = await session.execute(sa.select(col(Account.platform), col(Account.person_id)))
            owners = dict(rows.all())
        assert owners == {"console": marie, "telegram": alone}


async def test_an_account_read_before_a_link_is_not_remembered_after_it(sqlite_url: str) -> None:
    """Telegram and Discord are handled side by side: a Discord event that read its account
    (with the person about to be merged away) and commits after the link must not put it back
    in the dispatcher's memory once the link has cleared it."""
    db = Database(sqlite_url)
    try:
        dispatcher = Dispatcher(
            db=db, settings=Settings(database_url=sqlite_url), clock=FixedClock(NOW), tables=table()
        )
        read_before = repository.StoredAccount(7, 2, "marie_d", None, NOW)
        remember = dispatcher._remember_account(
            "discord:7001", read_before, frozenset({Role.RESIDENT}), dispatcher.memo.view()
        )
        dispatcher.signal("accounts")  # the link commits
        remember()  # the Discord event commits
        assert "discord:7001" not in dispatcher._accounts
        # Read after the link: remembered as usual.
        read_after = read_before._replace(person_id=1)
        dispatcher._remember_account(
            "discord:7001", read_after, frozenset({Role.RESIDENT}), dispatcher.memo.view()
        )()
        assert dispatcher._accounts["discord:7001"].person_id == 1
    finally:
        await db.dispose()
