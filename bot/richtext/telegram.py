"""Telegram side of the bridge: Bot API entities and ``parse_mode=HTML`` to and from the model.

* In:  :func:`from_telegram_entities` (Bot API entity dicts, UTF-16 offsets) and
  :func:`from_telegram_html`.  Out: :func:`to_telegram_html`, :func:`to_telegram_entities`.
* :func:`render_telegram_visible` is the reference renderer: the text Telegram shows for HTML.

What cannot cross (:func:`canonical_for_telegram` computes it exactly)
-----------------------------------------------------------------------
* Telegram forbids styles on ``code``/``pre`` and entities straddling a blockquote, so
  bold/italic/underline/strike/spoiler/link are removed from code ranges and split at quote
  boundaries.  Overlapping code spans keep the earliest (then longest) one.  Links keep only
  http, https, tg and mailto schemes (Discord: http and https only); other links become plain text.

No mention from a text
----------------------
Telegram makes ``@username`` a mention (a link to the account, and a notification) wherever it
appears.  :func:`to_telegram_html` therefore puts a WORD JOINER (U+2060) after every ``@`` that
would start one, outside code (where Telegram detects nothing and the text must stay verbatim).
The joiner is invisible; :func:`render_telegram_visible` leaves it out, and every parser drops
it again (:func:`sanitize` strips it), so a text read back from Telegram carries none.
:func:`defuse_telegram_mentions` inserts the same joiners into a model text, for a caller that
must measure the text Telegram will count (message size limits) before rendering it.
:func:`to_telegram_entities` describes ``canonical_for_telegram(ft).text``, which has no joiners:
it is for reading, not for sending residents' texts.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping
from typing import Any

from bot.richtext.model import _CODE_STYLES, FormattedText, Span, Style
from bot.richtext.nesting import (
    _cut_at,
    _nest,
    _pick_disjoint,
    _quote_points,
    _split_at_quotes,
    _subtract,
    _Tree,
    _url_allowed,
)
from bot.richtext.sanitizing import sanitize_formatted

_TELEGRAM_SCHEMES = frozenset({"http", "https", "tg", "mailto"})
_TELEGRAM_LANGUAGE = re.compile(r"[A-Za-z0-9_+#.-]{1,64}")
WORD_JOINER = "\u2060"
# Where Telegram starts a mention (as tdlib does): an "@" that does not follow a letter, digit
# or "_" (that is an e-mail address), before an ASCII letter, digit or "_".
_MENTION_AT = re.compile(r"(?<!\w)@(?=[A-Za-z0-9_])")

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


def _mention_points(canonical: FormattedText) -> list[int]:
    """Offsets just after each "@" that Telegram would read as a mention, outside code."""
    code = [(s.start, s.end) for s in canonical.spans if s.style in _CODE_STYLES]
    return [
        match.end()
        for match in _MENTION_AT.finditer(canonical.text)
        if not any(start <= match.start() < end for start, end in code)
    ]


def _insert_joiners(ft: FormattedText, points: list[int]) -> FormattedText:
    """``ft`` with a word joiner before each of the sorted ``points``, spans moved along."""
    if not points:
        return ft
    pieces: list[str] = []
    previous = 0
    for point in points:
        pieces.extend((ft.text[previous:point], WORD_JOINER))
        previous = point
    pieces.append(ft.text[previous:])

    def moved(offset: int) -> int:
        # A joiner lands just after its "@": outside a span starting there, inside one ending
        # there (with the "@" it follows).
        return offset + bisect.bisect_right(points, offset)

    spans = tuple(span.moved(moved(span.start), moved(span.end)) for span in ft.spans)
    return FormattedText("".join(pieces), spans)


def defuse_telegram_mentions(ft: FormattedText) -> FormattedText:
    """Sanitised ``ft`` with the word joiners :func:`to_telegram_html` will put after ``@``.

    Rendering the result gives the same HTML as rendering ``ft``; what it adds is a text whose
    length is the one Telegram counts.
    """
    clean = sanitize_formatted(ft)
    return _insert_joiners(clean, _mention_points(canonical_for_telegram(clean)))


def to_telegram_html(ft: FormattedText) -> str:
    """Telegram ``parse_mode=HTML`` for ``canonical_for_telegram(ft)``; every character escaped.

    No ``@username`` in the text becomes a mention (see the module docstring).
    """
    canonical = canonical_for_telegram(ft)
    canonical = _insert_joiners(canonical, _mention_points(canonical))
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
    """Reference renderer: the text Telegram shows for this HTML (tags dropped, entities decoded,
    word joiners, which show nothing, left out).

    Raises ValueError for HTML Telegram would reject (stray ``<``, bad nesting, unknown tags).
    """
    return _parse_telegram_html(html).text.replace(WORD_JOINER, "")
