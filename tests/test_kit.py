"""The kit for civic features, tried the way a contributor uses it: a command that opens a
form, a typed button, a named post edited later, a due time, a gate check, roles."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa

from bot.buttons import ButtonTemplate
from bot.config import BridgeConfig, ChannelConfig, RolesConfig, Settings
from bot.dispatcher import DueEntry, Filled, Press, Tables
from bot.due import DueKind
from bot.events import Action, CommandReceived, Event, MessageReceived, SendMessage, TimeCame
from bot.forms import Field, FormSpec, euros
from bot.gate import Gate, GateCheck, Outcome, Verdict
from bot.handling import STAFF, Command, Context, Role
from bot.outbox import parse_chat_key
from bot.richtext import FormattedText
from handlers import COMMANDS, EVENTS
from handlers import help as help_
from handlers import kit as kit_handlers
from storage.models import HeldMessage, Message
from tests.forum import Forum
from tests.kit import command, committed, fake_context

VOTE = ButtonTemplate("vote:{id:int}:{choice:choice(yes|no)}")

PROPOSAL = FormSpec(
    form_id="idea",
    title="New proposal",
    fields=(
        Field("title", "Title", min_length=5, max_length=80),
        Field("budget", "Budget", required=False, validate=euros),
        Field("where", "Neighbourhood", choices=(("North", "nord"), ("South", "sud"))),
        Field("more", "Details", long=True),
        Field("who", "Who", required=False),
        Field("when", "When", required=False),
    ),
)


async def _submit_idea(ctx: Context, filled: Filled) -> Sequence[Action]:
    """The form's handler: posts the idea under a name, with typed buttons."""
    values = filled.values
    key = "idea:1"
    ctx.post(
        key,
        ctx.event.chat,
        f"Idée : {values['title']} ({values['where']}, {values['budget']} €)",
        buttons=(),
    )
    return [ctx.reply("merci")]


async def _vote(ctx: Context, press: Press) -> str | None:
    """A typed button: its values arrive parsed."""
    await ctx.edit_post(f"idea:{press.values['id']}", f"vote {press.values['choice']}")
    return "a voté" if press.values["choice"] == "yes" else None


