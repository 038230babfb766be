r"""Platform-neutral rich text shared by the Telegram and Discord sides of the bridge.

A message is held as a :class:`FormattedText`: the exact text a reader sees plus a tuple of
:class:`Span` (style, start, end) whose offsets count Python ``str`` code points, end exclusive.
Nothing here imports ``telegram`` or ``discord``: both sides convert through this model.

Conversions
-----------
* Telegram in:  :func:`from_telegram_entities` (Bot API entity dicts, UTF-16 offsets) and
  :func:`from_telegram_html`.  Telegram out: :func:`to_telegram_html`, :func:`to_telegram_entities`.
* Discord in:   :func:`from_discord_markdown`.  Discord out: :func:`to_discord_markdown`.
* Every ``from_*`` result is sanitised (:func:`sanitize_formatted`) and normalised
  (:meth:`FormattedText.normalized`); every ``to_*`` renderer sanitises its input first.

What cannot cross (the ``canonical_for_*`` functions compute it exactly)
-------------------------------------------------------------------------
* Telegram forbids styles on ``code``/``pre`` and entities straddling a blockquote, so
  bold/italic/underline/strike/spoiler/link are removed from code ranges and split at quote
  boundaries.  Overlapping code spans keep the earliest (then longest) one.  Links keep only
  http, https, tg and mailto schemes (Discord: http and https only); other links become plain text.
* Discord quotes are whole lines: a quote is widened to the full lines it touches (newline
  included), and the newline just before a quote and the quote's last newline carry no inline
  style.  Code blocks cannot start or end with a newline: those newlines stay, as plain text.
  A code block containing a triple backtick becomes inline code; inline code whose backtick
  runs leave no usable fence becomes a code block or, failing that, plain text.  PRE languages
  outside ``[A-Za-z0-9-]`` are dropped.  Link targets are percent-encoded where markdown would
  misread them (spaces, brackets, parentheses, ``* _ ~ | ` \``).

Discord escaping choices
------------------------
Backslash escapes only: ``\ * _ ~ | ` < [ ]`` everywhere; ``>`` and list/heading markers
(``#``, ``-#``, ``-``, ``*``, ``+``, ``1.``/``1)``) at a line start; the ``@`` of ``@everyone`` and
``@here``; the ``:`` of ``http://``, ``https://`` and ``steam://`` when a URL cannot be left bare.
Escaping ``<`` is what defuses ``<@123>``, ``<@&123>``, ``<#123>``, ``<t:...>`` and ``<:name:id>``,
and ``\@everyone`` shows as plain text: mentions are neutralised by escapes, never by a
zero-width space inside the word, so copied text stays clean (pings are additionally blocked
by the sender's ``allowed_mentions``).  A bare URL is left as is (Discord then makes it
clickable) when no style boundary or markdown character sits inside it; otherwise its colon is
escaped and the URL is plain text.  Code keeps its content verbatim: inline code uses a fence of
one or two backticks that the content cannot close, code blocks use triple-backtick fences.
Where two markdown delimiters would touch and merge (``**a***b*``), or an italic would start or
end on whitespace (which Discord's ``*`` rule refuses), a ZERO WIDTH SPACE (U+200B) goes between
the delimiters; it is invisible and :func:`from_discord_markdown` drops it again.  Every
rendering is checked by re-parsing it with the reference parser; if it would not read back
exactly, the renderer falls back to breaking all bare URLs and, as a last resort, to plain
escaped text (logged as a warning).

The reference parser follows Discord's client rules (simple-markdown plus Discord's spoiler,
strike, quote, heading, list, mention and emoji rules) as far as they are publicly known; it
is the model the tests check the escaper against.  One assumption not verifiable offline:
backslash-escaped brackets are accepted inside masked-link text (as in CommonMark).
"""

from __future__ import annotations

import bisect
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "FormattedText",
    "Span",
    "Style",
    "canonical_for_discord",
    "canonical_for_telegram",
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

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- model


class Style(StrEnum):
    BOLD = "bold"
    ITALIC = "italic"
    UNDERLINE = "underline"
    STRIKE = "strike"
    SPOILER = "spoiler"
    CODE = "code"
    PRE = "pre"
    LINK = "link"
    QUOTE = "quote"


_STYLE_ORDER: dict[Style, int] = {style: i for i, style in enumerate(Style)}
_CODE_STYLES = frozenset({Style.CODE, Style.PRE})


@dataclass(frozen=True, slots=True)
class Span:
    """One style over ``text[start:end]`` (code points, end exclusive)."""

    style: Style
    start: int
    end: int
    url: str | None = None
    language: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.style, Style):
            # Accept the plain string value too ("bold"), as configuration or JSON gives it.
            object.__setattr__(self, "style", Style(self.style))
        if self.start < 0 or self.end < self.start:
            raise ValueError(f"invalid span range {self.start}..{self.end}")

    @property
    def key(self) -> tuple[Style, str | None, str | None]:
        """Spans with the same key are the same formatting and merge when they touch."""
        return (self.style, self.url, self.language)

    def moved(self, start: int, end: int) -> Span:
        return Span(self.style, start, end, self.url, self.language)


def _span_sort_key(span: Span) -> tuple[int, int, int, str, str]:
    return (span.start, -span.end, _STYLE_ORDER[span.style], span.url or "", span.language or "")


@dataclass(frozen=True, slots=True)
class FormattedText:
    """Visible text plus styles.  Immutable; build new values with ``+``, :meth:`concat`, :meth:`slice`."""

    text: str
    spans: tuple[Span, ...] = ()

    def __post_init__(self) -> None:
        spans = tuple(self.spans)
        size = len(self.text)
        for span in spans:
            if span.end > size:
                raise ValueError(f"span {span} runs past the text ({size} code points)")
        object.__setattr__(self, "spans", spans)

    @classmethod
    def plain(cls, text: str) -> FormattedText:
        return cls(text)

    def __add__(self, other: FormattedText | str) -> FormattedText:
        if isinstance(other, str):
            other = FormattedText(other)
        if not isinstance(other, FormattedText):
            return NotImplemented
        shift = len(self.text)
        moved = tuple(span.moved(span.start + shift, span.end + shift) for span in other.spans)
        return FormattedText(self.text + other.text, self.spans + moved)

    def __radd__(self, other: str) -> FormattedText:
        if isinstance(other, str):
            return FormattedText(other) + self
        return NotImplemented

    @classmethod
    def concat(
        cls, parts: Iterable[FormattedText | str], separator: FormattedText | str = ""
    ) -> FormattedText:
        """Join parts (like ``str.join``), shifting each part's spans."""
        sep = FormattedText(separator) if isinstance(separator, str) else separator
        texts: list[str] = []
        spans: list[Span] = []
        offset = 0
        for i, part in enumerate(parts):
            items = [FormattedText(part) if isinstance(part, str) else part]
            if i:
                items.insert(0, sep)
            for item in items:
                texts.append(item.text)
                spans.extend(s.moved(s.start + offset, s.end + offset) for s in item.spans)
                offset += len(item.text)
        return cls("".join(texts), tuple(spans))

    def slice(self, start: int, end: int | None = None) -> FormattedText:
        """``text[start:end]`` with spans clipped to it (bounds are clamped, never negative-indexed)."""
        size = len(self.text)
        stop = size if end is None else end
        lo = max(0, min(start, size))
        hi = max(lo, min(stop, size))
        spans = tuple(
            span.moved(max(span.start, lo) - lo, min(span.end, hi) - lo)
            for span in self.spans
            if span.start < hi and span.end > lo
        )
        return FormattedText(self.text[lo:hi], spans)

    def styled(
        self,
        style: Style,
        start: int = 0,
        end: int | None = None,
        *,
        url: str | None = None,
        language: str | None = None,
    ) -> FormattedText:
        """A copy with one more span (whole text by default)."""
        stop = len(self.text) if end is None else end
        return FormattedText(self.text, (*self.spans, Span(style, start, stop, url, language)))

    def normalized(self) -> FormattedText:
        """Drop empty spans, merge touching spans of equal key, keep one link per character, sort."""
        return FormattedText(self.text, _normalize_spans(self.spans))


