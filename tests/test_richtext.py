"""Tests for bot.richtext: examples for every construct both ways, nasty inputs, properties."""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.richtext import (
    FormattedText,
    Span,
    Style,
    _emit_discord,  # the first rendering attempt, before any fallback (see test below)
    canonical_for_discord,
    canonical_for_telegram,
    from_discord_markdown,
    from_telegram_entities,
    from_telegram_html,
    render_discord_visible,
    render_telegram_visible,
    sanitize,
    sanitize_formatted,
    split,
    to_discord_markdown,
    to_telegram_entities,
    to_telegram_html,
    utf16_len,
    visible_text,
)

ZWSP = "\u200b"
B, IT, U, S, SP, C, P, L, Q = (
    Style.BOLD,
    Style.ITALIC,
    Style.UNDERLINE,
    Style.STRIKE,
    Style.SPOILER,
    Style.CODE,
    Style.PRE,
    Style.LINK,
    Style.QUOTE,
)


def ft(text: str, *spans: tuple[Any, ...]) -> FormattedText:
    return FormattedText(text, tuple(Span(*s) for s in spans))


def spans_of(value: FormattedText) -> set[tuple[Style, int, int, str | None, str | None]]:
    return {(s.style, s.start, s.end, s.url, s.language) for s in value.normalized().spans}


# ----------------------------------------------------------------------------- model


def test_plain_concat_slice_and_normalize() -> None:
    a = FormattedText.plain("ab").styled(B)
    joined = a + " " + ft("cd", (IT, 0, 2))
    assert joined.text == "ab cd"
    assert spans_of(joined) == {(B, 0, 2, None, None), (IT, 3, 5, None, None)}
    assert ("x" + a).spans == (Span(B, 1, 3),)
    both = FormattedText.concat([a, "z", a], separator=FormattedText.plain("-"))
    assert both.text == "ab-z-ab" and [(s.start, s.end) for s in both.spans] == [(0, 2), (5, 7)]
    part = joined.slice(1, 4)
    assert part.text == "b c" and spans_of(part) == {(B, 0, 1, None, None), (IT, 2, 3, None, None)}
    merged = ft("abcdef", (B, 0, 2), (B, 2, 4), (B, 3, 5), (IT, 1, 1)).normalized()
    assert merged.spans == (Span(B, 0, 5),)
    # One link per character: the earlier link wins the overlap.
    links = ft(
        "abcdef", (L, 0, 4, "https://a.example"), (L, 2, 6, "https://b.example")
    ).normalized()
    assert [(s.start, s.end, s.url) for s in links.spans] == [
        (0, 4, "https://a.example"),
        (4, 6, "https://b.example"),
    ]
    assert visible_text(joined) == "ab cd"


def test_span_validation() -> None:
    with pytest.raises(ValueError):
        Span(B, 3, 2)
    with pytest.raises(ValueError):
        ft("ab", (B, 0, 3))
    assert Span("bold", 0, 1).style is Style.BOLD  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- sanitize


def test_sanitize_removes_disguises_and_keeps_writing() -> None:
    assert sanitize("pay\u202egnp.exe") == "paygnp.exe"
    assert sanitize("\u2066a\u2069\u200e\u200f\u061c\u202a\u202b\u202c\u202db") == "ab"
    assert sanitize("a\u200bb\u2060c\ufeffd\u00ade") == "abcde"
    assert sanitize("nul\x00 bell\x07 esc\x1b del\x7f c1\x9b") == "nul bell esc del c1"
    assert sanitize("a\r\nb\rc\x85d\u2028e\u2029f") == "a\nb\nc\nd\ne\nf"
    assert sanitize("tab\tkept\n") == "tab\tkept\n"
    kept = "é e\u0301 ñ 😀 👍🏽 👩\u200d👩\u200d👧 🏳️\u200d🌈 🇫🇷 שלום مرحبا می\u200cخواهم"
    assert sanitize(kept) == kept
    england = "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"
    assert sanitize(england) == england
    # Tag characters outside a flag are "ASCII smuggling"; runs of variation selectors too.
    assert sanitize("hi\U000e0069\U000e0067\U000e006e") == "hi"
    assert sanitize("a\ufe0f\ufe0f\ufe0f") == "a\ufe0f"
    assert sanitize(" \ufe0f") == " "
    assert sanitize("\u3164\u115f") == ""


