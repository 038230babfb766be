"""What a handler gets and what it is: the slim ``Context``, ``Command`` and the handler type.

A handler sees its transaction, the settings, the clock, the reader's language, the acting
person with their roles, the French NLP pipeline (loaded on first use) and a way to queue
actions. It never sees the dispatcher nor the database object: what it writes, the actions it
queues and the mark that the event was handled commit together or not at all. Tests build a
``Context`` of their own (``tests/kit.py``) and call a handler in milliseconds.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import select

from bot import due, forms
from bot.buttons import ButtonTemplate
from bot.clock import Clock
from bot.config import ChannelConfig, Settings
from bot.events import (
    Action,
    Button,
    ChatRef,
    DeleteMessage,
    EditMessage,
    Event,
    Form,
    OpenThread,
    PinMessage,
    SendMessage,
    UnpinMessage,
    thread_key,
)
from bot.i18n import Translator
from bot.memo import Memo, MemoView
from bot.nlp import FrenchNlp
from bot.richtext import FormattedText
from storage.models import NamedPost

Handler = Callable[["Context", Any], Awaitable[Sequence[Action] | None]]

# A choice in a step-by-step form, offered as a button.
FORM_CHOICE = ButtonTemplate("form:{form:str}:{step:int}:{value:str}")


class Role(enum.StrEnum):
    """What a person may do; a person can hold several."""

    RESIDENT = "resident"
    MODERATOR = "moderator"
    COUNCIL = "council"
    ADMIN = "admin"


STAFF = frozenset({Role.MODERATOR, Role.COUNCIL, Role.ADMIN})


@dataclass(frozen=True, slots=True)
class Person:
    """The resident behind the event's account, with the roles resolved for this chat."""

    id: int | None
    account_id: int | None
    account_key: str  # "telegram:12345"
    roles: frozenset[Role] = frozenset({Role.RESIDENT})

    def has(self, *roles: Role) -> bool:
        """Whether the person holds any of ``roles`` (an admin holds every role)."""
        return Role.ADMIN in self.roles or any(role in self.roles for role in roles)

    @property
    def is_staff(self) -> bool:
        return bool(self.roles & STAFF)


NOBODY = Person(id=None, account_id=None, account_key="clock:clock", roles=frozenset())


@dataclass(frozen=True, slots=True)
class Command:
    """A command residents type (``/aide``) or pick from the platform's menu."""

    handler: Handler
    summary: str  # an English message id, translated where it is shown
    usage: str = ""
    # Who may use it; None: everyone. Checked at the time of the command, asked of the
    # platform afresh (no cached role lets a demoted moderator through).
    roles: frozenset[Role] | None = None
    hidden: bool = False  # an alias, not listed a second time in /aide
    # Opened instead of taking arguments: a Discord modal where it fits, else step by step.
    form: forms.FormSpec | None = None

    @property
    def staff_only(self) -> bool:
        return self.roles is not None and Role.RESIDENT not in self.roles

    def modal(self, t: Callable[[str], str]) -> Form | None:
        """The Discord modal for this command's form, when the form fits in one."""
        if self.form is None or not self.form.fits_modal():
            return None
        return self.form.as_modal(t)