async def _remind(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    await ctx.schedule("remind:1", "remind", timedelta(hours=1), subject=str(event.chat))
    return [ctx.reply("ok")]


async def _reminder_due(ctx: Context, event: TimeCame) -> Sequence[Action]:
    """The due time's handler: it gets the row's subject back (here, the chat to remind)."""
    chat = parse_chat_key(event.subject)
    return [SendMessage(chat=chat, content=FormattedText.plain("rappel !"))]


async def _pin(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    await ctx.pin_post("idea:1")
    return []


async def _delete(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    await ctx.delete_post("idea:1")
    return []


def _tables() -> Tables:
    commands = {
        **COMMANDS,
        "idee": Command(_submit_idea, "Propose an idea", form=PROPOSAL),  # type: ignore[arg-type]
        "rappel": Command(_remind, "Remind me"),
        "epingler": Command(_pin, "Pin", roles=STAFF),
        "retirer": Command(_delete, "Delete", roles=STAFF),
    }
    return Tables(
        commands=commands,
        unknown_command=help_.unknown_command,
        events=EVENTS,
        buttons={VOTE: _vote},
        due={"remind": DueEntry(DueKind("remind", stale_after=timedelta(hours=2)), _reminder_due)},
    )


def _settings(sqlite_url: str, **extra: object) -> Settings:
    return Settings(database_url=sqlite_url, **extra)  # type: ignore[arg-type]


# -- forms ------------------------------------------------------------------------------------


async def test_a_form_is_asked_step_by_step_and_its_handler_gets_clean_values(
    sqlite_url: str,
) -> None:
    async with Forum(_settings(sqlite_url), tables=_tables()) as forum:
        first = await forum.answer("con:nord /idee", as_name="Marie")
        assert "question 1/6" in first
        bad = await forum.answer("abc")
        assert "Trop court" in bad and "question 1/6" in bad
        assert "question 2/6" in await forum.answer("Un jardin partagé")
        refused = await forum.answer("beaucoup")
        assert "montant en euros" in refused and "question 2/6" in refused
        choice = await forum.say("1 500 €")
        assert "question 3/6" in choice[0].text
        assert [label for label, _ in choice[0].buttons] == ["North", "South"]
        # A button answers the choice; its id carries the form, the step and the value.
        await forum.say(f":clic {choice[0].buttons[1][1]}")
        assert "question 4/6" in forum.console.state.posted[-1].text
        await forum.say("Des bacs et des graines")
        await forum.say("-")
        done = await forum.say("/passer")
        assert [p.text for p in done][-1] == "merci"
        assert any("Idée : Un jardin partagé (sud, 1500 €)" in p.text for p in done)


async def test_a_form_resumes_after_a_restart_and_annuler_leaves_it(sqlite_url: str) -> None:
    settings = _settings(sqlite_url)
    async with Forum(settings, tables=_tables()) as forum:
        await forum.say("con:nord /idee", as_name="Marie")
        assert "question 2/6" in await forum.answer("Un jardin partagé")
    async with Forum(settings, tables=_tables()) as forum:
        # A new process: the form's state was in the database.
        forum.console.state.chat = "con:nord"
        assert "question 3/6" in await forum.answer("200", as_name="Marie")
        assert await forum.answer("/annuler") == "Annulé : rien n'a été gardé."
        # The next message is a message again, not an answer.
        assert await forum.say("bonjour") == []
        assert await forum.answer("/annuler") == "Il n'y a pas de formulaire à annuler ici."


async def test_a_form_expires_after_the_configured_silence(sqlite_url: str) -> None:
    async with Forum(_settings(sqlite_url, form_minutes=5), tables=_tables()) as forum:
        await forum.say("con:nord /idee", as_name="Marie")
        forum.clock.advance(timedelta(minutes=6))
        assert "expiré" in await forum.answer("Un jardin partagé")


async def test_a_form_answer_is_not_relayed_nor_stored_as_a_forum_message(sqlite_url: str) -> None:
    async with Forum(_settings(sqlite_url), tables=_tables()) as forum:
        await forum.say("tg:ouest /idee", as_name="Marie")
        posted = await forum.say("Un jardin partagé")
        assert all(p.chat == "tg:ouest" for p in posted)
        async with forum.db.read() as session:
            count = (await session.execute(sa.select(sa.func.count()).select_from(Message))).one()
        assert count[0] == 0


# -- typed buttons and named posts ------------------------------------------------------------


async def test_a_typed_button_reaches_its_handler_and_edits_the_named_post(
    sqlite_url: str,
) -> None:
    async with Forum(_settings(sqlite_url), tables=_tables()) as forum:
        await forum.say("con:nord /idee", as_name="Marie")
        for line in ("Un jardin partagé", "-", "nord", "Des bacs", "-", "-"):
            await forum.say(line)
        post = next(p for p in forum.console.state.posted if p.text.startswith("Idée"))
        forum.lines.clear()
        await forum.say(":clic " + VOTE.build(id=1, choice="yes"))
        assert f"[con:nord] (message #{post.message_id} modifié) vote yes" in forum.lines
        assert "[con:nord] (pour vous) a voté" in forum.lines


async def test_a_forged_button_gets_a_french_notice(sqlite_url: str) -> None:
    async with Forum(_settings(sqlite_url), tables=_tables()) as forum:
        for forged in ("vote:1:peut-être", "vote:x:yes", "poll:1:option:2", "vote:٣:yes"):
            forum.lines.clear()
            await forum.say(f"con:nord :clic {forged}")
            assert forum.lines == ["[con:nord] (pour vous) Ce bouton n'est plus valable."]


async def test_a_named_post_is_pinned_and_deleted_by_name_by_staff_only(sqlite_url: str) -> None:
    settings = _settings(sqlite_url, roles=RolesConfig(moderators=["console:lea"]))
    async with Forum(settings, tables=_tables()) as forum:
        await forum.say("con:nord /idee", as_name="Marie")
        for line in ("Un jardin partagé", "-", "nord", "Des bacs", "-", "-"):
            await forum.say(line)
        post = next(p for p in forum.console.state.posted if p.text.startswith("Idée"))
        assert await forum.answer("/epingler") == (
            "Seuls les modérateurs peuvent utiliser /epingler."
        )
        forum.lines.clear()
        await forum.say("/epingler", as_name="Lea")
        await forum.say("/retirer")
        assert forum.lines[-2:] == [
            f"[con:nord] (message #{post.message_id} épinglé)",
            f"[con:nord] (message #{post.message_id} supprimé)",
        ]
        forum.lines.clear()
        # Gone by name: a second deletion finds nothing to delete and sends nothing.
        await forum.say("/retirer")
        assert forum.lines == []


# -- due times --------------------------------------------------------------------------------


async def test_a_due_time_fires_once_across_a_restart(sqlite_url: str) -> None:
    settings = _settings(sqlite_url)
    async with Forum(settings, tables=_tables()) as forum:
        assert await forum.answer("con:nord /rappel") == "ok"
        assert await forum.tick() == 0
        clock = forum.clock
    clock.advance(timedelta(hours=1, minutes=30))  # the bot was down when it fell due
    async with Forum(settings, tables=_tables(), clock=clock) as forum:
        assert await forum.tick() == 1
        assert forum.lines[-1].endswith("rappel !")
        assert await forum.tick() == 0
        assert sum(line.endswith("rappel !") for line in forum.lines) == 1


async def test_a_stale_due_time_is_dropped(sqlite_url: str) -> None:
    async with Forum(_settings(sqlite_url), tables=_tables()) as forum:
        await forum.say("con:nord /rappel")
        forum.clock.advance(timedelta(hours=4))
        assert await forum.tick() == 0
        assert not any(line.endswith("rappel !") for line in forum.lines)


# -- the gate ---------------------------------------------------------------------------------


async def _hold_shouting(ctx: Context, event: Event) -> Verdict | None:
    if isinstance(event, MessageReceived) and "SPAM" in event.content.text:
        return Verdict(
            Outcome.HOLD, "looks like spam", notice="Your message waits for a moderator."
        )
    return None


async def test_a_held_message_is_not_relayed_until_a_moderator_releases_it(
    sqlite_url: str,
) -> None:
    settings = _settings(
        sqlite_url,
        roles=RolesConfig(moderators=["console:lea"]),
        channels=[ChannelConfig(platform="console", id="dc:mods", purpose="moderation")],
        bridges=[BridgeConfig(a="console:tg:ouest", b="console:dc:ouest")],
    )
    gate = Gate([GateCheck("spam", _hold_shouting)])
    async with Forum(settings, gate=gate) as forum:
        posted = await forum.say("tg:ouest achetez SPAM", as_name="Marie")
        assert not any(p.chat == "dc:ouest" for p in posted)
        held = next(p for p in posted if p.chat == "dc:mods")
        assert "looks like spam" in held.text and "achetez SPAM" in held.text
        release = dict(held.buttons)["Publier"]
        # A resident cannot release it.
        await forum.say(f"dc:mods :clic {release}", as_name="Marie")
        await forum.settle()
        assert "Seuls les modérateurs peuvent décider des messages retenus." in forum.lines[-1]
        await forum.say(f"dc:mods :clic {release}", as_name="Lea")
        await forum.settle()
        relayed = [p for p in forum.console.state.posted if p.chat == "dc:ouest"]
        assert [p.text for p in relayed] == ["achetez SPAM"]
        # A second press finds it decided; nothing crosses twice.
        await forum.say(f"dc:mods :clic {release}", as_name="Lea")
        await forum.settle()
        assert [p.text for p in forum.console.state.posted if p.chat == "dc:ouest"] == [
            "achetez SPAM"
        ]
        async with forum.db.read() as session:
            row = (await session.execute(sa.select(HeldMessage))).scalar_one()
        assert (row.decision, row.decided_by) == ("released", "console:lea")


# -- roles and handlers with a fake context ---------------------------------------------------


async def _who(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    return [ctx.reply("moderator" if ctx.is_moderator() else "resident")]


async def test_platform_roles_are_resolved_for_every_command_not_only_staff_ones(
    sqlite_url: str,
) -> None:
    tables = _tables()
    tables = Tables(
        commands={**tables.commands, "qui": Command(_who, "Who am I")},
        unknown_command=tables.unknown_command,
        events=tables.events,
    )
    async with Forum(_settings(sqlite_url), tables=tables) as forum:
        assert await forum.answer("tg:ouest /qui", as_name="Paul") == "resident"
        assert "Seuls les modérateurs" in await forum.answer("/statut")
        await forum.say(":admin")
        # Roles are trusted for a short while (settings.role_cache_seconds) ...
        assert await forum.answer("/qui") == "resident"
        # ... except for staff-only commands, which ask the platform afresh.
        assert "Seuls les modérateurs" not in await forum.answer("/statut")
        # An administrator of the chat on its platform (as a Telegram group admin is).
        assert await forum.answer("/qui") == "moderator"
        forum.console.state.admins.clear()
        forum.clock.advance(timedelta(seconds=61))
        assert await forum.answer("/qui") == "resident"


async def test_help_lists_staff_commands_only_to_staff() -> None:
    event = command("aide")
    resident = fake_context(None, event, commands=COMMANDS)
    listed = (await help_.show_help(resident, event))[0]
    assert "/statut" not in listed.content.text  # type: ignore[attr-defined]
    moderator = fake_context(None, event, commands=COMMANDS, roles=(Role.MODERATOR,))
    assert "/statut" in (await help_.show_help(moderator, event))[0].content.text  # type: ignore[attr-defined]


async def test_langue_signals_the_language_cache_after_the_commit() -> None:
    class Session:
        async def execute(self, *args: object, **kwargs: object) -> None:
            return None

        async def flush(self) -> None:
            return None

    event = command("langue", "en")
    ctx = fake_context(Session(), event)
    from storage import repository

    async def no_write(*args: object) -> None:
        return None

    original = repository.set_language
    repository.set_language = no_write  # type: ignore[assignment]
    try:
        answer = await help_.choose_language(ctx, event)
    finally:
        repository.set_language = original
    assert ctx.signals == []  # type: ignore[attr-defined]
    committed(ctx)
    assert ctx.signals == ["language"]  # type: ignore[attr-defined]
    assert "English" in answer[0].content.text  # type: ignore[attr-defined]


async def test_cancel_without_a_form_says_so(db: object) -> None:
    from storage.db import Database

    assert isinstance(db, Database)
    event = command("annuler")
    async with db.write() as session:
        ctx = fake_context(session, event)
        answer = await kit_handlers.cancel_form(ctx, event)
    assert answer[0].content.text == "Il n'y a pas de formulaire à annuler ici."  # type: ignore[attr-defined]