def test_sanitize_formatted_remaps_spans() -> None:
    value = ft("a\u202eb\r\nc", (B, 0, 3), (IT, 3, 6), (L, 0, 1, " https://x.org/\u202e "))
    clean = sanitize_formatted(value)
    assert clean.text == "ab\nc"
    assert spans_of(clean) == {
        (B, 0, 2, None, None),
        (IT, 2, 4, None, None),
        (L, 0, 1, "https://x.org/", None),
    }


# ----------------------------------------------------------------------------- Telegram


def test_utf16_len() -> None:
    assert utf16_len("") == 0
    assert utf16_len("a😀é") == 4


def test_from_telegram_entities_every_type() -> None:
    text = "😀 b i u s p c pre l q e"
    types = [
        "bold",
        "italic",
        "underline",
        "strikethrough",
        "spoiler",
        "code",
        "pre",
        "text_link",
        "blockquote",
        "expandable_blockquote",
    ]
    entities: list[dict[str, Any]] = []
    for n, kind in enumerate(types):
        entity: dict[str, Any] = {"type": kind, "offset": 3 + 2 * n, "length": 1}
        if kind == "text_link":
            entity["url"] = "https://example.org"
        if kind == "pre":
            entity["language"] = "python"
        entities.append(entity)
    entities += [
        {"type": "url", "offset": 0, "length": 2},
        {"type": "mention", "offset": 0, "length": 2},
        {"type": "hashtag", "offset": 0, "length": 2},
        {"type": "bot_command", "offset": 0, "length": 2},
        {"type": "custom_emoji", "offset": 0, "length": 2, "custom_emoji_id": "1"},
        {"type": "bold", "offset": "x", "length": 1},  # malformed: ignored
        {"type": "text_link", "offset": 0, "length": 1},  # link without url: ignored
    ]
    value = from_telegram_entities(text, entities)
    assert value.text == text
    got = sorted((s.style, s.start, s.end, s.url, s.language) for s in value.spans)
    styles = [B, IT, U, S, SP, C, P, L, Q, Q]
    expected = []
    for n, style in enumerate(styles):
        # Code points: the emoji is one code point but two UTF-16 units.
        expected.append(
            (
                style,
                2 + 2 * n,
                3 + 2 * n,
                "https://example.org" if style is L else None,
                "python" if style is P else None,
            )
        )
    assert got == sorted(expected)


def test_from_telegram_entities_surrogate_halves_widen() -> None:
    value = from_telegram_entities("😀x", [{"type": "bold", "offset": 1, "length": 1}])
    assert value.spans == (Span(B, 0, 1),)
    clean = from_telegram_entities("a\u202eb", [{"type": "italic", "offset": 2, "length": 1}])
    assert clean.text == "ab" and clean.spans == (Span(IT, 1, 2),)


