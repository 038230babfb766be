"""Routes each event through the gate and one handler table, and queues the actions.

The one path of every feature: event → gate → handler table → actions → outbox. The
dispatcher builds each handler's ``Context`` (transaction, person and roles, language), runs
the gate, answers forms step by step, acknowledges every button press, and commits the
handler's writes, its actions and the "handled" mark of the update in one transaction.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import select

from bot import forms
from bot import gate as gates
from bot.buttons import ButtonRoutes, ButtonTemplate
from bot.clock import Clock
from bot.config import Settings
from bot.events import (
    Action,
    AnswerButton,
    Attachment,
    Author,
    Button,
    ButtonPressed,
    ChatRef,
    CommandReceived,
    Delivery,
    Event,
    FormSubmitted,
    MessageReceived,
    PermanentFailure,
    Released,
    SendFile,
    SendMessage,
    Sent,
    TimeCame,
)
from bot.forms import FormSpec
from bot.gate import Gate, Outcome, Verdict
from bot.handling import FORM_CHOICE, NOBODY, Command, Context, Handler, Person, Role
from bot.i18n import Translator
from bot.inbox import Decode, InboxRunner, mark_all_handled, mark_handled, record_failure
from bot.memo import Memo, MemoView
from bot.nlp import FrenchNlp
from bot.richtext import FormattedText
from storage import repository
from storage.db import Database
from storage.models import FormSession

if TYPE_CHECKING:
    from bot.due import DueKind, Recurring
    from bot.outbox import Outbox
    from bot.platforms.base import Adapter

logger = logging.getLogger(__name__)

SKIP_COMMANDS = frozenset({"passer", "skip"})


@dataclass(frozen=True, slots=True)
class Press:
    """A button press routed to its handler, with the values its id carried."""

    event: ButtonPressed
    values: Mapping[str, int | str]


@dataclass(frozen=True, slots=True)
class Filled:
    """A form filled in (a modal, or every question answered), with its cleaned values."""

    form_id: str
    values: Mapping[str, object]
    # What the command that opened the form passed along.
    data: Mapping[str, object]
    event: Event


ButtonHandler = Callable[[Context, Press], Awaitable[str | None]]
FormHandler = Callable[[Context, Filled], Awaitable[Sequence[Action] | None]]


@dataclass(frozen=True, slots=True)
class FormEntry:
    spec: forms.FormSpec
    handler: FormHandler


@dataclass(frozen=True, slots=True)
class DueEntry:
    kind: DueKind
    handler: Handler


@dataclass(frozen=True)
class Tables:
    """Every command, button, form, event and due time the bot answers: the handler table."""

    commands: Mapping[str, Command]
    unknown_command: Handler
    events: Mapping[type[Event], Sequence[Handler]] = field(default_factory=dict)
    buttons: Mapping[ButtonTemplate, ButtonHandler] = field(default_factory=dict)
    forms: Mapping[str, FormEntry] = field(default_factory=dict)
    due: Mapping[str, DueEntry] = field(default_factory=dict)
    recurring: Sequence[Recurring] = ()

    def form_specs(self) -> dict[str, FormSpec]:
        return {form_id: entry.spec for form_id, entry in self.forms.items()}


def _refused(ctx: Context, roles: frozenset[Role], command: str) -> str:
    """Who may use a command the person may not."""
    if Role.MODERATOR in roles:
        return ctx.t("Only moderators can use /{command}.", command=command)
    return ctx.t("Only council staff can use /{command}.", command=command)


class Dispatcher:
    """The one place where events meet handlers and actions meet platforms."""

    MAX_ATTEMPTS = 3
    LANGUAGE_TTL = 60.0
    # A bound on remembered accounts, not an eviction policy: past it, start afresh.
    MAX_ACCOUNTS = 100_000

    def __init__(
        self,
        *,
        db: Database,
        settings: Settings,
        clock: Clock,
        tables: Tables,
        gate: Gate | None = None,
        nlp: FrenchNlp | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.tables = tables
        self.commands = tables.commands
        self.gate = gate or Gate()
        self.nlp = nlp or FrenchNlp()
        self.buttons: ButtonRoutes[ButtonHandler] = ButtonRoutes(
            [(FORM_CHOICE, self._form_choice), *tables.buttons.items()]
        )
        self.adapters: dict[str, Adapter] = {}
        self.runners: dict[str, InboxRunner] = {}
        self.outbox: Outbox | None = None
        # Counts handled events; lets tests and tools wait for progress without polling.
        self.handled_count = 0
        self._handled = asyncio.Condition()
        # Language choices, channel ids, bridge links and staff names: read for every event,
        # changed rarely (another process's change shows within the memo's minute).
        self.memo = Memo(ttl=self.LANGUAGE_TTL)
        self._roles: dict[tuple[str, str], tuple[datetime, frozenset[str]]] = {}
        self._accounts: dict[str, repository.StoredAccount] = {}
        # Raised when "accounts" is signalled (/lier, /dissocier): an account read before that
        # commit, by a transaction that commits after it, is not remembered (its person may
        # be the one merged away).
        self._accounts_generation = 0
        # (account key, chat key) of every form in progress: a plain message is looked up
        # only when its author has one (loaded on first use, kept in step after commits).
        self._open_forms: set[tuple[str, str]] | None = None

    def register(self, adapter: Adapter) -> None:
        self.adapters[adapter.name] = adapter

    def inbox_runner(self, platform: str, decode: Decode) -> InboxRunner:
        """The runner that hands ``platform``'s stored updates to this dispatcher."""

        runner = InboxRunner(self.db, platform, decode, self.handle_page)
        self.runners[platform] = runner
        return runner

    # -- caches -------------------------------------------------------------------------------

    def signal(self, what: str) -> None:
        """A handler changed something: drop a cache, or wake an inbox runner."""
        if not what.startswith("inbox:"):
            self.memo.drop(what)
        if what == "accounts":
            self._accounts.clear()
            self._accounts_generation += 1
        elif what == "roles":
            self._roles.clear()
        elif what == "forms":
            self._open_forms = None
        elif what.startswith("inbox:"):
            runner = self.runners.get(what.removeprefix("inbox:"))
            if runner is not None:
                runner.wake()

    async def translator_for(
        self, session: AsyncSession, event: Event, memo: MemoView | None = None
    ) -> Translator:
        # Looked up for every event: the few choices made with /langue are read whole and
        # remembered ("language" is signalled by /langue).
        memo = memo or self.memo.view()
        choices = await memo.get("language", None, lambda: repository.languages(session))
        chosen = repository.chosen_language(choices, event.chat, event.author)
        if chosen is None:
            channel = self.settings.channel(
                event.chat.platform, event.chat.chat_id, event.chat.thread_id
            )
            chosen = channel.language if channel is not None else None
        return Translator(chosen or self.settings.language)

    # -- who ----------------------------------------------------------------------------------

    def _needs_platform_roles(self, event: Event) -> tuple[bool, bool]:
        """(ask the platform, ask it afresh) for this event."""
        if isinstance(event, CommandReceived):
            command = self.commands.get(event.name)
            return True, command is not None and command.staff_only
        return isinstance(event, ButtonPressed | FormSubmitted), False

    async def platform_roles(self, event: Event, *, fresh: bool) -> frozenset[str]:
        """The roles the platform gives the author in this chat, cached briefly."""
        adapter = self.adapters.get(event.chat.platform)
        if adapter is None:
            return frozenset()
        key = (str(event.chat), f"{event.author.platform}:{event.author.user_id}")
        cached = self._roles.get(key)
        now = self.clock.now()
        ttl = timedelta(seconds=self.settings.role_cache_seconds)
        if not fresh and cached is not None and now - cached[0] < ttl:
            return cached[1]
        roles = await adapter.roles(event.chat, event.author)
        if len(self._roles) > 10_000:
            self._roles.clear()
        self._roles[key] = (now, roles)
        return roles

    def settings_roles(self, account_key: str) -> set[Role]:
        roles = self.settings.roles
        found = {Role.RESIDENT}
        if account_key in roles.moderators:
            found.add(Role.MODERATOR)
        if account_key in roles.council:
            found.add(Role.COUNCIL)
        if account_key in roles.admins:
            found.add(Role.ADMIN)
        return found

    async def _person(
        self,
        ctx_session: AsyncSession,
        event: Event,
        platform_roles: frozenset[str],
        memo: MemoView,
    ) -> tuple[Person, Callable[[], None] | None]:
        if event.author.platform == "clock":
            return NOBODY, None
        author = event.author
        account_key = f"{author.platform}:{author.user_id}"
        roles = self.settings_roles(account_key) | {Role(r) for r in platform_roles}
        now = self.clock.now()
        known = self._accounts.get(account_key)
        remember = None
        if known is None or not known.current(author, now):
            # First sight, a new name, or "last seen" due: the row is read and brought up to
            # date; otherwise the account costs no statement at all.
            account = await repository.ensure_account(ctx_session, author, now)
            remember = self._remember_account(account_key, account, frozenset(roles), memo)
            return Person(account.person_id, account.id, account_key, frozenset(roles)), remember
        return Person(known.person_id, known.id, account_key, frozenset(roles)), remember

    # -- handling -----------------------------------------------------------------------------

    # Plain messages handled in one transaction at most; bounds how long the write lock is held
    # (the outbox waits for it to record deliveries).
    BATCH = 100

    async def handle_page(self, page: Sequence[tuple[Event | None, int]]) -> bool:
        """Handle a page of stored updates in order: runs of plain messages share a transaction.

        A backlog (a getUpdates page, catch-up after an outage) is mostly plain messages, and a
        statement through the async ORM costs more than the rest of a message's handling: a run
        of them is handled with set-based statements in one transaction. Anything else (a
        command, a button, a due time) is handled alone, in its place in the order.
        """
        ok = True
        run: list[tuple[MessageReceived | None, int]] = []
        names: dict[str, str] = {}
        for event, inbox_id in page:
            if isinstance(event, MessageReceived) and self._renames_staff(event, names):
                # A run's accounts are brought up to date before its first message: a staff
                # member's new name must protect only the messages after it (an impostor
                # earlier in the page still wears the old, protected one).
                ok &= await self._handle_run(run)
                run = []
                names = {}
            if event is None or isinstance(event, MessageReceived):
                run.append((event, inbox_id))
                if event is not None:
                    names[f"{event.author.platform}:{event.author.user_id}"] = (
                        event.author.display_name
                    )
                if len(run) < self.BATCH:
                    continue
            ok &= await self._handle_run(run)
            run = []
            names = {}
            if event is not None and not isinstance(event, MessageReceived):
                ok &= await self.handle(event, inbox_id=inbox_id)
        return await self._handle_run(run) and ok

    def _renames_staff(self, event: MessageReceived, names: Mapping[str, str]) -> bool:
        """Whether ``event``'s author is staff with a name other than the one known so far."""
        key = f"{event.author.platform}:{event.author.user_id}"
        if not self.settings_roles(key) & {Role.MODERATOR, Role.COUNCIL}:
            return False
        known = names.get(key)
        if known is None:
            remembered = self._accounts.get(key)
            known = remembered.display_name if remembered is not None else None
        return known != event.author.display_name

    async def _handle_run(self, run: Sequence[tuple[MessageReceived | None, int]]) -> bool:
        if not run:
            return True
        if len(run) > 1:
            try:
                done = await self._handle_together(run)
            except Exception:
                # One bad update must not block or lose the others: each is tried alone,
                # with its own tries and apology (the whole batch was rolled back).
                logger.warning(
                    "a batch of %d updates failed; each is handled alone", len(run), exc_info=True
                )
            else:
                # Committed: whatever happens now must not hand the page to the fallback,
                # which would handle it a second time.
                await done()
                return True
        ok = True
        for event, inbox_id in run:
            if event is None:
                async with self.db.write() as session:
                    await mark_handled(session, inbox_id, self.clock.now())
            else:
                ok &= await self.handle(event, inbox_id=inbox_id)
        return ok

    async def _handle_together(
        self, run: Sequence[tuple[MessageReceived | None, int]]
    ) -> Callable[[], Awaitable[None]]:
        """Handle plain messages in one transaction; raises (all rolled back) on any failure.

        Returns what is to be done once committed.
        """
        assert self.outbox is not None, "the composition root sets the outbox"
        events = [(e, i) for e, i in run if e is not None and not e.from_relay]
        memo = self.memo.view()
        contexts: list[Context] = []
        chats: set[str] = set()
        try:
            async with self.db.write() as session:
                people = await self._people(session, [e for e, _ in events], memo)
                for event, inbox_id in events:
                    person, remember = people[f"{event.author.platform}:{event.author.user_id}"]
                    ctx = await self._context(session, event, person, remember, memo)
                    await self._screen_and_route(ctx, event)
                    chats |= await self.outbox.enqueue(
                        session, ctx.actions, source_key=f"inbox:{inbox_id}"
                    )
                    contexts.append(ctx)
                await mark_all_handled(session, [i for _, i in run], self.clock.now())
        except BaseException:
            memo.rollback()
            raise

        async def committed() -> None:
            memo.commit()
            try:
                for ctx in contexts:
                    for callback in ctx.after_commit:
                        callback()
                assert self.outbox is not None
                self.outbox.wake(chats)
            except Exception:
                # The page is handled and recorded; a cache or a wake-up missed here only
                # delays (the outbox's next wake-up finds its rows).
                logger.exception("after a batch of %d updates committed", len(run))
            finally:
                await self._count_handled(len(run))

        return committed

    async def _context(
        self,
        session: AsyncSession,
        event: Event,
        person: Person,
        remember: Callable[[], None] | None,
        memo: MemoView,
    ) -> Context:
        """What a handler of ``event`` gets, inside the transaction ``session``."""
        ctx = Context(
            session=session,
            settings=self.settings,
            clock=self.clock,
            translator=await self.translator_for(session, event, memo),
            event=event,
            person=person,
            nlp=self.nlp,
            commands=self.commands,
            signal=self.signal,
            memo=memo,
        )
        if remember is not None:
            ctx.after_commit.append(remember)
        return ctx

    async def _people(
        self, session: AsyncSession, events: Sequence[Event], memo: MemoView
    ) -> dict[str, tuple[Person, Callable[[], None] | None]]:
        """``_person`` for the authors of many plain messages, with set-based statements."""
        now = self.clock.now()
        authors: dict[str, Author] = {}
        for event in events:
            authors[f"{event.author.platform}:{event.author.user_id}"] = event.author
        stale = [
            author
            for key, author in authors.items()
            if (known := self._accounts.get(key)) is None or not known.current(author, now)
        ]
        accounts = await repository.ensure_accounts(session, stale, now) if stale else {}
        people: dict[str, tuple[Person, Callable[[], None] | None]] = {}
        for key, author in authors.items():
            roles = frozenset(self.settings_roles(key))
            account = accounts.get((author.platform, author.user_id))
            if account is None:
                known = self._accounts[key]
                people[key] = (Person(known.person_id, known.id, key, roles), None)
                continue
            people[key] = (
                Person(account.person_id, account.id, key, roles),
                self._remember_account(key, account, roles, memo),
            )
        return people

    def _remember_account(
        self,
        key: str,
        account: repository.StoredAccount,
        roles: frozenset[Role],
        memo: MemoView,
    ) -> Callable[[], None]:
        known = self._accounts.get(key)
        if roles & {Role.MODERATOR, Role.COUNCIL} and (
            known is None or known.display_name != account.display_name
        ):
            # Staff names are protected from look-alikes; a renamed one is read again.
            memo.drop("staff")

        generation = self._accounts_generation

        def remember() -> None:
            # Only once committed: a rolled-back account must not be remembered.
            if self._accounts_generation != generation:
                return
            if len(self._accounts) > self.MAX_ACCOUNTS:
                self._accounts.clear()
            self._accounts[key] = account

        return remember

    async def handle(self, event: Event, *, inbox_id: int | None = None) -> bool:
        """Handle ``event`` in one transaction and queue its actions; never raises for a resident.

        ``inbox_id`` names the stored raw update the event came from: it is marked handled in
        the same transaction, so a crash either re-runs all of it or none of it. A handler
        failure leaves the update pending for another try; after ``MAX_ATTEMPTS`` the resident
        gets an apology and the update is set aside with its error. Returns False when the
        update was left pending for another try.
        """
        try:
            return await self._handle(event, inbox_id)
        finally:
            await self._count_handled()

    async def _handle(self, event: Event, inbox_id: int | None) -> bool:
        assert self.outbox is not None, "the composition root sets the outbox"
        source_key = f"inbox:{inbox_id}" if inbox_id is not None else f"event:{uuid.uuid4().hex}"
        if isinstance(event, MessageReceived) and event.from_relay:
            if inbox_id is not None:
                async with self.db.write() as session:
                    await mark_handled(session, inbox_id, self.clock.now())
            return True
        memo = self.memo.view()
        try:
            # Rights are asked of the platform now, before the transaction: no network call
            # while holding the database's write lock.
            ask, fresh = self._needs_platform_roles(event)
            platform_roles = await self.platform_roles(event, fresh=fresh) if ask else frozenset()
            async with self.db.write() as session:
                person, remember = await self._person(session, event, platform_roles, memo)
                ctx = await self._context(session, event, person, remember, memo)
                await self._screen_and_route(ctx, event)
                chats = await self._commit(session, ctx.actions, source_key, inbox_id)
            memo.commit()
            for callback in ctx.after_commit:
                callback()
            self.outbox.wake(chats)
            return True
        except Exception as exc:
            memo.rollback()
            logger.exception("handler failed", extra={"event": type(event).__name__})
            error = f"{type(exc).__name__}: {exc}"
        async with self.db.write() as session:
            if inbox_id is not None and not await record_failure(
                session, inbox_id, error, self.MAX_ATTEMPTS
            ):
                return False
            actions = self._apology(event, Translator(self.settings.language))
            chats = await self._commit(session, actions, source_key, inbox_id)
        self.outbox.wake(chats)
        return True

    async def _screen_and_route(self, ctx: Context, event: Event) -> None:
        if isinstance(event, Released):
            # A moderator let it through: the handlers see the original, unscreened.
            ctx.event = event.original
            await self._route(ctx, event.original)
            return
        verdict = await self.gate.screen(ctx, event)
        if verdict.outcome is Outcome.PASS:
            await self._route(ctx, event)
            return
        if verdict.outcome is Outcome.HOLD:
            held_id = await gates.hold(ctx.session, ctx, event, verdict)
            if held_id is not None:
                self._announce_held(ctx, event, verdict, held_id)
        if verdict.notice:
            notice = ctx.t(verdict.notice)
            if isinstance(event, ButtonPressed):
                ctx.send(
                    AnswerButton(chat=event.chat, interaction_id=event.interaction_id, text=notice)
                )
            else:
                ctx.send(ctx.reply(notice))
        elif isinstance(event, ButtonPressed):
            ctx.send(AnswerButton(chat=event.chat, interaction_id=event.interaction_id))

    def _announce_held(self, ctx: Context, event: Event, verdict: Verdict, held_id: int) -> None:
        """Tell the moderators' channels, with buttons to release or drop the message."""
        text = getattr(getattr(event, "content", None), "text", "") or ""
        # Moderators read the default language: the channel is theirs, not the resident's.
        t = Translator(self.settings.language).t
        body = t(
            "Message held for review ({check}): {reason}\nFrom {author} in {chat}:\n{text}",
            check=verdict.check,
            reason=verdict.reason,
            author=event.author.display_name,
            chat=str(event.chat),
            text=text[:1500],
        )
        buttons = (
            (
                Button(t("Release"), gates.HELD.build(id=held_id, decision="release")),
                Button(t("Drop"), gates.HELD.build(id=held_id, decision="drop")),
            ),
        )
        for chat in gates.moderation_chats(ctx):
            ctx.post(gates.held_post_key(held_id), chat, body, buttons=buttons)

    async def _route(self, ctx: Context, event: Event) -> None:
        if isinstance(event, CommandReceived):
            await self._command(ctx, event)
        elif isinstance(event, ButtonPressed):
            await self._press(ctx, event)
        elif isinstance(event, FormSubmitted):
            await self._modal(ctx, event)
        elif isinstance(event, TimeCame):
            entry = self.tables.due.get(event.kind)
            if entry is None:
                logger.warning("no handler for due time %s (%s)", event.kind, event.key)
                return
            ctx.send(*(await entry.handler(ctx, event) or ()))
        elif isinstance(event, MessageReceived) and await self._form_answer(ctx, event):
            return
        else:
            for handler in self.tables.events.get(type(event), ()):
                ctx.send(*(await handler(ctx, event) or ()))

    async def _command(self, ctx: Context, event: CommandReceived) -> None:
        if event.name in SKIP_COMMANDS:
            await self._load_open_forms(ctx.session)
            if self._form_open(ctx, event) and await self._form_step(ctx, event, "-"):
                return
        command = self.commands.get(event.name)
        if command is None:
            ctx.send(*(await self.tables.unknown_command(ctx, event) or ()))
            return
        if command.roles is not None and not ctx.person.has(*command.roles):
            ctx.send(ctx.reply(_refused(ctx, command.roles, event.name)))
            return
        if command.form is not None and not event.args.strip():
            await ctx.open_form(command.form)
            return
        ctx.send(*(await command.handler(ctx, event) or ()))

    async def _press(self, ctx: Context, event: ButtonPressed) -> None:
        """Route a press by its id's template; every press is acknowledged."""
        found = self.buttons.match(event.data)
        notice: str | None
        if found is None:
            # A forged id, or one from a version that no longer has the button.
            logger.info("no button matches %r", event.data[:80])
            notice = ctx.t("This button is no longer valid.")
        else:
            _template, handler, values = found
            notice = await handler(ctx, Press(event, values))
        ctx.send(AnswerButton(chat=event.chat, interaction_id=event.interaction_id, text=notice))

    # -- forms --------------------------------------------------------------------------------

    def _form_specs(self) -> dict[str, forms.FormSpec]:
        specs = self.tables.form_specs()
        for command in self.commands.values():
            if command.form is not None:
                specs.setdefault(command.form.form_id, command.form)
        return specs

    def _form_command(self, form_id: str) -> tuple[str, Command] | None:
        """The command that opens the form ``form_id``, with its name."""
        for name, command in self.commands.items():
            if command.form is not None and command.form.form_id == form_id:
                return name, command
        return None

    def _form_handler(self, form_id: str) -> Handler | FormHandler | None:
        entry = self.tables.forms.get(form_id)
        if entry is not None:
            return entry.handler
        found = self._form_command(form_id)
        return found[1].handler if found is not None else None

    async def may_use(self, name: str, chat: ChatRef, author: Author) -> bool:
        """Whether ``author`` may use the command ``name`` in ``chat``, asked now (an
        adapter that must answer at once, e.g. with a Discord modal, asks before)."""
        command = self.commands.get(name)
        if command is None or command.roles is None:
            return True
        account_key = f"{author.platform}:{author.user_id}"
        probe = CommandReceived(
            chat=chat, author=author, at=self.clock.now(), message_id=None, name=name
        )
        roles = self.settings_roles(account_key) | {
            Role(r) for r in await self.platform_roles(probe, fresh=True)
        }
        return Person(None, None, account_key, frozenset(roles)).has(*command.roles)

    def _form_open(self, ctx: Context, event: Event) -> bool:
        return (
            self._open_forms is None
            or (ctx.person.account_key, str(event.chat)) in self._open_forms
        )

    def _form_closed(self, key: tuple[str, str]) -> None:
        if self._open_forms is not None:
            self._open_forms.discard(key)

    async def _load_open_forms(self, session: AsyncSession) -> None:
        if self._open_forms is None:
            # Expired forms too: the next message of their author is told the form expired.
            rows = await session.execute(select(FormSession.account_key, FormSession.chat_key))
            self._open_forms = {(a, c) for a, c in rows.all()}

    async def _form_answer(self, ctx: Context, event: MessageReceived) -> bool:
        """Take a plain message as the answer to the author's open form, if there is one."""
        await self._load_open_forms(ctx.session)
        if not self._form_open(ctx, event):
            return False
        return await self._form_step(ctx, event, event.content.text)

    async def _form_step(self, ctx: Context, event: Event, text: str) -> bool:
        key = (ctx.person.account_key, str(event.chat))
        outcome = await forms.answer(
            ctx.session,
            self._form_specs(),
            account_key=key[0],
            chat_key=key[1],
            text=text,
            now=self.clock.now(),
            ttl=timedelta(minutes=self.settings.form_minutes),
        )
        if outcome.kind == "none":
            ctx.after_commit.append(lambda: self._form_closed(key))
            return False
        if outcome.kind == "question":
            assert outcome.question is not None
            ctx.send(ctx.ask(outcome.question))
            return True
        ctx.after_commit.append(lambda: self._form_closed(key))
        if outcome.kind == "cancelled":
            ctx.send(ctx.reply(ctx.t("Cancelled: nothing was kept.")))
        elif outcome.kind == "expired":
            ctx.send(
                ctx.reply(ctx.t("This form expired after a long pause; please start it again."))
            )
        elif outcome.kind == "done":
            await self._filled(
                ctx, event, outcome.values or {}, outcome.data or {}, outcome.form_id
            )
        return True

    async def _filled(
        self,
        ctx: Context,
        event: Event,
        values: Mapping[str, object],
        data: Mapping[str, object],
        form_id: str,
    ) -> None:
        handler = self._form_handler(form_id)
        if handler is None:
            logger.warning("no handler for form %s", form_id)
            return
        filled = Filled(form_id, values, data, event)
        ctx.send(*(await handler(ctx, filled) or ()))

    async def _form_choice(self, ctx: Context, press: Press) -> str | None:
        """A choice button of a step-by-step form: the same as typing the choice."""
        row = await forms.active(
            ctx.session,
            account_key=ctx.person.account_key,
            chat_key=str(press.event.chat),
            now=self.clock.now(),
        )
        if row is None or row.form_id != press.values["form"] or row.step != press.values["step"]:
            return ctx.t("This question was already answered or has expired.")
        await self._form_step(ctx, press.event, str(press.values["value"]))
        return None

    async def _modal(self, ctx: Context, event: FormSubmitted) -> None:
        """A Discord modal: validated at once; a bad field continues step by step."""
        form_id = event.form_id.removeprefix("form:")
        spec = self._form_specs().get(form_id)
        if spec is None:
            logger.warning("no form %r", event.form_id)
            ctx.send(ctx.reply(ctx.t("This form is no longer available.")))
            return
        found = self._form_command(form_id)
        if found is not None and found[1].roles is not None and not ctx.person.has(*found[1].roles):
            ctx.send(ctx.reply(_refused(ctx, found[1].roles, found[0])))
            return
        values, errors = spec.clean(dict(event.fields))
        if not errors:
            await self._filled(ctx, event, values, {}, form_id)
            return
        # Keep what was typed right and ask again, one question at a time, from the first
        # field that needs another answer.
        question = await forms.start(
            ctx.session,
            spec,
            account_key=ctx.person.account_key,
            chat_key=str(event.chat),
            now=self.clock.now(),
            ttl=timedelta(minutes=self.settings.form_minutes),
            prefill=dict(event.fields),
            errors=errors,
        )
        ctx.send(ctx.ask(question))
        ctx.changed("forms")

    # -- committing ---------------------------------------------------------------------------

    async def _count_handled(self, count: int = 1) -> None:
        async with self._handled:
            self.handled_count += count
            self._handled.notify_all()

    async def wait_until(self, check: Callable[[], Awaitable[bool]]) -> None:
        """Return once ``check()`` holds, re-checking after each handled event.

        Callers bound the wait with ``asyncio.timeout``.
        """
        while True:
            seen = self.handled_count
            if await check():
                return
            await self._wait_past(seen)

    async def _wait_past(self, seen: int) -> None:
        async with self._handled:
            await self._handled.wait_for(lambda: self.handled_count > seen)

    async def _commit(
        self,
        session: AsyncSession,
        actions: Sequence[Action],
        source_key: str,
        inbox_id: int | None,
    ) -> set[str]:
        assert self.outbox is not None
        chats = await self.outbox.enqueue(session, actions, source_key=source_key)
        if inbox_id is not None:
            await mark_handled(session, inbox_id, self.clock.now())
        return chats

    def _apology(self, event: Event, translator: Translator) -> list[Action]:
        text = translator.t(
            "Sorry, something went wrong on our side. "
            "Your message is safe; please try again in a moment."
        )
        if isinstance(event, MessageReceived | TimeCame):
            # Announcing a failed plain message in the group would only be noise.
            return []
        return [
            SendMessage(
                chat=event.chat,
                content=FormattedText.plain(text),
                reply_to=getattr(event, "message_id", None),
                interaction_id=getattr(event, "interaction_id", None),
            )
        ]

    # -- performing ---------------------------------------------------------------------------

    async def perform(self, action: Action, delivery: Delivery) -> Sent | None:
        adapter = self.adapters.get(action.platform)
        if adapter is None:
            raise PermanentFailure(f"no adapter for platform {action.platform!r}")
        if isinstance(action, SendMessage) and action.attachments:
            return await self._carry_files(adapter, action, delivery)
        return await adapter.perform(action, delivery)

    async def _carry_files(self, adapter: Adapter, action: SendMessage, delivery: Delivery) -> Sent:
        """Relay files: fetched from the origin platform within the destination's limit."""
        source = self.adapters.get(action.origin.chat.platform) if action.origin else None
        translator = Translator(self.settings.language)
        files: list[tuple[Attachment, bytes]] = []
        notices: list[str] = []
        for attachment in action.attachments:
            data = await source.download(attachment, adapter.max_upload) if source else None
            if data is None:
                # Over the limit (or unreachable): a short notice, never a crash.
                notices.append(
                    translator.t(
                        "📎 {name} is too large to be carried over; see it on {platform}.",
                        name=attachment.filename or attachment.kind,
                        platform=(
                            action.origin.chat.platform if action.origin else "?"
                        ).capitalize(),
                    )
                )
            else:
                files.append((attachment, data))
        content = action.content
        for notice in notices:
            content = content + FormattedText.plain(("\n" if content.text else "") + notice)
        ids: list[str] = []
        caption_fits = len(files) == 1 and len(content.text) <= 900
        if (content.text and not caption_fits) or not files:
            sent = await adapter.perform(replace(action, content=content, attachments=()), delivery)
            ids.extend(sent.message_ids if sent else ())
            content = FormattedText.plain("")
        for index, (attachment, data) in enumerate(files):
            sent = await adapter.perform(
                SendFile(
                    chat=action.chat,
                    filename=attachment.filename or f"{attachment.kind}-{index + 1}",
                    data=data,
                    mime_type=attachment.mime_type or "application/octet-stream",
                    caption=content if content.text else None,
                    reply_to=action.reply_to if not ids else None,
                    as_name=action.as_name,
                ),
                delivery,
            )
            content = FormattedText.plain("")
            ids.extend(sent.message_ids if sent else ())
        return Sent(action.chat, tuple(ids))
