"""Names that could pass for the town hall or its staff, found by their confusable skeleton.

A skeleton (Unicode UTS #39, with the ``confusables.txt`` data shipped by the
``confusable-homoglyphs`` package) maps every character to the prototype it is confused with:
Cyrillic "М" and Greek "Μ" to Latin "M", "ɑ" to "a", "1" and "I" to "l", "m" to "rn". Here it is
applied to the NFKC form of the name (fullwidth and mathematical letters become plain ones)
before case folding, because the data is case-sensitive: folding first turns "М" into "м", which
the data confuses with "ʍ", not with "m", and lets "МAIRIE" through. Invisible characters,
accents and separators are dropped, and digits or signs written for letters read as those
letters.

The rule: a name looks official when its skeleton contains the skeleton of an official word
anywhere (so "M a i r i e" and "Jean.Maire" do, and so do surnames such as "Lemaire", and
"admin" inside a longer name), or equals the skeleton of a protected name (a moderator's, the
town's). The mark this earns only says "resident, not official": a resident wrongly marked
loses little, a missed impersonation costs the forum's trust.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import cache

from bot.richtext import sanitize

OFFICIAL_WORDS = ("mairie", "maire", "conseil", "moderat", "admin", "officiel", "forumhabitant")

# What the skeleton leaves apart but a reader takes for a letter in a name (0, 1 and | are in
# the data already). UTS #39 is case-sensitive: "I" and "l" share a skeleton, "i" does not, so
# once folded, l and i are one letter.
_LETTERS_WRITTEN_AS = str.maketrans(
    {"3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i", "l": "i"}
)
# Latin small capitals (ᴍᴀɪʀɪᴇ) and letters in black boxes or circles (🅼🅰🅸🆁🅸🅴) have neither a
# compatibility decomposition nor a Latin prototype in the data; their names say which letter
# they draw. Only these blocks hold such characters.
_LETTER_SHAPE_BLOCKS = ((0x0250, 0x02AF), (0x1D00, 0x1D2B), (0xA720, 0xA7FF), (0x1F150, 0x1F189))
_LETTER_SHAPE_NAME = re.compile(
    r"(?:LATIN LETTER SMALL CAPITAL|NEGATIVE (?:SQUARED|CIRCLED) LATIN CAPITAL LETTER) ([A-Z])"
)
_MARKS = frozenset({"Mn", "Me"})
# The data marks right-to-left characters with LEFT-TO-RIGHT MARKs for display.
_LRM = "\u200e"
# Folding can uncover a look-alike ("М" → "M" → "m" → "rn"); a few rounds reach a fixed point.
_ROUNDS = 4


@cache
def _prototypes() -> dict[int, str]:
    """Each confusable character → its prototype, from the package's UTS #39 data."""
    # Imported here: the package reads its 900 kB of data at import time.
    from confusable_homoglyphs.confusables import confusables_data

    table: dict[int, str] = {}
    for key, homoglyphs in confusables_data.items():
        source = key.replace(_LRM, "")
        if len(source) != 1 or len(homoglyphs) != 1:
            # A prototype lists every character confused with it; a source names one prototype.
            continue
        raw_target = homoglyphs[0]["c"]
        target = raw_target.replace(_LRM, "")
        partners = confusables_data.get(raw_target, ())
        # The data holds each line of confusables.txt both ways round. A prototype of several
        # characters, or one confused with several, is the prototype; for a lone pair of single
        # characters either may stand for both, so the smaller one does, the same on every run.
        if len(target) != 1 or len(partners) > 1 or target < source:
            table[ord(source)] = target
    return table


@cache
def _letter_shapes() -> dict[int, str]:
    """Small capitals and boxed letters → the Latin letter they draw."""
    table: dict[int, str] = {}
    for first, last in _LETTER_SHAPE_BLOCKS:
        for code in range(first, last + 1):
            match = _LETTER_SHAPE_NAME.fullmatch(unicodedata.name(chr(code), ""))
            if match:
                table[code] = match.group(1)
    return table


def _uts39(text: str) -> str:
    """The UTS #39 skeleton of ``text`` without its combining marks."""
    decomposed = unicodedata.normalize("NFD", text).translate(_prototypes())
    return "".join(
        c for c in unicodedata.normalize("NFD", decomposed) if unicodedata.category(c) not in _MARKS
    )


def skeleton(text: str) -> str:
    """The key under which names that look alike, whatever their case, script or style, are equal."""
    # sanitize() removes zero-width and bidirectional characters but keeps the joiners that
    # emoji need; in a name they only hide letters from the comparison.
    visible = sanitize(text).replace("\u200c", "").replace("\u200d", "")
    key = unicodedata.normalize("NFKC", visible).translate(_letter_shapes())
    for _ in range(_ROUNDS):
        folded = _uts39(key).casefold()
        if folded == key:
            break
        key = folded
    return "".join(c for c in key.translate(_LETTERS_WRITTEN_AS) if c.isalnum())


@cache
def _official_skeletons() -> tuple[str, ...]:
    return tuple(skeleton(word) for word in OFFICIAL_WORDS)


def looks_official(name: str, protected: Iterable[str] = ()) -> bool:
    """Could ``name`` pass for the town hall, its staff, or one of the ``protected`` names?"""
    key = skeleton(name)
    if not key:
        return False
    if any(word in key for word in _official_skeletons()):
        return True
    return any(skeleton(other) == key for other in protected)
