"""/statut: for moderators, how delivery to each chat is going."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from bot.events import Action, CommandReceived
from bot.outbox import delivery_status

if TYPE_CHECKING:
    from bot.handling import Context


async def show_status(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """List each destination chat's backlog, last delivery and last error."""
    rows = await delivery_status(ctx.session)
    if not rows:
        return [ctx.reply(ctx.t("Nothing has been sent yet."))]
    lines = [ctx.t("Delivery status:")]
    for row in rows:
        line = ctx.t(
            "{chat}: {pending} waiting, {failed} failed, last delivery {last}",
            chat=row.chat_key,
            pending=row.pending,
            failed=row.failed,
            last=row.last_delivery or ctx.t("never"),
        )
        if row.last_error:
            line += " — " + ctx.t("last error: {error}", error=row.last_error[:200])
        lines.append("• " + line)
    return [ctx.reply("\n".join(lines))]
