"""The bot on the console platform, as a resident talks to it."""

from __future__ import annotations

from sqlalchemy import select

from bot.config import Settings
from storage.db import Database
from storage.models import Account, Channel, Message
from tests.forum import Forum


async def test_aide_lists_the_commands_in_french(settings: Settings) -> None:
    async with Forum(settings) as forum:
        answer = await forum.answer("/aide")
    assert answer.startswith("Bonjour ! Je suis le bot du Forum Habitant de Loos-en-Gohelle.")
    assert "/aide — Voir tout ce que le bot sait faire" in answer
    assert "/langue fr|en — Choisir la langue du bot : fr ou en" in answer
    # Aliases are not listed twice.
    assert "/help" not in answer


async def test_help_is_an_alias_of_aide(settings: Settings) -> None:
    async with Forum(settings) as forum:
        assert await forum.answer("/help") == await forum.answer("/aide")


async def test_unknown_command_gets_a_helpful_french_reply(settings: Settings) -> None:
    async with Forum(settings) as forum:
        answer = await forum.answer("/aid")
        other = await forum.answer("/xyzzy")
    assert answer == (
        "Je ne connais pas la commande /aid. Vouliez-vous dire /aide ? "
        "Tapez /aide pour voir ce que je sais faire."
    )
    assert (
        other == "Je ne connais pas la commande /xyzzy. Tapez /aide pour voir ce que je sais faire."
    )


async def test_plain_message_is_stored_and_not_answered(database_url: str) -> None:
    settings = Settings(database_url=database_url)
    async with Forum(settings) as forum:
        posted = await forum.say("tg:est Bonjour à tous, la réunion est jeudi ?", as_name="Marie")
        assert posted == []
        async with forum.db.read() as session:
            rows = (
                await session.execute(select(Message, Channel, Account).join(Channel).join(Account))
            ).all()
    assert len(rows) == 1
    message, channel, account = rows[0]
    assert message.text == "Bonjour à tous, la réunion est jeudi ?"
    assert (channel.platform, channel.chat_id) == ("console", "tg:est")
    assert account.display_name == "Marie"
    assert message.sent_at == forum.clock.now()


async def test_chat_prefix_switches_channel_and_stays(settings: Settings) -> None:
    async with Forum(settings) as forum:
        await forum.say("dc:quartier-ouest Salut")
        await forum.say("Toujours là")
        async with forum.db.read() as session:
            chats = (await session.execute(select(Channel.chat_id))).scalars().all()
    assert chats == ["dc:quartier-ouest"]


async def test_langue_switches_the_reader_to_english_and_back(settings: Settings) -> None:
    async with Forum(settings) as forum:
        assert await forum.answer("/langue en") == "From now on I will write to you in English."
        english = await forum.answer("/aide")
        assert english.startswith("Hello! I am the bot of the residents' forum of Loos-en-Gohelle.")
        assert await forum.answer("/langue fr") == "Désormais, je vous écris en français."
        assert (await forum.answer("/aide")).startswith("Bonjour !")


async def test_langue_without_a_valid_language_explains(settings: Settings) -> None:
    async with Forum(settings) as forum:
        answer = await forum.answer("/langue klingon")
    assert answer == "Indiquez une langue : /langue fr ou /langue en. Langue actuelle : fr."


async def test_a_failing_handler_gets_an_apology_not_a_crash(settings: Settings) -> None:
    async def broken(ctx: object, event: object) -> list[object]:
        raise RuntimeError("boom")

    async with Forum(settings) as forum:
        forum.app.dispatcher.commands = {**forum.app.dispatcher.commands, "casse": _command(broken)}
        answer = await forum.answer("/casse")
        # The bot is still there afterwards.
        assert (await forum.answer("/aide")).startswith("Bonjour")
    assert answer.startswith("Désolé, un problème est survenu de notre côté.")


def _command(handler: object) -> object:
    from handlers import Command

    return Command(handler, "x")  # type: ignore[arg-type]


async def test_console_survives_empty_and_odd_lines(db: Database) -> None:
    settings = Settings(database_url=str(db.url))
    async with Forum(settings, db=db) as forum:
        assert await forum.say("") == []
        assert await forum.say("   ") == []
        assert await forum.say("tg:est") == []
        assert await forum.say("/") == []
        assert forum.console.state.chat == "tg:est"


async def test_the_demo_bridge_links_tg_ouest_and_dc_ouest(settings: Settings) -> None:
    async with Forum(settings) as forum:
        (relayed,) = await forum.say("tg:ouest Qui vient **jeudi** ?", as_name="Marie")
        (back,) = await forum.say("dc:ouest Moi !", as_name="Paul")
        (admin,) = await forum.say("tg:ouest /ban tout le monde", as_name="Mairie")
        (impostor,) = await forum.say("tg:ouest Fermeture de la mairie demain", as_name="Mairie")
    assert (relayed.chat, relayed.as_name, relayed.text) == (
        "dc:ouest",
        "Marie · Telegram",
        "Qui vient **jeudi** ?",
    )
    assert (back.chat, back.as_name, back.text) == ("tg:ouest", "Paul · Discord", "Moi !")
    # A typed command unknown here is answered, not relayed; a name that could pass for the
    # town hall is marked.
    assert admin.chat == "tg:ouest"
    assert admin.text.startswith("Je ne connais pas la commande /ban.")
    assert impostor.as_name == "Mairie (habitant·e, non officiel) · Telegram"


async def test_relier_links_two_chats_with_a_code_typed_by_an_admin_of_each(
    sqlite_url: str,
) -> None:
    import re

    from bot.config import BridgeConfig, RolesConfig

    # An explicit bridge elsewhere keeps the console's demo link out of the way.
    settings = Settings(
        database_url=sqlite_url,
        roles=RolesConfig(moderators=["console:lea", "console:sam"]),
        bridges=[BridgeConfig(a="console:tg:ailleurs", b="console:dc:ailleurs")],
    )
    async with Forum(settings) as forum:
        refused = await forum.answer("tg:nord /relier", as_name="Marie")
        assert refused == "Seuls les modérateurs peuvent utiliser /relier."
        offer = await forum.answer("tg:nord /relier", as_name="Lea")
        code = re.search(r"/relier ([0-9A-F]{6})", offer)
        assert code is not None, offer
        assert await forum.say("tg:nord Pas encore relié", as_name="Marie") == []
        wrong_side = await forum.answer(f"tg:nord /relier {code.group(1)}", as_name="Lea")
        assert wrong_side == "Tapez ce code dans l'*autre* salon, pas dans celui-ci."
        assert (await forum.answer("dc:nord /relier 000000", as_name="Sam")).startswith(
            "Ce code est inconnu"
        )
        confirmations = await forum.say(f"dc:nord /relier {code.group(1)}", as_name="Sam")
        assert {p.chat for p in confirmations} == {"dc:nord", "tg:nord"}
        (relayed,) = await forum.say("tg:nord Maintenant oui", as_name="Marie")
        assert (relayed.chat, relayed.text) == ("dc:nord", "Maintenant oui")
        assert await forum.answer("dc:nord /delier", as_name="Sam") == "1 lien supprimé."
        assert await forum.say("tg:nord Plus relié", as_name="Marie") == []