def test_to_telegram_html_escapes_and_nests() -> None:
    assert to_telegram_html(ft('a<b>&"c', (B, 0, 7))) == '<b>a&lt;b&gt;&amp;"c</b>'
    assert to_telegram_html(ft("abcdef", (B, 0, 4), (IT, 2, 6))) == "<b>ab<i>cd</i></b><i>ef</i>"
    assert to_telegram_html(ft("x", (SP, 0, 1), (U, 0, 1), (S, 0, 1))) == (
        "<u><s><tg-spoiler>x</tg-spoiler></s></u>"
    )
    link = ft("go", (L, 0, 2, 'https://e.org/?a=1&b="2"<'))
    assert to_telegram_html(link) == '<a href="https://e.org/?a=1&amp;b=&quot;2&quot;&lt;">go</a>'
    for bad in ("javascript:alert(1)", "ftp://x.org/", "data:text/html,hi", "https:nohost"):
        assert to_telegram_html(ft("go", (L, 0, 2, bad))) == "go"
    for good in ("tg://user?id=1", "mailto:a@b.org", "http://x.org"):
        assert "<a href" in to_telegram_html(ft("go", (L, 0, 2, good)))
    assert to_telegram_html(ft("print(1)", (P, 0, 8, None, "python"))) == (
        '<pre><code class="language-python">print(1)</code></pre>'
    )
    assert to_telegram_html(ft("<x>", (P, 0, 3, None, 'a"b'))) == "<pre>&lt;x&gt;</pre>"
    assert to_telegram_html(ft("a\nb", (Q, 0, 2))) == "<blockquote>a\n</blockquote>b"
    # Telegram: nothing styles code, and nothing straddles a blockquote.
    assert to_telegram_html(ft("a code b", (B, 0, 8), (C, 2, 6))) == (
        "<b>a </b><code>code</code><b> b</b>"
    )
    assert to_telegram_html(ft("ab\ncd", (B, 0, 5), (Q, 3, 5))) == (
        "<b>ab\n</b><blockquote><b>cd</b></blockquote>"
    )
    assert to_telegram_html(ft("a\u202eb")) == "ab"


def test_to_telegram_entities_utf16_and_nesting() -> None:
    value = ft("😀 abcdef", (B, 2, 6), (IT, 4, 8))
    assert to_telegram_entities(value) == [
        {"type": "bold", "offset": 3, "length": 4},
        {"type": "italic", "offset": 5, "length": 2},
        {"type": "italic", "offset": 7, "length": 2},
    ]
    pre = to_telegram_entities(ft("x = 1", (P, 0, 5, None, "python"), (L, 0, 1, "https://a.org")))
    assert pre == [{"type": "pre", "offset": 0, "length": 5, "language": "python"}]


def test_from_telegram_html() -> None:
    html = (
        '<b>b <i>bi</i></b> <a href="https://e.org/?a=1&amp;b=2">l</a> '
        '<pre><code class="language-py">x &lt; 1</code></pre><tg-spoiler>s</tg-spoiler>'
        '<span class="tg-spoiler">t</span><blockquote expandable>q</blockquote>&#128512;&#x41;&copy;'
    )
    value = from_telegram_html(html)
    assert value.text == "b bi l x < 1stq😀A&copy;"
    assert spans_of(value) == {
        (B, 0, 4, None, None),
        (IT, 2, 4, None, None),
        (L, 5, 6, "https://e.org/?a=1&b=2", None),
        (P, 7, 12, None, "py"),
        (SP, 12, 14, None, None),
        (Q, 14, 15, None, None),
    }
    for broken in ("a < b", "<b>x", "<b>x</i>", "<blink>x</blink>", "<span>x</span>"):
        with pytest.raises(ValueError):
            render_telegram_visible(broken)


# ----------------------------------------------------------------------------- Discord in