def _merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _normalize_spans(spans: Iterable[Span]) -> tuple[Span, ...]:
    groups: dict[tuple[Style, str | None, str | None], list[tuple[int, int]]] = {}
    templates: dict[tuple[Style, str | None, str | None], Span] = {}
    for span in spans:
        if span.end > span.start:
            groups.setdefault(span.key, []).append((span.start, span.end))
            templates.setdefault(span.key, span)
    merged: list[Span] = []
    links: list[Span] = []
    for key, ranges in groups.items():
        for start, end in _merge_ranges(ranges):
            span = templates[key].moved(start, end)
            (links if span.style is Style.LINK else merged).append(span)
    # A character can only lead to one place: the earlier (then longer) link wins.
    cursor = 0
    for link in sorted(links, key=_span_sort_key):
        start = max(link.start, cursor)
        if start < link.end:
            merged.append(link.moved(start, link.end))
        cursor = max(cursor, link.end)
    return tuple(sorted(merged, key=_span_sort_key))


def visible_text(ft: FormattedText) -> str:
    """The text a reader sees: formatting never adds or hides characters in the model."""
    return ft.text


# --------------------------------------------------------------------------- sanitising

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


# --------------------------------------------------------------------------- range helpers


def _subtract(start: int, end: int, holes: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """[start, end) minus sorted, disjoint holes."""
    pieces: list[tuple[int, int]] = []
    cursor = start
    for hole_start, hole_end in holes:
        if hole_end <= cursor:
            continue
        if hole_start >= end:
            break
        if hole_start > cursor:
            pieces.append((cursor, hole_start))
        cursor = max(cursor, hole_end)
    if cursor < end:
        pieces.append((cursor, end))
    return pieces


def _cut_at(start: int, end: int, points: Sequence[int]) -> list[tuple[int, int]]:
    """[start, end) split at every sorted point strictly inside it."""
    pieces: list[tuple[int, int]] = []
    cursor = start
    for point in points[bisect.bisect_right(points, start) :]:
        if point >= end:
            break
        pieces.append((cursor, point))
        cursor = point
    pieces.append((cursor, end))
    return pieces


def _pick_disjoint(spans: Iterable[Span]) -> list[Span]:
    """Earliest-then-longest spans that do not overlap each other (code cannot nest)."""
    kept: list[Span] = []
    last_end = 0
    for span in sorted(spans, key=_span_sort_key):
        if span.start >= last_end:
            kept.append(span)
            last_end = span.end
    return kept


def _quote_points(spans: Iterable[Span]) -> list[int]:
    return sorted({p for s in spans if s.style is Style.QUOTE for p in (s.start, s.end)})


def _url_allowed(url: str | None, schemes: frozenset[str]) -> bool:
    if not url:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        return False
    return scheme not in ("http", "https") or bool(parts.netloc)


# --------------------------------------------------------------------------- nesting


@dataclass(slots=True)
class _Tree:
    """A properly nested piece of a span (or, with ``span is None``, a run of text)."""

    span: Span | None
    start: int
    end: int
    children: list[_Tree] = field(default_factory=list)


def _open_rank(span: Span) -> tuple[int, int, int]:
    # Quotes are blocks and must enclose everything; code cannot contain anything; among the
    # rest, the span that lasts longer goes outside so fewer spans need splitting.
    tier = 0 if span.style is Style.QUOTE else 2 if span.style in _CODE_STYLES else 1
    return (tier, -span.end, _STYLE_ORDER[span.style])


def _nest(spans: Sequence[Span], size: int) -> list[_Tree]:
    """Turn possibly crossing spans into a tree, splitting a span where nesting requires it."""
    roots: list[_Tree] = []
    by_start: dict[int, list[Span]] = {}
    bounds = {0, size}
    for span in spans:
        if span.end > span.start:
            by_start.setdefault(span.start, []).append(span)
            bounds.update((span.start, span.end))
    ordered = sorted(bounds)
    stack: list[tuple[Span, _Tree]] = []
    for index, bound in enumerate(ordered):
        reopen: list[Span] = []
        for depth, (span, _node) in enumerate(stack):
            if span.end == bound:
                for open_span, node in stack[depth:]:
                    node.end = bound
                    if open_span.end != bound:
                        reopen.append(open_span)
                del stack[depth:]
                break
        for span in sorted(reopen + by_start.get(bound, []), key=_open_rank):
            node = _Tree(span, bound, span.end)
            (stack[-1][1].children if stack else roots).append(node)
            stack.append((span, node))
        if index + 1 < len(ordered):
            (stack[-1][1].children if stack else roots).append(
                _Tree(None, bound, ordered[index + 1])
            )
    return roots


def _split_at_quotes(spans: Sequence[Span]) -> list[Span]:
    """Cut non-quote spans at quote boundaries so that quotes can be the outermost layer."""
    points = _quote_points(spans)
    out: list[Span] = []
    for span in spans:
        if span.style is Style.QUOTE:
            out.append(span)
        else:
            out.extend(span.moved(a, b) for a, b in _cut_at(span.start, span.end, points))
    return out


# --------------------------------------------------------------------------- Telegram

_TELEGRAM_SCHEMES = frozenset({"http", "https", "tg", "mailto"})
_TELEGRAM_LANGUAGE = re.compile(r"[A-Za-z0-9_+#.-]{1,64}")

_ENTITY_STYLES: dict[str, Style] = {
    "bold": Style.BOLD,
    "italic": Style.ITALIC,
    "underline": Style.UNDERLINE,
    "strikethrough": Style.STRIKE,
    "spoiler": Style.SPOILER,
    "code": Style.CODE,
    "pre": Style.PRE,
    "text_link": Style.LINK,
    "blockquote": Style.QUOTE,
    "expandable_blockquote": Style.QUOTE,
}
_STYLE_ENTITIES: dict[Style, str] = {
    Style.BOLD: "bold",
    Style.ITALIC: "italic",
    Style.UNDERLINE: "underline",
    Style.STRIKE: "strikethrough",
    Style.SPOILER: "spoiler",
    Style.CODE: "code",
    Style.PRE: "pre",
    Style.LINK: "text_link",
    Style.QUOTE: "blockquote",
}


def utf16_len(s: str) -> int:
    """Length in UTF-16 code units, the unit of Telegram offsets and message limits."""
    return len(s) + sum(1 for ch in s if ord(ch) > 0xFFFF)


def _utf16_prefix(text: str) -> list[int]:
    prefix = [0]
    for ch in text:
        prefix.append(prefix[-1] + (2 if ord(ch) > 0xFFFF else 1))
    return prefix


def from_telegram_entities(text: str, entities: Iterable[Mapping[str, Any]]) -> FormattedText:
    """Bot API ``text`` + ``entities`` (dicts, e.g. ``MessageEntity.to_dict()``) to the model.

    Offsets are UTF-16 units; one falling inside a surrogate pair widens the span to the whole
    character.  Entities without a visual style (url, mention, hashtag, bot_command,
    text_mention, custom_emoji, ...) are dropped: their text stays.
    """
    prefix = _utf16_prefix(text)
    total = prefix[-1]
    spans: list[Span] = []
    for entity in entities:
        style = _ENTITY_STYLES.get(str(entity.get("type", "")))
        if style is None:
            continue
        try:
            offset = int(entity["offset"])
            length = int(entity["length"])
        except (KeyError, TypeError, ValueError):
            continue
        stop = min(offset + length, total)
        if offset < 0 or stop <= offset:
            continue
        start_cp = bisect.bisect_right(prefix, offset) - 1
        end_cp = bisect.bisect_left(prefix, stop)
        url = entity.get("url") if style is Style.LINK else None
        language = entity.get("language") if style is Style.PRE else None
        if style is Style.LINK and not (isinstance(url, str) and url):
            continue
        spans.append(
            Span(
                style,
                start_cp,
                end_cp,
                url if isinstance(url, str) else None,
                language if isinstance(language, str) and language else None,
            )
        )
    return sanitize_formatted(FormattedText(text, tuple(spans))).normalized()


def canonical_for_telegram(ft: FormattedText) -> FormattedText:
    """What Telegram can carry of ``ft`` (sanitised, normalised); see the module docstring."""
    ft = sanitize_formatted(ft).normalized()
    quotes: list[Span] = []
    codes: list[Span] = []
    inline: list[Span] = []
    for span in ft.spans:
        if span.style is Style.QUOTE:
            quotes.append(span)
        elif span.style is Style.PRE:
            lang = span.language
            keep = lang if lang and _TELEGRAM_LANGUAGE.fullmatch(lang) else None
            codes.append(Span(Style.PRE, span.start, span.end, language=keep))
        elif span.style is Style.CODE:
            codes.append(span)
        elif span.style is not Style.LINK or _url_allowed(span.url, _TELEGRAM_SCHEMES):
            inline.append(span)
    codes = _pick_disjoint(codes)
    points = _quote_points(quotes)
    holes = [(c.start, c.end) for c in codes]
    out = list(quotes)
    out.extend(c.moved(a, b) for c in codes for a, b in _cut_at(c.start, c.end, points))
    for span in inline:
        for a, b in _subtract(span.start, span.end, holes):
            out.extend(span.moved(x, y) for x, y in _cut_at(a, b, points))
    return FormattedText(ft.text, tuple(out)).normalized()


def to_telegram_entities(ft: FormattedText) -> list[dict[str, Any]]:
    """Bot API entity dicts for ``canonical_for_telegram(ft)``, properly nested, UTF-16 offsets.

    Offsets refer to ``sanitize(ft.text)``, which is ``ft.text`` itself for anything built by
    this module's parsers; send ``canonical_for_telegram(ft).text`` to be safe.
    """
    canonical = canonical_for_telegram(ft)
    prefix = _utf16_prefix(canonical.text)
    entities: list[dict[str, Any]] = []

    def walk(nodes: list[_Tree]) -> None:
        for node in nodes:
            if node.span is None:
                continue
            entity: dict[str, Any] = {
                "type": _STYLE_ENTITIES[node.span.style],
                "offset": prefix[node.start],
                "length": prefix[node.end] - prefix[node.start],
            }
            if node.span.style is Style.LINK:
                entity["url"] = node.span.url
            if node.span.style is Style.PRE and node.span.language:
                entity["language"] = node.span.language
            entities.append(entity)
            walk(node.children)

    walk(_nest(_split_at_quotes(canonical.spans), len(canonical.text)))
    return entities


def _html_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _html_attr(text: str) -> str:
    return _html_text(text).replace('"', "&quot;")


_HTML_SIMPLE_TAGS: dict[Style, str] = {
    Style.BOLD: "b",
    Style.ITALIC: "i",
    Style.UNDERLINE: "u",
    Style.STRIKE: "s",
    Style.SPOILER: "tg-spoiler",
    Style.CODE: "code",
    Style.QUOTE: "blockquote",
}


def to_telegram_html(ft: FormattedText) -> str:
    """Telegram ``parse_mode=HTML`` for ``canonical_for_telegram(ft)``; every character escaped."""
    canonical = canonical_for_telegram(ft)
    text = canonical.text

    def render(nodes: list[_Tree]) -> str:
        out: list[str] = []
        for node in nodes:
            span = node.span
            if span is None:
                out.append(_html_text(text[node.start : node.end]))
                continue
            inner = render(node.children)
            if span.style is Style.PRE:
                if span.language:
                    out.append(
                        f'<pre><code class="language-{_html_attr(span.language)}">'
                        f"{inner}</code></pre>"
                    )
                else:
                    out.append(f"<pre>{inner}</pre>")
            elif span.style is Style.LINK:
                out.append(f'<a href="{_html_attr(span.url or "")}">{inner}</a>')
            else:
                tag = _HTML_SIMPLE_TAGS[span.style]
                out.append(f"<{tag}>{inner}</{tag}>")
        return "".join(out)

    return render(_nest(_split_at_quotes(canonical.spans), len(text)))


_HTML_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s[^<>]*)?)>")
_HTML_ATTR = re.compile(
    r"([a-zA-Z_][a-zA-Z0-9_-]*)(?:\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s\"'>]+)))?"
)
_HTML_ENTITY = re.compile(r"&(?:#([0-9]{1,7})|#[xX]([0-9a-fA-F]{1,6})|(lt|gt|amp|quot));")
_HTML_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_HTML_TAG_STYLES: dict[str, Style | None] = {
    "b": Style.BOLD,
    "strong": Style.BOLD,
    "i": Style.ITALIC,
    "em": Style.ITALIC,
    "u": Style.UNDERLINE,
    "ins": Style.UNDERLINE,
    "s": Style.STRIKE,
    "strike": Style.STRIKE,
    "del": Style.STRIKE,
    "tg-spoiler": Style.SPOILER,
    "code": Style.CODE,
    "pre": Style.PRE,
    "a": Style.LINK,
    "blockquote": Style.QUOTE,
    "tg-emoji": None,
    "span": Style.SPOILER,
}


