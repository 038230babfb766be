"""Moderators decide on the messages the gate held: release them to the forum, or drop them."""

from __future__ import annotations

from bot import gate
from bot.dispatcher import Press
from bot.handling import Context


async def decide(ctx: Context, press: Press) -> str | None:
    """A moderator's Release / Drop button under a held message."""
    if not ctx.is_moderator():
        return ctx.t("Only moderators can decide on held messages.")
    release = press.values["decision"] == "release"
    held_id = int(press.values["id"])
    row = await gate.decide(
        ctx.session,
        held_id,
        release=release,
        by=ctx.person.account_key,
        now=ctx.clock.now(),
    )
    if row is None:
        return ctx.t("This message was already decided on.")
    if release:
        # The released message is handled from the core inbox once this commits.
        ctx.changed(f"inbox:{gate.CORE_PLATFORM}")
    verdict = ctx.t("Released") if release else ctx.t("Dropped")
    who = press.event.author.display_name
    await ctx.edit_post(
        gate.held_post_key(held_id),
        ctx.t(
            "{verdict} by {moderator}: held message #{id}.",
            verdict=verdict,
            moderator=who,
            id=held_id,
        ),
        buttons=(),
    )
    return verdict