@pytest.mark.parametrize(
    ("md", "text", "spans"),
    [
        ("**b**", "b", {(B, 0, 1, None, None)}),
        ("*i* _j_", "i j", {(IT, 0, 1, None, None), (IT, 2, 3, None, None)}),
        (
            "__u__ ~~s~~ ||p||",
            "u s p",
            {(U, 0, 1, None, None), (S, 2, 3, None, None), (SP, 4, 5, None, None)},
        ),
        ("***bi***", "bi", {(B, 0, 2, None, None), (IT, 0, 2, None, None)}),
        ("`a*b`", "a*b", {(C, 0, 3, None, None)}),
        # simple-markdown strips a padding space only next to a backtick (unlike CommonMark).
        ("`` a`b ``", " a`b ", {(C, 0, 5, None, None)}),
        ("`` `b``", "`b", {(C, 0, 2, None, None)}),
        ("```py\nx = 1\n```", "x = 1", {(P, 0, 5, None, "py")}),
        ("```\n**not bold**\n```", "**not bold**", {(P, 0, 12, None, None)}),
        ("[site](https://e.org/a_(b))", "site", {(L, 0, 4, "https://e.org/a_(b)", None)}),
        (
            "[**x**](<https://e.org>)",
            "x",
            {(L, 0, 1, "https://e.org", None), (B, 0, 1, None, None)},
        ),
        ("[x](javascript:alert(1))", "[x](javascript:alert(1))", set()),
        ("> a\n> b\nc", "a\nb\nc", {(Q, 0, 4, None, None)}),
        (">>> a\nb", "a\nb", {(Q, 0, 3, None, None)}),
        (">not a quote", ">not a quote", set()),
        ("a > b", "a > b", set()),
        ("\\*lit\\* \\_x\\_ \\\\ \\a", "*lit* _x_ \\ \\a", set()),
        ("snake_case_name", "snake_case_name", set()),
        ("a * b * c", "a * b * c", set()),
        ("2 ~ 3 | 4", "2 ~ 3 | 4", set()),
        ("**unclosed", "**unclosed", set()),
        ("<:blob:123> <a:dance:456>", ":blob: :dance:", set()),
        ("<t:0:R>", "1970-01-01 00:00 UTC", set()),
        ("<@123> <@&4> <#5> @everyone", "<@123> <@&4> <#5> @everyone", set()),
        ("<https://e.org>", "https://e.org", set()),
        (
            "# Head\n## Two\n-# small",
            "Head\nTwo\nsmall",
            {(B, 0, 4, None, None), (B, 5, 8, None, None)},
        ),
        ("- a\n* b\n1. c\n1. d", "• a\n• b\n1. c\n2. d", set()),
        ("¯\\_(ツ)_/¯", "¯\\_(ツ)_/¯", set()),
        ("https://e.org/a_b_c*d*", "https://e.org/a_b_c*d*", set()),
        ("a\u202e**b**", "ab", {(B, 1, 2, None, None)}),
    ],
)
def test_from_discord_markdown(md: str, text: str, spans: set[Any]) -> None:
    value = from_discord_markdown(md)
    assert value.text == text
    assert spans_of(value) == spans


def test_render_discord_visible_shows_pills() -> None:
    assert render_discord_visible("<@1> <@&2> <#3> @here") == (
        "⟦user:1⟧ ⟦role:2⟧ ⟦channel:3⟧ ⟦@here⟧"
    )
    assert render_discord_visible("\\<@1> \\@everyone") == "<@1> @everyone"


def test_discord_parser_has_no_catastrophic_backtracking() -> None:
    nasty = "[a](" + "()" * 40 + " " + "*a " * 300 + "_" * 300 + "**" * 200 + "`" * 100
    began = time.perf_counter()
    from_discord_markdown(nasty * 2)
    assert time.perf_counter() - began < 2


# ----------------------------------------------------------------------------- Discord out


@pytest.mark.parametrize(
    ("text", "md"),
    [
        ("a*b_c~d|e`f\\g<h>i[j]k(l)", "a\\*b\\_c\\~d\\|e\\`f\\\\g\\<h>i\\[j\\]k(l)"),
        ("<@123> <@&456> <#7> <t:1:R> <:e:1>", "\\<@123> \\<@&456> \\<#7> \\<t:1:R> \\<:e:1>"),
        ("@everyone and @here", "\\@everyone and \\@here"),
        (
            "# T\n## T\n-# s\n- a\n* b\n+ c\n1. d\n2) e\n> f\n>>> g\n  - h",
            "\\# T\n\\## T\n\\-# s\n\\- a\n\\* b\n\\+ c\n1\\. d\n2\\) e\n\\> f\n\\>>> g\n  \\- h",
        ),
        ("x # y\n#tag -x 3.5 a>b", "x # y\n#tag -x 3.5 a>b"),
        ("see https://e.org/a_b?q=1. ok", "see https://e.org/a_b?q=1. ok"),
        ("HTTPS://E.ORG/x*y", "HTTPS\\://E.ORG/x\\*y"),
        ("¯\\_(ツ)_/¯", "¯\\\\\\_(ツ)\\_/¯"),
        ("RTL \u202eevil", "RTL evil"),
    ],
)
def test_to_discord_markdown_escapes(text: str, md: str) -> None:
    assert to_discord_markdown(FormattedText.plain(text)) == md
    assert render_discord_visible(md) == sanitize(text)