def _html_unescape(chunk: str) -> str:
    def decode(match: re.Match[str]) -> str:
        if match.group(3):
            return _HTML_NAMED[match.group(3)]
        code = int(match.group(1)) if match.group(1) else int(match.group(2), 16)
        if code > 0x10FFFF:
            return match.group(0)
        return chr(code)

    return _HTML_ENTITY.sub(decode, chunk)


def _parse_telegram_html(html: str) -> FormattedText:
    """Parse Telegram HTML as Telegram's server does; raise ValueError on what it would reject."""
    parts: list[str] = []
    spans: list[Span] = []
    # (tag, style, start, url, language)
    stack: list[tuple[str, Style | None, int, str | None, str | None]] = []
    pos = 0
    index = 0
    while index <= len(html):
        lt = html.find("<", index)
        chunk = _html_unescape(html[index : len(html) if lt == -1 else lt])
        parts.append(chunk)
        pos += len(chunk)
        if lt == -1:
            break
        match = _HTML_TAG.match(html, lt)
        if match is None:
            raise ValueError(f"unescaped '<' at offset {lt}")
        closing, name = match.group(1) == "/", match.group(2).lower()
        if closing:
            if not stack or stack[-1][0] != name:
                raise ValueError(f"unexpected </{name}> at offset {lt}")
            _tag, style, start, url, language = stack.pop()
            if style is not None and pos > start:
                spans.append(Span(style, start, pos, url, language))
        else:
            if name not in _HTML_TAG_STYLES:
                raise ValueError(f"unsupported tag <{name}> at offset {lt}")
            attrs = {
                m.group(1).lower(): m.group(2) or m.group(3) or m.group(4) or ""
                for m in _HTML_ATTR.finditer(match.group(3))
            }
            style = _HTML_TAG_STYLES[name]
            href: str | None = None
            if name == "span" and attrs.get("class") != "tg-spoiler":
                raise ValueError('only <span class="tg-spoiler"> is supported')
            if name == "a":
                href = _html_unescape(attrs.get("href", "")) or None
                style = Style.LINK if href else None
            if name == "code" and stack and stack[-1][0] == "pre":
                # <pre><code class="language-x"> is a pre block with a language, not nested code.
                tag, pre_style, start, pre_url, _ = stack[-1]
                cls = _html_unescape(attrs.get("class", ""))
                if cls.startswith("language-") and len(cls) > len("language-"):
                    stack[-1] = (tag, pre_style, start, pre_url, cls[len("language-") :])
                style = None
            stack.append((name, style, pos, href, None))
        index = match.end()
    if stack:
        raise ValueError(f"unclosed <{stack[-1][0]}>")
    return FormattedText("".join(parts), tuple(spans))


