"""Polls of the forum's own: buttons on both platforms, one tally, one person one vote.

Kinds: one choice, several choices (with a maximum), yes / no / abstain, ranked choice (typed:
``/classer N 3 1 2``, counted by instant runoff) and date finding (yes / maybe / no for each
slot, Framadate style). A ballot says what was chosen, never by whom (``poll_ballot``); who
voted is ``poll_voter``, one row per person whatever account or platform, and points to its
ballot only in a poll that is not anonymous. An anonymous vote is therefore final: nothing
could find the ballot again to change it, which is the point. Several choices and date
finding, which are voted one press at a time, cannot be anonymous.

Live counts edit the poll's post at most every ``REFRESH`` (a due time kept at the earliest
time asked, so a rush of votes gives one edit); the close is a due time too, and the result
(with a bar chart) is posted once, whatever restarts happen in between.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from babel.dates import format_datetime
from sqlmodel import col, select

from bot import forms
from bot.buttons import ButtonTemplate
from bot.charts import bar_chart_png
from bot.commands import leading_number
from bot.config import WHOLE_TOWN, Settings
from bot.dispatcher import Filled, Press
from bot.events import (
    Action,
    Button,
    ChatRef,
    CommandReceived,
    SendFile,
    SendMessage,
    TimeCame,
)
from bot.forms import (
    TOO_LONG,
    Field,
    FieldError,
    FormSpec,
    chosen_name,
    integer_between,
    named_choices,
)
from bot.handling import Context
from bot.i18n import N_, Translator
from bot.outbox import parse_chat_key
from bot.richtext import FormattedText
from handlers import bridge
from handlers.polls_tally import (
    Runoff,
    SlotTally,
    bars,
    count_choices,
    date_finding,
    instant_runoff,
)
from storage.db import insert_ignore, rowcount
from storage.models import NamedPost, Poll, PollBallot, PollVoter

logger = logging.getLogger(__name__)

KINDS = ("single", "multiple", "yesno", "ranked", "dates")
KIND_LABELS = {
    "single": N_("One choice"),
    "multiple": N_("Several choices"),
    "yesno": N_("Yes / no / abstain"),
    "ranked": N_("Ranked choice"),
    "dates": N_("Find a date"),
}
# Voted one press at a time, so the ballot changes as the voter goes: never anonymous.
NOT_ANONYMOUS = frozenset({"multiple", "dates"})
YES_NO = (N_("Yes"), N_("No"), N_("Abstain"))
SLOT_ANSWERS = {"y": "yes", "m": "maybe", "n": "no"}

MAX_OPTIONS = 10
# Discord shows at most 25 buttons under a message: three per slot.
MAX_SLOTS = 8
MAX_OPTION_LENGTH = 80
REFRESH = timedelta(seconds=5)
CLOSE = "poll_close"
REFRESH_KIND = "poll_refresh"

OPTION_BUTTON = ButtonTemplate("poll:{id:int}:o:{n:int}")
SLOT_BUTTON = ButtonTemplate("poll:{id:int}:d:{n:int}:{a:choice(y|m|n)}")

ALL = "all"


def poll_form(settings: Settings) -> FormSpec:
    """The /sondage form, with the town's neighbourhoods as electorates."""
    # "Every resident" already says the whole town.
    hoods = [n for n in settings.neighbourhoods() if n != WHOLE_TOWN]
    return FormSpec(
        "poll",
        N_("New poll"),
        (
            Field("question", N_("Question"), min_length=5, max_length=300),
            Field("kind", N_("Kind of poll"), choices=tuple((KIND_LABELS[k], k) for k in KINDS)),
            Field(
                "options",
                N_("Options, one per line (dates: « 12/01 18h », one per line; yes / no: -)"),
                long=True,
                required=False,
                max_length=1500,
                validate=_option_lines,
            ),
            Field(
                "max_choices",
                N_("Several choices: how many at most (- for no limit)"),
                required=False,
                validate=integer_between(1, MAX_OPTIONS),
            ),
            Field(
                "closes",
                N_("Closes on (e.g. « vendredi à 18h », « 15/12 20:00 », « dans 3 jours »)"),
                max_length=100,
            ),
            Field(
                "results",
                N_("Results"),
                choices=((N_("Live"), "live"), (N_("After the close"), "after")),
            ),
            Field(
                "anonymous", N_("Anonymous vote"), choices=((N_("No"), "no"), (N_("Yes"), "yes"))
            ),
            Field(
                "electorate",
                N_("Who votes"),
                choices=((N_("Every resident"), ALL), *named_choices(hoods)),
            ),
            Field(
                "change",
                N_("May voters change their vote until the close?"),
                choices=((N_("Yes"), "yes"), (N_("No"), "no")),
            ),
        ),
    )