@pytest.mark.parametrize(
    ("value", "md"),
    [
        (ft("bold", (B, 0, 4)), "**bold**"),
        (ft("it", (IT, 0, 2)), "*it*"),
        (ft("a b", (IT, 0, 3), (B, 1, 2)), "*a** **b*"),
        (ft("u s p", (U, 0, 1), (S, 2, 3), (SP, 4, 5)), "__u__ ~~s~~ ||p||"),
        (ft("a`b", (C, 0, 3)), "``a`b``"),
        (ft("`x`", (C, 0, 3)), "`` `x` ``"),
        (ft("a``b`c", (C, 0, 6)), "```\na``b`c\n```"),
        (ft("a```b", (P, 0, 5)), "`a```b`"),
        (ft("print(1)", (P, 0, 8, None, "python")), "```python\nprint(1)\n```"),
        (ft("x", (P, 0, 1, None, "c++")), "```\nx\n```"),
        (ft("\nx\n", (P, 0, 3)), "\n```\nx\n```\n"),
        (ft("site", (L, 0, 4, "https://e.org/a_b (c)")), "[site](<https://e.org/a%5Fb%20%28c%29>)"),
        (ft("mail", (L, 0, 4, "mailto:a@b.org")), "mail"),
        (ft("a\nquoted\nb", (Q, 2, 8)), "a\n> quoted\nb"),
        (ft("a\nqu\n\nb", (Q, 3, 4)), "a\n> qu\n\nb"),
        (ft("**", (B, 0, 2)), f"**\\*\\*{ZWSP}**"),
        (ft("a|", (SP, 0, 2)), f"||a\\|{ZWSP}||"),
        (ft("ab", (B, 0, 1), (IT, 1, 2)), f"**a**{ZWSP}*b*"),
        (ft("https://e.org/x", (B, 0, 15)), "**https://e.org/x**"),
        (ft("https://e.org/x", (B, 0, 5)), "**https**\\://e.org/x"),
        (ft("code `here`", (B, 0, 11), (C, 5, 11)), "**code **`` `here` ``"),
    ],
)
def test_to_discord_markdown_styles(value: FormattedText, md: str) -> None:
    assert to_discord_markdown(value) == md
    assert from_discord_markdown(md) == canonical_for_discord(value)


def test_discord_italic_may_start_on_whitespace() -> None:
    value = ft("Hello *world*", (B, 0, 5), (IT, 3, 11))
    md = to_discord_markdown(value)
    assert md == f"**Hel*lo*{ZWSP}**{ZWSP}*{ZWSP} \\*worl*d\\*"
    assert from_discord_markdown(md) == value


# ----------------------------------------------------------------------------- split


def test_split_prefers_paragraphs_lines_sentences_spaces() -> None:
    text = "First para is here.\n\nSecond one. It has two sentences and more words"
    parts = split(FormattedText.plain(text), 30)
    assert [p.text for p in parts] == [
        "First para is here.",
        "Second one. It has two",
        "sentences and more words",
    ]
    assert split(FormattedText.plain("aaaa bbbb\ncccc"), 12)[0].text == "aaaa bbbb"
    assert [p.text for p in split(FormattedText.plain("x" * 10), 4)] == ["xxxx", "xxxx", "xx"]
    assert split(FormattedText.plain(""), 5) == []
    assert split(FormattedText.plain("short"), 5) == [FormattedText.plain("short")]
    with pytest.raises(ValueError):
        split(FormattedText.plain("😀😀"), 1, measure=utf16_len)


