"""Every text a resident reads goes through gettext catalogs (Babel), French by default.

Message ids are the English texts, so English needs no catalog. Catalogs are the ``.po`` files
under ``bot/locale``; they are compiled in memory on first use, which keeps the repository free
of generated ``.mo`` files and the build free of an extra step.
"""

from __future__ import annotations

import gettext
import io
import logging
from functools import cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from bot.config import SUPPORTED_LANGUAGES

logger = logging.getLogger(__name__)

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "messages"


def N_(message: str) -> str:
    """Mark a text for translation where it is defined; it is translated where it is shown."""
    return message


@cache
def translations(language: str) -> gettext.NullTranslations:
    """The compiled catalog for ``language`` (English: the message ids themselves)."""
    po_path = LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if language == "en" or not po_path.exists():
        return gettext.NullTranslations()
    with po_path.open("rb") as handle:
        catalog = read_po(handle, locale=language)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


class Translator:
    """Translates and formats texts for one language."""

    def __init__(self, language: str) -> None:
        self.language = language if language in SUPPORTED_LANGUAGES else "fr"
        self._catalog = translations(self.language)

    def t(self, message: str, /, **values: object) -> str:
        """Translate ``message`` and fill its ``{placeholders}``."""
        text = self._catalog.gettext(message)
        return text.format(**values) if values else text

    def tn(self, singular: str, plural: str, n: int, /, **values: object) -> str:
        """Translate with a plural form chosen by ``n`` (available as ``{n}``)."""
        text = self._catalog.ngettext(singular, plural, n)
        return text.format(n=n, **values)
