"""The platform-neutral rich text model: :class:`FormattedText`, :class:`Span`, :class:`Style`.

A message is held as a :class:`FormattedText`: the exact text a reader sees plus a tuple of
:class:`Span` (style, start, end) whose offsets count Python ``str`` code points, end exclusive.
This module is pure data and span arithmetic; it imports nothing else from the package.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


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