def test_split_keeps_clusters_links_and_indentation() -> None:
    family = "👩\u200d👩\u200d👧"  # 5 code points, one grapheme
    parts = split(FormattedText.plain("ab" + family + "cd"), 6)
    assert [p.text for p in parts] == ["ab", family + "c", "d"]
    accents = "e\u0301" * 5
    assert all(len(p.text) % 2 == 0 for p in split(FormattedText.plain(accents), 3))
    flags = "🇫🇷🇩🇪🇮🇹"
    assert [p.text for p in split(FormattedText.plain(flags), 3)] == ["🇫🇷", "🇩🇪", "🇮🇹"]
    linked = ft("aaa bbb ccc ddd", (L, 4, 11, "https://e.org"))
    parts = split(linked, 10)
    assert [p.text for p in parts] == ["aaa", "bbb ccc", "ddd"]
    assert parts[1].spans == (Span(L, 0, 7, "https://e.org"),)
    code = "line one\n    indented two"
    assert [p.text for p in split(FormattedText.plain(code), 20)] == [
        "line one",
        "    indented two",
    ]


def test_split_measures_rendered_markdown() -> None:
    value = FormattedText.plain("*" * 30)
    parts = split(value, 20, render=to_discord_markdown)
    assert all(len(to_discord_markdown(p)) <= 20 for p in parts)
    assert "".join(p.text for p in parts) == value.text


# ----------------------------------------------------------------------------- properties

# fmt: off
TOKENS = [
    "*", "**", "***", "_", "__", "~", "~~", "|", "||", "`", "``", "```", "\\", "<", ">", "&",
    "[", "]", "(", ")", "](", "#", "-", "+", ":", "1.", "2)", "# ", "## ", "- ", "-# ", "* ",
    "> ", ">>> ", "@everyone", "@here", "<@123>", "<@&123>", "<#123>", "<t:1700000000:R>",
    "<:smile:123>", "https://e.org/a_b?q=1", "http://x.org/(y)", "https://", "steam://run/1",
    "https://e.org/x__y", " ", "  ", "\n", "\n\n", "\t", "\r\n", "a", "b", "word", "é", "e\u0301",
    "😀", "👍🏽", "👩\u200d👩\u200d👧", "🇫🇷", "🏳️\u200d🌈", "\u202e", "\u2066", "\u200b",
    "\u200d", "\x00", "שלום", "مرحبا", "¯\\_(ツ)_/¯", ".", "!", "?", '"', "'", "%", "\ufe0f",
    "\U000e0041", "&amp;", "<b>", "\u00a0",
]
# fmt: on
nasty_text = st.lists(st.sampled_from(TOKENS) | st.text(max_size=2), max_size=24).map("".join)
any_text = st.one_of(st.text(max_size=40), nasty_text)
URLS = [
    "https://example.com",
    "https://example.com/a_b*c(d)~e|f`g",
    'http://x.org/?q=<a>&b="c"',
    "tg://user?id=1",
    "mailto:a@b.org",
    "javascript:alert(1)",
    "https://exa mple.com/ü",
    "ftp://x.org",
]
LANGUAGES = [None, "python", "c++", "js", "bad lang"]
PROPS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def formatted(draw: st.DrawFn, text: st.SearchStrategy[str] = any_text) -> FormattedText:
    value = draw(text)
    spans: list[Span] = []
    for _ in range(draw(st.integers(0, 6)) if value else 0):
        start = draw(st.integers(0, len(value) - 1))
        end = draw(st.integers(start + 1, len(value)))
        style = draw(st.sampled_from(list(Style)))
        url = draw(st.sampled_from(URLS)) if style is L else None
        language = draw(st.sampled_from(LANGUAGES)) if style is P else None
        spans.append(Span(style, start, end, url, language))
    return FormattedText(value, tuple(spans))