def _option_lines(text: str) -> str:
    """Checked as the answer comes: from 2 to 10 lines, none too long (kept as text, so
    that the form can be asked again with it)."""
    lines = _distinct_lines(text)
    if not 2 <= len(lines) <= MAX_OPTIONS:
        raise FieldError(N_("Give from 2 to {n} options, one per line."), n=MAX_OPTIONS)
    longest = max(lines, key=len)
    if len(longest) > MAX_OPTION_LENGTH:
        raise FieldError(TOO_LONG, n=MAX_OPTION_LENGTH, m=len(longest))
    return "\n".join(lines)


def _distinct_lines(text: str) -> list[str]:
    """The non-blank lines, each once: "Samedi" and "samedi " are one option."""
    kept: dict[str, str] = {}
    for line in text.splitlines():
        line = " ".join(line.split())
        if line:
            kept.setdefault(line.casefold(), line)
    return list(kept.values())


def post_key(poll_id: int) -> str:
    return f"poll:{poll_id}"


def _town(ctx: Context) -> Translator:
    return Translator(ctx.settings.language)


def _when(settings: Settings, at: datetime) -> str:
    return at.astimezone(settings.tz).strftime("%d/%m/%Y %H:%M")


async def parse_moment(text: str, settings: Settings, now: datetime) -> datetime | None:
    """A French date and time ("vendredi à 18h", "15/12 20:00") in the town's zone, aware."""

    # "18h", "18 h 30": a French time of day dateparser reads as a day or a duration.
    text = re.sub(
        r"\b(\d{1,2})\s*h\s*(\d{2})?\b",
        lambda m: f"{m[1]}:{m[2] or '00'}",
        text,
        flags=re.IGNORECASE,
    )

    def parse() -> datetime | None:
        # Imported here: dateparser compiles its language data on import (seconds), which
        # must not happen when the bot starts, only when a poll is written.
        import dateparser

        return dateparser.parse(
            text,
            languages=["fr", "en"],
            settings={
                "RELATIVE_BASE": now.astimezone(settings.tz).replace(tzinfo=None),
                "TIMEZONE": settings.timezone,
                "RETURN_AS_TIMEZONE_AWARE": True,
                "PREFER_DATES_FROM": "future",
                "DATE_ORDER": "DMY",
            },
        )

    return await asyncio.to_thread(parse)


# -- creating -----------------------------------------------------------------------------


