"""Names that could pass for the town hall or its staff, found by their confusable skeleton.

A skeleton (Unicode UTS #39, with the ``confusables.txt`` data shipped by the
``confusable-homoglyphs`` package) maps every character to the prototype it is confused with:
Cyrillic "М" and Greek "Μ" to Latin "M", "ɑ" to "a", "1" and "I" to "l", "m" to "rn". Here it is
applied to the NFKD form of the name (fullwidth and mathematical letters become plain ones)
before case folding, because the data is case-sensitive: folding first turns "М" into "м", which
the data confuses with "ʍ", not with "m", and lets "МAIRIE" through. Invisible characters,
accents and separators are dropped, and digits or signs written for letters read as those
letters. Where the data has no Latin prototype for a letter that "fancy text" generators draw
in place of a Latin one (Canadian syllabics, faux Cyrillic, Greek capitals), a small table of
this module's own, ``_DRAWN_AS``, supplies it; for small capitals, boxed letters and regional
indicator symbols, the characters' names do.

The rule: a name looks official when an official word's skeleton can be read in it, or when its
skeleton equals the skeleton of a protected name (a moderator's, the town's; separators count
for nothing there, so "L é a  M a r t i n" is "Léa Martin"). For official words the name is read
word by word: a word is a run of characters that have a skeleton, split by the visible ones
that have none (spaces, punctuation, emoji, blank fillers such as U+2800), while invisible ones
(zero-width, joiners, combining marks) split nothing. An official word is read

* anywhere inside one word: "Mairie de Loos", "Jean.Maire", and surnames such as "Lemaire",
  "admin" inside a longer name;
* across words, when every word it reaches into either lies wholly inside it (with one of its
  usual endings: ``_ENDINGS``) or is a fragment of at most two letters: "M a i r i e",
  "M.a.i.r.i.e", "Ma irie", "Mai rie", "Adm in", "Con seil", "Modé rateur", "Forum Habitants",
  "xM a i r i e". Real words that only hold the official word across their gap ("Emma Irène",
  "Ahmad Mina", "Tom Aire", "Mai Renaud": "…ma|ire…", "…ad|min…", "…m|aire", "…mai|re…") are
  not read so: no reader takes them for it.

ASCII signs and digits that stand for letters ("Adm!n", "M@irie", "M41R13") are read both as those letters and as
separators, so that "M|a|i|r|i|e" and "M!a!i!r!i!e" are read as spaced letters too. The mark a
match earns only says "resident, not official": a resident wrongly marked loses little, a
missed impersonation costs the forum's trust.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Iterable
from functools import cache, lru_cache

from bot.richtext import sanitize

OFFICIAL_WORDS = ("mairie", "maire", "conseil", "moderat", "admin", "officiel", "forumhabitant")
# Read across words, an official word has to take in the whole of the words it reaches, so the
# endings with which a reader still takes it for the word are listed ("Modé rateur", "Forum
# Habitants", "Ad ministrateur"). Inside one word the official word alone is enough.
_ENDINGS = {
    "mairie": ("s",),
    "maire": ("s",),
    "conseil": ("s", "ler", "lers", "lère", "lères"),
    "moderat": ("eur", "eurs", "rice", "rices", "ion"),
    "admin": ("s", "istrateur", "istrateurs", "istratrice", "istratrices", "istration"),
    "officiel": ("s", "le", "les"),
    "forumhabitant": ("s",),
}

# What the skeleton leaves apart but a reader takes for a letter in a name (0, 1 and | are in
# the data already). UTS #39 is case-sensitive: "I" and "l" share a skeleton, "i" does not, so
# once folded, l and i are one letter.
_LETTERS_WRITTEN_AS = str.maketrans(
    {"3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i", "l": "i"}
)
# Latin small capitals (ᴍᴀɪʀɪᴇ), letters in black boxes or circles (🅼🅰🅸🆁🅸🅴) and the regional
# indicator symbols that flags are made of (🇲 🇦 🇮 🇷 🇮 🇪, drawn as boxed letters when apart) have
# neither a compatibility decomposition nor a Latin prototype in the data; their names say which
# letter they draw. Only these blocks hold such characters.
_LETTER_SHAPE_BLOCKS = (
    (0x0250, 0x02AF),
    (0x1D00, 0x1D2B),
    (0xA720, 0xA7FF),
    (0x1F150, 0x1F189),
    (0x1F1E6, 0x1F1FF),
)
_LETTER_SHAPE_NAME = re.compile(
    r"(?:LATIN LETTER SMALL CAPITAL|NEGATIVE (?:SQUARED|CIRCLED) LATIN CAPITAL LETTER"
    r"|REGIONAL INDICATOR SYMBOL LETTER) ([A-Z])"
)
# The project's own table: letters of other scripts that "fancy text" generators draw for Latin
# ones and that UTS #39 leaves without a Latin prototype (or gives one a reader would not see:
# "є" → "ꞓ", "Λ" → "Ʌ", "п" → "π", "м" → "ʍ"). Whole alphabets, not the letters of the official
# words only; letters the data already maps (ᗷ, ᗪ, ᗰ, ᖇ, α, ι, η, ѕ…) are not repeated. It is
# applied to the name and again to each round of its skeleton, so prototypes the data gives
# ("ᴙ" → "я") come along. Lower-case forms are added below for the Cyrillic letters, whose small
# letters are small capitals of the same shape.
_DRAWN_AS = {
    # Canadian syllabics, with a Cherokee and a Tagbanwa letter, in the "ᗩᗷᑕᗪᗴᖴᏀᕼᏆᒍᏦᏞᗰᑎᝪᑭᑫᖇᔕᎢᑌᐯᗯ᙭ᎩᏃ"
    # alphabet of fancy-text generators.
    "ᗩ": "A",
    "ᑕ": "C",
    "ᗴ": "E",
    "Ꮖ": "I",
    "ᝪ": "O",
    "ᑫ": "Q",
    "ᔕ": "S",
    "ᔑ": "S",
    "ᗯ": "W",
    "ᘔ": "Z",
    # Greek capitals in the "ΛBCDΣ…" styles, and the small letters of the "αвc∂єƒ…" one.
    "Λ": "A",
    "Σ": "E",
    "Ξ": "E",
    "ε": "e",
    "ω": "w",
    "∂": "d",  # PARTIAL DIFFERENTIAL, the "d" of the same style
    "Ƨ": "S",  # LATIN CAPITAL LETTER TONE TWO, the "S" of the "ΛBCDΣ…" style (data: "2")
    # Cyrillic small letters of the "αвc∂єƒgнιנкℓмησρqяѕтυνωχуz" style; the data maps its "н",
    # "т", "в" to small capitals already, but "м" to "ʍ" and "к" to "ĸ".
    "м": "m",
    "к": "k",
}
# Faux Cyrillic: capitals drawn for the Latin letter they resemble, mirrored or not ("MAIЯIE",
# "ΛDMIИ", "ЦЯSЦLΛ"). ("Й" is "И" once decomposed.)
_FAUX_CYRILLIC = {
    "Д": "A",
    "Є": "E",
    "Э": "E",
    "И": "N",
    "П": "N",
    "Ф": "O",
    "Я": "R",
    "Ц": "U",
    "Ш": "W",
    "Щ": "W",
    "Ж": "X",
    "Ч": "Y",
}
_DRAWN_AS |= _FAUX_CYRILLIC | {k.lower(): v.lower() for k, v in _FAUX_CYRILLIC.items()}
# Characters that draw nothing: they join the letters around them rather than separate them.
# (sanitize() has removed the rest of what is invisible, except the joiners emoji need.)
_SIGNS_AND_DIGITS = frozenset(string.punctuation + string.digits)
_INVISIBLE = frozenset({"Mn", "Me", "Cf"})
_MARKS = frozenset({"Mn", "Me"})
# The data marks right-to-left characters with LEFT-TO-RIGHT MARKs for display.
_LRM = "\u200e"
# Folding can uncover a look-alike ("М" → "M" → "m" → "rn"); a few rounds reach a fixed point.
_ROUNDS = 4
# A word of at most this many letters is a fragment: an official word may reach into part of it.
_FRAGMENT = 2


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
def _drawn_letters() -> dict[int, str]:
    """Small capitals, boxed letters, regional indicators and ``_DRAWN_AS`` → their letter."""
    table: dict[int, str] = {ord(char): letter for char, letter in _DRAWN_AS.items()}
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


@lru_cache(maxsize=4096)
def _letters(char: str) -> str:
    """The skeleton of one character: the letters (often none, often one) it is read as."""
    drawn = _drawn_letters()
    # Decomposed, so that the table reads "έ" as it reads "ε".
    key = unicodedata.normalize("NFKD", char).translate(drawn)
    for _ in range(_ROUNDS):
        folded = _uts39(key).translate(drawn).casefold()
        if folded == key:
            break
        key = folded
    read = "".join(c for c in key.translate(_LETTERS_WRITTEN_AS) if c.isalnum())
    if unicodedata.category(char)[0] in "LN":
        return read
    # A sign is read as a letter only when it draws a Latin one ("@", "∩", "Ⓜ"). UTS #39 gives
    # dashes and box-drawing lines ("—", "―", "─") the prototype "ー", which is a letter to
    # ``str.isalnum``: read as one, a dash would join "Mai—rie" into a word instead of
    # separating it as "-" does.
    return "".join(c for c in read if c.isascii())


def _words(text: str, signs_separate: bool = False) -> list[tuple[str, int]]:
    """The words of ``text``: each one's skeleton and how many characters it is written with.

    With ``signs_separate``, ASCII signs ("!", "@", "$", "|") and digits split words instead of
    being read as letters: "Mai rie59" holds "Mai rie" beside a department number, as
    "M|a|i|r|i|e" holds spaced letters.
    """
    words: list[tuple[str, int]] = []
    letters: list[str] = []
    for char in sanitize(text):
        if unicodedata.category(char) in _INVISIBLE:
            continue
        read = "" if signs_separate and char in _SIGNS_AND_DIGITS else _letters(char)
        if read:
            letters.append(read)
        elif letters:
            words.append(("".join(letters), len(letters)))
            letters = []
    if letters:
        words.append(("".join(letters), len(letters)))
    return words


def skeleton(text: str) -> str:
    """The key under which names that look alike, whatever their case, script or style, are equal."""
    return "".join(word for word, _ in _words(text))


def _reading(words: list[tuple[str, int]]) -> tuple[str, list[tuple[int, int, int]]]:
    """The words joined, and each word's span in the join with its count of letters."""
    spans: list[tuple[int, int, int]] = []  # start, end in key; letters
    for word, count in words:
        start = spans[-1][1] if spans else 0
        spans.append((start, start + len(word), count))
    return "".join(word for word, _ in words), spans


