"""Forms: one definition, shown as a Discord modal or asked one question at a time.

Where a modal fits (Discord), the whole form is filled in at once and checked with
``FormSpec.clean``. Elsewhere (Telegram, the console) the bot asks one question per message;
the conversation's state lives in the ``form_session`` table so that it survives a restart,
expires when abandoned, and never mixes two forms of the same resident in the same chat.

This module only computes: the dispatcher decides when a message is an answer, and turns
``Question`` and ``Outcome`` into actions.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import select

from bot.events import Button, Form, FormField
from bot.i18n import N_
from bot.richtext.sanitizing import sanitize
from storage.db import upsert
from storage.models import FormSession

# Discord's limits for a modal and its text inputs.
MODAL_MAX_FIELDS = 5
MODAL_MAX_LENGTH = 4000
MODAL_MAX_TITLE = 45
MODAL_MAX_LABEL = 45

FORM_ID_PREFIX = "form:"

CANCEL_WORDS = frozenset({"/annuler", "/cancel", "annuler"})
SKIP_WORDS = frozenset({"-", "/passer", "/skip"})

NEEDS_ANSWER = N_("This question needs an answer.")
TOO_SHORT = N_("Too short: at least {n} characters.")
TOO_LONG = N_("Too long: at most {n} characters (you wrote {m}).")
PICK_A_BUTTON = N_("Please pick one of the buttons.")
NOT_AN_AMOUNT = N_("Please give an amount in euros, e.g. 1500.")
NOT_IN_RANGE = N_("Please give a whole number between {lo} and {hi}.")
HEADER = N_("{title} — question {step}/{total}")
LABEL = N_("{label}:")
OPTIONAL_HINT = N_("(optional answer: send - to skip)")
CANCEL_HINT = N_("/annuler to give up")


class FieldError(ValueError):
    """A refused answer; ``message`` is an English msgid filled with ``values`` when shown."""

    def __init__(self, message: str, /, **values: object) -> None:
        super().__init__(message)
        self.message = message
        self.values: dict[str, object] = dict(values)

    def __str__(self) -> str:
        return self.message.format(**self.values) if self.values else self.message

    def translated(self, t: Callable[..., str]) -> str:
        """The message in the resident's language."""
        return t(self.message, **self.values)


