"""Names that could pass for the town hall or its staff are marked; residents' names are not.

The rule (bot/names.py): a name is marked when its skeleton contains the skeleton of an official
word (mairie, maire, conseil, moderat…, admin, officiel, forumhabitant) or equals the skeleton of
a protected name. Judgement calls, stated here so that they are decided once:

* The official words are looked for anywhere inside a word: "Jean.Maire" must not pass, so
  surnames containing a word are marked too ("Lemaire", "Delmaire"). The mark only adds
  "(habitant·e, non officiel)"; a missed impersonation costs more.
* Across words, an official word is read only if it takes in whole every word it reaches (with
  its usual endings: "Modé rateur", "Forum Habitants"), fragments of one or two letters apart:
  "M a i r i e", "Ma irie", "Mai rie", "Adm in", "M. Aire" are marked; real names that only
  hold one across their gap are not ("Emma Irène", "Ahmad Mina", "Tom Aire", "Mai Renaud").
* Letters that "fancy text" generators draw from other scripts read as the Latin letter they
  stand for, by Unicode's data or by bot/names.py's own small table ("ᗰᗩIᖇIᗴ", "MAIЯIE",
  "MΛIRIE", "🇲 🇦 🇮 🇷 🇮 🇪"); a name written in its own script is no look-alike ("Мария").
* "Marie", "Mario", "Admir", "Amira" are not official words, nor contain one: not marked.
* Digits and signs written for letters count as the letters (4 a, 3 e, 1 i/l, 0 o, 5 s, 7 t, @ a,
  $ s, ! i): "M41R1E". A resident called "Marie 1974" stays unmarked: no word appears.
"""

from __future__ import annotations

import pytest

from bot.events import ChatRef
from bot.names import _DRAWN_AS, _prototypes, _uts39, looks_official, skeleton
from handlers.bridge import display_name

MARKED = "(habitant·e, non officiel)"
TELEGRAM = ChatRef("telegram", "-100")

ZWJ, ZWNJ, ZWSP, WJ = "\u200d", "\u200c", "\u200b", "\u2060"