ENTITY_TYPES = {
    B: "bold",
    IT: "italic",
    U: "underline",
    S: "strikethrough",
    SP: "spoiler",
    C: "code",
    P: "pre",
    L: "text_link",
    Q: "blockquote",
}


def as_entities(value: FormattedText, extra: list[str]) -> list[dict[str, Any]]:
    """Bot API entities for ``value``, plus style-less entities that must be ignored."""
    prefix = [0]
    for ch in value.text:
        prefix.append(prefix[-1] + utf16_len(ch))
    entities: list[dict[str, Any]] = []
    for n, span in enumerate(value.spans):
        kind = ENTITY_TYPES[span.style]
        if kind == "blockquote" and n % 2:
            kind = "expandable_blockquote"
        entity: dict[str, Any] = {
            "type": kind,
            "offset": prefix[span.start],
            "length": prefix[span.end] - prefix[span.start],
        }
        if span.url is not None:
            entity["url"] = span.url
        if span.language is not None:
            entity["language"] = span.language
        entities.append(entity)
    for kind in extra:
        entities.append({"type": kind, "offset": 0, "length": prefix[-1]})
    return entities


@PROPS
@given(any_text)
def test_property_sanitize_idempotent_and_clean(text: str) -> None:
    clean = sanitize(text)
    assert sanitize(clean) == clean
    assert "\r" not in clean and not any(0x202A <= ord(c) <= 0x202E for c in clean)
    assert all(unicodedata.category(c) != "Cc" or c in "\n\t" for c in clean)


@PROPS
@given(any_text)
def test_property_a_discord_plain_text_displays_exactly(text: str) -> None:
    md = to_discord_markdown(FormattedText.plain(text))
    assert render_discord_visible(md) == sanitize(text)


@PROPS
@given(any_text)
def test_property_b_telegram_plain_text_displays_exactly(text: str) -> None:
    html = to_telegram_html(FormattedText.plain(text))
    assert render_telegram_visible(html) == sanitize(text)


@PROPS
@given(formatted(), st.lists(st.sampled_from(["url", "mention", "hashtag", "bot_command"])))
def test_property_c_round_trip_telegram_discord_telegram(
    value: FormattedText, extra: list[str]
) -> None:
    # Normalisation (documented in bot.richtext): spans merge when equal and touching; what
    # Telegram or Discord cannot express is removed by canonical_for_telegram/_discord
    # (styles on code, quotes widened to lines, unsafe links, unrepresentable code fences...).
    start = from_telegram_entities(value.text, as_entities(value, extra))
    assert start.text == sanitize(value.text)
    md = to_discord_markdown(start)
    via_discord = from_discord_markdown(md)
    expected_discord = canonical_for_discord(start)
    assert via_discord == expected_discord
    # The reader sees the same text (the separators U+200B are zero-width).
    assert render_discord_visible(md).replace(ZWSP, "") == start.text
    html = to_telegram_html(via_discord)
    back = from_telegram_html(html)
    assert back.text == sanitize(value.text)
    assert spans_of(back) == spans_of(canonical_for_telegram(expected_discord))


@PROPS
@given(formatted())
def test_property_discord_first_attempt_reads_back(value: FormattedText) -> None:
    # to_discord_markdown silently falls back when a bare URL would misparse; make sure the
    # escaping itself is right, with and without bare URLs, so the fallback stays a safety net.
    canonical = canonical_for_discord(value)
    for autolinks in (True, False):
        assert from_discord_markdown(_emit_discord(canonical, autolinks)) == canonical


@PROPS
@given(formatted())
def test_property_canonical_forms_are_stable(value: FormattedText) -> None:
    discord = canonical_for_discord(value)
    assert canonical_for_discord(discord) == discord
    telegram = canonical_for_telegram(value)
    assert canonical_for_telegram(telegram) == telegram
    assert from_telegram_html(to_telegram_html(value)) == telegram


