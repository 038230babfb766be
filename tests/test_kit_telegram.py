"""The kit's step-by-step form on Telegram: the real python-telegram-bot adapter against the
loopback fake Bot API, a restart in the middle of the form, inline buttons for a choice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlmodel import col

from bot.bootstrap import App, build
from bot.clock import SystemClock
from bot.config import Settings
from bot.dispatcher import Filled, Tables
from bot.events import Action
from bot.forms import Field, FormSpec
from bot.handling import Command, Context
from bot.platforms.telegram import TelegramAdapter
from handlers import COMMANDS, EVENTS
from handlers import help as help_
from storage.db import Database
from storage.models import FormSession, InboxUpdate, Message
from tests.fakes.telegram import FakeTelegram, TelegramLimits

GROUP = -100123
MARIE = 42

WAIT = 30  # seconds: the bound of every wait

pytestmark = pytest.mark.usefixtures("ptb_timedelta")

IDEE = FormSpec(
    form_id="idee",
    title="Nouvelle idée",
    fields=(
        Field("titre", "Titre", min_length=5, max_length=80),
        Field("details", "Détails", long=True, min_length=3),
        Field("quartier", "Quartier", choices=(("Nord", "nord"), ("Sud", "sud"))),
    ),
)


@dataclass
class Recorder:
    """The form's handler; remembers each call's values."""

    calls: list[dict[str, object]] = field(default_factory=list)

    async def __call__(self, ctx: Context, filled: Filled) -> Sequence[Action]:
        values = dict(filled.values)
        self.calls.append(values)
        return [ctx.reply(f"Merci ! Idée « {values['titre']} » notée ({values['quartier']}).")]


def _tables(recorder: Recorder) -> Tables:
    return Tables(
        commands={
            **COMMANDS,
            "idee": Command(recorder, "Propose an idea", form=IDEE),
        },
        unknown_command=help_.unknown_command,
        events=EVENTS,
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram(limits=TelegramLimits(window_scale=0.01))
    await server.start()
    server.add_chat(GROUP, title="Quartier Ouest")
    server.add_user(MARIE, "Marie", last_name="Dupont", username="marie59")
    try:
        yield server
    finally:
        await server.stop()


def _settings(fake: FakeTelegram, database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        telegram_token=SecretStr(fake.token),
        telegram_api_url=fake.url,
        rate_limit_scale=0.01,
    )


class Bot:
    """One running bot process (app + real Telegram adapter) on the fake."""

    def __init__(self, fake: FakeTelegram, settings: Settings, recorder: Recorder) -> None:
        self.fake = fake
        db = Database(settings.database_url)
        self.adapter = TelegramAdapter(settings, db, SystemClock(), poll_timeout=1)
        self.app: App = build(
            settings,
            db=db,
            clock=SystemClock(),
            adapters=[self.adapter],
            with_scheduler=False,
            tables=_tables(recorder),
        )

    async def __aenter__(self) -> Bot:
        try:
            await self.app.start()
        except BaseException:
            await self.app.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.app.stop()

    def sent(self) -> list[dict[str, Any]]:
        return self.fake.sent_messages(GROUP, include_deleted=False)

    async def handled(self, update: dict[str, Any]) -> None:
        """Wait until the bot has stored and handled ``update``, and sent what it queued."""
        key = str(update["update_id"])

        async def done() -> bool:
            async with self.app.db.read() as session:
                row = (
                    await session.execute(
                        sa.select(col(InboxUpdate.handled_at)).where(
                            col(InboxUpdate.platform) == "telegram",
                            col(InboxUpdate.update_key) == key,
                        )
                    )
                ).first()
            return row is not None and row[0] is not None

        async with asyncio.timeout(WAIT):
            await self.app.dispatcher.wait_until(done)
            await self.app.outbox.drain()

    async def say(self, text: str) -> list[dict[str, Any]]:
        """Marie writes in the group; returns what the bot sent there in answer."""
        before = len(self.sent())
        if text.startswith("/"):
            name, _, args = text[1:].partition(" ")
            update = self.fake.inject_command(GROUP, MARIE, name, args)
        else:
            update = self.fake.inject_message(GROUP, MARIE, text)
        await self.handled(update)
        return self.sent()[before:]

    async def press(self, message_id: int, data: str) -> tuple[str, list[dict[str, Any]]]:
        """Marie presses a button with ``data`` under ``message_id``: (query id, new posts)."""
        before = len(self.sent())
        update = self.fake.inject_callback_query(GROUP, MARIE, message_id, data)
        query_id = str(update["callback_query"]["id"])
        await self.handled(update)
        # The acknowledgement goes through the outbox too; drained above, but be explicit.
        await self.fake.wait_for(lambda: query_id in self.fake.callback_answers, timeout=WAIT)
        return query_id, self.sent()[before:]


def _buttons(message: dict[str, Any]) -> list[tuple[str, str]]:
    markup = message.get("reply_markup") or {}
    return [
        (str(b["text"]), str(b["callback_data"]))
        for row in markup.get("inline_keyboard", [])
        for b in row
    ]


async def _stored_texts(settings: Settings) -> list[str]:
    db = Database(settings.database_url)
    try:
        async with db.read() as session:
            return [t for (t,) in (await session.execute(sa.select(col(Message.text)))).all()]
    finally:
        await db.dispose()


async def test_a_form_resumes_on_telegram_after_a_restart(
    fake: FakeTelegram, database_url: str
) -> None:
    settings = _settings(fake, database_url)
    recorder = Recorder()

    async with Bot(fake, settings, recorder) as first:
        (question1,) = await first.say("/idee")
        assert "Nouvelle idée — question 1/3" in question1["text"]
        assert "Titre :" in question1["text"]
        assert "/annuler pour abandonner" in question1["text"]
        (question2,) = await first.say("Un jardin partagé")
        assert "question 2/3" in question2["text"]
        assert "Détails :" in question2["text"]
    # The first process is gone; a new one starts on the same database and the same fake.
    assert recorder.calls == []

    async with Bot(fake, settings, recorder) as second:
        (question3,) = await second.say("Des bacs et des graines")
        assert "question 3/3" in question3["text"]
        assert "Quartier :" in question3["text"]
        buttons = _buttons(question3)
        assert [label for label, _ in buttons] == ["Nord", "Sud"]
        assert [data for _, data in buttons] == ["form:idee:2:nord", "form:idee:2:sud"]

        query_id, posted = await second.press(int(question3["message_id"]), buttons[1][1])
        assert fake.callback_answers[query_id]["text"] is None  # acknowledged, no notice
        assert recorder.calls == [
            {"titre": "Un jardin partagé", "details": "Des bacs et des graines", "quartier": "sud"}
        ]
        assert [p["text"] for p in posted] == ["Merci ! Idée « Un jardin partagé » notée (sud)."]
        # The form is closed: a later message is a plain message, not an answer.
        assert await second.say("Bonjour à tous") == []
        assert len(recorder.calls) == 1
        async with second.app.db.read() as session:
            assert (
                await session.execute(sa.select(sa.func.count()).select_from(FormSession))
            ).scalar_one() == 0

    stored = await _stored_texts(settings)
    assert "Un jardin partagé" not in stored
    assert "Des bacs et des graines" not in stored
    assert "Bonjour à tous" in stored


async def test_a_too_short_answer_gets_a_french_error_and_the_same_question(
    fake: FakeTelegram, database_url: str
) -> None:
    settings = _settings(fake, database_url)
    recorder = Recorder()
    async with Bot(fake, settings, recorder) as bot:
        (question1,) = await bot.say("/idee")
        assert "question 1/3" in question1["text"]
        (refused,) = await bot.say("abc")
        text = str(refused["text"])
        assert text.startswith("Trop court : au moins 5 caractères.")
        assert "Nouvelle idée — question 1/3" in text and "Titre :" in text
        # Answered as a reply to the refused message, in the group.
        assert refused["reply_to_message"]["text"] == "abc"
        (question2,) = await bot.say("Un jardin partagé")
        assert "question 2/3" in question2["text"]
        assert recorder.calls == []
    assert "abc" not in await _stored_texts(settings)


@pytest.mark.parametrize(
    ("forged", "notice"),
    [
        ("form:idee:7:zzz", "Cette question a déjà reçu une réponse ou a expiré."),
        ("poll:1", "Ce bouton n'est plus valable."),
    ],
    ids=["stale-form-step", "unknown-button"],
)
async def test_a_forged_button_gets_a_short_french_notice_and_nothing_in_the_group(
    fake: FakeTelegram, database_url: str, forged: str, notice: str
) -> None:
    settings = _settings(fake, database_url)
    recorder = Recorder()
    async with Bot(fake, settings, recorder) as bot:
        (question1,) = await bot.say("/idee")
        before = bot.sent()
        query_id, posted = await bot.press(int(question1["message_id"]), forged)
        assert posted == []
        assert bot.sent() == before
        answers = [
            r
            for r in fake.calls("answerCallbackQuery")
            if r.params.get("callback_query_id") == query_id
        ]
        assert len(answers) == 1 and answers[0].ok
        assert answers[0].params.get("text") == notice
        assert fake.callback_answers[query_id]["text"] == notice
        # The form did not move: it still waits for question 1.
        async with bot.app.db.read() as session:
            (step,) = (await session.execute(sa.select(col(FormSession.step)))).one()
        assert step == 0
        assert recorder.calls == []
