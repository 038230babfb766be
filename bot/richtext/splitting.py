"""Splitting a :class:`FormattedText` into parts that fit a platform's message size limit.

Cuts prefer paragraph, line, sentence and word breaks and never fall inside a grapheme
cluster or a link (unless one alone exceeds the limit); see :func:`split`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from bot.richtext.model import FormattedText, Style

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