@dataclass
class Context:
    """Everything a handler may use while handling one event, inside one transaction."""

    session: AsyncSession
    settings: Settings
    clock: Clock
    translator: Translator
    event: Event
    person: Person
    nlp: FrenchNlp
    # The command table, for /aide; read-only.
    commands: Mapping[str, Command] = field(default_factory=dict)
    actions: list[Action] = field(default_factory=list)
    # Called after the transaction commits (e.g. to remember what the handler created).
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    # Tells the core that something changed: a cache to drop ("language", "accounts",
    # "roles", "forms") or an inbox to wake ("inbox:core").
    signal: Callable[[str], None] = lambda what: None
    # What rarely changes (channel ids, bridge links, language choices, staff names), shared
    # between events; what this transaction loads is its own until it commits.
    memo: MemoView = field(default_factory=lambda: Memo().view())

    def changed(self, what: str) -> None:
        """Signal ``what`` once this transaction has committed."""
        if not what.startswith("inbox:"):
            # Dropped now as well: a transaction elsewhere must not keep what it reads
            # between this change and its commit.
            self.memo.drop(what)
        self.after_commit.append(lambda: self.signal(what))

    # -- language ---------------------------------------------------------------------------

    @property
    def language(self) -> str:
        return self.translator.language

    def t(self, message: str, /, **values: object) -> str:
        """Translate for whoever triggered the event."""
        return self.translator.t(message, **values)

    def tn(self, singular: str, plural: str, n: int, /, **values: object) -> str:
        return self.translator.tn(singular, plural, n, **values)

    # -- who --------------------------------------------------------------------------------

    def has_role(self, *roles: Role) -> bool:
        return self.person.has(*roles)

    def is_moderator(self) -> bool:
        """Whether the person moderates here (council staff and admins count)."""
        return self.person.has(Role.MODERATOR, Role.COUNCIL)

    def channel(self, chat: ChatRef | None = None) -> ChannelConfig | None:
        """The configured channel for ``chat`` (default: the event's), if any."""
        chat = chat or self.event.chat
        return self.settings.channel(chat.platform, chat.chat_id, chat.thread_id)

    def now(self) -> datetime:
        return self.clock.now()

    # -- actions ----------------------------------------------------------------------------

    def send(self, *actions: Action) -> None:
        """Queue actions; they are delivered once the transaction commits."""
        self.actions.extend(actions)

    def reply(self, text: str | FormattedText, **options: Any) -> SendMessage:
        """An answer in the same chat, as a reply to the triggering message when there is one."""
        event = self.event
        content = text if isinstance(text, FormattedText) else FormattedText.plain(text)
        return SendMessage(
            chat=event.chat,
            content=content,
            reply_to=getattr(event, "message_id", None),
            interaction_id=getattr(event, "interaction_id", None),
            **options,
        )

    # -- named posts ------------------------------------------------------------------------

    def post(
        self,
        key: str,
        chat: ChatRef,
        text: str | FormattedText,
        *,
        buttons: tuple[tuple[Button, ...], ...] = (),
    ) -> SendMessage:
        """A post named ``key`` in ``chat`` (queued), to edit, pin or delete later by name."""
        content = text if isinstance(text, FormattedText) else FormattedText.plain(text)
        action = SendMessage(chat=chat, content=content, buttons=buttons, post_key=key)
        self.send(action)
        return action

    async def _post_chats(self, key: str) -> list[ChatRef]:
        from bot.outbox import parse_chat_key

        rows = await self.session.execute(select(NamedPost.chat_key).where(NamedPost.key == key))
        chats = [parse_chat_key(chat) for chat in rows.scalars()]
        # Posts this handler queued are not in the table before the commit.
        for action in self.actions:
            if (
                isinstance(action, SendMessage)
                and action.post_key == key
                and action.chat not in chats
            ):
                chats.append(action.chat)
        return chats

    async def edit_post(
        self,
        key: str,
        text: str | FormattedText,
        *,
        buttons: tuple[tuple[Button, ...], ...] | None = None,
    ) -> int:
        """Edit the post named ``key`` wherever it was posted; returns how many chats."""
        content = text if isinstance(text, FormattedText) else FormattedText.plain(text)
        chats = await self._post_chats(key)
        self.send(
            *(EditMessage(chat=c, content=content, buttons=buttons, post_key=key) for c in chats)
        )
        return len(chats)

    async def delete_post(self, key: str) -> int:
        """Delete the post named ``key`` (every part) wherever it was posted."""
        chats = await self._post_chats(key)
        self.send(*(DeleteMessage(chat=c, post_key=key) for c in chats))
        return len(chats)

    async def pin_post(self, key: str, *, pin: bool = True) -> int:
        """Pin (or unpin) the post named ``key`` wherever it was posted."""
        chats = await self._post_chats(key)
        kind = PinMessage if pin else UnpinMessage
        self.send(*(kind(chat=c, post_key=key) for c in chats))
        return len(chats)

    async def open_thread(self, key: str, name: str) -> int:
        """Open a discussion thread named ``name`` on the post named ``key``, wherever it was
        posted; returns how many chats.

        A Discord thread, a Telegram forum topic, or (where the group is not a forum) the
        reply chain under the post. The bridge then links the threads of ``thread:<key>``
        across chats like any bridged chat. Queued after the post in each chat's queue, so a
        post queued by this very handler gets its thread once it is delivered.
        """
        chats = await self._post_chats(key)
        self.send(
            *(
                OpenThread(chat=chat, name=name, post_key=key, thread_key=thread_key(key))
                for chat in chats
            )
        )
        return len(chats)

    # -- due times --------------------------------------------------------------------------

    async def schedule(
        self,
        key: str,
        kind: str,
        at: datetime | timedelta,
        subject: str = "",
        *,
        keep_earlier: bool = False,
    ) -> None:
        """Make ``kind`` happen at ``at`` (or after a delay); the same key replaces the time,
        unless ``keep_earlier`` (a throttle: a time already set stays)."""
        when = self.clock.now() + at if isinstance(at, timedelta) else at
        await due.schedule(
            self.session, key=key, kind=kind, at=when, subject=subject, keep_earlier=keep_earlier
        )

    async def cancel_due(self, key: str) -> bool:
        return await due.cancel(self.session, key)

    # -- forms ------------------------------------------------------------------------------

    async def open_form(
        self, spec: forms.FormSpec, data: Mapping[str, object] | None = None
    ) -> None:
        """Ask ``spec``'s questions one by one in this chat (the state is in the database)."""
        question = await forms.start(
            self.session,
            spec,
            account_key=self.person.account_key,
            chat_key=str(self.event.chat),
            now=self.clock.now(),
            ttl=timedelta(minutes=self.settings.form_minutes),
            data=data,
        )
        self.changed("forms")
        self.send(self.ask(question))

    def ask(self, question: forms.Question) -> SendMessage:
        """The message that asks ``question``, with buttons for a choice."""
        text, buttons = forms.render_question(
            question,
            self.t,
            button_data=lambda value: FORM_CHOICE.build(
                form=question.form_id, step=question.step, value=value
            ),
        )
        return self.reply(text, buttons=buttons)
