"""Polls across both platforms, end to end: the real python-telegram-bot and discord.py
adapters in one app (one database) against the loopback fakes, a Telegram group bridged to a
Discord channel.

The app runs on a FixedClock and without APScheduler: the test advances the clock and calls
``app.ticker.tick()`` itself, so due times (the live refresh, the close) fire when the test
says, never after a real wait.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import col

from bot.bootstrap import App
from bot.clock import FixedClock
from bot.config import RolesConfig
from storage.models import InboxUpdate, OutboxItem, Poll, PollBallot, PollVoter
from tests.fakes.discord import DiscordLimits, FakeDiscord
from tests.fakes.telegram import FakeTelegram, TelegramLimits
from tests.harness import GENERAL, GROUP, bridge_app, bridge_settings, settle

TG_MODO = 7  # a moderator, named in roles.moderators
TG_MARIE = 42
TG_PAUL = 43
DC_PAUL = 4001  # Paul's Discord account, linked to TG_PAUL during the test
DC_JEANNE = 4002

WAIT = 30  # seconds: the bound of every wait

QUESTION = "Quel jour pour la fête des voisins ?"

pytestmark = pytest.mark.usefixtures("ptb_timedelta", "fast_discord_reconnect")


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeTelegram, FakeDiscord]]:
    # Both fakes' limits a hundred times faster, like the bot's paces (rate_limit_scale).
    telegram = FakeTelegram(limits=TelegramLimits(window_scale=0.01))
    discord = FakeDiscord(guild_id=1000, limits=DiscordLimits(window_scale=0.01))
    await telegram.start()
    await discord.start()
    telegram.add_chat(GROUP, title="Quartier Ouest")
    telegram.add_user(TG_MODO, "Léa")
    telegram.add_user(TG_MARIE, "Marie")
    telegram.add_user(TG_PAUL, "Paul")
    discord.add_channel(GENERAL, "quartier-ouest")
    discord.add_member(DC_PAUL, "paul", global_name="Paul")
    discord.add_member(DC_JEANNE, "jeanne", global_name="Jeanne")
    try:
        yield telegram, discord
    finally:
        await discord.stop()
        await telegram.stop()


class Town:
    """Both platforms, one forum: residents act on the fakes, the test waits for the bot."""

    def __init__(
        self, telegram: FakeTelegram, discord: FakeDiscord, app: App, clock: FixedClock
    ) -> None:
        self.telegram = telegram
        self.discord = discord
        self.app = app
        self.clock = clock

    async def handled(self, keys: list[tuple[str, str]]) -> None:
        """Wait until the bot stored and handled these updates, and delivered what it queued.

        Waiting on the updates' own inbox rows (rather than on an empty inbox) matters on
        Discord: the gateway event may not be stored yet when the wait begins."""
        by_platform: dict[str, set[str]] = {}
        for platform, key in keys:
            by_platform.setdefault(platform, set()).add(key)

        async def done() -> bool:
            async with self.app.db.read() as session:
                for platform, wanted in by_platform.items():
                    count = (
                        await session.execute(
                            sa.select(sa.func.count())
                            .select_from(InboxUpdate)
                            .where(
                                col(InboxUpdate.platform) == platform,
                                col(InboxUpdate.update_key).in_(wanted),
                                col(InboxUpdate.handled_at).is_not(None),
                            )
                        )
                    ).scalar_one()
                    if count < len(wanted):
                        return False
            return True

        async with asyncio.timeout(WAIT):
            await self.app.dispatcher.wait_until(done)
            await self.app.outbox.drain()

    async def tick(self, advance: timedelta) -> int:
        """Move the app's clock on, fire what fell due, and wait for its effects."""
        self.clock.advance(advance)
        fired = await self.app.ticker.tick()
        async with asyncio.timeout(WAIT):
            await settle(self.app)
        return fired

    # -- Telegram ---------------------------------------------------------------------------

    async def tg_say(self, chat_id: int, user_id: int, text: str) -> list[dict[str, Any]]:
        """A Telegram user writes in a chat; returns what the bot posted there in answer."""
        before = len(self.telegram.sent_messages(chat_id))
        if text.startswith("/"):
            name, _, args = text[1:].partition(" ")
            update = self.telegram.inject_command(chat_id, user_id, name, args)
        else:
            update = self.telegram.inject_message(chat_id, user_id, text)
        await self.handled([("telegram", str(update["update_id"]))])
        return self.telegram.sent_messages(chat_id)[before:]

    def tg_click(self, chat_id: int, user_id: int, message: dict[str, Any], label: str) -> str:
        """A Telegram user presses a button, without waiting; returns the callback query id."""
        update = self.telegram.inject_callback_query(
            chat_id, user_id, int(message["message_id"]), button(tg_buttons(message), label)
        )
        return str(update["callback_query"]["id"])

    async def tg_press(
        self, chat_id: int, user_id: int, message: dict[str, Any], label: str
    ) -> tuple[str | None, list[dict[str, Any]]]:
        """A Telegram user presses the inline button ``label`` under ``message``: the notice
        the bot answered the press with, and what it posted in the chat."""
        before = len(self.telegram.sent_messages(chat_id))
        query_id = self.tg_click(chat_id, user_id, message, label)
        await self.telegram.wait_for(lambda: query_id in self.telegram.callback_answers, WAIT)
        async with asyncio.timeout(WAIT):
            await self.app.outbox.drain()
        notice = self.telegram.callback_answers[query_id]["text"]
        return notice, self.telegram.sent_messages(chat_id)[before:]

    def tg_post(self) -> dict[str, Any]:
        """The poll's post in the Telegram group, as it is now (edits applied): the first
        message that shows the poll (/resultats answers show it too)."""
        return next(
            m
            for m in self.telegram.sent_messages(GROUP)
            if str(m.get("text", "")).startswith("Sondage n°1 :")
        )

    # -- Discord ----------------------------------------------------------------------------

    def dc_click(self, channel_id: int, user_id: int, message: dict[str, Any], label: str) -> str:
        """A Discord member presses a button, without waiting; returns the interaction id."""
        interaction = self.discord.inject_component(
            channel_id, user_id, int(message["id"]), button(dc_buttons(message), label)
        )
        return str(interaction["id"])

    async def dc_press(
        self, channel_id: int, user_id: int, message: dict[str, Any], label: str
    ) -> str:
        """A Discord member presses the button ``label`` under ``message``; returns the
        notice the bot answered with (a follow-up of the interaction)."""
        interaction_id = self.dc_click(channel_id, user_id, message, label)
        await self.handled([("discord", f"interaction:{interaction_id}")])
        return await self.followup(interaction_id)

    async def dc_slash(self, channel_id: int, user_id: int, name: str) -> str:
        """A Discord member runs a slash command; returns the bot's answer to it."""
        interaction = self.discord.inject_slash_command(channel_id, user_id, name)
        await self.handled([("discord", f"interaction:{interaction['id']}")])
        return await self.followup(str(interaction["id"]))

    def answered_interactions(self) -> set[str]:
        """The interactions the bot answered with a text (button notices, command answers)."""
        return {
            str(r["interaction_id"])
            for r in self.discord.interaction_responses
            if r["data"].get("content")
        }

    def followups(self, interaction_id: str) -> list[str]:
        return [
            str(r["data"].get("content"))
            for r in self.discord.interaction_responses
            if r["interaction_id"] == interaction_id and r["data"].get("content")
        ]

    async def followup(self, interaction_id: str) -> str:
        await self.discord.wait_for(lambda: bool(self.followups(interaction_id)), WAIT)
        (answer,) = self.followups(interaction_id)
        return answer

    def dc_posts(self) -> list[dict[str, Any]]:
        """The bot's own posts in the Discord channel (not relays, not residents)."""
        return [
            m
            for m in self.discord.channel_messages(GENERAL)
            if m["author"]["id"] == str(self.discord.bot_user_id)
        ]

    def dc_post(self) -> dict[str, Any]:
        """The poll's post in the Discord channel, as it is now (the first that shows it)."""
        return next(m for m in self.dc_posts() if shown(m["content"]).startswith("Sondage n°1 :"))

    def dc_private(self, user_id: int) -> list[str]:
        return [str(m["content"]) for m in self.discord.direct_messages(user_id)]

    # -- both ---------------------------------------------------------------------------------

    async def open_poll(self, *, options: str, closes: str) -> None:
        """The moderator opens a one-choice poll with live results from the Telegram group,
        answering the form's questions as a resident would (typed, or a button)."""
        (question,) = await self.tg_say(GROUP, TG_MODO, "/sondage")
        assert "Nouveau sondage — question 1/9" in question["text"]
        (question,) = await self.tg_say(GROUP, TG_MODO, QUESTION)
        assert "question 2/9" in question["text"]
        _, (question,) = await self.tg_press(GROUP, TG_MODO, question, "Un seul choix")
        assert "question 3/9" in question["text"]
        (question,) = await self.tg_say(GROUP, TG_MODO, options)
        assert "question 4/9" in question["text"]
        (question,) = await self.tg_say(GROUP, TG_MODO, "-")
        assert "question 5/9" in question["text"]
        (question,) = await self.tg_say(GROUP, TG_MODO, closes)
        assert "question 6/9" in question["text"]
        _, (question,) = await self.tg_press(GROUP, TG_MODO, question, "En direct")
        assert "question 7/9" in question["text"]
        _, (question,) = await self.tg_press(GROUP, TG_MODO, question, "Non")
        assert "question 8/9" in question["text"]
        _, (question,) = await self.tg_press(GROUP, TG_MODO, question, "Tous les habitants")
        assert "question 9/9" in question["text"]
        _, posted = await self.tg_press(GROUP, TG_MODO, question, "Oui")
        texts = [str(m["text"]) for m in posted]
        assert any(t.startswith("Le sondage n°1 est ouvert jusqu'au") for t in texts), texts

    async def undelivered(self) -> list[tuple[str, str, str | None]]:
        async with self.app.db.read() as session:
            rows = (
                await session.execute(
                    sa.select(
                        col(OutboxItem.chat_key), col(OutboxItem.kind), col(OutboxItem.last_error)
                    ).where(col(OutboxItem.status) != "delivered")
                )
            ).all()
        return [(str(a), str(b), c) for a, b, c in rows]


