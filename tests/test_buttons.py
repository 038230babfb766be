"""Typed button ids: templates, their refusals, and routing by prefix."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bot.buttons import MAX_ID_BYTES, MAX_INT, ButtonIdError, ButtonRoutes, ButtonTemplate

POLL = ButtonTemplate("poll:{id:int}:option:{n:int}")
PROFILE = ButtonTemplate("profile:{user:str}:tab:{tab:choice(posts|replies|about)}")
PING = ButtonTemplate("ping")

# Characters a str field accepts: printable, not whitespace, not ":".
TEXT_CHARS = st.characters(
    exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"), exclude_characters=":"
)
TEXT = st.text(TEXT_CHARS, min_size=1, max_size=40)
# Choice options are short, and free of the characters of the template syntax.
OPTION = st.text(TEXT_CHARS.filter(lambda c: c not in "{}()|"), min_size=1, max_size=8)
INTS = st.integers(min_value=0, max_value=MAX_INT)


def size(text: str) -> int:
    return len(text.encode("utf-8"))


# --- The readable examples -------------------------------------------------------------------


def test_a_poll_button_id_carries_the_poll_and_the_option() -> None:
    data = POLL.build(id=42, n=3)

    assert data == "poll:42:option:3"
    assert POLL.parse(data) == {"id": 42, "n": 3}
    assert POLL.prefix == "poll"
    assert POLL.fields == ("id", "n")


def test_str_and_choice_fields_come_back_as_they_went_in() -> None:
    data = PROFILE.build(user="marie-cécile", tab="replies")

    assert data == "profile:marie-cécile:tab:replies"
    assert PROFILE.parse(data) == {"user": "marie-cécile", "tab": "replies"}


def test_a_template_without_fields_has_one_id() -> None:
    assert PING.build() == "ping"
    assert PING.parse("ping") == {}
    assert PING.parse("ping:") is None
    assert PING.prefix == "ping"


def test_the_prefix_is_the_literal_before_the_first_colon() -> None:
    assert ButtonTemplate("vote:{id:int}").prefix == "vote"
    assert ButtonTemplate("report:spam:{id:int}").prefix == "report"
    assert ButtonTemplate("page:p{n:int}").prefix == "page"


def test_an_int_field_may_be_followed_by_a_non_digit_literal() -> None:
    template = ButtonTemplate("range:{start:int}-{end:int}")

    assert template.build(start=3, end=10) == "range:3-10"
    assert template.parse("range:3-10") == {"start": 3, "end": 10}


def test_templates_compare_and_hash_by_their_text() -> None:
    assert ButtonTemplate("poll:{id:int}") == ButtonTemplate("poll:{id:int}")
    assert len({ButtonTemplate("poll:{id:int}"), ButtonTemplate("poll:{id:int}")}) == 1
    assert repr(PING) == "ButtonTemplate('ping')"


def test_the_regex_names_one_group_per_field() -> None:
    found = POLL.regex.fullmatch("poll:42:option:3")

    assert found is not None
    assert found.groupdict() == {"id": "42", "n": "3"}


# --- Templates refused at construction ---------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("poll:{id:float}", "unknown type"),
        ("poll:{id:Int}", "unknown type"),
        ("poll:{id}", "no type"),
        ("poll:{id:int}:{id:int}", "appears twice"),
        ("poll:{id:int}:{id:str}", "appears twice"),
        ("poll:{id:int}{n:int}", "separator"),
        ("poll:{name:str}{n:int}", "separator"),
        ("{id:int}:poll", "literal prefix"),
        (":poll:{id:int}", "literal prefix"),
        ("", "literal prefix"),
        ("poll{id:int}", "followed by ':'"),
        ("poll:{id:int}7", "followed by a digit"),
        ("poll:{name:str}-x", "followed by ':'"),
        ("poll:{mode:choice(a|b)}x", "followed by ':'"),
        ("poll:{1st:int}", "identifier"),
        ("poll:{class:int}", "identifier"),
        ("poll:{café:int}", "identifier"),
        ("poll:{:int}", "identifier"),
        ("poll:{mode:choice()}", "not valid"),
        ("poll:{mode:choice(a||b)}", "not valid"),
        ("poll:{mode:choice(a|b c)}", "not valid"),
        ("poll:{mode:choice(a:b)}", "not valid"),
        ("poll:{mode:choice(a|a)}", "repeats"),
        ("poll:{id:int", "contains '{'"),
        ("poll:id}", "contains '}'"),
        ("poll: {id:int}", "contains ' '"),
        ("poll:\n{id:int}", "contains '\\n'"),
        ("poll:" + "x" * 60 + ":{id:int}", "fits in 64 bytes"),
    ],
)
def test_bad_templates_are_refused_at_construction(template: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        ButtonTemplate(template)


def test_a_template_is_refused_when_even_its_shortest_id_is_too_long() -> None:
    # 31 "é" are 62 bytes; with "a:" and one digit the shortest id would be 65 bytes.
    with pytest.raises(ValueError, match="64 bytes"):
        ButtonTemplate("a:" + "é" * 31 + "{n:int}")
    ButtonTemplate("a:" + "é" * 30 + "{n:int}")


# --- Values refused by build -------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {"id": "42", "n": 3},  # a str for an int
        {"id": 4.0, "n": 3},
        {"id": None, "n": 3},
        {"id": True, "n": 3},  # bool is an int to Python, never to a button
        {"id": -1, "n": 3},
        {"id": MAX_INT + 1, "n": 3},
        {"id": 42},  # missing field
        {"id": 42, "n": 3, "extra": 1},  # unexpected field
        {},
    ],
)
def test_build_refuses_bad_int_values(values: dict[str, Any]) -> None:
    with pytest.raises(ButtonIdError):
        POLL.build(**values)


@pytest.mark.parametrize(
    "user",
    [
        "",
        "a:b",
        ":",
        "a b",
        " a",
        "a\n",
        "a\x00b",
        "a\tb",
        "a\u200bb",  # zero-width space: invisible, a format character
        "a\u00a0b",  # no-break space
        "\ud800",  # lone surrogate: not even encodable
        "x" * 41,
        42,
        None,
        b"bytes",
    ],
)
def test_build_refuses_bad_str_values(user: Any) -> None:
    with pytest.raises(ButtonIdError):
        PROFILE.build(user=user, tab="posts")


@pytest.mark.parametrize("tab", ["", "Posts", "post", "posts ", "other", 1, None])
def test_build_refuses_a_value_outside_the_choice(tab: Any) -> None:
    with pytest.raises(ButtonIdError):
        PROFILE.build(user="marie", tab=tab)


def test_button_id_error_is_a_value_error() -> None:
    assert issubclass(ButtonIdError, ValueError)


def test_build_counts_the_64_byte_limit_in_utf8_bytes_not_characters() -> None:
    template = ButtonTemplate("n:{name:str}")

    fits = template.build(name="é" * 31)  # 2 + 62 bytes, only 33 characters
    assert size(fits) == MAX_ID_BYTES
    assert template.parse(fits) == {"name": "é" * 31}

    with pytest.raises(ButtonIdError, match="65 bytes"):
        template.build(name="é" * 31 + "a")  # 34 characters, but 65 bytes
    with pytest.raises(ButtonIdError, match="bytes"):
        template.build(name="€" * 30)  # 3 bytes each: 92 bytes in 32 characters


def test_build_refuses_ints_that_together_overflow_the_limit() -> None:
    template = ButtonTemplate("moderation:{a:int}:{b:int}:{c:int}")

    assert template.build(a=MAX_INT, b=MAX_INT, c=1)  # 11 + 19 + 1 + 19 + 1 + 1 = 52 bytes
    with pytest.raises(ButtonIdError):
        template.build(a=MAX_INT, b=MAX_INT, c=MAX_INT)  # 11 + 3 * 19 + 2 = 70 bytes


def test_parse_refuses_an_id_over_the_limit_that_build_would_refuse() -> None:
    template = ButtonTemplate("n:{name:str}")

    assert template.parse("n:" + "é" * 31 + "a") is None


# --- Ids refused by parse ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        "poll:+1:option:3",
        "poll:-1:option:3",
        "poll: 1:option:3",
        "poll:1 :option:3",
        "poll:1:option:3 ",
        "poll:1:option:3\n",
        "poll:01:option:3",
        "poll:00:option:3",
        "poll:0x1:option:3",
        "poll:1_000:option:3",
        "poll:٣:option:3",  # ARABIC-INDIC DIGIT THREE: int("٣") == 3, but no id has it
        "poll:３:option:3",  # FULLWIDTH DIGIT THREE
        "poll:9223372036854775808:option:3",  # 2**63
        "poll:99999999999999999999:option:3",
        "poll:42:option:",  # truncated
        "poll:42:opt",
        "poll:42",
        "poll",
        "",
        "Poll:42:option:3",
        "poll:42:choice:3",
        "poll:42:option:3:",
        "poll:42:option:3:4",
        "xpoll:42:option:3",
    ],
)
def test_parse_refuses_anything_that_build_did_not_make(data: str) -> None:
    assert POLL.parse(data) is None


def test_parse_accepts_the_int_bounds() -> None:
    assert POLL.parse("poll:0:option:9223372036854775807") == {"id": 0, "n": MAX_INT}


@pytest.mark.parametrize(
    "data",
    [
        "profile::tab:posts",
        "profile:a b:tab:posts",
        "profile:a\x00:tab:posts",
        "profile:a\u200b:tab:posts",
        "profile:" + "x" * 41 + ":tab:posts",
        "profile:marie:tab:Posts",
        "profile:marie:tab:post",
        "profile:marie:tab:postsx",
        "profile:marie:tab:",
    ],
)
def test_parse_refuses_bad_str_and_choice_text(data: str) -> None:
    assert PROFILE.parse(data) is None


# --- Properties ------------------------------------------------------------------------------


@given(poll=INTS, n=INTS)
def test_int_fields_round_trip(poll: int, n: int) -> None:
    data = POLL.build(id=poll, n=n)

    assert size(data) <= MAX_ID_BYTES
    assert POLL.parse(data) == {"id": poll, "n": n}


@given(user=TEXT, tab=st.sampled_from(["posts", "replies", "about"]))
@example(user="é" * 40, tab="replies")
def test_str_and_choice_fields_round_trip_or_are_refused_for_their_size(
    user: str, tab: str
) -> None:
    expected = f"profile:{user}:tab:{tab}"
    try:
        data = PROFILE.build(user=user, tab=tab)
    except ButtonIdError:
        assert size(expected) > MAX_ID_BYTES
        return
    assert data == expected
    assert PROFILE.parse(data) == {"user": user, "tab": tab}


@st.composite
def templates_and_values(draw: st.DrawFn) -> tuple[str, dict[str, int | str]]:
    """A random valid template, with valid values for its fields."""
    template = draw(st.sampled_from(["a", "vote", "é"]))
    values: dict[str, int | str] = {}
    for index in range(draw(st.integers(min_value=0, max_value=4))):
        name = f"f{index}"
        literal = ":" + draw(st.sampled_from(["", "x", "opt", "é-"]))
        kind = draw(st.sampled_from(["int", "int-", "str", "choice"]))
        if kind == "int-":
            # An int may also be followed directly by a non-digit literal.
            template += f"{literal}{{{name}:int}}-x"
            values[name] = draw(INTS)
        elif kind == "int":
            template += f"{literal}{{{name}:int}}"
            values[name] = draw(INTS)
        elif kind == "str":
            template += f"{literal}{{{name}:str}}"
            values[name] = draw(TEXT)
        else:
            options = draw(st.lists(OPTION, min_size=1, max_size=4, unique=True))
            template += f"{literal}{{{name}:choice({'|'.join(options)})}}"
            values[name] = draw(st.sampled_from(options))
    return template, values


@given(templates_and_values())
def test_any_template_round_trips_its_values(case: tuple[str, dict[str, int | str]]) -> None:
    text, values = case
    template = ButtonTemplate(text)
    try:
        data = template.build(**values)
    except ButtonIdError:
        rendered = re.sub(r"\{(\w+):[^{}]*\}", lambda m: str(values[m.group(1)]), text)
        assert size(rendered) > MAX_ID_BYTES
        return
    assert template.parse(data) == values
    assert template.regex.fullmatch(data)


ROUTES: ButtonRoutes[str] = ButtonRoutes(
    {
        POLL: "poll-option",
        ButtonTemplate("poll:{id:int}:close"): "poll-close",
        PROFILE: "profile",
        PING: "ping",
        ButtonTemplate("é:{x:str}"): "accent",
    }
)
LATIN_1 = st.binary(max_size=200).map(lambda b: b.decode("latin-1"))


@given(st.one_of(st.text(), LATIN_1))
@example("poll:42:option:3")
@example("poll:" + "9" * 10_000)
@example("\ud800:")
@example("é:\ud800")
def test_match_never_raises_and_only_accepts_what_build_makes(data: str) -> None:
    found = ROUTES.match(data)

    if found is not None:
        template, _, values = found
        assert template.build(**values) == data


@st.composite
def mutated_ids(draw: st.DrawFn) -> str:
    """A valid id with one character inserted, deleted or replaced: a near miss."""
    data = draw(
        st.one_of(
            st.builds(lambda i, n: POLL.build(id=i, n=n), INTS, INTS),
            st.builds(
                lambda u: PROFILE.build(user=u, tab="posts"), TEXT.filter(lambda u: size(u) < 40)
            ),
        )
    )
    position = draw(st.integers(min_value=0, max_value=len(data)))
    char = draw(st.one_of(st.sampled_from(":0123456789+- é٣\x00\n"), st.characters()))
    how = draw(st.sampled_from(["insert", "delete", "replace"]))
    if how == "insert":
        return data[:position] + char + data[position:]
    if how == "delete":
        return data[:position] + data[position + 1 :]
    return data[:position] + char + data[position + 1 :]


@given(mutated_ids())
def test_near_misses_are_refused_or_are_themselves_valid_ids(data: str) -> None:
    found = ROUTES.match(data)

    if found is not None:
        template, _, values = found
        assert template.build(**values) == data


# --- Routing ---------------------------------------------------------------------------------


def test_match_finds_the_handler_and_the_values() -> None:
    assert ROUTES.match("poll:42:option:3") == (POLL, "poll-option", {"id": 42, "n": 3})
    assert ROUTES.match("poll:42:close") == (
        ButtonTemplate("poll:{id:int}:close"),
        "poll-close",
        {"id": 42},
    )
    assert ROUTES.match("ping") == (PING, "ping", {})


@pytest.mark.parametrize(
    "data",
    ["", ":", "unknown:1", "poll", "poll:", "poll:42:vote", "pings", "ping:", "x" * 100_000],
)
def test_match_returns_none_for_unknown_ids(data: str) -> None:
    assert ROUTES.match(data) is None


def test_routes_accept_pairs_as_well_as_a_mapping() -> None:
    routes = ButtonRoutes([(POLL, 1), (PING, 2)])

    assert routes.match("ping") == (PING, 2, {})
    assert len(routes) == 2
    assert list(routes) == [(POLL, 1), (PING, 2)]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("poll:{id:int}", "poll:{id:int}"),
        ("poll:{id:int}", "poll:{n:int}"),  # the same skeleton
        ("poll:{name:str}:x", "poll:{user:str}:x"),
        ("poll:{id:int}", "poll:{name:str}"),  # "poll:5" is both
        ("poll:{name:str}", "poll:close"),
        ("poll:{id:int}", "poll:0"),
        ("poll:{id:int}", "poll:{mode:choice(open|7)}"),
        ("poll:{name:str}:x", "poll:{mode:choice(a|b)}:x"),
        ("poll:{a:int}-{b:int}", "poll:{c:int}-1"),
        ("poll:p{n:int}", "poll:{name:str}"),
    ],
)
def test_routes_refuse_templates_that_could_match_the_same_id(first: str, second: str) -> None:
    with pytest.raises(ValueError, match="could both match"):
        ButtonRoutes([(ButtonTemplate(first), "a"), (ButtonTemplate(second), "b")])


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("poll:{id:int}", "vote:{id:int}"),
        ("poll:{id:int}", "poll:{id:int}:close"),
        ("poll:{id:int}", "poll:close"),
        ("poll:{id:int}", "poll:01"),  # no int field renders a leading zero
        ("poll:{mode:choice(a|b)}", "poll:{other:choice(c|d)}"),
        ("poll:{a:int}-{b:int}", "poll:{c:int}+{d:int}"),
        ("poll:p{n:int}", "poll:q{n:int}"),
        ("poll", "poll:{id:int}"),
    ],
)
def test_routes_accept_templates_that_cannot_clash(first: str, second: str) -> None:
    routes = ButtonRoutes([(ButtonTemplate(first), "a"), (ButtonTemplate(second), "b")])

    assert len(routes) == 2


class CountingTemplate(ButtonTemplate):
    """A template that counts how often it is asked to parse."""

    parses = 0

    def parse(self, data: str) -> dict[str, int | str] | None:
        CountingTemplate.parses += 1
        return super().parse(data)


def test_match_only_tries_the_templates_of_the_ids_prefix() -> None:
    routes = ButtonRoutes((CountingTemplate(f"t{i}:{{id:int}}"), i) for i in range(1000))
    CountingTemplate.parses = 0

    assert routes.match("t500:7") == (ButtonTemplate("t500:{id:int}"), 500, {"id": 7})
    assert routes.match("t5000:7") is None
    assert CountingTemplate.parses == 1
