"""Every text a resident reads has its French translation."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from bot.i18n import LOCALE_DIR, Translator

ROOT = Path(__file__).resolve().parent.parent
KEYWORDS = {"t": None, "tn": (1, 2), "N_": None}
PACKAGES = ("bot", "handlers", "storage", "moderation", "digests")


def _used_ids() -> set[str]:
    ids: set[str] = set()
    for package in PACKAGES:
        for _file, _line, message, _comments, _context in extract_from_dir(
            ROOT / package, method_map=[("**.py", "python")], keywords=KEYWORDS
        ):
            ids.add(message[0] if isinstance(message, tuple) else message)
    return ids


def test_every_used_text_has_a_french_translation() -> None:
    with (LOCALE_DIR / "fr" / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        catalog = read_po(handle, locale="fr")
    used = _used_ids()
    assert used, "the extractor found no texts: the keywords are wrong"
    missing = sorted(i for i in used if i not in catalog or not catalog[i].string)
    fuzzy = sorted(i for i in used if i in catalog and catalog[i].fuzzy)
    assert missing == []
    assert fuzzy == []


def test_placeholders_survive_translation() -> None:
    with (LOCALE_DIR / "fr" / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        catalog = read_po(handle, locale="fr")
    import string

    def fields(text: str) -> set[str]:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name}

    broken = [
        m.id
        for m in catalog
        if m.id and isinstance(m.id, str) and fields(m.id) != fields(str(m.string))
    ]
    assert broken == []


def test_english_is_available_and_french_is_the_default() -> None:
    assert (
        Translator("en").t("Did you mean /{suggestion}?", suggestion="aide")
        == "Did you mean /aide?"
    )
    assert (
        Translator("fr").t("Did you mean /{suggestion}?", suggestion="aide")
        == "Vouliez-vous dire /aide ?"
    )
    assert Translator("xx").language == "fr"