def shown(content: str) -> str:
    """A Discord post's text as residents see it: plain text is sent with Markdown's marks
    escaped ("1\\. Samedi", so that it does not turn into a list), which Discord hides."""
    return re.sub(r"\\([^\w\s])", r"\1", content)


def counts(text: str) -> dict[str, int]:
    """The counts a poll's text shows: each option's label, then its bar, percentage and count
    ("Samedi\n▓▓▓░░░░░░░ 34 % (1)")."""
    return {
        label: int(n)
        for label, n in re.findall(r"^(.+)\n[▓░]+ \d+\u00a0% \((\d+)\)$", text, re.MULTILINE)
    }


def button(buttons: dict[str, str], label: str) -> str:
    """The data of the button showing ``label``, alone or numbered ("1. Samedi")."""
    (found,) = [
        data
        for text, data in buttons.items()
        if re.fullmatch(rf"(\d+\. )?{re.escape(label)}", text)
    ]
    return found


def tg_buttons(message: dict[str, Any]) -> dict[str, str]:
    markup = message.get("reply_markup") or {}
    return {
        str(b["text"]): str(b["callback_data"])
        for row in markup.get("inline_keyboard", [])
        for b in row
    }


def dc_buttons(message: dict[str, Any]) -> dict[str, str]:
    return {
        str(c["label"]): str(c["custom_id"])
        for row in message.get("components") or []
        for c in row["components"]
    }


