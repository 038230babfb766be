"""Commands of the kit itself: leaving a form."""

from __future__ import annotations

from collections.abc import Sequence

from bot import forms
from bot.events import Action, CommandReceived
from bot.handling import Context


async def cancel_form(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """/annuler: leave the form being filled in here; nothing of it is kept."""
    left = await forms.cancel(
        ctx.session, account_key=ctx.person.account_key, chat_key=str(event.chat)
    )
    if not left:
        return [ctx.reply(ctx.t("There is no form to cancel here."))]
    ctx.changed("forms")
    return [ctx.reply(ctx.t("Cancelled: nothing was kept."))]