def from_telegram_html(html: str) -> FormattedText:
    """Telegram HTML (as sent with ``parse_mode=HTML``) to the model, sanitised and normalised."""
    return sanitize_formatted(_parse_telegram_html(html)).normalized()


def render_telegram_visible(html: str) -> str:
    """Reference renderer: the text Telegram shows for this HTML (tags dropped, entities decoded).

    Raises ValueError for HTML Telegram would reject (stray ``<``, bad nesting, unknown tags).
    """
    return _parse_telegram_html(html).text


# --------------------------------------------------------------------------- Discord: reader

# JavaScript's \s (Discord's parser is JavaScript), used instead of Python's \s everywhere.
_WS = "\t\n\x0b\x0c\r \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_WS_CHARS = frozenset(
    "\t\n\x0b\x0c\r \xa0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
)

_RE_SPOILER = re.compile(r"\|\|([\s\S]+?)\|\|")
_RE_CODE_BLOCK = re.compile(r"```(?:([a-z0-9_+\-.#]+?)\n+)?\n*([\s\S]+?)\n*```", re.IGNORECASE)
_RE_QUOTE_BLOCK = re.compile(r" *>>> ([\s\S]*)")
_RE_QUOTE_LINES = re.compile(r" *> [^\n]*(?:\n *> [^\n]*)*\n?")
_RE_QUOTE_BLOCK_MARK = re.compile(r"^ *>>> ?")
_RE_QUOTE_LINE_MARK = re.compile(r"^ *> ?", re.MULTILINE)
_RE_HEADING = re.compile(rf" *#{{1,3}}[ \t]+([^\n]*[^{_WS}][^\n]*)")
_RE_SUBTEXT = re.compile(rf" *-#[ \t]+([^\n]*[^{_WS}][^\n]*)")
_RE_BULLET = re.compile(r"([ \t]*)[-*+][ \t]+")
_RE_ORDERED = re.compile(r"([ \t]*)([0-9]{1,9})[.)][ \t]+")
_RE_ESCAPE = re.compile(rf"\\([^0-9A-Za-z{_WS}])")
_RE_AUTOLINK = re.compile(r"<([^: >]+:/[^ >]+)>")
_RE_MAILTO = re.compile(r"<([^ >]+@[^ >]+)>")
_RE_USER = re.compile(r"<@!?([0-9]+)>")
_RE_ROLE = re.compile(r"<@&([0-9]+)>")
_RE_CHANNEL = re.compile(r"<#([0-9]+)>")
_RE_SLASH = re.compile(r"</([-_A-Za-z0-9]+(?: [-_A-Za-z0-9]+){0,2}):([0-9]+)>")
_RE_EMOJI = re.compile(r"<(a?):([A-Za-z0-9_]+):([0-9]+)>")
_RE_TIMESTAMP = re.compile(r"<t:(-?[0-9]{1,17})(?::([tTdDfFR]))?>")
_RE_GUILD_NAV = re.compile(r"<id:(customize|browse|guide|linked-roles)>")
_RE_EVERYONE = re.compile(r"@(everyone|here)")
_RE_URL = re.compile(rf"(?:https?|steam)://[^{_WS}<]+[^<.,:;\"'\]{_WS}]", re.IGNORECASE)
_RE_LINK = re.compile(
    r"\[((?:\\[\s\S]|\[[^\[\]\\]*\]|[^\[\]\\])*)\]\("
    rf"[{_WS}]*<?((?:\([^()<>{_WS}]*\)|[^{_WS}\\()<>]|\\.)*?)>?"
    rf"(?:[{_WS}]+['\"]([^'\"]*)['\"])?[{_WS}]*\)"
)
_RE_STRONG = re.compile(r"\*\*([\s\S]+?)\*\*(?!\*)")
_RE_UNDERLINE = re.compile(r"__([\s\S]+?)__(?!_)")
_RE_EM = re.compile(
    r"_((?:__|\\[\s\S]|[^\\_])+?)_\b"
    rf"|\*(?=[^{_WS}])((?:\*\*|\\[\s\S]|[{_WS}]+(?:\\[\s\S]|[^{_WS}*\\]|\*\*)|[^{_WS}*\\])+?)\*(?!\*)",
    re.ASCII,
)
_RE_STRIKE = re.compile(r"~~([\s\S]+?)~~(?!_)")
_RE_INLINE_CODE = re.compile(r"(`+)([\s\S]*?[^`])\1(?!`)")
_RE_INLINE_CODE_TRIM = re.compile(r"^ (?= *`)|(` *) $")
_RE_SHRUG = re.compile(r"¯\\_\(ツ\)_/¯")
# Characters that may start a rule; anything else is plain text and is consumed in runs.
_RULE_STARTS = frozenset("|`>\n\\<@[*_~¯hHsS")


