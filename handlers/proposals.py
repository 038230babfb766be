"""Fifty-fifty initiatives: residents propose, moderators publish, residents support, the
council answers, and everyone concerned hears of every step.

The lifecycle (``Status``): a filled form is a *draft* the author checks against similar
proposals, then *submitted*; a moderator *publishes* it (or refuses it with a reason); with
enough supports it goes to the *council*, whose staff answer *study*, *accepted* (what the
town brings, a planned date) or *declined* (the official answer); an accepted proposal goes
*in progress*, then *done* with a closing note. The author may *withdraw* it until the
answer. Every change is a row of ``proposal_event`` (the history), edits the published post
and tells the author, supporters and followers once each, in a private message on the
platform they used.

State changes are conditional UPDATEs (``WHERE status IN …``): two moderators pressing at
once, or one press handled twice, move a proposal once and notify once.
"""

from __future__ import annotations

import enum
import logging
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from babel.numbers import format_decimal
from sqlmodel import col, func, select

from bot.buttons import ButtonTemplate
from bot.commands import leading_number
from bot.config import Settings
from bot.dispatcher import Filled, Press
from bot.events import (
    Action,
    Button,
    ChatRef,
    CommandReceived,
    MessageReceived,
    MessageRef,
    SendMessage,
    direct_chat,
)
from bot.forms import Field, FormSpec, chosen_name, euros, named_choices
from bot.gate import moderation_chats
from bot.handling import Context, Role
from bot.i18n import N_, Translator
from bot.outbox import parse_chat_key
from bot.richtext import FormattedText
from storage import repository
from storage.db import insert_ignore, rowcount
from storage.models import NamedPost, Proposal, ProposalEvent, ProposalFollow, ProposalSupport

logger = logging.getLogger(__name__)


class Status(enum.StrEnum):
    """Where a proposal stands."""

    DRAFT = "draft"
    SUBMITTED = "submitted"
    REFUSED = "refused"
    PUBLISHED = "published"
    COUNCIL = "council"
    STUDY = "study"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    WITHDRAWN = "withdrawn"


STATUS_LABELS: dict[str, str] = {
    Status.DRAFT: N_("draft"),
    Status.SUBMITTED: N_("awaiting moderation"),
    Status.REFUSED: N_("refused by the moderators"),
    Status.PUBLISHED: N_("published, gathering supports"),
    Status.COUNCIL: N_("sent to the council"),
    Status.STUDY: N_("under study by the town"),
    Status.ACCEPTED: N_("accepted"),
    Status.DECLINED: N_("declined by the town"),
    Status.IN_PROGRESS: N_("in progress"),
    Status.DONE: N_("carried out"),
    Status.WITHDRAWN: N_("withdrawn by its author"),
}

# Words a resident types for a status in /propositions or a staff member in /repondre.
STATUS_WORDS: dict[str, Status] = {
    "brouillon": Status.DRAFT,
    "moderation": Status.SUBMITTED,
    "refusee": Status.REFUSED,
    "publiee": Status.PUBLISHED,
    "ouverte": Status.PUBLISHED,
    "conseil": Status.COUNCIL,
    "etude": Status.STUDY,
    "acceptee": Status.ACCEPTED,
    "declinee": Status.DECLINED,
    "en_cours": Status.IN_PROGRESS,
    "encours": Status.IN_PROGRESS,
    "realisee": Status.DONE,
    "retiree": Status.WITHDRAWN,
}

# Open to supports: published and not yet answered for good.
SUPPORTABLE = frozenset({Status.PUBLISHED, Status.COUNCIL, Status.STUDY})
# The council may answer a published proposal before the threshold, too.
ANSWERABLE = frozenset({Status.PUBLISHED, Status.COUNCIL, Status.STUDY})
WITHDRAWABLE = frozenset({Status.DRAFT, Status.SUBMITTED, Status.PUBLISHED, Status.COUNCIL})
# Statuses a published proposal can have. What residents see is what was published
# (``published_at`` set): a draft, a proposal awaiting moderation or one the moderators
# refused stays its author's alone, whatever its status.
VISIBLE = frozenset(set(Status) - {Status.DRAFT, Status.SUBMITTED, Status.REFUSED})

DRAFT_BUTTON = ButtonTemplate("proposal:{id:int}:draft:{do:choice(submit|discard)}")
REVIEW_BUTTON = ButtonTemplate("proposal:{id:int}:review:{do:choice(approve|refuse)}")
ACT_BUTTON = ButtonTemplate("proposal:{id:int}:{do:choice(support|follow)}")
LIST_BUTTON = ButtonTemplate("proposals:{page:int}:{sort:choice(new|top)}:{q:str}")

PAGE_SIZE = 5
SIMILAR_SHOWN = 3
# Share of lemmas in common (Jaccard) from which a proposal is shown as similar.
SIMILAR_FROM = 0.2

TITLE = Field("title", N_("Title"), min_length=10, max_length=120)
DESCRIPTION = Field(
    "description",
    N_("Description: what, where, for whom"),
    long=True,
    min_length=30,
    max_length=2000,
)
BRING = Field(
    "residents_bring",
    N_("What the residents bring (time, skills, materials)"),
    long=True,
    min_length=10,
    max_length=1000,
)
ASKED = Field(
    "town_asked", N_("What the town is asked for"), long=True, min_length=10, max_length=1000
)
BUDGET = Field(
    "budget",
    N_("Rough budget in euros"),
    required=False,
    max_length=30,
    validate=euros,
)

REFUSAL_FORM = FormSpec(
    "proposal_refusal",
    N_("Refusing a proposal"),
    (
        Field(
            "reason", N_("Reason, shown to the author"), long=True, min_length=10, max_length=1000
        ),
    ),
)
ACCEPT_FORM = FormSpec(
    "proposal_accept",
    N_("Accepting a proposal"),
    (
        Field("town_brings", N_("What the town brings"), long=True, min_length=10),
        Field("planned_for", N_("Planned date (e.g. spring 2027)"), min_length=3, max_length=100),
        Field("answer", N_("Official answer"), long=True, min_length=10, max_length=2000),
    ),
)