def _reads(reading: tuple[str, list[tuple[int, int, int]]], target: str) -> bool:
    """Can ``target`` be read in these words, by the rule of the module docstring?"""
    key, spans = reading
    found = key.find(target)
    while found != -1:
        end = found + len(target)
        reached = [span for span in spans if span[0] < end and span[1] > found]
        if len(reached) == 1 or all(
            (found <= start and stop <= end) or count <= _FRAGMENT for start, stop, count in reached
        ):
            return True
        found = key.find(target, found + 1)
    return False


@cache
def _official_skeletons() -> tuple[str, ...]:
    """The official words and their forms with ``_ENDINGS``, as skeletons."""
    forms = (word + ending for word in OFFICIAL_WORDS for ending in ("", *_ENDINGS.get(word, ())))
    return tuple(dict.fromkeys(skeleton(form) for form in forms))


def looks_official(name: str, protected: Iterable[str] = ()) -> bool:
    """Could ``name`` pass for the town hall, its staff, or one of the ``protected`` names?"""
    return _looks_official(name, tuple(protected))


# Asked for every relayed message, mostly about the same few names: the verdict is kept.
@lru_cache(maxsize=4096)
def _looks_official(name: str, protected: tuple[str, ...]) -> bool:
    words = _words(name)
    key = "".join(word for word, _ in words)
    if not key:
        return False
    readings = (_reading(words), _reading(_words(name, signs_separate=True)))
    if any(_reads(reading, word) for reading in readings for word in _official_skeletons()):
        return True
    return any(_skeleton(other) == key for other in protected)


@lru_cache(maxsize=1024)
def _skeleton(text: str) -> str:
    return skeleton(text)