@dataclass(slots=True)
class _DText:
    text: str  # what the neutral model gets
    shown: str | None = None  # what Discord displays, when different (mentions, emoji, ...)


@dataclass(slots=True)
class _DCode:
    style: Style
    content: str
    language: str | None = None


@dataclass(slots=True)
class _DElem:
    style: Style | None
    children: list[_DNode]
    url: str | None = None


_DNode = _DText | _DCode | _DElem


def _pill(raw: str, shown: str) -> _DText:
    return _DText(raw, f"⟦{shown}⟧")


def _timestamp_text(raw: str, seconds: str) -> str:
    try:
        moment = datetime.fromtimestamp(int(seconds), tz=UTC)
    except (OverflowError, OSError, ValueError):
        return raw
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _match_angle(src: str, pos: int) -> tuple[_DText, int] | None:
    for regex, kind in (
        (_RE_USER, "user"),
        (_RE_ROLE, "role"),
        (_RE_CHANNEL, "channel"),
        (_RE_SLASH, "command"),
        (_RE_GUILD_NAV, "id"),
    ):
        m = regex.match(src, pos)
        if m:
            # Left as written: the bot resolves names before parsing when it can.
            return _pill(m.group(0), f"{kind}:{m.group(1)}"), m.end()
    m = _RE_EMOJI.match(src, pos)
    if m:
        return _DText(f":{m.group(2)}:", f"⟦:{m.group(2)}:⟧"), m.end()
    m = _RE_TIMESTAMP.match(src, pos)
    if m:
        return _DText(_timestamp_text(m.group(0), m.group(1)), f"⟦time:{m.group(1)}⟧"), m.end()
    m = _RE_AUTOLINK.match(src, pos) or _RE_MAILTO.match(src, pos)
    if m:
        return _DText(m.group(1)), m.end()
    return None


def _discord_parse(src: str, line_start: bool, in_quote: bool, in_link: bool) -> list[_DNode]:
    """Parse Discord markdown the way the Discord client does (see module docstring)."""
    nodes: list[_DNode] = []
    buffer: list[str] = []

    def push(node: _DNode) -> None:
        if buffer:
            nodes.append(_DText("".join(buffer)))
            buffer.clear()
        nodes.append(node)

    def inner(
        text: str, at_line_start: bool, *, quote: bool = False, link: bool = False
    ) -> list[_DNode]:
        return _discord_parse(text, at_line_start, in_quote or quote, in_link or link)

    pos = 0
    size = len(src)
    ordered_number: int | None = None
    while pos < size:
        ch = src[pos]
        at_ls = (pos == 0 and line_start) or (pos > 0 and src[pos - 1] == "\n")
        if at_ls and not in_link:
            m = _RE_ORDERED.match(src, pos)
            if m is None:
                ordered_number = None
        if ch not in _RULE_STARTS and not at_ls:
            end = pos + 1
            while end < size and src[end] not in _RULE_STARTS:
                end += 1
            buffer.append(src[pos:end])
            pos = end
            continue
        if ch == "|":
            m = _RE_SPOILER.match(src, pos)
            if m:
                push(_DElem(Style.SPOILER, inner(m.group(1), at_ls)))
                pos = m.end()
                continue
        if ch == "`":
            m = _RE_CODE_BLOCK.match(src, pos)
            if m:
                push(_DCode(Style.PRE, m.group(2), m.group(1) or None))
                pos = m.end()
                continue
        if at_ls and not in_quote and ch in " >":
            m = _RE_QUOTE_BLOCK.match(src, pos)
            if m:
                content = _RE_QUOTE_BLOCK_MARK.sub("", m.group(0), count=1)
            else:
                m = _RE_QUOTE_LINES.match(src, pos)
                content = _RE_QUOTE_LINE_MARK.sub("", m.group(0)) if m else ""
            if m:
                push(_DElem(Style.QUOTE, inner(content, True, quote=True)))
                pos = m.end()
                continue
        if at_ls and not in_link:
            m = _RE_HEADING.match(src, pos)
            if m:
                push(_DElem(Style.BOLD, inner(m.group(1), False)))
                pos = m.end()
                continue
            m = _RE_SUBTEXT.match(src, pos)
            if m:
                push(_DElem(None, inner(m.group(1), False)))
                pos = m.end()
                continue
            m = _RE_BULLET.match(src, pos)
            if m:
                buffer.append(f"{m.group(1)}• ")
                pos = m.end()
                continue
            m = _RE_ORDERED.match(src, pos)
            if m:
                # Discord numbers a list from its first item on, whatever the later items say.
                number = int(m.group(2)) if ordered_number is None else ordered_number + 1
                ordered_number = number
                buffer.append(f"{m.group(1)}{number}. ")
                pos = m.end()
                continue
        if ch == "\\":
            m = _RE_ESCAPE.match(src, pos)
            if m:
                buffer.append(m.group(1))
                pos = m.end()
                continue
        if ch == "<":
            angle = _match_angle(src, pos)
            if angle:
                push(angle[0])
                pos = angle[1]
                continue
        if ch == "@":
            m = _RE_EVERYONE.match(src, pos)
            if m:
                push(_pill(m.group(0), m.group(0)))
                pos = m.end()
                continue
        if ch in "hHsS":
            m = _RE_URL.match(src, pos)
            if m:
                buffer.append(m.group(0))
                pos = m.end()
                continue
        if ch == "[" and not in_link:
            m = _RE_LINK.match(src, pos)
            if m and m.group(1):
                url = _RE_ESCAPE.sub(r"\1", m.group(2))
                if _url_allowed(url, _DISCORD_SCHEMES):
                    push(_DElem(Style.LINK, inner(m.group(1), False, link=True), url))
                    pos = m.end()
                    continue
        if ch in "*_":
            # simple-markdown's em/strong/u share one priority: the longest match wins,
            # em beats strong beats underline on equal length.
            best: tuple[float, Style, re.Match[str]] | None = None
            for regex, style, bonus in (
                (_RE_UNDERLINE, Style.UNDERLINE, 0.0),
                (_RE_STRONG, Style.BOLD, 0.1),
                (_RE_EM, Style.ITALIC, 0.2),
            ):
                m = regex.match(src, pos)
                if m and (best is None or len(m.group(0)) + bonus > best[0]):
                    best = (len(m.group(0)) + bonus, style, m)
            if best:
                _quality, style, m = best
                content = m.group(1) if m.group(1) is not None else m.group(2)
                push(_DElem(style, inner(content, at_ls)))
                pos = m.end()
                continue
        if ch == "~":
            m = _RE_STRIKE.match(src, pos)
            if m:
                push(_DElem(Style.STRIKE, inner(m.group(1), at_ls)))
                pos = m.end()
                continue
        if ch == "`":
            m = _RE_INLINE_CODE.match(src, pos)
            if m:
                content = _RE_INLINE_CODE_TRIM.sub(lambda x: x.group(1) or "", m.group(2))
                push(_DCode(Style.CODE, content))
                pos = m.end()
                continue
        if ch == "¯":
            m = _RE_SHRUG.match(src, pos)
            if m:
                buffer.append(m.group(0))
                pos = m.end()
                continue
        buffer.append(ch)
        pos += 1
    if buffer:
        nodes.append(_DText("".join(buffer)))
    return nodes


