"""/statut: for moderators, how delivery to each chat is going."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from bot.events import Action, CommandReceived

if TYPE_CHECKING:
    from bot.dispatcher import Context


async def show_status(ctx: Context, event: CommandReceived) -> Sequence[Action]:
    """List each destination chat's backlog, last delivery and last error."""
    outbox = ctx.dispatcher.outbox
    assert outbox is not None
    rows = await outbox.status(ctx.session)
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