@pytest.fixture
async def town(fakes: tuple[FakeTelegram, FakeDiscord], sqlite_url: str) -> AsyncIterator[Town]:
    telegram, discord = fakes
    # Today, so that nothing compares the platforms' real timestamps with a far-off clock.
    clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
    settings = bridge_settings(
        telegram,
        discord,
        sqlite_url,
        roles=RolesConfig(moderators=[f"telegram:{TG_MODO}"]),
        # The platforms' paces a hundred times faster, like the fakes' limits.
        rate_limit_scale=0.01,
    )
    app, discord_adapter = bridge_app(settings, clock)
    await app.start()
    try:
        async with asyncio.timeout(WAIT):
            await discord_adapter.wait_ready()
        yield Town(telegram, discord, app, clock)
    finally:
        await app.stop()


async def test_a_poll_voted_from_both_platforms_counts_each_person_once(town: Town) -> None:
    tg = town.telegram

    # -- The moderator opens the poll from the Telegram group -----------------------------------
    await town.open_poll(options="Samedi\nDimanche\nLundi", closes="dans 2 jours")
    # Posted on both platforms with the same buttons, live counts to come.
    tg_post, dc_post = town.tg_post(), town.dc_post()
    for text in (tg_post["text"], shown(dc_post["content"])):
        assert f"Sondage n°1 : {QUESTION}" in text
        assert "1. Samedi\n2. Dimanche\n3. Lundi" in text
    assert tg_buttons(tg_post) == dc_buttons(dc_post)
    assert [button(tg_buttons(tg_post), label) for label in ("Samedi", "Dimanche", "Lundi")] == [
        "poll:1:o:0",
        "poll:1:o:1",
        "poll:1:o:2",
    ]

    # -- Residents vote from both platforms -------------------------------------------------------
    notice, _ = await town.tg_press(GROUP, TG_MARIE, tg_post, "Samedi")
    assert notice == "Vote enregistré."
    assert await town.dc_press(GENERAL, DC_JEANNE, dc_post, "Dimanche") == "Vote enregistré."
    notice, _ = await town.tg_press(GROUP, TG_PAUL, tg_post, "Samedi")
    assert notice == "Vote enregistré."

    # Paul links his Discord account to his Telegram one (/lier on Discord, the code privately,
    # then /lier CODE to the bot on Telegram).
    answer = await town.dc_slash(GENERAL, DC_PAUL, "lier")
    assert answer.startswith("Je vous ai envoyé votre code en message privé")
    (code_message,) = town.dc_private(DC_PAUL)
    found = re.search(r"\b([A-Z2-9]{4}-[A-Z2-9]{4})\b", code_message)
    assert found is not None, code_message
    (linked,) = await town.tg_say(TG_PAUL, TG_PAUL, f"/lier {found[1]}")
    assert linked["text"].startswith("C'est fait : votre compte Discord et celui-ci")

    # From Discord, Paul presses another option: his vote is changed, not added.
    assert await town.dc_press(GENERAL, DC_PAUL, dc_post, "Lundi") == "Vote modifié."
    # And pressing it again from Telegram changes nothing.
    notice, _ = await town.tg_press(GROUP, TG_PAUL, tg_post, "Lundi")
    assert notice == "Votre vote est déjà enregistré."

    async with town.app.db.read() as session:
        voters = (await session.execute(sa.select(PollVoter))).scalars().all()
        ballots = (await session.execute(sa.select(col(PollBallot.choice)))).scalars().all()
    assert len(voters) == 3
    assert sorted(list(b) for b in ballots) == [[0], [1], [2]]

    # -- The live counts: due 5 s after the votes, fired by the ticker ----------------------------
    # (At least the refresh: a daily job may happen to fall due in the same 15 s.)
    assert await town.tick(timedelta(seconds=15)) >= 1
    for text in (town.tg_post()["text"], shown(town.dc_post()["content"])):
        assert "3 votant·es" in text
        assert counts(text) == {"Samedi": 1, "Dimanche": 1, "Lundi": 1}, text

    # -- /resultats shows the same counts ---------------------------------------------------------
    (answer,) = await town.tg_say(GROUP, TG_MARIE, "/resultats 1")
    assert "3 votant·es" in answer["text"]
    assert counts(answer["text"]) == {"Samedi": 1, "Dimanche": 1, "Lundi": 1}

    # -- The close: two days later, the result and its chart once on each platform ---------------
    tg_before = len(tg.sent_messages(GROUP))
    dc_before = len(town.dc_posts())
    # (Other due times may fire with it: the daily jobs fall within two days.)
    assert await town.tick(timedelta(days=2)) >= 1
    # The close's due time is spent: a later tick posts nothing more (counted below).
    await town.tick(timedelta(minutes=1))

    tg_new = tg.sent_messages(GROUP)[tg_before:]
    dc_new = town.dc_posts()[dc_before:]
    tg_results = [m for m in tg_new if str(m.get("text", "")).startswith("Résultat du sondage n°1")]
    tg_charts = [m for m in tg_new if "photo" in m]
    dc_results = [m for m in dc_new if shown(m["content"]).startswith("Résultat du sondage n°1")]
    dc_charts = [
        a for m in dc_new for a in m.get("attachments") or [] if a["filename"] == "sondage-1.png"
    ]
    assert len(tg_results) == len(tg_charts) == len(dc_results) == len(dc_charts) == 1
    for text in (tg_results[0]["text"], shown(dc_results[0]["content"])):
        assert "3 votant·es" in text
        assert counts(text) == {"Samedi": 1, "Dimanche": 1, "Lundi": 1}, text
    # The same chart on both: a PNG image.
    tg_png = tg.file_bytes(tg_charts[0]["photo"][-1]["file_id"])
    dc_png = town.discord.attachment_data(dc_charts[0]["url"])
    assert tg_png == dc_png and dc_png.startswith(b"\x89PNG\r\n\x1a\n")
    # The post itself now shows the final counts, closed, without buttons.
    for text, buttons in (
        (town.tg_post()["text"], tg_buttons(town.tg_post())),
        (shown(town.dc_post()["content"]), dc_buttons(town.dc_post())),
    ):
        assert "Clos." in text and "3 votant·es" in text
        assert counts(text) == {"Samedi": 1, "Dimanche": 1, "Lundi": 1}, text
        assert buttons == {}

    async with town.app.db.read() as session:
        poll = await session.get(Poll, 1)
    assert poll is not None and poll.status == "closed"
    assert poll.result is not None
    assert (poll.result["voters"], poll.result["counts"]) == (3, [1, 1, 1])
    assert await town.undelivered() == []


