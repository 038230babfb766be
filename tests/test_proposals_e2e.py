"""A proposal's whole life as one conversation across both platforms, end to end.

The real python-telegram-bot and discord.py adapters run in one app (one database) against the
loopback fakes. Marie writes a proposal on Telegram, a Discord moderator publishes it, Paul
supports it from Telegram and again from Discord once his accounts are linked (it counts once),
Jeanne's support sends it to the council, and a council member answers it and carries it out
from a Telegram staff chat. Everyone concerned hears of every step once, privately, on the
platform they used; the published posts on both platforms follow the proposal's status.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlmodel import col

from bot.bootstrap import App
from bot.config import ChannelConfig, ProposalsConfig, RolesConfig, Settings
from storage.models import (
    Account,
    InboxUpdate,
    OutboxItem,
    Proposal,
    ProposalEvent,
    ProposalSupport,
)
from tests.fakes.discord import DiscordLimits, FakeDiscord
from tests.fakes.telegram import FakeTelegram, TelegramLimits
from tests.harness import bridge_app

# Telegram: the neighbourhood group, the proposals chat, the town hall's staff chat.
TG_CITE5 = -100501
TG_PROPOSALS = -100502
TG_STAFF = -100503
TG_MARIE = 42
TG_PAUL = 43
TG_MAIRIE = 45

# Discord: one server with a neighbourhood channel, the moderators' and the proposals channel.
GUILD = 1000
MODERATOR_ROLE = 900
DC_CITE5 = 1100
DC_MODERATION = 1200
DC_PROPOSALS = 1300
DC_LEA = 4000  # a moderator (by role)
DC_PAUL = 4001
DC_JEANNE = 4002

WAIT = 30  # seconds: the bound of every wait

TITLE = "Des bacs à compost au square"
NOTE = "Les trois bacs sont installés et utilisés."

# The private notices, as the town's French catalog writes them (first line of each).
PUBLISHED = (
    f"Votre proposition n°1 « {TITLE} » est publiée : les habitants peuvent maintenant la soutenir."
)
COUNCIL = (
    f"La proposition n°1 « {TITLE} » a atteint 2 soutiens : elle est transmise au conseil "
    "municipal, dont la réponse sera partagée ici."
)
ACCEPTED = f"Proposition n°1 « {TITLE} » : acceptée."
IN_PROGRESS = f"Proposition n°1 « {TITLE} » : en cours."
DONE = f"Proposition n°1 « {TITLE} » : réalisée."
STEPS = (PUBLISHED, COUNCIL, ACCEPTED, IN_PROGRESS, DONE)

pytestmark = pytest.mark.usefixtures("ptb_timedelta", "fast_discord_reconnect")


def _settings(telegram: FakeTelegram, discord: FakeDiscord, database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        telegram_token=SecretStr(telegram.token),
        telegram_api_url=telegram.url,
        discord_token=SecretStr(discord.bot_token),
        discord_api_url=discord.api_url,
        discord_guild_ids=[str(GUILD)],
        # The platforms' paces a hundred times faster, like the fakes' limits.
        rate_limit_scale=0.01,
        channels=[
            ChannelConfig(
                platform="telegram",
                id=str(TG_CITE5),
                neighbourhood="Cité 5",
                purpose="neighbourhood",
            ),
            ChannelConfig(platform="telegram", id=str(TG_PROPOSALS), purpose="proposals"),
            ChannelConfig(platform="telegram", id=str(TG_STAFF), name="Mairie"),
            ChannelConfig(
                platform="discord",
                id=str(DC_CITE5),
                neighbourhood="Cité 5",
                purpose="neighbourhood",
            ),
            ChannelConfig(platform="discord", id=str(DC_MODERATION), purpose="moderation"),
            ChannelConfig(platform="discord", id=str(DC_PROPOSALS), purpose="proposals"),
        ],
        roles=RolesConfig(
            council=[f"telegram:{TG_MAIRIE}"], discord_moderator_roles=[str(MODERATOR_ROLE)]
        ),
        proposals=ProposalsConfig(support_threshold=2),
    )


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeTelegram, FakeDiscord]]:
    telegram = FakeTelegram(limits=TelegramLimits(window_scale=0.01))
    discord = FakeDiscord(guild_id=GUILD, limits=DiscordLimits(window_scale=0.01))
    await telegram.start()
    await discord.start()
    telegram.add_chat(TG_CITE5, title="Cité 5")
    telegram.add_chat(TG_PROPOSALS, title="Propositions")
    telegram.add_chat(TG_STAFF, title="Mairie")
    telegram.add_user(TG_MARIE, "Marie")
    telegram.add_user(TG_PAUL, "Paul")
    telegram.add_user(TG_MAIRIE, "Mairie")
    discord.add_role(MODERATOR_ROLE, "Modération")
    discord.add_channel(DC_CITE5, "cite-5")
    discord.add_channel(DC_MODERATION, "moderation")
    discord.add_channel(DC_PROPOSALS, "propositions")
    discord.add_member(DC_LEA, "lea", global_name="Léa", roles=[MODERATOR_ROLE])
    discord.add_member(DC_PAUL, "paul", global_name="Paul")
    discord.add_member(DC_JEANNE, "jeanne", global_name="Jeanne")
    try:
        yield telegram, discord
    finally:
        await discord.stop()
        await telegram.stop()


class Town:
    """Both platforms, one forum: residents act on the fakes, the test waits for the bot."""

    def __init__(self, telegram: FakeTelegram, discord: FakeDiscord, app: App) -> None:
        self.telegram = telegram
        self.discord = discord
        self.app = app

    async def _handled(self, platform: str, key: str) -> None:
        """Wait until the bot stored and handled this update, and delivered what it queued.

        Waiting on the update's own inbox row (rather than on an empty inbox) matters on
        Discord: the gateway event may not be stored yet when the wait begins."""

        async def done() -> bool:
            async with self.app.db.read() as session:
                row = (
                    await session.execute(
                        sa.select(col(InboxUpdate.handled_at)).where(
                            col(InboxUpdate.platform) == platform,
                            col(InboxUpdate.update_key) == key,
                        )
                    )
                ).first()
            return row is not None and row[0] is not None

        async with asyncio.timeout(WAIT):
            await self.app.dispatcher.wait_until(done)
            await self.app.outbox.drain()

    # -- Telegram ---------------------------------------------------------------------------

    async def tg_say(self, chat_id: int, user_id: int, text: str) -> list[dict[str, Any]]:
        """A Telegram user writes in a chat; returns what the bot posted there in answer."""
        before = len(self.telegram.sent_messages(chat_id))
        if text.startswith("/"):
            name, _, args = text[1:].partition(" ")
            update = self.telegram.inject_command(chat_id, user_id, name, args)
        else:
            update = self.telegram.inject_message(chat_id, user_id, text)
        await self._handled("telegram", str(update["update_id"]))
        return self.telegram.sent_messages(chat_id)[before:]

    async def tg_press(
        self, chat_id: int, user_id: int, message: dict[str, Any], label: str
    ) -> tuple[str | None, list[dict[str, Any]]]:
        """A Telegram user presses the inline button ``label`` under ``message``: the notice
        the bot answered the press with, and what it posted in the chat."""
        data = _tg_buttons(message)[label]
        before = len(self.telegram.sent_messages(chat_id))
        update = self.telegram.inject_callback_query(
            chat_id, user_id, int(message["message_id"]), data
        )
        query_id = str(update["callback_query"]["id"])
        await self._handled("telegram", str(update["update_id"]))
        await self.telegram.wait_for(lambda: query_id in self.telegram.callback_answers, WAIT)
        notice = self.telegram.callback_answers[query_id]["text"]
        return notice, self.telegram.sent_messages(chat_id)[before:]

    def tg_private(self, user_id: int) -> list[str]:
        """What the bot wrote to a Telegram user in their private chat."""
        return [str(m["text"]) for m in self.telegram.sent_messages(user_id)]

    # -- Discord ----------------------------------------------------------------------------

    async def dc_press(
        self, channel_id: int, user_id: int, message: dict[str, Any], label: str
    ) -> str:
        """A Discord member presses the button ``label`` under ``message``; returns the
        notice the bot answered with (a follow-up of the interaction)."""
        custom_id = _dc_buttons(message)[label]
        interaction = self.discord.inject_component(
            channel_id, user_id, int(message["id"]), custom_id
        )
        await self._handled("discord", f"interaction:{interaction['id']}")
        return await self._followup(str(interaction["id"]))

    async def dc_slash(self, channel_id: int, user_id: int, name: str) -> str:
        """A Discord member runs a slash command; returns the bot's answer to it."""
        interaction = self.discord.inject_slash_command(channel_id, user_id, name)
        await self._handled("discord", f"interaction:{interaction['id']}")
        return await self._followup(str(interaction["id"]))

    async def _followup(self, interaction_id: str) -> str:
        def answers() -> list[str]:
            return [
                str(r["data"].get("content"))
                for r in self.discord.interaction_responses
                if r["interaction_id"] == interaction_id and r["data"].get("content")
            ]

        await self.discord.wait_for(lambda: bool(answers()), WAIT)
        (answer,) = answers()
        return answer

    def dc_posts(self, channel_id: int) -> list[dict[str, Any]]:
        """The bot's own posts in a Discord channel (not relays, not residents)."""
        return [
            m
            for m in self.discord.channel_messages(channel_id)
            if m["author"]["id"] == str(self.discord.bot_user_id)
        ]

    def dc_private(self, user_id: int) -> list[str]:
        return [str(m["content"]) for m in self.discord.direct_messages(user_id)]

    def published(self) -> list[tuple[str, list[str]]]:
        """The published post on Telegram, then on Discord, as residents see it now: its text
        and the labels of its buttons."""
        (tg_post,) = self.telegram.sent_messages(TG_PROPOSALS)
        (dc_post,) = self.dc_posts(DC_PROPOSALS)
        return [
            (str(tg_post["text"]), list(_tg_buttons(tg_post))),
            (str(dc_post["content"]), list(_dc_buttons(dc_post))),
        ]


