"""The handler table: every command, button, form, event and due time the bot answers.

Nothing registers itself at import time; ``table()`` builds the table the composition root
hands to the dispatcher, and tests may build others.
"""

from __future__ import annotations

from bot.config import Settings
from bot.dispatcher import DueEntry, FormEntry, Tables
from bot.due import DueKind, Recurring
from bot.events import Event, MessageDeleted, MessageEdited, MessageReceived
from bot.gate import HELD
from bot.handling import STAFF, Command, Handler, Role
from bot.i18n import N_
from handlers import accounts, bridge, held, kit, maintenance, messages, polls, proposals, status
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
    "lier": Command(
        accounts.link_accounts, N_("Link your Telegram and Discord accounts"), usage="[code]"
    ),
    "dissocier": Command(
        accounts.unlink_account, N_("Unlink this account from your other accounts")
    ),
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
    # Fifty-fifty initiatives (handlers/proposals.py).
    "proposer": Command(proposals.propose, N_("Propose a fifty-fifty initiative")),
    "propositions": Command(
        proposals.list_proposals,
        N_("Browse the proposals"),
        usage="[quartier] [thème] [statut] [populaires]",
    ),
    "proposition": Command(proposals.show, N_("Read one proposal and its history"), usage="N"),
    "mes_propositions": Command(proposals.mine, N_("The proposals you wrote")),
    "retirer": Command(
        proposals.withdraw, N_("Withdraw your proposal before the answer"), usage="N"
    ),
    "nouvelles": Command(
        proposals.post_update,
        N_("Send news of a proposal to its supporters and followers"),
        usage="N texte",
    ),
    "repondre": Command(
        proposals.answer,
        N_("Council: answer a proposal"),
        usage="N etude|acceptee|refusee [réponse]",
        roles=frozenset({Role.COUNCIL, Role.ADMIN}),
    ),
    # Polls (handlers/polls.py).
    "sondage": Command(polls.open_poll_form, N_("Open a poll")),
    "sondages": Command(polls.list_polls, N_("Open and recent polls")),
    "classer": Command(
        polls.rank, N_("Vote in a ranked poll: the options, best first"), usage="N 2 1 3"
    ),
    "resultats": Command(polls.results, N_("The results of a poll"), usage="N"),
    "cloturer": Command(
        polls.close_now, N_("Close your poll early (or, moderators, any poll)"), usage="N"
    ),
    "avancement": Command(
        proposals.progress,
        N_("Council: an accepted proposal is in progress or carried out"),
        usage="N en_cours|realisee [note]",
        roles=frozenset({Role.COUNCIL, Role.ADMIN}),
    ),
}

EVENTS: dict[type[Event], tuple[Handler, ...]] = {
    MessageReceived: (messages.store_message, bridge.relay_message, proposals.closing_photo),
    MessageEdited: (messages.store_edit, bridge.relay_edit),
    MessageDeleted: (messages.store_deletion, bridge.relay_deletion),
}

BUTTONS = {
    HELD: held.decide,
    proposals.DRAFT_BUTTON: proposals.draft_decision,
    proposals.REVIEW_BUTTON: proposals.review_decision,
    proposals.ACT_BUTTON: proposals.act,
    proposals.LIST_BUTTON: proposals.list_page,
    polls.OPTION_BUTTON: polls.press_option,
    polls.SLOT_BUTTON: polls.press_slot,
}

DUE = {
    # A close missed by days still closes the poll and posts its result.
    polls.CLOSE: DueEntry(DueKind(polls.CLOSE, stale_after=None), polls.close_due),
    # Live counts: even late, a refresh shows the count (it ignores closed polls).
    polls.REFRESH_KIND: DueEntry(DueKind(polls.REFRESH_KIND, stale_after=None), polls.refresh),
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


def forms(settings: Settings) -> dict[str, FormEntry]:
    """The forms answered step by step; some list the town's own choices from the settings."""
    return {
        "proposal": FormEntry(proposals.proposal_form(settings), proposals.submit_form),
        proposals.REFUSAL_FORM.form_id: FormEntry(proposals.REFUSAL_FORM, proposals.refusal_form),
        proposals.ACCEPT_FORM.form_id: FormEntry(proposals.ACCEPT_FORM, proposals.accept_form),
        "poll": FormEntry(polls.poll_form(settings), polls.create_from_form),
    }


def table(settings: Settings | None = None) -> Tables:
    """The bot's handler table."""
    return Tables(
        forms=forms(settings or Settings()),
        commands=COMMANDS,
        unknown_command=help_.unknown_command,
        events=EVENTS,
        buttons=BUTTONS,
        due=DUE,
        recurring=RECURRING,
    )
