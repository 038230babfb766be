"""Bar chart images for poll results and the weekly digest, drawn with matplotlib's Agg.

Each chart is its own ``Figure`` on its own ``FigureCanvasAgg``: pyplot is never imported, so
no global figure registry, no GUI backend, and two charts drawn in two threads do not share
state. matplotlib itself is imported on the first chart, not with this module: importing it
takes about a second, which every start of the bot and every command would otherwise pay.
"""

from __future__ import annotations

import functools
import io
import textwrap
import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["DPI", "WIDTH_PX", "bar_chart_png", "chart_height"]

DPI: Final = 100
WIDTH_PX: Final = 800

# The one font shipped inside matplotlib, so a chart looks the same on every machine; it has
# every letter of French (é, è, ç, œ, «, », the narrow no-break space).
_FONT: Final = "DejaVu Sans"
_LABEL_PT: Final = 10
_TITLE_PT: Final = 13
_COUNT_PT: Final = 10

# Label column on the left: 30 characters of DejaVu Sans at 10 pt take about 230 px.
_LEFT_PX: Final = 300
_RIGHT_PX: Final = 24
_LABEL_CHARS: Final = 30
# A 200-character option would otherwise make one row as tall as the rest of the chart.
_LABEL_LINES: Final = 3
_TITLE_CHARS: Final = 70
_TITLE_LINES: Final = 2

_LINE_PX: Final = 16
_ROW_PAD_PX: Final = 16
_BAR_PX: Final = 24
_TITLE_LINE_PX: Final = 22
_TOP_PAD_PX: Final = 16
_TITLE_GAP_PX: Final = 14
_BOTTOM_PX: Final = 16

_BAR_COLOUR: Final = "#3b6ea5"
_TEXT_COLOUR: Final = "#222222"
_MISSING_GLYPH: Final = "□"
_ELLIPSIS: Final = "…"


def bar_chart_png(title: str, labels: Sequence[str], counts: Sequence[int]) -> bytes:
    """A horizontal bar chart as PNG bytes, 800 px wide; CPU-bound: run it in asyncio.to_thread."""
    if len(labels) != len(counts):
        raise ValueError(f"{len(labels)} labels for {len(counts)} counts")
    if any(count < 0 for count in counts):
        raise ValueError("counts cannot be negative")

    # Imported here, not at the top: see the module docstring.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    title_lines = _wrap(title, _TITLE_CHARS, _TITLE_LINES)
    label_lines = [_wrap(label, _LABEL_CHARS, _LABEL_LINES) for label in labels]
    rows = [_row_px(lines) for lines in label_lines]
    rows_px = sum(rows)
    top_px = _top_px(title_lines)
    height_px = top_px + rows_px + _BOTTOM_PX

    figure = Figure(figsize=(WIDTH_PX / DPI, height_px / DPI), dpi=DPI, facecolor="white")
    canvas = FigureCanvasAgg(figure)
    if title_lines:
        figure.text(
            0.5,
            1 - _TOP_PAD_PX / height_px,
            "\n".join(title_lines),
            ha="center",
            va="top",
            fontsize=_TITLE_PT,
            fontfamily=_FONT,
            color=_TEXT_COLOUR,
            parse_math=False,  # "5 $ ou 10 $" is a price, not TeX
        )
    if rows:
        plot_px = WIDTH_PX - _LEFT_PX - _RIGHT_PX
        axes = figure.add_axes(
            (_LEFT_PX / WIDTH_PX, _BOTTOM_PX / height_px, plot_px / WIDTH_PX, rows_px / height_px)
        )
        # The y axis is in pixels, top down, so rows of different heights need no arithmetic
        # in axes fractions.
        centres: list[float] = []
        top = 0
        for row in rows:
            centres.append(top + row / 2)
            top += row
        axes.set_ylim(rows_px, 0)
        # Room on the right for a count written after a short bar; 1 when all are zero.
        most = max(max(counts), 1)
        axes.set_xlim(0, most * 1.15)
        axes.barh(centres, counts, height=_BAR_PX, color=_BAR_COLOUR)
        axes.set_yticks(
            centres,
            ["\n".join(lines) for lines in label_lines],
            fontsize=_LABEL_PT,
            fontfamily=_FONT,
            color=_TEXT_COLOUR,
            parse_math=False,
        )
        axes.tick_params(axis="y", length=0, pad=8)
        axes.xaxis.set_visible(False)
        for side in ("top", "right", "bottom"):
            axes.spines[side].set_visible(False)
        axes.spines["left"].set_color("#999999")
        for centre, count in zip(centres, counts, strict=True):
            _write_count(axes, centre, count, bar_px=count / (most * 1.15) * plot_px)

    buffer = io.BytesIO()
    # No "Software" entry: the same chart gives the same bytes whatever matplotlib's version.
    canvas.print_png(buffer, metadata={"Software": None})
    return buffer.getvalue()