def _tg_buttons(message: dict[str, Any]) -> dict[str, str]:
    markup = message.get("reply_markup") or {}
    return {
        str(b["text"]): str(b["callback_data"])
        for row in markup.get("inline_keyboard", [])
        for b in row
    }


def _dc_buttons(message: dict[str, Any]) -> dict[str, str]:
    return {
        str(c["label"]): str(c["custom_id"])
        for row in message.get("components") or []
        for c in row["components"]
    }


def _notices(texts: list[str]) -> list[str]:
    """The proposal's notices among a person's private messages, by their first line."""
    return [t.split("\n")[0] for t in texts if t.split("\n")[0] in STEPS]


@pytest.fixture
async def town(fakes: tuple[FakeTelegram, FakeDiscord], sqlite_url: str) -> AsyncIterator[Town]:
    telegram, discord = fakes
    app, discord_adapter = bridge_app(_settings(telegram, discord, sqlite_url))
    await app.start()
    try:
        async with asyncio.timeout(WAIT):
            await discord_adapter.wait_ready()
        yield Town(telegram, discord, app)
    finally:
        await app.stop()


async def test_a_proposal_from_telegram_to_done_across_both_platforms(town: Town) -> None:
    tg, dc = town.telegram, town.discord

    # -- Marie proposes, on Telegram -----------------------------------------------------------
    # She writes /start privately first, as the README asks: otherwise Telegram would refuse
    # every private notice the bot sends her.
    (welcome,) = await town.tg_say(TG_MARIE, TG_MARIE, "/start")
    assert welcome["text"].startswith("Bonjour")

    (question,) = await town.tg_say(TG_CITE5, TG_MARIE, "/proposer")
    assert "Nouvelle proposition — question 1/7" in question["text"]
    (question,) = await town.tg_say(TG_CITE5, TG_MARIE, TITLE)
    assert "question 2/7" in question["text"]
    (question,) = await town.tg_say(
        TG_CITE5,
        TG_MARIE,
        "Installer trois bacs à compost partagés au square de la Cité 5, pour les déchets "
        "verts du quartier.",
    )
    assert "question 3/7" in question["text"] and "Quartier" in question["text"]
    # The neighbourhood is a choice: inline buttons under the question.
    assert list(_tg_buttons(question)) == ["Cité 5", "Toute la commune"]
    notice, (question,) = await town.tg_press(TG_CITE5, TG_MARIE, question, "Cité 5")
    assert notice is None
    assert "question 4/7" in question["text"]
    (question,) = await town.tg_say(TG_CITE5, TG_MARIE, "Environnement et nature")
    assert "question 5/7" in question["text"]
    (question,) = await town.tg_say(
        TG_CITE5, TG_MARIE, "Nous construisons les bacs et les entretenons chaque semaine."
    )
    assert "question 6/7" in question["text"]
    (question,) = await town.tg_say(
        TG_CITE5, TG_MARIE, "Le bois, la livraison et un emplacement au square."
    )
    assert "question 7/7" in question["text"]
    (draft,) = await town.tg_say(TG_CITE5, TG_MARIE, "2 000 €")
    assert draft["text"].startswith(f"Proposition n°1 — {TITLE}")
    assert "Quartier : Cité 5 · Thème : Environnement et nature" in draft["text"]
    assert "Budget estimé : 2\u202f000 €" in draft["text"]
    assert list(_tg_buttons(draft)) == ["Envoyer", "Abandonner"]

    notice, (thanks,) = await town.tg_press(TG_CITE5, TG_MARIE, draft, "Envoyer")
    assert notice == "Envoyée."
    assert thanks["text"].startswith("Merci ! La proposition n°1 est envoyée à la modération")

    # -- A Discord moderator publishes it ------------------------------------------------------
    (review,) = town.dc_posts(DC_MODERATION)
    assert review["content"].startswith("La proposition n°1 attend la modération.")
    assert list(_dc_buttons(review)) == ["Publier", "Refuser"]
    assert await town.dc_press(DC_MODERATION, DC_LEA, review, "Publier") == "Publiée."
    # The review post no longer offers its buttons.
    (review,) = town.dc_posts(DC_MODERATION)
    assert review["content"] == "Proposition n°1 publiée."
    assert _dc_buttons(review) == {}

    # -- Published in the proposals channels of both platforms ----------------------------------
    for text, buttons in town.published():
        assert f"Proposition n°1 — {TITLE}" in text
        assert "Statut : publiée, recueille des soutiens" in text
        assert "Soutiens : 0 sur les 2 nécessaires pour aller au conseil" in text
        assert buttons == ["Soutenir", "Suivre"]
    (tg_post,) = tg.sent_messages(TG_PROPOSALS)
    (dc_post,) = town.dc_posts(DC_PROPOSALS)

    # -- Paul supports from Telegram, links his accounts, presses again on Discord ----------------
    notice, _ = await town.tg_press(TG_PROPOSALS, TG_PAUL, tg_post, "Soutenir")
    assert notice == "Merci pour votre soutien (1)."
    # Both posts count it, not only the one on the platform where Paul pressed.
    for text, _buttons in town.published():
        assert "Soutiens : 1 sur les 2 nécessaires pour aller au conseil" in text

    # /lier in a Discord channel: the code must not be shown there, it comes privately.
    answer = await town.dc_slash(DC_CITE5, DC_PAUL, "lier")
    assert answer.startswith("Je vous ai envoyé votre code en message privé")
    (code_message,) = town.dc_private(DC_PAUL)
    found = re.search(r"\b([A-Z2-9]{4}-[A-Z2-9]{4})\b", code_message)
    assert found is not None, code_message
    (linked,) = await town.tg_say(TG_PAUL, TG_PAUL, f"/lier {found[1]}")
    assert linked["text"].startswith("C'est fait : votre compte Discord et celui-ci")
    await dc.wait_for(lambda: len(town.dc_private(DC_PAUL)) == 2, WAIT)
    assert town.dc_private(DC_PAUL)[1].startswith("Votre compte est maintenant lié au compte")

    (dc_post,) = town.dc_posts(DC_PROPOSALS)
    assert await town.dc_press(DC_PROPOSALS, DC_PAUL, dc_post, "Soutenir") == (
        "Vous soutenez déjà cette proposition."
    )
    async with town.app.db.read() as session:
        proposal = await session.get(Proposal, 1)
    assert proposal is not None and (proposal.status, proposal.supports) == ("published", 1)

    # -- Jeanne's support, on Discord, reaches the threshold ------------------------------------
    assert await town.dc_press(DC_PROPOSALS, DC_JEANNE, dc_post, "Soutenir") == (
        "Merci pour votre soutien (2)."
    )
    council_call = town.dc_posts(DC_MODERATION)[-1]["content"]
    assert council_call.startswith("La proposition n°1 attend la réponse du conseil")
    for text, buttons in town.published():
        assert "Statut : transmise au conseil municipal" in text and "Soutiens : 2" in text
        # Still open to supports while the council has not answered.
        assert buttons == ["Soutenir", "Suivre"]

    # -- The council answers from a Telegram staff chat ----------------------------------------
    (question,) = await town.tg_say(TG_STAFF, TG_MAIRIE, "/repondre 1 acceptee")
    assert "question 1/3" in question["text"]
    (question,) = await town.tg_say(
        TG_STAFF, TG_MAIRIE, "Le bois, la livraison et une plaque au square."
    )
    assert "question 2/3" in question["text"]
    (question,) = await town.tg_say(TG_STAFF, TG_MAIRIE, "printemps 2027")
    assert "question 3/3" in question["text"]
    (recorded,) = await town.tg_say(
        TG_STAFF, TG_MAIRIE, "Merci pour cette belle idée, nous la soutenons."
    )
    # Marie, Paul and Jeanne: each person once, whatever their number of accounts.
    assert recorded["text"] == (
        "Réponse enregistrée pour la proposition n°1 ; 3 personnes prévenues."
    )
    for text, buttons in town.published():
        assert "Statut : acceptée" in text and "Prévu pour : printemps 2027" in text
        # Answered: no more supports, but residents may still follow it.
        assert buttons == ["Suivre"]
    (told,) = await town.tg_say(TG_STAFF, TG_MAIRIE, "/avancement 1 en_cours")
    assert told["text"] == "Proposition n°1 : 3 personnes prévenues."
    for text, buttons in town.published():
        assert "Statut : en cours" in text and buttons == ["Suivre"]
    (told,) = await town.tg_say(TG_STAFF, TG_MAIRIE, f"/avancement 1 realisee {NOTE}")
    assert told["text"] == (
        "Proposition n°1 : 3 personnes prévenues.\nPour ajouter une photo de la réalisation, "
        "répondez à ce message avec la photo."
    )

    # -- Who heard what, privately --------------------------------------------------------------
    # Marie wrote it: every step, on Telegram, where she wrote it.
    assert _notices(town.tg_private(TG_MARIE)) == list(STEPS)
    # Paul: from the council on, once each, on the account he first supported with.
    assert _notices(town.tg_private(TG_PAUL)) == [COUNCIL, ACCEPTED, IN_PROGRESS, DONE]
    assert _notices(town.dc_private(DC_PAUL)) == []
    # Jeanne's own support sent it to the council: she is told what followed.
    assert _notices(town.dc_private(DC_JEANNE)) == [ACCEPTED, IN_PROGRESS, DONE]
    # The acting staff are not told privately of what they did.
    assert town.dc_private(DC_LEA) == []
    assert town.tg_private(TG_MAIRIE) == []
    done = next(t for t in town.tg_private(TG_MARIE) if t.startswith(DONE))
    assert done == f"{DONE}\n{NOTE}"
    accepted = next(t for t in town.dc_private(DC_JEANNE) if t.startswith(ACCEPTED))
    assert "Réponse officielle de la commune : Merci pour cette belle idée" in accepted
    assert "Ce que la commune apporte : Le bois, la livraison et une plaque" in accepted
    assert "Prévu pour : printemps 2027" in accepted

    # -- The published posts show where the proposal stands, on both platforms -------------------
    for text, _buttons in town.published():
        assert "Statut : réalisée" in text
        assert "Soutiens : 2" in text
        assert f"Bilan : {NOTE}" in text
        assert "Prévu pour : printemps 2027" in text
    # Carried out: nothing left to press, on either platform.
    assert [buttons for _text, buttons in town.published()] == [[], []]

    # -- The database ---------------------------------------------------------------------------
    async with town.app.db.read() as session:
        proposal = await session.get(Proposal, 1)
        kinds = (
            (
                await session.execute(
                    sa.select(col(ProposalEvent.kind)).order_by(col(ProposalEvent.id))
                )
            )
            .scalars()
            .all()
        )
        supports = (
            (
                await session.execute(
                    sa.select(col(ProposalSupport.account_key)).order_by(
                        col(ProposalSupport.created_at)
                    )
                )
            )
            .scalars()
            .all()
        )
        paul = (
            await session.execute(
                sa.select(col(Account.platform), col(Account.person_id)).where(
                    col(Account.platform_user_id).in_([str(TG_PAUL), str(DC_PAUL)])
                )
            )
        ).all()
        undelivered = (
            await session.execute(
                sa.select(
                    col(OutboxItem.chat_key), col(OutboxItem.kind), col(OutboxItem.last_error)
                ).where(col(OutboxItem.status) != "delivered")
            )
        ).all()
    assert proposal is not None
    assert (proposal.status, proposal.supports) == ("done", 2)
    assert proposal.closing_note == NOTE and proposal.budget_euros == 2000
    assert kinds == [
        "created",
        "submitted",
        "published",
        "council",
        "accepted",
        "in_progress",
        "done",
    ]
    # 1 + 1: Paul's (kept on the account he supported with) and Jeanne's.
    assert supports == [f"telegram:{TG_PAUL}", f"discord:{DC_JEANNE}"]
    # Paul's two accounts are one person.
    assert len(paul) == 2 and len({person for _, person in paul}) == 1
    # Every notice, post, edit and acknowledgement reached its platform.
    assert undelivered == []
