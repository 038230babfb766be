r"""Discord side of the bridge: Discord markdown to and from the model.

* In:  :func:`from_discord_markdown`.  Out: :func:`to_discord_markdown`.
* :func:`render_discord_visible` is the reference renderer: the text Discord displays.

What cannot cross (:func:`canonical_for_discord` computes it exactly)
---------------------------------------------------------------------
* As for Telegram, overlapping code spans keep the earliest (then longest) one, and styles
  are removed from code ranges and split at quote boundaries.  Links keep only the http and
  https schemes; other links become plain text.
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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.richtext.model import (
    _CODE_STYLES,
    FormattedText,
    Span,
    Style,
    _merge_ranges,
    _normalize_spans,
)
from bot.richtext.nesting import (
    _cut_at,
    _nest,
    _pick_disjoint,
    _split_at_quotes,
    _subtract,
    _Tree,
    _url_allowed,
)
from bot.richtext.sanitizing import sanitize_formatted

logger = logging.getLogger(__name__)


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
    logger.warning("discord markdown for %r did not read back; sending it unformatted", canonical)
    return _emit_discord(FormattedText(canonical.text), False)
