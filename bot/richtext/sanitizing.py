"""Sanitising text and :class:`FormattedText`: characters that can disguise text are removed.

Bidirectional controls, zero-width and other format characters, control characters, blank
filler letters and stray variation selectors go; line breaks become ``\\n``.  Span offsets are
remapped onto the cleaned text.  Every ``from_*`` parser and ``to_*`` renderer goes through here.
"""

from __future__ import annotations

import re
import unicodedata

from bot.richtext.model import FormattedText, Span

# Format characters (category Cf) are stripped except these: joiners that emoji and Indic or
# Persian spelling need, and the prepended concatenation marks and Egyptian format controls,
# which are visible.
_KEEP_FORMAT = frozenset(
    {0x200C, 0x200D, *range(0x0600, 0x0606), 0x06DD, 0x070F, 0x0890, 0x0891, 0x08E2}
    | {0x110BD, 0x110CD, *range(0x13430, 0x13440)}
)
# Not Cf, but blank glyphs used to fake empty names or hide text: combining grapheme joiner,
# Hangul fillers, Khmer inherent vowels.
_INVISIBLE_OTHER = frozenset({0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFFA0})
_LINE_BREAKS = frozenset("\x85\u2028\u2029")
# Subdivision flags (England, Scotland, Wales) are the only legitimate use of tag characters;
# elsewhere they are invisible and used to smuggle hidden text.
_FLAG_TAG_SEQUENCE = re.compile("\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f")
_NEEDS_SANITIZE = re.compile(r"[^\x20-\x7e\n\t]")


def _is_variation_selector(code: int) -> bool:
    return 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF


def _sanitize_with_map(text: str) -> tuple[str, list[int] | None]:
    """Sanitised text and, unless unchanged, old offset -> new offset (length len(text) + 1)."""
    if _NEEDS_SANITIZE.search(text) is None:
        return text, None
    protected: set[int] = set()
    if "\U0001f3f4" in text:
        for match in _FLAG_TAG_SEQUENCE.finditer(text):
            protected.update(range(match.start() + 1, match.end()))
    out: list[str] = []
    positions = [0] * (len(text) + 1)
    for i, ch in enumerate(text):
        positions[i] = len(out)
        code = ord(ch)
        if ch == "\n" or ch == "\t" or 0x20 <= code < 0x7F:
            out.append(ch)
        elif ch == "\r":
            if not text.startswith("\n", i + 1):  # \r\n becomes the following \n alone
                out.append("\n")
        elif ch in _LINE_BREAKS:
            out.append("\n")
        elif code < 0xA0:
            continue  # C0 controls, DEL, C1 controls
        else:
            category = unicodedata.category(ch)
            if category in ("Cc", "Cs"):
                continue
            if category == "Cf":
                if code in _KEEP_FORMAT or i in protected:
                    out.append(ch)
                continue
            if code in _INVISIBLE_OTHER:
                continue
            if _is_variation_selector(code):
                # One selector per base character; runs of them carry hidden data.
                prev = out[-1] if out else ""
                if not prev or prev.isspace() or _is_variation_selector(ord(prev)):
                    continue
            out.append(ch)
    positions[len(text)] = len(out)
    return "".join(out), positions


def sanitize(text: str) -> str:
    """Remove characters that can disguise text; normalise line breaks to ``\\n``.

    Stripped: bidirectional embeddings/overrides/isolates/marks (U+202A-U+202E, U+2066-U+2069,
    U+200E, U+200F, U+061C) and every other format character (zero-width space, word joiner,
    BOM, soft hyphen, invisible operators, tag characters outside subdivision flags, ...)
    except ZWJ/ZWNJ and visible prepended marks; C0/C1 controls except ``\\n`` and ``\\t``; lone
    surrogates; blank filler letters; a variation selector not directly after a base character.
    ``\\r\\n``, ``\\r``, NEL, LS and PS become ``\\n``.  Accents, emoji, skin tones, flags and ZWJ
    sequences are kept.  Idempotent.
    """
    return _sanitize_with_map(text)[0]


def _sanitize_attribute(value: str | None) -> str | None:
    if value is None:
        return None
    cleaned = "".join(ch for ch in sanitize(value) if ch not in "\n\t").strip()
    return cleaned or None


def sanitize_formatted(ft: FormattedText) -> FormattedText:
    """:func:`sanitize` the text and URL/language attributes, remapping span offsets."""
    text, positions = _sanitize_with_map(ft.text)
    spans: list[Span] = []
    for span in ft.spans:
        start, end = (
            (span.start, span.end)
            if positions is None
            else (
                positions[span.start],
                positions[span.end],
            )
        )
        if end > start:
            spans.append(
                Span(
                    span.style,
                    start,
                    end,
                    _sanitize_attribute(span.url),
                    _sanitize_attribute(span.language),
                )
            )
    return FormattedText(text, tuple(spans))
