"""/aide, the answer to an unknown command, and /langue."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bot.config import SUPPORTED_LANGUAGES
from bot.events import Action, CommandReceived
from bot.i18n import Translator
from storage import repository

if TYPE_CHECKING:
    from bot.handling import Context


def _listed(ctx: Context) -> list[tuple[str, str, str]]:
    return [
        (name, command.usage, ctx.t(command.summary))
        for name, command in ctx.commands.items()
        if not command.hidden and (command.roles is None or ctx.has_role(*command.roles))
    ]


async def show_help(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """List every command the reader may use, in their language."""
    lines = [
        ctx.t("Hello! I am the bot of the residents' forum of {town}.", town=ctx.settings.town)
    ]
    lines.append(ctx.t("Here is what you can ask me:"))
    for name, usage, summary in _listed(ctx):
        shown = f"/{name} {usage}".rstrip()
        lines.append(f"• {shown} — {summary}")
    lines.append(ctx.t("Everything else you write is shared with the forum."))
    return [ctx.reply("\n".join(lines))]


async def unknown_command(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """Say the command is unknown, suggest the closest one and point to /aide."""
    names = [name for name, _, _ in _listed(ctx)]
    close = difflib.get_close_matches(event.name, names, n=1, cutoff=0.6)
    text = ctx.t("I don't know the command /{command}.", command=event.name)
    if close:
        text += " " + ctx.t("Did you mean /{suggestion}?", suggestion=close[0])
    text += " " + ctx.t("Type /aide to see what I can do.")
    return [ctx.reply(text)]


async def choose_language(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """Set the language the bot uses with this person (``/langue en``)."""
    wanted = event.args.strip().lower()[:2]
    if wanted not in SUPPORTED_LANGUAGES:
        return [
            ctx.reply(
                ctx.t(
                    "Please name a language: /langue fr or /langue en. Currently: {language}.",
                    language=ctx.language,
                )
            )
        ]
    author = event.author
    await repository.set_language(
        ctx.session, "account", f"{author.platform}:{author.user_id}", wanted
    )
    ctx.changed("language")
    confirm = Translator(wanted).t("From now on I will write to you in English.")
    if wanted == "fr":
        confirm = Translator("fr").t("From now on I will write to you in French.")
    return [ctx.reply(confirm)]
