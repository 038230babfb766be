"""The console platform: a terminal stands for any number of chats on pretend platforms.

A line is what a resident writes. ``tg:ouest Bonjour`` writes "Bonjour" in the chat ``tg:ouest``
and stays there; lines that start with ``:`` talk to the console itself (``:nom Marie``,
``:clic poll:1:option:2``, ``:aide``). The same adapter drives the conversation tests. What the
bot sends to ``dm:<name>`` (a private message) is shown under ``[message privé à <name>]``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar

from bot import codec, inbox
from bot.clock import Clock, SystemClock
from bot.commands import parse_command
from bot.events import (
    DIRECT_PREFIX,
    Action,
    AnswerButton,
    Author,
    BanMember,
    ButtonPressed,
    ChatRef,
    CommandReceived,
    DeleteMessage,
    Delivery,
    EditMessage,
    Event,
    MessageReceived,
    MuteMember,
    OpenThread,
    PinMessage,
    SendFile,
    SendMessage,
    Sent,
    UnbanMember,
    UnpinMessage,
)
from bot.inbox import InboxRunner
from bot.platforms.base import Adapter
from bot.richtext import FormattedText

if TYPE_CHECKING:
    from bot.dispatcher import Dispatcher

logger = logging.getLogger(__name__)

# A chat, or a thread in it (``dc:ouest/12``: the thread the bot opened as #12).
_CHAT_PREFIX = re.compile(r"^(?P<chat>(?:tg|dc|con):[\w-]+(?:/\d+)?)(?:\s+(?P<rest>.*))?$", re.S)

CONSOLE_HELP = """Console : chaque ligne est un message d'habitant.
  tg:ouest Bonjour     écrit « Bonjour » dans le salon tg:ouest (et y reste)
  dc:ouest/12 Bonjour  écrit dans le fil de discussion n° 12 du salon dc:ouest
  :nom Marie           écrit désormais sous le nom de Marie
  :clic poll:1:o:2     appuie sur un bouton
  :admin               devient administrateur des salons (comme sur Telegram)
  :quitter             arrête le bot (Ctrl-D aussi)"""


@dataclass(frozen=True, slots=True)
class Posted:
    """A message the bot showed on the console."""

    chat: str
    message_id: str
    text: str
    reply_to: str | None = None
    as_name: str | None = None
    buttons: tuple[tuple[str, str], ...] = ()


@dataclass
class ConsoleState:
    chat: str = "con:general"
    name: str = "Habitant"
    posted: list[Posted] = field(default_factory=list)
    # Pretend administrators of every console chat (``:admin``), as a Telegram group's are.
    admins: set[str] = field(default_factory=set)


class ConsoleAdapter(Adapter):
    """Reads resident lines, prints the bot's answers."""

    name: ClassVar[str] = "console"
    # In one process with the bot: nothing it shows can be lost to a crash.
    finds_lost_posts: ClassVar[bool] = True
    ACTIONS: ClassVar[dict[type[Action], str]] = {
        SendMessage: "_send",
        SendFile: "_send_file",
        EditMessage: "_edit",
        DeleteMessage: "_delete",
        AnswerButton: "_answer",
        PinMessage: "_pin",
        UnpinMessage: "_pin",
        MuteMember: "_note",
        BanMember: "_note",
        UnbanMember: "_note",
        OpenThread: "_open_thread",
    }

    def __init__(
        self,
        *,
        reader: asyncio.StreamReader | None = None,
        write: Callable[[str], None] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.reader = reader
        self.write = write or (lambda line: None)
        self.clock = clock or SystemClock()
        self.state = ConsoleState()
        self.closed = asyncio.Event()
        self._ids = itertools.count(1)
        self._last_id = "0"
        self._dispatcher: Dispatcher | None = None
        self._inbox: InboxRunner | None = None
        self._task: asyncio.Task[None] | None = None

    # -- life cycle -------------------------------------------------------------------------

    async def start(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher
        self._inbox = dispatcher.inbox_runner(self.name, codec.decode)
        # Ids go on from the last run's: a message id is never reused in a chat.
        last = await inbox.get_cursor(dispatcher.db, self.name, "last_id")
        self._ids = itertools.count(int(last) + 1 if last else 1)
        # What a previous run stored but did not handle (it crashed) is handled first.
        await self._inbox.handle_pending()
        if self.reader is not None:
            self.write(CONSOLE_HELP)
            self._task = asyncio.create_task(self._read_loop(), name="console-reader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.closed.set()

    async def _read_loop(self) -> None:
        assert self.reader is not None
        try:
            while line := await self.reader.readline():
                text = line.decode("utf-8", errors="replace").rstrip("\n")
                if text.strip() in (":quitter", ":quit"):
                    break
                try:
                    await self.say(text)
                except Exception:
                    # The console must survive anything a person types.
                    logger.exception("console line failed")
        finally:
            self.closed.set()

    # -- what a resident does ---------------------------------------------------------------

    def _author(self) -> Author:
        slug = re.sub(r"\W+", "-", self.state.name.lower()).strip("-") or "habitant"
        return Author(platform=self.name, user_id=slug, display_name=self.state.name)

    async def roles(self, chat: ChatRef, author: Author) -> frozenset[str]:
        return frozenset({"moderator"}) if author.user_id in self.state.admins else frozenset()

    def _next_id(self) -> str:
        self._last_id = str(next(self._ids))
        return self._last_id

    def _chat(self) -> ChatRef:
        chat_id, _, thread = self.state.chat.partition("/")
        return ChatRef(self.name, chat_id, thread or None)

    async def say(self, line: str) -> list[Posted]:
        """Handle one typed line; returns what the bot posted in answer."""
        before = len(self.state.posted)
        event = self._parse(line)
        if event is not None:
            dispatcher = self._dispatcher
            assert dispatcher is not None and dispatcher.outbox is not None, "start() first"
            assert self._inbox is not None
            # Stored before it is handled, as on every platform: a line a handler could not
            # take yet is tried again, never lost.
            key = str(getattr(event, "message_id", None) or getattr(event, "interaction_id", ""))
            async with dispatcher.db.write() as session:
                now = self.clock.now()
                await inbox.store_updates(session, self.name, [(key, codec.encode(event))], now)
                await inbox.set_cursor(session, self.name, "last_id", self._last_id, now)
            # A person who typed a command waits for its answer: its tries are spent now, so
            # a failing one ends with an apology. A plain message that could not be taken
            # stays pending and is tried again with the next line.
            for _ in range(dispatcher.MAX_ATTEMPTS):
                if await self._inbox.handle_pending() or isinstance(event, MessageReceived):
                    break
            # A person at a terminal expects the answer before the next prompt.
            await dispatcher.outbox.drain()
        return self.state.posted[before:]

    def _parse(self, line: str) -> Event | None:
        text = line.strip()
        match = _CHAT_PREFIX.match(text)
        if match:
            self.state.chat = match.group("chat")
            text = (match.group("rest") or "").strip()
        if not text:
            return None
        if text.startswith(":"):
            return self._console_command(text[1:])
        now = self.clock.now()
        message_id = self._next_id()
        command = parse_command(text)
        if command is not None:
            return CommandReceived(
                chat=self._chat(),
                author=self._author(),
                at=now,
                message_id=message_id,
                name=command.name,
                args=command.args,
            )
        return MessageReceived(
            chat=self._chat(),
            author=self._author(),
            at=now,
            message_id=message_id,
            content=FormattedText.plain(text),
        )

    def _console_command(self, text: str) -> Event | None:
        verb, _, rest = text.partition(" ")
        rest = rest.strip()
        if verb == "nom" and rest:
            self.state.name = rest[:64]
            self.write(f"(vous écrivez maintenant sous le nom de {self.state.name})")
        elif verb == "admin":
            self.state.admins.add(self._author().user_id)
            self.write(f"({self.state.name} administre maintenant les salons de la console)")
        elif verb == "clic" and rest:
            return ButtonPressed(
                chat=self._chat(),
                author=self._author(),
                at=self.clock.now(),
                data=rest,
                message_id=None,
                interaction_id=f"console-{self._next_id()}",
            )
        else:
            self.write(CONSOLE_HELP)
        return None

    # -- what the bot does ------------------------------------------------------------------

    def _show(self, posted: Posted) -> None:
        self.state.posted.append(posted)
        who = f"{posted.as_name} (relais)" if posted.as_name else "Forum"
        body = posted.text.replace("\n", "\n    ")
        self.write(f"[{_where(posted.chat)}] {who} #{posted.message_id}: {body}")
        for row in posted.buttons:
            self.write(f"    [{row[0]}] → :clic {row[1]}")

    async def _send(self, action: SendMessage, delivery: Delivery) -> Sent:
        message_id = self._next_id()
        buttons = tuple((b.label, b.data) for row in action.buttons for b in row)
        if action.choice is not None:
            buttons += tuple(
                (label, f"{action.choice.data}:{value}") for label, value in action.choice.options
            )
        self._show(
            Posted(
                chat=_place(action.chat),
                message_id=message_id,
                text=self.quoted(action, native_reply=True).text,
                reply_to=action.reply_to,
                as_name=action.as_name,
                buttons=buttons,
            )
        )
        return Sent(action.chat, (message_id,))

    async def _send_file(self, action: SendFile, delivery: Delivery) -> Sent:
        message_id = self._next_id()
        caption = action.caption.text if action.caption else ""
        text = f"📎 {action.filename} ({len(action.data)} octets) {caption}".rstrip()
        self._show(Posted(chat=_place(action.chat), message_id=message_id, text=text))
        return Sent(action.chat, (message_id,))

    async def _edit(self, action: EditMessage, delivery: Delivery) -> None:
        self.write(
            f"[{_where(_place(action.chat))}] (message #{action.message_id} modifié) "
            f"{action.content.text}"
        )

    async def _delete(self, action: DeleteMessage, delivery: Delivery) -> None:
        self.write(f"[{_where(_place(action.chat))}] (message #{action.message_id} supprimé)")

    async def _answer(self, action: AnswerButton, delivery: Delivery) -> None:
        if action.text:
            self.write(f"[{_where(_place(action.chat))}] (pour vous) {action.text}")

    async def _pin(self, action: PinMessage | UnpinMessage, delivery: Delivery) -> None:
        verb = "épinglé" if isinstance(action, PinMessage) else "désépinglé"
        self.write(f"[{_where(_place(action.chat))}] (message #{action.message_id} {verb})")

    async def _note(self, action: Action, delivery: Delivery) -> None:
        self.write(f"[{_where(_place(action.chat))}] ({type(action).__name__})")

    async def _open_thread(self, action: OpenThread, delivery: Delivery) -> Sent:
        """A pretend thread: a number, shown, that the person at the terminal can write in."""
        thread = self._next_id()
        chat = replace(action.chat, thread_id=thread)
        self.write(
            f"[{_where(_place(action.chat))}] (fil de discussion « {action.name} » ouvert sur "
            f"le message #{action.message_id} ; pour y écrire : {_place(chat)} …)"
        )
        return Sent(chat, (thread,))


def _place(chat: ChatRef) -> str:
    """A console chat as typed: ``dc:ouest``, or ``dc:ouest/12`` for a thread in it."""
    return f"{chat.chat_id}/{chat.thread_id}" if chat.thread_id else chat.chat_id


def _where(chat_id: str) -> str:
    """How a line names its chat: a private conversation says whose it is, since on a shared
    terminal nothing else shows that only that person would see the message."""
    if chat_id.startswith(DIRECT_PREFIX):
        return f"message privé à {chat_id.removeprefix(DIRECT_PREFIX)}"
    return chat_id
