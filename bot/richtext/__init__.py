"""Platform-neutral rich text shared by the Telegram and Discord sides of the bridge.

A message is held as a :class:`FormattedText`: the exact text a reader sees plus a tuple of
:class:`Span` (style, start, end) whose offsets count Python ``str`` code points, end exclusive.
Nothing here imports ``telegram`` or ``discord``: both sides convert through this model.

Conversions
-----------
* Telegram in:  :func:`from_telegram_entities` (Bot API entity dicts, UTF-16 offsets) and
  :func:`from_telegram_html`.  Telegram out: :func:`to_telegram_html` (no ``@username`` in it
  becomes a mention: :func:`defuse_telegram_mentions`), :func:`to_telegram_entities`.
* Discord in:   :func:`from_discord_markdown`.  Discord out: :func:`to_discord_markdown`.
* Every ``from_*`` result is sanitised (:func:`sanitize_formatted`) and normalised
  (:meth:`FormattedText.normalized`); every ``to_*`` renderer sanitises its input first.

What cannot cross is computed exactly by the ``canonical_for_*`` functions and described in
the docstrings of :mod:`bot.richtext.telegram` and :mod:`bot.richtext.discord`.

Modules
-------
* :mod:`bot.richtext.model`: :class:`FormattedText`, :class:`Span`, :class:`Style`.
* :mod:`bot.richtext.sanitizing`: :func:`sanitize`, :func:`sanitize_formatted`.
* :mod:`bot.richtext.nesting`: span range helpers and nesting shared by the converters.
* :mod:`bot.richtext.telegram`: Telegram entities and HTML, both ways.
* :mod:`bot.richtext.discord`: Discord markdown, both ways, with its reference parser.
* :mod:`bot.richtext.splitting`: :func:`split` into platform-sized parts.

Everything public is re-exported here; import from ``bot.richtext``, not from the modules.
"""

from __future__ import annotations

# The ``name as name`` imports are private names kept reachable from here: the tests drive
# _emit_discord directly, and bot.codec registers every dataclass and enum it finds in
# vars(bot.richtext), which held _Tree and the _D* parse nodes before the package split.
from bot.richtext.discord import _DCode as _DCode
from bot.richtext.discord import _DElem as _DElem
from bot.richtext.discord import _DText as _DText
from bot.richtext.discord import _emit_discord as _emit_discord
from bot.richtext.discord import (
    canonical_for_discord,
    from_discord_markdown,
    render_discord_visible,
    to_discord_markdown,
)
from bot.richtext.model import FormattedText, Span, Style, visible_text
from bot.richtext.nesting import _Tree as _Tree
from bot.richtext.sanitizing import sanitize, sanitize_formatted
from bot.richtext.splitting import split
from bot.richtext.telegram import (
    WORD_JOINER,
    canonical_for_telegram,
    defuse_telegram_mentions,
    from_telegram_entities,
    from_telegram_html,
    render_telegram_visible,
    to_telegram_entities,
    to_telegram_html,
    utf16_len,
)

__all__ = [
    "WORD_JOINER",
    "FormattedText",
    "Span",
    "Style",
    "canonical_for_discord",
    "canonical_for_telegram",
    "defuse_telegram_mentions",
    "from_discord_markdown",
    "from_telegram_entities",
    "from_telegram_html",
    "render_discord_visible",
    "render_telegram_visible",
    "sanitize",
    "sanitize_formatted",
    "split",
    "to_discord_markdown",
    "to_telegram_entities",
    "to_telegram_html",
    "utf16_len",
    "visible_text",
]
