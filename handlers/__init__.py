"""The handler table: every command, button prefix and event the bot answers, in one place.

Nothing registers itself at import time; the composition root hands these tables to the
dispatcher, and tests may hand it others.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.events import Action, Event, Form, MessageDeleted, MessageEdited, MessageReceived
from bot.i18n import N_
from handlers import bridge, messages, status
from handlers import help as help_

if TYPE_CHECKING:
    from bot.dispatcher import Context

EventHandler = Callable[["Context", Any], Awaitable[Sequence[Action]]]


@dataclass(frozen=True, slots=True)
class Command:
    """A command residents type (``/aide``) or pick from the platform's menu."""

    handler: EventHandler
    summary: str  # an English message id, translated where it is shown
    usage: str = ""
    staff_only: bool = False
    hidden: bool = False  # an alias, not listed a second time in /aide
    # Opened instead of taking arguments where the platform has forms (Discord modals).
    form: Form | None = None


COMMANDS: Mapping[str, Command] = {
    "aide": Command(help_.show_help, N_("List what the bot can do")),
    "help": Command(help_.show_help, N_("List what the bot can do"), hidden=True),
    "start": Command(help_.show_help, N_("List what the bot can do"), hidden=True),
    "langue": Command(
        help_.choose_language, N_("Choose the bot's language: fr or en"), usage="fr|en"
    ),
    "language": Command(
        help_.choose_language, N_("Choose the bot's language: fr or en"), hidden=True
    ),
    "supprimer": Command(
        bridge.delete_both,
        N_("In reply to a message: delete it on every linked chat (author or moderator)"),
    ),
    "relier": Command(
        bridge.link_chats,
        N_("Moderators: link this chat with another one"),
        usage="[code]",
        staff_only=True,
    ),
    "delier": Command(bridge.unlink_chats, N_("Moderators: unlink this chat"), staff_only=True),
    "statut": Command(
        status.show_status, N_("Moderators: delivery status of each chat"), staff_only=True
    ),
    "status": Command(
        status.show_status,
        N_("Moderators: delivery status of each chat"),
        staff_only=True,
        hidden=True,
    ),
}

BUTTONS: Mapping[str, EventHandler] = {}

# Form submissions, by the part of the form id before the first ":".
FORMS: Mapping[str, EventHandler] = {}

EVENTS: Mapping[type[Event], Sequence[EventHandler]] = {
    MessageReceived: (messages.store_message, bridge.relay_message),
    MessageEdited: (messages.store_edit, bridge.relay_edit),
    MessageDeleted: (messages.store_deletion, bridge.relay_deletion),
}

UNKNOWN_COMMAND: EventHandler = help_.unknown_command

# How the outbox merges a backlog of relayed posts into one (see bot/outbox.py).
MERGE_RELAYS = bridge.merge_relays