EVASIONS = [
    "МAIRIE",  # Cyrillic capital em
    "ADМIN",  # Cyrillic capital em
    "Mɑirie",  # Latin alpha
    "Mаirie",  # Cyrillic a
    "Mairiе",  # Cyrillic ie
    "МАІRІЕ",  # Cyrillic capitals, Ukrainian I
    "ΜΑΙRΙΕ",  # Greek capitals
    "Μairie",  # Greek capital mu
    "Μοdérateur",  # Greek mu and omicron
    "Admіn",  # Cyrillic byelorussian-ukrainian i
    "Ⅿairie",  # Roman numeral one thousand
    "ℳairie",  # script capital M
    "Ｍａｉｒｉｅ",  # fullwidth
    "ＡＤＭＩＮ",  # fullwidth
    "𝐌𝐚𝐢𝐫𝐢𝐞",  # mathematical bold
    "𝓜𝓪𝓲𝓻𝓲𝓮",  # mathematical bold script
    "𝕄𝕒𝕚𝕣𝕚𝕖",  # double-struck
    "M𝖺𝗂𝗋𝗂𝖾",  # mathematical sans-serif
    "ᴍᴀɪʀɪᴇ",  # small capitals
    f"Mai{ZWJ}rie",  # zero-width joiner inside
    f"Ma{ZWNJ}irie",  # zero-width non-joiner
    f"Ad{ZWSP}min",  # zero-width space
    f"Mai{WJ}rie",  # word joiner
    "Ad\u00admin",  # soft hyphen
    "Mairie\u202e",  # bidi override
    "M\u0300airie",  # combining grave
    "Ma\u0308irie",  # combining diaeresis
    "".join(c + "\u0336" for c in "Mairie"),  # combining strikethrough on every letter
    "Mâirié",  # precomposed accents
    "M41R1E",  # digits for letters
    "4DM1N",
    "0ff1c1el",
    "C0N5EIL",
    "M@irie",
    "Adm!n",
    "M a i r i e",  # spaced
    "M.a.i.r.i.e",  # dotted
    "M_a_i_r_i_e",
    "M-a-i-r-i-e",
    "rnairie",  # r n for m
    "MAIRIE",
    "mairie",
    "Le Maire",
    "Conseil municipal",
    "Modératrice",
    "Service officiel",
    "Forum Habitant",
    "admin du groupe",
    # Letters without a Latin prototype in Unicode's data: bot/names.py's own table.
    "ᗰᗩIᖇIᗴ",  # Canadian syllabics, the output of "fancy text" generators
    "ᗩᗪᗰIᑎ",
    "ᑕOᑎᔕᗴIᒪ",
    "ᗰOᗪᗴᖇᗩTᗴᑌᖇ",
    "ᎷᎪᏆᎡᏆᎬ",  # Cherokee, with QUA for I
    "MAIЯIE",  # faux Cyrillic: Ya for R
    "ΛDMIИ",  # Greek lambda for A, Cyrillic I for N
    "MΛIRIE",
    "OFFICIΣL",  # Greek sigma for E
    "ɱαιяιє",  # m with hook, alpha, iota, ya, ukrainian ie
    "мσ∂єяαтєυя",  # the "αвc∂єƒ" style: Cyrillic em, partial differential
    "α∂мιη",
    "¢σηѕєιℓ",
    "сопѕеіl",  # Cyrillic pe for n
    "🇲 🇦 🇮 🇷 🇮 🇪",  # regional indicators apart, drawn as boxed letters
    "🇦🇩🇲🇮🇳",  # and together, drawn as flags or letters
    # Official words split across words: every word reached lies wholly inside the official
    # word, or is a fragment of one or two letters.
    "Ma irie",
    "Mai rie",
    "Mair ie",
    "M aire",
    "Adm in",
    "Con seil",
    "Modé rateur",  # with an ending of the word
    "Ad ministrateur",
    "Forum Habitants",
    "Le Mai rie de Loos",
    "xM a i r i e",  # a fragment reached in part
    "Mairi ex",
    "С О П Ѕ Е І L",  # Cyrillic and spaced
    "M·a·i·r·i·e",  # middle dots
    "M\u3000a\u3000i\u3000r\u3000i\u3000e",  # ideographic spaces
    "M🔹A🔹I🔹R🔹I🔹E",  # emoji between the letters
    f"M a{ZWSP}i r i e",  # visible and invisible separators mixed
    "Ma\u2800irie",  # braille blank: visible, so a separator
    "M|a|i|r|i|e",  # a sign that reads as a letter ("|" as l) used as a separator
    "A!D!M!I!N",
]

RESIDENTS = [
    "Émile",
    "Maïté",
    "Marie-Noëlle",
    "Çağla",
    "Mariette",
    "Amaury",
    "Marin",
    "Adèle",
    "Admir",
    "Marie",
    "Marie Dupont",
    "Mario",
    "Marion",
    "Marine",
    "Maïa",
    "Amira",
    "Myriam",
    "Mireille",
    "Aimé",
    "Rémi",
    "Zoé",
    "Inès",
    "Gaëlle",
    "Anaïs",
    "Hélène",
    "Jérôme",
    "François",
    "Loïc",
    "Maëlys",
    "Aminata",
    "Dominique",
    "Benjamin",
    "Yasmine",
    "Radmila",
    "Conceição",
    "Ophélie",
    "Marie 1974",
    "Jean-Luc",
    "Ngozi",
    "Đorđe",
    "Søren",
    "Zoë O'Connor",
    "李小龍",
    "Александр",  # a Cyrillic name in its own script is not a look-alike of anything official
    "Ελένη",
    "Мария",  # nor are these, though the project's table maps some of their letters
    "Дмитрий",
    "Наталья",
    "Яна",
    "Σοφία",
    "Λάμπρος",
    "Salma 🇲🇦",  # a flag is read as its two letters, and is a word of its own
    # An official word across the gap between two real words: not read so.
    "Emma Irène",  # em|ma ire|ne
    "Salma Irène",
    "Fatima Irène",
    "Emma Ireland",
    "Selma Irie",
    "Ma Irène",  # a surname of two letters, then a first name it does not lie wholly inside
    "Tom Aire",  # to|m aire
    "Sam Airey",
    "Mai Renaud",  # mai re|naud
    "Mai Rémy",
    "Tom A. Ireland",
    "Ahmad Mina",  # ahm|ad mi|na
    "Mourad Minet",
    "Conrad Minot",
    "Jihad Minet",
    "Noam Irie",
    "Salma Ines",
    "Adam Indra",
]