def _discord_tree_to_ft(nodes: list[_DNode]) -> FormattedText:
    parts: list[str] = []
    spans: list[Span] = []
    offset = 0

    def walk(items: list[_DNode]) -> None:
        nonlocal offset
        for node in items:
            if isinstance(node, _DText):
                parts.append(node.text)
                offset += len(node.text)
            elif isinstance(node, _DCode):
                start = offset
                parts.append(node.content)
                offset += len(node.content)
                spans.append(Span(node.style, start, offset, language=node.language))
            else:
                start = offset
                walk(node.children)
                if node.style is not None and offset > start:
                    spans.append(Span(node.style, start, offset, url=node.url))

    walk(nodes)
    return FormattedText("".join(parts), tuple(spans))


def _discord_tree_visible(nodes: list[_DNode]) -> str:
    out: list[str] = []
    for node in nodes:
        if isinstance(node, _DText):
            out.append(node.text if node.shown is None else node.shown)
        elif isinstance(node, _DCode):
            out.append(node.content)
        else:
            out.append(_discord_tree_visible(node.children))
    return "".join(out)


def from_discord_markdown(md: str) -> FormattedText:
    """Discord message content to the model (sanitised, normalised).

    Headings become bold, subtext plain, bullets ``• ``; ``<:name:id>`` custom emoji become
    ``:name:``, ``<t:...>`` a UTC date; user/role/channel mentions stay as written (resolve
    them to names before calling, e.g. with discord.py's ``clean_content``).
    """
    tree = _discord_parse(md, True, False, False)
    return sanitize_formatted(_discord_tree_to_ft(tree)).normalized()


def render_discord_visible(md: str) -> str:
    """Reference renderer: the text Discord displays for ``md``.

    Mentions, ``@everyone``/``@here``, custom emoji and timestamps, which Discord draws as
    pills or images, come out as ``⟦...⟧`` so that tests can tell them from literal text.
    """
    return _discord_tree_visible(_discord_parse(md, True, False, False))


# --------------------------------------------------------------------------- Discord: writer

_DISCORD_SCHEMES = frozenset({"http", "https"})
_DISCORD_LANGUAGE = re.compile(r"[A-Za-z0-9-]{1,32}")
_DISCORD_ALWAYS_ESCAPE = frozenset("\\*_~|`<[]")
# Characters that make markdown delimiters merge when they touch across pieces.
_DISCORD_JOINING = frozenset("*_~|`")
# A bare URL containing one of these would interact with surrounding markdown.
_URL_UNSAFE = frozenset("*~|`\\<>[]")
_URL_ENCODE = frozenset(" <>()[]\\`|*_~\"'{}^")
_SCHEME = re.compile(r"(?:https?|steam)://", re.IGNORECASE)
_LINE_MARKER = re.compile(
    r"(?P<q>>)|(?P<h>#)(?=#*[ \t])|(?P<s>-)(?=#[ \t])|(?P<b>[-*+])(?=[ \t\n]|\Z)"
    r"|[0-9]+(?P<o>[.)])(?=[ \t\n]|\Z)"
)
_DELIMITERS: dict[Style, str] = {
    Style.BOLD: "**",
    Style.ITALIC: "*",
    Style.UNDERLINE: "__",
    Style.STRIKE: "~~",
    Style.SPOILER: "||",
}
_ZWSP = "\u200b"


def _discord_url(url: str) -> str:
    """Percent-encode what would end a ``(<...>)`` target or clash with markdown around it."""
    return "".join(
        "".join(f"%{b:02X}" for b in ch.encode("utf-8"))
        if ch in _URL_ENCODE or ch in _WS_CHARS or ord(ch) < 0x20
        else ch
        for ch in url
    )