# -- 500 votes in a minute ----------------------------------------------------------------------

PER_PLATFORM = 250
WAVES = 4  # one every 15 s of the app's clock: 500 votes in a minute
TG_RESIDENT = 500_000  # Telegram user ids from here
DC_RESIDENT = 600_000  # Discord member ids from here
OPTIONS = ("Samedi", "Dimanche", "Lundi")


def unanswered_429s(requests: Sequence[Any], target: Callable[[Any], object]) -> list[Any]:
    """The calls answered 429 that no later call of the same method and target retried with
    success (both fakes record ``status``: the HTTP status they answered)."""
    return [
        request
        for i, request in enumerate(requests)
        if request.status == 429
        and not any(
            target(later) == target(request) and 200 <= (later.status or 0) < 300
            for later in requests[i + 1 :]
        )
    ]


async def test_500_votes_in_a_minute_with_live_results(town: Town) -> None:
    tg, dc = town.telegram, town.discord
    await town.open_poll(options="\n".join(OPTIONS), closes="dans 2 jours")
    tg_post, dc_post = town.tg_post(), town.dc_post()
    # 500 residents the forum has never seen: each vote is also their account's first sight.
    for n in range(PER_PLATFORM):
        tg.add_user(TG_RESIDENT + n, f"Habitant {n}")
        dc.add_member(DC_RESIDENT + n, f"habitant{n}")
    # One 429 forced on each platform's first edit of the post, so that the retry is seen,
    # not assumed (the throttle keeps the edits far below the fakes' own limits).
    tg_fault = tg.fail_next("editMessageText", status=429, retry_after=1)
    dc_fault = dc.fail_next("PATCH", rf"/channels/{GENERAL}/messages/{dc_post['id']}")

    # Resident n chooses option n % 3, on both platforms: 84 + 83 + 83 each.
    expected = dict.fromkeys(OPTIONS, 0)
    tg_queries: list[str] = []
    dc_interactions: list[str] = []
    per_wave = PER_PLATFORM // WAVES + 1
    for wave in range(WAVES):
        wave_queries: set[str] = set()
        wave_interactions: set[str] = set()
        for n in range(wave * per_wave, min((wave + 1) * per_wave, PER_PLATFORM)):
            label = OPTIONS[n % len(OPTIONS)]
            expected[label] += 2
            # As fast as the fakes take them: every press of the wave before any answer.
            wave_queries.add(town.tg_click(GROUP, TG_RESIDENT + n, tg_post, label))
            wave_interactions.add(town.dc_click(GENERAL, DC_RESIDENT + n, dc_post, label))
        tg_queries += sorted(wave_queries)
        dc_interactions += sorted(wave_interactions)
        # Every press answered: each vote is committed (the answer is queued with it). Waited
        # on in the fakes' memory: a database query after every handled press would compete
        # with the bot for the event loop.
        await tg.wait_for(lambda q=wave_queries: q <= tg.callback_answers.keys(), WAIT)
        await dc.wait_for(lambda i=wave_interactions: i <= town.answered_interactions(), WAIT)
        # 15 s later by the app's clock: the live refresh asked by the wave's first vote is
        # due, and one edit per platform shows the wave's votes.
        assert await town.tick(timedelta(seconds=15)) >= 1
        voted = len(tg_queries) + len(dc_interactions)
        for text in (town.tg_post()["text"], shown(town.dc_post()["content"])):
            assert f"{voted} votant·es" in text, text
            assert sum(counts(text).values()) == voted

    # -- Every vote counted, once ---------------------------------------------------------------
    async with town.app.db.read() as session:
        voters = (
            await session.execute(sa.select(sa.func.count()).select_from(PollVoter))
        ).scalar_one()
        ballots = (
            await session.execute(sa.select(sa.func.count()).select_from(PollBallot))
        ).scalar_one()
    assert (voters, ballots) == (500, 500)
    # Every press was answered, to the presser.
    assert [tg.callback_answers[q]["text"] for q in tg_queries] == ["Vote enregistré."] * 250
    assert [await town.followup(i) for i in dc_interactions] == ["Vote enregistré."] * 250

    # -- The last edit shows the final count, on both platforms ----------------------------------
    for text in (town.tg_post()["text"], shown(town.dc_post()["content"])):
        assert "500 votant·es" in text
        assert counts(text) == expected
    tg_edits = [
        r
        for r in tg.calls("editMessageText")
        if int(r.params["message_id"]) == tg_post["message_id"]
    ]
    dc_edits = dc.calls("PATCH", rf"/channels/{GENERAL}/messages/{dc_post['id']}")
    assert "500 votant·es" in str(tg_edits[-1].params["text"])
    assert "500 votant·es" in shown(str(dc_edits[-1].json["content"]))
    # One edit per platform and refresh: 500 votes, not 500 edits.
    assert [r.status for r in tg_edits] == [429] + [200] * WAVES
    assert [r.status for r in dc_edits] == [429] + [200] * WAVES
    assert (tg_fault.fired, dc_fault.fired) == (1, 1)

    # -- Within the fakes' limits: every 429 was followed by a successful retry ------------------
    assert (
        unanswered_429s(
            tg.requests,
            lambda r: (r.method.lower(), r.params.get("chat_id"), r.params.get("message_id")),
        )
        == []
    )
    assert unanswered_429s(dc.requests, lambda r: (r.method, r.path)) == []
    assert await town.undelivered() == []