async def open_poll_form(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """/sondage: open the poll form (moderators and staff, or everyone when allowed)."""
    if not ctx.settings.polls_by_residents and not ctx.is_moderator():
        return [ctx.reply(ctx.t("Only moderators can open a poll here."))]
    await ctx.open_form(poll_form(ctx.settings))
    return []


class _Refused(Exception):
    def __init__(self, field: str, error: FieldError) -> None:
        super().__init__(field)
        self.field = field
        self.error = error


async def _options(ctx: Context, kind: str, text: str) -> list[str]:
    """The options as stored: labels, or each date slot's start in UTC (ISO 8601)."""
    t = _town(ctx)
    if kind == "yesno":
        return [t.t(label) for label in YES_NO]
    lines = _distinct_lines(text)
    if kind == "dates":
        if not 2 <= len(lines) <= MAX_SLOTS:
            raise _Refused(
                "options", FieldError(N_("Give from 2 to {n} dates, one per line."), n=MAX_SLOTS)
            )
        slots: list[str] = []
        for line in lines:
            moment = await parse_moment(line, ctx.settings, ctx.now())
            if moment is None or moment <= ctx.now():
                raise _Refused(
                    "options",
                    FieldError(N_("“{text}” is not a date to come."), text=line[:60]),
                )
            slots.append(moment.astimezone(ctx.settings.tz).isoformat())
        slots = list(dict.fromkeys(slots))
        if len(slots) < 2:
            # Two lines for the same moment are one slot.
            raise _Refused(
                "options", FieldError(N_("Give from 2 to {n} dates, one per line."), n=MAX_SLOTS)
            )
        return slots
    if not 2 <= len(lines) <= MAX_OPTIONS:
        raise _Refused(
            "options", FieldError(N_("Give from 2 to {n} options, one per line."), n=MAX_OPTIONS)
        )
    too_long = next((line for line in lines if len(line) > MAX_OPTION_LENGTH), None)
    if too_long is not None:
        raise _Refused(
            "options",
            FieldError(
                N_("Too long: at most {n} characters (you wrote {m})."),
                n=MAX_OPTION_LENGTH,
                m=len(too_long),
            ),
        )
    return lines


async def create_from_form(ctx: Context, filled: Filled) -> Sequence[Action]:
    """The poll form is filled in: check it as a whole, then publish the poll."""
    if not ctx.settings.polls_by_residents and not ctx.is_moderator():
        return [ctx.reply(ctx.t("Only moderators can open a poll here."))]
    values = filled.values
    kind = str(values["kind"])
    try:
        options = await _options(ctx, kind, str(values.get("options") or ""))
        max_choices = values.get("max_choices")
        if kind == "multiple" and isinstance(max_choices, int) and max_choices > len(options):
            raise _Refused(
                "max_choices",
                FieldError(N_("At most {n}: there are only {n} options."), n=len(options)),
            )
        closes = await parse_moment(str(values["closes"]), ctx.settings, ctx.now())
        if closes is None:
            raise _Refused(
                "closes", FieldError(N_("This date was not understood; e.g. « 15/12 20:00 »."))
            )
        if closes <= ctx.now() + timedelta(minutes=1):
            raise _Refused("closes", FieldError(N_("The closing date must be in the future.")))
        if closes > ctx.now() + timedelta(days=366):
            raise _Refused("closes", FieldError(N_("The closing date must be within a year.")))
        anonymous = values["anonymous"] == "yes"
        if anonymous and kind in NOT_ANONYMOUS:
            raise _Refused(
                "anonymous",
                FieldError(
                    N_(
                        "An anonymous vote is cast once and for all: choose one choice, yes / "
                        "no or ranked choice, or a vote that is not anonymous."
                    )
                ),
            )
    except _Refused as refused:
        # Ask again from the refused answer, keeping every other one.
        question = await forms.start(
            ctx.session,
            poll_form(ctx.settings),
            account_key=ctx.person.account_key,
            chat_key=str(ctx.event.chat),
            now=ctx.now(),
            ttl=timedelta(minutes=ctx.settings.form_minutes),
            # A skipped answer (None) stays skipped.
            prefill={k: None if v is None else str(v) for k, v in values.items()},
            errors={refused.field: refused.error},
        )
        ctx.changed("forms")
        return [ctx.ask(question)]
    assert ctx.person.id is not None
    electorate = str(values["electorate"])
    poll = Poll(
        kind=kind,
        question=str(values["question"]),
        options=options,
        max_choices=max_choices if kind == "multiple" and isinstance(max_choices, int) else None,
        closes_at=closes,
        live_results=values["results"] == "live",
        anonymous=anonymous,
        neighbourhood=None
        if electorate == ALL
        else chosen_name(electorate, [n for n in ctx.settings.neighbourhoods() if n != WHOLE_TOWN]),
        # Several choices and dates are voted one press at a time: each press changes the
        # ballot, so they always allow it.
        allow_change=(values["change"] == "yes" or kind in NOT_ANONYMOUS) and not anonymous,
        created_by_person_id=ctx.person.id,
        origin_chat_key=str(ctx.event.chat),
        created_at=ctx.now(),
    )
    ctx.session.add(poll)
    await ctx.session.flush()
    assert poll.id is not None
    town = _town(ctx)
    for chat in await _chats(ctx, ctx.event.chat):
        ctx.post(
            post_key(poll.id),
            chat,
            render(town, poll, ctx.settings, None),
            buttons=poll_buttons(town, poll),
        )
    await ctx.schedule(f"poll-close:{poll.id}", CLOSE, poll.closes_at, subject=str(poll.id))
    return [
        ctx.reply(
            ctx.t(
                "Poll #{id} is open until {when}.",
                id=poll.id,
                when=_when(ctx.settings, poll.closes_at),
            )
        )
    ]


async def _chats(ctx: Context, origin: ChatRef) -> list[ChatRef]:
    """Where a poll is shown: where it was opened and every chat bridged with it."""
    found = [origin]
    for target in await bridge.targets(ctx, origin):
        if target.chat not in found:
            found.append(target.chat)
    return found


# -- showing ------------------------------------------------------------------------------


def _slot_label(settings: Settings, iso: str) -> str:
    """ "sam. 5 déc. 18:00": the slot in the town's zone and language (Babel's calendar)."""
    moment = datetime.fromisoformat(iso).astimezone(settings.tz)
    return format_datetime(moment, "EEE d MMM HH:mm", tzinfo=settings.tz, locale=settings.language)


def labels(poll: Poll, settings: Settings) -> list[str]:
    if poll.kind == "dates":
        return [_slot_label(settings, o) for o in poll.options]
    return list(poll.options)


def poll_buttons(t: Translator, poll: Poll) -> tuple[tuple[Button, ...], ...]:
    """The voting buttons; none for a ranked poll (typed) or once closed."""
    assert poll.id is not None
    if poll.status != "open" or poll.kind == "ranked":
        return ()
    if poll.kind == "dates":
        return tuple(
            (
                Button(f"{i + 1} ✓", SLOT_BUTTON.build(id=poll.id, n=i, a="y")),
                Button(f"{i + 1} ?", SLOT_BUTTON.build(id=poll.id, n=i, a="m")),
                Button(f"{i + 1} ✗", SLOT_BUTTON.build(id=poll.id, n=i, a="n")),
            )
            for i in range(len(poll.options))
        )
    buttons = [
        # Numbered: two long options that begin alike keep buttons told apart.
        Button(f"{i + 1}. {label}"[:40], OPTION_BUTTON.build(id=poll.id, n=i))
        for i, label in enumerate(poll.options)
    ]
    return tuple(tuple(buttons[i : i + 2]) for i in range(0, len(buttons), 2))


def render(t: Translator, poll: Poll, settings: Settings, tally: Tally | None) -> str:
    """The poll post: question, options, rules, and the counts when they may be seen."""
    lines = [t.t("Poll #{id}: {question}", id=poll.id, question=poll.question)]
    names = labels(poll, settings)
    for i, name in enumerate(names):
        lines.append(f"{i + 1}. {name}")
    rules = [t.t(KIND_LABELS[poll.kind])]
    if poll.max_choices:
        rules.append(t.t("at most {n}", n=poll.max_choices))
    if poll.anonymous:
        rules.append(t.t("anonymous"))
    if poll.neighbourhood:
        rules.append(t.t("residents of {place}", place=poll.neighbourhood))
    lines.append(" · ".join(rules))
    if poll.kind == "ranked":
        lines.append(t.t("To vote, rank the options: /classer {id} 2 1 3", id=poll.id))
    if poll.status == "open":
        lines.append(t.t("Closes on {when}.", when=_when(settings, poll.closes_at)))
    else:
        lines.append(t.t("Closed."))
    if tally is not None:
        lines.append("")
        lines.append(tally.text(t))
    elif poll.status == "open" and not poll.live_results:
        lines.append(t.t("Results after the close."))
    return "\n".join(lines)


class Tally:
    """The counts of a poll, as text and as numbers for the chart."""

    def __init__(
        self, poll: Poll, settings: Settings, ballots: list[list[Any]], voters: int
    ) -> None:
        self.poll = poll
        self.names = labels(poll, settings)
        self.voters = voters
        self.counts: list[int] = []
        self.runoff: Runoff | None = None
        self.slots: list[SlotTally] | None = None
        if poll.kind == "ranked":
            self.runoff = instant_runoff(len(self.names), ballots)
            self.counts = (
                list(self.runoff.rounds[-1].counts) if self.runoff.rounds else [0] * len(self.names)
            )
        elif poll.kind == "dates":
            self.slots = date_finding(len(self.names), ballots)
            self.counts = [slot.yes for slot in self.slots]
        else:
            self.counts = count_choices(len(self.names), ballots, max_choices=poll.max_choices)

    def text(self, t: Translator) -> str:
        lines = [t.tn("{n} voter", "{n} voters", self.voters)]
        if self.slots is not None:
            for name, slot in zip(self.names, self.slots, strict=True):
                lines.append(
                    t.t(
                        "{slot}: {yes} yes, {maybe} maybe, {no} no",
                        slot=name,
                        yes=slot.yes,
                        maybe=slot.maybe,
                        no=slot.no,
                    )
                )
            return "\n".join(lines)
        lines.append(bars(self.names, self.counts))
        if self.runoff is not None:
            for number, round_ in enumerate(self.runoff.rounds, start=1):
                counted = ", ".join(
                    f"{self.names[i]} {round_.counts[i]}" for i in round_.continuing
                )
                line = t.t("Round {n}: {counts}", n=number, counts=counted)
                if round_.eliminated is not None:
                    line += " — " + t.t("{name} eliminated", name=self.names[round_.eliminated])
                lines.append(line)
            if self.runoff.winner is not None:
                lines.append(t.t("Winner: {name}", name=self.names[self.runoff.winner]))
            elif self.runoff.tied:
                lines.append(
                    t.t(
                        "Tie: {names}. No option wins.",
                        names=", ".join(self.names[i] for i in self.runoff.tied),
                    )
                )
        return "\n".join(lines)


async def tally(ctx: Context, poll: Poll) -> Tally:
    ballots = (
        (
            await ctx.session.execute(
                select(PollBallot.choice).where(col(PollBallot.poll_id) == poll.id)
            )
        )
        .scalars()
        .all()
    )
    voters = (
        await ctx.session.execute(
            select(sa.func.count()).select_from(PollVoter).where(col(PollVoter.poll_id) == poll.id)
        )
    ).scalar_one()
    return Tally(poll, ctx.settings, [list(b) for b in ballots], int(voters))


# -- voting -------------------------------------------------------------------------------


MAX_ID = 2**31 - 1


async def _load(ctx: Context, poll_id: int, *, voting: bool = False) -> Poll | None:
    """The poll, or None (also for an id no database column can hold: a forged button)."""
    if not 1 <= poll_id <= MAX_ID:
        return None
    query = select(Poll).where(col(Poll.id) == poll_id).execution_options(populate_existing=True)
    if voting:
        # PostgreSQL: the close (an UPDATE of this row) waits for the votes in progress, so
        # a vote told "recorded" is in the posted result.
        query = query.with_for_update(read=True)
    return (await ctx.session.execute(query)).scalar_one_or_none()


async def _may_vote(ctx: Context, poll: Poll | None, chat: ChatRef) -> str | None:
    """Why this person may not vote here now, or None."""
    if poll is None:
        return ctx.t("This poll does not exist.")
    if poll.status != "open" or poll.closes_at <= ctx.now():
        return ctx.t("This poll is closed.")
    if poll.neighbourhood is not None:
        channel = ctx.channel(chat)
        if channel is None or channel.neighbourhood != poll.neighbourhood:
            return ctx.t(
                "This poll is for the residents of {place}: vote from its group.",
                place=poll.neighbourhood,
            )
    if ctx.person.id is None:
        return ctx.t("This poll does not exist.")
    return None


async def _voter(ctx: Context, poll: Poll) -> PollVoter | None:
    return (
        await ctx.session.execute(
            select(PollVoter)
            .where(col(PollVoter.poll_id) == poll.id, col(PollVoter.person_id) == ctx.person.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()


async def cast(ctx: Context, poll: Poll, change: Any) -> str:
    """Record this person's ballot: ``change(old ballot or None)`` gives the new one, or a
    refusal text. One person, one ballot, whatever account or platform they vote from."""
    assert poll.id is not None and ctx.person.id is not None
    voter = await _voter(ctx, poll)
    if voter is None:
        new = change(None)
        if isinstance(new, str):
            return new
        ballot_id = secrets.token_hex(16)
        # The voter row first: of two presses at once, only one inserts it (the other waits
        # for it on PostgreSQL, then finds it), so only one ballot is ever written.
        inserted = await insert_ignore(
            ctx.session,
            PollVoter,
            [
                {
                    "poll_id": poll.id,
                    "person_id": ctx.person.id,
                    "account_key": ctx.person.account_key,
                    "ballot_id": None if poll.anonymous else ballot_id,
                    "voted_at": None if poll.anonymous else ctx.now(),
                }
            ],
            ["poll_id", "person_id"],
        )
        if rowcount(inserted):
            ctx.session.add(PollBallot(id=ballot_id, poll_id=poll.id, choice=new))
            await _refresh_soon(ctx, poll)
            return ctx.t("Vote recorded.")
        # Another press of this person got there first (PostgreSQL let this one wait for
        # it): this press changes the ballot it wrote, as a later press would.
        voter = await _voter(ctx, poll)
        if voter is None:
            return ctx.t("Your vote is already recorded.")
    if poll.anonymous or voter.ballot_id is None:
        return ctx.t("Your vote is already recorded (an anonymous vote cannot be changed).")
    ballot = await ctx.session.get(PollBallot, voter.ballot_id)
    old = list(ballot.choice) if ballot is not None else None
    new = change(old)
    if isinstance(new, str):
        return new
    if new == old:
        return ctx.t("Your vote is already recorded.")
    if not poll.allow_change and poll.kind not in NOT_ANONYMOUS:
        # (Several choices and dates are voted one press at a time: adding one is voting.)
        return ctx.t("Your vote is already recorded; this poll does not allow changing it.")
    if ballot is None:
        ctx.session.add(PollBallot(id=voter.ballot_id, poll_id=poll.id, choice=new))
    else:
        ballot.choice = new
    voter.voted_at = ctx.now()
    await _refresh_soon(ctx, poll)
    return ctx.t("Vote changed.")


async def _refresh_soon(ctx: Context, poll: Poll) -> None:
    if poll.live_results:
        # At the earliest time asked: a rush of votes gives one edit, not one per vote.
        await ctx.schedule(
            f"poll-refresh:{poll.id}",
            REFRESH_KIND,
            REFRESH,
            subject=str(poll.id),
            keep_earlier=True,
        )


async def press_option(ctx: Context, press: Press) -> str | None:
    """An option's button: one choice, several choices (toggled), yes / no / abstain."""
    poll = await _load(ctx, int(press.values["id"]), voting=True)
    refusal = await _may_vote(ctx, poll, press.event.chat)
    if refusal is not None:
        return refusal
    assert poll is not None
    n = int(press.values["n"])
    if poll.kind not in ("single", "multiple", "yesno") or not 0 <= n < len(poll.options):
        return ctx.t("This button is no longer valid.")

    def change(old: list[Any] | None) -> list[int] | str:
        if poll.kind != "multiple":
            return [n]
        chosen = [i for i in (old or []) if isinstance(i, int) and i != n]
        if n not in (old or []):
            if poll.max_choices and len(chosen) >= poll.max_choices:
                return ctx.t(
                    "At most {n} choices: press a chosen one to take it back.", n=poll.max_choices
                )
            chosen.append(n)
        return sorted(chosen)

    return await cast(ctx, poll, change)


async def press_slot(ctx: Context, press: Press) -> str | None:
    """A date slot's yes / maybe / no."""
    poll = await _load(ctx, int(press.values["id"]), voting=True)
    refusal = await _may_vote(ctx, poll, press.event.chat)
    if refusal is not None:
        return refusal
    assert poll is not None
    n = int(press.values["n"])
    if poll.kind != "dates" or not 0 <= n < len(poll.options):
        return ctx.t("This button is no longer valid.")
    answer = SLOT_ANSWERS[str(press.values["a"])]

    def change(old: list[Any] | None) -> list[str]:
        answers = [str(a) for a in (old or [])][: len(poll.options)]
        answers += ["no"] * (len(poll.options) - len(answers))
        answers[n] = answer
        return answers

    return await cast(ctx, poll, change)


async def rank(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """/classer N 2 1 3: a ranked ballot, best first."""
    poll_id, rest = leading_number(event.args)
    if poll_id is None:
        return [ctx.reply(ctx.t("Usage: /classer <poll number> <options, best first, e.g. 2 1 3>"))]
    poll = await _load(ctx, poll_id, voting=True)
    refusal = await _may_vote(ctx, poll, event.chat)
    if refusal is not None:
        return [ctx.reply(refusal)]
    assert poll is not None
    if poll.kind != "ranked":
        return [ctx.reply(ctx.t("Poll #{id} is voted with its buttons.", id=poll_id))]
    words = rest.replace(",", " ").split()
    if not words or not all(re.fullmatch(r"[0-9]{1,2}", w) for w in words):
        return [ctx.reply(ctx.t("Usage: /classer <poll number> <options, best first, e.g. 2 1 3>"))]
    ranking = [int(w) - 1 for w in words]
    if len(set(ranking)) != len(ranking) or not all(0 <= r < len(poll.options) for r in ranking):
        return [
            ctx.reply(
                ctx.t(
                    "Give each option's number once, from 1 to {n}, best first.",
                    n=len(poll.options),
                )
            )
        ]
    return [ctx.reply(await cast(ctx, poll, lambda old: ranking))]


# -- refreshing and closing ---------------------------------------------------------------


async def refresh(ctx: Context, event: TimeCame) -> Sequence[Action]:
    """Due: show the live counts on the poll's posts."""
    poll = await _load(ctx, int(event.subject or 0))
    if poll is None or poll.status != "open" or not poll.live_results:
        return []
    town = _town(ctx)
    await ctx.edit_post(
        post_key(poll.id or 0), render(town, poll, ctx.settings, await tally(ctx, poll))
    )
    return []


async def close_due(ctx: Context, event: TimeCame) -> Sequence[Action]:
    """Due: the poll closes; its result is posted once."""
    await close(ctx, int(event.subject or 0))
    return []


async def close(ctx: Context, poll_id: int) -> bool:
    """Close the poll and post its result everywhere it was shown; False when already closed."""
    result = await ctx.session.execute(
        sa.update(Poll)
        .where(col(Poll.id) == poll_id, col(Poll.status) == "open")
        .values(status="closed", closed_at=ctx.now())
    )
    if not rowcount(result):
        return False
    poll = await _load(ctx, poll_id)
    assert poll is not None
    counted = await tally(ctx, poll)
    poll.result = {
        "voters": counted.voters,
        "counts": counted.counts,
        "rounds": [
            {"counts": list(r.counts), "eliminated": r.eliminated, "exhausted": r.exhausted}
            for r in (counted.runoff.rounds if counted.runoff else [])
        ],
        "winner": counted.runoff.winner if counted.runoff else None,
        "tied": list(counted.runoff.tied) if counted.runoff else [],
        "slots": [
            {"yes": slot.yes, "maybe": slot.maybe, "no": slot.no} for slot in counted.slots or []
        ],
    }
    await ctx.cancel_due(f"poll-refresh:{poll_id}")
    town = _town(ctx)
    await ctx.edit_post(post_key(poll_id), render(town, poll, ctx.settings, counted), buttons=())
    chart = await asyncio.to_thread(
        bar_chart_png,
        town.t("Poll #{id}: {question}", id=poll_id, question=poll.question),
        counted.names,
        counted.counts,
    )
    chats = (
        (
            await ctx.session.execute(
                select(NamedPost.chat_key).where(col(NamedPost.key) == post_key(poll_id))
            )
        )
        .scalars()
        .all()
    )
    for chat_key in chats:
        chat = parse_chat_key(chat_key)
        ctx.send(
            SendMessage(
                chat=chat,
                content=FormattedText.plain(
                    town.t("Result of poll #{id}: {question}", id=poll_id, question=poll.question)
                    + "\n"
                    + counted.text(town)
                ),
            ),
            SendFile(
                chat=chat, filename=f"sondage-{poll_id}.png", data=chart, mime_type="image/png"
            ),
        )
    return True


async def close_now(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """/cloturer N: close a poll early (its author or a moderator)."""
    poll_id, _ = leading_number(event.args)
    if poll_id is None:
        return [ctx.reply(ctx.t("Usage: /cloturer <poll number>"))]
    poll = await _load(ctx, poll_id)
    if poll is None:
        return [ctx.reply(ctx.t("This poll does not exist."))]
    if poll.created_by_person_id != ctx.person.id and not ctx.is_moderator():
        return [ctx.reply(ctx.t("Only the poll's author or a moderator can close it."))]
    if not await close(ctx, poll_id):
        return [ctx.reply(ctx.t("This poll is closed."))]
    await ctx.cancel_due(f"poll-close:{poll_id}")
    return [ctx.reply(ctx.t("Poll #{id} closed.", id=poll_id))]


async def results(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """/resultats N: the counts, when they may be seen."""
    poll_id, _ = leading_number(event.args)
    if poll_id is None:
        return [ctx.reply(ctx.t("Usage: /resultats <poll number>"))]
    poll = await _load(ctx, poll_id)
    if poll is None:
        return [ctx.reply(ctx.t("This poll does not exist."))]
    if poll.status == "open" and not poll.live_results:
        return [
            ctx.reply(
                ctx.t(
                    "The results will be shown after the close, on {when}.",
                    when=_when(ctx.settings, poll.closes_at),
                )
            )
        ]
    counted = await tally(ctx, poll)
    return [ctx.reply(render(ctx.translator, poll, ctx.settings, counted))]


async def list_polls(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """/sondages: the open polls and those closed in the last 30 days."""
    since = ctx.now() - timedelta(days=30)
    rows = (
        (
            await ctx.session.execute(
                select(Poll)
                .where(sa.or_(col(Poll.status) == "open", col(Poll.closed_at) >= since))
                .order_by(col(Poll.id).desc())
                .limit(20)
            )
        )
        .scalars()
        .all()
    )
    if not rows:
        return [ctx.reply(ctx.t("No poll at the moment."))]
    lines = [ctx.t("Polls:")]
    for poll in rows:
        state = (
            ctx.t("open until {when}", when=_when(ctx.settings, poll.closes_at))
            if poll.status == "open"
            else ctx.t("closed")
        )
        lines.append(f"#{poll.id} {poll.question} — {state}")
    lines.append(ctx.t("/resultats <number> for the results."))
    return [ctx.reply("\n".join(lines))]
