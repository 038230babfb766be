"""Span geometry shared by the Telegram and Discord converters.

Range arithmetic over spans (subtracting holes, cutting at points, picking disjoint code
spans, quote boundaries), the link scheme check, and :func:`_nest`, which turns possibly
crossing spans into a tree of properly nested pieces for the renderers.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bot.richtext.model import _CODE_STYLES, _STYLE_ORDER, Span, Style, _span_sort_key

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
