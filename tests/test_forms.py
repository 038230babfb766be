"""Forms: one definition, a Discord modal or a step-by-step conversation kept in the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from bot import forms
from bot.events import Button
from bot.forms import Field, FieldError, FormSpec, Outcome, Question, euros, integer_between
from storage.db import Database
from storage.models import FormSession

NOW = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)
TTL = timedelta(minutes=30)
ACCOUNT = "telegram:42"
CHAT = "telegram:42"

PROPOSAL = FormSpec(
    form_id="proposal",
    title="New proposal",
    fields=(
        Field(name="title", label="Title", min_length=5, max_length=80),
        Field(name="budget", label="Budget", required=False, validate=euros),
        Field(
            name="kind",
            label="Kind",
            choices=(("Street", "street"), ("Park", "park"), ("School", "school")),
        ),
    ),
)
SPECS = {PROPOSAL.form_id: PROPOSAL}

# A stand-in for the French catalog, so these tests do not depend on the merged .po file.
FRENCH = {
    "New proposal": "Nouvelle proposition",
    "Title": "Titre",
    "Budget": "Budget",
    "Kind": "Type",
    "Street": "Rue",
    "Park": "Parc",
    "School": "École",
    forms.HEADER: "{title} — question {step}/{total}",
    forms.LABEL: "{label} :",
    forms.OPTIONAL_HINT: "(réponse facultative : envoyez - pour passer)",
    forms.CANCEL_HINT: "/annuler pour abandonner",
    forms.PICK_A_BUTTON: "Choisissez l'un des boutons.",
    forms.TOO_SHORT: "Trop court : au moins {n} caractères.",
}


def french(message: str, /, **values: object) -> str:
    text = FRENCH.get(message, message)
    return text.format(**values) if values else text


async def _start(db: Database, now: datetime = NOW, **data: object) -> Question:
    async with db.write() as session:
        return await forms.start(
            session, PROPOSAL, account_key=ACCOUNT, chat_key=CHAT, now=now, ttl=TTL, data=data
        )


async def _answer(db: Database, text: str, now: datetime = NOW) -> Outcome:
    async with db.write() as session:
        return await forms.answer(
            session, SPECS, account_key=ACCOUNT, chat_key=CHAT, text=text, now=now, ttl=TTL
        )


async def _rows(db: Database) -> list[FormSession]:
    async with db.read() as session:
        return list((await session.execute(select(FormSession))).scalars().all())


def _asked(outcome: Outcome) -> Question:
    assert outcome.kind == "question"
    assert outcome.question is not None
    return outcome.question


# ---------------------------------------------------------------------------------------------
# The conversation


async def test_a_form_is_walked_to_the_end(db: Database) -> None:
    first = await _start(db, proposal_id=7)
    assert (first.step, first.total, first.field.name, first.error) == (0, 3, "title", None)

    assert _asked(await _answer(db, "  Un banc place du marché ")).field.name == "budget"
    assert _asked(await _answer(db, "1 500 €")).field.name == "kind"
    done = await _answer(db, "park")

    assert done.kind == "done"
    assert done.values == {"title": "Un banc place du marché", "budget": 1500, "kind": "park"}
    assert done.data == {"proposal_id": 7}
    assert await _rows(db) == []
    assert (await _answer(db, "encore")).kind == "none"


@pytest.mark.parametrize(
    ("step", "bad", "message"),
    [
        (0, "Banc", forms.TOO_SHORT),
        (0, "x" * 81, forms.TOO_LONG),
        (0, "   ", forms.NEEDS_ANSWER),
        (1, "beaucoup", forms.NOT_AN_AMOUNT),
        (2, "piscine", forms.PICK_A_BUTTON),
    ],
)
async def test_a_bad_answer_asks_the_same_question_again_and_keeps_earlier_answers(
    db: Database, step: int, bad: str, message: str
) -> None:
    good = ["Un banc place du marché", "800", "street"]
    await _start(db)
    for text in good[:step]:
        await _answer(db, text)

    again = _asked(await _answer(db, bad))

    assert again.step == step
    assert again.field is PROPOSAL.fields[step]
    assert again.error is not None and again.error.message == message
    [row] = await _rows(db)
    assert row.step == step
    assert row.answers == dict(zip(["title", "budget", "kind"][:step], good[:step], strict=True))
    for text in good[step:]:
        outcome = await _answer(db, text)
    assert outcome.kind == "done"
    assert outcome.values == {"title": good[0], "budget": 800, "kind": "street"}


async def test_an_optional_field_can_be_skipped(db: Database) -> None:
    await _start(db)
    await _answer(db, "Un banc place du marché")
    assert _asked(await _answer(db, "/passer")).field.name == "kind"
    done = await _answer(db, "School")  # typed instead of pressed: the case does not matter
    assert done.values == {"title": "Un banc place du marché", "budget": None, "kind": "school"}


async def test_a_dash_skips_too(db: Database) -> None:
    await _start(db)
    await _answer(db, "Un banc place du marché")
    assert _asked(await _answer(db, " - ")).field.name == "kind"


@pytest.mark.parametrize("skip", ["-", "/passer", "/passer@forum_bot"])
async def test_a_required_field_cannot_be_skipped(db: Database, skip: str) -> None:
    await _start(db)
    again = _asked(await _answer(db, skip))
    assert again.step == 0
    assert again.error is not None and again.error.message == forms.NEEDS_ANSWER


@pytest.mark.parametrize("word", ["/annuler", "/cancel", "annuler", "Annuler", "/annuler@bot"])
@pytest.mark.parametrize("step", [0, 1, 2])
async def test_cancel_at_any_step(db: Database, step: int, word: str) -> None:
    await _start(db)
    for text in ["Un banc place du marché", "-"][:step]:
        await _answer(db, text)
    assert (await _answer(db, word)).kind == "cancelled"
    assert await _rows(db) == []
    assert (await _answer(db, "park")).kind == "none"


async def test_cancel_function(db: Database) -> None:
    await _start(db)
    async with db.write() as session:
        assert await forms.cancel(session, account_key=ACCOUNT, chat_key=CHAT)
    async with db.write() as session:
        assert not await forms.cancel(session, account_key=ACCOUNT, chat_key=CHAT)
    assert await _rows(db) == []


async def test_a_form_expires_after_its_ttl_and_each_good_answer_extends_it(db: Database) -> None:
    await _start(db)
    later = NOW + TTL - timedelta(seconds=1)
    await _answer(db, "Un banc place du marché", now=later)
    [row] = await _rows(db)
    assert row.expires_at == later + TTL
    assert row.updated_at == later

    async with db.read() as session:
        assert await forms.active(session, account_key=ACCOUNT, chat_key=CHAT, now=later)
        gone = later + TTL
        assert await forms.active(session, account_key=ACCOUNT, chat_key=CHAT, now=gone) is None

    assert (await _answer(db, "800", now=later + TTL)).kind == "expired"
    assert await _rows(db) == []
    assert (await _answer(db, "800", now=later + TTL)).kind == "none"


async def test_a_bad_answer_does_not_extend_the_form(db: Database) -> None:
    await _start(db)
    await _answer(db, "Banc", now=NOW + timedelta(minutes=20))
    [row] = await _rows(db)
    assert row.expires_at == NOW + TTL


async def test_a_restart_resumes_at_the_same_step(db: Database) -> None:
    await _start(db, proposal_id=3)
    await _answer(db, "Un banc place du marché")

    restarted = Database(db.url)
    try:
        async with restarted.read() as session:
            row = await forms.active(session, account_key=ACCOUNT, chat_key=CHAT, now=NOW)
        assert row is not None and (row.form_id, row.step) == ("proposal", 1)
        assert _asked(await _answer(restarted, "2000")).field.name == "kind"
        done = await _answer(restarted, "street")
    finally:
        await restarted.dispose()
    assert done.values == {"title": "Un banc place du marché", "budget": 2000, "kind": "street"}
    assert done.data == {"proposal_id": 3}


async def test_start_twice_keeps_one_row_and_starts_over(db: Database) -> None:
    await _start(db, proposal_id=1)
    await _answer(db, "Un banc place du marché")
    later = NOW + timedelta(minutes=5)
    question = await _start(db, later, proposal_id=2)

    assert question.step == 0
    [row] = await _rows(db)
    assert (row.step, row.answers, row.data) == (0, {}, {"proposal_id": 2})
    assert (row.started_at, row.expires_at) == (later, later + TTL)


async def test_start_after_answer_in_the_same_transaction(db: Database) -> None:
    await _start(db)
    async with db.write() as session:
        assert (await forms.cancel(session, account_key=ACCOUNT, chat_key=CHAT)) is True
        await forms.start(session, PROPOSAL, account_key=ACCOUNT, chat_key=CHAT, now=NOW, ttl=TTL)
        row = await forms.active(session, account_key=ACCOUNT, chat_key=CHAT, now=NOW)
        assert row is not None and row.step == 0
    async with db.read() as session:
        count = (await session.execute(select(func.count()).select_from(FormSession))).scalar()
    assert count == 1


async def test_forms_are_kept_apart_by_account_and_chat(db: Database) -> None:
    await _start(db)
    async with db.write() as session:
        await forms.start(session, PROPOSAL, account_key=ACCOUNT, chat_key="x", now=NOW, ttl=TTL)
        outcome = await forms.answer(
            session, SPECS, account_key="telegram:43", chat_key=CHAT, text="a", now=NOW, ttl=TTL
        )
    assert outcome.kind == "none"
    assert len(await _rows(db)) == 2


async def test_a_form_whose_spec_is_gone_is_cancelled(db: Database) -> None:
    await _start(db)
    async with db.write() as session:
        outcome = await forms.answer(
            session, {}, account_key=ACCOUNT, chat_key=CHAT, text="Un banc", now=NOW, ttl=TTL
        )
    assert outcome.kind == "cancelled"
    assert await _rows(db) == []


async def test_naive_datetimes_are_refused(db: Database) -> None:
    async with db.write() as session:
        with pytest.raises(ValueError, match="naive"):
            await forms.start(
                session,
                PROPOSAL,
                account_key=ACCOUNT,
                chat_key=CHAT,
                now=datetime(2026, 11, 25, 17, 0),
                ttl=TTL,
            )


# ---------------------------------------------------------------------------------------------
# Modals


def test_fits_modal() -> None:
    assert not PROPOSAL.fits_modal()  # a choice field needs buttons
    text = FormSpec("idea", "Idea", (Field("title", "Title"), Field("body", "Text", long=True)))
    assert text.fits_modal()
    six = FormSpec("six", "Six", tuple(Field(f"f{i}", f"F{i}") for i in range(6)))
    assert not six.fits_modal()
    assert not FormSpec("long", "Long", (Field("body", "Text", max_length=4001),)).fits_modal()
    assert not FormSpec("title", "T" * 46, (Field("body", "Text"),)).fits_modal()
    assert FormSpec("title", "T" * 45, (Field("body", "Text", max_length=4000),)).fits_modal()
    assert not text.fits_modal(lambda message: message * 10)  # too long once translated


def test_as_modal_translates_and_names_fields() -> None:
    spec = FormSpec(
        "idea",
        "New proposal",
        (Field("title", "Title", placeholder="Street"), Field("budget", "Budget", required=False)),
    )
    modal = spec.as_modal(french)
    assert (modal.form_id, modal.title) == ("form:idea", "Nouvelle proposition")
    assert [(f.field_id, f.label, f.required, f.placeholder) for f in modal.fields] == [
        ("title", "Titre", True, "Rue"),
        ("budget", "Budget", False, None),
    ]


def test_clean_reports_every_bad_field() -> None:
    spec = FormSpec(
        "idea",
        "Idea",
        (
            Field("title", "Title", min_length=5),
            Field("budget", "Budget", required=False, validate=euros),
            Field("size", "Size", validate=integer_between(1, 10)),
            Field("note", "Note", required=False),
        ),
    )
    values, errors = spec.clean({"title": "Banc", "budget": "cher", "size": " 4 "})
    assert sorted(errors) == ["budget", "title"]
    assert errors["title"].message == forms.TOO_SHORT and errors["title"].values == {"n": 5}
    assert errors["budget"].message == forms.NOT_AN_AMOUNT
    assert values == {"size": 4, "note": None}

    values, errors = spec.clean({"title": "Un banc", "budget": "", "size": "10"})
    assert errors == {}
    assert values == {"title": "Un banc", "budget": None, "size": 10, "note": None}


def test_bad_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="form id"):
        FormSpec("a:b", "Title", (Field("x", "X"),))
    with pytest.raises(ValueError, match="same name"):
        FormSpec("a", "Title", (Field("x", "X"), Field("x", "Y")))
    with pytest.raises(ValueError, match="no field"):
        FormSpec("a", "Title", ())


# ---------------------------------------------------------------------------------------------
# Validators


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("1500", 1500),
        ("1 500", 1500),
        ("1\u00a0500", 1500),
        ("1\u202f500 €", 1500),
        ("1 500 €", 1500),
        ("1500€", 1500),
        ("€1500", 1500),
        ("1500 euros", 1500),
        ("1500 EUR", 1500),
        ("1500,50 €", 1501),
        ("1500,49", 1500),
        ("1500.5", 1501),
        ("1.500", 1500),
        ("1.500,50", 1501),
        ("1,500.50", 1501),
        ("1 000 000", 1_000_000),
        ("0", 0),
        (" 12 ", 12),
    ],
)
def test_euros_accepts(text: str, amount: int) -> None:
    assert euros(text) == amount


@pytest.mark.parametrize(
    "text",
    [
        "",
        "€",
        "beaucoup",
        "-100",
        "- 100 €",
        "+100",
        "1500,505",
        "1,500,50",
        "15 00",
        "1 5000",
        "12abc",
        "1e3",
        "1500 $",
        "9" * 16,
        "9" * 5000,
    ],
)
def test_euros_refuses(text: str) -> None:
    with pytest.raises(FieldError) as refused:
        euros(text)
    assert refused.value.message == forms.NOT_AN_AMOUNT


def test_integer_between() -> None:
    check = integer_between(1, 10)
    assert [check(text) for text in ["1", " 10 ", "+5"]] == [1, 10, 5]
    for text in ["0", "11", "-1", "deux", "1.5", ""]:
        with pytest.raises(FieldError) as refused:
            check(text)
        assert refused.value.values == {"lo": 1, "hi": 10}
    with pytest.raises(ValueError):
        integer_between(3, 2)


def test_field_error_reads_in_english_and_translates() -> None:
    error = FieldError(forms.TOO_SHORT, n=5)
    assert str(error) == "Too short: at least 5 characters."
    assert error.translated(french) == "Trop court : au moins 5 caractères."


# ---------------------------------------------------------------------------------------------
# Rendering


def test_render_question_for_a_text_field() -> None:
    question = Question("proposal", 0, 3, PROPOSAL.fields[0], title=PROPOSAL.title)
    text, buttons = forms.render_question(question, french, button_data=lambda v: f"form:{v}")
    assert text == "Nouvelle proposition — question 1/3\nTitre :\n/annuler pour abandonner"
    assert buttons == ()


def test_render_question_for_an_optional_field_with_help() -> None:
    field = Field("budget", "Budget", required=False, help="Kind")
    question = Question("proposal", 1, 3, field, title=PROPOSAL.title)
    text, _ = forms.render_question(question, french, button_data=str)
    assert text.splitlines() == [
        "Nouvelle proposition — question 2/3",
        "Budget :",
        "Type",
        "(réponse facultative : envoyez - pour passer)",
        "/annuler pour abandonner",
    ]


def test_render_question_shows_the_error_first_and_the_choices_as_buttons() -> None:
    question = Question(
        "proposal",
        2,
        3,
        PROPOSAL.fields[2],
        error=FieldError(forms.PICK_A_BUTTON),
        title=PROPOSAL.title,
    )
    text, buttons = forms.render_question(
        question, french, button_data=lambda value: f"form:proposal:{value}"
    )
    assert text.splitlines() == [
        "Choisissez l'un des boutons.",
        "Nouvelle proposition — question 3/3",
        "Type :",
        "/annuler pour abandonner",
    ]
    assert buttons == (
        (Button("Rue", "form:proposal:street"), Button("Parc", "form:proposal:park")),
        (Button("École", "form:proposal:school"),),
    )