@PROPS
@given(formatted())
def test_property_telegram_entities_are_valid_and_read_back(value: FormattedText) -> None:
    canonical = canonical_for_telegram(value)
    entities = to_telegram_entities(value)
    assert from_telegram_entities(canonical.text, entities) == canonical
    # Telegram's nesting rules: overlapping entities nest (outer first in the list); code/pre
    # contain nothing and sit only inside blockquotes; no entity nests in its own type.
    ranges = [(e["offset"], e["offset"] + e["length"], e["type"]) for e in entities]
    for i, (a_start, a_end, a_type) in enumerate(ranges):
        for b_start, b_end, b_type in ranges[i + 1 :]:
            assert b_start >= a_start
            if b_start < a_end:
                assert b_end <= a_end
                assert a_type != b_type
                assert a_type not in ("code", "pre")
                if b_type in ("code", "pre"):
                    assert a_type == "blockquote"


@PROPS
@given(nasty_text.filter(lambda t: "<" not in t and "@" not in t))
def test_property_discord_parser_agrees_with_renderer(md: str) -> None:
    # Without pills (mentions, emoji, timestamps) the model text is what Discord shows.
    assert from_discord_markdown(md).text == sanitize(render_discord_visible(md))


def _cluster_too_long(text: str, cut: int, limit: int, measure: Callable[[str], int]) -> bool:
    """Is the cut inside a grapheme cluster that alone exceeds the limit (so cutting is forced)?"""

    def joins(pos: int) -> bool:  # True if pos is not a boundary by a simple, independent rule
        if pos <= 0 or pos >= len(text) or text[pos - 1] in "\r\n" or text[pos] in "\r\n":
            return False  # UAX #29 GB4/GB5: always a boundary next to a line break
        ch = text[pos]
        return (
            unicodedata.category(ch) in ("Mn", "Me", "Mc")
            or ch == "\u200d"
            or text[pos - 1] == "\u200d"
            or 0x1F3FB <= ord(ch) <= 0x1F3FF
        )

    if not joins(cut):
        return True
    lo, hi = cut, cut
    while joins(lo):
        lo -= 1
    while joins(hi + 1):
        hi += 1
    return measure(text[lo : hi + 1]) > limit


@PROPS
@given(formatted(), st.integers(1, 40), st.sampled_from(["len", "utf16", "markdown", "html"]))
def test_property_d_split_parts_fit_and_rejoin(value: FormattedText, limit: int, how: str) -> None:
    value = sanitize_formatted(value)
    measure = utf16_len if how == "utf16" else len
    if how == "utf16":
        # An astral character alone is 2 units: a limit of 1 is documented to raise.
        limit = max(limit, 2)
    render = {"markdown": to_discord_markdown, "html": to_telegram_html}.get(how)
    if render is not None:
        # split() raises when one character alone cannot fit (documented); give it room for
        # the markup around the widest single character (a code fence, a long href...).
        limit += max(
            (len(render(value.slice(i, i + 1))) for i in range(len(value.text))), default=0
        )
    parts = split(value, limit, measure=measure, render=render)
    text = value.text
    pos = 0
    for part in parts:
        assert part.text
        assert measure(render(part) if render else part.text) <= limit
        # Skip the whitespace separator dropped at the cut, then the part follows verbatim.
        start = pos
        while not text.startswith(part.text, start):
            assert start < len(text) and text[start].isspace()
            start += 1
        if start > 0 and render is None:
            assert _cluster_too_long(text, start, limit, measure)
        assert value.slice(start, start + len(part.text)) == part
        pos = start + len(part.text)
        if pos < len(text) and render is None:
            assert _cluster_too_long(text, pos, limit, measure)
    assert text[pos:].strip() == "" if parts else text == ""


@PROPS
@given(any_text)
def test_property_split_concatenates_back_plain(text: str) -> None:
    parts = split(FormattedText.plain(text), 7)
    # Only whitespace is ever dropped, and only at a cut.
    assert "".join("".join(p.text.split()) for p in parts) == "".join(text.split())