@pytest.mark.parametrize("name", EVASIONS)
def test_a_look_alike_of_an_official_word_is_marked(name: str) -> None:
    assert looks_official(name), (name, skeleton(name))
    assert MARKED in display_name(name, TELEGRAM)


@pytest.mark.parametrize("name", RESIDENTS)
def test_an_ordinary_name_is_not_marked(name: str) -> None:
    assert not looks_official(name), (name, skeleton(name))
    assert display_name(name, TELEGRAM) == f"{name} · Telegram"


@pytest.mark.parametrize(
    "name", ["Léa Martin", "LÉA MARTIN", "Lеa Mаrtin", "L é a  M a r t i n", "Léa Mar\u200btin"]
)
def test_a_look_alike_of_a_protected_name_is_marked(name: str) -> None:
    assert looks_official(name, ["Léa Martin"])
    assert MARKED in display_name(name, TELEGRAM, ["Léa Martin"])


def test_a_protected_name_is_matched_whole() -> None:
    # Sharing a first name with a moderator is no impersonation.
    assert not looks_official("Léa", ["Léa Martin"])
    assert not looks_official("Léa Dubois", ["Léa Martin"])
    # An empty or unreadable protected name protects nothing.
    assert not looks_official("?", ["", "\u200b"])


def test_surnames_containing_an_official_word_are_marked() -> None:
    # The judgement call stated in the module docstring.
    assert looks_official("Lemaire") and looks_official("Delmaire")


def test_skeleton_is_case_script_and_style_blind() -> None:
    assert skeleton("MAIRIE") == skeleton("mairie") == skeleton("𝐌𝐚𝐢𝐫𝐢𝐞") == skeleton("МАІRІЕ")
    assert skeleton("Marie") != skeleton("Maire")
    assert skeleton("") == ""


def test_the_prototypes_are_those_of_uts_39() -> None:
    # Lines of Unicode's confusables.txt, read back from the package's two-way data.
    table = _prototypes()
    expected = {"М": "M", "Μ": "M", "ɑ": "a", "а": "a", "1": "l", "I": "l", "0": "O", "m": "rn"}
    assert {c: table.get(ord(c)) for c in expected} == expected
    # Prototypes map to nothing: they stand for themselves.
    assert all(ord(c) not in table for c in "aMlOr")


@pytest.mark.parametrize(
    ("split", "ordinary"),
    [
        ("Mai rie", "Mai Renaud"),
        ("Ma irie", "Ma Irène"),
        ("M aire", "Tom Aire"),
        ("Adm in", "Ahmad Mina"),
        ("M. Aire", "Emma Ireland"),
    ],
)
def test_an_official_word_is_read_across_words_only_if_it_takes_them_in(
    split: str, ordinary: str
) -> None:
    # Both hold an official word across a gap, separators ignored ...
    assert any(skeleton(word) in skeleton(ordinary) for word in ("maire", "admin"))
    # ... but only the split one is made of nothing else.
    assert looks_official(split)
    assert not looks_official(ordinary)


def test_every_regional_indicator_reads_as_its_letter() -> None:
    indicators = "".join(chr(0x1F1E6 + i) for i in range(26))
    assert skeleton(indicators) == skeleton("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def test_the_own_table_only_adds_what_unicode_lacks() -> None:
    # Each entry maps to one Latin letter, and the data gives none of them a Latin prototype.
    latin = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    assert all(len(letter) == 1 and letter in latin for letter in _DRAWN_AS.values())
    assert not [char for char in _DRAWN_AS if _uts39(char) in latin]
    assert len(_DRAWN_AS) <= 50  # a small table; whole generator alphabets, not one-offs
