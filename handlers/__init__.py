"""The handler table: every command, button, form, event and due time the bot answers.

Nothing registers itself at import time; ``table()`` builds the table the composition root
hands to the dispatcher, and tests may build others.
"""

from __future__ import annotations

from bot.dispatcher import DueEntry, Tables
from bot.due import DueKind, Recurring
from bot.events import Event, MessageDeleted, MessageEdited, MessageReceived
from bot.gate import HELD
from bot.handling import STAFF, Command, Handler
from bot.i18n import N_
from handlers import bridge, held, kit, maintenance, messages, status
from handlers import help as help_

COMMANDS: dict[str, Command] = {
    "aide": Command(help_.show_help, N_("List what the bot can do")),
    "help": Command(help_.show_help, N_("List what the bot can do"), hidden=True),
    "start": Command(help_.show_help, N_("List what the bot can do"), hidden=True),
    "langue": Command(
        help_.choose_language, N_("Choose the bot's language: fr or en"), usage="fr|en"
    ),
    "language": Command(
        help_.choose_language, N_("Choose the bot's language: fr or en"), hidden=True
    ),
    "annuler": Command(kit.cancel_form, N_("Leave the form you are filling in")),
    "cancel": Command(kit.cancel_form, N_("Leave the form you are filling in"), hidden=True),
    "supprimer": Command(
        bridge.delete_both,
        N_("In reply to a message: delete it on every linked chat (author or moderator)"),
    ),
    "relier": Command(
        bridge.link_chats,
        N_("Moderators: link this chat with another one"),
        usage="[code]",
        roles=STAFF,
    ),
    "delier": Command(bridge.unlink_chats, N_("Moderators: unlink this chat"), roles=STAFF),
    "statut": Command(
        status.show_status, N_("Moderators: delivery status of each chat"), roles=STAFF
    ),
    "status": Command(
        status.show_status,
        N_("Moderators: delivery status of each chat"),
        roles=STAFF,
        hidden=True,
    ),
}

EVENTS: dict[type[Event], tuple[Handler, ...]] = {
    MessageReceived: (messages.store_message, bridge.relay_message),
    MessageEdited: (messages.store_edit, bridge.relay_edit),
    MessageDeleted: (messages.store_deletion, bridge.relay_deletion),
}

BUTTONS = {HELD: held.decide}

DUE = {
    maintenance.PURGE: DueEntry(
        # A purge missed by days still has work to do; it never goes stale.
        DueKind(maintenance.PURGE, stale_after=None),
        maintenance.purge,
    ),
}

# Recurring due times, in the town's local time.
RECURRING = (Recurring(maintenance.PURGE, hour=3, minute=17),)

# How the outbox merges a backlog of relayed posts into one (see bot/outbox.py).
MERGE_RELAYS = bridge.merge_relays


def table() -> Tables:
    """The bot's handler table."""
    return Tables(
        commands=COMMANDS,
        unknown_command=help_.unknown_command,
        events=EVENTS,
        buttons=BUTTONS,
        due=DUE,
        recurring=RECURRING,
    )