def proposal_form(settings: Settings) -> FormSpec:
    """The /proposer form, with the town's neighbourhoods and themes as buttons."""
    return FormSpec(
        "proposal",
        N_("New proposal"),
        (
            TITLE,
            DESCRIPTION,
            Field(
                "neighbourhood",
                N_("Neighbourhood"),
                choices=named_choices(settings.neighbourhoods()),
            ),
            Field(
                "theme",
                N_("Theme"),
                choices=named_choices(settings.proposals.themes),
            ),
            BRING,
            ASKED,
            BUDGET,
        ),
    )


# -- helpers ------------------------------------------------------------------------------


def _fold(text: str) -> str:
    """Lower case, no accents: "Réalisée" and "realisee" are the same word."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _amount(value: int) -> str:
    return f"{format_decimal(value, locale='fr_FR')} €"


def _label(t: Translator | Context, status: str) -> str:
    return t.t(STATUS_LABELS.get(status, status))


def is_public(proposal: Proposal) -> bool:
    """Whether residents may see it: only what the moderators published."""
    return proposal.published_at is not None


def post_key(proposal_id: int) -> str:
    return f"proposal:{proposal_id}"


def review_key(proposal_id: int) -> str:
    return f"proposal-review:{proposal_id}"


def proposals_chats(ctx: Context, proposal: Proposal) -> list[ChatRef]:
    """Where a published proposal is shown: every proposals channel, else where it was written."""
    chats = [
        ChatRef(c.platform, c.id, c.thread)
        for c in ctx.settings.channels
        if c.purpose == "proposals"
    ]
    return chats or [parse_chat_key(proposal.origin_chat_key)]


def render(t: Translator | Context, proposal: Proposal, settings: Settings) -> str:
    """The proposal as residents read it (the published post, /proposition N)."""
    lines = [
        t.t("Proposal #{id} — {title}", id=proposal.id, title=proposal.title),
        t.t(
            "Neighbourhood: {neighbourhood} · Theme: {theme}",
            neighbourhood=proposal.neighbourhood,
            theme=proposal.theme,
        ),
        "",
        proposal.description,
        "",
        t.t("What the residents bring: {text}", text=proposal.residents_bring),
        t.t("What the town is asked for: {text}", text=proposal.town_asked),
    ]
    if proposal.budget_euros is not None:
        lines.append(t.t("Rough budget: {amount}", amount=_amount(proposal.budget_euros)))
    lines.append("")
    lines.append(t.t("Status: {status}", status=_label(t, proposal.status)))
    if proposal.status in (Status.PUBLISHED, Status.COUNCIL, Status.STUDY):
        lines.append(
            t.t(
                "Supports: {n} of {threshold} needed to go to the council",
                n=proposal.supports,
                threshold=settings.proposals.support_threshold,
            )
            if proposal.status == Status.PUBLISHED
            else t.t("Supports: {n}", n=proposal.supports)
        )
    else:
        lines.append(t.t("Supports: {n}", n=proposal.supports))
    if proposal.refusal_reason and proposal.status == Status.REFUSED:
        lines.append(t.t("Moderators' reason: {text}", text=proposal.refusal_reason))
    if proposal.official_answer:
        lines.append(t.t("Official answer of the town: {text}", text=proposal.official_answer))
    if proposal.town_brings:
        lines.append(t.t("What the town brings: {text}", text=proposal.town_brings))
    if proposal.planned_for:
        lines.append(t.t("Planned for: {when}", when=proposal.planned_for))
    if proposal.closing_note:
        lines.append(t.t("Closing note: {text}", text=proposal.closing_note))
    if proposal.status in SUPPORTABLE:
        lines.append(t.t("Discuss it in its thread, or reply to this message."))
    return "\n".join(lines)


def act_buttons(t: Translator | Context, proposal: Proposal) -> tuple[tuple[Button, ...], ...]:
    """Soutenir / Suivre under a published proposal; only Suivre once it is answered."""
    assert proposal.id is not None
    follow = Button(t.t("Follow"), ACT_BUTTON.build(id=proposal.id, do="follow"))
    if proposal.status in SUPPORTABLE:
        support = Button(t.t("Support"), ACT_BUTTON.build(id=proposal.id, do="support"))
        return ((support, follow),)
    if proposal.status in (Status.WITHDRAWN, Status.REFUSED, Status.DONE, Status.DECLINED):
        return ()
    return ((follow,),)


async def _load(ctx: Context, proposal_id: int, *, lock: bool = False) -> Proposal | None:
    if not 1 <= proposal_id <= 2**31 - 1:
        # No database column holds it: a forged button or a typo.
        return None
    query = (
        select(Proposal)
        .where(col(Proposal.id) == proposal_id)
        # Read afresh: a conditional UPDATE of this transaction may have changed it.
        .execution_options(populate_existing=True)
    )
    if lock:
        # PostgreSQL: a decision taken on what was read must not race another one (SQLite
        # runs one writer at a time and ignores this).
        query = query.with_for_update()
    return (await ctx.session.execute(query)).scalar_one_or_none()


async def _move(
    ctx: Context,
    proposal_id: int,
    allowed: Iterable[Status],
    to: Status,
    *,
    by_role: str,
    note: str | None = None,
    **values: object,
) -> Proposal | None:
    """Move the proposal to ``to`` if it stands in ``allowed``; None when it did not.

    One conditional UPDATE: of two moderators pressing at once, one moves it.
    """
    now = ctx.now()
    result = await ctx.session.execute(
        sa.update(Proposal)
        .where(col(Proposal.id) == proposal_id, col(Proposal.status).in_([str(s) for s in allowed]))
        .values(status=str(to), updated_at=now, **values)
    )
    if rowcount(result) != 1:
        return None
    ctx.session.add(
        ProposalEvent(
            proposal_id=proposal_id,
            at=now,
            kind=str(to),
            status=str(to),
            by_role=by_role,
            note=note,
        )
    )
    return await _load(ctx, proposal_id)


def _role_of(ctx: Context, proposal: Proposal) -> str:
    if ctx.person.id == proposal.author_person_id:
        return "author"
    if ctx.has_role(Role.COUNCIL):
        return "council"
    if ctx.is_moderator():
        return "moderator"
    return "resident"


async def _recipients(ctx: Context, proposal: Proposal) -> list[str]:
    """One account per person concerned (author, followers, supporters), the actor left out:
    the account each used for the proposal, so that they hear of it where they are."""
    assert proposal.id is not None
    chosen: dict[int, str] = {proposal.author_person_id: proposal.author_account_key}
    for table in (ProposalFollow, ProposalSupport):
        rows = await ctx.session.execute(
            select(table.person_id, table.account_key)
            .where(col(table.proposal_id) == proposal.id)
            .order_by(col(table.created_at))
        )
        for person_id, account_key in rows.all():
            chosen.setdefault(person_id, account_key)
    chosen.pop(ctx.person.id or -1, None)
    return list(chosen.values())


async def notify(ctx: Context, proposal: Proposal, message: Callable[[Translator], str]) -> int:
    """Tell everyone concerned by ``proposal`` (once each, privately, each in the language
    they chose with /langue, else the town's); returns how many."""
    accounts = await _recipients(ctx, proposal)
    choices = await ctx.memo.get("language", None, lambda: repository.languages(ctx.session))
    for account_key in accounts:
        platform, _, user_id = account_key.partition(":")
        language = choices.get(("account", account_key)) or ctx.settings.language
        ctx.send(
            SendMessage(
                chat=direct_chat(platform, user_id),
                content=FormattedText.plain(message(Translator(language))),
            )
        )
    return len(accounts)


def _step(t: Translator, proposal: Proposal) -> str:
    """ "Proposal #12 “title”: accepted." in ``t``'s language."""
    return t.t(
        "Proposal #{id} “{title}”: {status}.",
        id=proposal.id,
        title=proposal.title,
        status=_label(t, proposal.status),
    )


async def _refresh_post(ctx: Context, proposal: Proposal) -> None:
    """The published post shows the proposal as it is now."""
    if proposal.published_at is None:
        return
    await ctx.edit_post(
        post_key(proposal.id or 0),
        render(_town(ctx), proposal, ctx.settings),
        buttons=act_buttons(_town(ctx), proposal),
    )


def _town(ctx: Context) -> Translator:
    """Public posts are written in the town's language, whoever triggered them."""
    return Translator(ctx.settings.language)


# -- proposing ----------------------------------------------------------------------------


async def propose(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """/proposer: open the proposal form."""
    await ctx.open_form(proposal_form(ctx.settings))
    return []


@dataclass(frozen=True, slots=True)
class Similar:
    proposal_id: int
    title: str
    score: float


def _lemmas(doc: Any) -> set[str]:
    return {
        _fold(token.lemma_)
        for token in doc
        if token.is_alpha and not token.is_stop and len(token.text) > 2
    }


async def similar_proposals(ctx: Context, title: str, description: str) -> list[Similar]:
    """The closest visible proposals, by French lemmas in common (stop words left out)."""
    rows = (
        await ctx.session.execute(
            select(Proposal.id, Proposal.title, Proposal.description).where(
                col(Proposal.status).in_([str(s) for s in VISIBLE - {Status.WITHDRAWN}])
            )
        )
    ).all()
    if not rows:
        return []
    docs = await ctx.nlp.analyse(
        [f"{title}. {description}", *(f"{row.title}. {row.description}" for row in rows)]
    )
    mine = _lemmas(docs[0])
    found: list[Similar] = []
    for row, doc in zip(rows, docs[1:], strict=True):
        theirs = _lemmas(doc)
        union = mine | theirs
        score = len(mine & theirs) / len(union) if union else 0.0
        if score >= SIMILAR_FROM and len(mine & theirs) >= 2:
            found.append(Similar(row.id, row.title, score))
    found.sort(key=lambda s: (-s.score, s.proposal_id))
    return found[:SIMILAR_SHOWN]


async def submit_form(ctx: Context, filled: Filled) -> Sequence[Action]:
    """The proposal form is filled in: keep it as a draft and show similar proposals."""
    values = filled.values
    now = ctx.now()
    assert ctx.person.id is not None
    proposal = Proposal(
        author_person_id=ctx.person.id,
        author_account_key=ctx.person.account_key,
        origin_chat_key=str(ctx.event.chat),
        title=str(values["title"]),
        description=str(values["description"]),
        neighbourhood=chosen_name(values["neighbourhood"], ctx.settings.neighbourhoods()),
        theme=chosen_name(values["theme"], ctx.settings.proposals.themes),
        residents_bring=str(values["residents_bring"]),
        town_asked=str(values["town_asked"]),
        budget_euros=values["budget"] if isinstance(values.get("budget"), int) else None,  # type: ignore[arg-type]
        status=str(Status.DRAFT),
        created_at=now,
        updated_at=now,
    )
    ctx.session.add(proposal)
    await ctx.session.flush()
    assert proposal.id is not None
    ctx.session.add(
        ProposalEvent(
            proposal_id=proposal.id,
            at=now,
            kind="created",
            status=proposal.status,
            by_role="author",
        )
    )
    similar = await similar_proposals(ctx, proposal.title, proposal.description)
    lines = [render(ctx, proposal, ctx.settings), ""]
    buttons: list[tuple[Button, ...]] = []
    if similar:
        lines.append(
            ctx.t("Similar proposals already exist; you may support one instead of yours:")
        )
        for found in similar:
            lines.append(f"• #{found.proposal_id} {found.title}")
            buttons.append(
                (
                    Button(
                        ctx.t("Support #{id}", id=found.proposal_id),
                        ACT_BUTTON.build(id=found.proposal_id, do="support"),
                    ),
                )
            )
    lines.append(ctx.t("Send it to the moderators?"))
    buttons.append(
        (
            Button(ctx.t("Submit"), DRAFT_BUTTON.build(id=proposal.id, do="submit")),
            Button(ctx.t("Discard"), DRAFT_BUTTON.build(id=proposal.id, do="discard")),
        )
    )
    return [ctx.reply("\n".join(lines), buttons=tuple(buttons))]


async def draft_decision(ctx: Context, press: Press) -> str | None:
    """The author's Submit / Discard under their draft."""
    proposal_id = int(press.values["id"])
    proposal = await _load(ctx, proposal_id, lock=True)
    if proposal is None or proposal.author_person_id != ctx.person.id:
        return ctx.t("Only the author can decide on this draft.")
    if press.values["do"] == "discard":
        # A discarded draft was never submitted: nothing of it is kept.
        if proposal.status != Status.DRAFT:
            return ctx.t("This draft was already decided on.")
        await ctx.session.execute(
            sa.delete(ProposalEvent).where(col(ProposalEvent.proposal_id) == proposal_id)
        )
        gone = await ctx.session.execute(
            sa.delete(Proposal).where(
                col(Proposal.id) == proposal_id, col(Proposal.status) == str(Status.DRAFT)
            )
        )
        if rowcount(gone) != 1:
            return ctx.t("This draft was already decided on.")
        return ctx.t("Draft discarded.")
    moved = await _move(
        ctx, proposal_id, [Status.DRAFT], Status.SUBMITTED, by_role="author", submitted_at=ctx.now()
    )
    if moved is None:
        return ctx.t("This draft was already decided on.")
    town = _town(ctx)
    body = "\n".join(
        [
            town.t("Proposal #{id} awaits moderation.", id=proposal_id),
            render(town, moved, ctx.settings),
        ]
    )
    buttons = (
        (
            Button(town.t("Publish"), REVIEW_BUTTON.build(id=proposal_id, do="approve")),
            Button(town.t("Refuse"), REVIEW_BUTTON.build(id=proposal_id, do="refuse")),
        ),
    )
    chats = moderation_chats(ctx)
    for chat in chats:
        ctx.post(review_key(proposal_id), chat, body, buttons=buttons)
    if not chats:
        logger.warning("proposal %s submitted but no moderation channel is configured", proposal_id)
    ctx.send(
        ctx.reply(
            ctx.t(
                "Thank you! Proposal #{id} was sent to the moderators; you will be told of "
                "their decision.",
                id=proposal_id,
            )
        )
    )
    return ctx.t("Submitted.")


# -- moderation ---------------------------------------------------------------------------


async def review_decision(ctx: Context, press: Press) -> str | None:
    """A moderator's Publish / Refuse under a submitted proposal."""
    if not ctx.is_moderator():
        return ctx.t("Only moderators can publish or refuse a proposal.")
    proposal_id = int(press.values["id"])
    if press.values["do"] == "refuse":
        proposal = await _load(ctx, proposal_id)
        if proposal is None or proposal.status != Status.SUBMITTED:
            return ctx.t("This proposal was already decided on.")
        # The form's question does not name the proposal: say which one it is about.
        ctx.send(ctx.reply(ctx.t("Refusing proposal #{id}: give the reason.", id=proposal_id)))
        await ctx.open_form(REFUSAL_FORM, data={"proposal": proposal_id})
        return None
    return await publish(ctx, proposal_id)


async def publish(ctx: Context, proposal_id: int) -> str:
    """Publish a submitted proposal in the proposals channels, with its buttons."""
    now = ctx.now()
    proposal = await _move(
        ctx,
        proposal_id,
        [Status.SUBMITTED],
        Status.PUBLISHED,
        by_role="moderator",
        published_at=now,
    )
    if proposal is None:
        return ctx.t("This proposal was already decided on.")
    town = _town(ctx)
    for chat in proposals_chats(ctx, proposal):
        ctx.post(
            post_key(proposal_id),
            chat,
            render(town, proposal, ctx.settings),
            buttons=act_buttons(town, proposal),
        )
    # Its own discussion: a Discord thread, a Telegram forum topic, else the replies to the
    # post; the bridge links them like any two chats.
    await ctx.open_thread(
        post_key(proposal_id),
        town.t("Proposal #{id} — {title}", id=proposal_id, title=proposal.title),
    )
    await ctx.edit_post(
        review_key(proposal_id),
        town.t("Proposal #{id} published.", id=proposal_id),
        buttons=(),
    )
    await notify(
        ctx,
        proposal,
        lambda t: t.t(
            "Your proposal #{id} “{title}” is published: residents can now support it.",
            id=proposal_id,
            title=proposal.title,
        ),
    )
    return ctx.t("Published.")


async def refusal_form(ctx: Context, filled: Filled) -> Sequence[Action]:
    """The moderator gave the reason for refusing a proposal."""
    if not ctx.is_moderator():
        return [ctx.reply(ctx.t("Only moderators can publish or refuse a proposal."))]
    proposal_id = int(str(filled.data.get("proposal", 0)))
    reason = str(filled.values["reason"])
    proposal = await _move(
        ctx,
        proposal_id,
        [Status.SUBMITTED],
        Status.REFUSED,
        by_role="moderator",
        note=reason,
        refusal_reason=reason,
    )
    if proposal is None:
        return [ctx.reply(ctx.t("This proposal was already decided on."))]
    town = _town(ctx)
    await ctx.edit_post(
        review_key(proposal_id),
        town.t("Proposal #{id} refused: {reason}", id=proposal_id, reason=reason),
        buttons=(),
    )
    await notify(
        ctx,
        proposal,
        lambda t: t.t(
            "Your proposal #{id} “{title}” was not published. The moderators' reason: {reason}",
            id=proposal_id,
            title=proposal.title,
            reason=reason,
        ),
    )
    return [ctx.reply(ctx.t("Proposal #{id} refused; its author is told why.", id=proposal_id))]


# -- supports -----------------------------------------------------------------------------


async def act(ctx: Context, press: Press) -> str | None:
    """Soutenir / Suivre under a published proposal."""
    proposal_id = int(press.values["id"])
    if press.values["do"] == "follow":
        return await follow(ctx, proposal_id)
    return await support(ctx, proposal_id)


async def support(ctx: Context, proposal_id: int) -> str:
    """Count this person's support once, whichever account or platform it comes from."""
    proposal = await _load(ctx, proposal_id)
    if proposal is None or not is_public(proposal):
        return ctx.t("This proposal does not exist.")
    if proposal.status not in SUPPORTABLE:
        return ctx.t(
            "This proposal no longer takes supports ({status}).",
            status=_label(ctx, proposal.status),
        )
    assert ctx.person.id is not None
    if proposal.author_person_id == ctx.person.id:
        return ctx.t("You are the author: your support is already counted in your proposal.")
    inserted = await insert_ignore(
        ctx.session,
        ProposalSupport,
        [
            {
                "proposal_id": proposal_id,
                "person_id": ctx.person.id,
                "account_key": ctx.person.account_key,
                "created_at": ctx.now(),
            }
        ],
        conflict=["proposal_id", "person_id"],
    )
    # One row: its count says whether this person's support is new (another person's
    # support landing meanwhile must not make a repeated press look new).
    if not rowcount(inserted):
        return ctx.t("You already support this proposal.")
    # supports + 1, not a recount: two supports at once on PostgreSQL each see only what was
    # committed when their statement began; the row lock of this UPDATE orders them.
    await ctx.session.execute(
        sa.update(Proposal)
        .where(col(Proposal.id) == proposal_id)
        .values(supports=col(Proposal.supports) + 1)
    )
    proposal = await _load(ctx, proposal_id)
    assert proposal is not None
    threshold = ctx.settings.proposals.support_threshold
    if proposal.status == Status.PUBLISHED and proposal.supports >= threshold:
        moved = await _move(ctx, proposal_id, [Status.PUBLISHED], Status.COUNCIL, by_role="bot")
        if moved is not None:
            proposal = moved
            await _to_council(ctx, proposal)
    await _refresh_post(ctx, proposal)
    return ctx.t("Thank you for your support ({n}).", n=proposal.supports)


async def recount(ctx: Context, proposal_ids: Sequence[int]) -> None:
    """Set each proposal's support count from its rows (after a support or a merge)."""
    count = (
        select(func.count())
        .select_from(ProposalSupport)
        .where(col(ProposalSupport.proposal_id) == col(Proposal.id))
        .scalar_subquery()
    )
    await ctx.session.execute(
        sa.update(Proposal).where(col(Proposal.id).in_(list(proposal_ids))).values(supports=count)
    )


async def _to_council(ctx: Context, proposal: Proposal) -> None:
    """Threshold reached: the council's staff are told, and everyone concerned."""
    town = _town(ctx)

    def text(t: Translator) -> str:
        return t.t(
            "Proposal #{id} “{title}” reached {n} supports: it goes to the council, whose answer "
            "will be shared here.",
            id=proposal.id,
            title=proposal.title,
            n=proposal.supports,
        )

    for chat in moderation_chats(ctx):
        ctx.send(
            SendMessage(
                chat=chat,
                content=FormattedText.plain(
                    town.t(
                        "Proposal #{id} awaits the council's answer: /repondre {id} etude, "
                        "/repondre {id} acceptee or /repondre {id} refusee <answer or template>.",
                        id=proposal.id,
                    )
                ),
            )
        )
    await notify(ctx, proposal, text)


async def follow(ctx: Context, proposal_id: int) -> str:
    """Follow a proposal (or stop following it): its changes come privately."""
    proposal = await _load(ctx, proposal_id)
    if proposal is None or not is_public(proposal):
        return ctx.t("This proposal does not exist.")
    assert ctx.person.id is not None
    removed = await ctx.session.execute(
        sa.delete(ProposalFollow).where(
            col(ProposalFollow.proposal_id) == proposal_id,
            col(ProposalFollow.person_id) == ctx.person.id,
        )
    )
    if rowcount(removed):
        return ctx.t("You no longer follow proposal #{id}.", id=proposal_id)
    await insert_ignore(
        ctx.session,
        ProposalFollow,
        [
            {
                "proposal_id": proposal_id,
                "person_id": ctx.person.id,
                "account_key": ctx.person.account_key,
                "created_at": ctx.now(),
            }
        ],
        conflict=["proposal_id", "person_id"],
    )
    return ctx.t(
        "You follow proposal #{id}: its news will come to you privately "
        "(on Telegram, write /start to the bot once).",
        id=proposal_id,
    )


# -- the council's answer -----------------------------------------------------------------

DECISIONS: dict[str, Status] = {
    "etude": Status.STUDY,
    "acceptee": Status.ACCEPTED,
    "refusee": Status.DECLINED,
}


async def answer(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """/repondre N etude|acceptee|refusee [answer or template]: the council's official answer."""
    usage = ctx.t(
        "Usage: /repondre <number> etude|acceptee|refusee [official answer or template name]. "
        "Templates: {names}",
        names=", ".join(sorted(ctx.settings.proposals.answer_templates)) or "-",
    )
    proposal_id, rest = leading_number(event.args)
    word, _, text = rest.partition(" ")
    decision = DECISIONS.get(_fold(word).replace("é", "e"))
    if proposal_id is None or decision is None:
        return [ctx.reply(usage)]
    proposal = await _load(ctx, proposal_id)
    if proposal is None or not is_public(proposal):
        return [ctx.reply(ctx.t("There is no proposal #{id}.", id=proposal_id))]
    if proposal.status not in ANSWERABLE:
        return [
            ctx.reply(
                ctx.t(
                    "Proposal #{id} cannot be answered now ({status}).",
                    id=proposal_id,
                    status=_label(ctx, proposal.status),
                )
            )
        ]
    text = ctx.settings.proposals.answer_templates.get(text.strip().casefold(), text.strip())
    if decision == Status.ACCEPTED:
        await ctx.open_form(ACCEPT_FORM, data={"proposal": proposal_id})
        return []
    if decision == Status.DECLINED and len(text) < 10:
        return [
            ctx.reply(
                ctx.t(
                    "A refusal needs the official answer (at least 10 characters) or a "
                    "template name."
                )
            ),
            ctx.reply(usage),
        ]
    return await _answered(ctx, proposal_id, decision, text or None, None, None)


async def accept_form(ctx: Context, filled: Filled) -> Sequence[Action]:
    """The council's acceptance, with what the town brings and a planned date."""
    proposal_id = int(str(filled.data.get("proposal", 0)))
    values = filled.values
    return await _answered(
        ctx,
        proposal_id,
        Status.ACCEPTED,
        str(values["answer"]),
        str(values["town_brings"]),
        str(values["planned_for"]),
    )


async def _answered(
    ctx: Context,
    proposal_id: int,
    decision: Status,
    text: str | None,
    town_brings: str | None,
    planned_for: str | None,
) -> Sequence[Action]:
    if not ctx.has_role(Role.COUNCIL):
        return [ctx.reply(ctx.t("Only council staff can answer a proposal."))]
    values: dict[str, object] = {"answered_at": ctx.now()}
    if text:
        values["official_answer"] = text
    if town_brings:
        values["town_brings"] = town_brings
    if planned_for:
        values["planned_for"] = planned_for
    allowed = ANSWERABLE - {Status.STUDY} if decision == Status.STUDY else ANSWERABLE
    proposal = await _move(
        ctx, proposal_id, allowed, decision, by_role="council", note=text, **values
    )
    if proposal is None:
        return [ctx.reply(ctx.t("This proposal was already decided on."))]
    await _refresh_post(ctx, proposal)

    def news(t: Translator) -> str:
        lines = [_step(t, proposal)]
        if text:
            lines.append(t.t("Official answer of the town: {text}", text=text))
        if town_brings:
            lines.append(t.t("What the town brings: {text}", text=town_brings))
        if planned_for:
            lines.append(t.t("Planned for: {when}", when=planned_for))
        return "\n".join(lines)

    sent = await notify(ctx, proposal, news)
    return [
        ctx.reply(
            ctx.tn(
                "Answer recorded for proposal #{id}; {n} person told.",
                "Answer recorded for proposal #{id}; {n} people told.",
                sent,
                id=proposal_id,
            )
        )
    ]


PROGRESS: dict[str, tuple[frozenset[Status], Status]] = {
    "en_cours": (frozenset({Status.ACCEPTED}), Status.IN_PROGRESS),
    "encours": (frozenset({Status.ACCEPTED}), Status.IN_PROGRESS),
    "realisee": (frozenset({Status.IN_PROGRESS}), Status.DONE),
}


async def progress(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """/avancement N en_cours|realisee [note]: an accepted proposal is carried out."""
    proposal_id, rest = leading_number(event.args)
    word, _, note = rest.partition(" ")
    step = PROGRESS.get(_fold(word))
    if proposal_id is None or step is None:
        return [ctx.reply(ctx.t("Usage: /avancement <number> en_cours|realisee [note]"))]
    if not ctx.has_role(Role.COUNCIL):
        return [ctx.reply(ctx.t("Only council staff can answer a proposal."))]
    allowed, to = step
    note = note.strip()
    if to == Status.DONE and len(note) < 10:
        return [ctx.reply(ctx.t("A closing note is needed (at least 10 characters)."))]
    values: dict[str, object] = {}
    if to == Status.DONE:
        values = {"closing_note": note, "closed_at": ctx.now()}
    proposal = await _move(
        ctx, proposal_id, allowed, to, by_role="council", note=note or None, **values
    )
    if proposal is None:
        current = await _load(ctx, proposal_id)
        if current is None or not is_public(current):
            return [ctx.reply(ctx.t("There is no proposal #{id}.", id=proposal_id))]
        return [
            ctx.reply(
                ctx.t(
                    "Proposal #{id} cannot go there from where it stands ({status}).",
                    id=proposal_id,
                    status=_label(ctx, current.status),
                )
            )
        ]
    await _refresh_post(ctx, proposal)

    def news(t: Translator) -> str:
        return "\n".join([_step(t, proposal), *([note] if note else [])])

    sent = await notify(ctx, proposal, news)
    told = ctx.tn(
        "Proposal #{id}: {n} person told.", "Proposal #{id}: {n} people told.", sent, id=proposal_id
    )
    if to != Status.DONE:
        return [ctx.reply(told)]
    # Named, so that a photo sent in answer to it is known to be this proposal's.
    ctx.post(
        photo_key(proposal_id),
        ctx.event.chat,
        told + "\n" + ctx.t("To add a photo of the result, answer this message with the photo."),
    )
    return []


PHOTO_PREFIX = "proposal-photo:"


def photo_key(proposal_id: int) -> str:
    return f"{PHOTO_PREFIX}{proposal_id}"


async def closing_photo(ctx: Context, event: MessageReceived) -> Sequence[Action]:
    """A photo sent in answer to the "carried out" message: shown under the proposal."""
    photos = tuple(a for a in event.attachments if a.kind == "photo")
    if not event.reply_to or not photos:
        return []
    rows = await ctx.session.execute(
        select(NamedPost.key, NamedPost.message_ids).where(
            col(NamedPost.chat_key) == str(event.chat),
            col(NamedPost.key).startswith(PHOTO_PREFIX),
        )
    )
    key = next((k for k, ids in rows.all() if event.reply_to in ids), None)
    if key is None:
        return []
    if not ctx.has_role(Role.COUNCIL):
        return [ctx.reply(ctx.t("Only council staff can answer a proposal."))]
    proposal_id = int(key.removeprefix(PHOTO_PREFIX))
    proposal = await _load(ctx, proposal_id)
    if proposal is None or proposal.status != Status.DONE:
        return [ctx.reply(ctx.t("This proposal was already decided on."))]
    chats = (
        await ctx.session.execute(
            select(NamedPost.chat_key).where(col(NamedPost.key) == post_key(proposal_id))
        )
    ).scalars()
    town = _town(ctx)
    caption = town.t(
        "Proposal #{id} “{title}” carried out: the result.", id=proposal_id, title=proposal.title
    )
    for chat_key in chats:
        ctx.send(
            SendMessage(
                chat=parse_chat_key(chat_key),
                content=FormattedText.plain(caption),
                # The photo is fetched from where the staff member sent it.
                origin=MessageRef(event.chat, event.message_id),
                attachments=photos[:1],
            )
        )
    ctx.session.add(
        ProposalEvent(
            proposal_id=proposal_id,
            at=ctx.now(),
            kind="photo",
            status=proposal.status,
            by_role="council",
        )
    )
    return [ctx.reply(ctx.t("Photo added to proposal #{id}.", id=proposal_id))]


# -- the author ---------------------------------------------------------------------------


async def withdraw(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """/retirer N: the author withdraws their proposal before the council's answer."""
    proposal_id, _ = leading_number(event.args)
    if proposal_id is None:
        return [ctx.reply(ctx.t("Usage: /retirer <number>"))]
    proposal = await _load(ctx, proposal_id)
    if proposal is None or proposal.author_person_id != ctx.person.id:
        return [ctx.reply(ctx.t("Only the author can withdraw proposal #{id}.", id=proposal_id))]
    moved = await _move(ctx, proposal_id, WITHDRAWABLE, Status.WITHDRAWN, by_role="author")
    if moved is None:
        return [
            ctx.reply(
                ctx.t(
                    "Proposal #{id} can no longer be withdrawn ({status}).",
                    id=proposal_id,
                    status=_label(ctx, proposal.status),
                )
            )
        ]
    await _refresh_post(ctx, moved)
    if moved.submitted_at is not None and moved.published_at is None:
        await ctx.edit_post(
            review_key(proposal_id),
            _town(ctx).t("Proposal #{id} withdrawn by its author.", id=proposal_id),
            buttons=(),
        )
    await notify(
        ctx,
        moved,
        lambda t: t.t(
            "Proposal #{id} “{title}” was withdrawn by its author.",
            id=proposal_id,
            title=moved.title,
        ),
    )
    return [ctx.reply(ctx.t("Proposal #{id} withdrawn.", id=proposal_id))]


async def post_update(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """/nouvelles N text: the author (every few days) or staff (any time) writes to
    everyone who supports or follows the proposal."""
    proposal_id, text = leading_number(event.args)
    if proposal_id is None or len(text) < 10:
        return [ctx.reply(ctx.t("Usage: /nouvelles <number> <news, at least 10 characters>"))]
    if len(text) > 2000:
        return [
            ctx.reply(
                ctx.t("Too long: at most {n} characters (you wrote {m}).", n=2000, m=len(text))
            )
        ]
    proposal = await _load(ctx, proposal_id)
    if proposal is None or not is_public(proposal):
        return [ctx.reply(ctx.t("There is no proposal #{id}.", id=proposal_id))]
    official = ctx.is_moderator() and proposal.author_person_id != ctx.person.id
    if not official and proposal.author_person_id != ctx.person.id:
        return [
            ctx.reply(
                ctx.t("Only the author or staff can post news of proposal #{id}.", id=proposal_id)
            )
        ]
    now = ctx.now()
    if not official:
        days = ctx.settings.proposals.author_update_days
        last = proposal.last_author_update_at
        if last is not None and now - last < timedelta(days=days):
            return [
                ctx.reply(
                    ctx.tn(
                        "You may post news at most once a day.",
                        "You may post news at most once every {n} days.",
                        days,
                    )
                )
            ]
        # Conditional: the same news sent twice at once goes out once.
        updated = await ctx.session.execute(
            sa.update(Proposal)
            .where(
                col(Proposal.id) == proposal_id,
                col(Proposal.last_author_update_at).is_(None)
                if last is None
                else col(Proposal.last_author_update_at) == last,
            )
            .values(last_author_update_at=now)
        )
        if rowcount(updated) != 1:
            return [ctx.reply(ctx.t("Your news was already sent."))]
    kind = "official_update" if official else "update"
    ctx.session.add(
        ProposalEvent(
            proposal_id=proposal_id,
            at=now,
            kind=kind,
            status=proposal.status,
            by_role="council"
            if official and ctx.has_role(Role.COUNCIL)
            else _role_of(ctx, proposal),
            note=text,
        )
    )

    def news(t: Translator) -> str:
        header = (
            t.t("Official news of proposal #{id} “{title}”:", id=proposal_id, title=proposal.title)
            if official
            else t.t(
                "News from the author of proposal #{id} “{title}”:",
                id=proposal_id,
                title=proposal.title,
            )
        )
        return f"{header}\n{text}"

    sent = await notify(ctx, proposal, news)
    return [ctx.reply(ctx.tn("News sent to {n} person.", "News sent to {n} people.", sent))]


# -- finding proposals --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filter:
    neighbourhood: str | None = None
    theme: str | None = None
    status: Status | None = None

    def encode(self, settings: Settings) -> str:
        """A short form for a button id: indexes in the settings' lists."""
        n = settings.neighbourhoods().index(self.neighbourhood) if self.neighbourhood else -1
        t = settings.proposals.themes.index(self.theme) if self.theme else -1
        s = list(Status).index(self.status) if self.status else -1
        return f"{n}.{t}.{s}"

    @classmethod
    def decode(cls, text: str, settings: Settings) -> Filter:
        try:
            n, t, s = (int(part) for part in text.split("."))
            hoods, themes, statuses = (
                settings.neighbourhoods(),
                settings.proposals.themes,
                list(Status),
            )
            return cls(
                hoods[n] if 0 <= n < len(hoods) else None,
                themes[t] if 0 <= t < len(themes) else None,
                statuses[s] if 0 <= s < len(statuses) and statuses[s] in VISIBLE else None,
            )
        except ValueError:
            return cls()


def parse_filter(args: str, settings: Settings) -> tuple[Filter, str, list[str]]:
    """Words of /propositions: a neighbourhood, a theme, a status, "populaires"; and the
    words understood as none of them."""
    words = args.split()
    sort = "new"
    hood = theme = None
    status: Status | None = None
    unknown: list[str] = []
    hoods = {_fold(n): n for n in settings.neighbourhoods()}
    themes = {_fold(t): t for t in settings.proposals.themes}
    rest = _fold(args)
    # Names of several words ("Toute la commune") first.
    for table, kind in ((hoods, "hood"), (themes, "theme")):
        for folded, name in sorted(table.items(), key=lambda item: -len(item[0])):
            if folded and folded in rest:
                if kind == "hood" and hood is None:
                    hood = name
                elif kind == "theme" and theme is None:
                    theme = name
                rest = rest.replace(folded, " ")
    for word in rest.split():
        if word in ("populaires", "populaire", "soutenues", "top"):
            sort = "top"
        elif word in ("recentes", "nouvelles", "recent"):
            sort = "new"
        elif word in STATUS_WORDS and STATUS_WORDS[word] in VISIBLE:
            status = STATUS_WORDS[word]
        else:
            unknown.append(word)
    del words
    return Filter(hood, theme, status), sort, unknown


async def _page(ctx: Context, flt: Filter, sort: str, page: int) -> tuple[list[Proposal], int, int]:
    """One page of the published proposals that match: the rows, the total, the page shown
    (a stale or forged page number shows the last page)."""
    conditions: list[sa.ColumnElement[bool]] = [col(Proposal.published_at).is_not(None)]
    if flt.neighbourhood:
        conditions.append(col(Proposal.neighbourhood) == flt.neighbourhood)
    if flt.theme:
        conditions.append(col(Proposal.theme) == flt.theme)
    if flt.status:
        conditions.append(col(Proposal.status) == str(flt.status))
    total = int(
        (
            await ctx.session.execute(select(func.count()).select_from(Proposal).where(*conditions))
        ).scalar_one()
    )
    page = max(0, min(page, (total - 1) // PAGE_SIZE)) if total else 0
    order = (
        (col(Proposal.supports).desc(), col(Proposal.id).desc())
        if sort == "top"
        else (col(Proposal.id).desc(),)
    )
    rows = await ctx.session.execute(
        select(Proposal)
        .where(*conditions)
        .order_by(*order)
        .offset(page * PAGE_SIZE)
        .limit(PAGE_SIZE)
    )
    return list(rows.scalars()), total, page


def _line(t: Translator | Context, proposal: Proposal) -> str:
    return t.t(
        "#{id} {title} — {neighbourhood}, {theme} — {status} — {n} supports",
        id=proposal.id,
        title=proposal.title,
        neighbourhood=proposal.neighbourhood,
        theme=proposal.theme,
        status=_label(t, proposal.status),
        n=proposal.supports,
    )


async def _listing(
    ctx: Context, flt: Filter, sort: str, page: int
) -> tuple[str, tuple[tuple[Button, ...], ...]]:
    found, total, page = await _page(ctx, flt, sort, page)
    if total == 0:
        return ctx.t("No proposal matches. /proposer to write the first one!"), ()
    pages = (total + PAGE_SIZE - 1) // PAGE_SIZE
    lines = [ctx.t("Proposals ({n}), page {page}/{pages}:", n=total, page=page + 1, pages=pages)]
    lines.extend(_line(ctx, p) for p in found)
    lines.append(ctx.t("/proposition <number> to read one."))
    q = flt.encode(ctx.settings)
    nav: list[Button] = []
    if page > 0:
        nav.append(Button(ctx.t("◀ Previous"), LIST_BUTTON.build(page=page - 1, sort=sort, q=q)))
    if page + 1 < pages:
        nav.append(Button(ctx.t("Next ▶"), LIST_BUTTON.build(page=page + 1, sort=sort, q=q)))
    other = "top" if sort == "new" else "new"
    switch = Button(
        ctx.t("Most supported first") if other == "top" else ctx.t("Newest first"),
        LIST_BUTTON.build(page=0, sort=other, q=q),
    )
    rows: list[tuple[Button, ...]] = [tuple(nav)] if nav else []
    rows.append((switch,))
    return "\n".join(lines), tuple(rows)


async def list_proposals(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """/propositions [neighbourhood] [theme] [status] [populaires]: browse the proposals."""
    flt, sort, unknown = parse_filter(event.args, ctx.settings)
    text, buttons = await _listing(ctx, flt, sort, 0)
    if unknown:
        text = (
            ctx.t(
                "Not understood: {words}. Filters: a neighbourhood ({hoods}), a theme, a status "
                "(publiee, conseil, etude, acceptee, en_cours, realisee…), populaires.",
                words=" ".join(unknown),
                hoods=", ".join(ctx.settings.neighbourhoods()),
            )
            + "\n"
            + text
        )
    return [ctx.reply(text, buttons=buttons)]


async def list_page(ctx: Context, press: Press) -> str | None:
    """The page buttons under /propositions."""
    flt = Filter.decode(str(press.values["q"]), ctx.settings)
    text, buttons = await _listing(
        ctx, flt, str(press.values["sort"]), max(0, int(press.values["page"]))
    )
    ctx.send(SendMessage(chat=press.event.chat, content=FormattedText.plain(text), buttons=buttons))
    return None


async def show(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """/proposition N: one proposal with its history."""
    proposal_id, _ = leading_number(event.args)
    if proposal_id is None:
        return [ctx.reply(ctx.t("Usage: /proposition <number>"))]
    proposal = await _load(ctx, proposal_id)
    mine = proposal is not None and proposal.author_person_id == ctx.person.id
    # Moderators read what awaits their review; a draft is its author's alone.
    reviewing = proposal is not None and proposal.status == Status.SUBMITTED and ctx.is_moderator()
    if proposal is None or (not is_public(proposal) and not mine and not reviewing):
        return [ctx.reply(ctx.t("There is no proposal #{id}.", id=proposal_id))]
    history = (
        await ctx.session.execute(
            select(ProposalEvent)
            .where(col(ProposalEvent.proposal_id) == proposal_id)
            .order_by(col(ProposalEvent.at), col(ProposalEvent.id))
        )
    ).scalars()
    tz = ctx.settings.tz
    lines = [render(ctx, proposal, ctx.settings), "", ctx.t("History:")]
    for step in history:
        when = step.at.astimezone(tz).strftime("%d/%m/%Y")
        if step.kind in ("update", "official_update"):
            what = ctx.t("news")
        elif step.kind == "photo":
            what = ctx.t("photo of the result")
        else:
            what = _label(ctx, step.status)
        # An author's news went privately, unmoderated: its words are not shown here.
        note = step.note if step.note and step.kind != "update" else None
        lines.append(f"• {when} — {what}" + (f" — {note[:200]}" if note else ""))
    buttons = act_buttons(ctx, proposal) if is_public(proposal) else ()
    return [ctx.reply("\n".join(lines), buttons=buttons)]


async def mine(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """/mes_propositions: the proposals this person wrote."""
    rows = (
        await ctx.session.execute(
            select(Proposal)
            .where(
                col(Proposal.author_person_id) == ctx.person.id,
                col(Proposal.status) != str(Status.DRAFT),
            )
            .order_by(col(Proposal.id).desc())
            .limit(20)
        )
    ).scalars()
    lines = [_line(ctx, p) for p in rows]
    if not lines:
        return [ctx.reply(ctx.t("You have not written any proposal yet. /proposer to start."))]
    return [ctx.reply("\n".join([ctx.t("Your proposals:"), *lines]))]
