"""Bar chart images (bot/charts.py): valid PNGs of the announced size, drawn without pyplot."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from bot.charts import WIDTH_PX, bar_chart_png, chart_height

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BAR_RGB = (0x3B, 0x6E, 0xA5)
ROOT = Path(__file__).resolve().parent.parent


def size(png: bytes) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk, which always comes first."""
    assert png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def colours(png: bytes) -> set[tuple[int, ...]]:
    """Every colour in the decoded image (also proves the file decodes)."""
    with Image.open(io.BytesIO(png)) as image:
        rgb = image.convert("RGB")
        found = rgb.getcolors(maxcolors=1_000_000)
    assert found is not None
    # RGB images give tuples; the float case is for single-band images.
    return {colour for _, colour in found if isinstance(colour, tuple)}


def check(title: str, labels: list[str], counts: list[int]) -> bytes:
    """Draw, then check signature, size and that the image decodes."""
    png = bar_chart_png(title, labels, counts)
    assert png.startswith(PNG_SIGNATURE)
    assert size(png) == (WIDTH_PX, chart_height(title, labels))
    colours(png)
    return png


def test_a_yes_no_abstain_result() -> None:
    """Three options: a valid PNG with bars in the chart's colour, a few tens of KB at most."""
    png = check("Sondage n° 3 : faut-il fermer la rue ?", ["Oui", "Non", "Abstention"], [12, 7, 1])
    assert BAR_RGB in colours(png)
    assert len(png) < 60_000


def test_zero_counts_draw_no_bar() -> None:
    """Nobody voted: no division by zero, no bar drawn."""
    png = check("Personne n’a voté", ["Oui", "Non"], [0, 0])
    assert BAR_RGB not in colours(png)


def test_one_and_twelve_options() -> None:
    """One row or twelve: the height follows the rows."""
    one = check("Un seul choix", ["Samedi"], [3])
    twelve = check("Douze choix", [f"Créneau {i}" for i in range(12)], list(range(12)))
    assert size(twelve)[1] > size(one)[1]


def test_long_labels_are_wrapped_and_cut() -> None:
    """200-character labels take at most three lines each, so the image stays reasonable."""
    label = ("Réaménagement de la place de l’Église avec bancs, arbres et fontaine " * 3)[:200]
    assert len(label) == 200
    png = check("Choix " * 40, [label] * 12, [5] * 12)
    # Twelve rows of three 16 px lines plus padding, and a two-line title: well under 1000 px.
    assert size(png)[1] < 1000
    # Past three lines a label is cut: a longer one takes no more room.
    assert chart_height("t", [label]) == chart_height("t", [label * 5])


def test_labels_with_emoji_dollars_and_control_characters() -> None:
    """Glyphs the font lacks, TeX-like "$" and control characters: no warning, no error."""
    # pytest turns warnings into errors here, so a "Glyph missing" warning would fail this.
    check(
        "Budget : $\\frac{ ou 5 $ ? 🍕",
        ["🍕👨‍👩‍👧 pizza", "$\\frac{", "tab\there\x00\u200b", ""],
        [1, 2, 3, 1_234_567],
    )


def test_mismatched_input_is_refused() -> None:
    """Programming errors raise before anything is drawn."""
    with pytest.raises(ValueError):
        bar_chart_png("t", ["a"], [1, 2])
    with pytest.raises(ValueError):
        bar_chart_png("t", ["a"], [-1])


def test_no_option_gives_a_title_only_image() -> None:
    """An empty poll still gives a valid image."""
    check("Vide", [], [])


def test_charts_drawn_in_threads_match_charts_drawn_one_by_one() -> None:
    """Callers use asyncio.to_thread: concurrent charts share no state and give the same bytes."""
    jobs = [
        (f"Sondage {i}", [f"Option {j}" for j in range(i % 5 + 1)], list(range(i % 5 + 1)))
        for i in range(8)
    ]
    alone = [bar_chart_png(*job) for job in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda job: bar_chart_png(*job), jobs))
    assert together == alone


def test_pyplot_is_never_imported() -> None:
    """Importing the module loads no matplotlib; drawing loads it without pyplot."""
    # A fresh interpreter: another test in this process may have imported pyplot itself.
    script = textwrap.dedent(
        """
        import sys
        import bot.charts
        assert "matplotlib" not in sys.modules, "matplotlib imported with bot.charts"
        png = bot.charts.bar_chart_png("t", ["a", "b"], [1, 2])
        assert png.startswith(b"\\x89PNG")
        assert "matplotlib.figure" in sys.modules
        assert "matplotlib.pyplot" not in sys.modules, "pyplot imported"
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