def chart_height(title: str, labels: Sequence[str]) -> int:
    """The height in pixels of the chart ``bar_chart_png`` draws for this title and labels."""
    rows = sum(_row_px(_wrap(label, _LABEL_CHARS, _LABEL_LINES)) for label in labels)
    return _top_px(_wrap(title, _TITLE_CHARS, _TITLE_LINES)) + rows + _BOTTOM_PX


def _top_px(title_lines: Sequence[str]) -> int:
    """The band above the bars: the title's lines and some air."""
    if not title_lines:
        return _TOP_PAD_PX
    return _TOP_PAD_PX + len(title_lines) * _TITLE_LINE_PX + _TITLE_GAP_PX


def _row_px(lines: Sequence[str]) -> int:
    """The height of one option's row, which grows with its wrapped label."""
    return max(len(lines) * _LINE_PX, _BAR_PX) + _ROW_PAD_PX


def _write_count(axes: Axes, centre: float, count: int, *, bar_px: float) -> None:
    """Write ``count`` inside the end of its bar, or just after it when the bar is too short."""
    text = f"{count:,}".replace(",", "\u202f")  # French groups digits with a narrow space
    # About 8 px per digit at 10 pt, plus a margin on each side.
    fits = bar_px >= 8 * len(text) + 12
    axes.annotate(
        text,
        xy=(count, centre),
        xytext=(-6 if fits else 6, 0),
        textcoords="offset pixels",
        ha="right" if fits else "left",
        va="center",
        fontsize=_COUNT_PT,
        fontfamily=_FONT,
        color="white" if fits else _TEXT_COLOUR,
        annotation_clip=False,
    )


def _wrap(text: str, chars: int, max_lines: int) -> list[str]:
    """``text`` drawable in the font, wrapped at spaces and cut to ``max_lines`` with "…"."""
    lines = textwrap.wrap(_drawable(text), chars, break_long_words=True, break_on_hyphens=True)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: chars - 1].rstrip() + _ELLIPSIS
    return lines


def _drawable(text: str) -> str:
    """``text`` with characters the font lacks dropped or shown as one "□"."""
    # matplotlib warns once per missing glyph and draws an empty box; a warning per emoji in
    # the logs helps nobody, and the chat post beside the image keeps the real label.
    glyphs = _glyphs()
    out: list[str] = []
    for char in text:
        if char.isspace() or ord(char) in glyphs:
            out.append(char)
        elif unicodedata.category(char)[0] in "CM":
            # Joiners, variation selectors and combining marks of an emoji: invisible parts
            # of what is already shown as a box.
            continue
        elif not out or out[-1] != _MISSING_GLYPH:
            out.append(_MISSING_GLYPH)
    return "".join(out)


@functools.cache
def _glyphs() -> frozenset[int]:
    """The code points the chart font can draw (computed on first use, not at import)."""
    from matplotlib import font_manager

    path = font_manager.findfont(font_manager.FontProperties(family=_FONT))
    return frozenset(font_manager.get_font(path).get_charmap())