def _folded(text: str) -> str:
    """Case and accents set aside, spaces collapsed."""
    decomposed = unicodedata.normalize("NFKD", " ".join(text.split()).casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def choice_value(index: int, name: str) -> str:
    """A name's value in a form's choice button: its place in the list (two long names alike
    stay two), then the name without spaces or accents, short enough for a button id."""
    slug = "-".join("".join(c if c.isalnum() else " " for c in _folded(name)).split())
    return f"{index}-{slug}"[:40]


def named_choices(names: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """Choices whose labels are names from the settings (neighbourhoods, themes)."""
    return tuple((name, choice_value(i, name)) for i, name in enumerate(names))


def chosen_name(value: object, names: Sequence[str]) -> str:
    """The name a choice value of :func:`named_choices` stands for."""
    return next((n for i, n in enumerate(names) if choice_value(i, n) == value), str(value))


@dataclass(frozen=True, slots=True)
class Field:
    """One question of a form (one text box of a modal)."""

    name: str
    label: str
    long: bool = False
    required: bool = True
    min_length: int = 1
    max_length: int = 1000
    choices: tuple[tuple[str, str], ...] = ()
    validate: Callable[[str], object] | None = None
    placeholder: str | None = None
    help: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a form field needs a name")
        if not 0 <= self.min_length <= self.max_length:
            raise ValueError(f"field {self.name!r}: need 0 <= min_length <= max_length")

    def clean(self, text: str) -> object:
        """The cleaned value of ``text`` (``None`` for a blank optional field), or FieldError."""
        # A Discord modal's fields come as typed: no direction overrides or invisible
        # characters may reach a title everyone reads.
        text = sanitize(text).strip()
        if not text:
            if self.required:
                raise FieldError(NEEDS_ANSWER)
            return None
        if self.choices:
            # Buttons send the exact value; a typed answer may be the label, in any case,
            # with or without its accents ("cite 5" for "Cité 5").
            typed = _folded(text)
            for number, (label, value) in enumerate(self.choices, start=1):
                # Or its number in the list, as residents answer a numbered question.
                if typed in (_folded(value), _folded(label), str(number)):
                    text = value
                    break
            else:
                raise FieldError(PICK_A_BUTTON)
        else:
            if len(text) < self.min_length:
                raise FieldError(TOO_SHORT, n=self.min_length)
            if len(text) > self.max_length:
                raise FieldError(TOO_LONG, n=self.max_length, m=len(text))
        return self.validate(text) if self.validate is not None else text


@dataclass(frozen=True, slots=True)
class FormSpec:
    """A form: its id (``"proposal"``), its title msgid and its questions in order."""

    form_id: str
    title: str
    fields: tuple[Field, ...]

    def __post_init__(self) -> None:
        # ":" separates the prefix in "form:<form_id>" custom ids.
        if not self.form_id or ":" in self.form_id:
            raise ValueError(f"bad form id {self.form_id!r}: not empty, no ':'")
        if not self.fields:
            raise ValueError(f"form {self.form_id!r} has no field")
        names = [field.name for field in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"form {self.form_id!r} has two fields with the same name")

    def fits_modal(self, t: Callable[[str], str] | None = None) -> bool:
        """True when Discord can show this as one modal (texts measured translated by ``t``)."""
        tr = t or (lambda message: message)
        return (
            len(self.fields) <= MODAL_MAX_FIELDS
            and len(tr(self.title)) <= MODAL_MAX_TITLE
            and all(
                not field.choices
                and field.max_length <= MODAL_MAX_LENGTH
                and len(tr(field.label)) <= MODAL_MAX_LABEL
                for field in self.fields
            )
        )

    def as_modal(self, t: Callable[[str], str]) -> Form:
        """The modal for this form; its submission comes back with form id ``form:<form_id>``."""
        return Form(
            form_id=FORM_ID_PREFIX + self.form_id,
            title=t(self.title),
            fields=tuple(
                FormField(
                    field_id=field.name,
                    label=t(field.label),
                    long=field.long,
                    required=field.required,
                    max_length=field.max_length,
                    placeholder=t(field.placeholder) if field.placeholder else None,
                )
                for field in self.fields
            ),
        )

    def clean(self, raw: Mapping[str, str]) -> tuple[dict[str, object], dict[str, FieldError]]:
        """Check a whole submission: the cleaned values, and the error of every bad field."""
        values: dict[str, object] = {}
        errors: dict[str, FieldError] = {}
        for field in self.fields:
            try:
                values[field.name] = field.clean(raw.get(field.name, ""))
            except FieldError as error:
                errors[field.name] = error
        return values, errors


@dataclass(frozen=True, slots=True)
class Question:
    """The question to show next; ``step`` counts from 0, ``title`` is the form's title msgid."""

    form_id: str
    step: int
    total: int
    field: Field
    error: FieldError | None = None
    title: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an answer led to."""

    kind: Literal["question", "done", "cancelled", "expired", "none"]
    question: Question | None = None
    values: dict[str, object] | None = None
    data: dict[str, object] | None = None
    form_id: str = ""


# ---------------------------------------------------------------------------------------------
# Reusable validators

_CURRENCY = re.compile(r"^(?:€|eur(?:os?)?)\s*|\s*(?:€|eur(?:os?)?)$", re.IGNORECASE)
# "1500", "1 500", "1.500", "1,500", "1 500,50", "1,500.50": thousands grouped by one
# separator used throughout, then optional cents.
_AMOUNT = re.compile(
    r"(?P<units>\d{1,3}(?P<group>[ .,'\u00a0\u202f])\d{3}(?:(?P=group)\d{3})*|\d+)"
    r"(?:(?P<point>[.,])(?P<cents>\d{1,2}))?"
)
# Past this an "amount" is a typo or a joke, and JSON readers lose precision.
_MAX_AMOUNT_DIGITS = 15


def euros(text: str) -> int:
    """A non-negative amount in whole euros ("1 500 €", "1500,50"), cents rounded half up."""
    cleaned = _CURRENCY.sub("", text.strip()).strip()
    match = _AMOUNT.fullmatch(cleaned)
    if match is None or (match["point"] and match["point"] == match["group"]):
        raise FieldError(NOT_AN_AMOUNT)
    units = re.sub(r"\D", "", match["units"])
    if len(units.lstrip("0")) > _MAX_AMOUNT_DIGITS:
        raise FieldError(NOT_AN_AMOUNT)
    amount = Decimal(f"{units}.{match['cents'] or '0'}")
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def integer_between(lo: int, hi: int) -> Callable[[str], int]:
    """A validator accepting a whole number from ``lo`` to ``hi`` included."""
    if lo > hi:
        raise ValueError("integer_between needs lo <= hi")

    def validate(text: str) -> int:
        digits = re.sub(r"[\s\u00a0\u202f]", "", text)
        if not re.fullmatch(r"[+-]?\d{1,18}", digits) or not lo <= int(digits) <= hi:
            raise FieldError(NOT_IN_RANGE, lo=lo, hi=hi)
        return int(digits)

    return validate


# ---------------------------------------------------------------------------------------------
# The conversation


async def start(
    session: AsyncSession,
    spec: FormSpec,
    *,
    account_key: str,
    chat_key: str,
    now: datetime,
    ttl: timedelta,
    data: Mapping[str, object] | None = None,
    prefill: Mapping[str, str | None] | None = None,
    errors: Mapping[str, FieldError] | None = None,
) -> Question:
    """Open ``spec`` for this account in this chat, replacing any form left open there.

    ``prefill`` holds answers already typed (a Discord modal whose other fields were
    refused); the first question asked is the first field not answered or in ``errors``.
    """
    _require_aware(now)
    answers = {
        name: text
        for name, text in (prefill or {}).items()
        if name not in (errors or {}) and any(f.name == name for f in spec.fields)
    }
    step = next(
        (i for i, f in enumerate(spec.fields) if f.name not in answers),
        len(spec.fields) - 1,
    )
    row = {
        "account_key": account_key,
        "chat_key": chat_key,
        "form_id": spec.form_id,
        "step": step,
        "answers": answers,
        "data": dict(data or {}),
        "started_at": now,
        "updated_at": now,
        "expires_at": now + ttl,
    }
    # Pending ORM changes must reach the database before the upsert, which bypasses them.
    await session.flush()
    await upsert(
        session,
        FormSession,
        row,
        conflict=["account_key", "chat_key"],
        update=[name for name in row if name not in ("account_key", "chat_key")],
    )
    return _question(spec, step, (errors or {}).get(spec.fields[step].name))


async def active(
    session: AsyncSession, *, account_key: str, chat_key: str, now: datetime
) -> FormSession | None:
    """The form this account is filling in in this chat, unless there is none or it expired."""
    _require_aware(now)
    row = await _load(session, account_key, chat_key, lock=False)
    return row if row is not None and not _expired(row, now) else None


async def answer(
    session: AsyncSession,
    specs: Mapping[str, FormSpec],
    *,
    account_key: str,
    chat_key: str,
    text: str,
    now: datetime,
    ttl: timedelta,
) -> Outcome:
    """Take ``text`` as the answer to the open question and say what comes next."""
    _require_aware(now)
    row = await _load(session, account_key, chat_key, lock=True)
    if row is None:
        return Outcome("none")
    if _expired(row, now):
        await _delete(session, row)
        return Outcome("expired")
    spec = specs.get(row.form_id)
    if _command(text) in CANCEL_WORDS or spec is None:
        await _delete(session, row)
        return Outcome("cancelled")
    # A spec that lost fields since the form was opened: what is left is the end.
    step = min(row.step, len(spec.fields))
    if step < len(spec.fields):
        field = spec.fields[step]
        try:
            stored = _accept(field, text)
        except FieldError as error:
            return Outcome("question", question=_question(spec, step, error))
        # A new dict: SQLAlchemy does not see changes made inside a JSON value.
        row.answers = {**row.answers, field.name: stored}
        # On to the first question still unanswered: after a question asked again (its
        # answer no longer passed), the answers that came after it are kept, not asked again.
        step = next(
            (i for i, f in enumerate(spec.fields) if f.name not in row.answers), len(spec.fields)
        )
    row.step = step
    row.updated_at = now
    row.expires_at = now + ttl
    if step < len(spec.fields):
        await session.flush()
        return Outcome("question", question=_question(spec, step))
    return await _finish(session, spec, row)


async def cancel(session: AsyncSession, *, account_key: str, chat_key: str) -> bool:
    """Close this account's form in this chat; False when none was open."""
    row = await _load(session, account_key, chat_key, lock=True)
    if row is None:
        return False
    await _delete(session, row)
    return True


def render_question(
    q: Question, t: Callable[..., str], *, button_data: Callable[[str], str]
) -> tuple[str, tuple[tuple[Button, ...], ...]]:
    """The message asking ``q`` and, for a choice, its buttons (two per row)."""
    lines: list[str] = []
    if q.error is not None:
        lines.append(q.error.translated(t))
    title = t(q.title) if q.title else q.form_id
    lines.append(t(HEADER, title=title, step=q.step + 1, total=q.total))
    lines.append(t(LABEL, label=t(q.field.label)))
    if q.field.help:
        lines.append(t(q.field.help))
    if not q.field.required:
        lines.append(t(OPTIONAL_HINT))
    lines.append(t(CANCEL_HINT))
    buttons = [Button(label=t(label), data=button_data(value)) for label, value in q.field.choices]
    rows = tuple(tuple(buttons[i : i + 2]) for i in range(0, len(buttons), 2))
    return "\n".join(lines), rows


# ---------------------------------------------------------------------------------------------
# Internals


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("naive datetime refused: pass an aware 'now'")


def _command(text: str) -> str:
    """The text as a command word: "/Annuler@forum_bot" -> "/annuler", "Annuler." -> "annuler"."""
    word = text.strip().casefold()
    if word.startswith("/"):
        # Telegram appends "@botname" to commands in groups; anything after is ignored.
        return word.split(maxsplit=1)[0].split("@", 1)[0]
    return word.rstrip(".!")


def _accept(field: Field, text: str) -> str | None:
    """The text to keep for ``field`` (None: skipped), after checking it; or FieldError."""
    if _command(text) in SKIP_WORDS:
        if field.required:
            raise FieldError(NEEDS_ANSWER)
        return None
    field.clean(text)
    # The text is kept, not the cleaned value: JSON cannot hold every value a validator
    # returns, and cleaning again at the end is cheap.
    return text.strip()


async def _finish(session: AsyncSession, spec: FormSpec, row: FormSession) -> Outcome:
    """Clean every stored answer; done, or back to the first one that no longer passes."""
    values: dict[str, object] = {}
    for index, field in enumerate(spec.fields):
        if field.name not in row.answers:
            # The spec gained a field since the form was opened.
            return await _back_to(session, spec, row, index, None)
        stored = row.answers[field.name]
        try:
            if stored is None and field.required:
                raise FieldError(NEEDS_ANSWER)
            values[field.name] = None if stored is None else field.clean(stored)
        except FieldError as error:
            return await _back_to(session, spec, row, index, error)
    data = dict(row.data)
    await _delete(session, row)
    return Outcome("done", values=values, data=data, form_id=spec.form_id)


async def _back_to(
    session: AsyncSession, spec: FormSpec, row: FormSession, step: int, error: FieldError | None
) -> Outcome:
    row.step = step
    await session.flush()
    return Outcome("question", question=_question(spec, step, error))


def _question(spec: FormSpec, step: int, error: FieldError | None = None) -> Question:
    return Question(
        form_id=spec.form_id,
        step=step,
        total=len(spec.fields),
        field=spec.fields[step],
        error=error,
        title=spec.title,
    )


def _expired(row: FormSession, now: datetime) -> bool:
    return row.expires_at <= now


async def _load(
    session: AsyncSession, account_key: str, chat_key: str, *, lock: bool
) -> FormSession | None:
    query = select(FormSession).where(
        FormSession.account_key == account_key, FormSession.chat_key == chat_key
    )
    if lock:
        # Two answers at once (a double tap on a button) must not both take the same step
        # on PostgreSQL; SQLite already runs one writer at a time and ignores this.
        query = query.with_for_update()
    # start() writes with a plain upsert: objects this session loaded before may be stale.
    query = query.execution_options(populate_existing=True)
    return (await session.execute(query)).scalar_one_or_none()


async def _delete(session: AsyncSession, row: FormSession) -> None:
    await session.delete(row)
    # Now, not at commit: a start() later in the same transaction must not see the old row.
    await session.flush()