def _full_line_quotes(text: str, quotes: Iterable[Span]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for quote in quotes:
        start = text.rfind("\n", 0, quote.start) + 1
        if text[quote.end - 1] == "\n":
            end = quote.end
        else:
            newline = text.find("\n", quote.end)
            end = len(text) if newline == -1 else newline + 1
        ranges.append((start, end))
    return _merge_ranges(ranges)


def _backtick_runs(content: str) -> set[int]:
    return {len(run) for run in re.findall(r"`+", content)}


def _trim_newlines(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start] == "\n":
        start += 1
    while end > start and text[end - 1] == "\n":
        end -= 1
    return start, end


def _discord_code(text: str, span: Span, start: int, end: int) -> Span | None:
    """The code span Discord can show for ``text[start:end]``, or None for plain text."""
    style = span.style
    if style is Style.PRE:
        start, end = _trim_newlines(text, start, end)
        if start == end:
            return None
        if "```" not in text[start:end]:
            lang = span.language
            keep = lang if lang and _DISCORD_LANGUAGE.fullmatch(lang) else None
            return Span(Style.PRE, start, end, language=keep)
        style = Style.CODE
    runs = _backtick_runs(text[start:end])
    if not (1 in runs and 2 in runs):
        return Span(Style.CODE, start, end)
    if max(runs) < 3:
        # Both one- and two-backtick fences would close early, and a longer inline fence
        # reads as a code block opener: a code block is the only verbatim container left.
        start, end = _trim_newlines(text, start, end)
        return Span(Style.PRE, start, end) if end > start else None
    return None


def canonical_for_discord(ft: FormattedText) -> FormattedText:
    """What Discord markdown can carry of ``ft`` (sanitised, normalised); see the module docstring."""
    ft = sanitize_formatted(ft).normalized()
    text = ft.text
    quote_ranges = _full_line_quotes(text, (s for s in ft.spans if s.style is Style.QUOTE))
    points = sorted({p for r in quote_ranges for p in r})
    newline_holes = sorted(
        {(s - 1, s) for s, _ in quote_ranges if s > 0}
        | {(e - 1, e) for _, e in quote_ranges if text[e - 1] == "\n"}
    )
    codes = _pick_disjoint(s for s in ft.spans if s.style in _CODE_STYLES)
    # Fixing a code span can make it equal to its neighbour, and touching equal spans merge
    # into one (whose content may need fixing again): repeat until nothing changes.
    for _round in range(8):
        fixed: list[Span] = []
        for span in codes:
            for a, b in _cut_at(span.start, span.end, points):
                for x, y in _subtract(a, b, newline_holes):
                    code = _discord_code(text, span, x, y)
                    if code is not None:
                        fixed.append(code)
        merged = list(_normalize_spans(fixed))
        if merged == codes:
            break
        codes = merged
    else:  # pragma: no cover - never seen; dropping code styles is always representable
        codes = []
    code_holes = [(c.start, c.end) for c in codes]
    out = [Span(Style.QUOTE, s, e) for s, e in quote_ranges] + codes
    for span in ft.spans:
        if span.style is Style.QUOTE or span.style in _CODE_STYLES:
            continue
        if span.style is Style.LINK:
            if not _url_allowed(span.url, _DISCORD_SCHEMES):
                continue
            span = Span(Style.LINK, span.start, span.end, _discord_url(span.url or ""))
        for a, b in _subtract(span.start, span.end, code_holes):
            for x, y in _cut_at(a, b, points):
                for lo, hi in _subtract(x, y, newline_holes):
                    if span.style is Style.LINK and not text[lo:hi].strip():
                        continue
                    if hi > lo:
                        out.append(span.moved(lo, hi))
    return FormattedText(text, tuple(out)).normalized()


def _inline_code(content: str) -> str:
    runs = _backtick_runs(content)
    fence = "`" if 1 not in runs else "``"
    # Discord strips one space next to a backtick at either end; pad so content survives.
    if re.match(r" *`", content):
        content = " " + content
    if re.search(r"` *\Z", content):
        content = content + " "
    return f"{fence}{content}{fence}"


def _escape_plan(text: str, spans: Sequence[Span], autolinks: bool) -> list[bool]:
    """For each character: must it be backslash-escaped?"""
    size = len(text)
    escape = [ch in _DISCORD_ALWAYS_ESCAPE for ch in text]
    for m in _RE_EVERYONE.finditer(text):
        escape[m.start()] = True
    line_starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    for start in line_starts:
        pos = start
        while pos < size and text[pos] in " \t":
            pos += 1
        marker = _LINE_MARKER.match(text, pos)
        if marker and marker.lastgroup is not None:
            escape[marker.start(marker.lastgroup)] = True
    bounds = sorted({p for s in spans for p in (s.start, s.end)})
    span_starts = {s.start for s in spans}
    guarded = [(s.start, s.end) for s in spans if s.style in _CODE_STYLES or s.style is Style.LINK]
    covered_until = 0
    for m in _SCHEME.finditer(text):
        begin = m.start()
        if begin < covered_until:
            continue
        colon = m.end() - 3
        bare = _RE_URL.match(text, begin) if autolinks else None
        if bare:
            stop = bare.end()
            while stop < size and text[stop] not in _WS_CHARS and text[stop] != "<":
                stop += 1
            run = text[begin:stop]
            inside = bounds[bisect.bisect_right(bounds, begin) : bisect.bisect_left(bounds, stop)]
            if (
                not any(ch in _URL_UNSAFE for ch in run)
                and "__" not in run
                and run[-1] not in _DISCORD_JOINING
                and (stop == size or text[stop] in _WS_CHARS)
                and not inside
                and stop not in span_starts
                and not any(a < stop and b > begin for a, b in guarded)
            ):
                # Left bare so Discord links it; its markdown-looking characters are literal
                # inside a URL, so they must not be escaped either.
                for i in range(begin, stop):
                    escape[i] = False
                covered_until = stop
                continue
        escape[colon] = True
    return escape


def _quote_block(inner: str) -> str:
    body, tail = (inner[:-1], "\n") if inner.endswith("\n") else (inner, "")
    return "\n".join("> " + line for line in body.split("\n")) + tail


def _join_pieces(pieces: list[tuple[str, bool]]) -> str:
    out: list[str] = []
    prev: tuple[str, bool] | None = None
    for raw, is_markup in pieces:
        if not raw:
            continue
        if (
            prev is not None
            and (prev[1] or is_markup)
            and prev[0][-1] in _DISCORD_JOINING
            and (raw[0] == prev[0][-1] or (prev[0][-1] == "~" and raw[0] == "_"))
        ):
            # Equal characters merge into a longer delimiter (**a***b*), and Discord's strike
            # rule refuses a closing ~~ followed by "_".
            out.append(_ZWSP)
        out.append(raw)
        prev = (raw, is_markup)
    return "".join(out)


def _emit_discord(canonical: FormattedText, autolinks: bool) -> str:
    text = canonical.text
    spans = _split_at_quotes(canonical.spans)
    escape = _escape_plan(text, spans, autolinks)

    def plain(start: int, end: int) -> str:
        return "".join("\\" + text[i] if escape[i] else text[i] for i in range(start, end))

    def flatten(nodes: list[_Tree]) -> list[tuple[str, bool]]:
        pieces: list[tuple[str, bool]] = []
        for node in nodes:
            span = node.span
            if span is None:
                pieces.append((plain(node.start, node.end), False))
            elif span.style is Style.QUOTE:
                pieces.append((_quote_block(_join_pieces(flatten(node.children))), True))
            elif span.style is Style.CODE:
                pieces.append((_inline_code(text[node.start : node.end]), True))
            elif span.style is Style.PRE:
                pieces.append(
                    (f"```{span.language or ''}\n{text[node.start : node.end]}\n```", True)
                )
            elif span.style is Style.LINK:
                pieces.append(("[", True))
                pieces.extend(flatten(node.children))
                pieces.append((f"](<{span.url}>)", True))
            else:
                delimiter = _DELIMITERS[span.style]
                inner = [piece for piece in flatten(node.children) if piece[0]]
                if span.style is Style.ITALIC and inner:
                    # Discord's "*" italic may not start or end on whitespace; an invisible
                    # ZWSP next to the delimiter satisfies it (JavaScript's \s excludes it).
                    if inner[0][0][0] in _WS_CHARS:
                        inner.insert(0, (_ZWSP, False))
                    if inner[-1][0][-1] in _WS_CHARS:
                        inner.append((_ZWSP, False))
                pieces.append((delimiter, True))
                pieces.extend(inner)
                pieces.append((delimiter, True))
        return pieces

    return _join_pieces(flatten(_nest(spans, len(text))))


def _reads_back(md: str, canonical: FormattedText) -> bool:
    return from_discord_markdown(md) == canonical


def to_discord_markdown(ft: FormattedText, *, autolinks: bool = True) -> str:
    """Discord message content showing exactly ``canonical_for_discord(ft)``.

    With ``autolinks`` (default) bare URLs stay clickable where that is safe; without, every
    URL is plain text.  See the module docstring for the escaping rules.
    """
    canonical = canonical_for_discord(ft)
    md = _emit_discord(canonical, autolinks)
    if _reads_back(md, canonical):
        return md
    if autolinks:
        md = _emit_discord(canonical, False)
        if _reads_back(md, canonical):
            return md
    log.warning("discord markdown for %r did not read back; sending it unformatted", canonical)
    return _emit_discord(FormattedText(canonical.text), False)


# --------------------------------------------------------------------------- splitting

_PREPEND = frozenset(
    {*range(0x0600, 0x0606), 0x06DD, 0x070F, 0x0890, 0x0891, 0x08E2, 0x0D4E, 0x110BD, 0x110CD}
    | {0x111C2, 0x111C3, 0x1193F, 0x11941, 0x11A3A, *range(0x11A84, 0x11A8A), 0x11D46}
)
_SENTENCE_END = frozenset(".!?…。！？")
_CLOSERS = frozenset("\"')]»”’」』")


def _is_extend(ch: str) -> bool:
    code = ord(ch)
    if code in (0x200C, 0x200D, 0xFF9E, 0xFF9F):
        return True
    if 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE007F:
        return True
    return unicodedata.category(ch) in ("Mn", "Me", "Mc")


def _hangul(code: int) -> str:
    if 0x1100 <= code <= 0x115F or 0xA960 <= code <= 0xA97C:
        return "L"
    if 0x1160 <= code <= 0x11A7 or 0xD7B0 <= code <= 0xD7C6:
        return "V"
    if 0x11A8 <= code <= 0x11FF or 0xD7CB <= code <= 0xD7FB:
        return "T"
    if 0xAC00 <= code <= 0xD7A3:
        return "LV" if (code - 0xAC00) % 28 == 0 else "LVT"
    return ""


def _is_regional(code: int) -> bool:
    return 0x1F1E6 <= code <= 0x1F1FF


def _grapheme_boundaries(text: str) -> list[bool]:
    """Where a cut keeps grapheme clusters whole (UAX #29, without the emoji-property tables)."""
    size = len(text)
    ok = [True] * (size + 1)
    regional_run = 0
    for i in range(1, size):
        prev, cur = text[i - 1], text[i]
        prev_code, cur_code = ord(prev), ord(cur)
        regional_run = regional_run + 1 if _is_regional(prev_code) else 0
        if prev == "\r" and cur == "\n":
            ok[i] = False
        elif prev in "\r\n" or cur in "\r\n":
            continue
        elif _is_extend(cur) or prev == "\u200d" or prev_code in _PREPEND:
            ok[i] = False
        elif _is_regional(prev_code) and _is_regional(cur_code):
            ok[i] = regional_run % 2 == 0
        else:
            before, after = _hangul(prev_code), _hangul(cur_code)
            if (
                (before == "L" and after in ("L", "V", "LV", "LVT"))
                or (before in ("LV", "V") and after in ("V", "T"))
                or (before in ("LVT", "T") and after == "T")
            ):
                ok[i] = False
    return ok


def split(
    ft: FormattedText,
    limit: int,
    *,
    measure: Callable[[str], int] = len,
    render: Callable[[FormattedText], str] | None = None,
) -> list[FormattedText]:
    """Cut ``ft`` into parts whose size ``measure(render(part))`` (or ``measure(part.text)``
    without ``render``) is at most ``limit``.

    Cuts prefer, in this order, a paragraph break, a line break, a sentence end and a space,
    each only if it falls in the second half of the longest part that fits; otherwise the
    latest such break anywhere; otherwise a hard cut at the longest fit.  No cut falls inside a
    grapheme cluster (combining marks, ZWJ emoji, flags, Hangul syllables) or inside a link,
    unless a single cluster or link alone exceeds the limit; offsets are code points, so never
    inside a surrogate pair either.  Spans are clipped into each part.

    Whitespace at a cut: the left part loses its trailing whitespace; for a line or paragraph
    break the newlines go too, but the indentation after the last newline starts the next part.
    A whitespace-only remainder after a cut is dropped.  Nothing else is removed, so the text
    equals ``part0 + ws0 + part1 + ws1 + ...`` where every ``ws`` is whitespace only (a trailing
    one included).  An empty text gives ``[]``.  Raises ValueError if not even one character
    fits within ``limit``.
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    text = ft.text
    size = len(text)
    if not text:
        return []

    def fits(start: int, end: int) -> bool:
        part = ft.slice(start, end)
        return measure(render(part) if render is not None else part.text) <= limit

    if fits(0, size):
        return [ft]
    cluster_ok = _grapheme_boundaries(text)
    in_link = [False] * (size + 1)
    for span in ft.spans:
        if span.style is Style.LINK:
            for i in range(span.start + 1, span.end):
                in_link[i] = True
    whitespace_runs = [(m.start(), m.end()) for m in re.finditer(r"\s+", text)]

    def longest_fit(start: int) -> int:
        for allowed in (
            lambda c: cluster_ok[c] and not in_link[c],
            lambda c: cluster_ok[c],
            lambda c: True,
        ):
            candidates = [c for c in range(start + 1, size + 1) if allowed(c)]
            if not candidates or not fits(start, candidates[0]):
                continue
            lo, hi = 0, len(candidates) - 1
            while lo < hi:  # largest candidate that fits, assuming size grows with length
                mid = (lo + hi + 1) // 2
                if fits(start, candidates[mid]):
                    lo = mid
                else:
                    hi = mid - 1
            return candidates[lo]
        raise ValueError(f"limit {limit} is too small for the text at offset {start}")

    def choose_cut(start: int, longest: int) -> tuple[int, int]:
        best: dict[int, tuple[int, int]] = {}
        for ws_start, ws_end in whitespace_runs:
            if ws_start <= start:
                continue
            if ws_start > longest:
                break
            run = text[ws_start:ws_end]
            newlines = run.count("\n")
            if newlines:
                kind, resume = (0 if newlines >= 2 else 1), ws_start + run.rfind("\n") + 1
            else:
                back = ws_start - 1
                while back > start and text[back] in _CLOSERS:
                    back -= 1
                kind, resume = (2 if text[back] in _SENTENCE_END else 3), ws_end
            if in_link[ws_start] or in_link[resume]:
                continue
            if not (cluster_ok[ws_start] and cluster_ok[resume]):
                continue
            best[kind] = (ws_start, resume)
        half = start + (longest - start) // 2
        for kind in (0, 1, 2, 3):
            if kind in best and best[kind][0] >= half:
                return best[kind]
        if best:
            return max(best.values())
        return longest, longest

    parts: list[FormattedText] = []
    start = 0
    while start < size:
        if start and text[start:].isspace():
            break
        if fits(start, size):
            parts.append(ft.slice(start, size))
            break
        longest = longest_fit(start)
        cut, resume = choose_cut(start, longest)
        if cut != longest and not fits(start, cut):
            cut, resume = longest, longest
        parts.append(ft.slice(start, cut))
        start = resume
    return parts
